"""Gradient clipping: one global L2 norm (torch / DINOv2) or each tensor on its own (DINO v1)."""

from __future__ import annotations

import math
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


def _host_array(scalars: list[Any]) -> np.ndarray:
    """Stack 0-d device arrays and copy them to the host in one transfer per device."""
    if not scalars:
        return np.zeros(0)
    xp = backend.get_array_module(*scalars)
    if all(backend.get_array_module(s) is xp for s in scalars):
        return backend.to_numpy(xp.stack(scalars))
    return np.array([float(backend.to_numpy(s)) for s in scalars])


def clip_grad_norm_(params: Iterable[Tensor] | Any, max_norm: float) -> float:
    """$g \\leftarrow g \\cdot \\min(1, \\frac{c}{\\|g\\|_2 + 10^{-6}})$ with one norm over *all*
    gradients together (torch.nn.utils.clip_grad_norm_, DINOv2's ``clip_grad_norm_(3.0)``).

    Parameters whose ``grad`` is None are ignored. Gradients are scaled in place.

    Shapes: any; the norm is over the concatenation of every gradient.
    Returns: the total norm *before* clipping, a Python float. When it is inf or nan the
    gradients are left unchanged (scaling would turn them all into nan); the caller decides.
    """
    if not max_norm > 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be > 0, got {max_norm!r}")
    ps = _with_grads(params, "clip_grad_norm_")
    if not ps:
        return 0.0
    total = float(np.sqrt(np.sum(_host_array([_norm(p.grad) ** 2 for p in ps]))))
    coef = max_norm / (total + _EPS)
    if math.isfinite(total) and coef < 1.0:  # a non-finite norm is reported, not applied
        for p in ps:
            p.grad *= p.grad.dtype.type(coef)
    return total


def clip_grad_per_param_(params: Iterable[Tensor] | Any, clip: float) -> list[float]:
    """$g_p \\leftarrow g_p \\cdot \\frac{c}{\\|g_p\\|_2 + 10^{-6}}$ for each tensor whose own
    norm exceeds the clip, others untouched: DINO v1's ``utils.clip_gradients`` (clip 3.0).

    It is *not* a global-norm clip: a tensor with norm 2 stays as it is even when the global
    norm is far above ``clip``. Gradients are scaled in place; None gradients are skipped.

    Shapes: any. Returns: the norm of each gradient before clipping (Python floats, in order).
    """
    if not clip > 0:
        raise ValueError(f"clip_grad_per_param_: clip must be > 0, got {clip!r}")
    ps = _with_grads(params, "clip_grad_per_param_")
    norms = []
    for p in ps:
        xp = backend.get_array_module(p.grad)
        norm = _norm(p.grad)
        coef = clip / (norm + _EPS)
        # Scale on the device without a host round trip: coef where it is < 1, else 1.
        p.grad *= xp.minimum(coef, 1.0).astype(p.grad.dtype)
        norms.append(norm)
    return [float(n) for n in _host_array(norms)]
