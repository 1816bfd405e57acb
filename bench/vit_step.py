"""One ViT training step on the CPU, timed beside NumPy's own float32 matmul.

    python bench/vit_step.py                       # the issue's ViT, BLAS threads as found
    python bench/vit_step.py --threads 1           # OpenBLAS/MKL/OpenMP limited to 1 thread
    python bench/vit_step.py --threads 2 --adamw   # also time forward+backward+AdamW step
    python bench/vit_step.py --profile             # cProfile one training step, top 15 by tottime

The model is the issue's ViT: 32x32 RGB images, 4x4 patches (N = 64, T = 65 tokens), width 192,
depth 6, 3 heads, pre-norm blocks, exact GELU, LayerNorm eps 1e-6, a 10-class head on the CLS
token, float32, batch 64; the loss is cross-entropy on random labels.

Prints, and asserts nothing (benchmarks are not tests):

- the analytic FLOP count: every matrix product of the step, 2 M K N each. Softmax, LayerNorm,
  GELU and the other elementwise work are left out, as the usual FLOP counters do: about 2%
  more arithmetic, but memory-bound, so their cost shows in the time, not in the count;
- median milliseconds over ``--steps`` steps after warm-up for the forward pass without a
  graph (``no_grad``), the forward pass recording the graph, forward+backward, and with
  ``--adamw`` forward+backward+``AdamW.step``; achieved GFLOP/s = FLOPs / median time;
- the same GEMMs run by plain NumPy, shape by shape, measured in this run: their summed time
  is what the step would cost if it were nothing but NumPy matmuls. The ratio to it says how
  close the engine gets to the BLAS underneath;
- peak resident memory (``resource.getrusage``; it only grows, so it is read after each phase).
  With Numba installed the fused ops run compiled kernels (the header says which), and LLVM
  adds about 115 MiB to it; ``MINITRANSFORMER_NUMBA=0`` runs the NumPy calls instead.

PyTorch 2 CPU eager runs this training step in about 520 ms on 2 threads and 960 ms on 1 thread
on this kind of machine (about 67-73% of its matmul peak).
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--img", type=int, default=32, help="image side in pixels")
    p.add_argument("--patch", type=int, default=4, help="patch side P")
    p.add_argument("--dim", type=int, default=192, help="width D")
    p.add_argument("--depth", type=int, default=6, help="number of blocks")
    p.add_argument("--heads", type=int, default=3, help="heads H")
    p.add_argument("--batch", type=int, default=64, help="batch size B")
    p.add_argument("--classes", type=int, default=10, help="classes of the head")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS threads (OPENBLAS/OMP/MKL_NUM_THREADS; default: as found)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before each measurement")
    p.add_argument("--adamw", action="store_true", help="also time the step with AdamW")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="glibc: keep freed memory in the process instead of returning it to the "
                        "OS (mallopt), so each step does not page-fault its activations in again")
    p.add_argument("--profile", action="store_true",
                   help="cProfile one training step and print the top ops by tottime")
    p.add_argument("--top", type=int, default=15, help="rows of the profile")
    return p.parse_args(argv)


# The thread count must be in the environment before NumPy loads its BLAS, so the arguments are
# parsed before anything imports numpy.
ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.threads is not None:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                "MINITRANSFORMER_NUM_THREADS"):  # BLAS, and the blocked element-wise kernels
        os.environ[var] = str(ARGS.threads)

import cProfile  # noqa: E402
import io  # noqa: E402
import pstats  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

import minitransformer as mt  # noqa: E402
from minitransformer import functional as F  # noqa: E402
from minitransformer import models, optim  # noqa: E402


# --------------------------------------------------------------------------------------------
# the analytic FLOP count
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gemm:
    """``count`` products (batch, M, K) @ (batch, K, N), as the engine computes them."""

    name: str
    batch: int
    M: int
    K: int
    N: int
    count: int = 1
    grad_a: bool = True  # does the backward need the gradient of the left operand?
    ta: bool = False  # the left operand is a transposed view (as x^T in gW = x^T gy)
    tb: bool = False  # the right operand is a transposed view (as W^T in gx = gy W^T)

    @property
    def flops(self) -> int:
        return 2 * self.count * self.batch * self.M * self.K * self.N


def forward_gemms(a: argparse.Namespace) -> list[Gemm]:
    """The matrix products of one forward pass, in the engine's shapes.

    Linear layers multiply (B, T, in) by (in, out): one (B*T, in) @ (in, out) product. Attention
    is (B*H) products (T, hd) @ (hd, T) for the scores and (T, T) @ (T, hd) for P V."""
    B, D, H, L = a.batch, a.dim, a.heads, a.depth
    N = (a.img // a.patch) ** 2
    T, hd, Pdim = N + 1, D // H, 3 * a.patch * a.patch
    hidden = 4 * D
    return [
        Gemm("patch_embed", 1, B * N, Pdim, D, grad_a=False),  # the image needs no gradient
        Gemm("qkv", 1, B * T, D, 3 * D, count=L),
        Gemm("scores QK^T", B * H, T, hd, T, count=L, tb=True),
        Gemm("PV", B * H, T, T, hd, count=L),
        Gemm("proj W_O", 1, B * T, D, D, count=L),
        Gemm("fc1", 1, B * T, D, hidden, count=L),
        Gemm("fc2", 1, B * T, hidden, D, count=L),
        Gemm("head", 1, B, D, a.classes),
    ]


def shape_key(g: Gemm) -> tuple:
    return (g.batch, g.M, g.K, g.N, g.ta, g.tb)


def backward_gemms(fwd: list[Gemm]) -> list[Gemm]:
    """y = a b  =>  ga = gy b^T (M, N, K) and gb = a^T gy (K, M, N): two products per forward
    product, one when the left operand (the image) needs no gradient."""
    out = []
    for g in fwd:
        if g.grad_a:
            out.append(Gemm(g.name + " gA=gY B^T", g.batch, g.M, g.N, g.K, g.count,
                            tb=not g.tb))
        out.append(Gemm(g.name + " gB=A^T gY", g.batch, g.K, g.M, g.N, g.count, ta=not g.ta))
    return out


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------
def median_ms(fn: Callable[[], object], steps: int, warmup: int) -> tuple[float, float]:
    """Median wall time and median process CPU time of ``fn()``, in milliseconds, over
    ``steps`` calls after ``warmup``. CPU time counts every thread of this process: on an idle
    machine it is about threads x wall time; on a busy one it shows what the step itself cost
    when wall time is inflated by other processes."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return 1e3 * statistics.median(wall), 1e3 * statistics.median(cpu)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def numpy_gemm_ms(g: Gemm, rng: np.random.Generator, repeats: int = 7) -> tuple[float, float]:
    """Median (wall, CPU) ms of ONE product of ``g``'s shape in plain NumPy float32, the way
    the engine calls it: 2-D when batch == 1, a stacked matmul otherwise, transposed views
    where the engine passes them (BLAS takes them as a transpose flag, no copy)."""

    def operand(rows: int, cols: int, transposed: bool) -> np.ndarray:
        if transposed:  # a (batch, cols, rows) array seen as (batch, rows, cols)
            return np.swapaxes(rng.standard_normal((g.batch, cols, rows), dtype=np.float32),
                               -1, -2)
        return rng.standard_normal((g.batch, rows, cols), dtype=np.float32)

    a, b = operand(g.M, g.K, g.ta), operand(g.K, g.N, g.tb)
    if g.batch == 1:
        a, b = a[0], b[0]  # (M, K) @ (K, N)
    return median_ms(lambda: a @ b, repeats, warmup=2)


def page_faults() -> tuple[int, float]:
    """(minor page faults, system CPU seconds) of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_minflt, r.ru_stime


def blas_threads() -> str:
    """The BLAS library and thread count NumPy really uses (threadpoolctl when installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}"
    libs = [f"{i['internal_api']} {i['num_threads']} thread(s)"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(libs) or "no BLAS found by threadpoolctl"


# --------------------------------------------------------------------------------------------
# the model and its step
# --------------------------------------------------------------------------------------------
def build(a: argparse.Namespace):
    """The ViT, a batch of random images and labels."""
    mt.manual_seed(0)
    cfg = models.ViTConfig(img_size=a.img, patch_size=a.patch, dim=a.dim, depth=a.depth,
                           num_heads=a.heads, num_classes=a.classes, norm_first=True,
                           eps=1e-6, act="gelu")
    model = models.VisionTransformer(cfg)
    rng = np.random.default_rng(0)
    x = mt.tensor(rng.standard_normal((a.batch, 3, a.img, a.img), dtype=np.float32))
    y = rng.integers(0, a.classes, size=a.batch)
    return model, x, y


def main(a: argparse.Namespace) -> None:
    sys.stdout.reconfigure(line_buffering=True)  # lines appear as they are printed
    fwd = forward_gemms(a)
    bwd = backward_gemms(fwd)
    fwd_flops = sum(g.flops for g in fwd)
    train_flops = fwd_flops + sum(g.flops for g in bwd)
    N = (a.img // a.patch) ** 2

    print(f"ViT img {a.img}, patch {a.patch} (N={N}, T={N + 1}), dim {a.dim}, depth {a.depth}, "
          f"heads {a.heads}, batch {a.batch}, {a.classes} classes, float32, CPU")
    numba = F.numba_kernels_for(np.zeros(1, np.float32)) is not None
    print(f"NumPy {np.__version__}; BLAS: {blas_threads()}; element-wise kernels: "
          f"{mt.backend.num_threads()} thread(s), "
          f"{'compiled by Numba' if numba else 'NumPy calls (no Numba)'}")
    if a.keep_freed_memory:
        kept = mt.backend.keep_freed_memory()
        print(f"malloc: {'glibc keeps freed memory' if kept else 'not glibc: flag ignored'}")
    print(f"analytic FLOPs (matmuls only, 2MKN): forward {fwd_flops / 1e9:.2f} GFLOP, "
          f"training step (forward + 2x backward products) {train_flops / 1e9:.2f} GFLOP\n")

    model, x, y = build(a)
    rss0 = peak_rss_mib()

    def forward_no_grad() -> None:
        with mt.no_grad():
            model(x)

    def forward_graph() -> None:
        F.cross_entropy(model(x), y)  # the graph is dropped with the loss

    def train_step() -> None:
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()

    load0 = os.getloadavg()[0]
    rows = []  # (what, (wall ms, cpu ms), flops, peak rss)
    rows.append(("forward, no_grad", median_ms(forward_no_grad, a.steps, a.warmup),
                 fwd_flops, peak_rss_mib()))
    rows.append(("forward, recording the graph", median_ms(forward_graph, a.steps, a.warmup),
                 fwd_flops, peak_rss_mib()))
    rows.append(("forward + backward", median_ms(train_step, a.steps, a.warmup), train_flops,
                 peak_rss_mib()))
    if a.adamw:
        opt = optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)

        def train_step_adamw() -> None:
            train_step()
            opt.step()

        rows.append(("forward + backward + AdamW",
                     median_ms(train_step_adamw, a.steps, a.warmup), train_flops,
                     peak_rss_mib()))

    faults0, sys0 = page_faults()
    train_step()
    faults1, sys1 = page_faults()

    # NumPy alone, the same products, measured now
    rng = np.random.default_rng(1)
    per_shape: dict[tuple, tuple[float, float]] = {}  # (wall, CPU) ms of one product
    for g in fwd + bwd:
        if shape_key(g) not in per_shape:
            per_shape[shape_key(g)] = numpy_gemm_ms(g, rng)

    def numpy_total(gemms: list[Gemm]) -> tuple[float, float]:
        """(wall, CPU) ms NumPy needs for all of ``gemms``."""
        return tuple(sum(g.count * per_shape[shape_key(g)][i] for g in gemms) for i in (0, 1))

    np_fwd, np_train = numpy_total(fwd), numpy_total(fwd + bwd)
    big = max(fwd, key=lambda g: g.flops)  # fc1: the largest single product
    big_rate = 2 * big.batch * big.M * big.K * big.N / per_shape[shape_key(big)][0] / 1e6

    load1 = os.getloadavg()[0]
    print(f"{'':<29} {'this engine':^26} | {'NumPy, same GEMMs':^17} | {'engine / NumPy':^15} |")
    print(f"{'step':<29} {'wall ms':>8} {'CPU ms':>8} {'GFLOP/s':>8} | {'wall ms':>8} "
          f"{'CPU ms':>8} | {'wall':>7} {'CPU':>7} | {'peak RSS':>9}")
    print("-" * 108)
    for what, (ms, cpu_ms), flops, rss in rows:
        ref_ms, ref_cpu = np_fwd if flops == fwd_flops else np_train
        print(f"{what:<29} {ms:>8.1f} {cpu_ms:>8.1f} {flops / ms / 1e6:>8.1f} | {ref_ms:>8.1f} "
              f"{ref_cpu:>8.1f} | {ms / ref_ms:>6.2f}x {cpu_ms / ref_cpu:>6.2f}x | "
              f"{rss:>5.0f} MiB")
    print("-" * 108)
    print(f"NumPy float32 matmul on the step's shapes: {fwd_flops / np_fwd[0] / 1e6:.1f} GFLOP/s "
          f"(forward products), {train_flops / np_train[0] / 1e6:.1f} GFLOP/s (training step);\n"
          f"  largest single GEMM, {big.name} ({big.M}x{big.K} @ {big.K}x{big.N}): "
          f"{big_rate:.1f} GFLOP/s")
    cpus = os.cpu_count() or 1
    print(f"1-min load average {load0:.1f} before, {load1:.1f} after the timed steps "
          f"({cpus} CPUs)" + ("  <- machine busy: wall times are inflated by other processes"
                              if max(load0, load1) > cpus else ""))
    print(f"one training step: {faults1 - faults0} minor page faults "
          f"(~{(faults1 - faults0) * 4 / 1024:.0f} MiB zero-filled by the kernel), "
          f"{1e3 * (sys1 - sys0):.0f} ms of system CPU time")
    print(f"peak RSS before the first step: {rss0:.0f} MiB")
    print("reference, PyTorch CPU eager training step: ~520 ms on 2 threads, ~960 ms on 1 thread")

    print("\nNumPy GEMMs of the training step, by shape (ms each, x count):")
    for g in fwd + bwd:
        ms = per_shape[shape_key(g)][0]
        shape = (f"{g.batch}x " if g.batch > 1 else "") + f"({g.M}x{g.K})@({g.K}x{g.N})"
        print(f"  {g.name:<24} {shape:<28} {ms:8.2f} ms x{g.count}  "
              f"{2 * g.batch * g.M * g.K * g.N / ms / 1e6:6.1f} GFLOP/s")

    if a.profile:
        train_step()  # warm
        prof = cProfile.Profile()
        prof.enable()
        train_step()
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("tottime").print_stats(a.top)
        print(f"\ncProfile of one training step (forward + backward), top {a.top} by tottime:")
        print(buf.getvalue())


if __name__ == "__main__":
    main(ARGS)
