"""``LayerNorm`` over the last axis, with a learned per-channel scale and shift."""

from __future__ import annotations

from typing import Any

from .. import functional as F
from ..autograd import Tensor, ones, zeros
from .module import Module, Parameter

__all__ = ["LayerNorm"]


class LayerNorm(Module):
    """$y = \\frac{x - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}} \\odot \\gamma + \\beta$ over the last
    axis (biased variance, as torch). ``eps`` is 1e-5 in torch and CLIP, 1e-6 in timm, DINO and
    DINOv2 (the transformer blocks here default to 1e-6).

    Shapes: x (..., dim) -> y (..., dim); weight (dim,) = gamma, bias (dim,) = beta.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = Parameter(ones(dim))
        self.bias = Parameter(zeros(dim))

    def forward(self, x: Any) -> Tensor:
        return F.layer_norm(x, self.weight, self.bias, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps:g}"
