"""Exercises of notebook 09 (DINOv2): KoLeo, the iBOT patch loss, Sinkhorn-Knopp and the
weighted total of seed eq. 9.

DINOv2, Oquab et al. 2023, sec. 4 (image-level and patch-level objectives, KoLeo,
Sinkhorn-Knopp centering); facebookresearch/dinov2 ``dinov2/loss/koleo_loss.py``,
``dinov2/loss/ibot_patch_loss.py``, ``dinov2/loss/dino_clstoken_loss.py``
(``sinkhorn_knopp_teacher``) and ``dinov2/train/ssl_meta_arch.py``. Each reference solution
is plain NumPy, as a learner would write it; ``expected`` computes the same thing with the
library (float64 tensors): ``objectives.koleo_loss``, ``ibot_patch_loss``,
``sinkhorn_knopp``, ``dinov2_loss``.
"""

from __future__ import annotations

import numpy as np

from .. import objectives
from ..autograd import tensor
from ._core import Case, exercise

EPS = 1e-8  # DINOv2's KoLeoLoss: F.normalize(eps=1e-8) and PairwiseDistance(eps=1e-8)


# --------------------------------------------------------------------------------------------
# KoLeo
# --------------------------------------------------------------------------------------------
def _koleo_cases(rng: np.random.Generator) -> list[Case]:
    duplicated = rng.standard_normal((5, 4))
    duplicated[3] = duplicated[1]  # rows 1 and 3 are the same point: distance 0
    return [
        Case("8 features of width 16", (rng.standard_normal((8, 16)),)),
        Case("two points (each is the other's neighbour)", (rng.standard_normal((2, 3)),)),
        Case("rows 1 and 3 are duplicates (distance 0: the epsilons keep the loss finite)",
             (duplicated,)),
        Case("rows of very different lengths (only directions count)",
             (rng.standard_normal((6, 8)) * rng.uniform(1e-3, 1e3, (6, 1)),)),
        Case("32 points on the circle (more points than D + 1: distances below 1)",
             (rng.standard_normal((32, 2)),)),
    ]


@exercise(
    "koleo_loss",
    title="the KoLeo loss -mean_i log(||x_i - x_nn(i) + eps|| + eps) on normalised x",
    signature="koleo_loss(x) -> float; x (B, D), B >= 2",
    equation="DINOv2's KoLeo regulariser (sec. 4, after Sablayrolles et al. 2019): the "
             "Kozachenko-Leonenko entropy estimator",
    library="objectives.koleo_loss",
    notebook="09_dinov2",
    hint="normalise the rows (x / max(||x||, 1e-8)) first; the nearest neighbour of x_i is "
         "the argmax of its dot products with the OTHER rows (put -inf on the diagonal, or "
         "every point finds itself); then d_i = ||x_i - x_nn(i) + 1e-8|| (eps added to the "
         "difference, as torch's PairwiseDistance) and the loss is -mean log(d_i + 1e-8) "
         "(note the minus sign)",
    cases=_koleo_cases,
    expected=lambda x: float(objectives.koleo_loss(tensor(x)).item()),
)
def koleo_loss(x):
    x_hat = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), EPS)  # (B, D)
    dots = x_hat @ x_hat.T  # (B, B) cosines
    np.fill_diagonal(dots, -np.inf)  # a point is not its own neighbour
    nn = dots.argmax(axis=1)  # (B,) nearest = largest cosine
    d = np.linalg.norm(x_hat - x_hat[nn] + EPS, axis=1)  # (B,)
    return -np.log(d + EPS).mean()


# --------------------------------------------------------------------------------------------
# iBOT: cross-entropy at the masked patches
# --------------------------------------------------------------------------------------------
def _ibot_cases(rng: np.random.Generator) -> list[Case]:
    def inputs(B, N, K, masked_per_image, scale=1.0):
        s = rng.standard_normal((B, N, K)) * scale  # student logits
        t = rng.dirichlet(np.ones(K), size=(B, N))  # teacher probabilities, rows sum to 1
        mask = np.zeros((B, N), dtype=bool)
        for b, m in enumerate(masked_per_image):
            mask[b, rng.choice(N, m, replace=False)] = True
        return s, t, mask, 0.1

    return [
        Case("3 images, 8 patches, K = 5; 2, 5 and 3 masked patches", inputs(3, 8, 5, [2, 5, 3])),
        Case("4 images, two of them unmasked (they add 0 but count in the mean)",
             inputs(4, 6, 4, [0, 3, 0, 1])),
        Case("a batch of one with a single masked patch", inputs(1, 9, 6, [1])),
        Case("every patch masked", inputs(2, 4, 3, [4, 4])),
        Case("extreme logits (up to about 300 / 0.1 = 3000)", inputs(2, 5, 4, [3, 1], 100.0)),
    ]


@exercise(
    "ibot_patch_loss",
    title="the iBOT patch loss: per image, the mean over its masked patches of "
          "-sum_k t log softmax(s / 0.1), then the mean over all B images",
    signature="ibot_patch_loss(student_patch_logits, teacher_patch_probs, mask, student_temp)"
              " -> float; logits and probs (B, N, K), mask (B, N) bool True = masked",
    equation="seed eq. 8 (L_MIM) as iBOT and DINOv2 compute it",
    library="objectives.ibot_patch_loss",
    notebook="09_dinov2",
    hint="compute a STABLE log-softmax of s / student_temp over K (subtract the max); the "
         "cross-entropy of patch (b, i) is -sum_k t log p; average it over the masked patches "
         "of EACH image (an image with none contributes 0), then divide the sum over images by "
         "B, all B images, not by the number of masked patches of the whole batch",
    cases=_ibot_cases,
    expected=lambda s, t, m, tau: float(objectives.ibot_patch_loss(tensor(s), t, m, tau).item()),
)
def ibot_patch_loss(student_patch_logits, teacher_patch_probs, mask, student_temp):
    z = student_patch_logits / student_temp  # (B, N, K)
    z = z - z.max(axis=-1, keepdims=True)  # exp cannot overflow
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))  # (B, N, K) log softmax
    ce = -(teacher_patch_probs * log_p).sum(axis=-1)  # (B, N) cross-entropy per patch
    per_image = (ce * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)  # (B,)
    return per_image.mean()  # over all B images, the unmasked ones add 0


# --------------------------------------------------------------------------------------------
# Sinkhorn-Knopp
# --------------------------------------------------------------------------------------------
def _sinkhorn_cases(rng: np.random.Generator) -> list[Case]:
    biased = rng.standard_normal((16, 6)) * 0.5
    biased[:, :2] += 1.0  # the whole batch prefers prototypes 0 and 1
    return [
        Case("8 samples, 4 prototypes, temp 0.1", (rng.standard_normal((8, 4)), 0.1)),
        Case("16 samples biased toward 2 of 6 prototypes, temp 0.05", (biased, 0.05)),
        Case("4 samples, 16 prototypes (K > B)", (rng.standard_normal((4, 16)), 0.1)),
        Case("one iteration only", (rng.standard_normal((6, 5)), 0.2), {"n_iter": 1}),
        Case("logits near 20 at temp 0.02: exp(g / tau) = exp(1000) overflows",
             (20.0 + 0.5 * rng.standard_normal((8, 4)), 0.02)),
    ]


@exercise(
    "sinkhorn_knopp",
    title="Sinkhorn-Knopp: Q = exp(g / tau)^T / sum, n_iter x (rows to 1/K, columns to 1/B), "
          "return (B Q)^T",
    signature="sinkhorn_knopp(teacher_logits, temp, n_iter=3) -> array; (B, K) -> (B, K), "
              "each row a sample's soft assignment (sums to 1)",
    equation="DINOv2's Sinkhorn-Knopp centering (sec. 4, from SwAV, Caron et al. 2020)",
    library="objectives.sinkhorn_knopp",
    notebook="09_dinov2",
    hint="work on Q = exp(g / tau).T, shape (K, B); subtract the largest g / tau before exp "
         "(a global shift changes nothing, and exp(1000) overflows); divide Q by its total; "
         "then n_iter times: first each PROTOTYPE row by its sum times K, then each SAMPLE "
         "column by its sum times B (the order matters: three iterations do not converge); "
         "finally multiply by B and transpose back to (B, K)",
    cases=_sinkhorn_cases,
    expected=lambda g, temp, n_iter=3: objectives.sinkhorn_knopp(tensor(g), temp, n_iter).numpy(),
)
def sinkhorn_knopp(teacher_logits, temp, n_iter=3):
    z = teacher_logits / temp  # (B, K)
    Q = np.exp(z - z.max()).T  # (K, B); one global shift: it cancels in the first division
    B, K = teacher_logits.shape
    Q /= Q.sum()
    for _ in range(n_iter):
        Q /= Q.sum(axis=1, keepdims=True) * K  # each prototype row sums to 1/K
        Q /= Q.sum(axis=0, keepdims=True) * B  # each sample column sums to 1/B
    return (Q * B).T  # (B, K): each sample's assignment sums to 1


# --------------------------------------------------------------------------------------------
# The weighted total
# --------------------------------------------------------------------------------------------
def _total_cases(rng: np.random.Generator) -> list[Case]:
    def crops(n_g, B, D):
        return [rng.standard_normal((B, D)) for _ in range(n_g)]

    return [
        Case("2 global crops of 8 images, width 16, DINOv2's weights 1, 1, 0.1",
             (2.31, 1.74, crops(2, 8, 16))),
        Case("other weights: w_dino 0.5, w_ibot 2, w_koleo 0.3",
             (3.0, 0.9, crops(2, 6, 8)), {"w_dino": 0.5, "w_ibot": 2.0, "w_koleo": 0.3}),
        Case("2 images per crop (the fewest KoLeo accepts)", (1.2, 0.4, crops(2, 2, 5))),
        Case("1 global crop (one KoLeo term)", (0.7, 0.2, crops(1, 5, 4))),
    ]


def _library_total(dino, ibot, cls_per_global, w_dino=1.0, w_ibot=1.0, w_koleo=0.1):
    # dinov2_loss computes the KoLeo part from the crops; its DINO and iBOT parts are given
    # here as numbers, so they are switched off there (weight 0) and added as eq. 9 weighs them
    n_g, (B, _) = len(cls_per_global), cls_per_global[0].shape
    K = 2
    unused_logits = [tensor(np.zeros((B, K))) for _ in range(n_g)]
    unused_probs = [np.full((B, K), 1.0 / K) for _ in range(n_g)]
    unused_patches = np.zeros((n_g * B, 1, K))  # (n_g B, N, K)
    total, _ = objectives.dinov2_loss(unused_logits, unused_probs, tensor(unused_patches),
                           unused_patches + 1.0 / K, np.zeros((n_g * B, 1), dtype=bool),
                           [tensor(h) for h in cls_per_global],
                           w_dino=0.0, w_ibot=0.0, w_koleo=w_koleo)
    return w_dino * dino + w_ibot * ibot + float(total.item())


@exercise(
    "dinov2_total_loss",
    title="DINOv2's total w_dino L_DINO + w_ibot L_iBOT + w_koleo sum over global crops of "
          "KoLeo(CLS features of that crop)",
    signature="dinov2_total_loss(dino, ibot, cls_per_global, w_dino=1.0, w_ibot=1.0, "
              "w_koleo=0.1) -> float; dino, ibot floats, cls_per_global a list of n_g "
              "arrays (B, D), the student backbone's CLS features of each global crop",
    equation="seed eq. 9 with DINOv2's third term (dinov2/train/ssl_meta_arch.py, weights "
             "from ssl_default_config.yaml)",
    library="objectives.dinov2_loss",
    notebook="09_dinov2",
    hint="KoLeo runs on each global crop SEPARATELY and the results are summed (DINOv2 does "
         "not compare the two crops of one image: they should stay close), so do not "
         "concatenate the crops, and do not average them; weigh KoLeo by w_koleo = 0.1. "
         "You may call your KoLeo function from the exercise above, or the library's "
         "objectives.koleo_loss",
    cases=_total_cases,
    expected=_library_total,
)
def dinov2_total_loss(dino, ibot, cls_per_global, w_dino=1.0, w_ibot=1.0, w_koleo=0.1):
    koleo_sum = sum(koleo_loss(h) for h in cls_per_global)  # one KoLeo per global crop, summed
    return w_dino * dino + w_ibot * ibot + w_koleo * koleo_sum
