"""Reductions: sum, mean, max, min, var; and ``sum_to``, the one broadcasting helper.

Broadcasting in the forward pass (``(B, T, D) + (D,)``) means summing in the backward pass:
the gradient of a broadcast input is the upstream gradient summed over the broadcast axes.
``sum_to_shape`` does that for every binary op's backward, in one place.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..autograd import Function, Tensor
from ..backend import get_array_module

__all__ = ["dot_keepdims", "max", "mean", "min", "ones_vector", "sum", "sum_keepdims", "sum_to",
           "sum_to_shape", "var"]

_builtin_max = max


def _normalize_axis(axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < _builtin_max(ndim, 1):
            raise ValueError(f"axis {a} is out of range for an array of {ndim} dimensions")
        out.append(a % ndim if ndim else 0)
    return tuple(sorted(set(out)))


def sum_to_shape(x: Any, shape: tuple[int, ...]) -> Any:
    """Sum a raw array over the axes that broadcasting added or stretched, to get ``shape``.

    ``sum_to_shape(g, x.shape)`` undoes ``broadcast_to(x, g.shape)`` in the backward pass.
    """
    if x.shape == tuple(shape):
        return x
    lead = x.ndim - len(shape)
    if lead < 0:
        raise ValueError(f"sum_to: cannot sum shape {x.shape} to the longer shape {shape}")
    stretched = tuple(lead + i for i, n in enumerate(shape) if n == 1 and x.shape[lead + i] != 1)
    y = x.sum(axis=tuple(range(lead)) + stretched, keepdims=True)
    return y.reshape(shape) if lead else y


@functools.lru_cache(maxsize=32)
def _ones(xp: Any, n: int, dtype: np.dtype) -> Any:
    ones = xp.ones(n, dtype=dtype)
    if isinstance(ones, np.ndarray):
        ones.flags.writeable = False  # shared by every caller: nobody may write into it
    return ones


def ones_vector(xp: Any, n: int, dtype: Any) -> Any:
    """A vector of ``n`` ones of module ``xp`` (numpy or cupy) and ``dtype``, for row sums as
    matrix-vector products (``rows @ ones``). Made once per (module, n, dtype) and shared (the
    32 most recent are kept: a model uses a handful of widths), so a fused op allocates no
    vector per call; read-only on NumPy, and never written on a GPU either."""
    return _ones(xp, int(n), np.dtype(dtype))


def sum_keepdims(a: Any, axis: int) -> Any:
    """Raw-array $\\sum_{axis} a$, keeping the axis (length 1): the fused ops' row sums.

    Along the last axis of a C-contiguous array this is a matrix-vector product with a vector
    of ones: BLAS (cuBLAS on the GPU) runs it at memory speed, where NumPy's reduction pays a
    per-row overhead that makes it ~5x slower for rows of 100-200 elements."""
    if a.ndim >= 1 and axis in (-1, a.ndim - 1) and a.flags.c_contiguous:
        D = a.shape[-1]
        ones = ones_vector(get_array_module(a), D, a.dtype)
        rows = a.reshape(-1, D) @ ones  # (N, D) @ (D,) -> (N,): one GEMV, a view's reshape
        return rows.reshape(a.shape[:-1] + (1,))
    return a.sum(axis=axis, keepdims=True)


def dot_keepdims(a: Any, b: Any, axis: int) -> Any:
    """Raw-array $\\sum_{axis} a \\odot b$ for same-shape a, b, keeping the axis, without the
    temporary ``a * b`` along the last axis (an einsum)."""
    if a.ndim >= 1 and axis in (-1, a.ndim - 1) and a.shape == b.shape:
        return get_array_module(a, b).einsum("...i,...i->...", a, b)[..., None]
    return (a * b).sum(axis=axis, keepdims=True)


def _expand_reduced(gy: Any, in_shape: tuple[int, ...], axes: tuple[int, ...],
                    keepdims: bool) -> Any:
    """Reshape the gradient of a reduction so it broadcasts back against the input."""
    if not keepdims:
        shape = list(in_shape)
        for a in axes:
            shape[a] = 1
        gy = gy.reshape(shape)
    return gy


class Sum(Function):
    """$y = \\sum_{axis} x$; $g_x$ = $g_y$ spread back over the reduced axes."""

    def __init__(self, axis: Any, keepdims: bool):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x: Any) -> Any:
        self.in_shape = x.shape
        self.axes = _normalize_axis(self.axis, x.ndim)
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy: Any) -> Any:
        # d sum(x)/dx_i = 1: spread gy back over the reduced axes
        xp = get_array_module(gy)
        g = _expand_reduced(gy, self.in_shape, self.axes, self.keepdims)
        return xp.broadcast_to(g, self.in_shape)  # a read-only view; the engine copies on write


def sum(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """$y = \\sum_{i \\in axis} x_i$. Shapes: x (...) -> the remaining axes."""
    return Sum(axis, keepdims)(x)


class Mean(Function):
    """$y = \\frac{1}{n}\\sum_{axis} x$; $g_x = g_y / n$ spread over the reduced axes."""

    def __init__(self, axis: Any, keepdims: bool):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x: Any) -> Any:
        self.in_shape = x.shape
        self.axes = _normalize_axis(self.axis, x.ndim)
        self.count = 1
        for a in self.axes:
            self.count *= x.shape[a]
        return x.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy: Any) -> Any:
        # d mean(x)/dx_i = 1/n
        xp = get_array_module(gy)
        g = _expand_reduced(gy, self.in_shape, self.axes, self.keepdims)
        return xp.broadcast_to(g / self.count, self.in_shape)


def mean(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:
    """$y = \\frac{1}{n} \\sum_{i \\in axis} x_i$. Shapes: x (...) -> the remaining axes."""
    return Mean(axis, keepdims)(x)


class _Extremum(Function):
    """max / min over axes; the gradient flows to the extremum, shared between ties."""

    reduce = "max"

    def __init__(self, axis: Any, keepdims: bool):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x: Any) -> Any:
        self.in_shape = x.shape
        self.axes = _normalize_axis(self.axis, x.ndim)
        y = getattr(x, self.reduce)(axis=self.axes, keepdims=True)
        self.save_for_backward(x, y)
        return y if self.keepdims else y.reshape([n for i, n in enumerate(x.shape)
                                                   if i not in self.axes])

    def backward(self, gy: Any) -> Any:
        # the gradient goes to the arg-extremum; ties share it equally (as np.max's subgradient)
        x, y = self.saved
        hit = x == y
        count = hit.sum(axis=self.axes, keepdims=True).astype(gy.dtype)
        g = _expand_reduced(gy, self.in_shape, self.axes, self.keepdims)
        return hit * (g / count)  # gx = gy / #ties at the extremum, 0 elsewhere


class Max(_Extremum):
    reduce = "max"


class Min(_Extremum):
    reduce = "min"


def max(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """$y = \\max_{i \\in axis} x_i$; the gradient flows to the maximum (split between ties)."""
    return Max(axis, keepdims)(x)


def min(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """$y = \\min_{i \\in axis} x_i$; the gradient flows to the minimum (split between ties)."""
    return Min(axis, keepdims)(x)


def var(x: Any, axis: Any = None, keepdims: bool = False, ddof: int = 0) -> Tensor:
    """$\\mathrm{var}(x) = \\frac{1}{n - ddof} \\sum (x - \\bar x)^2$, composed from primitives.

    ``ddof=0`` is the biased variance (layer norm); ``ddof=1`` the unbiased one (MAE's
    norm-pix targets, torch's default)."""
    xt = x if isinstance(x, Tensor) else Tensor(x)
    axes = _normalize_axis(axis, xt.ndim)
    n = 1
    for a in axes:
        n *= xt.shape[a]
    centered = xt - mean(xt, axis=axes, keepdims=True)
    return sum(centered * centered, axis=axes, keepdims=keepdims) / (n - ddof)


class SumTo(Function):
    """Sum over broadcast axes down to ``shape``; $g_x$ = $g_y$ broadcast back."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = tuple(shape)

    def forward(self, x: Any) -> Any:
        self.in_shape = x.shape
        return sum_to_shape(x, self.shape)

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        return xp.broadcast_to(gy, self.in_shape)


def sum_to(x: Any, shape: tuple[int, ...]) -> Tensor:
    """Sum over broadcast axes so the result has ``shape`` (the adjoint of ``broadcast_to``)."""
    return SumTo(shape)(x)
