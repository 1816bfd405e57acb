"""The array backend: NumPy on the CPU, CuPy on an NVIDIA GPU, one code path.

This is the only module that imports ``cupy``. Every op takes its array module from its
inputs (``get_array_module``), so the same source runs on both devices.

CuPy is imported lazily, the first time a GPU is asked for, so ``import minitransformer``
stays light and works on machines without CUDA.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = [
    "Device",
    "as_device",
    "cuda_available",
    "default_rng",
    "device_of",
    "erf",
    "get_array_module",
    "get_default_device",
    "get_default_dtype",
    "keep_freed_memory",
    "manual_seed",
    "num_threads",
    "pick_device",
    "scatter_add",
    "set_default_device",
    "set_default_dtype",
    "set_num_threads",
    "to_device",
    "to_numpy",
]

_CUPY_INSTALL_HINT = (
    'install CuPy with `pip install -e ".[cuda12]"` (CUDA 12) or `pip install -e ".[cuda13]"` '
    "(CUDA 13)"
)


# --------------------------------------------------------------------------------------------
# CuPy, imported on first use
# --------------------------------------------------------------------------------------------
class _CupyMissing:
    """Stands in for the ``cupy`` module when it cannot be imported.

    ``xp is cupy()`` stays a valid test on every machine; touching an attribute explains what
    is missing instead of failing with an AttributeError.
    """

    def __init__(self, reason: str):
        self.reason = reason

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # protocol probes (copy, pickle, hasattr) get the usual error
            raise AttributeError(name)
        raise RuntimeError(f"CuPy is not available ({self.reason}); {_CUPY_INSTALL_HINT}")

    def __bool__(self) -> bool:
        return False


_cupy_module: Any = None

STANDIN_VARIABLE = "MINITRANSFORMER_CUPY_STANDIN"


def _import_real_cupy() -> Any:
    try:
        import cupy as _cp  # the one place cupy is imported

        return _cp
    except Exception as e:  # ImportError, or a CUDA library that fails to load
        return _CupyMissing(f"{type(e).__name__}: {e}")


def _import_cupy() -> Any:
    """The real ``cupy``, or, for tests only, the module named by
    ``MINITRANSFORMER_CUPY_STANDIN`` (e.g. ``tests.cupy_standin``: a strict CuPy imitation on
    NumPy) when no real CuPy with a GPU imports. A real GPU always wins, with a warning."""
    real = _import_real_cupy()
    standin = os.environ.get(STANDIN_VARIABLE, "").strip()
    if not standin:
        return real
    if real:
        try:
            gpus = real.cuda.runtime.getDeviceCount()
        except Exception:
            gpus = 0
        if gpus > 0:
            import warnings

            warnings.warn(f"{STANDIN_VARIABLE}={standin!r} is ignored: a real CuPy "
                          f"{real.__version__} imports and sees {gpus} GPU(s)", RuntimeWarning,
                          stacklevel=3)
            return real
    import importlib

    try:
        module = importlib.import_module(standin)
    except Exception as e:
        raise ImportError(f"{STANDIN_VARIABLE}={standin!r}: the CuPy stand-in module does not "
                          f"import ({type(e).__name__}: {e})") from e
    if not getattr(module, "IS_STANDIN", False):
        raise ImportError(f"{STANDIN_VARIABLE}={standin!r}: module {module.__name__!r} is not "
                          f"a CuPy stand-in (it has no IS_STANDIN = True)")
    return module


def cupy() -> Any:
    """Return the ``cupy`` module, or a falsy ``_CupyMissing`` stand-in if it won't import.

    In tests, ``MINITRANSFORMER_CUPY_STANDIN`` may name a CuPy stand-in module to use when no
    real CuPy with a GPU is there (see ``_import_cupy``)."""
    global _cupy_module
    if _cupy_module is None:
        _cupy_module = _import_cupy()
    return _cupy_module


def _standin_cupyx() -> Any:
    """The stand-in's ``cupyx`` when the CuPy in use is a test stand-in, else None."""
    cp = cupy()
    return cp.cupyx if getattr(cp, "IS_STANDIN", False) else None


def _is_cupy_array(a: Any) -> bool:
    # Checked by type name so that a NumPy-only run never imports CuPy.
    return type(a).__module__.startswith("cupy")


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    cp = cupy()
    if not cp:
        return False
    try:
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _gpu_missing_reason() -> str | None:
    cp = cupy()
    if not cp:
        return f"CuPy is not installed or failed to import ({cp.reason}); {_CUPY_INSTALL_HINT}"
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except Exception as e:
        return f"CuPy is installed but found no usable CUDA driver or GPU ({type(e).__name__}: {e})"
    if n == 0:
        return "CuPy is installed but no CUDA GPU is visible (getDeviceCount() == 0)"
    return None


def pick_device() -> tuple[str, str]:
    """The device a notebook or script should use, and why: ``(name, reason)``.

    ``MINITRANSFORMER_DEVICE`` wins when it is set; otherwise ``"cuda"`` when CuPy imports
    and sees a GPU, else ``"cpu"`` with the reason the GPU is not used (CuPy missing, no
    driver, no visible device), as ``Device("cuda")`` would report it::

        device, why = mt.pick_device()
        print(f"device: {device} ({why})")
    """
    env = os.environ.get("MINITRANSFORMER_DEVICE", "").strip()
    if env:
        return as_device(env).type, f"MINITRANSFORMER_DEVICE={env!r}"
    reason = _gpu_missing_reason()
    if reason is None:
        cp = cupy()
        props = cp.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return "cuda", f"CuPy {cp.__version__} sees a GPU: {name}"
    return "cpu", f"no GPU: {reason}"


# --------------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------------
class Device:
    """A device: ``Device("cpu")`` or ``Device("cuda")`` (``"gpu"`` is an alias of ``"cuda"``).

    ``device.xp`` is the array module that computes on it: ``numpy`` or ``cupy``.
    Constructing a CUDA device checks that CuPy and a GPU are really there.
    """

    __slots__ = ("type",)

    def __init__(self, spec: str | Device = "cpu"):
        if isinstance(spec, Device):
            self.type = spec.type
            return
        if not isinstance(spec, str):
            raise TypeError(f"device must be a string like 'cpu' or 'cuda', got {spec!r}")
        name = spec.strip().lower()
        if name in ("gpu", "cuda", "cuda:0", "gpu:0"):
            reason = _gpu_missing_reason()
            if reason is not None:
                raise RuntimeError(f"device {spec!r} was asked for, but {reason}")
            self.type = "cuda"
        elif name == "cpu":
            self.type = "cpu"
        else:
            raise ValueError(f"unknown device {spec!r}; expected 'cpu', 'cuda' or 'gpu'")

    @property
    def xp(self) -> Any:
        return np if self.type == "cpu" else cupy()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = as_device(other)
            except (ValueError, RuntimeError):
                return False
        return isinstance(other, Device) and other.type == self.type

    def __hash__(self) -> int:
        return hash(self.type)

    def __repr__(self) -> str:
        return f"device({self.type!r})"

    def __str__(self) -> str:
        return self.type


_CPU = Device("cpu")
_cuda_device: Device | None = None


def as_device(spec: str | Device | None) -> Device:
    """Parse a device spec ("cpu", "cuda", "gpu" or a Device); ``None`` means the default."""
    global _cuda_device
    if spec is None:
        return get_default_device()
    if isinstance(spec, Device):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"device must be a string like 'cpu' or 'cuda', got {spec!r}")
    name = spec.strip().lower()
    if name == "cpu":
        return _CPU
    if _cuda_device is None or name not in ("gpu", "cuda", "cuda:0", "gpu:0"):
        dev = Device(spec)  # validates the name, and CuPy + a GPU for "cuda"
        if dev.type == "cuda":
            _cuda_device = dev
        return dev
    return _cuda_device


def device_of(a: Any) -> Device:
    """The device an array lives on."""
    return as_device("cuda") if _is_cupy_array(a) else _CPU


def get_array_module(*arrays: Any) -> Any:
    """``numpy`` or ``cupy``, whichever owns the arrays (NumPy when none is a CuPy array)."""
    for a in arrays:
        if _is_cupy_array(a):
            return cupy()
    return np


def to_numpy(a: Any) -> np.ndarray:
    """A NumPy array (a copy from the GPU, the array itself on the CPU)."""
    if _is_cupy_array(a):
        return a.get()
    return np.asarray(a)


def to_device(a: Any, device: str | Device | None) -> Any:
    """Move an array to a device (no copy when it is already there)."""
    dev = as_device(device)
    if dev.type == "cpu":
        return to_numpy(a)
    cp = cupy()
    return cp.asarray(a)


# --------------------------------------------------------------------------------------------
# Defaults: device, dtype, random generators
# --------------------------------------------------------------------------------------------
_default_device: Device | None = None
_default_dtype: np.dtype = np.dtype(np.float32)


def get_default_device() -> Device:
    """The device new tensors and parameters go to: ``set_default_device`` or the
    ``MINITRANSFORMER_DEVICE`` environment variable, else the CPU."""
    global _default_device
    if _default_device is None:
        env = os.environ.get("MINITRANSFORMER_DEVICE", "").strip()
        try:
            _default_device = as_device(env) if env else _CPU
        except (ValueError, RuntimeError) as e:
            raise type(e)(f"MINITRANSFORMER_DEVICE={env!r}: {e}") from None
    return _default_device


def set_default_device(device: str | Device | None) -> None:
    """Make ``device`` the default for new tensors and parameters ("cpu", "cuda" or "gpu").

    ``None`` forgets the choice: the default is read again from ``MINITRANSFORMER_DEVICE``."""
    global _default_device
    _default_device = None if device is None else as_device(device)


def get_default_dtype() -> np.dtype:
    """The floating dtype new tensors and parameters get (float32 unless changed)."""
    return _default_dtype


def set_default_dtype(dtype: Any) -> None:
    """The floating dtype new tensors and parameters get (float32 unless changed)."""
    global _default_dtype
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"the default dtype must be a floating dtype, got {dt}")
    _default_dtype = dt


_seed: int | None = None
_rngs: dict[str, Any] = {}


def manual_seed(seed: int) -> None:
    """Seed the default generators of every device (the same seed gives the same run)."""
    global _seed
    _seed = int(seed)
    _rngs.clear()


def default_rng(device: str | Device | None = None) -> Any:
    """The default random generator of a device: a ``numpy.random.Generator`` on the CPU, a
    ``cupy.random.Generator`` on the GPU. Seeded by ``manual_seed``."""
    dev = as_device(device)
    if dev.type not in _rngs:
        _rngs[dev.type] = dev.xp.random.default_rng(_seed)
    return _rngs[dev.type]


# --------------------------------------------------------------------------------------------
# CPU threads for the blocked element-wise kernels
# --------------------------------------------------------------------------------------------
_num_threads: int | None = None
_pool: Any = None  # concurrent.futures.ThreadPoolExecutor, made on first use


def _threads_from_environment() -> int:
    """MINITRANSFORMER_NUM_THREADS, else the BLAS/OpenMP thread variables (so one setting,
    ``OMP_NUM_THREADS=1``, pins the whole process), else the CPUs this process may use."""
    for var in ("MINITRANSFORMER_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value:
            try:
                n = int(value)
            except ValueError:
                raise ValueError(f"{var}={value!r} is not a whole number of threads") from None
            if n < 1:
                raise ValueError(f"{var}={value!r}: the thread count must be at least 1")
            return n
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def num_threads() -> int:
    """Threads the CPU kernels that work block by block (the fused softmax, layer norm and
    GELU) share their blocks among. NumPy releases the GIL inside its loops, so blocks run in
    parallel. BLAS matmuls use their own threads (``OPENBLAS_NUM_THREADS``)."""
    global _num_threads
    if _num_threads is None:
        _num_threads = _threads_from_environment()
    return _num_threads


def set_num_threads(n: int) -> None:
    """Set ``num_threads()`` (1 runs every block on the calling thread)."""
    global _num_threads, _pool
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"set_num_threads: needs a whole number >= 1, got {n!r}")
    if _pool is not None and n != _num_threads:
        _pool.shutdown(wait=True)
        _pool = None
    _num_threads = n


def cpu_pool() -> Any:
    """The worker threads behind ``num_threads()`` (the calling thread is one of them, so the
    pool has ``num_threads() - 1`` workers)."""
    global _pool
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor

        _pool = ThreadPoolExecutor(max_workers=max(1, num_threads() - 1),
                                   thread_name_prefix="minitransformer")
    return _pool


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory in the process: no ``mmap`` for blocks up to
    32 MiB (its maximum) and no trimming below 1 GiB. Returns False where it does not apply
    (not glibc).

    By default glibc maps each large array fresh and returns it to the OS when it is freed, so
    every training step page-faults its activations in again, zero-filled by the kernel. glibc
    raises its thresholds as it sees large frees, so a long run speeds up by itself over its
    first steps; this makes it fast from the first step. Measured on ``bench/vit_step.py``'s
    model (1 thread), three phases of training steps took 1.94, then 1.74, then 1.43 s per step
    with the default, and 1.36-1.48 s from the first with this. The cost: the process keeps its peak
    memory. The command line's ``train`` and ``demo`` call it; the library never does, since
    it changes the whole process."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # from <malloc.h>
    return bool(mallopt(M_MMAP_THRESHOLD, 32 * 2**20) and mallopt(M_TRIM_THRESHOLD, 2**30)
                and mallopt(M_TOP_PAD, 64 * 2**20))


# --------------------------------------------------------------------------------------------
# Special functions that NumPy lacks
# --------------------------------------------------------------------------------------------
def erf(x: Any) -> Any:
    """The error function on either device (SciPy on the CPU, cupyx on the GPU)."""
    if _is_cupy_array(x):
        standin = _standin_cupyx()
        if standin is not None:
            return standin.scipy.special.erf(x)
        import cupyx.scipy.special as cusp

        return cusp.erf(x)
    from scipy.special import erf as _erf

    return _erf(x)


def scatter_add(a: Any, indices: Any, values: Any) -> None:
    """``a[indices] += values`` in place, accumulating repeated indices (``np.add.at``)."""
    if _is_cupy_array(a):
        standin = _standin_cupyx()
        if standin is not None:
            standin.scatter_add(a, indices, values)
            return
        import cupyx

        cupyx.scatter_add(a, indices, values)
    else:
        np.add.at(a, indices, values)
