"""Losses over logits: cross-entropy with integer targets, and with soft targets.

Both exist composed (``*_composed``: log_softmax, then pick or weight, then reduce) and fused
(one Function that never materialises the probabilities in forward and rebuilds them once in
backward: $\\partial \\ell / \\partial z = \\mathrm{softmax}(z) - \\text{target}$).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Function, Tensor
from ..backend import get_array_module
from . import reduction as R
from .activation import log_softmax_composed, softmax_rows
from .checks import check_values, use_data_checks
from .fusion import is_fused
from .reduction import dot_keepdims, sum_keepdims
from .shape import getitem

__all__ = ["cross_entropy", "cross_entropy_composed", "soft_cross_entropy",
           "soft_cross_entropy_composed"]

_REDUCTIONS = ("mean", "sum", "none")


def _softmax_lse(z: Any, axis: int) -> tuple[Any, Any]:
    """Raw ``(softmax(z), logsumexp(z))`` along ``axis`` (keepdims), from one exponential pass
    with the max shifted out; along the last axis of a contiguous array, by ``softmax_rows``
    (blocks of rows, or one compiled pass per row where Numba is installed)."""
    xp = get_array_module(z)
    if z.ndim >= 1 and axis in (-1, z.ndim - 1) and z.flags.c_contiguous:
        p = xp.empty_like(z)
        lse = xp.empty(z.shape[:-1] + (1,), dtype=z.dtype)  # keepdims
        softmax_rows(z, p, lse)
        return p, lse
    m = z.max(axis=axis, keepdims=True)
    p = z - m
    xp.exp(p, out=p)
    total = sum_keepdims(p, axis)
    p /= total
    lse = xp.log(total)
    lse += m
    return p, lse


def _check_targets(logits: Any, target: Any, ignore_index: int, reduction: str) -> Any:
    """Validate integer targets against logits (..., K); return them as a raw array on the
    logits' device."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"cross_entropy: reduction must be mean, sum or none, got {reduction!r}")
    z = logits.data if isinstance(logits, Tensor) else logits
    t = target.data if isinstance(target, Tensor) else target
    if z.ndim < 1 or z.dtype.kind != "f":
        raise TypeError(
            f"cross_entropy: logits must be a floating array (..., K), got shape "
            f"{tuple(z.shape)} dtype {z.dtype}"
        )
    xp = get_array_module(z)
    if not hasattr(t, "dtype"):  # a list or a scalar: host data
        t = np.asarray(t)
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: target must hold integer class ids, got dtype {t.dtype}")
    if tuple(t.shape) != tuple(z.shape[:-1]):
        raise ValueError(
            f"cross_entropy: logits {tuple(z.shape)} need target of shape {tuple(z.shape[:-1])}, "
            f"got {tuple(t.shape)}"
        )
    K = z.shape[-1]
    if K == 0 or t.size == 0:
        what = "have no classes (K = 0)" if K == 0 else "are an empty batch (no rows)"
        raise ValueError(
            f"cross_entropy: logits of shape {tuple(z.shape)} {what}; a loss needs at least "
            "one row and one class"
        )
    if check_values(t):  # where the targets are: free on the host, one read on a GPU
        bad = (t != ignore_index) & ((t < 0) | (t >= K))
        if bool(bad.any()):
            raise ValueError(
                f"cross_entropy: target values must be in [0, {K}) or "
                f"ignore_index={ignore_index}, got {int(t[bad].reshape(-1)[0])}"
            )
    return xp.asarray(t)  # on the logits' device (a copy only for host targets)


def cross_entropy_composed(logits: Any, target: Any, ignore_index: int = -100,
                           reduction: str = "mean") -> Tensor:
    """Cross-entropy from primitives: $\\ell_i = -\\log \\mathrm{softmax}(z_i)_{t_i}$ picked with
    integer-array indexing, masked at ignored rows, then reduced. Shapes: as ``cross_entropy``."""
    t = _check_targets(logits, target, ignore_index, reduction)
    z = logits if isinstance(logits, Tensor) else Tensor(logits)
    xp = get_array_module(z.data)
    K = z.shape[-1]
    logp = log_softmax_composed(z.reshape(-1, K), axis=-1)  # (N, K), N = rows
    t_flat = t.reshape(-1)  # (N,)
    keep = t_flat != ignore_index
    safe_t = xp.where(keep, t_flat, 0)  # any valid class at ignored rows; masked below
    with use_data_checks(False):  # the targets were checked above: no second read
        picked = getitem(logp, (xp.arange(t_flat.shape[0]), safe_t))  # (N,) log p of target
    nll = -picked * keep.astype(z.dtype)
    if reduction == "none":
        return nll.reshape(t.shape)
    total = R.sum(nll)
    if reduction == "sum":
        return total
    n_kept = xp.maximum(keep.sum(), 1).astype(z.dtype)  # stays on the device: no sync
    return total / n_kept


class CrossEntropy(Function):
    """Fused log-softmax + negative log-likelihood, $\\ell_i = \\mathrm{lse}(z_i) - z_{i,t_i}$.
    Saves the probabilities (one array the size of the logits, as torch's saved log-softmax):
    $g_z = (\\mathrm{softmax}(z) - \\mathrm{onehot}(t)) \\, w$ with
    $w = g_y [t \\ne \\text{ignore}] / n_\\text{kept}$ for the mean."""

    def __init__(self, target: Any, ignore_index: int, reduction: str):
        self.target, self.ignore_index, self.reduction = target, ignore_index, reduction

    def forward(self, z: Any) -> Any:
        xp = get_array_module(z)
        target, self.target = self.target, None  # kept as saved state below: freed by backward
        self.in_shape = z.shape
        K = z.shape[-1]
        z2 = z.reshape(-1, K)  # (N, K)
        t = target.reshape(-1)  # (N,)
        keep = t != self.ignore_index  # (N,)
        safe_t = xp.where(keep, t, 0)  # any valid class at ignored rows; weighted 0 below
        p, lse = _softmax_lse(z2, -1)  # (N, K), (N, 1)
        nll = lse[:, 0] - z2[xp.arange(z2.shape[0]), safe_t]  # -log softmax(z)_t
        nll *= keep
        n_kept = xp.maximum(keep.sum(), 1).astype(z.dtype)  # stays on the device: no sync
        self.save_for_backward(p, safe_t, keep, n_kept)
        if self.reduction == "none":
            return nll.reshape(target.shape)
        total = nll.sum()
        return total / n_kept if self.reduction == "mean" else total

    def backward(self, gy: Any) -> Any:
        # gz = (softmax(z) - onehot(t)) * w,  w = gy * keep (/ n_kept for the mean)
        p, safe_t, keep, n_kept = self.saved
        xp = get_array_module(p)
        w = keep * gy.reshape(-1)  # gy: () for mean/sum, (N,) for none
        if self.reduction == "mean":
            w /= n_kept
        w = w.astype(p.dtype, copy=False)
        gz = p * w[:, None]  # (N, K); p itself stays intact for a retained graph
        gz[xp.arange(p.shape[0]), safe_t] -= w
        return gz.reshape(self.in_shape)


def cross_entropy(logits: Any, target: Any, ignore_index: int = -100, reduction: str = "mean"
                  ) -> Tensor:
    """$\\ell_i = -\\log \\mathrm{softmax}(z_i)_{t_i}$, averaged over the rows whose target is
    not ``ignore_index`` (the MLM/BEiT convention: a mean over predicted positions, as torch).

    Shapes: logits (..., K), target (...) integers in [0, K) or ``ignore_index``.
    ``reduction``: "mean" (over kept rows; 0 when none is kept), "sum" or "none" (per row, 0 at
    ignored rows).

    Target values are checked (a ValueError naming the first bad one): on the host always,
    on a GPU (one device-to-host read per call) unless inside ``F.use_data_checks(False)``,
    which a training loop uses once it has validated its dataset; an unchecked out-of-range
    target on a GPU gives a wrong loss, not an error (see ``checks.py``).

    Edge cases, decided by shape first, then by data:

    - An empty batch (no rows: a 0 among the leading axes) or no classes (K = 0) raises a
      ValueError naming the shape, for every reduction: it is a shape bug upstream, and a
      silent 0.0 would train on nothing.
    - Every target ignored (rows exist, none is kept): "mean" gives 0 with a zero gradient
      (the sum over kept rows divided by ``max(n_kept, 1)``), "sum" 0, "none" zeros. This is
      Google BERT's ``sum(w * nll) / (sum(w) + 1e-5)`` and what ``mlm_loss`` and
      ``mim_token_loss`` document for a batch where the Bernoulli masking picked nothing.
      torch (since 1.11) returns NaN here instead, the mean of an empty set; a NaN would stop a
      run at the divergence check on a batch that is merely unlucky, so the library keeps 0.
    """
    if not is_fused():
        return cross_entropy_composed(logits, target, ignore_index, reduction)
    t = _check_targets(logits, target, ignore_index, reduction)
    return CrossEntropy(t, ignore_index, reduction)(logits)


def _check_soft(logits: Any, target_probs: Any, axis: int) -> None:
    """Same shapes, at least one dimension, and no empty batch or class axis (ValueError)."""
    shape = tuple(logits.shape)
    if shape != tuple(target_probs.shape):
        raise ValueError(
            f"soft_cross_entropy: logits {shape} and target_probs "
            f"{tuple(target_probs.shape)} must have the same shape"
        )
    if not shape:
        raise ValueError("soft_cross_entropy: logits must have a class axis, got shape ()")
    if 0 in shape:
        if not -len(shape) <= axis < len(shape):
            raise ValueError(f"soft_cross_entropy: axis {axis} is out of range for logits of "
                             f"shape {shape}")
        what = (f"have no classes along axis {axis}" if shape[axis] == 0
                else "are an empty batch (no rows)")
        raise ValueError(f"soft_cross_entropy: logits of shape {shape} {what}; a loss needs "
                         "at least one row and one class")


def soft_cross_entropy_composed(logits: Any, target_probs: Any, axis: int = -1) -> Tensor:
    """$\\ell = -\\sum_k p_k \\log \\mathrm{softmax}(z)_k$ from primitives. Shapes: as
    ``soft_cross_entropy``."""
    _check_soft(logits, target_probs, axis)
    return -R.sum(target_probs * log_softmax_composed(logits, axis=axis), axis=axis)


class SoftCrossEntropy(Function):
    """Fused soft-target cross-entropy. Saves $q = \\mathrm{softmax}(z)$ and the per-row
    logsumexp (so $\\log q = z - \\mathrm{lse}$ needs no second exponential):
    $g_z = g_\\ell\\,(q \\sum_k p_k - p)$, $g_p = -g_\\ell \\log q$."""

    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, z: Any, p: Any) -> Any:
        q, lse = _softmax_lse(z, self.axis)  # keepdims
        logq = z - lse  # log softmax(z), a temporary
        self.save_for_backward(z, p, q, lse)
        y = dot_keepdims(p, logq, self.axis)  # sum_k p_k log q_k, (..., 1, ...)
        return -y.squeeze(self.axis)

    def backward(self, gy: Any) -> Any:
        # gz = gy (q sum_k p_k - p);  gp = -gy log q = gy (lse - z)
        z, p, q, lse = self.saved
        xp = get_array_module(z)
        g = xp.expand_dims(gy, self.axis)  # (..., 1, ...) against (..., K, ...)
        gz = gp = None
        if self.needs_input_grad[0]:
            gz = q * p.sum(axis=self.axis, keepdims=True)
            gz -= p
            gz *= g
        if self.needs_input_grad[1]:
            gp = lse - z
            gp *= g
        return gz, gp


def soft_cross_entropy(logits: Any, target_probs: Any, axis: int = -1) -> Tensor:
    """$\\ell = -\\sum_k p_k \\log \\mathrm{softmax}(z)_k$ along ``axis``, per row (no mean).

    The DINO / iBOT building block: the teacher's probabilities p against the student's
    logits z (as DINO's main_dino.py DINOLoss, ``-q * log_softmax(s)`` summed over K).
    Shapes: logits and target_probs (..., K) -> (...). An empty batch (a 0 among the other
    axes) or an empty class axis raises a ValueError naming the shape, as ``cross_entropy``."""
    if not is_fused():
        return soft_cross_entropy_composed(logits, target_probs, axis)
    _check_soft(logits, target_probs, axis)
    return SoftCrossEntropy(axis)(logits, target_probs)
