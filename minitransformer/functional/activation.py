"""Activations and the softmax family.

Each composite is first written as a readable composition of primitives (``*_composed``: the
engine derives its gradient). The public function runs a fused Function with a hand-written
backward instead (fewer passes over memory, fewer saved arrays) unless ``F.use_fused(False)``
is active; ``tests/functional/test_fused_parity.py`` proves the two agree.

Fused forwards allocate one fresh array and then work on it in place (``out=``, ``*=``);
backwards never write into ``gy``, which the engine may share between consumers.
"""

from __future__ import annotations

import math
from typing import Any

from .. import backend
from ..autograd import Function, Tensor
from ..backend import get_array_module
from . import elementwise as E
from . import reduction as R
from . import shape as S
from .blocks import row_spans, run_blocks
from .fusion import is_fused, numba_kernels_for
from .reduction import dot_keepdims, ones_vector, sum_keepdims

__all__ = [
    "gelu", "gelu_composed", "log_softmax", "log_softmax_composed", "logsumexp",
    "logsumexp_composed", "quick_gelu", "relu", "softmax", "softmax_composed",
]

_SQRT_HALF = math.sqrt(0.5)  # erf(x / sqrt 2) = erf(x * sqrt(1/2))
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)  # the standard normal density at 0
_TANH_C = math.sqrt(2.0 / math.pi)  # the tanh-GELU constant sqrt(2/pi)
_TANH_A = 0.044715  # the tanh-GELU cubic coefficient (Hendrycks & Gimpel; BERT's gelu)


def _check_float(name: str, x: Any) -> None:
    if x.dtype.kind != "f":
        raise TypeError(f"{name}: needs a floating-point input, got dtype {x.dtype}")


# ============================================================================ relu
class Relu(Function):
    """$y = \\max(x, 0)$; saves the output, since $\\partial y / \\partial x = [y > 0]$."""

    def forward(self, x: Any) -> Any:
        y = get_array_module(x).maximum(x, 0)
        self.save_for_backward(y)
        return y

    def backward(self, gy: Any) -> Any:
        # gx = gy where y > 0, else 0 (the gradient at 0 is 0, as in PyTorch)
        (y,) = self.saved
        return gy * (y > 0)


def relu(x: Any) -> Tensor:
    """$\\mathrm{relu}(x) = \\max(x, 0)$ (gradient 0 at 0, as in PyTorch). Shapes: any."""
    return Relu()(x)


# ============================================================================ gelu
def gelu_composed(x: Any, approximate: str = "none") -> Tensor:
    """GELU written out.

    ``"none"``: $x \\Phi(x) = \\tfrac{x}{2}(1 + \\mathrm{erf}(x/\\sqrt2))$ (ViT, DINO, timm).
    ``"tanh"``: $\\tfrac{x}{2}(1 + \\tanh(\\sqrt{2/\\pi}(x + 0.044715 x^3)))$ (BERT).
    Shapes: any."""
    if approximate == "none":
        return 0.5 * x * (1.0 + E.erf(x * _SQRT_HALF))
    if approximate == "tanh":
        inner = _TANH_C * (x + _TANH_A * x * x * x)
        return 0.5 * x * (1.0 + E.tanh(inner))
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


# Abramowitz & Stegun 7.1.26: for z >= 0, erfc(z) = (a1 t + a2 t^2 + ... + a5 t^5) e^{-z^2} + eps
# with t = 1 / (1 + p z) and |eps| <= 1.5e-7 (Hastings' rational approximation).
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def normal_cdf_and_gauss(x: Any) -> tuple[Any, Any]:
    """$(\\Phi(x), e^{-x^2/2})$ for a raw array: the standard normal CDF and $\\sqrt{2\\pi}\\,
    \\varphi(x)$, two fresh arrays (the GELU's forward needs the first, its backward both).

    float64: $\\Phi(x) = \\frac12 (1 + \\mathrm{erf}(x/\\sqrt2))$ with the library erf.
    float32 and float16, on either device: Abramowitz & Stegun 7.1.26 on $z = |x|/\\sqrt2$,
    $\\Phi(-|x|) = \\tfrac12 \\mathrm{erfc}(z) = \\tfrac12 \\sum_k a_k t^k e^{-x^2/2}$,
    $t = 1/(1 + p z)$, sharing the one exponential with $\\varphi$. The formula's absolute
    error is $\\le 7.5 \\cdot 10^{-8}$; evaluated in float32 it is $\\le 3.5 \\cdot 10^{-7}$
    (measured 3.0e-7 over [-12, 12], about 5 float32 ulps of $\\Phi$ near 1/2), and the
    GELU's error matches SciPy's float32 erf (4.6e-7 against 4.5e-7: the rounding of x
    dominates). SciPy's float32 erf costs ~20 ns per element on the CPU, this ~8 ns (the
    exponential is 2.4 of them). Shapes: any."""
    xp = get_array_module(x)
    gauss = x * x
    gauss *= -0.5
    xp.exp(gauss, out=gauss)  # e^{-x^2/2}
    if x.dtype.itemsize >= 8:
        cdf = backend.erf(x * _SQRT_HALF)
        cdf += 1.0
        cdf *= 0.5
        return cdf, gauss
    t = xp.abs(x)
    t *= _AS_P * _SQRT_HALF
    t += 1.0
    xp.reciprocal(t, out=t)  # t = 1 / (1 + p |x| / sqrt 2)
    q = t * _AS_A[4]
    for a in reversed(_AS_A[:4]):  # Horner: t (a1 + t (a2 + t (a3 + t (a4 + t a5))))
        q += a
        q *= t
    q *= gauss
    q *= 0.5  # Phi(-|x|), in (0, 1/2]
    xp.subtract(0.5, q, out=q)
    xp.copysign(q, x, out=q)
    q += 0.5  # Phi(x) = 1/2 + sign(x) (1/2 - Phi(-|x|))
    return q, gauss


class Gelu(Function):
    """Fused GELU (erf or tanh form), evaluated block by block (``blocks.py``), or as one
    compiled pass where Numba is installed (``numba_kernels.py``).

    The forward already holds everything the derivative needs ($\\Phi$ and the Gaussian for
    the erf form, $\\tanh u$ for the tanh form), so it computes $y' = dy/dx$ there and saves
    only that one array: the backward is then one multiply, and nothing the size of x is kept
    besides it. Under ``no_grad`` the derivative is skipped."""

    def __init__(self, approximate: str):
        self.approximate = approximate

    def forward(self, x: Any) -> Any:
        _check_float("gelu", x)
        xp = get_array_module(x)
        shape = x.shape
        # element-wise, so work on a flat view: a 0-d input becomes (1,)
        x = x.reshape(-1)
        y = xp.empty_like(x)
        dydx = xp.empty_like(x) if self.recording else None
        compiled = numba_kernels_for(x)

        def kernel(i: int, lo: int, hi: int) -> None:
            xb, yb = x[lo:hi], y[lo:hi]
            if compiled is not None:  # the same equations, one compiled pass
                db = dydx[lo:hi] if dydx is not None else None
                if self.approximate == "none":
                    compiled.gelu_erf_forward(xb, yb, db)
                else:
                    compiled.gelu_tanh_forward(xb, yb, db)
                return
            if self.approximate == "none":
                cdf, gauss = normal_cdf_and_gauss(xb)
                xp.multiply(xb, cdf, out=yb)  # y = x Phi(x)
                if dydx is not None:
                    # dy/dx = Phi(x) + x phi(x),  phi(x) = e^{-x^2/2} / sqrt(2 pi)
                    db = dydx[lo:hi]
                    xp.multiply(xb, gauss, out=db)
                    db *= _INV_SQRT_2PI
                    db += cdf
            else:
                t = _tanh_inner(xb)  # t = tanh u,  u = c (x + a x^3)
                half = t + 1.0
                half *= 0.5  # (1 + t) / 2
                xp.multiply(xb, half, out=yb)  # y = x (1 + t) / 2
                if dydx is not None:
                    # dy/dx = (1 + t)/2 + x/2 (1 - t^2) c (1 + 3 a x^2)
                    db = dydx[lo:hi]
                    xp.multiply(xb, xb, out=db)
                    db *= 3.0 * _TANH_A
                    db += 1.0
                    db *= 0.5 * _TANH_C  # (1/2) du/dx = c (1 + 3 a x^2) / 2
                    t *= t
                    xp.subtract(1.0, t, out=t)  # 1 - t^2
                    db *= t
                    db *= xb
                    db += half

        run_blocks(kernel, row_spans(x.size, x.itemsize, xp, compiled is not None), x.nbytes)
        self.save_for_backward(dydx)
        return y.reshape(shape)

    def backward(self, gy: Any) -> Any:
        # gx = gy * dy/dx
        (dydx,) = self.saved
        return (gy.reshape(-1) * dydx).reshape(gy.shape)


def _tanh_inner(x: Any) -> Any:
    """$\\tanh(\\sqrt{2/\\pi}(x + 0.044715 x^3))$, a fresh array."""
    t = x * x
    t *= _TANH_A
    t += 1.0
    t *= x
    t *= _TANH_C  # u = sqrt(2/pi) (x + 0.044715 x^3)
    return get_array_module(x).tanh(t, out=t)


def gelu(x: Any, approximate: str = "none") -> Tensor:
    """GELU, exact $x \\Phi(x)$ (erf) by default or with the tanh approximation
    (see ``gelu_composed`` for both formulas). Shapes: any."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    if not is_fused():
        return gelu_composed(x, approximate)
    return Gelu(approximate)(x)


def quick_gelu(x: Any) -> Tensor:
    """$x \\, \\sigma(1.702 x)$, the GELU approximation OpenAI CLIP trained with. Shapes: any."""
    return x * E.sigmoid(1.702 * x)


# ============================================================================ logsumexp
def logsumexp_composed(x: Any, axis: int = -1, keepdims: bool = False) -> Tensor:
    """$\\log \\sum_i e^{x_i} = m + \\log \\sum_i e^{x_i - m}$ with $m = \\max_i x_i$ (no
    overflow). The shift m is a constant for the gradient, so it is detached. Shapes: any."""
    xt = x if isinstance(x, Tensor) else Tensor(x)
    m = R.max(xt, axis=axis, keepdims=True).detach()
    out = E.log(R.sum(E.exp(xt - m), axis=axis, keepdims=True)) + m
    return out if keepdims else S.squeeze(out, axis)


def _row_max(x: Any, axis: int) -> Any:
    """The per-row shift m of a stable softmax; 0 where a row is all -inf (so no inf - inf)."""
    xp = get_array_module(x)
    m = x.max(axis=axis, keepdims=True)
    return xp.where(xp.isfinite(m), m, 0).astype(x.dtype, copy=False)


class LogSumExp(Function):
    """Fused logsumexp. Saves $p = \\mathrm{softmax}(x) = \\partial y / \\partial x$, built from
    the forward's exponentials (an exp costs ~25 multiplies on a CPU without AVX-512)."""

    def __init__(self, axis: int, keepdims: bool):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x: Any) -> Any:
        _check_float("logsumexp", x)
        xp = get_array_module(x)
        m = _row_max(x, self.axis)
        p = x - m
        xp.exp(p, out=p)  # e^{x - m} <= 1: no overflow
        total = sum_keepdims(p, self.axis)
        p /= total  # softmax(x)
        y = xp.log(total)
        y += m  # (..., 1, ...) keepdims form
        self.save_for_backward(p)
        return y if self.keepdims else y.squeeze(self.axis)

    def backward(self, gy: Any) -> Any:
        # gx = gy * softmax(x)
        (p,) = self.saved
        if not self.keepdims:
            gy = get_array_module(gy).expand_dims(gy, self.axis)
        return p * gy


def logsumexp(x: Any, axis: int = -1, keepdims: bool = False) -> Tensor:
    """$\\log \\sum_i e^{x_i}$ along ``axis``, computed stably (a row of -inf gives -inf).

    Shapes: x (...) -> x without ``axis`` (kept as length 1 with ``keepdims``)."""
    if not is_fused():
        return logsumexp_composed(x, axis, keepdims)
    return LogSumExp(axis, keepdims)(x)


# ============================================================================ softmax
def softmax_composed(x: Any, axis: int = -1) -> Tensor:
    """$\\mathrm{softmax}(x)_i = e^{x_i - m} / \\sum_j e^{x_j - m}$ with $m = \\max_j x_j$.
    Shapes: any."""
    xt = x if isinstance(x, Tensor) else Tensor(x)
    z = E.exp(xt - R.max(xt, axis=axis, keepdims=True).detach())
    return z / R.sum(z, axis=axis, keepdims=True)


def softmax_rows(x: Any, out: Any, lse: Any = None) -> None:
    """``out = softmax(x)`` along the last axis of a C-contiguous raw array, block by block
    (``blocks.py``), or one compiled pass per row where Numba is installed
    (``numba_kernels.py``); ``out`` may be ``x``. Rows: $y = e^{x - m} / \\sum e^{x - m}$,
    $m = \\max x$. With ``lse`` (shape ``x.shape[:-1]``), also each row's logsumexp
    $m + \\log \\sum e^{x - m}$, as the cross-entropies need."""
    xp = get_array_module(x)
    D = x.shape[-1]
    x2, y2 = x.reshape(-1, D), out.reshape(-1, D)  # (rows, D) views
    lse1 = lse.reshape(-1) if lse is not None else None  # (rows,) view
    ones = ones_vector(xp, D, x.dtype)  # row sums as one GEMV per block (a cached vector)
    compiled = numba_kernels_for(x)

    def kernel(i: int, lo: int, hi: int) -> None:
        xb, yb = x2[lo:hi], y2[lo:hi]
        lb = lse1[lo:hi] if lse1 is not None else None
        if compiled is not None:  # the same equation as one compiled pass per row
            compiled.softmax_forward(xb, yb, lb)
            return
        m = xb.max(axis=1, keepdims=True)  # the shift: x - m <= 0, e^{x - m} <= 1
        xp.subtract(xb, m, out=yb)
        xp.exp(yb, out=yb)
        total = yb @ ones
        yb /= total[:, None]
        if lb is not None:
            xp.log(total, out=lb)
            lb += m[:, 0]

    run_blocks(kernel, row_spans(x2.shape[0], D * x.itemsize, xp, compiled is not None),
               x.nbytes)


def softmax_rows_backward(gy: Any, y: Any, out: Any) -> None:
    """``out = y * (gy - rowsum(gy * y))`` along the last axis (the softmax's backward) for
    C-contiguous raw arrays, block by block or compiled (as ``softmax_rows``); ``out`` may be
    ``gy``."""
    xp = get_array_module(y)
    D = y.shape[-1]
    g2, y2, o2 = gy.reshape(-1, D), y.reshape(-1, D), out.reshape(-1, D)  # (rows, D) views
    ones = ones_vector(xp, D, y.dtype)  # cached, not made per call
    compiled = numba_kernels_for(y)

    def kernel(i: int, lo: int, hi: int) -> None:
        gb, yb, ob = g2[lo:hi], y2[lo:hi], o2[lo:hi]
        if compiled is not None:
            compiled.softmax_backward(gb, yb, ob)
            return
        dot = (gb * yb) @ ones  # (n,) = sum_j gy_j y_j
        xp.subtract(gb, dot[:, None], out=ob)
        ob *= yb

    run_blocks(kernel, row_spans(y2.shape[0], D * y.itemsize, xp, compiled is not None),
               y.nbytes)


class Softmax(Function):
    """Fused softmax. Saves its output y, since $g_x = y \\odot (g_y - \\langle g_y, y\\rangle)$.
    Along the last axis of a contiguous array (attention's case) it runs block by block, or
    compiled where Numba is installed (``softmax_rows``)."""

    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, x: Any) -> Any:
        _check_float("softmax", x)
        xp = get_array_module(x)
        # along the last axis of a contiguous array: blocks of rows (forward and backward)
        self.rows = bool(x.ndim) and self.axis in (-1, x.ndim - 1) and x.flags.c_contiguous
        if self.rows:
            y = xp.empty_like(x)
            softmax_rows(x, y)
        else:
            y = x - x.max(axis=self.axis, keepdims=True)  # the shift: y <= 0, e^y <= 1
            xp.exp(y, out=y)
            y /= sum_keepdims(y, self.axis)
        self.save_for_backward(y)
        return y

    def backward(self, gy: Any) -> Any:
        # gx_i = y_i (gy_i - sum_j gy_j y_j)
        (y,) = self.saved
        xp = get_array_module(y)
        if self.rows:  # y is ours, fresh and C-contiguous
            gx = xp.empty_like(y)
            softmax_rows_backward(xp.ascontiguousarray(gy), y, gx)
            return gx
        gx = gy - dot_keepdims(gy, y, self.axis)
        gx *= y
        return gx


def softmax(x: Any, axis: int = -1) -> Tensor:
    """$\\mathrm{softmax}(x)_i = e^{x_i} / \\sum_j e^{x_j}$ along ``axis``, computed with the
    max subtracted (softmax([-1000, 1]) = [0, 1], no overflow). Shapes: any."""
    if not is_fused():
        return softmax_composed(x, axis)
    return Softmax(axis)(x)


def log_softmax_composed(x: Any, axis: int = -1) -> Tensor:
    """$\\log \\mathrm{softmax}(x)_i = (x_i - m) - \\log \\sum_j e^{x_j - m}$, $m = \\max_j x_j$
    (subtracting the shift first keeps $x_i - \\mathrm{logsumexp}(x)$ from cancelling at large
    |x|; m is a constant for the gradient). Shapes: any."""
    xt = x if isinstance(x, Tensor) else Tensor(x)
    shifted = xt - R.max(xt, axis=axis, keepdims=True).detach()
    return shifted - E.log(R.sum(E.exp(shifted), axis=axis, keepdims=True))


class LogSoftmax(Function):
    """Fused log-softmax. Saves $p = e^y = \\mathrm{softmax}(x)$ from the forward's
    exponentials (one array, the size of the output it replaces): $g_x = g_y - p \\sum_j
    g_{y,j}$."""

    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, x: Any) -> Any:
        _check_float("log_softmax", x)
        xp = get_array_module(x)
        y = x - x.max(axis=self.axis, keepdims=True)  # x - m
        p = xp.exp(y)
        total = sum_keepdims(p, self.axis)
        p /= total  # softmax(x)
        y -= xp.log(total)  # x - m - log sum e^{x - m}
        self.save_for_backward(p)
        return y

    def backward(self, gy: Any) -> Any:
        # gx = gy - softmax(x) * sum_j gy_j
        (p,) = self.saved
        xp = get_array_module(p)
        gx = p * sum_keepdims(gy, self.axis)
        xp.subtract(gy, gx, out=gx)
        return gx


def log_softmax(x: Any, axis: int = -1) -> Tensor:
    """$x_i - \\log \\sum_j e^{x_j}$ along ``axis``, stable for large |x|. Shapes: any."""
    if not is_fused():
        return log_softmax_composed(x, axis)
    return LogSoftmax(axis)(x)
