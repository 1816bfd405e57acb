"""Row blocks: run a fused op's kernel on cache-sized blocks of rows, on several threads.

A fused op written as whole-array NumPy calls makes one pass over memory per call: the layer
norm forward is about eight passes over a 3 MB activation, each one reading it from and
writing it back to main memory, and each fresh result array is page-faulted in. Run the same
calls on a block of rows small enough to stay in the L2 cache and every pass after the first
hits the cache instead of main memory. The math is unchanged: rows are independent. (What is
left is NumPy's cost per pass, ~0.2 ns per element, and 2.4 ns for a float32 exp on this
project's CPUs: several times the memory-traffic bound, which only a single-pass compiled
kernel would reach.)

Blocks are independent, and NumPy releases the GIL inside its loops, so the blocks are shared
among ``backend.num_threads()`` threads (each thread takes one contiguous run of blocks).

On the GPU a block is the whole array: CuPy runs one kernel over every row per call anyway,
and cutting the work into blocks in Python would only add kernel launches.

    spans = row_blocks(n_rows, row_bytes, xp)     # [(lo, hi), ...]
    run_blocks(kernel, spans)                     # kernel(i, lo, hi) for every block i
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .. import backend

__all__ = ["BLOCK_BYTES", "PARALLEL_BYTES", "row_blocks", "row_spans", "run_blocks",
           "stacked_matmul", "thread_spans"]

# Bytes of one array's block. A kernel touches 3-4 arrays of the block's size at once, so 256 KiB
# keeps its working set in a 1 MiB L2 cache. Measured on the bench's shapes (1 thread): 256 KiB
# to 1 MiB blocks time alike; 16 KiB blocks pay NumPy's per-call overhead (2x slower for rows
# of 192) and whole arrays pay main memory (GELU at (64, 65, 768): 27 ms against 46 ms).
BLOCK_BYTES = 256 * 1024
# Below this many bytes per thread, handing blocks to another thread costs more than it saves.
PARALLEL_BYTES = 512 * 1024

Span = tuple[int, int]


def row_blocks(n_rows: int, row_bytes: int, xp: object = np) -> list[Span]:
    """Split rows 0..n_rows into blocks of about ``BLOCK_BYTES`` (whole rows, at least one per
    block). On the GPU (``xp`` not NumPy), one block holding every row."""
    if xp is not np or n_rows <= 0:
        return [(0, n_rows)]
    rows = max(1, BLOCK_BYTES // max(1, row_bytes))
    return [(lo, min(lo + rows, n_rows)) for lo in range(0, n_rows, rows)]


def _threads_for(total_bytes: int, n_spans: int) -> int:
    """How many threads ``total_bytes`` of work in ``n_spans`` pieces is worth."""
    return min(backend.num_threads(), n_spans, max(1, total_bytes // PARALLEL_BYTES))


def thread_spans(n_rows: int, total_bytes: int) -> list[Span]:
    """Rows 0..n_rows cut into one contiguous span per thread that ``run_blocks`` will use for
    ``total_bytes`` of work. For a compiled kernel that makes one pass over each row (Numba's,
    ``numba_kernels.py``): it keeps a row in L1 by itself, so cache-sized blocks would only
    add calls."""
    threads = _threads_for(total_bytes, max(1, n_rows))
    return [(n_rows * t // threads, n_rows * (t + 1) // threads) for t in range(threads)]


def row_spans(n_rows: int, row_bytes: int, xp: object = np, one_pass: bool = False
              ) -> list[Span]:
    """The spans a fused op hands ``run_blocks``: ``thread_spans`` for a kernel that makes one
    pass over each row (``one_pass``: a compiled kernel), else ``row_blocks``."""
    if one_pass:
        return thread_spans(n_rows, n_rows * row_bytes)
    return row_blocks(n_rows, row_bytes, xp)


def _run_span(kernel: Callable[[int, int, int], None], first: int, spans: Sequence[Span]
              ) -> None:
    for i, (lo, hi) in enumerate(spans, start=first):
        kernel(i, lo, hi)


def run_blocks(kernel: Callable[[int, int, int], None], spans: Sequence[Span],
               total_bytes: int = 0) -> None:
    """Call ``kernel(i, lo, hi)`` once for every block ``spans[i] = (lo, hi)``.

    A kernel writes only into its own rows (and its own slot ``i`` of any per-block partial
    result), so blocks may run in any order and at the same time. With ``total_bytes`` of
    at least ``PARALLEL_BYTES`` per extra thread, contiguous runs of blocks go to
    ``backend.num_threads()`` threads, the calling thread taking the first run; an exception
    in any run is raised here, after every run has finished."""
    threads = _threads_for(total_bytes, len(spans))
    if threads <= 1:
        _run_span(kernel, 0, spans)
        return
    cuts = [len(spans) * t // threads for t in range(threads + 1)]  # run t: cuts[t]..cuts[t+1]
    pool = backend.cpu_pool()
    futures = [pool.submit(_run_span, kernel, cuts[t], spans[cuts[t]:cuts[t + 1]])
               for t in range(1, threads)]
    try:
        _run_span(kernel, 0, spans[:cuts[1]])
    finally:
        for f in futures:  # never return while another thread still writes our arrays
            f.exception()
    for f in futures:
        f.result()  # re-raises a worker's exception


def stacked_matmul(a: np.ndarray | object, b: np.ndarray | object) -> object:
    """``a @ b`` for stacks of matrices with the same leading axes, such as attention's
    per-head products (B, H, T, hd) @ (B, H, hd, T).

    NumPy runs one small GEMM per matrix of the stack, on one thread, however many BLAS
    threads there are; here the stack's first axis is shared among ``backend.num_threads()``
    threads instead. Anything else (broadcast leading axes, CuPy arrays, one thread) is plain
    ``a @ b``."""
    threads = backend.num_threads()
    if (type(a) is not np.ndarray or type(b) is not np.ndarray or a.ndim < 3
            or a.shape[:-2] != b.shape[:-2] or threads == 1 or a.shape[0] < 2):
        return a @ b
    out = np.empty(a.shape[:-1] + b.shape[-1:], dtype=np.result_type(a, b))

    def kernel(i: int, lo: int, hi: int) -> None:
        np.matmul(a[lo:hi], b[lo:hi], out=out[lo:hi])

    n = a.shape[0]
    spans = [(n * t // threads, n * (t + 1) // threads) for t in range(threads)]
    run_blocks(kernel, [sp for sp in spans if sp[1] > sp[0]], total_bytes=out.nbytes + a.nbytes)
    return out
