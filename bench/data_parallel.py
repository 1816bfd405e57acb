"""Data-parallel throughput on this machine: 2 MPI ranks x 1 thread against 1 process x 1
thread and 1 process x 2 threads, on the same global batch.

    python bench/data_parallel.py                        # supervised cpu preset, 3 rounds
    python bench/data_parallel.py --recipe dino --rounds 5 --steps 20
    python bench/data_parallel.py --preset tiny --steps 2 --warmup 1 --rounds 1   # smoke run
    python bench/data_parallel.py --json                 # also the raw numbers as JSON

Each configuration is a fresh child process (or ``mpiexec -n 2`` children) with OpenBLAS /
MKL / OpenMP / Numba limited to its thread count. A child builds the recipe (float32, the
preset's global batch), runs ``--warmup`` training steps, then times ``--steps`` steps of
``recipe.train_step`` (forward, backward, gradient all-reduce over the ranks, AdamW) and the
time spent in ``distributed.average_gradients`` (the bucketed all-reduce; with 2 ranks it
includes waiting for the slower rank, which is where a rank that is descheduled on a shared
machine shows), then the all-reduce alone: a buffer of as many float32 values as the
gradients, all-reduced right after a barrier (median of ``--steps`` tries). The
configurations run alternately, round after round, so a change in the machine's load hits
all of them alike; the table gives the median over rounds of steps/s, the speed-up over 1
process x 1 thread, and the all-reduce's ms per step and share of the step.

Printed beside it: the load average before and after, the CPU count, and the processes using
the most CPU when the run started (the machine is shared: numbers measured under load are
lower and noisier than on an idle machine). Benchmarks assert nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
CONFIGS = (("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2),
           ("2 ranks x 1 thread", 2, 1))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="supervised", choices=["supervised", "clip", "dino"])
    p.add_argument("--preset", default="cpu", help="the recipe's preset (default cpu)")
    p.add_argument("--batch", type=int, default=None,
                   help="global batch size (default: the preset's)")
    p.add_argument("--steps", type=int, default=15, help="timed steps per child")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--rounds", type=int, default=3, help="rounds over the configurations")
    p.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def child(args: argparse.Namespace) -> None:
    """One configuration: time the steps; rank 0 prints one JSON line."""
    sys.path.insert(0, str(ROOT))
    from minitransformer import distributed
    from minitransformer.train import make_recipe

    overrides = {} if args.batch is None else {"batch_size": args.batch}
    recipe = make_recipe(args.recipe, preset=args.preset, **overrides)
    recipe.broadcast_state()
    spent = [0.0]
    average = distributed.average_gradients

    def timed(params, *a, **kw):
        t = time.perf_counter()
        try:
            return average(params, *a, **kw)
        finally:
            spent[0] += time.perf_counter() - t

    distributed.average_gradients = timed
    for step in range(args.warmup):
        recipe.train_step(step)
    distributed.barrier()
    spent[0] = 0.0
    t0 = time.perf_counter()
    for step in range(args.warmup, args.warmup + args.steps):
        recipe.train_step(step)  # CPU: the step's arrays are computed when it returns
    distributed.barrier()
    seconds = time.perf_counter() - t0
    # the all-reduce alone: one step's gradients (as many float32 values as the parameters,
    # one bucket at this size) right after a barrier, so no rank waits for another
    import numpy as np

    values = sum(int(p.data.size) for g in recipe.optimizer.param_groups for p in g["params"])
    buf = np.ones(values, dtype=np.float32)
    alone = []
    for _ in range(args.steps):
        distributed.barrier()
        t = time.perf_counter()
        distributed.all_reduce(buf, "mean", check=False)
        alone.append(time.perf_counter() - t)
    if distributed.rank() == 0:
        print(json.dumps({"steps_per_s": args.steps / seconds, "seconds": seconds,
                          "allreduce_ms_per_step": 1e3 * spent[0] / args.steps,
                          "allreduce_alone_ms": 1e3 * sorted(alone)[len(alone) // 2],
                          "gradient_values": values, "ranks": distributed.world_size(),
                          "batch": recipe.batch_size}))


def _mpiexec() -> str:
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.is_file() else shutil.which("mpiexec")
    if found is None:
        sys.exit('no mpiexec: pip install -e ".[dist]" (mpi4py and the mpich wheel)')
    return found


def run_config(args: argparse.Namespace, ranks: int, threads: int) -> dict:
    env = dict(os.environ, MINITRANSFORMER_DEVICE="cpu")
    env.update({v: str(threads) for v in THREAD_VARIABLES})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--recipe", args.recipe,
           "--preset", args.preset, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.batch is not None:
        cmd += ["--batch", str(args.batch)]
    if ranks > 1:
        cmd = [_mpiexec(), "-n", str(ranks)] + cmd
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"child failed ({ranks} ranks x {threads} threads):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def busiest_processes(n: int = 6) -> list[str]:
    """The processes using the most CPU now (``top``'s current %CPU, else ``ps``'s average
    over each process's life), as '%CPU command' lines."""
    try:
        lines = subprocess.run(["top", "-b", "-n", "1", "-o", "%CPU"], capture_output=True,
                               text=True, timeout=10).stdout.splitlines()
        head = next(i for i, line in enumerate(lines) if line.split()[:1] == ["PID"])
        rows = [line.split() for line in lines[head + 1:head + 1 + n]]
        return [f"{r[8]}% {r[11]}" for r in rows if len(r) >= 12]
    except (OSError, subprocess.SubprocessError, StopIteration, IndexError):
        pass
    try:
        out = subprocess.run(["ps", "-eo", "pcpu,comm", "--sort=-pcpu"], capture_output=True,
                             text=True, timeout=10).stdout.splitlines()[1:n + 1]
    except (OSError, subprocess.SubprocessError):
        return []
    return [" ".join(line.split()) for line in out]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args)
        return
    load_before, busy = os.getloadavg(), busiest_processes()
    results: dict[str, list[dict]] = {name: [] for name, _, _ in CONFIGS}
    start = time.perf_counter()
    for _ in range(args.rounds):
        for name, ranks, threads in CONFIGS:  # alternately: the load hits all alike
            results[name].append(run_config(args, ranks, threads))
    load_after = os.getloadavg()
    print(f"{args.recipe} (preset {args.preset}), global batch "
          f"{results[CONFIGS[0][0]][0]['batch']}, {args.steps} timed steps after "
          f"{args.warmup}, {args.rounds} rounds, {time.perf_counter() - start:.0f} s")
    print(f"CPUs: {os.cpu_count()}; load average (1/5/15 min) before "
          f"{' '.join(f'{v:.2f}' for v in load_before)}, after "
          f"{' '.join(f'{v:.2f}' for v in load_after)}")
    if busy:
        print("busiest processes at the start (%CPU of one core): " + "; ".join(busy))
    base = statistics.median(r["steps_per_s"] for r in results[CONFIGS[0][0]])
    first = results[CONFIGS[0][0]][0]
    print(f"gradient: {first['gradient_values']} float32 values; the all-reduce alone "
          f"(after a barrier, median): "
          f"{statistics.median(r['allreduce_alone_ms'] for r in results[CONFIGS[-1][0]]):.2f}"
          f" ms over 2 ranks")
    print(f"\n{'configuration':<24}{'steps/s':>10}{'(rounds)':>24}{'speed-up':>10}"
          f"{'allreduce ms/step':>19}{'share':>7}")
    summary = {}
    for name, ranks, _ in CONFIGS:
        rate = statistics.median(r["steps_per_s"] for r in results[name])
        ms = statistics.median(r["allreduce_ms_per_step"] for r in results[name])
        rounds = " ".join(f"{r['steps_per_s']:.2f}" for r in results[name])
        share = ms / (1e3 / rate) if ranks > 1 else 0.0
        print(f"{name:<24}{rate:>10.2f}{rounds:>24}{rate / base:>9.2f}x"
              f"{ms:>19.2f}{100 * share:>6.1f}%")
        summary[name] = {"steps_per_s": rate, "speedup": rate / base,
                         "allreduce_ms_per_step": ms, "rounds": results[name]}
    if args.json:
        print(json.dumps({"recipe": args.recipe, "preset": args.preset,
                          "load_before": load_before, "load_after": load_after,
                          "busiest": busy, "results": summary}, indent=1))


if __name__ == "__main__":
    main()
