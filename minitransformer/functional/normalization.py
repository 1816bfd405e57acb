"""Normalisation: layer norm (composed and fused) and L2 normalisation."""

from __future__ import annotations

from typing import Any

from ..autograd import Function, Tensor
from ..backend import get_array_module
from . import elementwise as E
from . import reduction as R
from .fusion import is_fused
from .reduction import dot_keepdims, sum_keepdims

__all__ = ["layer_norm", "layer_norm_composed", "normalize"]


def _check_ln(x: Any, weight: Any, bias: Any) -> None:
    if x.ndim < 1:
        raise ValueError("layer_norm: the input needs at least one axis, got a 0-d array")
    if x.dtype.kind != "f":
        raise TypeError(f"layer_norm: needs a floating-point input, got dtype {x.dtype}")
    d = x.shape[-1]
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != (d,):
            raise ValueError(
                f"layer_norm: {name} has shape {tuple(p.shape)} but the input {tuple(x.shape)} "
                f"needs ({d},)"
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


class LayerNorm(Function):
    """Fused layer norm. Saves $\\hat x = (x - \\mu)\\,r$ and $r = 1/\\sqrt{\\sigma^2 + \\epsilon}$
    (one array the size of x, one per row), as torch's native layer norm does."""

    def __init__(self, eps: float, has_weight: bool, has_bias: bool):
        self.eps, self.has_weight, self.has_bias = eps, has_weight, has_bias

    def forward(self, x: Any, *params: Any) -> Any:
        weight = params[0] if self.has_weight else None
        bias = params[-1] if self.has_bias else None
        inv_d = 1.0 / x.shape[-1]
        mu = sum_keepdims(x, -1)
        mu *= inv_d  # (..., 1)
        xhat = x - mu  # (..., D), ours: centred now, normalised below
        var = dot_keepdims(xhat, xhat, -1)
        var *= inv_d  # biased variance, two-pass (no E[x^2] - mu^2 cancellation)
        var += self.eps
        rstd = get_array_module(x).sqrt(var, out=var)
        rstd **= -1  # 1 / sqrt(var + eps), (..., 1)
        xhat *= rstd
        self.save_for_backward(xhat, rstd, weight)
        if weight is not None:
            y = xhat * weight
            if bias is not None:
                y += bias
        else:
            y = xhat + bias if bias is not None else xhat.copy()
        return y

    def backward(self, gy: Any) -> Any:
        # g = gy * weight;  gx = r (g - mean(g) - xhat mean(g xhat))
        # gweight = sum over rows of gy xhat;  gbias = sum over rows of gy
        xhat, rstd, weight = self.saved
        xp = get_array_module(gy)
        need = self.needs_input_grad
        D = xhat.shape[-1]
        gy2 = gy.reshape(-1, D)  # (N, D): the leading axes are rows
        grads: list[Any] = [None]
        if self.has_weight:
            grads.append(xp.einsum("nd,nd->d", gy2, xhat.reshape(-1, D)) if need[1] else None)
        if self.has_bias:
            ones = xp.ones(gy2.shape[0], dtype=gy.dtype)
            grads.append(ones @ gy2 if need[-1] else None)  # column sums as one GEMV
        if need[0]:
            g = gy * weight if weight is not None else gy  # never written to below
            mean_g = sum_keepdims(g, -1)
            mean_g *= 1.0 / D
            mean_gxhat = dot_keepdims(g, xhat, -1)
            mean_gxhat *= 1.0 / D
            gx = xhat * mean_gxhat
            gx += mean_g
            xp.subtract(g, gx, out=gx)  # g - mean(g) - xhat mean(g xhat)
            gx *= rstd
            grads[0] = gx
        return tuple(grads)


def layer_norm(x: Any, weight: Any = None, bias: Any = None, eps: float = 1e-5) -> Tensor:
    """Layer normalisation over the last axis:
    $y = \\frac{x - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}} \\gamma + \\beta$ (biased variance, as
    torch / timm). Shapes: x (..., D), weight and bias (D,) or None -> (..., D)."""
    if not is_fused():
        return layer_norm_composed(x, weight, bias, eps)
    _check_ln(x, weight, bias)
    params = [p for p in (weight, bias) if p is not None]
    return LayerNorm(eps, weight is not None, bias is not None)(x, *params)


def normalize(x: Any, axis: int = -1, eps: float = 1e-12) -> Tensor:
    """$y = x / \\max(\\lVert x \\rVert_2, \\epsilon)$ along ``axis`` (as torch F.normalize).

    Written as $x / \\sqrt{\\max(\\lVert x \\rVert^2, \\epsilon^2)}$: the same values, but a zero
    vector gets torch's finite gradient $1/\\epsilon$ instead of the NaN that the slope of
    $\\sqrt{\\cdot}$ at 0 would give. Shapes: any."""
    sq = R.sum(x * x, axis=axis, keepdims=True)
    return x / E.sqrt(E.maximum(sq, eps * eps))
