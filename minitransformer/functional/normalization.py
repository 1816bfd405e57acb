"""Normalisation: layer norm and L2 normalisation."""

from __future__ import annotations

from typing import Any

from ..autograd import Tensor
from . import elementwise as E
from . import reduction as R

__all__ = ["layer_norm", "layer_norm_composed", "normalize"]


def _check_ln(x: Any, weight: Any, bias: Any) -> None:
    d = x.shape[-1]
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != (d,):
            raise ValueError(
                f"layer_norm: {name} has shape {tuple(p.shape)} but the input's last axis is {d}"
            )


def layer_norm_composed(x: Any, weight: Any = None, bias: Any = None, eps: float = 1e-5
                        ) -> Tensor:
    """$y = \\frac{x - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}} \\gamma + \\beta$ over the last axis,
    with the biased variance (as torch and timm). Shapes: x (..., D), weight/bias (D,)."""
    _check_ln(x, weight, bias)
    mu = R.mean(x, axis=-1, keepdims=True)
    xc = x - mu
    var = R.mean(xc * xc, axis=-1, keepdims=True)
    y = xc / E.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def layer_norm(x: Any, weight: Any = None, bias: Any = None, eps: float = 1e-5) -> Tensor:
    """Layer normalisation over the last axis (see ``layer_norm_composed`` for the math)."""
    return layer_norm_composed(x, weight, bias, eps)


def normalize(x: Any, axis: int = -1, eps: float = 1e-12) -> Tensor:
    """$y = x / \\max(\\lVert x \\rVert_2, \\epsilon)$ along ``axis`` (as torch F.normalize)."""
    norm = E.sqrt(R.sum(x * x, axis=axis, keepdims=True))
    return x / E.maximum(norm, eps)
