"""Host synchronisation of the recipes' training loops: device-to-host transfers per step
beside the time per step (issue 14).

    python bench/host_sync.py                          # every recipe, tiny preset, GPU if any
    python bench/host_sync.py --device standin         # on the CuPy stand-in (no GPU needed)
    python bench/host_sync.py --recipes dino,clip --preset cpu --log-every 1,10 --steps 20
    python bench/host_sync.py --json host_sync.json    # also write the rows as JSON

Each row trains one recipe through ``train()`` (the loop, its logging and its checks; no
checkpoint or evaluation inside the measured steps) for ``--warmup`` steps, then measures
``--steps`` steps logged every L steps: the wall milliseconds per step (the measured window
ends at a logging read, which waits for the device, so queued GPU work is included) and the
device-to-host transfers per step, against the budget of 1 / L (one read per logging
interval). Running it with ``--log-every 1,10`` shows what the per-step reads cost.

Where the transfers are counted: on the CuPy stand-in (tests/cupy_standin.py) by its
counter. Real CuPy has no such counter, so on a GPU the counts come from a child process
that runs the same rows on the stand-in with the GPU hidden (``CUDA_VISIBLE_DEVICES=""``):
the code path, hence the count, does not depend on the hardware; the times are the GPU's.
Host-to-device copies per step (the batch, masks, index arrays) are shown beside them.
On ``--device cpu`` NumPy never transfers: the counts are shown as "-". Stand-in times are
NumPy's, not a GPU's. Prints a table; asserts nothing (tests/train/test_host_sync_budget.py
holds the budget).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STANDIN = "tests.cupy_standin"
RECIPES = ("supervised", "mlm", "mim", "clip", "dino", "dinov2")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("auto", "cuda", "standin", "cpu"), default="auto",
                   help="cuda: real CuPy; standin: the CuPy stand-in; auto: cuda when a GPU is "
                        "there, else the stand-in")
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated recipes")
    p.add_argument("--preset", default="tiny", help="preset of every recipe (tiny, cpu, gpu)")
    p.add_argument("--steps", type=int, default=12, help="measured steps (rounded up to a "
                                                        "multiple of each logging interval)")
    p.add_argument("--warmup", type=int, default=3, help="steps before the measured ones")
    p.add_argument("--log-every", default="1,3", help="comma-separated logging intervals L")
    p.add_argument("--json", type=Path, default=None, help="write the rows to this file")
    p.add_argument("--counts-only", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _ceil_to(n: int, k: int) -> int:
    return -(-n // k) * k


def measure(name: str, preset: str, device: str, warmup: int, steps: int, log_every: int
            ) -> dict[str, Any]:
    """One row: train ``name`` and measure ``steps`` steps after ``warmup`` (both rounded up
    to multiples of ``log_every``, so the window starts after a read and ends with one)."""
    import minitransformer as mt
    from minitransformer.train import make_recipe, train

    cp = mt.backend.cupy() if device == "cuda" else None
    counter = cp if getattr(cp, "IS_STANDIN", False) else None
    W, K = _ceil_to(warmup, log_every), _ceil_to(steps, log_every)
    recipe = make_recipe(name, preset=preset, device=device, steps=W + K + 1)
    marks: dict[int, tuple[float, int, int]] = {}
    inner = recipe.train_step

    def train_step(step: int) -> Any:
        if step in (W, W + K):
            marks[step] = (time.perf_counter(), counter.transfers() if counter else 0,
                           counter.transfers("to_device") if counter else 0)
        return inner(step)

    recipe.train_step = train_step
    with tempfile.TemporaryDirectory() as out:
        train(recipe, out, log_every=log_every, progress=False)
    (t0, c0, h0), (t1, c1, h1) = marks[W], marks[W + K]
    return {"recipe": name, "preset": preset, "device": device, "log_every": log_every,
            "steps": K, "ms_per_step": 1e3 * (t1 - t0) / K,
            "transfers_per_step": (c1 - c0) / K if counter else None,
            "to_device_per_step": (h1 - h0) / K if counter else None,
            "budget_per_step": 1 / log_every}


def counts_on_standin(a: argparse.Namespace) -> list[dict[str, Any]]:
    """The same rows on the stand-in in a child process with the GPU hidden."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "counts.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--device", "standin",
               "--counts-only",
               "--recipes", a.recipes, "--preset", a.preset, "--steps", str(a.steps),
               "--warmup", str(a.warmup), "--log-every", a.log_every, "--json", str(path)]
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="",
                   MINITRANSFORMER_CUPY_STANDIN=STANDIN)
        subprocess.run(cmd, env=env, cwd=ROOT, check=True)
        return json.loads(path.read_text())["rows"]


def main(a: argparse.Namespace) -> int:
    if a.device in ("auto", "standin"):
        # read on backend.cupy()'s first call; a real CuPy with a GPU wins over it (auto)
        os.environ["MINITRANSFORMER_CUPY_STANDIN"] = STANDIN
    sys.path.insert(0, str(ROOT))  # a source checkout: the package and tests/ (the stand-in)
    import warnings

    import minitransformer as mt

    with warnings.catch_warnings():  # "the stand-in is ignored: a real GPU is there"
        warnings.simplefilter("ignore", RuntimeWarning)
        gpu = mt.cuda_available()
    cp = mt.backend.cupy()
    standin = bool(cp) and getattr(cp, "IS_STANDIN", False)  # falsy when CuPy is missing
    device = a.device
    if device == "auto":
        device = "standin" if standin else "cuda"
    real_gpu = device == "cuda" and gpu and not standin
    if (device == "cuda" and not real_gpu) or (device == "standin" and not standin):
        print(f"host_sync: --device {a.device}: "
              f"{'a real GPU is there' if device == 'standin' else 'no GPU (or CuPy)'}; "
              "use --device auto or cpu", file=sys.stderr)
        return 2
    run_on = "cpu" if device == "cpu" else "cuda"
    names = [n.strip() for n in a.recipes.split(",") if n.strip()]
    intervals = [int(v) for v in a.log_every.split(",")]
    rows = [measure(n, a.preset, run_on, a.warmup, a.steps, L)
            for n in names for L in intervals]
    where = "stand-in counter" if device == "standin" else None
    if real_gpu and not a.counts_only:
        counted = counts_on_standin(a)
        for r, c in zip(rows, counted):
            r["transfers_per_step"] = c["transfers_per_step"]
            r["to_device_per_step"] = c["to_device_per_step"]
        where = "the same rows on the stand-in (GPU hidden), in a child process"
    for r in rows:
        r["device_name"] = ("CuPy stand-in (NumPy)" if device == "standin" else
                            "CPU (NumPy)" if device == "cpu" else "CUDA GPU (CuPy)")
    if a.json:
        a.json.write_text(json.dumps({"counted_by": where, "rows": rows}, indent=1) + "\n")
    if a.counts_only:
        return 0
    print(f"device: {rows[0]['device_name'] if rows else device}; preset {a.preset}; "
          f"transfers counted by: {where or '- (NumPy makes none)'}")
    print(f"{'recipe':<11} {'log every':>9} {'steps':>6} {'ms/step':>9} "
          f"{'D2H/step':>9} {'budget':>7} {'H2D/step':>9}")
    for r in rows:
        t, h = r["transfers_per_step"], r["to_device_per_step"]
        print(f"{r['recipe']:<11} {r['log_every']:>9} {r['steps']:>6} {r['ms_per_step']:>9.1f} "
              f"{'-' if t is None else f'{t:.2f}':>9} {r['budget_per_step']:>7.2f} "
              f"{'-' if h is None else f'{h:.1f}':>9}")
    print("D2H: device-to-host transfers (host syncs); H2D: host-to-device copies (the batch, "
          "masks and indices of each step)")
    if device == "standin":
        print("(stand-in times are NumPy's; only the counts say something about a GPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
