"""One prepared GPU check (issue 14): everything the GPU path promises, measured in one command.

    python bench/gpu_check.py                      # on a machine with a GPU and CuPy
    python bench/gpu_check.py --out DIR            # the report goes to DIR/report.json
    python bench/gpu_check.py --standin --quick    # no GPU: the strict CuPy stand-in, tiny sizes

On a machine with an NVIDIA GPU and CuPy it runs, in this order, each step in its own
subprocess under its own time limit (a step that fails or runs out of time is recorded and the
next one runs; nothing stops at the first failure):

{steps}

The limits add up to at most {budget:.0f} s (``--budget``; a step never gets more than what is
left of it; one stopped at its limit gets SIGTERM, then SIGKILL 20 s later), so the whole check
finishes within 8 minutes. It also records the GPU's name and
memory, the CuPy, CUDA runtime and driver versions, NumPy's and Python's versions and the
commit. It writes ONE JSON report, ``--out``/report.json (default runs/gpu_check/report.json;
the runs' own files go to ``--out``/work/, cleared first), and prints a short Markdown table.

Without a GPU (``mt.pick_device()`` says why) it prints one line saying so and exits with
status 2, having run nothing. ``--standin`` runs every step on the strict CuPy stand-in of the
test suite (``MINITRANSFORMER_CUPY_STANDIN=tests.cupy_standin``: NumPy underneath, CuPy's
refusals on top; its timings and memory say nothing about a GPU) so that the script itself can
be tested without one; ``--quick`` uses tiny sizes (one test file, one recipe's host syncs
over 2 steps, a 2-step demo, 3 preset steps, one notebook: seconds). Exit status: 0 when every
step passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
STANDIN = "tests.cupy_standin"
DEFAULT_OUT = ROOT / "runs" / "gpu_check"
PRESET_STEPS = 80  # dino's gpu preset: about 1 s per step or less expected on a datacenter GPU
# bench/host_sync.py's rows: every recipe's tiny preset, logged every step and every 10 steps
HOST_SYNC_ARGS = ["--preset", "tiny", "--log-every", "1,10", "--steps", "20", "--warmup", "10"]
HOST_SYNC_QUICK = ["--preset", "tiny", "--recipes", "supervised", "--log-every", "1,2",
                   "--steps", "2", "--warmup", "2"]

# the tests step's selection: the gpu marker (tests/conftest.py puts it on the cuda half of
# every test taking the ``device`` fixture), less slow tests, so that the step's 100 s cover
# the fast device tests alone (none is marked slow today). On the stand-in the selection ran
# in about 4 minutes on 2 shared CPU cores (~80 s of CPU time), all NumPy; on a GPU the same
# arithmetic is tiny and the cost is CuPy's first-use kernel compilation (cached on disk
# afterwards); 100 s for it is an estimate no GPU has checked, and a run stopped at the limit
# still reports the tests it got through (count_pytest_progress).
TESTS_MARKER = "gpu and not slow"

# name -> (time limit in seconds, what it runs). The limits add up to BUDGET (450 s). Adding
# host_sync (100 s) took 20 s from tests (was 120), 10 s from vit_step (40), 10 s from demo
# (60), 30 s from preset (90: it keeps the steps it logged when stopped) and 30 s from
# notebooks (140); no GPU run has timed the steps yet.
STEPS: dict[str, tuple[float, str]] = {
    "tests": (100, "the cuda half of the test suite on the GPU: `python -m pytest -q "
                   f"-p no:cacheprovider -m \"{TESTS_MARKER}\"`: every test marked gpu (the "
                   "cuda half of the device-parameterised tests and the device tests without "
                   "a parameter) but the slow ones (the notebooks run in their own step below); "
                   "pass/fail/skip counts from pytest's last line, or, stopped at the limit, "
                   "from its progress (the limit is an estimate no GPU has timed yet)"),
    "vit_step": (30, "bench/vit_step.py's ViT training step (forward + backward, batch 64) on "
                     "CuPy and on NumPy: median ms per step after warm-up (CuPy synchronised), "
                     "GFLOP/s from vit_step's analytic matmul FLOP count, peak GPU memory "
                     "(CuPy memory pool used/total bytes, sampled after forward and backward)"),
    "host_sync": (100, "`python bench/host_sync.py --device cuda " + " ".join(HOST_SYNC_ARGS)
                       + " --json WORK/host_sync.json`: every recipe trained through train() "
                       "on the GPU, logged every step and every 10 steps: ms per step beside "
                       "device-to-host transfers per step (counted by the same rows on the CuPy "
                       "stand-in in a child with the GPU hidden) against the budget 1/L"),
    "demo": (50, "`python -m minitransformer demo --device cuda --out ...`: wall time and the "
                 "zero-shot accuracies it prints (trained and at random init)"),
    "preset": (60, f"`python -m minitransformer train dino --preset gpu --device cuda --steps "
                    f"{PRESET_STEPS}` (--preset-steps): s/step (median of the logged steps; the "
                    "first, with CuPy's kernel compilation, apart) and the loss, first and last; "
                    "at the limit it is sent SIGTERM (it saves) and what it logged is kept"),
    "notebooks": (110, "every notebook in notebooks/ in tiny mode (MINITRANSFORMER_TINY=1) with "
                       "MINITRANSFORMER_DEVICE=cuda, exercises filled with their solutions as in "
                       "tests/test_notebooks.py, each in a fresh kernel: pass/fail per notebook "
                       "(those left when the step's time is spent are recorded as not run)"),
}
BUDGET = 450.0  # + at most 20 s for a step stopped at its limit to save and exit
NOTEBOOK_LIMIT = 60.0  # one notebook at most


def _help_text() -> str:
    lines = [f"  {i}. {name} (at most {limit:.0f} s): {what}"
             for i, (name, (limit, what)) in enumerate(STEPS.items(), 1)]
    return __doc__.format(steps="\n".join(lines), budget=BUDGET)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/gpu_check.py", description=_help_text(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"folder of report.json and the runs' files (default {DEFAULT_OUT})")
    p.add_argument("--standin", action="store_true",
                   help=f"run every step on the strict CuPy stand-in ({STANDIN}), no GPU needed")
    p.add_argument("--quick", action="store_true", help="tiny sizes: seconds, for testing")
    p.add_argument("--preset-steps", type=int, default=PRESET_STEPS,
                   help=f"steps of the gpu preset's run (default {PRESET_STEPS})")
    p.add_argument("--budget", type=float, default=BUDGET,
                   help=f"seconds for all the steps together (default {BUDGET:.0f})")
    p.add_argument("--only", default="",
                   help=f"comma-separated steps to run (default all: {','.join(STEPS)})")
    # internal: one measurement in a child process, its result as JSON in a file
    p.add_argument("--worker", choices=["vit", "notebook"], help=argparse.SUPPRESS)
    p.add_argument("--notebook", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--limit", type=float, default=NOTEBOOK_LIMIT, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    unknown = [s for s in a.only.split(",") if s and s not in STEPS]
    if unknown:
        p.error(f"--only: unknown step(s) {unknown}; the steps are {list(STEPS)}")
    if a.preset_steps < 1:
        p.error(f"--preset-steps must be >= 1, got {a.preset_steps}")
    if a.budget <= 0:
        p.error(f"--budget must be > 0 seconds, got {a.budget}")
    return a


# --------------------------------------------------------------------------------------------
# subprocesses under a time limit
# --------------------------------------------------------------------------------------------
def run_limited(cmd: list[str], limit: float, env: dict[str, str] | None = None,
                cwd: Path = ROOT) -> dict[str, Any]:
    """Run ``cmd`` in its own process group; at ``limit`` seconds send it SIGTERM (a training
    run saves and exits), and SIGKILL 20 s later. Returns rc, wall time, whether it timed out
    and the output (stdout and stderr together)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                start_new_session=True, text=True)
        timed_out = False
        try:
            rc = proc.wait(timeout=max(limit, 1.0))
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                rc = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
        log.seek(0)
        output = log.read()
    return {"rc": rc, "wall_s": round(time.perf_counter() - t0, 2), "timed_out": timed_out,
            "output": output}


def tail(text: str, n: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-n:])


def child_env(standin: bool, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MINITRANSFORMER_DEVICE", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if standin:
        env["MINITRANSFORMER_CUPY_STANDIN"] = STANDIN
    env.update(extra)
    return env


# --------------------------------------------------------------------------------------------
# the steps
# --------------------------------------------------------------------------------------------
PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)")


def parse_pytest_summary(output: str) -> dict[str, int]:
    """Counts from pytest's last summary line, e.g. ``3 failed, 650 passed, 2 skipped``."""
    for line in reversed(output.strip().splitlines()):
        found = PYTEST_COUNT.findall(line)
        if found:
            counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
            for n, what in found:
                counts["errors" if what.startswith("error") else what] = int(n)
            return counts
    return {}


PYTEST_PROGRESS = re.compile(r"^([.FsExX]+)\s*(\[\s*\d+%\])?$")


def count_pytest_progress(output: str) -> dict[str, int]:
    """Counts from pytest's progress characters (``.`` passed, ``F`` failed, ``s`` skipped,
    ``E`` error), for a run stopped by its time limit before its summary line."""
    chars = "".join(m[1] for m in map(PYTEST_PROGRESS.match, output.splitlines()) if m)
    return {"passed": chars.count("."), "failed": chars.count("F"),
            "skipped": chars.count("s"), "errors": chars.count("E")}


def step_tests(a: argparse.Namespace, limit: float, work: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", TESTS_MARKER]
    if a.quick:
        cmd.append("tests/test_backend.py")
    r = run_limited(cmd, limit, child_env(a.standin))
    counts = parse_pytest_summary(r["output"])
    if not counts and r["timed_out"]:  # stopped before its summary: the tests it got through
        counts = {**count_pytest_progress(r["output"]), "partial": True}
    failed = [ln[len("FAILED "):].split(" - ")[0] for ln in r["output"].splitlines()
              if ln.startswith(("FAILED ", "ERROR "))]
    ok = (not r["timed_out"] and r["rc"] == 0 and bool(counts) and counts.get("passed", 0) > 0)
    return {"ok": ok, "command": shlex.join(cmd[1:]), "rc": r["rc"], "wall_s": r["wall_s"],
            "timed_out": r["timed_out"], **counts, "failed_tests": failed[:50],
            "output_tail": tail(r["output"])}


def step_vit(a: argparse.Namespace, limit: float, work: Path) -> dict[str, Any]:
    result = work / "vit_step.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "vit",
           "--result", str(result)] + (["--quick"] if a.quick else [])
    r = run_limited(cmd, limit, child_env(a.standin))
    rec: dict[str, Any] = {"ok": False}
    if result.exists():
        rec = json.loads(result.read_text())
        rec["ok"] = r["rc"] == 0 and not r["timed_out"] and "cuda" in rec and "cpu" in rec
    rec.update(rc=r["rc"], wall_s=r["wall_s"], timed_out=r["timed_out"])
    if not rec["ok"]:
        rec["output_tail"] = tail(r["output"])
    return rec


def vit_worker(a: argparse.Namespace) -> None:
    """In the child: the ViT step of bench/vit_step.py on CuPy, then on NumPy."""
    sys.path.insert(0, str(BENCH))
    import vit_step  # bench/vit_step.py: the model, its FLOP count and its timing helper

    sizes = (["--img", "16", "--dim", "24", "--depth", "2", "--heads", "2", "--batch", "8",
              "--steps", "3", "--warmup", "1"] if a.quick else ["--steps", "10", "--warmup", "3"])
    va = vit_step.parse_args(sizes)
    fwd = vit_step.forward_gemms(va)
    flops = sum(g.flops for g in fwd + vit_step.backward_gemms(fwd))
    out: dict[str, Any] = {
        "model": {k: getattr(va, k) for k in ("img", "patch", "dim", "depth", "heads", "batch",
                                               "classes")},
        "gflop_per_step": flops / 1e9,
        "flops_note": "vit_step's analytic count: every matmul of forward + backward, 2 M K N "
                      "each (elementwise work left out)",
        "steps": va.steps, "warmup": va.warmup,
    }

    def save() -> None:
        a.result.write_text(json.dumps(out, indent=1))

    for device in ("cuda", "cpu"):
        out[device] = time_vit_step(vit_step, va, device, flops)
        save()
    out["cuda_speedup"] = out["cpu"]["ms_per_step"] / out["cuda"]["ms_per_step"]
    save()


def time_vit_step(vit_step: Any, va: argparse.Namespace, device: str, flops: int
                  ) -> dict[str, Any]:
    """bench/vit_step.py's model and batch (``build``), moved to ``device``, and its training
    step (zero_grad, cross-entropy, backward) timed with its ``median_ms``; on cuda the stream
    is synchronised after each step and the memory pool sampled after forward and backward."""
    import minitransformer as mt
    from minitransformer import functional as F

    cp = mt.backend.cupy()
    model, x, y = vit_step.build(va)  # on the host
    on_gpu = device == "cuda"
    peak = {"used": 0, "total": 0}
    if on_gpu:
        model.to("cuda")
        x = x.to("cuda")
        y = mt.backend.to_device(y, "cuda")
        pool = cp.get_default_memory_pool()
        stream = cp.cuda.get_current_stream()
        pool.free_all_blocks()

    def sample() -> None:
        if on_gpu:
            peak["used"] = max(peak["used"], pool.used_bytes())
            peak["total"] = max(peak["total"], pool.total_bytes())

    def train_step() -> None:
        model.zero_grad()
        loss = F.cross_entropy(model(x), y)
        sample()  # the activations are all alive here
        loss.backward()
        sample()
        if on_gpu:
            stream.synchronize()

    ms, cpu_ms = vit_step.median_ms(train_step, va.steps, va.warmup)
    rec: dict[str, Any] = {"ms_per_step": ms, "cpu_ms_per_step": cpu_ms,
                           "gflops": flops / ms / 1e6}
    if on_gpu:
        rec["peak_pool_used_bytes"] = peak["used"]
        rec["peak_pool_total_bytes"] = peak["total"]
        if getattr(cp, "IS_STANDIN", False):  # the stand-in counts device-to-host copies
            cp.reset_transfers()
            train_step()
            rec["host_transfers_per_step"] = cp.transfers()
    return rec


DEMO_ROW = re.compile(r"^\s+(\w+)\s+(-?[\d.]+(?:e-?\d+)?)\s+(-?[\d.]+(?:e-?\d+)?)\s*$")


def step_host_sync(a: argparse.Namespace, limit: float, work: Path) -> dict[str, Any]:
    """bench/host_sync.py's table as JSON rows: per recipe and logging interval L, the ms per
    step and the device-to-host transfers per step (budget 1/L). On the stand-in
    (``--standin``) it runs with ``--device standin``: host_sync's ``cuda`` means real CuPy."""
    result = work / "host_sync.json"
    cmd = [sys.executable, str(BENCH / "host_sync.py"),
           "--device", "standin" if a.standin else "cuda",
           *(HOST_SYNC_QUICK if a.quick else HOST_SYNC_ARGS), "--json", str(result)]
    r = run_limited(cmd, limit, child_env(a.standin))
    data = json.loads(result.read_text()) if result.exists() else {}
    rows = [{k: row.get(k) for k in ("recipe", "log_every", "steps", "ms_per_step",
                                     "transfers_per_step", "to_device_per_step",
                                     "budget_per_step")} for row in data.get("rows", [])]
    over = [f"{row['recipe']} L={row['log_every']}: {row['transfers_per_step']}" for row in rows
            if row["transfers_per_step"] is None
            or row["transfers_per_step"] > row["budget_per_step"] + 1e-9]
    ok = r["rc"] == 0 and not r["timed_out"] and bool(rows) and not over
    rec: dict[str, Any] = {"ok": ok, "command": " ".join(cmd[1:]), "rc": r["rc"],
                           "wall_s": r["wall_s"], "timed_out": r["timed_out"],
                           "counted_by": data.get("counted_by"), "rows": rows,
                           "over_budget": over}
    if not ok:
        rec["output_tail"] = tail(r["output"])
    return rec


def step_demo(a: argparse.Namespace, limit: float, work: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "minitransformer", "demo", "--device", "cuda",
           "--out", str(work / "demo"), "--no-progress"]
    if a.quick:
        cmd += ["--preset", "tiny", "--steps", "2"]
    r = run_limited(cmd, limit, child_env(a.standin))
    trained, random_init = {}, {}
    for line in r["output"].splitlines():
        m = DEMO_ROW.match(line)
        if m:
            trained[m[1]], random_init[m[1]] = float(m[2]), float(m[3])
    steps = re.search(r"trained (\d+) steps in ([\d.]+) s", r["output"])
    ok = r["rc"] == 0 and not r["timed_out"] and bool(trained)
    rec = {"ok": ok, "command": " ".join(cmd[1:]), "rc": r["rc"], "wall_s": r["wall_s"],
           "timed_out": r["timed_out"], "zero_shot": trained, "zero_shot_random_init": random_init,
           "train_steps": int(steps[1]) if steps else None,
           "train_s": float(steps[2]) if steps else None}
    if not ok:
        rec["output_tail"] = tail(r["output"])
    return rec


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; a line cut by a kill is skipped."""
    records = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return records


def step_preset(a: argparse.Namespace, limit: float, work: Path) -> dict[str, Any]:
    run = work / "dino-gpu"
    preset, steps = ("tiny", 3) if a.quick else ("gpu", a.preset_steps)
    cmd = [sys.executable, "-m", "minitransformer", "train", "dino", "--preset", preset,
           "--device", "cuda", "--steps", str(steps), "--out", str(run), "--no-progress"]
    r = run_limited(cmd, limit, child_env(a.standin))
    records = read_metrics(run / "metrics.jsonl")
    train = [rec for rec in records if "loss" in rec and "sec" in rec]
    evals = [rec["eval"] for rec in records if "eval" in rec]
    secs = [rec["sec"] for rec in train]
    rec: dict[str, Any] = {
        "command": " ".join(cmd[1:]), "rc": r["rc"], "wall_s": r["wall_s"],
        "timed_out": r["timed_out"], "steps_asked": steps,
        "steps_logged": len(train), "last_step": train[-1]["step"] if train else 0,
        "first_step_s": secs[0] if secs else None,
        "s_per_step": statistics.median(secs[1:]) if len(secs) > 1 else None,
        "loss_first": train[0]["loss"] if train else None,
        "loss_last": train[-1]["loss"] if train else None,
        "final_eval": evals[-1] if evals else None,
    }
    # stopped by the limit (SIGTERM: it saves, exit 143) still measured the steps it logged
    rec["ok"] = bool(train) and (r["rc"] == 0 or (r["timed_out"] and r["rc"] == 143))
    if r["rc"] != 0:
        rec["output_tail"] = tail(r["output"])
    return rec


def step_notebooks(a: argparse.Namespace, limit: float, work: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from tests.test_notebooks import KERNEL_NAME, NOTEBOOKS

    notebooks = NOTEBOOKS[1:2] if a.quick else NOTEBOOKS  # quick: 01_self_attention
    spec_dir = work / "jupyter" / "kernels" / KERNEL_NAME  # this interpreter as the kernel
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "minitransformer gpu check", "language": "python"}))
    env = child_env(a.standin, MINITRANSFORMER_DEVICE="cuda", MINITRANSFORMER_TINY="1",
                    MPLBACKEND="module://matplotlib_inline.backend_inline",
                    JUPYTER_PATH=os.pathsep.join(filter(None, [str(work / "jupyter"),
                                                               os.environ.get("JUPYTER_PATH")])))
    t_end = time.perf_counter() + limit
    results: dict[str, Any] = {}
    for path in notebooks:
        left = t_end - time.perf_counter()
        if left < 5:
            results[path.name] = {"status": "not run", "why": "the step's time was spent"}
            continue
        out = work / f"notebook-{path.stem}.json"
        nb_limit = min(NOTEBOOK_LIMIT, left)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "notebook",
               "--notebook", str(path), "--result", str(out), "--limit", f"{nb_limit:.0f}"]
        r = run_limited(cmd, nb_limit, env)
        ok = r["rc"] == 0 and not r["timed_out"] and out.exists()
        results[path.name] = {"status": "passed" if ok else
                              ("timed out" if r["timed_out"] else "failed"),
                              "wall_s": r["wall_s"]}
        if not ok:
            results[path.name]["output_tail"] = tail(r["output"], 15)
    passed = sum(v["status"] == "passed" for v in results.values())
    return {"ok": passed == len(notebooks), "passed": passed, "total": len(notebooks),
            "notebooks": results}


def notebook_worker(a: argparse.Namespace) -> None:
    """In the child: one notebook, its exercises filled with their solutions, on the device
    MINITRANSFORMER_DEVICE names; the last cell checks that it really ran on cuda."""
    import nbclient
    import nbformat

    sys.path.insert(0, str(ROOT))
    from tests.test_notebooks import KERNEL_NAME, NOTEBOOK_DIR, fill_with_solutions

    nb = nbformat.read(a.notebook, as_version=4)
    fill_with_solutions(nb)
    nb.cells.append(nbformat.v4.new_code_cell(
        "import minitransformer as _mt\n"
        "assert device == 'cuda' and _mt.cuda_available(), (device, _mt.pick_device())"))
    def stop(signum: int, frame: Any) -> None:  # the parent's limit: shut the kernel down
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    # a cell running past the limit is stopped by nbclient itself, which shuts the kernel down
    nbclient.NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=max(int(a.limit) - 10, 5),
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()
    a.result.write_text(json.dumps({"notebook": a.notebook.name, "status": "passed"}))


RUNNERS = {"tests": step_tests, "vit_step": step_vit, "host_sync": step_host_sync,
           "demo": step_demo,
           "preset": step_preset, "notebooks": step_notebooks}


# --------------------------------------------------------------------------------------------
# the machine
# --------------------------------------------------------------------------------------------
def machine_info(cp: Any) -> dict[str, Any]:
    import numpy as np

    info: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__,
                            "cupy": getattr(cp, "__version__", None),
                            "standin": bool(getattr(cp, "IS_STANDIN", False)),
                            "host": platform.node()}
    try:
        props = cp.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
        info["gpu_memory_bytes"] = int(props.get("totalGlobalMem", 0))
    except Exception as e:  # recorded, not fatal
        info["gpu"] = f"unknown ({type(e).__name__}: {e})"
    for key, fn in (("cuda_runtime", "runtimeGetVersion"), ("cuda_driver_api", "driverGetVersion")):
        try:
            v = int(getattr(cp.cuda.runtime, fn)())
            info[key] = f"{v // 1000}.{v % 1000 // 10}"
        except Exception:
            info[key] = None
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=15)
        info["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, IndexError):
        info["driver"] = None
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, text=True,
                                        capture_output=True, timeout=15).stdout.strip() or None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, text=True, capture_output=True, timeout=15).stdout
        info["worktree_modified"] = bool(dirty.strip())
    except (OSError, subprocess.TimeoutExpired):
        info["commit"] = None
    return info


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------
def _fmt(v: Any, spec: str = ".3g") -> str:
    return "-" if v is None else format(v, spec)


def summary(name: str, rec: dict[str, Any]) -> str:
    """One cell of the table: the step's headline numbers."""
    if "error" in rec:
        return f"error: {rec['error']}"
    if name == "tests":
        return (f"{rec.get('passed', 0)} passed, {rec.get('failed', 0)} failed, "
                f"{rec.get('skipped', 0)} skipped, {rec.get('errors', 0)} errors")
    if name == "vit_step" and "cuda" in rec and "cpu" in rec:
        g, c = rec["cuda"], rec["cpu"]
        mem = g.get("peak_pool_used_bytes", 0) / 2**20
        return (f"CuPy {g['ms_per_step']:.1f} ms ({g['gflops']:.0f} GFLOP/s, peak "
                f"{mem:.0f} MiB used) vs NumPy {c['ms_per_step']:.1f} ms "
                f"({c['gflops']:.1f} GFLOP/s): {rec['cuda_speedup']:.1f}x")
    if name == "host_sync" and rec.get("rows"):
        by_recipe: dict[str, list[dict[str, Any]]] = {}
        for row in rec["rows"]:
            by_recipe.setdefault(row["recipe"], []).append(row)
        first = next(iter(by_recipe.values()))
        intervals = "/".join(str(row["log_every"]) for row in first)
        cells = [f"{name_} " + "/".join(_fmt(row["ms_per_step"], ".1f") for row in rows)
                 + " ms, " + "/".join(_fmt(row["transfers_per_step"], ".2f") for row in rows)
                 for name_, rows in by_recipe.items()]
        return (f"ms/step and D2H transfers/step at log every {intervals}: " + "; ".join(cells)
                + (f"; over budget: {', '.join(rec['over_budget'])}" if rec["over_budget"]
                   else ""))
    if name == "demo":
        zs = ", ".join(f"{k.removeprefix('zero_shot_')} {v:.3f}"
                       for k, v in rec["zero_shot"].items())
        return f"zero-shot {zs or '-'}"
    if name == "preset":
        return (f"{rec['last_step']}/{rec['steps_asked']} steps, {_fmt(rec['s_per_step'])} "
                f"s/step (first {_fmt(rec['first_step_s'])} s), loss "
                f"{_fmt(rec['loss_first'], '.4f')} -> {_fmt(rec['loss_last'], '.4f')}")
    if name == "notebooks" and "notebooks" in rec:
        bad = [k for k, v in rec["notebooks"].items() if v["status"] != "passed"]
        return f"{rec['passed']}/{rec['total']} passed" + (f"; not: {', '.join(bad)}" if bad
                                                           else "")
    return "-"


def table(report: dict[str, Any]) -> str:
    m = report["machine"]
    rows = [f"GPU check on {m.get('gpu')} (CuPy {m.get('cupy')}, CUDA {m.get('cuda_runtime')}, "
            f"driver {m.get('driver')}, NumPy {m.get('numpy')}), commit "
            f"{(m.get('commit') or '?')[:10]}" + (" (stand-in: no GPU)" if m.get("standin")
                                                 else ""),
            "", "| step | result | wall s | limit s | numbers |", "|---|---|---|---|---|"]
    for name, rec in report["steps"].items():
        status = "ok" if rec.get("ok") else ("timed out" if rec.get("timed_out") else "FAILED")
        rows.append(f"| {name} | {status} | {_fmt(rec.get('step_wall_s'), '.1f')} | "
                    f"{rec.get('limit_s', 0):.0f} | {summary(name, rec)} |")
    return "\n".join(rows)


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.worker == "vit":
        vit_worker(a)
        return 0
    if a.worker == "notebook":
        notebook_worker(a)
        return 0

    os.environ.pop("MINITRANSFORMER_DEVICE", None)  # the check asks the machine, not the env
    if a.standin:
        os.environ["MINITRANSFORMER_CUPY_STANDIN"] = STANDIN
        sys.path.insert(0, str(ROOT))  # tests.cupy_standin from this checkout
    sys.path.insert(0, str(ROOT))
    import minitransformer as mt

    device, why = mt.pick_device()
    if device != "cuda":
        print(f"gpu_check: no GPU is visible, nothing run: {why}", file=sys.stderr)
        return 2

    t_start = time.perf_counter()
    out = a.out.resolve()
    work = out / "work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "command": " ".join(sys.argv), "quick": a.quick,
                              "pick_device": why, "machine": machine_info(mt.backend.cupy()),
                              "steps": {}}
    chosen = [s for s in a.only.split(",") if s] or list(STEPS)
    for name, (limit, _) in STEPS.items():
        if name not in chosen:
            continue
        left = a.budget - (time.perf_counter() - t_start)
        use = min(limit, left)
        print(f"[{time.perf_counter() - t_start:6.1f} s] {name} (limit {use:.0f} s) ...",
              flush=True)
        t0 = time.perf_counter()
        if use < 5:
            rec: dict[str, Any] = {"ok": False, "error": "not run: the time budget was spent"}
        else:
            try:
                rec = RUNNERS[name](a, use, work)
            except Exception as e:  # the check goes on; the failure is in the report
                rec = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        rec["limit_s"] = use
        rec["step_wall_s"] = round(time.perf_counter() - t0, 2)
        report["steps"][name] = rec
        write_json_atomic(out / "report.json", report)  # a later crash keeps what was measured
    report["total_s"] = round(time.perf_counter() - t_start, 2)
    report["all_ok"] = all(r.get("ok") for r in report["steps"].values())
    report["table"] = table(report)
    write_json_atomic(out / "report.json", report)
    print(report["table"])
    print(f"\nreport: {out / 'report.json'} ({report['total_s']:.0f} s)")
    return 0 if report["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
