"""``LayerScale``: a learned per-channel gain on a residual branch (CaiT; DINOv2 ``ls1``)."""

from __future__ import annotations

from typing import Any

from .. import functional as F
from ..autograd import Tensor, zeros
from . import init
from .module import Module, Parameter

__all__ = ["LayerScale"]


class LayerScale(Module):
    """$y = x \\odot \\gamma$, $\\gamma$ initialised to ``init_values`` (DINOv2 trains with 1e-5,
    so each block starts close to the identity). Shapes: x (..., dim) -> y (..., dim);
    gamma (dim,)."""

    def __init__(self, dim: int, init_values: float = 1e-5):
        super().__init__()
        self.dim = dim
        self.gamma = Parameter(zeros(dim))
        init.constant_(self.gamma, init_values)

    def forward(self, x: Any) -> Tensor:
        return F.mul(x, self.gamma)

    def extra_repr(self) -> str:
        return f"{self.dim}"
