"""Normalisation: layer norm (composed and fused) and L2 normalisation."""

from __future__ import annotations

from typing import Any

from ..autograd import Function, Tensor
from ..backend import get_array_module
from . import elementwise as E
from . import reduction as R
from .blocks import row_blocks, run_blocks
from .fusion import is_fused

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
    """Fused layer norm, evaluated on cache-sized blocks of rows (``blocks.py``). Saves
    $\\hat x = (x - \\mu)\\,r$ and $r = 1/\\sqrt{\\sigma^2 + \\epsilon}$ (one array the size of x,
    one value per row), as torch's native layer norm does."""

    def __init__(self, eps: float, has_weight: bool, has_bias: bool):
        self.eps, self.has_weight, self.has_bias = eps, has_weight, has_bias

    def forward(self, x: Any, *params: Any) -> Any:
        weight = params[0] if self.has_weight else None
        bias = params[-1] if self.has_bias else None
        xp = get_array_module(x)
        D = x.shape[-1]
        inv_d = 1.0 / D
        x2 = x.reshape(-1, D)  # (N, D): the leading axes are rows
        xhat = xp.empty_like(x2)  # (N, D)
        rstd = xp.empty((x2.shape[0], 1), dtype=x.dtype)  # (N, 1)
        y = xp.empty_like(x2)

        ones = xp.ones(D, dtype=x.dtype)  # row sums as GEMVs: (n, D) @ (D,) -> (n,)

        def kernel(i: int, lo: int, hi: int) -> None:
            xb, hb, yb, r = x2[lo:hi], xhat[lo:hi], y[lo:hi], rstd[lo:hi]
            mu = xb @ ones
            mu *= inv_d  # (n,)
            xp.subtract(xb, mu[:, None], out=hb)  # x - mu, normalised below
            xp.multiply(hb, hb, out=yb)  # yb as scratch
            var = yb @ ones
            var *= inv_d  # biased variance, two-pass (no E[x^2] - mu^2 cancellation)
            var += self.eps
            xp.sqrt(var, out=r[:, 0])
            xp.reciprocal(r, out=r)  # 1 / sqrt(var + eps), (n, 1)
            hb *= r
            if weight is not None:
                xp.multiply(hb, weight, out=yb)
                if bias is not None:
                    yb += bias
            elif bias is not None:
                xp.add(hb, bias, out=yb)
            else:
                yb[...] = hb

        run_blocks(kernel, row_blocks(x2.shape[0], D * x.itemsize, xp), x2.nbytes)
        self.save_for_backward(xhat, rstd, weight)
        return y.reshape(x.shape)

    def backward(self, gy: Any) -> Any:
        # g = gy * weight;  gx = r (g - mean(g) - xhat mean(g xhat))
        # gweight = sum over rows of gy xhat;  gbias = sum over rows of gy
        xhat, rstd, weight = self.saved
        xp = get_array_module(gy)
        need = self.needs_input_grad
        N, D = xhat.shape
        gy2 = gy.reshape(-1, D)  # (N, D)
        spans = row_blocks(N, D * xhat.itemsize, xp)
        want_gx = need[0]
        want_gw = self.has_weight and need[1]
        want_gb = self.has_bias and need[-1]
        gx = xp.empty_like(xhat) if want_gx else None
        # per-block partial sums of the parameter gradients, (blocks, D), added up at the end
        gw_parts = xp.empty((len(spans), D), dtype=xhat.dtype) if want_gw else None
        gb_parts = xp.empty((len(spans), D), dtype=xhat.dtype) if want_gb else None

        ones = xp.ones(max(D, spans[0][1] - spans[0][0]), dtype=xhat.dtype)  # for GEMV sums

        def kernel(i: int, lo: int, hi: int) -> None:
            gyb, hb = gy2[lo:hi], xhat[lo:hi]
            ones_d, ones_n = ones[:D], ones[:hi - lo]  # (D,), (n,)
            gyxhat = gyb * hb  # gy xhat (n, D), ours
            if gw_parts is not None:
                xp.matmul(ones_n, gyxhat, out=gw_parts[i])  # column sums of gy xhat
            if gb_parts is not None:
                xp.matmul(ones_n, gyb, out=gb_parts[i])  # column sums of gy
            if gx is None:
                return
            g = gyb * weight if weight is not None else gyb  # never written to below
            if weight is not None:
                gyxhat *= weight  # now g xhat
            mean_gxhat = gyxhat @ ones_d
            mean_gxhat *= 1.0 / D  # (n,)
            mean_g = g @ ones_d
            mean_g *= 1.0 / D  # (n,)
            gxb = gx[lo:hi]
            xp.multiply(hb, mean_gxhat[:, None], out=gxb)
            gxb += mean_g[:, None]
            xp.subtract(g, gxb, out=gxb)  # g - mean(g) - xhat mean(g xhat)
            gxb *= rstd[lo:hi]

        run_blocks(kernel, spans, xhat.nbytes)
        grads: list[Any] = [gx.reshape(gy.shape) if gx is not None else None]
        if self.has_weight:
            grads.append(gw_parts.sum(axis=0) if gw_parts is not None else None)
        if self.has_bias:
            grads.append(gb_parts.sum(axis=0) if gb_parts is not None else None)
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
