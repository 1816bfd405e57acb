"""``Tensor``: an array (NumPy or CuPy) plus what reverse mode needs.

A Tensor made by the user is a *leaf*; a Tensor returned by an op records the op as its
``creator``. ``backward()`` walks those records (see ``engine.py``) and accumulates
gradients into ``leaf.grad`` for every leaf with ``requires_grad=True``.

The operators (``+``, ``@``, ``[]``, ...) are defined here, statically, and call the ops in
``minitransformer.functional``. That package sits *below* this one (design §2), so it is
imported when the first operator runs rather than when this module loads: the one deliberate
upward reference in the layering, checked by ``tests/test_layering.py``.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from .. import backend
from . import engine

__all__ = ["Tensor", "as_tensor", "ones", "ones_like", "randn", "tensor", "zeros", "zeros_like"]


class _DeferredFunctional:
    """Stands in for ``minitransformer.functional`` until an operator first needs it.

    functional imports this module, so it cannot be imported at the top (see the module
    docstring). The first attribute access imports it and puts the real module in this
    name's place, so later operators pay nothing for the indirection."""

    def __getattr__(self, name: str) -> Any:
        global F
        from .. import functional

        F = functional
        return getattr(functional, name)


F: Any = _DeferredFunctional()


def _is_array(a: Any) -> bool:
    return isinstance(a, np.ndarray) or type(a).__module__.startswith("cupy")


_NUMERIC_KINDS = "biufc"  # bool, signed and unsigned integers, floats, complex
_KIND_NAMES = {"O": "Python objects or None", "U": "str", "S": "bytes",
               "V": "void (structured records)", "M": "datetime64", "m": "timedelta64"}


def _check_numeric(dtype: Any, where: str) -> None:
    """TypeError unless ``dtype`` holds numbers: a tensor of strings, objects or None would
    only fail later, inside some op, with a raw NumPy error."""
    if dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(
            f"{where}: a Tensor holds numbers (bool, int, float), got dtype {dtype} "
            f"({_KIND_NAMES.get(dtype.kind, dtype.kind)})"
        )


class Tensor:
    """An n-dimensional array that can record the ops applied to it.

    Dtypes. A tensor holds numbers (bool, integers, floats); strings, Python objects and
    None are refused with a TypeError when the tensor is made. Floats are float32 by default
    and float64 wherever float64 is given (design §4). When an op mixes two dtypes, the one
    rule is NumPy's promotion, the same for every op (``+ - * / **``, ``maximum``, ``where``,
    ``@``/``matmul``, ``F.linear``, ...): float32 with float64 computes and returns float64,
    as ``np.float32(1) * np.float64(1)`` and as torch. Python and NumPy *scalars* take the
    tensor's dtype instead (``x * 0.5`` and ``x * np.float64(0.5)`` stay float32), so only a
    real float64 array or tensor widens a result. Gradients never widen: the engine casts
    each input's gradient back to that input's dtype, so a float32 parameter gets a float32
    ``.grad`` even when it met float64 data. Mixing is allowed, not an error, because
    float64 on purpose is common (gradient checks, float64 reference inputs); to keep a
    model float32, give it float32 inputs or cast them with ``.astype(np.float32)``.

    Attributes:
        data: the raw NumPy or CuPy array.
        grad: a raw array of the same shape, dtype and device, or None. Filled by backward
            on leaves (and on tensors that called ``retain_grad()``); never shared with
            another tensor.
        requires_grad: whether gradients flow to (or through) this tensor.
        creator: the Function that produced it (None for leaves); ``grad_fn`` in PyTorch.
        output_index: which output of ``creator`` this is (ops like ``split`` have several).
        name: an optional label (for printing and drawing graphs).
    """

    __slots__ = ("data", "grad", "requires_grad", "creator", "output_index", "name",
                 "__weakref__")
    __array_ufunc__ = None  # `ndarray + Tensor` defers to Tensor.__radd__

    def __init__(self, data: Any, requires_grad: bool = False, name: str | None = None):
        if isinstance(data, Tensor):
            data = data.data
        elif isinstance(data, np.generic):  # a NumPy scalar (e.g. from argmax): a 0-d array
            data = np.asarray(data)
        if not _is_array(data):
            raise TypeError(f"Tensor wraps a NumPy or CuPy array, got {type(data).__name__}; "
                            "use mt.tensor(...) to convert lists and scalars")
        _check_numeric(data.dtype, "Tensor")
        if requires_grad and not np.issubdtype(data.dtype, np.floating):
            raise TypeError(
                f"only floating-point tensors can require gradients, got dtype {data.dtype}"
            )
        self.data = data
        self.grad: Any = None
        self.requires_grad = bool(requires_grad)
        self.creator: Any = None
        self.output_index = 0
        self.name = name

    @classmethod
    def _from_op(cls, data: Any, requires_grad: bool, creator: Any = None, output_index: int = 0
                 ) -> Tensor:
        """An op's output: skips __init__'s checks (the op made a valid array)."""
        t = cls.__new__(cls)
        t.data = data
        t.grad = None
        t.requires_grad = requires_grad
        t.creator = creator
        t.output_index = output_index
        t.name = None
        return t

    # ---------------------------------------------------------------- array-like facts
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @property
    def device(self) -> backend.Device:
        return backend.device_of(self.data)

    @property
    def is_leaf(self) -> bool:
        return self.creator is None

    @property
    def grad_fn(self) -> Any:
        return self.creator

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        body = np.array2string(backend.to_numpy(self.data), precision=4, separator=", ",
                               prefix="tensor(")
        extra = f", device='{self.device}'" if self.device.type != "cpu" else ""
        if self.dtype != np.float32:
            extra += f", dtype={self.dtype}"
        if self.creator is not None:
            extra += f", grad_fn=<{self.creator.name}>"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    def __bool__(self) -> bool:
        return bool(self.data)

    def __float__(self) -> float:
        return float(self.item())

    def item(self) -> Any:
        if self.size != 1:
            raise ValueError(f"item() needs a tensor of one element, got shape {self.shape}")
        return self.data.reshape(()).item()

    def numpy(self) -> np.ndarray:
        """A NumPy copy of the data, from any device."""
        return np.array(backend.to_numpy(self.data), copy=True)

    def tolist(self) -> Any:
        return backend.to_numpy(self.data).tolist()

    # ---------------------------------------------------------------- autograd
    def backward(self, gy: Any = None, retain_graph: bool = False) -> None:
        """Backpropagate from this tensor. ``gy`` defaults to 1 for a scalar."""
        engine.backward(self, gy, retain_graph=retain_graph)

    def _accumulate_grad(self, g: Any) -> None:
        if isinstance(g, np.generic):  # NumPy reductions may hand back scalars
            g = np.asarray(g)
        # The first write copies, later ones add out of place: g may be shared with another
        # tensor or still be used by the engine (see engine.py), and self.grad may be held by
        # the user. So no two tensors ever share a gradient array.
        self.grad = g.copy() if self.grad is None else self.grad + g

    def retain_grad(self) -> Tensor:
        """Keep ``.grad`` on this non-leaf tensor during backward (leaves always keep it)."""
        if self.creator is not None:
            if self.creator.retained is None:
                self.creator.retained = {}
            self.creator.retained[self.output_index] = weakref.ref(self)
        return self

    def zero_grad(self) -> None:
        self.grad = None

    def detach(self) -> Tensor:
        """The same data, cut from the graph (shares memory, requires no grad)."""
        return Tensor._from_op(self.data, False)

    def requires_grad_(self, flag: bool = True) -> Tensor:
        """Switch gradient tracking of a leaf on or off, in place."""
        if self.creator is not None:
            raise RuntimeError(
                "requires_grad_() works on leaf tensors only; use .detach() to cut a computed "
                "tensor from the graph"
            )
        if flag and not np.issubdtype(self.dtype, np.floating):
            raise TypeError(f"only floating-point tensors can require gradients, got {self.dtype}")
        self.requires_grad = bool(flag)
        return self

    # ---------------------------------------------------------------- device and dtype
    def to(self, device: Any = None, dtype: Any = None) -> Tensor:
        """Move to a device ("cpu", "cuda"/"gpu") and/or cast; differentiable."""
        out = self
        if device is not None and backend.as_device(device) != self.device:
            out = F.to_device(out, device)
        if dtype is not None and np.dtype(dtype) != out.dtype:
            out = F.astype(out, dtype)
        return out

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self) -> Tensor:
        return self.to("cuda")

    def astype(self, dtype: Any) -> Tensor:
        return self.to(dtype=dtype)

    # ---------------------------------------------------------------- operators
    def __add__(self, other: Any) -> Tensor:
        return F.add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return F.add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return F.sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return F.sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return F.mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return F.mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return F.div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return F.div(other, self)

    def __neg__(self) -> Tensor:
        return F.neg(self)

    def __pow__(self, exponent: Any) -> Tensor:
        return F.pow(self, exponent)

    def __rpow__(self, base: Any) -> Tensor:
        return F.pow(base, self)

    def __matmul__(self, other: Any) -> Tensor:
        return F.matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return F.matmul(other, self)

    def __getitem__(self, index: Any) -> Tensor:
        return F.getitem(self, index)

    def __abs__(self) -> Tensor:
        return F.abs(self)

    # Comparisons give boolean tensors outside the graph. `==` stays identity so that
    # tensors can be dict keys and set members, as parameters often are.
    def __lt__(self, other: Any) -> Tensor:
        return Tensor(self.data < _raw(other))

    def __le__(self, other: Any) -> Tensor:
        return Tensor(self.data <= _raw(other))

    def __gt__(self, other: Any) -> Tensor:
        return Tensor(self.data > _raw(other))

    def __ge__(self, other: Any) -> Tensor:
        return Tensor(self.data >= _raw(other))

    __hash__ = object.__hash__

    # ---------------------------------------------------------------- methods
    @property
    def T(self) -> Tensor:
        return F.transpose(self)

    def reshape(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return F.reshape(self, shape)

    def transpose(self, *axes: Any) -> Tensor:
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return F.transpose(self, axes or None)

    def swapaxes(self, axis1: int, axis2: int) -> Tensor:
        return F.swapaxes(self, axis1, axis2)

    def sum(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return F.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return F.mean(self, axis=axis, keepdims=keepdims)

    def var(self, axis: Any = None, keepdims: bool = False, ddof: int = 0) -> Tensor:
        return F.var(self, axis=axis, keepdims=keepdims, ddof=ddof)

    def max(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return F.max(self, axis=axis, keepdims=keepdims)

    def min(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return F.min(self, axis=axis, keepdims=keepdims)

    def exp(self) -> Tensor:
        return F.exp(self)

    def log(self) -> Tensor:
        return F.log(self)

    def sqrt(self) -> Tensor:
        return F.sqrt(self)

    def tanh(self) -> Tensor:
        return F.tanh(self)

    def squeeze(self, axis: Any = None) -> Tensor:
        return F.squeeze(self, axis)

    def unsqueeze(self, axis: int) -> Tensor:
        return F.unsqueeze(self, axis)

    def broadcast_to(self, shape: tuple[int, ...]) -> Tensor:
        return F.broadcast_to(self, shape)

    def argmax(self, axis: Any = None) -> Tensor:
        return Tensor(self.data.argmax(axis=axis))


def _raw(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


# -------------------------------------------------------------------- constructors
def _nested_to_host(data: Any) -> Any:
    """``data`` with every Tensor and device (CuPy) array inside nested lists and tuples
    replaced by a NumPy copy, so NumPy can stack them (CuPy refuses implicit conversion)."""
    if isinstance(data, (list, tuple)):
        return [_nested_to_host(x) for x in data]
    if isinstance(data, Tensor):
        data = data.data
    return backend.to_numpy(data) if _is_array(data) else data


def _host_array(data: Any) -> np.ndarray:
    """A NumPy array from a Python scalar or (nested) list. Lists may hold Tensors and 0-d or
    larger device arrays (``[loss_a, loss_b]`` on the GPU): those are copied to the host one
    by one, only when NumPy alone cannot read the list."""
    try:
        a = np.asarray(data)
    except TypeError:  # a CuPy array inside: its __array__ refuses implicit host conversion
        a = None
    except ValueError as e:  # ragged nested lists
        raise ValueError(f"tensor: cannot make a rectangular array from the data ({e})") from None
    if (a is None or a.dtype.kind == "O") and isinstance(data, (list, tuple)):
        try:
            a = np.asarray(_nested_to_host(data))
        except ValueError as e:
            raise ValueError(
                f"tensor: cannot make a rectangular array from the data ({e})"
            ) from None
    if a is None:
        raise TypeError(f"tensor: cannot convert a {type(data).__name__} to an array")
    return a


def tensor(data: Any, requires_grad: bool = False, device: Any = None, dtype: Any = None) -> Tensor:
    """Make a leaf Tensor from a list, scalar or array.

    Python floats become the default dtype (float32); arrays keep their dtype (float64 stays
    float64) unless ``dtype`` is given. ``device`` defaults to the array's own device for
    arrays, else to the default device. A list may hold Tensors or device arrays (e.g. 0-d
    losses on the GPU): ``mt.tensor([a, b])`` stacks them on ``device`` (default: the default
    device, as a list has no device of its own). Strings, Python objects and None raise a
    TypeError naming the dtype.
    """
    if isinstance(data, Tensor):
        data = data.data
    if _is_array(data) or isinstance(data, np.generic):
        src = data
        natural = data.dtype  # keeps float64 (and ints) when given
    else:
        src = _host_array(data)
        natural = backend.get_default_dtype() if src.dtype.kind == "f" else src.dtype
    _check_numeric(src.dtype, "tensor")
    dt = natural if dtype is None else np.dtype(dtype)
    _check_numeric(dt, "tensor")
    if device is None and _is_array(data):
        dev = backend.device_of(data)
    else:
        dev = backend.as_device(device)
    arr = dev.xp.asarray(backend.to_numpy(src) if dev.type == "cpu" else src, dtype=dt)
    if arr is data:
        arr = arr.copy()  # a new leaf owns its data
    return Tensor(arr, requires_grad=requires_grad)


def as_tensor(x: Any, like: Tensor | None = None) -> Tensor:
    """Wrap an input of an op: Tensors pass through; arrays are wrapped (no grad); Python
    scalars take the dtype and device of ``like`` so ``x * 0.5`` keeps float32.

    A scalar made here is a 0-d array on ``like``'s device: on a GPU, an allocation and a
    host-to-device copy per call. The operators and the element-wise wrappers (``x * 0.5``,
    ``F.add``, ``F.where``, ...) therefore keep a number as a host scalar for floating
    tensors (``functional.elementwise.WithScalar``) and never get here with one; this is the
    path of a Function called with a number directly and of integer tensors."""
    if isinstance(x, Tensor):
        return x
    if _is_array(x):
        return Tensor(x)
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(f"an op's operand must be a Tensor, an array or a number, got "
                        f"{type(x).__name__} {x!r}")
    if like is not None:
        data = like.data
        dtype = data.dtype if data.dtype.kind == "f" else None
        # _from_op skips __init__'s checks: asarray just made a valid array (x * 0.5 is common)
        return Tensor._from_op(backend.get_array_module(data).asarray(x, dtype=dtype), False)
    return tensor(x)


def _shape(shape: Any) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def zeros(*shape: Any, device: Any = None, dtype: Any = None, requires_grad: bool = False
          ) -> Tensor:
    dev = backend.as_device(device)
    data = dev.xp.zeros(_shape(shape), dtype=dtype or backend.get_default_dtype())
    return Tensor(data, requires_grad=requires_grad)


def ones(*shape: Any, device: Any = None, dtype: Any = None, requires_grad: bool = False
         ) -> Tensor:
    dev = backend.as_device(device)
    data = dev.xp.ones(_shape(shape), dtype=dtype or backend.get_default_dtype())
    return Tensor(data, requires_grad=requires_grad)


def zeros_like(x: Tensor, requires_grad: bool = False) -> Tensor:
    return Tensor(backend.get_array_module(x.data).zeros_like(x.data), requires_grad)


def ones_like(x: Tensor, requires_grad: bool = False) -> Tensor:
    return Tensor(backend.get_array_module(x.data).ones_like(x.data), requires_grad)


def randn(*shape: Any, rng: Any = None, device: Any = None, dtype: Any = None,
          requires_grad: bool = False) -> Tensor:
    """Standard-normal samples. ``rng``: a NumPy Generator (drawn on the host, then moved) or
    the device's own generator; default ``backend.default_rng(device)``."""
    dev = backend.as_device(device)
    dt = np.dtype(dtype or backend.get_default_dtype())
    gen = rng if rng is not None else backend.default_rng(dev)
    data = gen.standard_normal(_shape(shape)).astype(dt)
    return Tensor(backend.to_device(data, dev), requires_grad=requires_grad)
