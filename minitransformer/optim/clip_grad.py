"""Gradient clipping: one global L2 norm (torch / DINOv2) or each tensor on its own (DINO v1)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .. import backend
from ..autograd import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_per_param_"]

_EPS = 1e-6  # both references add it to the norm before dividing


def _with_grads(params: Any, fn: str) -> list[Tensor]:
    if hasattr(params, "parameters"):
        params = params.parameters()
    if isinstance(params, Tensor):
        params = [params]
    out = []
    for p in params:
        if not isinstance(p, Tensor):
            raise TypeError(f"{fn}: expected Tensors (or a Module), got {type(p).__name__}")
        if p.grad is not None:
            out.append(p)
    return out


def _norm(g: Any) -> Any:
    """||g||_2 as a 0-d float64 array on g's device (accumulated in float64)."""
    xp = backend.get_array_module(g)
    return xp.sqrt(xp.sum(xp.square(g), dtype=xp.float64))


def _stack(scalars: list[Any], fn: str) -> Any:
    """0-d arrays of one device stacked into a (n,) array there (no host read)."""
    xp = backend.get_array_module(scalars[0])
    if any(backend.get_array_module(s) is not xp for s in scalars):
        devices = sorted({str(backend.device_of(s)) for s in scalars})
        raise ValueError(f"{fn}: the gradients are on several devices ({', '.join(devices)}); "
                         "clip each device's parameters on their own")
    return xp.stack(scalars)


def clip_grad_norm_(params: Iterable[Tensor] | Any, max_norm: float) -> Any:
    """$g \\leftarrow g \\cdot \\min(1, \\frac{c}{\\|g\\|_2 + 10^{-6}})$ with one norm over *all*
    gradients together (torch.nn.utils.clip_grad_norm_, DINOv2's ``clip_grad_norm_(3.0)``).

    Parameters whose ``grad`` is None are ignored. Gradients are scaled in place, on their
    device, by the clamped coefficient (as torch since 1.13, which multiplies by
    ``clamp(c / (norm + 1e-6), max=1)`` instead of testing it on the host): nothing is read on
    the host, so a GPU never waits for it. When the norm is inf or nan the coefficient is 1
    and the gradients are left unchanged (scaling would turn them all into nan); the caller
    decides (a training loop sees the non-finite loss or norm when it reads its metrics).

    Shapes: any; the norm is over the concatenation of every gradient.
    Returns: the total norm *before* clipping as a 0-d float64 array on the gradients'
    device (a device scalar: ``float(norm)`` reads it; on the CPU it is a NumPy float64),
    0.0 when no parameter has a gradient.
    """
    if not max_norm > 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be > 0, got {max_norm!r}")
    ps = _with_grads(params, "clip_grad_norm_")
    if not ps:
        return 0.0
    xp = backend.get_array_module(ps[0].grad)
    total = xp.sqrt(xp.sum(_stack([_norm(p.grad) ** 2 for p in ps], "clip_grad_norm_")))  # ()
    coef = max_norm / (total + _EPS)
    # 1 where the norm is below max_norm or not finite: those gradients keep their values
    coef = xp.where(xp.isfinite(total) & (coef < 1.0), coef, 1.0)
    for p in ps:
        p.grad *= coef.astype(p.grad.dtype)
    return total


def clip_grad_per_param_(params: Iterable[Tensor] | Any, clip: float) -> Any:
    """$g_p \\leftarrow g_p \\cdot \\frac{c}{\\|g_p\\|_2 + 10^{-6}}$ for each tensor whose own
    norm exceeds the clip, others untouched: DINO v1's ``utils.clip_gradients`` (clip 3.0).

    It is *not* a global-norm clip: a tensor with norm 2 stays as it is even when the global
    norm is far above ``clip``. Gradients are scaled in place, on their device, with no host
    read; None gradients are skipped.

    Shapes: any. Returns: the norm of each gradient before clipping, in order, as a (P,)
    float64 array on the gradients' device (P = the gradients present; empty: a NumPy (0,)).
    """
    if not clip > 0:
        raise ValueError(f"clip_grad_per_param_: clip must be > 0, got {clip!r}")
    ps = _with_grads(params, "clip_grad_per_param_")
    if not ps:
        return np.zeros(0)
    norms = []
    for p in ps:
        xp = backend.get_array_module(p.grad)
        norm = _norm(p.grad)
        coef = clip / (norm + _EPS)
        # Scale on the device without a host round trip: coef where it is < 1, else 1.
        p.grad *= xp.minimum(coef, 1.0).astype(p.grad.dtype)
        norms.append(norm)
    return _stack(norms, "clip_grad_per_param_")
