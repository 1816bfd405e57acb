"""Benchmarks of the autograd engine and the ops, with baselines measured in the same run.

    python bench/ops.py               # about a minute on a laptop CPU
    python bench/ops.py --threads 1   # the fused ops and the copy baseline on one thread
    python bench/ops.py --quick       # fewer repeats, for a smoke run
    MINITRANSFORMER_DEVICE=cuda python bench/ops.py   # the same on a GPU

Prints two tables and asserts nothing (benchmarks are not tests):

1. Autograd overhead: microseconds per op, forward and backward, on a chain of ops on small
   tensors, where the Python bookkeeping dominates. Beside it, plain NumPy doing the same
   forward and the same hand-written backward arithmetic. PyTorch's CPU eager mode costs
   about 7.4 µs per elementary op forward+backward on this kind of machine.
2. Forward+backward of matmul, softmax, layer_norm, gelu and cross_entropy at transformer
   sizes ((64, 65, 192) activations: a batch of 64 ViT-tiny-ish sequences of 65 tokens),
   several ways: ``fused`` (the public op through the engine: Numba's compiled kernels where
   installed, else NumPy calls on cache-sized blocks of rows, ``functional/blocks.py``);
   ``op alone`` (the fused Function's forward and backward on raw arrays, no engine);
   ``NumPy`` (the fused NumPy calls, when Numba would otherwise run); ``one block`` (those
   NumPy calls with every row in one block); and ``composed``. Matmul is reported in GFLOP/s
   beside NumPy's own float32 matmul; the memory-bound ops in GB/s and as a ratio to the
   *memory-traffic bound*: the minimum bytes a forward+backward must read and write, divided
   by the array-copy bandwidth of main memory measured now (the faster of 1 thread and the
   ops' threads). A ratio of 1.0 would be as fast as copying that data. Two more ratios
   divide by the copy bandwidth of caches: four arrays of the activation's size (x, y, gy,
   gx), and one.

Every number is the median of repeats (min in brackets where noise matters). On a machine
shared with other jobs, also try ``OPENBLAS_NUM_THREADS=1``: OpenBLAS threads spin-wait for
busy cores, which can make a matrix-vector product (the fused ops' row sums) 50x slower.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

import minitransformer as mt  # noqa: E402
from minitransformer import functional as F  # noqa: E402

# --------------------------------------------------------------------------------------------
# timing helpers
# --------------------------------------------------------------------------------------------


def _sync(xp) -> None:
    """Wait for the GPU (kernels are asynchronous); nothing to do on the CPU."""
    if xp is not np:
        xp.cuda.Stream.null.synchronize()


def median_time(fn: Callable[[], object], repeats: int, xp=np, warmup: int = 2) -> tuple:
    """(median, min) seconds of ``fn()`` over ``repeats`` runs, after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    _sync(xp)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(xp)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


# --------------------------------------------------------------------------------------------
# 1. autograd overhead on small tensors
# --------------------------------------------------------------------------------------------
# Each op: (engine step, NumPy forward step, NumPy backward step by hand).
# The NumPy backward does the arithmetic the op's backward needs and nothing else.
CHAIN_OPS = {
    "add   y + c": (lambda y, c: y + c, lambda y, c: y + c, lambda g, y, c: g),
    "mul   y * c": (lambda y, c: y * c, lambda y, c: y * c, lambda g, y, c: g * c),
    "sub   y - c": (lambda y, c: y - c, lambda y, c: y - c, lambda g, y, c: g),
    "tanh  tanh(y)": (lambda y, c: y.tanh(), lambda y, c: np.tanh(y),
                      lambda g, y, c: g * (1 - np.tanh(y) ** 2)),
}


def overhead_rows(device: str, n_ops: int, repeats: int) -> list[tuple]:
    """µs per op of a chain of ``n_ops`` ops on (4, 4) float32 tensors (wall time)."""
    xp = mt.backend.as_device(device).xp
    shape = (4, 4)
    x0 = xp.full(shape, 0.1, dtype=xp.float32)
    c_arr = xp.full(shape, 0.999, dtype=xp.float32)
    gy0 = xp.ones(shape, dtype=xp.float32)
    rows = []
    mixed = list(CHAIN_OPS.values())
    for name, ops in list(CHAIN_OPS.items()) + [("mixed (the four above in turn)", None)]:
        steps = [ops] if ops is not None else mixed
        c = mt.tensor(c_arr)

        def engine_forward(steps=steps, c=c):
            x = mt.tensor(x0, requires_grad=True)
            y = x
            for i in range(n_ops):
                y = steps[i % len(steps)][0](y, c)
            return y

        fw, bw = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            y = engine_forward()
            _sync(xp)
            t1 = time.perf_counter()
            y.backward(gy0)
            _sync(xp)
            t2 = time.perf_counter()
            fw.append((t1 - t0) / n_ops)
            bw.append((t2 - t1) / n_ops)
            del y

        def numpy_forward(steps=steps):
            ys = [x0]
            for i in range(n_ops):
                ys.append(steps[i % len(steps)][1](ys[-1], c_arr))
            return ys

        def numpy_both(steps=steps):
            ys = numpy_forward(steps)
            g = gy0
            for i in reversed(range(n_ops)):
                g = steps[i % len(steps)][2](g, ys[i], c_arr)
            return g

        np_fw = median_time(numpy_forward, repeats, xp)[0] / n_ops
        np_both = median_time(numpy_both, repeats, xp)[0] / n_ops
        fw_med, bw_med = statistics.median(fw), statistics.median(bw)
        totals = [f + b for f, b in zip(fw, bw)]
        rows.append((name, fw_med, bw_med, statistics.median(totals), min(totals), np_fw,
                     np_both))
    return rows


def print_overhead(rows: list[tuple]) -> None:
    print("\n1. Autograd overhead: µs per op on a chain of (4, 4) float32 ops "
          "(median [min] of repeats)")
    header = (f"{'op':34s} {'fwd':>7s} {'bwd':>7s} {'total':>15s}   {'NumPy fwd':>9s} "
              f"{'NumPy fwd+bwd':>13s} {'overhead':>9s}")
    print(header)
    print("-" * len(header))
    for name, fw, bw, tot, tot_min, np_fw, np_both in rows:
        print(f"{name:34s} {fw * 1e6:7.2f} {bw * 1e6:7.2f} {tot * 1e6:7.2f} [{tot_min * 1e6:5.2f}]"
              f"   {np_fw * 1e6:9.2f} {np_both * 1e6:13.2f} {(tot - np_both) * 1e6:9.2f}")
    print("overhead = engine total - NumPy fwd+bwd. Target: total <= 7 µs per elementary op "
          "(PyTorch CPU eager ~7.4 µs; NumPy ~0.75 µs per op).")


# --------------------------------------------------------------------------------------------
# 2. ops at transformer sizes
# --------------------------------------------------------------------------------------------
def copy_bandwidth(xp, n_bytes: int, repeats: int, threads: int = 1, pairs: int = 1) -> float:
    """Array-copy speed in bytes/s, counting the read and the write (2 n_bytes per copy), for
    ``pairs`` source/destination pairs of ``n_bytes`` each, every pair copied once per run:
    2 pairs touch four arrays, as a forward+backward touches x, y, gy and gx. On the CPU with
    ``threads`` > 1 each copy is cut in as many slices, copied at the same time on the pool
    the fused ops use (NumPy releases the GIL while it copies)."""
    arrays = [(xp.ones(n_bytes // 4, dtype=xp.float32), xp.empty(n_bytes // 4, xp.float32))
              for _ in range(pairs)]
    if xp is not np or threads == 1:
        def copy_all():
            for src, dst in arrays:
                xp.copyto(dst, src)
    else:
        n = n_bytes // 4
        cuts = [n * i // threads for i in range(threads + 1)]
        slices = [slice(cuts[i], cuts[i + 1]) for i in range(threads)]
        pool = mt.backend.cpu_pool()

        def copy_all():
            for src, dst in arrays:
                futures = [pool.submit(np.copyto, dst[sl], src[sl]) for sl in slices[1:]]
                np.copyto(dst[slices[0]], src[slices[0]])
                for f in futures:
                    f.result()

    t = median_time(copy_all, repeats, xp)[0]
    return 2 * n_bytes * pairs / t


def matmul_gflops(xp, m: int, k: int, n: int, repeats: int) -> float:
    rng = np.random.default_rng(0)
    a = xp.asarray(rng.standard_normal((m, k), dtype=np.float32))
    b = xp.asarray(rng.standard_normal((k, n), dtype=np.float32))
    t = median_time(lambda: a @ b, repeats, xp)[0]
    return 2 * m * k * n / t / 1e9


def _fused_and_composed(run: Callable[[], object], op_alone: Callable[[], object] | None,
                        numba: bool) -> dict[str, Callable[[], object]]:
    """The same op several ways: public (fused: Numba's compiled kernels where installed,
    else NumPy calls on cache-sized blocks of rows); the fused Function alone, its forward and
    backward called on raw arrays with no engine around it; the fused NumPy calls
    (``use_numba(False)``), on blocks and with every row in one block (what blocking buys);
    and composed, through F.use_fused, the seam the functional package exposes for exactly
    this comparison."""
    from minitransformer.functional import blocks

    def numpy_calls():
        with F.use_numba(False):
            return run()

    def one_block():
        saved = blocks.BLOCK_BYTES
        blocks.BLOCK_BYTES = 1 << 62  # every row in one block
        try:
            return numpy_calls()
        finally:
            blocks.BLOCK_BYTES = saved

    def composed():
        with F.use_fused(False):
            return run()

    variants = {"fused": run}
    if op_alone is not None:
        variants["op alone"] = op_alone
    if numba:  # otherwise "fused" already is the NumPy calls
        variants["NumPy"] = numpy_calls
    variants.update({"one block": one_block, "composed": composed})
    return variants


def _op_alone(function: Callable[[], object], inputs: list, gy) -> Callable[[], object]:
    """Forward and backward of a fresh fused Function on raw arrays: the op's own cost,
    without the engine (which also copies a leaf's first gradient into ``.grad``)."""
    def run():
        f = function()
        f.needs_input_grad = (True,) * len(inputs)
        f.forward(*inputs)
        return f.backward(gy)
    return run


def op_rows(device: str, repeats: int) -> tuple[list[tuple], float, float, int]:
    from minitransformer.functional.activation import Gelu, Softmax
    from minitransformer.functional.normalization import LayerNorm

    xp = mt.backend.as_device(device).xp
    rng = np.random.default_rng(0)
    B, T, D = 64, 65, 192  # batch, tokens, width
    n = B * T * D  # elements of one activation
    n_bytes = 4 * n  # float32
    threads = mt.backend.num_threads()  # the fused ops share their blocks among these
    # three baselines: one activation copied (src and dst, 6 MiB: in cache), the four arrays
    # an op's forward+backward touches (x, y, gy, gx: 12 MiB), and beyond any cache (256 MiB);
    # each the faster of one thread and the ops' threads (handing a copy to the pool can cost
    # more than it saves), so no ratio flatters the ops
    def best_copy(n: int, reps: int, pairs: int = 1) -> float:
        return max(copy_bandwidth(xp, n, reps, t, pairs) for t in {1, threads})

    cache_bandwidth = best_copy(n_bytes, repeats)
    l3_bandwidth = best_copy(n_bytes, repeats, pairs=2)
    dram_bandwidth = best_copy(256 * 2**20, max(3, repeats // 4))
    M, K, N = B * T, D, 4 * D  # the MLP's first projection: (B*T, D) @ (D, 4D)
    numpy_gflops = matmul_gflops(xp, M, K, N, repeats)

    def leaf(shape, scale=1.0):
        return mt.tensor(xp.asarray(scale * rng.standard_normal(shape, dtype=np.float32)),
                         requires_grad=True)

    x = leaf((B, T, D))
    gy = xp.asarray(rng.standard_normal((B, T, D), dtype=np.float32))
    w_ln, b_ln = leaf((D,)), leaf((D,))
    a_mm, w_mm = leaf((M, K)), leaf((K, N), D**-0.5)
    gy_mm = xp.asarray(rng.standard_normal((M, N), dtype=np.float32))
    logits = leaf((B * T, D))
    target = xp.asarray(rng.integers(0, D, size=B * T))

    def fwd_bwd(make_output, g):
        def run():
            for t in (x, w_ln, b_ln, a_mm, w_mm, logits):
                t.grad = None
            make_output().backward(g)
        return run

    rows = []
    # matmul: forward 2MKN flops, backward two GEMMs of the same size
    t_mm = median_time(fwd_bwd(lambda: a_mm @ w_mm, gy_mm), repeats, xp)
    rows.append(("matmul (4160,192)@(192,768)", "-", t_mm, 3 * 2 * M * K * N, None))

    # Minimum traffic of forward+backward, in elements (times 4 bytes):
    #   softmax:    fwd reads x, writes y; bwd reads y and gy, writes gx      -> 5n
    #   layer_norm: fwd reads x, writes y; bwd reads x and gy, writes gx      -> 5n
    #   gelu:       fwd reads x, writes y; bwd reads x and gy, writes gx      -> 5n
    #   cross_entropy: fwd reads logits; bwd reads logits, writes glogits     -> 3n
    softmax_alone = _op_alone(lambda: Softmax(-1), [x.data], gy)
    layer_norm_alone = _op_alone(lambda: LayerNorm(1e-6, True, True),
                                 [x.data, w_ln.data, b_ln.data], gy)
    memory_bound = {
        "softmax (64,65,192), last axis": (lambda: F.softmax(x, axis=-1), gy, 5 * n,
                                           softmax_alone),
        "layer_norm (64,65,192), D=192": (lambda: F.layer_norm(x, w_ln, b_ln, 1e-6), gy, 5 * n,
                                          layer_norm_alone),
        "gelu (64,65,192), erf": (lambda: F.gelu(x), gy, 5 * n,
                                  _op_alone(lambda: Gelu("none"), [x.data], gy)),
        "cross_entropy (4160,192) logits": (lambda: F.cross_entropy(logits, target), None, 3 * n,
                                            None),
    }
    numba = device == "cpu" and F.numba_kernels_for(x.data) is not None
    for name, (make, g, elements, alone) in memory_bound.items():
        for variant, run in _fused_and_composed(fwd_bwd(make, g), alone, numba).items():
            t = median_time(run, repeats, xp)
            rows.append((name, variant, t, None, 4 * elements))
    return rows, (cache_bandwidth, l3_bandwidth, dram_bandwidth), numpy_gflops, n_bytes


def numpy_by_hand_rows(repeats: int) -> list[tuple]:
    """Softmax and layer norm forward+backward written directly in NumPy (float32): what the
    same math costs with no engine at all."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 65, 192), dtype=np.float32)
    gy = rng.standard_normal((64, 65, 192), dtype=np.float32)
    w = rng.standard_normal(192, dtype=np.float32)

    def softmax_np():
        z = np.exp(x - x.max(axis=-1, keepdims=True))
        y = z / z.sum(axis=-1, keepdims=True)
        return y * (gy - (gy * y).sum(axis=-1, keepdims=True))

    def layer_norm_np():
        mu = x.mean(axis=-1, keepdims=True)
        xc = x - mu
        rstd = 1.0 / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + 1e-6)
        xhat = xc * rstd
        _ = xhat * w  # forward output (bias omitted: it adds nothing to the traffic story)
        gxhat = gy * w
        gx = rstd * (gxhat - gxhat.mean(-1, keepdims=True)
                     - xhat * (gxhat * xhat).mean(-1, keepdims=True))
        return gx, (gy * xhat).sum(axis=(0, 1)), gy.sum(axis=(0, 1))

    return [("softmax, NumPy by hand", median_time(softmax_np, repeats)),
            ("layer_norm, NumPy by hand", median_time(layer_norm_np, repeats))]


def print_ops(rows, bandwidths, numpy_gflops, n_bytes, by_hand) -> None:
    cache_bandwidth, l3_bandwidth, dram_bandwidth = bandwidths
    print(f"\n2. Forward+backward at transformer sizes (float32; wall time, median [min] of "
          f"repeats; op threads {mt.backend.num_threads()})\n"
          f"   NumPy float32 matmul (4160,192)@(192,768): {numpy_gflops:7.1f} GFLOP/s\n"
          f"   NumPy array copy, read + write: {dram_bandwidth / 1e9:5.1f} GB/s at 256 MiB "
          f"(main memory), {l3_bandwidth / 1e9:5.1f} GB/s for two {n_bytes / 2**20:.1f} MiB "
          f"activations at once (four arrays), {cache_bandwidth / 1e9:5.1f} GB/s for one")
    header = (f"{'op':34s} {'version':10s} {'ms':>16s} {'GFLOP/s':>8s} {'GB/s':>7s} "
              f"{'x DRAM':>7s} {'x 4 arrays':>11s} {'x 1 copy':>9s}")
    print(header)
    print("-" * len(header))
    for name, variant, (t, t_min), flops, traffic in rows:
        gflops = f"{flops / t / 1e9:8.1f}" if flops else f"{'':8s}"
        if traffic:
            gbs = f"{traffic / t / 1e9:7.1f}"
            ratios = " ".join(f"{t / (traffic / bw):{w}.1f}" for bw, w in
                              ((dram_bandwidth, 7), (l3_bandwidth, 11), (cache_bandwidth, 9)))
        else:
            gbs, ratios = f"{'':7s}", ""
        print(f"{name:34s} {variant:10s} {t * 1e3:7.2f} [{t_min * 1e3:6.2f}] {gflops} {gbs} "
              f"{ratios}")
    for name, (t, t_min) in by_hand:
        print(f"{name:34s} {'numpy':9s} {t * 1e3:7.2f} [{t_min * 1e3:6.2f}]")
    print("x DRAM = time / (minimum bytes of forward+backward / main-memory copy bandwidth);\n"
          "x 4 arrays: the same with the copy bandwidth of the four arrays a forward+backward "
          "touches (x, y, gy, gx), partly in the L3 cache; x 1 copy: with one activation's "
          "copy, in cache.\n"
          "Target for the fused softmax and layer_norm: x DRAM <= 2. In a training step the "
          "backward reads activations written long before, from main memory; here the same "
          "arrays are reused, so the cache ratios show how far each op is from a copy.\n"
          "fused: through the engine on a leaf input, which adds a copy of the input's "
          "gradient into .grad; op alone: the fused Function's forward and backward only.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads the fused ops share their blocks among, and the copy "
                             "baseline uses (default: mt.backend.num_threads())")
    args = parser.parse_args()
    if args.threads is not None:
        mt.backend.set_num_threads(args.threads)
    # as the train command: reuse freed memory instead of page-faulting fresh arrays each run
    mt.backend.keep_freed_memory()
    device = str(mt.get_default_device())
    repeats = 5 if args.quick else 21
    blas_threads = (os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
                    or "default")
    print(f"minitransformer {mt.__version__} on {device}; NumPy {np.__version__}; "
          f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f}; BLAS threads {blas_threads}; "
          f"op threads {mt.backend.num_threads()}; Numba kernels "
          f"{'on' if F.numba_kernels_for(np.zeros(1, np.float32)) is not None else 'off'}")
    # many short chains: the minimum over them is what the code costs on a quiet core
    print_overhead(overhead_rows(device, n_ops=200, repeats=11 if args.quick else 101))
    rows, bandwidths, numpy_gflops, n_bytes = op_rows(device, repeats)
    by_hand = numpy_by_hand_rows(repeats) if device == "cpu" else []
    print_ops(rows, bandwidths, numpy_gflops, n_bytes, by_hand)


if __name__ == "__main__":
    main()
