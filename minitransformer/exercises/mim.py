"""Exercises of notebook 06 (masked image modelling): seed eq. 8 in MAE's form.

- ``unpatchify``: flattened patches back to images, MAE's (row, column, channel) layout;
- ``mae_random_mask``: MAE's uniform random masking (random, so checked by its statistics
  over many draws against the definition of ``objectives.random_patch_mask``);
- ``norm_pix_target``: MAE's per-patch normalised pixel target (``--norm_pix_loss``);
- ``mae_loss``: the mean over the masked patches of each patch's mean squared error;
- ``beit_token_loss``: eq. 8 literally, BEiT's cross-entropy over discrete patch tokens.

Each reference solution is plain NumPy, as a learner would write it; ``expected`` computes
the same thing with the library (float64 tensors).
"""

from __future__ import annotations

import numpy as np

from ..autograd import tensor
from ..objectives import mim_pixel_loss, mim_token_loss
from ..objectives import unpatchify as library_unpatchify
from ._core import Case, Mismatch, exercise

NOTEBOOK = "06_masked_image_modeling"


# --------------------------------------------------------------------------------------------
# unpatchify
# --------------------------------------------------------------------------------------------
def _unpatchify_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case("2 RGB images of 16x16 px in 4x4 patches (N = 16, p*p*C = 48)",
             (rng.standard_normal((2, 16, 48)), 4)),
        Case("a batch of one, a single patch (N = 1, p = 2, C = 3)",
             (rng.standard_normal((1, 1, 12)), 2)),
        Case("grey images (C = 1), 2x2 patches of 2x2 px", (rng.standard_normal((3, 4, 4)), 2)),
        Case("p = 1: every patch is one RGB pixel", (rng.standard_normal((2, 9, 3)), 1)),
        Case("32x32 px in 4x4 patches (N = 64)", (rng.standard_normal((1, 64, 48)), 4)),
    ]


@exercise(
    "unpatchify",
    title="unpatchify, the inverse of MAE's patchify",
    signature="unpatchify(x, p) -> images; x (B, N, p*p*C), each patch in (row i, column j, "
              "channel) order, patches in raster order on an h x h grid (h = sqrt(N)) -> "
              "(B, C, h*p, h*p)",
    equation="the pixel targets of eq. 8's MAE form (He et al. 2022, sec. 3)",
    library="objectives.unpatchify",
    notebook=NOTEBOOK,
    hint="reshape to (B, h, w, p, p, C) = (image, patch row, patch column, i, j, channel), "
         "then transpose to (B, C, h, i, w, j) before the final reshape to (B, C, h*p, w*p); "
         "a reshape alone mixes pixels of different patches, and the channel is the LAST "
         "axis of a patch here (MAE's order, not nn.PatchEmbed's (channel, i, j))",
    cases=_unpatchify_cases,
    expected=library_unpatchify,
)
def unpatchify(x, p):
    B, N, D = x.shape
    C = D // (p * p)
    h = int(round(np.sqrt(N)))  # patches per column (and per row)
    y = x.reshape(B, h, h, p, p, C)  # (B, patch row, patch col, i, j, C)
    y = y.transpose(0, 5, 1, 3, 2, 4)  # (B, C, patch row, i, patch col, j)
    return y.reshape(B, C, h * p, h * p)


# --------------------------------------------------------------------------------------------
# MAE's random masking (random: checked by its statistics)
# --------------------------------------------------------------------------------------------
def _masked_count(N: int, ratio: float) -> int:
    """MAE keeps ``len_keep = int(N * (1 - ratio))`` patches and masks the rest."""
    return N - int(N * (1 - ratio))


def _verify_random_mask(fn, rng: np.random.Generator) -> None:
    # (B, N, ratio): many rows, so the frequencies are precise; a batch of one; no masking
    settings = [(4000, 16, 0.75), (3000, 49, 0.75), (3000, 10, 0.6), (1, 64, 0.75),
                (5, 8, 0.0)]
    for B, N, ratio in settings:
        call = f"mae_random_mask(B={B}, N={N}, ratio={ratio}, rng)"
        m = fn(B, N, ratio, rng)
        if hasattr(m, "data") and hasattr(m, "requires_grad"):
            m = m.numpy()
        if type(m).__module__.startswith("cupy"):
            m = m.get()
        if not isinstance(m, np.ndarray):
            raise Mismatch(f"{call}: expected a (B, N) boolean array, got {type(m).__name__}")
        if m.shape != (B, N):
            raise Mismatch(f"{call}: expected shape {(B, N)}, got {m.shape}")
        if m.dtype != np.bool_:
            raise Mismatch(f"{call}: expected a boolean mask (True = masked), got dtype "
                           f"{m.dtype}")
        k = _masked_count(N, ratio)
        counts = m.sum(axis=1)  # (B,) masked patches per image
        if (counts != k).any():
            b = int(np.argmax(counts != k))
            raise Mismatch(
                f"{call}: every image must have exactly N - int(N * (1 - ratio)) = {N} - "
                f"{N - k} = {k} masked patches (True = masked); image {b} has {counts[b]}")
        if B < 100 or k in (0, N):
            continue
        # every patch is masked equally often: P(i in M) = k / N
        p = k / N
        freq = m.mean(axis=0)  # (N,)
        tol = 5.0 * np.sqrt(p * (1 - p) / B)
        i = int(np.argmax(np.abs(freq - p)))
        if abs(freq[i] - p) > tol:
            raise Mismatch(f"{call}: every patch must be masked with the same probability "
                           f"k / N = {p:.3f}, but patch {i} is masked in {freq[i]:.3f} of "
                           "the images (draw a new random order for every image)")
        # and every set of k patches is equally likely: P(i and j in M) = k(k-1) / (N(N-1))
        q = k * (k - 1) / (N * (N - 1))
        mf = m.astype(np.float64)
        pairs = (mf.T @ mf) / B  # (N, N): how often patches i and j are masked together
        off = ~np.eye(N, dtype=bool)
        tol = 5.5 * np.sqrt(q * (1 - q) / B)
        worst = np.abs(np.where(off, pairs, q) - q)
        i, j = np.unravel_index(int(np.argmax(worst)), worst.shape)
        if worst[i, j] > tol:
            raise Mismatch(
                f"{call}: the masked patches must be a uniformly random set (objectives."
                f"random_patch_mask: argsort of uniform noise), so patches {i} and {j} should "
                f"be masked together in {q:.3f} of the images, but are in {pairs[i, j]:.3f} "
                f"(neighbours masked together, or a shifted block, are not a random set)")


@exercise(
    "mae_random_mask",
    title="MAE's random masking: a uniformly random set of N - int(N (1 - ratio)) patches "
          "per image",
    signature="mae_random_mask(B, N, ratio, rng) -> (B, N) bool, True = masked",
    equation="eq. 8's set M, as MAE draws it (He et al. 2022, sec. 3)",
    library="objectives.random_patch_mask",
    notebook=NOTEBOOK,
    hint="as MAE's random_masking: noise = rng.random((B, N)); ids_shuffle = argsort(noise, "
         "axis=1); keep the first len_keep = int(N * (1 - ratio)) of each row's shuffle and "
         "mask the others (so the count is exact, not a Bernoulli(ratio) per patch), with a "
         "new order for every image",
    verify=_verify_random_mask,
)
def mae_random_mask(B, N, ratio, rng):
    len_keep = int(N * (1 - ratio))  # MAE truncates: int, not round
    ids_shuffle = np.argsort(rng.random((B, N)), axis=1)  # (B, N): a random order per image
    mask = np.ones((B, N), dtype=bool)
    rows = np.arange(B)[:, None]  # (B, 1)
    mask[rows, ids_shuffle[:, :len_keep]] = False  # the first len_keep of the order are seen
    return mask


# --------------------------------------------------------------------------------------------
# MAE's normalised pixel target
# --------------------------------------------------------------------------------------------
def _norm_pix_cases(rng: np.random.Generator) -> list[Case]:
    flat = rng.uniform(size=(1, 4, 12))
    flat[0, 1] = 0.25  # a constant patch (a plain background): variance 0
    flat[0, 2] = 0.5 + 1e-5 * rng.standard_normal(12)  # almost constant: the 1e-6 matters
    return [
        Case("2 images of 16 RGB patches of 4x4 px (P = 48)", (rng.uniform(size=(2, 16, 48)),)),
        Case("a batch of one, a single patch", (rng.uniform(size=(1, 1, 12)),)),
        Case("a constant patch and an almost constant one", (flat,)),
        Case("3-value patches (P = 3, one RGB pixel each)", (rng.uniform(size=(3, 8, 3)),)),
    ]


def _library_norm_pix(patches):
    """The target that ``mim_pixel_loss`` normalises internally, read off its gradient.

    With every patch masked and pred = 0, L = 1/(M P) sum (pred - t)^2 over M = B N patches,
    so dL/dpred = 2 (pred - t) / (M P) = -2 t / (M P), and t = -dL/dpred * M P / 2."""
    B, N, P = patches.shape
    pred = tensor(np.zeros((B, N, P)), requires_grad=True)
    mim_pixel_loss(pred, patches, np.ones((B, N), dtype=bool), norm_pix=True).backward()
    return -pred.grad * (B * N * P) / 2.0


@exercise(
    "norm_pix_target",
    title="MAE's normalised pixel target (x - mean) / sqrt(var + 1e-6) per patch, with the "
          "unbiased variance",
    signature="norm_pix_target(patches) -> array; patches (B, N, P) -> (B, N, P)",
    equation="eq. 8's MAE form with --norm_pix_loss (He et al. 2022, sec. 3; "
             "facebookresearch/mae models_mae.py, forward_loss)",
    library="objectives.mim_pixel_loss(..., norm_pix=True)",
    notebook=NOTEBOOK,
    hint="the mean and the variance are taken over the P values of each patch (the last "
         "axis, keepdims=True), the variance as torch.var computes it by default: unbiased, "
         "sum((x - mean)^2) / (P - 1), i.e. np.var(..., ddof=1); the 1e-6 goes INSIDE the "
         "square root, so a constant patch gives 0, not NaN",
    cases=_norm_pix_cases,
    expected=_library_norm_pix,
)
def norm_pix_target(patches):
    mean = patches.mean(axis=-1, keepdims=True)  # (B, N, 1): each patch's own mean
    var = patches.var(axis=-1, ddof=1, keepdims=True)  # (B, N, 1): unbiased, as torch.var
    return (patches - mean) / np.sqrt(var + 1e-6)  # (B, N, P)


# --------------------------------------------------------------------------------------------
# MAE's loss
# --------------------------------------------------------------------------------------------
def _mae_loss_cases(rng: np.random.Generator) -> list[Case]:
    def random_mask(B, N, k):  # k masked patches per image
        m = np.zeros((B, N), dtype=bool)
        for b in range(B):
            m[b, rng.permutation(N)[:k]] = True
        return m

    uneven = np.zeros((2, 8), dtype=bool)
    uneven[0, 3] = True  # image 0: 1 masked patch
    uneven[1, :7] = True  # image 1: 7 masked patches
    one = np.zeros((1, 5), dtype=bool)
    one[0, 2] = True
    return [
        Case("2 images, 16 patches of 48 values, 12 masked in each",
             (rng.standard_normal((2, 16, 48)), rng.standard_normal((2, 16, 48)),
              random_mask(2, 16, 12))),
        Case("images with different numbers of masked patches (1 and 7)",
             (rng.standard_normal((2, 8, 6)), rng.standard_normal((2, 8, 6)), uneven)),
        Case("a batch of one with a single masked patch",
             (rng.standard_normal((1, 5, 12)), rng.standard_normal((1, 5, 12)), one)),
        Case("every patch masked",
             (rng.standard_normal((3, 4, 3)), rng.standard_normal((3, 4, 3)),
              np.ones((3, 4), dtype=bool))),
    ]


@exercise(
    "mae_loss",
    title="MAE's loss, the mean over the masked patches of each patch's mean squared error",
    signature="mae_loss(pred, target, mask) -> float; pred, target (B, N, P), mask (B, N) "
              "bool, True = masked",
    equation="eq. 8's MAE form (He et al. 2022, sec. 3; facebookresearch/mae models_mae.py, "
             "forward_loss)",
    library="objectives.mim_pixel_loss(..., norm_pix=False)",
    notebook=NOTEBOOK,
    hint="first the mean of (pred - target)^2 over the P values of each patch -> (B, N), "
         "then the mean of those over the masked patches of the whole batch: "
         "(per_patch * mask).sum() / mask.sum(). Visible patches do not count, and it is "
         "not a mean per image first (images with fewer masked patches would weigh more)",
    cases=_mae_loss_cases,
    expected=lambda pred, target, mask: mim_pixel_loss(tensor(pred), target, mask,
                                                       norm_pix=False).item(),
)
def mae_loss(pred, target, mask):
    per_patch = ((pred - target) ** 2).mean(axis=-1)  # (B, N): mean over the P values
    return float((per_patch * mask).sum() / mask.sum())  # mean over the masked patches


# --------------------------------------------------------------------------------------------
# BEiT's token loss (eq. 8 literally)
# --------------------------------------------------------------------------------------------
def _token_loss_cases(rng: np.random.Generator) -> list[Case]:
    def case(B, N, K, frac, scale=1.0):
        m = rng.random((B, N)) < frac
        m.reshape(-1)[rng.integers(0, B * N)] = True  # at least one masked patch
        return (scale * rng.standard_normal((B, N, K)), rng.integers(0, K, size=(B, N)), m)

    one = case(1, 6, 4, 0.0)
    return [
        Case("2 images of 16 patches, K = 8 tokens, about 40% masked", case(2, 16, 8, 0.4)),
        Case("a batch of one with a single masked patch", one),
        Case("images with different numbers of masked patches", case(4, 9, 5, 0.5)),
        Case("extreme logits (scale 300)", case(2, 16, 32, 0.5, scale=300.0)),
    ]


@exercise(
    "beit_token_loss",
    title="BEiT's token loss, the mean over the masked patches of -log softmax(z_i)[token_i]",
    signature="beit_token_loss(logits, tokens, mask) -> float; logits (B, N, K), tokens "
              "(B, N) int in [0, K), mask (B, N) bool, True = masked",
    equation="eq. 8 with BEiT's mean over M (Bao et al. 2022, sec. 2.3)",
    library="objectives.mim_token_loss",
    notebook=NOTEBOOK,
    hint="the MLM loss of notebook 05 with patches for words: take the masked rows "
         "(logits[mask] is (M, K)), a stable log-softmax over the K tokens (subtract the "
         "row's max), the column of each patch's token, and the mean of -log p over the M "
         "masked patches of the whole batch",
    cases=_token_loss_cases,
    expected=lambda logits, tokens, mask: mim_token_loss(tensor(logits), tokens, mask).item(),
)
def beit_token_loss(logits, tokens, mask):
    z = logits[mask]  # (M, K): the masked patches
    z = z - z.max(axis=-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))  # (M, K)
    nll = -log_p[np.arange(len(z)), tokens[mask]]  # (M,)
    return float(nll.mean())
