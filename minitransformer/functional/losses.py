"""Losses over logits: cross-entropy with integer targets, and with soft targets."""

from __future__ import annotations

from typing import Any

from .. import backend
from ..autograd import Tensor
from . import reduction as R
from .activation import log_softmax
from .shape import getitem

__all__ = ["cross_entropy", "soft_cross_entropy"]


def cross_entropy(logits: Any, target: Any, ignore_index: int = -100, reduction: str = "mean"
                  ) -> Tensor:
    """$\\ell_i = -\\log \\mathrm{softmax}(z_i)_{t_i}$, averaged over the rows whose target is
    not ``ignore_index`` (the MLM/BEiT convention: a mean over predicted positions).

    Shapes: logits (..., K), target (...) integers in [0, K) or ``ignore_index``.
    ``reduction``: "mean" (over kept rows; 0 when none is kept), "sum" or "none" (per row, 0 at
    ignored rows)."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be mean, sum or none, got {reduction!r}")
    z = logits if isinstance(logits, Tensor) else Tensor(logits)
    t = target.data if isinstance(target, Tensor) else target
    xp = backend.get_array_module(z.data)
    t = xp.asarray(t)
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: target must hold integers, got dtype {t.dtype}")
    if tuple(t.shape) != tuple(z.shape[:-1]):
        raise ValueError(
            f"cross_entropy: logits {tuple(z.shape)} need target of shape {tuple(z.shape[:-1])}, "
            f"got {tuple(t.shape)}"
        )
    K = z.shape[-1]
    keep = t != ignore_index
    bad = keep & ((t < 0) | (t >= K))
    if bool(bad.any()):
        raise ValueError(
            f"cross_entropy: target values must be in [0, {K}) or {ignore_index}, got "
            f"{int(t[bad].reshape(-1)[0])}"
        )
    logp = log_softmax(z.reshape(-1, K), axis=-1)  # (R, K)
    t_flat = t.reshape(-1)
    safe_t = xp.where(keep.reshape(-1), t_flat, 0)
    rows = xp.arange(t_flat.shape[0])
    picked = getitem(logp, (rows, safe_t))  # (R,): log p of each row's target
    nll = -picked * keep.reshape(-1).astype(z.dtype)
    if reduction == "none":
        return nll.reshape(t.shape)
    total = R.sum(nll)
    if reduction == "sum":
        return total
    return total / max(int(keep.sum()), 1)


def soft_cross_entropy(logits: Any, target_probs: Any, axis: int = -1) -> Tensor:
    """$\\ell = -\\sum_k p_k \\log \\mathrm{softmax}(z)_k$ along ``axis``, per row (no mean).

    The DINO / iBOT building block: the teacher's probabilities p against the student's
    logits z. Shapes: logits and target_probs (..., K) -> (...)."""
    if tuple(logits.shape) != tuple(target_probs.shape):
        raise ValueError(
            f"soft_cross_entropy: logits {tuple(logits.shape)} and target_probs "
            f"{tuple(target_probs.shape)} must have the same shape"
        )
    return -R.sum(target_probs * log_softmax(logits, axis=axis), axis=axis)
