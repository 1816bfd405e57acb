"""``Dropout`` (per element) and ``DropPath`` (stochastic depth: per sample, on a residual branch).

Both are the identity in eval mode. The random draws come from ``rng`` when given, else from
the default generator of the input's device (``backend.default_rng``, seeded by
``mt.manual_seed``).
"""

from __future__ import annotations

from typing import Any

from .. import backend
from .. import functional as F
from ..autograd import Tensor, as_tensor
from .module import Module

__all__ = ["DropPath", "Dropout"]


def _check_p(name: str, p: float) -> float:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name}: p must be in [0, 1), got {p}")
    return float(p)


class Dropout(Module):
    """$y = x \\odot m / (1-p)$, $m_i \\sim \\mathrm{Bernoulli}(1-p)$ while training; $y = x$ in
    eval. Shapes: any."""

    def __init__(self, p: float = 0.0, rng: Any = None):
        super().__init__()
        self.p = _check_p("Dropout", p)
        self.rng = rng

    def forward(self, x: Any) -> Tensor:
        return F.dropout(x, self.p, self.training, rng=self.rng)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class DropPath(Module):
    """Stochastic depth (Huang et al. 2016; timm ``drop_path``, used by DINO and DINOv2):
    $y_b = x_b \\, m_b / (1-p)$ with one $m_b \\sim \\mathrm{Bernoulli}(1-p)$ per *sample*, so a
    dropped sample skips the whole residual branch. The identity in eval mode.

    Shapes: x (B, ...) -> y (B, ...).
    """

    def __init__(self, p: float = 0.0, rng: Any = None):
        super().__init__()
        self.p = _check_p("DropPath", p)
        self.rng = rng

    def forward(self, x: Any) -> Tensor:
        x = as_tensor(x)
        if not self.training or self.p == 0.0:
            return x
        gen = self.rng if self.rng is not None else backend.default_rng(x.device)
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # one draw per sample, broadcast over rest
        keep = backend.to_device(gen.random(shape) >= self.p, x.device)
        return x * (keep.astype(x.dtype) / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"
