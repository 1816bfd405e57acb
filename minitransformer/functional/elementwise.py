"""Element-wise ops. Binary ops broadcast like NumPy; their backward sums the gradient back to
each input's shape with ``sum_to_shape``.

Each op is a Function on raw arrays plus a lowercase wrapper. Where the derivative is
cheaper from the output (exp, tanh, sigmoid, sqrt) the output is saved instead of the input.

A number operand (``x * 0.5``, ``1 - x``, ``x ** 2``, ``where(m, x, 0.0)``) stays a number:
the wrapper runs the op through ``WithScalar``, which hands it to NumPy/CuPy as a host
scalar of the tensor's float dtype. CuPy passes scalars to its kernels as arguments, so a
number costs no device array and no host-to-device copy per call, and the result keeps the
tensor's dtype (float32 stays float32; see ``scalar_operand``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import backend
from ..autograd import Function, Tensor
from ..backend import get_array_module
from .reduction import sum_to_shape

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

__all__ = [
    "WithScalar", "abs", "add", "clip", "div", "erf", "exp", "log", "maximum", "minimum", "mul",
    "neg", "pow", "scalar_operand", "sigmoid", "sqrt", "sub", "tanh", "where",
]


def _broadcasting(name: str, op: Any, a: Any, b: Any) -> Any:
    """``op(a, b)``, with NumPy's broadcasting error replaced by one naming the op and shapes."""
    try:
        return op(a, b)
    except ValueError:
        raise ValueError(
            f"{name}: shapes {tuple(a.shape)} and {tuple(b.shape)} do not broadcast"
        ) from None


# ---------------------------------------------------------------------------- binary
class Add(Function):
    """$y = a + b$; $g_a = g_y$, $g_b = g_y$, each summed back to its input's shape."""

    def forward(self, a: Any, b: Any) -> Any:
        self.shapes = (a.shape, b.shape)
        return _broadcasting("add", operator.add, a, b)

    def backward(self, gy: Any) -> Any:
        sa, sb = self.shapes
        need = self.needs_input_grad
        return (sum_to_shape(gy, sa) if need[0] else None,
                sum_to_shape(gy, sb) if need[1] else None)


class Sub(Function):
    """$y = a - b$; $g_a = g_y$, $g_b = -g_y$."""

    def forward(self, a: Any, b: Any) -> Any:
        self.shapes = (a.shape, b.shape)
        return _broadcasting("sub", operator.sub, a, b)

    def backward(self, gy: Any) -> Any:
        sa, sb = self.shapes
        need = self.needs_input_grad
        return (sum_to_shape(gy, sa) if need[0] else None,
                -sum_to_shape(gy, sb) if need[1] else None)


class Mul(Function):
    """$y = a b$; $g_a = g_y b$, $g_b = g_y a$ (saves both inputs)."""

    def forward(self, a: Any, b: Any) -> Any:
        self.save_for_backward(a, b)
        return _broadcasting("mul", operator.mul, a, b)

    def backward(self, gy: Any) -> Any:
        a, b = self.saved
        ga = sum_to_shape(gy * b, a.shape) if self.needs_input_grad[0] else None
        gb = sum_to_shape(gy * a, b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    """$y = a / b$; $g_a = g_y / b$, $g_b = -g_y a / b^2$."""

    def forward(self, a: Any, b: Any) -> Any:
        self.save_for_backward(a, b)
        return _broadcasting("div", operator.truediv, a, b)

    def backward(self, gy: Any) -> Any:
        # d(a/b)/da = 1/b ; d(a/b)/db = -a/b^2
        a, b = self.saved
        gb_full = gy / b
        ga = sum_to_shape(gb_full, a.shape) if self.needs_input_grad[0] else None
        gb = sum_to_shape(-gb_full * a / b, b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Pow(Function):
    """``a ** b`` for tensors a > 0 or an exponent b that needs no gradient."""

    def forward(self, a: Any, b: Any) -> Any:
        y = _broadcasting("pow", operator.pow, a, b)
        self.save_for_backward(a, b, y)
        return y

    def backward(self, gy: Any) -> Any:
        # d(a^b)/da = b a^(b-1) ; d(a^b)/db = a^b log a
        a, b, y = self.saved
        xp = get_array_module(gy)
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = sum_to_shape(gy * b * a ** (b - 1), a.shape)
        if self.needs_input_grad[1]:
            log_a = np.log(a) if isinstance(a, np.generic) else xp.log(a)  # a: maybe a number
            gb = sum_to_shape(gy * y * log_a, b.shape)
        return ga, gb


class Maximum(Function):
    """$y = \\max(a, b)$; the gradient goes to the larger input, split at ties."""

    def forward(self, a: Any, b: Any) -> Any:
        self.save_for_backward(a, b)
        return _broadcasting("maximum", get_array_module(a, b).maximum, a, b)

    def backward(self, gy: Any) -> Any:
        # the gradient goes to the larger input; ties split it equally
        a, b = self.saved
        return _split_by_weight(gy, _winner_weight(a > b, a == b, gy.dtype), a.shape, b.shape,
                                self.needs_input_grad)


class Minimum(Function):
    """$y = \\min(a, b)$; the gradient goes to the smaller input, split at ties."""

    def forward(self, a: Any, b: Any) -> Any:
        self.save_for_backward(a, b)
        return _broadcasting("minimum", get_array_module(a, b).minimum, a, b)

    def backward(self, gy: Any) -> Any:
        a, b = self.saved
        return _split_by_weight(gy, _winner_weight(a < b, a == b, gy.dtype), a.shape, b.shape,
                                self.needs_input_grad)


def _winner_weight(wins: Any, ties: Any, dtype: Any) -> Any:
    """1 where a wins, 1/2 at ties, 0 where b wins (in the gradient's dtype: no float64 upcast)."""
    w = wins.astype(dtype)
    w += 0.5 * ties
    return w


def _split_by_weight(gy: Any, wa: Any, sa: tuple[int, ...], sb: tuple[int, ...],
                     need: tuple[bool, ...]) -> tuple[Any, Any]:
    # ga = gy * wa, gb = gy * (1 - wa), each summed back to its input's shape
    ga = sum_to_shape(gy * wa, sa) if need[0] else None
    gb = sum_to_shape(gy - gy * wa, sb) if need[1] else None
    return ga, gb


# ---------------------------------------------------------------------------- number operands
_NUMBERS = (bool, int, float, np.bool_, np.integer, np.floating)


def scalar_operand(c: Any, x: Tensor) -> Any:
    """The number ``c`` as the other operand of an op on the floating tensor ``x``: a host
    scalar of x's dtype, so ``x * 0.5`` and ``x * np.float64(0.5)`` stay float32 on NumPy 2
    and on CuPy 13 and 14 alike (a scalar of the array's own dtype never widens it, under
    either promotion rule)."""
    return x.dtype.type(c)


class WithScalar(Function):
    """A binary op with one operand a number $c$: $y = f(x, c)$ or $y = f(c, x)$.

    The number stays a host scalar: the wrapped op's forward and backward get it in place of
    an array (a NumPy scalar has ``.shape == ()`` and ``.dtype``, so the same code serves),
    and NumPy/CuPy pass it to the kernel as an argument. Only $x$ is an input of the graph;
    its gradient is the wrapped op's gradient for that side. Shown as the wrapped op (``Mul``,
    ``Add``, ...) in graphs and errors."""

    def __init__(self, op: Function, c: Any, position: int):
        self.op, self.c, self.position = op, c, position  # position: where c goes, 0 or 1

    @property
    def name(self) -> str:
        return self.op.name

    def forward(self, x: Any) -> Any:
        self.op.recording = self.recording
        return self.op.forward(*((x, self.c) if self.position == 1 else (self.c, x)))

    def backward(self, gy: Any) -> Any:
        need = (self.needs_input_grad[0], False)  # (x, c)
        self.op.needs_input_grad = need if self.position == 1 else need[::-1]
        grads = self.op.backward(gy)
        return (grads[1 - self.position],)

    def release(self) -> None:
        super().release()
        self.op.release()


def _binary(make: Callable[[], Function], a: Any, b: Any) -> Tensor:
    """``make()(a, b)``, or through ``WithScalar`` when one side is a number and the other a
    floating Tensor (the number is never made into a device array). A number with an integer
    or boolean tensor (ids + 1, rare and outside training steps) becomes a 0-d array of
    NumPy's default type for it, as any non-Tensor operand (``autograd.as_tensor``)."""
    if isinstance(b, _NUMBERS) and isinstance(a, Tensor) and a.dtype.kind == "f":
        return WithScalar(make(), scalar_operand(b, a), 1)(a)
    if isinstance(a, _NUMBERS) and isinstance(b, Tensor) and b.dtype.kind == "f":
        return WithScalar(make(), scalar_operand(a, b), 0)(b)
    return make()(a, b)


def add(a: Any, b: Any) -> Tensor:
    """$y = a + b$ (broadcasting). Shapes: broadcast(a, b). A number operand stays a scalar
    (no device array; the tensor's dtype kept), as in every binary op here."""
    return _binary(Add, a, b)


def sub(a: Any, b: Any) -> Tensor:
    """$y = a - b$ (broadcasting)."""
    return _binary(Sub, a, b)


def mul(a: Any, b: Any) -> Tensor:
    """$y = a \\odot b$ (broadcasting)."""
    return _binary(Mul, a, b)


def div(a: Any, b: Any) -> Tensor:
    """$y = a / b$ (broadcasting)."""
    return _binary(Div, a, b)


def pow(a: Any, b: Any) -> Tensor:  # noqa: A001
    """$y = a^b$ (broadcasting). The gradient with respect to b needs a > 0."""
    return _binary(Pow, a, b)


def maximum(a: Any, b: Any) -> Tensor:
    """$y = \\max(a, b)$ element-wise (broadcasting)."""
    return _binary(Maximum, a, b)


def minimum(a: Any, b: Any) -> Tensor:
    """$y = \\min(a, b)$ element-wise (broadcasting)."""
    return _binary(Minimum, a, b)


# ---------------------------------------------------------------------------- unary
class Neg(Function):
    """$y = -x$; $g_x = -g_y$."""

    def forward(self, x: Any) -> Any:
        return -x

    def backward(self, gy: Any) -> Any:
        return -gy


class Exp(Function):
    """$y = e^x$; saves the output: $g_x = g_y y$."""

    def forward(self, x: Any) -> Any:
        y = get_array_module(x).exp(x)
        self.save_for_backward(y)
        return y

    def backward(self, gy: Any) -> Any:
        (y,) = self.saved
        return gy * y  # d e^x/dx = e^x


class Log(Function):
    """$y = \\ln x$; $g_x = g_y / x$."""

    def forward(self, x: Any) -> Any:
        self.save_for_backward(x)
        return get_array_module(x).log(x)

    def backward(self, gy: Any) -> Any:
        (x,) = self.saved
        return gy / x


class Sqrt(Function):
    """$y = \\sqrt x$; saves the output: $g_x = g_y / (2 y)$."""

    def forward(self, x: Any) -> Any:
        y = get_array_module(x).sqrt(x)
        self.save_for_backward(y)
        return y

    def backward(self, gy: Any) -> Any:
        (y,) = self.saved
        return gy / (2 * y)  # d sqrt(x)/dx = 1 / (2 sqrt(x))


class Tanh(Function):
    """$y = \\tanh x$; saves the output: $g_x = g_y (1 - y^2)$."""

    def forward(self, x: Any) -> Any:
        y = get_array_module(x).tanh(x)
        self.save_for_backward(y)
        return y

    def backward(self, gy: Any) -> Any:
        (y,) = self.saved
        return gy * (1 - y * y)


class Sigmoid(Function):
    """$y = \\sigma(x)$; saves the output: $g_x = g_y y (1 - y)$."""

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        # 0.5 (1 + tanh(x/2)) is sigmoid without overflow for large |x|
        y = 0.5 * (1 + xp.tanh(0.5 * x))
        self.save_for_backward(y)
        return y

    def backward(self, gy: Any) -> Any:
        (y,) = self.saved
        return gy * y * (1 - y)


class Abs(Function):
    """$y = |x|$; $g_x = g_y \\,\\mathrm{sign}(x)$ (0 at 0)."""

    def forward(self, x: Any) -> Any:
        self.save_for_backward(x)
        return get_array_module(x).abs(x)

    def backward(self, gy: Any) -> Any:
        (x,) = self.saved
        return gy * get_array_module(x).sign(x)  # subgradient 0 at 0


class Erf(Function):
    """$y = \\mathrm{erf}(x)$; $g_x = g_y \\frac{2}{\\sqrt\\pi} e^{-x^2}$."""

    def forward(self, x: Any) -> Any:
        self.save_for_backward(x)
        return backend.erf(x)

    def backward(self, gy: Any) -> Any:
        (x,) = self.saved
        xp = get_array_module(x)
        # d erf(x)/dx = 2/sqrt(pi) e^{-x^2}; a Python float keeps float32 float32 (NEP 50)
        gx = xp.exp(-x * x)
        gx *= _TWO_OVER_SQRT_PI
        gx *= gy
        return gx


class Clip(Function):
    """$y = \\min(\\max(x, low), high)$; $g_x = g_y$ inside [low, high], 0 outside."""

    def __init__(self, low: Any, high: Any):
        self.low, self.high = low, high

    def forward(self, x: Any) -> Any:
        self.save_for_backward(x)
        return get_array_module(x).clip(x, self.low, self.high)

    def backward(self, gy: Any) -> Any:
        # gx = gy where low <= x <= high, else 0: a where, not a boolean assignment (whose
        # data-dependent shape would make CuPy read the mask's count on the host)
        (x,) = self.saved
        xp = get_array_module(x)
        outside = None
        if self.low is not None:
            outside = x < self.low
        if self.high is not None:
            outside = x > self.high if outside is None else outside | (x > self.high)
        if outside is None:
            return gy
        return xp.where(outside, gy.dtype.type(0), gy)


def neg(x: Any) -> Tensor:
    """$y = -x$."""
    return Neg()(x)


def exp(x: Any) -> Tensor:
    """$y = e^x$."""
    return Exp()(x)


def log(x: Any) -> Tensor:
    """$y = \\ln x$."""
    return Log()(x)


def sqrt(x: Any) -> Tensor:
    """$y = \\sqrt{x}$."""
    return Sqrt()(x)


def tanh(x: Any) -> Tensor:
    """$y = \\tanh x$."""
    return Tanh()(x)


def sigmoid(x: Any) -> Tensor:
    """$y = 1 / (1 + e^{-x})$."""
    return Sigmoid()(x)


def abs(x: Any) -> Tensor:  # noqa: A001
    """$y = |x|$ (subgradient 0 at 0)."""
    return Abs()(x)


def erf(x: Any) -> Tensor:
    """$y = \\mathrm{erf}(x) = \\frac{2}{\\sqrt\\pi}\\int_0^x e^{-t^2} dt$."""
    return Erf()(x)


def clip(x: Any, low: Any = None, high: Any = None) -> Tensor:
    """$y = \\min(\\max(x, low), high)$; the gradient is 1 inside [low, high], 0 outside."""
    return Clip(low, high)(x)


# ---------------------------------------------------------------------------- where
class Where(Function):
    """$y = a$ where the (fixed) condition holds, else $b$; each side gets $g_y$ where it was
    picked."""

    def __init__(self, condition: Any):
        self.condition = condition

    def forward(self, a: Any, b: Any) -> Any:
        xp = get_array_module(a, b)
        self.shapes = (a.shape, b.shape)
        try:
            return xp.where(self.condition, a, b)
        except ValueError:
            raise ValueError(
                f"where: condition {tuple(self.condition.shape)}, a {tuple(a.shape)} and "
                f"b {tuple(b.shape)} do not broadcast"
            ) from None

    def backward(self, gy: Any) -> Any:
        # ga = gy where condition, gb = gy elsewhere; each summed back to its input's shape
        xp = get_array_module(gy)
        zero = gy.dtype.type(0)  # a host scalar of gy's dtype: a kernel argument, no array
        sa, sb = self.shapes
        need = self.needs_input_grad
        ga = sum_to_shape(xp.where(self.condition, gy, zero), sa) if need[0] else None
        gb = sum_to_shape(xp.where(self.condition, zero, gy), sb) if need[1] else None
        return ga, gb


def where(condition: Any, a: Any, b: Any) -> Tensor:
    """$y = a$ where ``condition`` else $b$ (broadcasting; the condition gets no gradient)."""
    cond = condition.data if isinstance(condition, Tensor) else condition
    ref = a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else None
    xp = get_array_module(ref.data) if ref is not None else get_array_module(a, b)
    cond = xp.asarray(cond)
    if cond.dtype != bool:
        raise TypeError(f"where: the condition must be boolean, got dtype {cond.dtype}")
    return _binary(lambda: Where(cond), a, b)
