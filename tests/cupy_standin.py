"""A strict CuPy stand-in for the test suite: NumPy underneath, CuPy's rules on top.

Written for this project's tests and never imported by the package itself. The backend loads
it only when asked (``MINITRANSFORMER_CUPY_STANDIN=tests.cupy_standin``, or pytest's
``--cupy-standin``), and never when a real CuPy with a GPU imports. Its arrays are
``ndarray`` objects wrapping a NumPy array; the backend recognises them as device arrays by
their module name (``cupy``), as it does CuPy's.

What it imitates (where the package can go wrong on a GPU):

- **No implicit host conversion.** ``np.asarray(x)``, ``np.array([x, x])`` and NumPy calls
  on a device array raise CuPy's TypeError; ``x.get()`` and ``asnumpy(x)`` are the only ways
  to the host.
- **No NumPy operands.** Module functions, ufuncs and array operators refuse NumPy arrays as
  CuPy does (TypeError); Python and NumPy scalars are accepted. ``array``/``asarray``
  copy host data to the device; index arrays and assigned values may be NumPy arrays (CuPy
  copies them).
- **Reductions and indexing return 0-d device arrays**, never NumPy scalars.
- **``random``** has only what ``cupy.random`` has: ``default_rng`` gives a ``Generator``
  with CuPy's methods (no ``permutation``, ``choice``, ``shuffle``, ``permuted``, ``normal``).
- **Device-to-host transfers are counted**: ``.get()``, ``.item()``, ``.tolist()``,
  ``float()``, ``int()``, ``bool()``, ``complex()``, ``operator.index()``, printing
  (``repr``/``str``/``format``) and ``asnumpy``. Read with ``transfers()`` /
  ``transfer_counts()``, reset with ``reset_transfers()``.
- ``cuda.runtime.getDeviceCount()`` (1), ``getDeviceProperties``,
  ``cuda.get_current_stream().synchronize()``, ``cupyx.scipy.special.erf`` and
  ``cupyx.scatter_add`` as the backend uses them.

What it cannot imitate:

- **Kernels**: every op runs NumPy's code, so CuPy-only bugs (kernel compilation, missing
  dtype support in a CuPy routine, CuPy functions NumPy has and CuPy lacks) go unseen.
- **Atomics and reduction order**: ``scatter_add`` and sums are NumPy's, deterministic and in
  NumPy's order; float results on a GPU differ in the last bits.
- **Index wraparound**: CuPy wraps an out-of-range index around silently; here NumPy raises
  IndexError, so a missing bounds check is not caught.
- **Writable broadcast views**: CuPy's ``broadcast_to`` gives a writable view, NumPy's a
  read-only one; code that writes into one fails here and corrupts data on a GPU.
- **Asynchrony and speed**: nothing is asynchronous and nothing is faster; only the number of
  host transfers says something about GPU cost. Host-to-device copies are not counted.
- **Random streams**: the numbers come from NumPy's generators, not cuRAND's, so a seed gives
  other values than on a GPU.
"""

from __future__ import annotations

import numbers
import types
from collections import Counter
from typing import Any

import numpy as np

IS_STANDIN = True  # the backend looks for this to find ``cupyx`` here
__version__ = "13.0.0+standin"

_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. "
             "Please use `.get()` to construct a NumPy array explicitly.")

# --------------------------------------------------------------------------------------------
# The transfer counter
# --------------------------------------------------------------------------------------------
_transfers: Counter = Counter()


def _count(kind: str) -> None:
    _transfers[kind] += 1


def transfers() -> int:
    """Device-to-host transfers since the last ``reset_transfers()``."""
    return sum(_transfers.values())


def transfer_counts() -> dict[str, int]:
    """The transfers by kind (``"get"``, ``"item"``, ``"float"``, ``"bool"``, ...)."""
    return dict(_transfers)


def reset_transfers() -> None:
    """Set the transfer counter to zero."""
    _transfers.clear()


# --------------------------------------------------------------------------------------------
# Wrapping and unwrapping
# --------------------------------------------------------------------------------------------
def _refuse_host(a: Any, where: str) -> None:
    raise TypeError(f"Unsupported type {type(a)} ({where}: a NumPy array where CuPy needs a "
                    f"cupy.ndarray; move it with cupy.asarray first)")


def _unwrap(obj: Any, where: str) -> Any:
    """Device arrays become their NumPy arrays; NumPy arrays are refused; containers are
    walked."""
    if isinstance(obj, ndarray):
        return obj._a
    if isinstance(obj, np.ndarray):
        _refuse_host(obj, where)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(o, where) for o in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v, where) for k, v in obj.items()}
    return obj


def _unwrap_host_ok(obj: Any) -> Any:
    """As ``_unwrap`` but NumPy arrays pass (indices, assigned values, host data)."""
    if isinstance(obj, ndarray):
        return obj._a
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap_host_ok(o) for o in obj)
    return obj


def _wrap(obj: Any, outs: dict[int, ndarray] | None = None) -> Any:
    """NumPy arrays and scalars become device arrays (the same object for ``out=``)."""
    if isinstance(obj, np.ndarray):
        if outs and id(obj) in outs:
            return outs[id(obj)]
        return ndarray._from(obj)
    if isinstance(obj, np.generic):
        return ndarray._from(np.asarray(obj))
    if isinstance(obj, tuple):
        return tuple(_wrap(o, outs) for o in obj)
    if isinstance(obj, list):
        return [_wrap(o, outs) for o in obj]
    return obj


def _call(func: Any, args: tuple, kwargs: dict, where: str) -> Any:
    outs = None
    out = kwargs.get("out")
    if out is not None:
        out_t = out if isinstance(out, tuple) else (out,)
        outs = {id(o._a): o for o in out_t if isinstance(o, ndarray)}
    result = func(*_unwrap(args, where), **_unwrap(kwargs, where))
    return _wrap(result, outs)


_SCALARS = (numbers.Number, np.generic, bool)


# --------------------------------------------------------------------------------------------
# The array
# --------------------------------------------------------------------------------------------
_METHODS = frozenset("""
all any argmax argmin argpartition argsort astype clip conj conjugate copy cumprod cumsum
diagonal dot fill flatten max mean min nonzero partition prod put ravel repeat reshape round
sort squeeze std sum swapaxes take trace transpose var view
""".split())


class ndarray:  # noqa: N801 - CuPy's name
    """A device array: a NumPy array that refuses to be read on the host implicitly."""

    __slots__ = ("_a",)
    __hash__ = None  # type: ignore[assignment]  # unhashable, as CuPy's
    __array_priority__ = 100

    def __init__(self, shape: Any, dtype: Any = float, order: str = "C"):
        self._a = np.empty(shape, dtype=dtype, order=order)

    @classmethod
    def _from(cls, a: np.ndarray) -> ndarray:
        new = object.__new__(cls)
        new._a = a
        return new

    # --- refused: implicit conversion -------------------------------------------------
    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TypeError(_IMPLICIT)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        for x in inputs:
            if not isinstance(x, (ndarray, *_SCALARS)):
                raise TypeError(f"Unsupported type {type(x)} (operand of {ufunc.__name__}: "
                                f"CuPy's ufuncs take cupy.ndarray or scalars)")
        return _call(getattr(ufunc, method), inputs, kwargs, f"numpy.{ufunc.__name__}")

    def __array_function__(self, func: Any, types_: Any, args: tuple, kwargs: dict) -> Any:
        return _call(func, args, kwargs, f"numpy.{func.__name__}")

    # --- attributes ----------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    dtype = property(lambda self: self._a.dtype)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray._from(self._a.T))
    real = property(lambda self: ndarray._from(self._a.real))
    imag = property(lambda self: ndarray._from(self._a.imag))
    mT = property(lambda self: ndarray._from(np.swapaxes(self._a, -1, -2)))

    @property
    def device(self) -> Any:
        return cuda.Device(0)

    def __getattr__(self, name: str) -> Any:
        if name not in _METHODS:
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r}")
        method = getattr(self._a, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return _call(method, args, kwargs, f"cupy.ndarray.{name}")

        return call

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self):
        for i in range(len(self._a)):
            yield self[i]

    def __getitem__(self, key: Any) -> ndarray:
        return _wrap(self._a[_unwrap_host_ok(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._a[_unwrap_host_ok(key)] = _unwrap_host_ok(value)

    def __copy__(self) -> ndarray:
        return ndarray._from(self._a.copy())

    def __deepcopy__(self, memo: dict) -> ndarray:
        return ndarray._from(self._a.copy())

    def __reduce__(self):
        raise TypeError("the CuPy stand-in's arrays are not pickled")

    # --- the ways to the host (counted) -------------------------------------------------
    def get(self, stream: Any = None, order: str = "C", out: Any = None) -> np.ndarray:
        """Copy to the host: a NumPy array (counted as one transfer)."""
        _count("get")
        if out is not None:
            out[...] = self._a
            return out
        return np.array(self._a, order=order)

    def set(self, arr: np.ndarray, stream: Any = None) -> None:
        """Copy host data into this array (host to device: not counted)."""
        self._a[...] = np.asarray(arr)

    def item(self) -> Any:
        _count("item")
        return self._a.item()

    def tolist(self) -> Any:
        _count("tolist")
        return self._a.tolist()

    def tobytes(self, order: str = "C") -> bytes:
        _count("tobytes")
        return self._a.tobytes(order)

    def __float__(self) -> float:
        _count("float")
        return float(self._a)

    def __int__(self) -> int:
        _count("int")
        return int(self._a)

    def __complex__(self) -> complex:
        _count("complex")
        return complex(self._a)

    def __index__(self) -> int:
        _count("index")
        return self._a.__index__()

    def __bool__(self) -> bool:
        _count("bool")
        return bool(self._a)

    def __repr__(self) -> str:
        _count("print")
        return repr(self._a)

    def __str__(self) -> str:
        _count("print")
        return str(self._a)

    def __format__(self, spec: str) -> str:
        _count("print")
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)


def _defers(other: Any) -> bool:
    """True for operands that opt out of ufuncs (``__array_ufunc__ = None``, as
    ``mt.Tensor``): CuPy's operators return NotImplemented so that Python asks the other
    operand's reflected method."""
    return getattr(type(other), "__array_ufunc__", False) is None


def _binary(ufunc: Any, reflected: bool = False):
    if reflected:
        def op(self, other):
            return NotImplemented if _defers(other) else ufunc(other, self)
    else:
        def op(self, other):
            return NotImplemented if _defers(other) else ufunc(self, other)
    return op


def _inplace(ufunc: Any):
    def op(self, other):
        if _defers(other):
            return NotImplemented
        ufunc(self, other, out=self)
        return self
    return op


for _name, _uf in [("add", np.add), ("sub", np.subtract), ("mul", np.multiply),
                   ("truediv", np.true_divide), ("floordiv", np.floor_divide),
                   ("mod", np.remainder), ("pow", np.power), ("matmul", np.matmul),
                   ("and", np.bitwise_and), ("or", np.bitwise_or), ("xor", np.bitwise_xor),
                   ("lshift", np.left_shift), ("rshift", np.right_shift)]:
    setattr(ndarray, f"__{_name}__", _binary(_uf))
    setattr(ndarray, f"__r{_name}__", _binary(_uf, reflected=True))
    setattr(ndarray, f"__i{_name}__", _inplace(_uf))
for _name, _uf in [("lt", np.less), ("le", np.less_equal), ("gt", np.greater),
                   ("ge", np.greater_equal), ("eq", np.equal), ("ne", np.not_equal)]:
    setattr(ndarray, f"__{_name}__", _binary(_uf))
for _name, _uf in [("neg", np.negative), ("pos", np.positive), ("abs", np.absolute),
                   ("invert", np.invert)]:
    setattr(ndarray, f"__{_name}__", lambda self, _uf=_uf: _uf(self))

ndarray.__module__ = "cupy"  # the backend tells device arrays by their module name


# --------------------------------------------------------------------------------------------
# Module functions
# --------------------------------------------------------------------------------------------
def array(obj: Any, dtype: Any = None, copy: bool = True, order: str = "K",
          ndmin: int = 0) -> ndarray:
    """A device array from host data, a device array, or nested lists of either."""
    return ndarray._from(np.array(_unwrap_host_ok(obj), dtype=dtype, copy=True, order=order,
                                  ndmin=ndmin))


def asarray(a: Any, dtype: Any = None, order: Any = None) -> ndarray:
    """``a`` on the device: the same array when it already is one with that dtype."""
    if isinstance(a, ndarray) and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    host = _unwrap_host_ok(a)
    if isinstance(a, ndarray):
        return ndarray._from(np.asarray(host, dtype=dtype, order=order))
    return ndarray._from(np.array(host, dtype=dtype, order=order or "K"))


asanyarray = asarray


def asnumpy(a: Any, stream: Any = None, order: str = "C", out: Any = None) -> np.ndarray:
    """Copy a device array to the host (counted); host data is returned as a NumPy array."""
    if isinstance(a, ndarray):
        return a.get(order=order, out=out)
    return np.asarray(a, order=order)


def get_array_module(*args: Any) -> Any:
    import sys

    for a in args:
        if isinstance(a, ndarray):
            return sys.modules[__name__]
    return np


def _host_creation(func: Any):
    def create(*args: Any, **kwargs: Any) -> Any:
        return _wrap(func(*args, **kwargs))

    create.__name__ = func.__name__
    return create


_CREATION = {name: _host_creation(getattr(np, name)) for name in (
    "zeros", "ones", "empty", "full", "arange", "linspace", "logspace", "eye", "identity",
    "tri")}
_PASS_THROUGH = {"dtype", "finfo", "iinfo", "can_cast", "promote_types", "isscalar",
                 "issubdtype", "ndindex", "errstate"}


def _function(func: Any, name: str) -> Any:
    def device_function(*args: Any, **kwargs: Any) -> Any:
        return _call(func, args, kwargs, f"cupy.{name}")

    device_function.__name__ = name
    device_function.__doc__ = f"``numpy.{name}`` on device arrays (NumPy arrays refused)."
    return device_function


def __getattr__(name: str) -> Any:
    if name in _CREATION:
        return _CREATION[name]
    if name.startswith("_"):
        raise AttributeError(f"module 'cupy' has no attribute {name!r}")
    try:
        obj = getattr(np, name)
    except AttributeError:
        raise AttributeError(f"module 'cupy' has no attribute {name!r}") from None
    if name in _PASS_THROUGH or isinstance(obj, type) or not callable(obj):
        return obj  # dtypes, constants (pi, inf, newaxis), finfo
    return _function(obj, name)


class _Namespace(types.SimpleNamespace):
    """``cupy.linalg`` / ``cupy.fft``: NumPy's functions on device arrays."""

    def __init__(self, np_module: Any, name: str):
        super().__init__()
        object.__setattr__(self, "_np", np_module)
        object.__setattr__(self, "_name", name)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _function(getattr(self._np, name), f"{self._name}.{name}")


linalg = _Namespace(np.linalg, "linalg")
fft = _Namespace(np.fft, "fft")


# --------------------------------------------------------------------------------------------
# random: only what cupy.random has
# --------------------------------------------------------------------------------------------
class Generator:
    """``cupy.random.Generator``: CuPy's methods only (no permutation, choice, shuffle,
    permuted, normal); NumPy's numbers."""

    _METHODS = frozenset("""beta binomial chisquare dirichlet exponential f gamma geometric
        hypergeometric integers logseries poisson power random standard_exponential
        standard_gamma standard_normal uniform""".split())

    def __init__(self, seed: Any = None):
        self._g = np.random.default_rng(seed)

    def __getattr__(self, name: str) -> Any:
        if name not in Generator._METHODS:
            raise AttributeError(f"'cupy.random._generator_api.Generator' object has no "
                                 f"attribute {name!r}")
        method = getattr(self._g, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return _call(method, args, kwargs, f"cupy.random.Generator.{name}")

        return call


Generator.__module__ = "cupy.random._generator_api"

_legacy = np.random.RandomState()


def _legacy_function(name: str) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        return _call(getattr(_legacy, name), args, kwargs, f"cupy.random.{name}")

    call.__name__ = name
    return call


random = types.SimpleNamespace(
    default_rng=lambda seed=None: Generator(seed),
    Generator=Generator,
    seed=lambda seed=None: _legacy.seed(seed),
    **{name: _legacy_function(name) for name in (
        "rand", "randn", "randint", "random_sample", "normal", "uniform", "standard_normal",
        "choice", "permutation", "shuffle")},
)
random.random = _legacy_function("random_sample")


# --------------------------------------------------------------------------------------------
# cuda, cupyx
# --------------------------------------------------------------------------------------------
class _Stream:
    def synchronize(self) -> None:
        """Nothing to wait for: the stand-in runs synchronously."""


class _Device:
    def __init__(self, device: int = 0):
        self.id = int(device)

    def synchronize(self) -> None:
        pass

    def __enter__(self) -> _Device:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


class _MemoryPool:
    def used_bytes(self) -> int:
        return 0

    def total_bytes(self) -> int:
        return 0

    def free_all_blocks(self) -> None:
        pass


_POOL = _MemoryPool()
_STREAM = _Stream()

cuda = types.SimpleNamespace(
    runtime=types.SimpleNamespace(
        getDeviceCount=lambda: 1,
        getDeviceProperties=lambda i: {"name": b"CuPy stand-in (NumPy)",
                                       "totalGlobalMem": 0},
    ),
    get_current_stream=lambda: _STREAM,
    Stream=types.SimpleNamespace(null=_STREAM),
    Device=_Device,
)


def get_default_memory_pool() -> _MemoryPool:
    return _POOL


def _scatter_add(a: ndarray, indices: Any, values: Any) -> None:
    if not isinstance(a, ndarray):
        _refuse_host(a, "cupyx.scatter_add target")
    values = values if isinstance(values, _SCALARS) else _unwrap(values, "cupyx.scatter_add")
    np.add.at(a._a, _unwrap(indices, "cupyx.scatter_add"), values)


def _erf(x: Any) -> ndarray:
    from scipy.special import erf

    if not isinstance(x, ndarray):
        raise TypeError(f"Unsupported type {type(x)} (cupyx.scipy.special.erf takes a "
                        f"cupy.ndarray)")
    return _call(erf, (x,), {}, "cupyx.scipy.special.erf")


cupyx = types.SimpleNamespace(
    scatter_add=_scatter_add,
    scipy=types.SimpleNamespace(special=types.SimpleNamespace(erf=_erf)),
)
