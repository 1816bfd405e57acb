"""The communication layer: the few collectives data-parallel training needs, over MPI.

A run on W processes ("ranks", numbered 0..W-1) gives each rank a shard of the global batch.
Most of training is local; the parts that must see the *global* batch talk through these
collectives:

==================  ===================================================  ===================
function            computes (on every rank)                             cost per call
==================  ===================================================  ===================
``all_reduce``      $y = \\sum_r x_r$ (``op="mean"``: $/W$)                ~2 n values moved
``all_gather``      $y = [x_0; x_1; \\dots; x_{W-1}]$ along axis 0         ~(W-1) n values in
``broadcast``       $y = x_{root}$                                         ~n values
``barrier``         nothing: returns once every rank has called it         one round trip
==================  ===================================================  ===================

(n: the size of one rank's array; MPI's ring/tree algorithms move about these amounts per
rank, plus a latency of a few microseconds per message on one machine.)

**Single process.** Without MPI (mpi4py absent, or a world of one), every collective is the
identity: ``all_reduce`` and ``all_gather`` return a copy of ``x``, ``broadcast`` a copy,
``barrier`` returns. So the cross-rank parts of the objectives run the same code in one
process and give the single-process values. ``import minitransformer`` never imports mpi4py:
it is imported the first time a collective (or ``init``) finds an MPI launch.

**Detection.** ``mpiexec -n W python ...`` sets the world size in the environment (MPICH's
``PMI_SIZE``/``PMI_RANK``, Open MPI's ``OMPI_COMM_WORLD_SIZE``/``OMPI_COMM_WORLD_RANK``,
MVAPICH's ``MV2_COMM_WORLD_SIZE``); when it says W > 1, mpi4py is imported and
``COMM_WORLD`` is used. ``init(backend="mpi")`` forces MPI, ``init(backend="none")`` forces a
single process. Launched with W > 1 but without mpi4py is an error (W independent copies of
one run writing the same files is never what was meant); install the ``dist`` extra.

**Tensors and autograd.** ``all_reduce`` and ``all_gather`` also take a ``Tensor`` and are
then differentiable, as ``torch.distributed.nn``'s: every rank's backward computes the
gradient of the *sum over ranks* of the ranks' losses with respect to its own input, so

- ``all_reduce``: $y = \\sum_r x_r$, backward $g_{x_r} = \\sum_{r'} g_{y,r'}$ (an all-reduce);
- ``all_gather``: backward sums the upstream gradients of all ranks and keeps this rank's
  rows (a reduce-scatter: open_clip's ``gather_features(gather_with_grad=True)``).

Data parallelism then *averages* the parameter gradients over ranks (``op="mean"``), which
turns "gradient of the sum of the W per-rank losses" into the gradient of their mean: the
gradient of one process on the global batch when each rank's loss is a mean over its shard.

**GPUs.** CuPy arrays go through the same functions. With a CUDA-aware MPI the device
buffers are passed to MPI directly (after synchronising the current stream); otherwise
(the default, and the case of the ``mpich`` wheel from the package index, which is not
CUDA-aware) each collective stages through host memory: a device-to-host copy, the MPI call
on NumPy buffers, a host-to-device copy. Say which with ``init(cuda_aware=True)`` or
``MINITRANSFORMER_MPI_CUDA_AWARE=1``; ``cuda_aware()`` reports the choice. NCCL (through
``cupy.cuda.nccl``) is faster on several GPUs but is not wired here. What has run where:
2 ranks on one machine's CPUs (MPICH from the ``mpich`` wheel), with NumPy arrays and with
the CuPy stand-in of the test suite (the host-staging path); neither a real GPU nor the
CUDA-aware path has run yet.

**Errors.** An uncaught exception on one rank aborts every rank (``MPI_Abort``, as
``python -m mpi4py`` does) instead of leaving the others waiting. A collective must be
called by every rank, in the same order, with arrays of the same dtype and (for
``all_reduce``) shape; otherwise MPI hangs or reads garbage. So
``all_reduce`` and ``all_gather`` first exchange a small description of every rank's array
(one extra tiny all-gather; ``check=False`` skips it when the caller knows the shapes agree,
e.g. fixed gradient buckets) and *every* rank raises the same ``ValueError`` on a mismatch.
Work that only some ranks do (evaluation on rank 0) runs inside ``with rank_local():``, where
the collectives act on this rank's data alone.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from . import backend
from .autograd import Function, Tensor

__all__ = [
    "all_gather", "all_reduce", "average_gradients", "barrier", "broadcast", "broadcast_tensors",
    "cuda_aware", "gather_counts", "init", "is_distributed", "rank", "rank_if_initialized",
    "rank_local", "world_size",
]

# (size variable, rank variable) that MPI launchers set, in the order they are looked up.
LAUNCHER_VARIABLES = (
    ("PMI_SIZE", "PMI_RANK"),  # MPICH (hydra), Intel MPI
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),  # Open MPI
    ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK"),  # MVAPICH
)
CUDA_AWARE_VARIABLE = "MINITRANSFORMER_MPI_CUDA_AWARE"
DIST_EXTRA_HINT = 'install the dist extra: pip install -e ".[dist]" (mpi4py and mpich)'

_META_LEN = 34  # dtype code, ndim, up to 32 axis lengths: the description exchanged first
_MAX_NDIM = _META_LEN - 2


class _World:
    """Who we are: the communicator (None in a single process), rank, size, CUDA-awareness."""

    def __init__(self, comm: Any = None, cuda_aware: bool = False):
        self.comm = comm
        self.rank = 0 if comm is None else int(comm.Get_rank())
        self.size = 1 if comm is None else int(comm.Get_size())
        self.cuda_aware = bool(cuda_aware)


_world: _World | None = None
_local = threading.local()  # .depth > 0 inside `rank_local()`


def _launcher_size() -> int | None:
    """The world size an MPI launcher put in the environment, or None."""
    for size_var, _ in LAUNCHER_VARIABLES:
        value = os.environ.get(size_var)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                raise ValueError(
                    f"distributed: {size_var}={value!r} in the environment is not an integer"
                ) from None
    return None


def _env_cuda_aware() -> bool:
    return os.environ.get(CUDA_AWARE_VARIABLE, "").strip().lower() in ("1", "true", "yes")


def _mpi() -> Any:
    """mpi4py's MPI module, imported on demand (the only place it is imported)."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(f"distributed: MPI needs mpi4py; {DIST_EXTRA_HINT} ({e})") from e
    return MPI


def init(backend: str = "auto", *, cuda_aware: bool | None = None,
         comm: Any = None) -> None:
    """Choose the world explicitly (otherwise the first collective does, from the environment).

    ``backend``: ``"auto"`` (MPI when a launcher says W > 1, else a single process),
    ``"mpi"`` (mpi4py's ``COMM_WORLD``, or ``comm`` if given; a world of one is fine) or
    ``"none"`` (a single process whatever the environment says). ``cuda_aware``: pass CuPy
    buffers to MPI directly (True) or stage them through the host (False); default: the
    ``MINITRANSFORMER_MPI_CUDA_AWARE`` variable, else False. Calling ``init`` again replaces
    the choice (MPI itself is initialised once, by mpi4py, and finalised at exit).
    """
    global _world
    aware = _env_cuda_aware() if cuda_aware is None else bool(cuda_aware)
    if backend == "none":
        _world = _World(None, aware)
        return
    if backend == "auto":
        size = _launcher_size()
        if comm is None and (size is None or size <= 1):
            _world = _World(None, aware)
            return
        try:
            MPI = _mpi()
        except ImportError as e:
            raise ImportError(
                f"distributed: launched as one of {size} MPI processes, but mpi4py is not "
                f"installed: {DIST_EXTRA_HINT}"
            ) from e
    elif backend == "mpi":
        MPI = _mpi()
    else:
        raise ValueError(
            f"distributed.init: backend must be 'auto', 'mpi' or 'none', got {backend!r}"
        )
    _world = _World(comm if comm is not None else MPI.COMM_WORLD, aware)
    if _world.size > 1:
        _abort_on_uncaught_exception(_world.comm)


def _abort_on_uncaught_exception(comm: Any) -> None:
    """An uncaught exception on one rank would leave the others waiting in their next
    collective forever (and the failing one in MPI's finalisation): print it, then
    ``comm.Abort(1)``, which ends every rank, as ``python -m mpi4py`` does."""
    previous = sys.excepthook
    if getattr(previous, "_minitransformer_abort", False):
        return

    def hook(kind: Any, value: Any, tb: Any) -> None:
        previous(kind, value, tb)
        sys.stderr.flush()
        comm.Abort(1)

    hook._minitransformer_abort = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def _get() -> _World:
    if _world is None:
        init("auto")
    assert _world is not None
    return _world


def _active() -> _World | None:
    """The world to communicate in, or None when collectives are the identity."""
    w = _get()
    if w.comm is None or w.size == 1 or getattr(_local, "depth", 0) > 0:
        return None
    return w


def rank() -> int:
    """This process's rank, 0..W-1 (0 in a single process). No communication."""
    return _get().rank


def rank_if_initialized() -> int | None:
    """This process's rank if the world has been chosen (by ``init`` or a first collective,
    ``rank()`` or ``world_size()``), else None. Chooses nothing and never imports mpi4py: for
    code that must not start MPI, e.g. the command line deciding which rank prints an error
    that may come before any command chose the world (None there means one process)."""
    return None if _world is None else _world.rank


def world_size() -> int:
    """W, the number of processes (1 in a single process). No communication."""
    return _get().size


def is_distributed() -> bool:
    """True when collectives communicate: W > 1 and not inside ``rank_local()``."""
    return _active() is not None


def cuda_aware() -> bool:
    """True when CuPy buffers go to MPI directly; False when they are staged through host."""
    return _get().cuda_aware


@contextlib.contextmanager
def rank_local() -> Iterator[None]:
    """Inside, every collective acts on this rank's data alone (the identity), so code that
    only some ranks run (rank 0's evaluation, a single-process reference) cannot hang
    waiting for the others. ``rank()`` and ``world_size()`` are unchanged. Nests."""
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


# ------------------------------------------------------------------ raw-array collectives
def _is_device_array(x: Any) -> bool:
    return not isinstance(x, np.ndarray)


def _to_wire(x: Any, w: _World) -> Any:
    """The buffer MPI reads: a contiguous NumPy array, or the CuPy array itself with a
    CUDA-aware MPI (after the current stream has finished writing it)."""
    if _is_device_array(x):
        xp = backend.get_array_module(x)
        if w.cuda_aware:
            x = xp.ascontiguousarray(x).reshape(x.shape)  # (ascontiguousarray makes 0-d 1-d)
            xp.cuda.get_current_stream().synchronize()  # MPI reads memory, not the stream
            return x
        return np.ascontiguousarray(backend.to_numpy(x)).reshape(x.shape)  # staged: to host
    return np.ascontiguousarray(x).reshape(x.shape)


def _empty_like_wire(wire: Any, shape: tuple[int, ...]) -> Any:
    xp = backend.get_array_module(wire)
    return xp.empty(shape, dtype=wire.dtype)


def _from_wire(y: Any, like: Any, w: _World) -> Any:
    """Back on ``like``'s device (host -> device when staged)."""
    if _is_device_array(like) and not _is_device_array(y):
        return backend.to_device(y, backend.device_of(like))
    if _is_device_array(y) and w.cuda_aware:
        backend.get_array_module(y).cuda.get_current_stream().synchronize()
    return y


def _describe(x: Any) -> np.ndarray:
    if x.ndim > _MAX_NDIM:
        raise ValueError(f"distributed: arrays of more than {_MAX_NDIM} axes are not supported, "
                         f"got shape {tuple(x.shape)}")
    meta = np.full(_META_LEN, -1, dtype=np.int64)
    meta[0], meta[1] = ord(np.dtype(x.dtype).char), x.ndim
    meta[2:2 + x.ndim] = x.shape
    return meta


def _gather_meta(x: Any, w: _World) -> list[tuple[np.dtype, tuple[int, ...]]]:
    """(dtype, shape) of every rank's array: one all-gather of 34 integers."""
    meta = _describe(x)
    out = np.empty((w.size, _META_LEN), dtype=np.int64)
    w.comm.Allgather(meta, out)
    return [(_dtype_of(m), tuple(int(n) for n in m[2:2 + int(m[1])])) for m in out]


def _dtype_of(meta: np.ndarray) -> np.dtype:
    return np.dtype(chr(int(meta[0])))  # the dtype's one-character code


def _fmt(metas: list[tuple[np.dtype, tuple[int, ...]]]) -> str:
    return ", ".join(f"rank {r}: {dt} {shape}" for r, (dt, shape) in enumerate(metas))


def _check_dtype(x: Any, fn: str, kinds: str = "fiub") -> None:
    dt = np.dtype(x.dtype)
    if dt.kind not in kinds or dt.itemsize not in (1, 2, 4, 8):
        raise TypeError(f"distributed.{fn}: unsupported dtype {dt} (numbers"
                        f"{'' if 'b' in kinds else ', not bool'}, 1 to 8 bytes)")


def _op(op: str, fn: str) -> None:
    if op not in ("sum", "mean"):
        raise ValueError(f"distributed.{fn}: op must be 'sum' or 'mean', got {op!r}")


def _all_reduce_array(x: Any, op: str = "sum", check: bool = True) -> Any:
    w = _active()
    _check_dtype(x, "all_reduce", "fiu")
    if op == "mean" and np.dtype(x.dtype).kind != "f":
        raise TypeError(f"distributed.all_reduce: op='mean' needs a floating array, got "
                        f"{np.dtype(x.dtype)}")
    if w is None:
        return x.copy()
    if check:
        metas = _gather_meta(x, w)
        if len(set(metas)) > 1:
            raise ValueError(
                "distributed.all_reduce: every rank must give an array of the same dtype and "
                f"shape; got {_fmt(metas)}"
            )
    MPI = _mpi()
    send = _to_wire(x, w)
    recv = _empty_like_wire(send, send.shape)
    w.comm.Allreduce(send, recv, op=MPI.SUM)
    if op == "mean":
        recv /= w.size
    return _from_wire(recv, x, w)


def _all_gather_array(x: Any, check: bool = True) -> tuple[Any, list[int]]:
    """The concatenation along axis 0 and the first-axis length of every rank's array."""
    w = _active()
    _check_dtype(x, "all_gather")
    if x.ndim == 0:
        raise ValueError("distributed.all_gather: x must have at least one axis (gathered "
                         "along axis 0), got a 0-d array")
    if w is None:
        return x.copy(), [int(x.shape[0])]
    send = _to_wire(x, w)
    if check:
        metas = _gather_meta(x, w)
        tails = {(dt, shape[1:], len(shape)) for dt, shape in metas}
        if len(tails) > 1:
            raise ValueError(
                "distributed.all_gather: every rank must give an array of the same dtype and "
                f"the same shape after axis 0; got {_fmt(metas)}"
            )
        counts = [shape[0] for _, shape in metas]
    else:
        counts = [int(send.shape[0])] * w.size
    row = int(np.prod(send.shape[1:], dtype=np.int64))
    recv = _empty_like_wire(send, (sum(counts),) + tuple(send.shape[1:]))
    if len(set(counts)) == 1:
        w.comm.Allgather(send, recv)
    else:
        sizes = [c * row for c in counts]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64).tolist()
        w.comm.Allgatherv(send, [recv, (sizes, offsets)])
    return _from_wire(recv, x, w), counts


def _reduce_scatter_array(g: Any, counts: list[int]) -> Any:
    """$\\sum_r g_r$ (all ranks' (sum(counts), ...) arrays), this rank's rows only."""
    w = _active()
    if w is None:
        return g.copy()
    MPI = _mpi()
    send = _to_wire(g, w)
    row = int(np.prod(send.shape[1:], dtype=np.int64))
    recv = _empty_like_wire(send, (counts[w.rank],) + tuple(send.shape[1:]))
    w.comm.Reduce_scatter(send, recv, [c * row for c in counts], op=MPI.SUM)
    return _from_wire(recv, g, w)


# ------------------------------------------------------------------ differentiable versions
class _AllReduce(Function):
    """$y = \\sum_r x_r$ (or the mean); backward: $g_x = \\sum_r g_{y,r}$ (or /W): the gradient
    of the sum over ranks of their losses, as ``torch.distributed.nn.all_reduce``."""

    def __init__(self, op: str, check: bool = True):
        self.op, self.check = op, check

    def forward(self, x: Any) -> Any:
        return _all_reduce_array(x, self.op, self.check)

    def backward(self, gy: Any) -> Any:
        return _all_reduce_array(gy, self.op, check=False)


class _AllGather(Function):
    """$y = [x_0; \\dots; x_{W-1}]$; backward: every rank's upstream gradient summed, this
    rank's rows kept (a reduce-scatter), as ``torch.distributed.nn.all_gather``."""

    def forward(self, x: Any) -> Any:
        y, self.counts = _all_gather_array(x)
        return y

    def backward(self, gy: Any) -> Any:
        return _reduce_scatter_array(gy, self.counts)


# ------------------------------------------------------------------ public collectives
def all_reduce(x: Any, op: str = "sum", *, check: bool = True) -> Any:
    """$y = \\sum_{r=0}^{W-1} x_r$ on every rank (``op="mean"``: $y / W$, floating arrays only).

    ``x``: a NumPy or CuPy array (returns a new array on x's device; ``x`` is not changed),
    or a ``Tensor`` (returns a Tensor; differentiable: the backward all-reduces the upstream
    gradient, see the module docstring; in a single process the Tensor itself is returned).
    ``check``: first exchange every rank's dtype and shape and raise the same ``ValueError``
    on every rank when they differ (one extra all-gather of 34 integers).

    Cost: about 2 n values sent and received per rank (n = x.size) plus the latency of
    log2(W) rounds; with staging, a device-to-host and a host-to-device copy of n values.
    Shapes: x (...) -> (...), the same on every rank.
    """
    _op(op, "all_reduce")
    if isinstance(x, Tensor):
        if _active() is None:
            return x
        return _AllReduce(op, check)(x)
    return _all_reduce_array(x, op, check)


def all_gather(x: Any, *, check: bool = True) -> Any:
    """$y = \\mathrm{concat}(x_0, x_1, \\dots, x_{W-1})$ along axis 0, on every rank, in rank
    order. The ranks' first axes may differ (e.g. a last, smaller batch); the other axes and
    the dtype must agree (checked as in ``all_reduce``; ``check=False`` assumes equal shapes).

    ``x``: an array (returns a new array) or a ``Tensor`` (returns a Tensor; differentiable:
    backward sums the upstream gradients of every rank and keeps this rank's rows, which is
    ``torch.distributed.nn.all_gather`` as open_clip's ``gather_with_grad`` uses it; in a
    single process the Tensor itself is returned).

    Cost: about (W-1) n values received per rank (n = x.size); the backward's reduce-scatter
    about the same. Shapes: x (B_r, ...) -> (sum_r B_r, ...).
    """
    if isinstance(x, Tensor):
        if _active() is None:
            if x.ndim == 0:
                raise ValueError("distributed.all_gather: x must have at least one axis, "
                                 "got a 0-d Tensor")
            return x
        return _AllGather()(x)
    y, _ = _all_gather_array(x, check)
    return y


def gather_counts(n: int) -> list[int]:
    """The integer ``n`` of every rank, in rank order (e.g. local batch sizes, to find this
    rank's offset in an all-gathered batch). One all-gather of one integer; ``[n]`` alone in
    a single process."""
    w = _active()
    if w is None:
        return [int(n)]
    out = np.empty(w.size, dtype=np.int64)
    w.comm.Allgather(np.array([n], dtype=np.int64), out)
    return [int(v) for v in out]


def broadcast(x: Any, root: int = 0) -> Any:
    """Rank ``root``'s array on every rank (e.g. the initial parameters, so that all ranks
    start from the same weights).

    Only the root's ``x`` is read: its dtype and shape are sent first, so the other ranks may
    pass an array of any shape (its device decides where the result lives: a CuPy array
    there gives a CuPy result) or None (a NumPy result). Returns a new array.

    Cost: about n values to every rank (n = the root's x.size), plus one message of 34
    integers. Shapes: root's x (...) -> (...).
    """
    w = _active()
    size = world_size()
    if not 0 <= root < size:
        raise ValueError(f"distributed.broadcast: root must be in [0, {size}), got {root}")
    if w is None:
        if x is None:
            raise ValueError("distributed.broadcast: the root must give an array, got None")
        return x.copy()
    meta = np.empty(_META_LEN, dtype=np.int64)
    if w.rank == root:
        if x is None:
            raise ValueError("distributed.broadcast: the root must give an array, got None")
        _check_dtype(x, "broadcast")
        meta[:] = _describe(x)
    w.comm.Bcast(meta, root=root)
    dtype = _dtype_of(meta)
    shape = tuple(int(n) for n in meta[2:2 + int(meta[1])])
    if w.rank == root:
        buf = _to_wire(x, w)
        w.comm.Bcast(buf, root=root)
        return _from_wire(buf.copy(), x, w)
    on_device = x is not None and _is_device_array(x)
    if on_device and w.cuda_aware:
        buf = backend.get_array_module(x).empty(shape, dtype=dtype)
    else:
        buf = np.empty(shape, dtype=dtype)
    w.comm.Bcast(buf, root=root)
    return _from_wire(buf, x if on_device else buf, w)


def barrier() -> None:
    """Return once every rank has called it (e.g. before rank 0 reads files the others
    wrote). One round trip; nothing in a single process."""
    w = _active()
    if w is not None:
        w.comm.Barrier()


# ------------------------------------------------------------------ data-parallel helpers
BUCKET_ELEMENTS = 25 * 2**20 // 4  # 25 MB of float32, DDP's default bucket_cap_mb


def average_gradients(params: Any, bucket_elements: int = BUCKET_ELEMENTS) -> int:
    """Data parallelism's gradient step: every parameter's ``grad`` becomes the mean over
    ranks, $g \\leftarrow \\frac1W \\sum_r g_r$, in place, as torch DDP's bucketed all-reduce.

    Gradients are packed into buckets of up to ``bucket_elements`` values (one dtype and
    device per bucket, in ``params`` order), one all-reduce per bucket instead of one per
    parameter: few large messages cost far less latency than many small ones. A parameter
    whose ``grad`` is None on *every* rank stays None (e.g. DINO's frozen last layer, which
    AdamW then skips); None on some ranks only is a ``ValueError`` on every rank (one
    all-reduce of one byte per parameter checks it), since the ranks would no longer train
    one model. ``params``: Tensors (e.g. ``model.parameters()``), the same list on every
    rank. Returns the number of buckets all-reduced (0 in a single process, where nothing
    changes).

    Cost per call: about 2 x (number of gradient values) sent and received per rank, in
    ceil(values / bucket_elements) messages, plus the check.
    """
    params = list(params)
    if _active() is None:
        return 0
    if bucket_elements < 1:
        raise ValueError(f"distributed.average_gradients: bucket_elements must be >= 1, got "
                         f"{bucket_elements}")
    has = np.array([p.grad is not None for p in params], dtype=np.int32)
    total = all_reduce(has)  # (n_params,): how many ranks have each gradient
    partial = [i for i, t in enumerate(total) if 0 < t < world_size()]
    if partial:
        names = ", ".join(f"#{i} {tuple(params[i].shape)}" for i in partial[:5])
        raise ValueError(
            f"distributed.average_gradients: {len(partial)} parameters have a gradient on some "
            f"ranks only ({names}); every rank must give every parameter a gradient, or none"
        )
    buckets: list[list[Tensor]] = []
    sizes: list[int] = []
    for p in params:
        if p.grad is None:
            continue
        g = p.grad
        last = buckets[-1][-1].grad if buckets else None
        fits = (buckets and sizes[-1] + g.size <= bucket_elements and type(last) is type(g)
                and last.dtype == g.dtype)
        if fits:
            buckets[-1].append(p)
            sizes[-1] += g.size
        else:
            buckets.append([p])
            sizes.append(g.size)
    for bucket in buckets:
        xp = backend.get_array_module(bucket[0].grad)
        flat = xp.concatenate([p.grad.reshape(-1) for p in bucket])  # (bucket values,)
        flat = all_reduce(flat, "mean", check=False)
        start = 0
        for p in bucket:
            n = p.grad.size
            p.grad = flat[start:start + n].reshape(p.grad.shape)  # a view of the bucket
            start += n
    return len(buckets)


def broadcast_tensors(tensors: Any, root: int = 0) -> None:
    """Overwrite every Tensor's ``data`` in place with rank ``root``'s (e.g. the initial
    parameters, so that every rank starts from the same model; DDP does this when it wraps
    a model). The Tensors keep their identity, dtype and device; shapes must match the
    root's. One broadcast per Tensor; nothing in a single process."""
    tensors = list(tensors)
    if _active() is None:
        return
    for t in tensors:
        y = broadcast(t.data, root=root)
        if tuple(y.shape) != tuple(t.data.shape) or y.dtype != t.data.dtype:
            raise ValueError(
                f"distributed.broadcast_tensors: rank {rank()} has a Tensor {t.data.dtype} "
                f"{tuple(t.data.shape)} where rank {root} has {y.dtype} {tuple(y.shape)}"
            )
        t.data[...] = y
