"""Dropout: zero each element with probability p and scale the survivors by 1/(1-p)."""

from __future__ import annotations

from typing import Any

from .. import backend
from ..autograd import Tensor
from . import elementwise as E

__all__ = ["dropout", "bernoulli_keep_mask"]


def bernoulli_keep_mask(shape: tuple[int, ...], p: float, like: Any, rng: Any = None) -> Any:
    """A raw boolean array, True with probability 1-p, on the device of ``like``.

    ``rng`` is a NumPy Generator (drawn on the host, then moved) or the device's own generator;
    default: ``backend.default_rng`` of that device."""
    dev = backend.device_of(like)
    gen = rng if rng is not None else backend.default_rng(dev)
    u = gen.random(shape, dtype=like.dtype if like.dtype.kind == "f" else None)
    return backend.to_device(u, dev) >= p


def dropout(x: Any, p: float, training: bool, rng: Any = None) -> Tensor:
    """$y = x \\odot m / (1-p)$, $m_i \\sim \\mathrm{Bernoulli}(1-p)$; identity when not training.

    Shapes: any."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x if isinstance(x, Tensor) else Tensor(x)
    keep = bernoulli_keep_mask(x.shape, p, x.data, rng)
    return E.mul(x, keep.astype(x.dtype) * (1.0 / (1.0 - p)))
