"""Plain-NumPy float64 references for the objectives, written from the reference systems'
formulas (DINO, DINOv2, iBOT, MAE, BEiT, BERT, open_clip), never by calling the library.

Each follows the source's own loop structure where that is how the source reads, so a
vectorised library version is checked against the literal one.
"""

from __future__ import annotations

import numpy as np


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=axis, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=axis, keepdims=True))


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.exp(log_softmax(z, axis))


def ce_rows(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """-log softmax(z)_y per row. (R, K), (R,) -> (R,)."""
    lp = log_softmax(logits)
    return -lp[np.arange(len(target)), target]


def masked_mean_ce(logits: np.ndarray, labels: np.ndarray, ignore: int = -100) -> float:
    """torch CrossEntropyLoss(ignore_index) mean: over the kept rows only."""
    K = logits.shape[-1]
    z = logits.reshape(-1, K)
    y = labels.reshape(-1)
    keep = y != ignore
    if not keep.any():
        return 0.0
    return float(ce_rows(z[keep], y[keep]).mean())


def clip_loss(img: np.ndarray, txt: np.ndarray, logit_scale: float) -> float:
    """open_clip ClipLoss: normalise, logits = exp(s) I T^T, (CE(rows) + CE(cols)) / 2."""
    i = img / np.linalg.norm(img, axis=1, keepdims=True)
    t = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    logits = np.exp(logit_scale) * i @ t.T
    labels = np.arange(len(img))
    return 0.5 * (ce_rows(logits, labels).mean() + ce_rows(logits.T, labels).mean())


def dino_loss(student: list, teacher: list, student_temp: float) -> float:
    """DINO's DINOLoss.forward, literally: loop over teacher views iq and student views v,
    skip v == iq, average over the number of terms."""
    total, n_terms = 0.0, 0
    for iq, q in enumerate(teacher):
        for v, s in enumerate(student):
            if v == iq:
                continue
            loss = np.sum(-q * log_softmax(s / student_temp), axis=-1)
            total += loss.mean()
            n_terms += 1
    return total / n_terms


def dinov2_dino_term(student: list, teacher: list, student_temp: float) -> float:
    """DINOv2's ssl_meta_arch: dino_local (every local vs every global teacher) plus
    dino_global (student globals vs *reversed* teacher globals, one batched CE, times
    loss_scales = 2), divided by n_g (n_g - 1) + n_g n_l."""
    n_g = len(teacher)
    n_l = len(student) - n_g

    def ce_sum(s_list: list, t_list: list) -> float:  # DINOLoss.forward: -sum of means
        out = 0.0
        for s in s_list:
            lsm = log_softmax(s / student_temp)
            for t in t_list:
                out -= np.sum(t * lsm, axis=-1).mean()
        return out

    dino_local = ce_sum(student[n_g:], teacher) if n_l else 0.0
    s_glob = np.concatenate(student[:n_g])
    t_glob = np.concatenate(teacher[::-1])  # reversed chunks: g1 <-> g2
    dino_global = ce_sum([s_glob], [t_glob]) * 2  # loss_scales = 2
    n_terms = n_g * (n_g - 1) + n_g * n_l
    return (dino_local + dino_global) / n_terms


def ibot_loss(student: np.ndarray, teacher: np.ndarray, mask: np.ndarray,
              student_temp: float) -> float:
    """iBOT's iBOTLoss patch term: sum(loss * mask, -1) / mask.sum(-1).clamp(min=1), mean."""
    per_patch = np.sum(-teacher * log_softmax(student / student_temp), axis=-1)  # (B, N)
    per_image = (per_patch * mask).sum(-1) / np.maximum(mask.sum(-1), 1)
    return float(per_image.mean())


def mae_loss(pred: np.ndarray, imgs_patches: np.ndarray, mask: np.ndarray,
             norm_pix: bool) -> float:
    """MAE forward_loss with torch's unbiased var."""
    target = imgs_patches.astype(np.float64)
    if norm_pix:
        mean = target.mean(-1, keepdims=True)
        var = target.var(-1, ddof=1, keepdims=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    loss = ((pred - target) ** 2).mean(-1)
    return float((loss * mask).sum() / mask.sum())


def koleo(x: np.ndarray, eps: float = 1e-8) -> float:
    """DINOv2 KoLeoLoss with an explicit loop for the neighbours (j != i)."""
    x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)
    B = len(x)
    out = 0.0
    for i in range(B):
        best, j_best = -np.inf, -1
        for j in range(B):
            if j == i:
                continue
            d = float(x[i] @ x[j])
            if d > best:
                best, j_best = d, j
        dist = np.linalg.norm(x[i] - x[j_best] + eps)
        out -= np.log(dist + eps)
    return out / B


def patchify(imgs: np.ndarray, p: int) -> np.ndarray:
    """MAE's patchify written per element: patch (r, c), offset (i, j), channel ch."""
    B, C, H, W = imgs.shape
    h, w = H // p, W // p
    out = np.zeros((B, h * w, p * p * C), dtype=imgs.dtype)
    for r in range(h):
        for c in range(w):
            for i in range(p):
                for j in range(p):
                    for ch in range(C):
                        out[:, r * w + c, (i * p + j) * C + ch] = imgs[:, ch, r * p + i, c * p + j]
    return out


def sinkhorn(t: np.ndarray, temp: float, n_iter: int) -> np.ndarray:
    """DINOv2 sinkhorn_knopp_teacher, literally (no max shift)."""
    Q = np.exp(t / temp).T
    B, K = Q.shape[1], Q.shape[0]
    Q /= Q.sum()
    for _ in range(n_iter):
        Q /= Q.sum(axis=1, keepdims=True)
        Q /= K
        Q /= Q.sum(axis=0, keepdims=True)
        Q /= B
    Q *= B
    return Q.T


def entropy_rows(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(-1)
