"""Dropout: zero each element with probability p and scale the survivors by 1/(1-p)."""

from __future__ import annotations

from typing import Any

from .. import backend
from ..autograd import Function, Tensor
from ..backend import get_array_module

__all__ = ["bernoulli_keep_mask", "dropout"]


def bernoulli_keep_mask(shape: tuple[int, ...], p: float, like: Any, rng: Any = None) -> Any:
    """A raw boolean array, True with probability 1-p, on the device of ``like``.

    ``rng`` is a NumPy Generator (drawn on the host, then moved) or the device's own generator;
    default: ``backend.default_rng`` of that device."""
    dev = backend.device_of(like)
    gen = rng if rng is not None else backend.default_rng(dev)
    dtype = like.dtype if like.dtype.kind == "f" else None  # float32 draws: half the bytes
    u = gen.random(shape, dtype=dtype)  # uniform on [0, 1)
    return backend.to_device(u, dev) >= p


class Dropout(Function):
    """$y = x \\odot m / (1-p)$ with a fixed boolean keep-mask m. Saves only m (one byte per
    element); backward routes the gradient through the same mask."""

    def __init__(self, keep: Any, scale: float):
        self.keep, self.scale = keep, scale

    def forward(self, x: Any) -> Any:
        keep, self.keep = self.keep, None  # held as saved state: freed after backward
        self.save_for_backward(keep)
        y = get_array_module(x).multiply(x, keep)
        y *= self.scale
        return y

    def backward(self, gy: Any) -> Any:
        # gx = gy * m / (1 - p)
        (keep,) = self.saved
        gx = gy * keep
        gx *= self.scale
        return gx


def dropout(x: Any, p: float, training: bool, rng: Any = None) -> Tensor:
    """$y = x \\odot m / (1-p)$, $m_i \\sim \\mathrm{Bernoulli}(1-p)$; the identity when not
    training or p = 0; all zeros when p = 1 (as torch). Shapes: any.

    ``rng``: a NumPy Generator or the device's own; default the device's seeded generator
    (``mt.manual_seed``)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    xt = x if isinstance(x, Tensor) else Tensor(x)
    if not training or p == 0.0:
        return xt
    if p == 1.0:
        keep = get_array_module(xt.data).zeros(xt.shape, dtype=bool)
        return Dropout(keep, 0.0)(xt)
    keep = bernoulli_keep_mask(xt.shape, p, xt.data, rng)
    return Dropout(keep, 1.0 / (1.0 - p))(xt)
