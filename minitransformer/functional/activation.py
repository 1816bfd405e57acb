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
from .fusion import is_fused
from .reduction import dot_keepdims, sum_keepdims

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


class Gelu(Function):
    """Fused GELU (erf or tanh form). Saves x and $\\Phi(x)$ (or $\\tanh u$): the special
    function is the expensive part on the CPU, so backward reuses it instead of recomputing."""

    def __init__(self, approximate: str):
        self.approximate = approximate

    def forward(self, x: Any) -> Any:
        _check_float("gelu", x)
        xp = get_array_module(x)
        self.shape = x.shape
        # element-wise, so work on a flat view: a 0-d input becomes (1,), since NumPy returns
        # scalars for 0-d results and those cannot be written in place
        x = x.reshape(-1)
        if self.approximate == "none":
            s = backend.erf(x * _SQRT_HALF)  # erf(x / sqrt 2), a fresh array we own
            s += 1.0
            s *= 0.5  # Phi(x), the standard normal CDF
        else:
            s = x * x
            s *= _TANH_A
            s += 1.0
            s *= x
            s *= _TANH_C  # u = sqrt(2/pi) (x + 0.044715 x^3)
            xp.tanh(s, out=s)  # t = tanh u
        self.save_for_backward(x, s)
        if self.approximate == "none":
            y = x * s  # y = x Phi(x)
        else:
            y = s + 1.0
            y *= 0.5
            y *= x  # y = x (1 + t) / 2
        return y.reshape(self.shape)

    def backward(self, gy: Any) -> Any:
        x, s = self.saved
        xp = get_array_module(x)
        if self.approximate == "none":
            # gx = gy (Phi(x) + x phi(x)),  phi(x) = e^{-x^2/2} / sqrt(2 pi)
            gx = x * x
            gx *= -0.5
            xp.exp(gx, out=gx)
            gx *= x
            gx *= _INV_SQRT_2PI  # x phi(x)
            gx += s
        else:
            # with t = tanh u, u = c (x + a x^3):
            # gx = gy [ (1 + t)/2 + x/2 (1 - t^2) c (1 + 3 a x^2) ]
            gx = x * x
            gx *= 3.0 * _TANH_A
            gx += 1.0
            gx *= _TANH_C  # du/dx
            sech2 = s * s
            xp.subtract(1.0, sech2, out=sech2)  # 1 - t^2
            gx *= sech2
            gx *= x
            gx += s
            gx += 1.0
            gx *= 0.5
        gx *= gy.reshape(-1)
        return gx.reshape(self.shape)


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


class Softmax(Function):
    """Fused softmax. Saves its output y, since $g_x = y \\odot (g_y - \\langle g_y, y\\rangle)$."""

    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, x: Any) -> Any:
        _check_float("softmax", x)
        xp = get_array_module(x)
        y = x - x.max(axis=self.axis, keepdims=True)  # the shift: y <= 0, e^y <= 1
        xp.exp(y, out=y)
        y /= sum_keepdims(y, self.axis)
        self.save_for_backward(y)
        return y

    def backward(self, gy: Any) -> Any:
        # gx_i = y_i (gy_i - sum_j gy_j y_j)
        (y,) = self.saved
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
