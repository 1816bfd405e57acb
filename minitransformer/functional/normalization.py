"""Normalisation: layer norm (composed and fused) and L2 normalisation."""

from __future__ import annotations

from typing import Any

from ..autograd import Function, Tensor
from ..backend import get_array_module
from . import elementwise as E
from . import reduction as R
from .blocks import row_spans, run_blocks
from .fusion import is_fused, numba_kernels_for
from .reduction import ones_vector

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
    """Fused layer norm, evaluated on cache-sized blocks of rows (``blocks.py``) or, where
    Numba is installed, as one compiled pass per row (``numba_kernels.py``). Saves what torch's
    native layer norm saves: the input x, and $\\mu$ and $r = 1/\\sqrt{\\sigma^2 + \\epsilon}$ per
    row; the backward recomputes $\\hat x = (x - \\mu)\\,r$ from them."""

    def __init__(self, eps: float, has_weight: bool, has_bias: bool):
        self.eps, self.has_weight, self.has_bias = eps, has_weight, has_bias

    def forward(self, x: Any, *params: Any) -> Any:
        xp = get_array_module(x)
        dtype = xp.result_type(x, *params)  # NumPy's promotion, as the composed version
        x, params = x.astype(dtype, copy=False), [p.astype(dtype, copy=False) for p in params]
        weight = params[0] if self.has_weight else None
        bias = params[-1] if self.has_bias else None
        D = x.shape[-1]
        x2 = xp.ascontiguousarray(x.reshape(-1, D))  # (N, D): the leading axes are rows
        N = x2.shape[0]
        mean = xp.empty(N, dtype=x.dtype)  # (N,)
        rstd = xp.empty(N, dtype=x.dtype)  # (N,)
        y = xp.empty_like(x2)  # (N, D)
        compiled = numba_kernels_for(x2)
        if compiled is not None:  # one compiled pass per row; no weight or bias = 1 and 0
            w = weight if weight is not None else xp.ones(D, dtype=x.dtype)
            b = bias if bias is not None else xp.zeros(D, dtype=x.dtype)

        ones = ones_vector(xp, D, x.dtype)  # row sums as GEMVs: (n, D) @ (D,) -> (n,)

        def kernel(i: int, lo: int, hi: int) -> None:
            xb, yb, mu, r = x2[lo:hi], y[lo:hi], mean[lo:hi], rstd[lo:hi]
            if compiled is not None:
                compiled.layer_norm_forward(xb, w, b, self.eps, yb, mu, r)
                return
            xp.matmul(xb, ones, out=mu)
            mu *= 1.0 / D  # (n,)
            xc = xb - mu[:, None]  # (n, D) x - mu, this block's
            xp.multiply(xc, xc, out=yb)  # yb as scratch
            xp.matmul(yb, ones, out=r)
            r *= 1.0 / D  # biased variance, two-pass (no E[x^2] - mu^2 cancellation)
            r += self.eps
            xp.sqrt(r, out=r)
            xp.reciprocal(r, out=r)  # 1 / sqrt(var + eps), (n,)
            xc *= r[:, None]  # xhat
            if weight is not None:
                xp.multiply(xc, weight, out=yb)
                if bias is not None:
                    yb += bias
            elif bias is not None:
                xp.add(xc, bias, out=yb)
            else:
                yb[...] = xc

        run_blocks(kernel, row_spans(N, D * x.itemsize, xp, compiled is not None), x2.nbytes)
        self.save_for_backward(x2, mean, rstd, weight)
        return y.reshape(x.shape)

    def backward(self, gy: Any) -> Any:
        # xhat = (x - mu) r;  g = gy * weight;  gx = r (g - mean(g) - xhat mean(g xhat))
        # gweight = sum over rows of gy xhat;  gbias = sum over rows of gy
        x2, mean, rstd, weight = self.saved
        xp = get_array_module(gy)
        need = self.needs_input_grad
        N, D = x2.shape
        gy2 = xp.ascontiguousarray(gy.reshape(-1, D))  # (N, D)
        want_gx = need[0]
        want_gw = self.has_weight and need[1]
        want_gb = self.has_bias and need[-1]
        compiled = numba_kernels_for(x2)
        if compiled is not None:  # the kernel always makes all three; unwanted ones are dropped
            want_gx = want_gw = want_gb = True
            w = weight if weight is not None else xp.ones(D, dtype=x2.dtype)
        spans = row_spans(N, D * x2.itemsize, xp, compiled is not None)
        gx = xp.empty_like(x2) if want_gx else None
        # per-block partial sums of the parameter gradients, (blocks, D), added up at the end
        gw_parts = xp.zeros((len(spans), D), dtype=x2.dtype) if want_gw else None
        gb_parts = xp.zeros((len(spans), D), dtype=x2.dtype) if want_gb else None

        ones = ones_vector(xp, max(D, spans[0][1] - spans[0][0]), x2.dtype)  # for GEMV sums

        def kernel(i: int, lo: int, hi: int) -> None:
            gyb, xb, mu, r = gy2[lo:hi], x2[lo:hi], mean[lo:hi, None], rstd[lo:hi, None]
            if compiled is not None:
                compiled.layer_norm_backward(gyb, xb, mean[lo:hi], rstd[lo:hi], w, gx[lo:hi],
                                             gw_parts[i], gb_parts[i])
                return
            ones_d, ones_n = ones[:D], ones[:hi - lo]  # (D,), (n,)
            hb = xb - mu
            hb *= r  # xhat (n, D), this block's
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
            gxb *= r

        run_blocks(kernel, spans, x2.nbytes)
        grads: list[Any] = [gx.reshape(gy.shape) if need[0] else None]
        if self.has_weight:
            grads.append(gw_parts.sum(axis=0) if need[1] else None)
        if self.has_bias:
            grads.append(gb_parts.sum(axis=0) if need[-1] else None)
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
