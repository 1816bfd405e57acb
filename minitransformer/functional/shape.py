"""Shape and indexing ops: reshape, transpose, broadcast, squeeze, concat/stack/split, indexing,
and moving between devices and dtypes. None of them changes values, so each backward only
routes the gradient back to where the value came from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import backend
from ..autograd import Function, Tensor
from ..backend import get_array_module
from .checks import check_values
from .reduction import sum_to_shape

__all__ = [
    "astype", "broadcast_to", "concat", "expand", "flatten", "getitem", "reshape", "split",
    "squeeze", "stack", "swapaxes", "to_device", "transpose", "unsqueeze",
]


class Reshape(Function):
    """Same values, new shape; $g_x$ = $g_y$ reshaped back."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape

    def forward(self, x: Any) -> Any:
        self.in_shape = x.shape
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise ValueError(
                f"reshape: cannot reshape an array of shape {tuple(x.shape)} ({x.size} elements) "
                f"into shape {tuple(self.shape)}"
            ) from None

    def backward(self, gy: Any) -> Any:
        return gy.reshape(self.in_shape)


def reshape(x: Any, shape: Sequence[int]) -> Tensor:
    """Same values, new shape (one entry may be -1)."""
    return Reshape(tuple(shape))(x)


def flatten(x: Any, start_axis: int = 0) -> Tensor:
    """Merge the axes from ``start_axis`` on into one: (B, C, H, W) -> (B, C*H*W) for 1."""
    xt = x if isinstance(x, Tensor) else Tensor(x)
    return reshape(xt, xt.shape[:start_axis] + (-1,))


class Transpose(Function):
    """Permute axes; $g_x$ = $g_y$ under the inverse permutation."""

    def __init__(self, axes: tuple[int, ...] | None):
        self.axes = axes

    def forward(self, x: Any) -> Any:
        axes = self.axes if self.axes is not None else tuple(range(x.ndim))[::-1]
        if sorted(a % max(x.ndim, 1) for a in axes) != list(range(x.ndim)):
            raise ValueError(f"transpose: axes {axes} are not a permutation of {x.ndim} axes")
        self.perm = tuple(a % x.ndim for a in axes)
        return x.transpose(self.perm)

    def backward(self, gy: Any) -> Any:
        return gy.transpose(tuple(int(i) for i in np.argsort(self.perm)))  # the inverse permutation


def transpose(x: Any, axes: Sequence[int] | None = None) -> Tensor:
    """Permute the axes (reverse them when ``axes`` is None), as ``ndarray.transpose``."""
    return Transpose(tuple(axes) if axes is not None else None)(x)


def swapaxes(x: Any, axis1: int, axis2: int) -> Tensor:
    """Exchange two axes: ``swapaxes(k, -1, -2)`` is K^T for a batch of matrices."""
    ndim = x.ndim
    perm = list(range(ndim))
    perm[axis1 % ndim], perm[axis2 % ndim] = perm[axis2 % ndim], perm[axis1 % ndim]
    return transpose(x, perm)


class BroadcastTo(Function):
    """A broadcast view; $g_x$ = $g_y$ summed over the broadcast axes."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape

    def forward(self, x: Any) -> Any:
        self.in_shape = x.shape
        try:
            return get_array_module(x).broadcast_to(x, self.shape)
        except ValueError:
            raise ValueError(
                f"broadcast_to: shape {tuple(x.shape)} cannot broadcast to {self.shape}"
            ) from None

    def backward(self, gy: Any) -> Any:
        return sum_to_shape(gy, self.in_shape)


def broadcast_to(x: Any, shape: Sequence[int]) -> Tensor:
    """A read-only broadcast view; the backward sums over the broadcast axes."""
    return BroadcastTo(tuple(shape))(x)


expand = broadcast_to


def squeeze(x: Any, axis: int | Sequence[int] | None = None) -> Tensor:
    """Drop axes of length 1 (all of them when ``axis`` is None)."""
    xt = x if isinstance(x, Tensor) else Tensor(x)
    if axis is None:
        axes = {i for i, n in enumerate(xt.shape) if n == 1}
    else:
        axes = {a % xt.ndim for a in ((axis,) if isinstance(axis, int) else axis)}
        bad = [a for a in axes if xt.shape[a] != 1]
        if bad:
            raise ValueError(f"squeeze: axis {bad[0]} of shape {xt.shape} does not have length 1")
    return reshape(xt, [n for i, n in enumerate(xt.shape) if i not in axes])


def unsqueeze(x: Any, axis: int) -> Tensor:
    """Insert an axis of length 1 at ``axis``."""
    xt = x if isinstance(x, Tensor) else Tensor(x)
    axis = axis % (xt.ndim + 1)
    return reshape(xt, xt.shape[:axis] + (1,) + xt.shape[axis:])


class Concat(Function):
    """Join along an axis; each input gets its slab of $g_y$."""

    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, *xs: Any) -> Any:
        xp = get_array_module(*xs)
        ndim = xs[0].ndim
        axis = self.axis % ndim
        for x in xs[1:]:
            if x.ndim != ndim or any(a != b for i, (a, b) in enumerate(zip(x.shape, xs[0].shape))
                                     if i != axis):
                raise ValueError(
                    f"concat: shapes {[tuple(x.shape) for x in xs]} differ outside axis {axis}"
                )
        self.sizes = [x.shape[axis] for x in xs]
        self.axis_ = axis
        return xp.concatenate(xs, axis=axis)

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        return tuple(xp.split(gy, np.cumsum(self.sizes)[:-1].tolist(), axis=self.axis_))


def concat(xs: Sequence[Any], axis: int = 0) -> Tensor:
    """Join tensors along an existing axis."""
    if len(xs) == 0:
        raise ValueError("concat: needs at least one tensor")
    return Concat(axis)(*xs)


def stack(xs: Sequence[Any], axis: int = 0) -> Tensor:
    """Join tensors of one shape along a new axis."""
    if len(xs) == 0:
        raise ValueError("stack: needs at least one tensor")
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) > 1:
        raise ValueError(f"stack: all shapes must be equal, got {sorted(shapes)}")
    return concat([unsqueeze(x, axis) for x in xs], axis=axis)


class Split(Function):
    """Split along an axis; $g_x$ = the output gradients joined back."""

    def __init__(self, indices_or_sections: Any, axis: int):
        self.spec, self.axis = indices_or_sections, axis

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        self.axis_ = self.axis % x.ndim
        if isinstance(self.spec, int) and x.shape[self.axis_] % self.spec:
            raise ValueError(
                f"split: axis {self.axis} of length {x.shape[self.axis_]} does not divide into "
                f"{self.spec} equal parts"
            )
        return tuple(xp.split(x, self.spec, axis=self.axis_))

    def backward(self, *gys: Any) -> Any:
        return get_array_module(*gys).concatenate(gys, axis=self.axis_)


def split(x: Any, indices_or_sections: int | Sequence[int], axis: int = 0) -> tuple[Tensor, ...]:
    """Split into equal parts (an int) or at the given indices, as ``np.split``."""
    return Split(indices_or_sections, axis)(x)


def _index_to_device(index: Any, xp: Any) -> Any:
    """Tensors and foreign arrays inside an index become arrays of the data's module."""
    if isinstance(index, tuple):
        return tuple(_index_to_device(i, xp) for i in index)
    if isinstance(index, Tensor):
        index = index.data
    if isinstance(index, list):
        index = np.asarray(index)
    if hasattr(index, "dtype") and backend.get_array_module(index) is not xp:
        index = xp.asarray(backend.to_numpy(index))
    return index


def _has_advanced(index: Any) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(hasattr(p, "dtype") for p in parts)


def _check_integer_indices(shape: tuple[int, ...], index: Any) -> None:
    """Raise IndexError for an integer index array with a value outside its axis.

    NumPy raises on its own, but CuPy wraps an out-of-range index around silently (its
    kernels do not check), so the check is made here, the same on both devices: one reduction
    per integer array, and on a GPU one device-to-host read of the combined result. Inside
    ``F.use_data_checks(False)`` device index arrays are not checked (no read): the caller
    has validated them (see ``checks.py``)."""
    def is_mask(p: Any) -> bool:
        return getattr(getattr(p, "dtype", None), "kind", "") == "b"

    parts = index if isinstance(index, tuple) else (index,)
    consumed = sum(p.ndim if is_mask(p) else 1
                   for p in parts if p is not None and p is not Ellipsis)
    axis, bad, found = 0, None, []
    for p in parts:
        if p is None:
            continue
        if p is Ellipsis:
            axis += len(shape) - consumed
            continue
        dtype = getattr(p, "dtype", None)
        if (dtype is not None and dtype.kind in "iu" and p.size and axis < len(shape)
                and check_values(p)):
            n = shape[axis]
            out = ((p < -n) | (p >= n)).any()  # a device scalar on a GPU: no read yet
            bad = out if bad is None else bad | out
            found.append((axis, n, p))
        axis += p.ndim if is_mask(p) else 1
    if bad is not None and bool(bad):  # the one read, only when an integer array is there
        for axis, n, p in found:
            if bool(((p < -n) | (p >= n)).any()):
                raise IndexError(f"getitem: index array for axis {axis} has values in "
                                 f"[{int(p.min())}, {int(p.max())}], outside [-{n}, {n - 1}] "
                                 f"(tensor shape {tuple(shape)})")


class GetItem(Function):
    """$y = x[\\text{index}]$; $g_x$ = zeros with $g_y$ scattered (added) back at the index."""

    def __init__(self, index: Any):
        self.index = index

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        self.index = _index_to_device(self.index, xp)
        self.in_shape, self.in_dtype = x.shape, x.dtype
        _check_integer_indices(x.shape, self.index)
        try:
            return x[self.index]
        except IndexError as e:
            raise IndexError(f"getitem: {e} (tensor shape {tuple(x.shape)})") from None

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        gx = xp.zeros(self.in_shape, dtype=gy.dtype)
        if _has_advanced(self.index):
            backend.scatter_add(gx, self.index, gy)  # repeated indices accumulate
        else:
            gx[self.index] = gy  # basic indexing selects each element at most once
        return gx


def getitem(x: Any, index: Any) -> Tensor:
    """``x[index]`` with basic (slices, ints, None, ...) and integer/boolean-array indexing.

    The backward scatters the gradient back; an index that repeats accumulates its gradients.
    Integer index arrays are bounds-checked (IndexError naming the axis and the values): on
    the host always, on a GPU (one device-to-host read) unless inside
    ``F.use_data_checks(False)``, where CuPy would wrap an out-of-range index around.
    """
    return GetItem(index)(x)


class ToDevice(Function):
    """Copy to another device; $g_x$ = $g_y$ copied back."""

    def __init__(self, device: Any):
        self.device = backend.as_device(device)

    def forward(self, x: Any) -> Any:
        self.source = backend.device_of(x)
        return backend.to_device(x, self.device)

    def backward(self, gy: Any) -> Any:
        return backend.to_device(gy, self.source)


def to_device(x: Any, device: Any) -> Tensor:
    """Copy to another device ("cpu" or "cuda"); the gradient is copied back."""
    return ToDevice(device)(x)


class AsType(Function):
    """Cast the dtype; $g_x$ = $g_y$ cast back."""

    def __init__(self, dtype: Any):
        self.dtype = np.dtype(dtype)

    def forward(self, x: Any) -> Any:
        self.in_dtype = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy: Any) -> Any:
        return gy.astype(self.in_dtype)


def astype(x: Any, dtype: Any) -> Tensor:
    """Cast to another dtype; the gradient is cast back."""
    return AsType(dtype)(x)
