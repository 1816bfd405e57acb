"""Masked image modelling (seed eq. 8) in its three real forms: BEiT, MAE and iBOT.

- BEiT (``unilm/beit/engine_for_pretraining.py``): cross-entropy over discrete patch tokens at
  the masked positions, mean reduction: the seed's equation literally. BEiT's tokens come
  from a DALL-E dVAE; ``kmeans_codebook`` makes small discrete targets without one.
- MAE (``mae/models_mae.py: forward_loss``): squared error on (per-patch normalised) pixels,
  averaged over the masked patches only.
- iBOT / DINOv2 (``ibot/main_ibot.py: iBOTLoss``, ``dinov2/loss/ibot_patch_loss.py``): the
  teacher's soft distribution over prototypes as the target of each masked patch.

Masks are boolean (B, N) with True = masked (to be predicted).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import backend
from .. import functional as F
from ..autograd import Tensor
from ._utils import as_tensor, check_temp, raw, uniform

__all__ = [
    "PatchCodebook", "ibot_patch_loss", "kmeans_codebook", "mim_pixel_loss", "mim_token_loss",
    "patchify", "unpatchify",
]


def _check_patch_mask(mask: Any, B: int, N: int, like: Any, fn: str) -> Any:
    """The mask as a raw bool (B, N) array on the device of ``like``."""
    m = raw(mask)
    if tuple(m.shape) != (B, N):
        raise ValueError(f"{fn}: mask must have shape (B, N) = {(B, N)}, got {tuple(m.shape)}")
    if m.dtype != np.bool_:
        raise TypeError(f"{fn}: mask must be boolean (True = masked), got dtype {m.dtype}")
    return backend.to_device(m, backend.device_of(like))


# --------------------------------------------------------------------------------------------
# Patches <-> images, MAE's layout
# --------------------------------------------------------------------------------------------
def patchify(images: Any, p: int) -> Any:
    """Cut images into flattened p x p patches, as MAE's ``patchify``.

    Patch n = (row r, column c) in raster order holds
    $x_{n, (i p + j) C + ch} = \\mathrm{img}[ch, r p + i, c p + j]$: the (i, j, channel)
    order of MAE, not the (channel, i, j) order of ``nn.PatchEmbed`` (a Conv2d's weight layout);
    the pixel targets of ``mim_pixel_loss`` use this order. Works on arrays and on Tensors
    (differentiably); returns the same kind. MAE requires square images; any H, W divisible
    by p work here.

    Shapes: images (B, C, H, W) -> (B, N, p*p*C), N = (H/p)(W/p).
    """
    if images.ndim != 4:
        raise ValueError(f"patchify: images must be (B, C, H, W), got {tuple(images.shape)}")
    B, C, H, W = images.shape
    if H % p or W % p:
        raise ValueError(f"patchify: image size {(H, W)} is not divisible by patch size {p}")
    h, w = H // p, W // p
    x = images.reshape(B, C, h, p, w, p)  # (B, C, h, i, w, j)
    x = x.transpose(0, 2, 4, 3, 5, 1)  # (B, h, w, i, j, C)
    return x.reshape(B, h * w, p * p * C)  # (B, N, p*p*C)


def unpatchify(x: Any, p: int, grid: tuple[int, int] | None = None) -> Any:
    """The inverse of ``patchify`` (MAE's ``unpatchify``): patches back to images.

    ``grid`` = (h, w) patches per column and row; default square, h = w = sqrt(N).
    Shapes: x (B, N, p*p*C) -> (B, C, h p, w p).
    """
    if x.ndim != 3:
        raise ValueError(f"unpatchify: x must be (B, N, p*p*C), got {tuple(x.shape)}")
    B, N, P = x.shape
    if P % (p * p):
        raise ValueError(f"unpatchify: patch dim {P} is not a multiple of p*p = {p * p}")
    C = P // (p * p)
    if grid is None:
        h = w = math.isqrt(N)
        if h * w != N:
            raise ValueError(f"unpatchify: {N} patches is not a square grid; pass grid=(h, w)")
    else:
        h, w = grid
        if h * w != N:
            raise ValueError(f"unpatchify: grid {grid} does not hold {N} patches")
    y = x.reshape(B, h, w, p, p, C)  # (B, h, w, i, j, C)
    y = y.transpose(0, 5, 1, 3, 2, 4)  # (B, C, h, i, w, j)
    return y.reshape(B, C, h * p, w * p)


# --------------------------------------------------------------------------------------------
# BEiT: discrete tokens
# --------------------------------------------------------------------------------------------
def mim_token_loss(logits: Any, target_ids: Any, mask: Any) -> Tensor:
    """$L = -\\frac{1}{|M|} \\sum_{i \\in M} \\log p(z_i | x^M)$ over the masked patches.

    BEiT: ``CrossEntropyLoss()(lm_head(x[bool_masked_pos]), labels[bool_masked_pos])``, a mean
    over the masked positions; logits at unmasked positions do not change the loss. With no
    masked patch the loss is 0.

    Shapes: logits (B, N, K), target_ids (B, N) ints in [0, K), mask (B, N) bool -> ().
    """
    fn = "mim_token_loss"
    z = as_tensor(logits, "logits", fn)
    if z.ndim != 3:
        raise ValueError(f"{fn}: logits must be (B, N, K), got {tuple(z.shape)}")
    B, N, _ = z.shape
    t = backend.to_device(raw(target_ids), z.device)
    if tuple(t.shape) != (B, N):
        raise ValueError(f"{fn}: target_ids must have shape {(B, N)}, got {tuple(t.shape)}")
    m = _check_patch_mask(mask, B, N, z.data, fn)
    xp = backend.get_array_module(z.data)
    labels = xp.where(m, t, -100)  # unmasked positions are ignored
    return F.cross_entropy(z, labels, ignore_index=-100)


class PatchCodebook:
    """A k-means codebook of patches: ``encode`` maps each patch to its nearest centroid id.

    A small stand-in for BEiT's DALL-E dVAE tokenizer: it turns pixels into the discrete
    targets $z_i$ of the seed's eq. 8. Made by ``kmeans_codebook``.

    Attributes: centroids (K, P), a raw array.
    """

    def __init__(self, centroids: Any):
        if centroids.ndim != 2:
            raise ValueError(f"PatchCodebook: centroids must be (K, P), got {centroids.shape}")
        self.centroids = centroids

    @property
    def K(self) -> int:
        return int(self.centroids.shape[0])

    def encode(self, patches: Any) -> Any:
        """$z = \\arg\\min_k \\lVert x - c_k \\rVert^2$ per patch.
        Shapes: (..., P) -> (...) int64."""
        x = raw(patches)
        P = self.centroids.shape[1]
        if x.shape[-1] != P:
            raise ValueError(f"PatchCodebook.encode: patches (..., {P}) expected, got {x.shape}")
        c = backend.to_device(self.centroids, backend.device_of(x)).astype(x.dtype)
        ids = _nearest(x.reshape(-1, P), c)  # (M,)
        return ids.reshape(x.shape[:-1])

    def decode(self, ids: Any) -> Any:
        """The centroid of each id. Shapes: (...) -> (..., P)."""
        i = raw(ids)
        return backend.to_device(self.centroids, backend.device_of(i))[i]

    def __repr__(self) -> str:
        return f"PatchCodebook(K={self.K}, P={self.centroids.shape[1]})"


def _sq_dists(x: Any, c: Any) -> Any:
    """$\\lVert x_m - c_k \\rVert^2 = |x|^2 - 2 x c^T + |c|^2$. Shapes: (M, P), (K, P) -> (M, K)."""
    return (x * x).sum(-1, keepdims=True) - 2.0 * (x @ c.T) + (c * c).sum(-1)[None, :]


def _nearest(x: Any, c: Any) -> Any:
    return _sq_dists(x, c).argmin(axis=1).astype(np.int64)


def kmeans_codebook(patches: Any, K: int, rng: Any, iters: int = 20) -> PatchCodebook:
    """Lloyd's k-means on patches, for BEiT-style discrete targets.

    Initialised with K distinct random patches (Forgy); each iteration assigns every patch
    to its nearest centroid and moves each centroid to the mean of its patches. An empty
    cluster is re-seeded with the patch farthest from its centroid. Stops early when the
    assignment no longer changes. Runs on the device of ``patches``.

    Shapes: patches (..., P) -> a codebook with centroids (K, P).
    """
    x = raw(patches)
    if x.ndim < 2:
        raise ValueError(f"kmeans_codebook: patches must be (..., P), got {tuple(x.shape)}")
    x = x.reshape(-1, x.shape[-1])
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    M = x.shape[0]
    if not 1 <= K <= M:
        raise ValueError(f"kmeans_codebook: need 1 <= K <= number of patches {M}, got K={K}")
    xp = backend.get_array_module(x)
    start = xp.argsort(uniform(rng, (M,), backend.device_of(x)))[:K]  # K distinct patches
    c = x[start].copy()  # (K, P)
    assign = None
    for _ in range(iters):
        d2 = _sq_dists(x, c)  # (M, K)
        new = d2.argmin(axis=1)
        if assign is not None and bool((new == assign).all()):
            break
        assign = new
        onehot = (assign[:, None] == xp.arange(K)[None, :]).astype(x.dtype)  # (M, K)
        counts = onehot.sum(0)  # (K,)
        sums = onehot.T @ x  # (K, P)
        empty = counts == 0
        c = sums / xp.maximum(counts, 1)[:, None]
        if bool(empty.any()):
            far = xp.argsort(-d2[xp.arange(M), assign])  # patches by distance to centroid
            c[xp.nonzero(empty)[0]] = x[far[: int(empty.sum())]]
    return PatchCodebook(c)


# --------------------------------------------------------------------------------------------
# MAE: pixels
# --------------------------------------------------------------------------------------------
def mim_pixel_loss(pred: Any, target: Any, mask: Any, norm_pix: bool = True) -> Tensor:
    """MAE's loss: $L = \\frac{1}{|M|} \\sum_{i \\in M} \\frac{1}{P} \\lVert \\hat x_i -
    \\tilde x_i \\rVert^2$.

    With ``norm_pix`` (MAE's ``--norm_pix_loss``, used in its recipe) the target of each patch
    is normalised by its own statistics, $\\tilde x = (x - \\mu) / \\sqrt{\\sigma^2 + 10^{-6}}$
    with the *unbiased* variance (torch's ``var`` default), so a zero prediction gives
    $\\frac{P-1}{P} \\frac{\\sigma^2}{\\sigma^2 + 10^{-6}}$. The squared error is averaged over
    the P pixel values of a patch, then over the masked patches: ``(loss * mask).sum() /
    mask.sum()``. The target is data (no gradient); predictions at unmasked patches do not
    change the loss. With no masked patch the loss is 0 (MAE would divide by zero).

    Computed densely, as MAE's code: the error of every patch, then the masked mean
    $\\sum_i m_i \\ell_i / \\max(\\sum_i m_i, 1)$ (``where`` keeps a non-finite prediction at an
    unmasked patch out of it). No shape depends on the mask, so a GPU never waits for its
    count (``nonzero`` would).

    Shapes: pred (B, N, P), target (B, N, P) (``patchify`` order), mask (B, N) bool -> ().
    """
    fn = "mim_pixel_loss"
    y = as_tensor(pred, "pred", fn)
    if y.ndim != 3:
        raise ValueError(f"{fn}: pred must be (B, N, P), got {tuple(y.shape)}")
    B, N, P = y.shape
    t = backend.to_device(raw(target), y.device)
    if tuple(t.shape) != (B, N, P):
        raise ValueError(f"{fn}: target {tuple(t.shape)} must match pred {(B, N, P)}")
    m = _check_patch_mask(mask, B, N, y.data, fn)
    xp = backend.get_array_module(y.data)
    t = t.astype(y.dtype)
    if norm_pix:
        if P < 2:
            raise ValueError(f"{fn}: norm_pix needs at least 2 values per patch, got P={P}")
        mu = t.mean(-1, keepdims=True)  # (B, N, 1)
        var = t.var(-1, ddof=1, keepdims=True)  # unbiased, as torch.Tensor.var
        t = (t - mu) / (var + 1e-6) ** 0.5
    diff = y - t  # (B, N, P)
    per_patch = (diff * diff).mean(axis=-1)  # (B, N): mean over the pixels of each patch
    kept = F.where(m, per_patch, xp.zeros((), dtype=y.dtype))  # (B, N): 0 at unmasked
    count = xp.maximum(m.sum(), 1).astype(y.dtype)  # (): |M|, on the device
    return kept.sum() / count  # the mean over the masked patches


# --------------------------------------------------------------------------------------------
# iBOT / DINOv2: the teacher's soft patch targets
# --------------------------------------------------------------------------------------------
def ibot_patch_loss(student_patch_logits: Any, teacher_patch_probs: Any, mask: Any,
                    student_temp: float = 0.1) -> Tensor:
    """$L = \\frac{1}{B} \\sum_b \\frac{1}{\\max(m_b, 1)} \\sum_{i \\in M_b} -\\sum_k
    t_{bik} \\log \\mathrm{softmax}(s_{bi} / \\tau_s)_k$, $m_b = |M_b|$.

    The per-image mean over its masked patches, then the mean over *all* B images, the
    unmasked ones contributing 0: iBOT's ``sum(loss * mask) / mask.sum().clamp(min=1)`` then
    ``.mean()``, and DINOv2's ``forward_masked`` (``masks_weight``, ``/ B``). The teacher saw
    the same, unmasked view (same-view pairs, unlike the CLS loss). The teacher's
    probabilities (centred and sharpened, or Sinkhorn-Knopp) are data: no gradient reaches
    them. Other rows cannot change the loss: the cross-entropy of every patch is computed
    (densely: no shape depends on the mask, so a GPU never waits for its count) and
    ``where`` keeps the unmasked ones out.

    Shapes: student_patch_logits (B, N, K), teacher_patch_probs (B, N, K), mask (B, N) -> ().
    """
    fn = "ibot_patch_loss"
    s = as_tensor(student_patch_logits, "student_patch_logits", fn)
    tau = check_temp(student_temp, "student_temp", fn)
    if s.ndim != 3:
        raise ValueError(f"{fn}: student_patch_logits must be (B, N, K), got {tuple(s.shape)}")
    B, N, K = s.shape
    t = backend.to_device(raw(teacher_patch_probs), s.device)
    if tuple(t.shape) != (B, N, K):
        raise ValueError(
            f"{fn}: teacher_patch_probs {tuple(t.shape)} must match the student's {(B, N, K)}"
        )
    m = _check_patch_mask(mask, B, N, s.data, fn)
    xp = backend.get_array_module(s.data)
    per_image = 1.0 / xp.maximum(m.sum(-1), 1).astype(s.dtype)  # (B,): 1 / m_b
    weight = xp.where(m, per_image[:, None], 0).astype(s.dtype)  # (B, N): masks_weight
    ce = F.soft_cross_entropy(s / tau, t.astype(s.dtype))  # (B, N), every patch
    kept = F.where(m, ce, xp.zeros((), dtype=s.dtype))  # 0 at the unmasked patches
    return (kept * weight).sum() / B
