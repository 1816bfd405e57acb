"""DINOv2 (seed eq. 9): KoLeo and the total loss DINO(CLS) + iBOT(masked patches) + KoLeo.

From ``dinov2/train/ssl_meta_arch.py: forward_backward`` and ``dinov2/loss/*``.
"""

from __future__ import annotations

from typing import Any

from .. import backend, distributed
from .. import functional as F
from ..autograd import Tensor
from ._utils import as_list, as_tensor, check_temp, raw
from .dino import dino_loss
from .mim import ibot_patch_loss

__all__ = ["dinov2_loss", "koleo_loss"]


def koleo_loss(x: Any, eps: float = 1e-8) -> Tensor:
    """The Kozachenko-Leonenko entropy estimator, DINOv2's ``KoLeoLoss``.

    $\\hat x_i = x_i / \\max(\\lVert x_i \\rVert, \\epsilon)$; $j(i) = \\arg\\max_{j \\ne i}
    \\hat x_i \\cdot \\hat x_j$ (nearest neighbour by inner product);
    $d_i = \\lVert \\hat x_i - \\hat x_{j(i)} + \\epsilon \\rVert$ (torch's PairwiseDistance adds
    eps to the difference); $L = -\\frac1B \\sum_i \\log(d_i + \\epsilon)$. Minimising it spreads
    the features over the sphere: at best the regular simplex, $-\\frac12 \\log\\frac{2B}{B-1}$.
    Both epsilons are kept, so a duplicated row gives a large finite value (about
    $-\\log(\\epsilon\\sqrt D)$), not inf (dinov2#143). Negative values are expected.
    DINOv2 excludes the point itself by writing -1 on the diagonal of the dot products, which
    ties with an exactly antipodal neighbour (then a point can pick itself, e.g. for two
    opposite points); -inf excludes it always and is otherwise identical.
    The neighbour index is a constant of the step; gradients flow through both $\\hat x_i$ and
    $\\hat x_{j(i)}$. Compute it in float32 or float64 (DINOv2 disables autocast).

    Over several ranks it stays *per rank*, as DINOv2's (``dinov2/loss/koleo_loss.py`` has
    its ``torch.distributed`` import commented out): the neighbours are searched in this
    rank's batch only, no communication. So W ranks do not compute KoLeo of the global batch:
    averaged over ranks (as data parallelism averages gradients), they train on the mean of
    KoLeo over the W shards, which one process reproduces as
    ``mean(koleo_loss(x[shard]) for shard in shards)``. A point's nearest neighbour within
    its shard is at least as far as within the global batch, so with equal shards that mean
    is at most the global batch's KoLeo (up to the eps terms): the per-rank term pushes
    apart only points that share a rank.

    Shapes: x (B, D), B >= 2 -> ().
    """
    fn = "koleo_loss"
    xt = as_tensor(x, "x", fn)
    if xt.ndim != 2:
        raise ValueError(f"{fn}: x must be (B, D), got {tuple(xt.shape)}")
    B = xt.shape[0]
    if B < 2:
        raise ValueError(f"{fn}: needs at least 2 rows to find neighbours, got {tuple(xt.shape)}")
    xp = backend.get_array_module(xt.data)
    xn = F.normalize(xt, axis=-1, eps=eps)  # (B, D) on the unit sphere
    dots = xn.data @ xn.data.T  # (B, B), no gradient: only the argmax is used
    dots[xp.arange(B), xp.arange(B)] = -xp.inf  # a point is not its own neighbour
    nn_idx = dots.argmax(axis=1)  # (B,)
    diff = xn - xn[nn_idx] + eps  # (B, D)
    d = F.sqrt((diff * diff).sum(axis=-1))  # (B,)
    return -F.log(d + eps).mean()


def dinov2_loss(
    student_cls_logits_per_crop: Any,
    teacher_cls_probs_per_global: Any,
    student_patch_logits: Any,
    teacher_patch_probs: Any,
    masks: Any,
    student_cls_backbone_per_global: Any,
    *,
    w_dino: float = 1.0,
    w_ibot: float = 1.0,
    w_koleo: float = 0.1,
    student_temp: float = 0.1,
) -> tuple[Tensor, dict[str, Tensor]]:
    """$L = w_{dino} L_{DINO} + w_{ibot} L_{iBOT} + w_{koleo} \\sum_{g} \\mathrm{KoLeo}(h_g)$,
    weights 1, 1, 0.1 (``ssl_default_config.yaml``).

    - $L_{DINO}$ = ``dino_loss`` on the CLS head outputs: every (teacher global, student crop)
      pair of different views, averaged over the $2 + 2 n_l$ pairs. DINOv2 computes it as
      ``dino_local + dino_global`` with reversed teacher chunks and ``loss_scales = 2``; the
      value is the same.
    - $L_{iBOT}$ = ``ibot_patch_loss`` on the patch head outputs of the *masked* student
      globals against the teacher's probabilities on the same, unmasked views: per-image mean
      over masked patches, averaged over all $n_g B$ global images.
    - KoLeo on the student's *backbone* CLS features (before the head), separately per global
      crop and summed ("we don't apply koleo loss between cls tokens of a same image").

    The teacher's patch probabilities use their own center (DINOv2's iBOT center): a second
    ``TeacherCentering(K)`` updated with the teacher's outputs at the masked patches, or
    ``sinkhorn_knopp`` over those patches.

    Over several ranks (``distributed``), each rank passes its shard and the terms are as
    DINOv2 computes them (``dinov2/train/ssl_meta_arch.py``): the DINO term is a mean over
    this rank's batch (the teachers' centering or Sinkhorn-Knopp already used the global
    batch); KoLeo is per rank (see ``koleo_loss``); the iBOT term weights each masked patch
    by $1/m_b$ of its own image (an image is on one rank: DINOv2's ``masks_weight``) and is
    divided by the number of global-crop images. DINOv2 divides by this rank's count
    (``student_masks_flat.shape[0]``), which, averaged over ranks, is the global per-image
    mean only when the ranks hold equally many images; here the local loss is multiplied by
    $W n_r / \\sum_r n_r$ (one all-gather of one integer), so the average over ranks is the
    global iBOT loss for unequal shards too (the factor is exactly 1 for equal ones). The
    teacher's patch probabilities come from ``TeacherCentering.update`` / ``sinkhorn_knopp``,
    which use every rank's masked patches (for Sinkhorn, B = the global number of masked
    patches: DINOv2's all-reduced ``n_masked_patches_tensor``). Every rank must call it.

    The seed's $\\lambda_1 L_{MIM} + \\lambda_2 L_{inst}$ is $w_{ibot}$, $w_{dino}$; KoLeo is the
    real system's third term. Teacher inputs are data (no gradient). A term whose weight is 0
    is not computed (its part is reported as 0).

    Args:
        student_cls_logits_per_crop: n_c Tensors (B, K), globals first (head on CLS).
        teacher_cls_probs_per_global: n_g (B, K) centred+sharpened or Sinkhorn probabilities.
        student_patch_logits: (n_g B, N, K) head outputs of the student's patch tokens of the
            global crops, crops stacked in order (or a list of n_g (B, N, K)).
        teacher_patch_probs: the teacher's patch probabilities, same layout.
        masks: (n_g B, N) bool, True = masked in the student's input (or a list of n_g).
        student_cls_backbone_per_global: n_g Tensors (B, D), the backbone's normed CLS.

    Returns ``(total, parts)`` with ``parts = {"dino", "ibot", "koleo"}`` the *unweighted*
    terms (Tensors; call ``.item()`` to log them).
    """
    fn = "dinov2_loss"
    tau = check_temp(student_temp, "student_temp", fn)
    teachers = as_list(teacher_cls_probs_per_global, "teacher_cls_probs_per_global", fn)
    n_g = len(teachers)
    B = raw(teachers[0]).shape[0]

    def stacked(xs: Any, name: str) -> Any:
        if isinstance(xs, (list, tuple)):
            if len(xs) != n_g:
                raise ValueError(
                    f"{fn}: {name} has {len(xs)} entries but there are {n_g} global crops"
                )
            if all(isinstance(x, Tensor) for x in xs):
                return F.concat(list(xs), axis=0)
            arrays = [raw(x) for x in xs]
            return backend.get_array_module(*arrays).concatenate(arrays, axis=0)
        return xs

    s_patch = stacked(student_patch_logits, "student_patch_logits")
    t_patch = stacked(teacher_patch_probs, "teacher_patch_probs")
    m = stacked(masks, "masks")
    if s_patch.shape[0] != n_g * B:
        raise ValueError(
            f"{fn}: student_patch_logits {tuple(s_patch.shape)} must stack the {n_g} global "
            f"crops of batch {B}: first axis {n_g * B}"
        )
    backbone = as_list(student_cls_backbone_per_global, "student_cls_backbone_per_global", fn)
    if len(backbone) != n_g:
        raise ValueError(
            f"{fn}: student_cls_backbone_per_global has {len(backbone)} crops, expected one per "
            f"global crop ({n_g})"
        )

    like = raw(s_patch)
    zero = Tensor(backend.get_array_module(like).zeros((), dtype=like.dtype))  # a skipped term

    parts: dict[str, Tensor] = {}
    parts["dino"] = (dino_loss(student_cls_logits_per_crop, teachers, tau)
                     if w_dino != 0 else zero)
    if w_ibot != 0:
        parts["ibot"] = ibot_patch_loss(s_patch, t_patch, m, tau)  # / this rank's images
        if distributed.is_distributed():
            n_img = int(s_patch.shape[0])
            counts = distributed.gather_counts(n_img)  # every rank's global-crop images
            parts["ibot"] = parts["ibot"] * (n_img * len(counts) / sum(counts))
    else:
        parts["ibot"] = zero
    if w_koleo != 0:
        koleo = None
        for h in backbone:
            k = koleo_loss(h)
            koleo = k if koleo is None else koleo + k
        parts["koleo"] = koleo
    else:
        parts["koleo"] = zero
    total = w_dino * parts["dino"] + w_ibot * parts["ibot"] + w_koleo * parts["koleo"]
    return total, parts
