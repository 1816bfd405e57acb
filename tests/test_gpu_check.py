"""bench/gpu_check.py, the one prepared GPU check: its help, its refusal without a GPU, and a
whole run on the strict CuPy stand-in at tiny sizes (``--standin --quick``)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

import minitransformer as mt

from .bench_scripts import ROOT, load_bench, run_bench

STEPS = ["tests", "vit_step", "host_sync", "demo", "preset", "notebooks"]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 300):
    return run_bench("gpu_check", *args, env=env, timeout=timeout)


def env_without_gpu_overrides() -> dict[str, str]:
    env = dict(os.environ)
    for var in ("MINITRANSFORMER_CUPY_STANDIN", "MINITRANSFORMER_DEVICE"):
        env.pop(var, None)
    return env


def test_help_works_without_a_gpu_and_names_every_step_with_its_limit():
    r = run("--help", env=env_without_gpu_overrides())
    assert r.returncode == 0, r.stderr
    for i, step in enumerate(STEPS, 1):
        assert f"{i}. {step} (at most " in r.stdout, step
    for what in ('-m "gpu and not slow"', "--device cuda", "--preset gpu",
                 "MINITRANSFORMER_DEVICE=cuda", "8 minutes", "report.json", "bench/host_sync.py",
                 "--log-every 1,10", "notebooks run in their own step"):
        assert what in r.stdout, what


def test_without_a_gpu_it_prints_one_line_and_exits_2(tmp_path):
    if mt.cuda_available():
        pytest.skip("a GPU is visible: the check would run")
    r = run("--out", str(tmp_path), env=env_without_gpu_overrides())
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert "no GPU is visible" in lines[0] and mt.pick_device()[1] in lines[0]
    assert not any(tmp_path.iterdir()), "nothing may be written without a GPU"


def test_bad_arguments_are_one_usage_error():
    r = run("--only", "tests,nonsense")
    assert r.returncode == 2 and "nonsense" in r.stderr


@pytest.mark.slow
def test_standin_quick_run_writes_a_report_with_every_step(tmp_path):
    r = run("--standin", "--quick", "--out", str(tmp_path), env=env_without_gpu_overrides())
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert list(report["steps"]) == STEPS
    assert report["all_ok"] and all(rec["ok"] for rec in report["steps"].values())
    assert report["machine"]["standin"] is True and report["machine"]["commit"]
    tests = report["steps"]["tests"]
    assert tests["passed"] > 0 and tests["failed"] == 0
    vit = report["steps"]["vit_step"]
    for device in ("cuda", "cpu"):
        assert vit[device]["ms_per_step"] > 0 and vit[device]["gflops"] > 0
    assert vit["cuda"]["host_transfers_per_step"] >= 0
    sync = report["steps"]["host_sync"]
    assert [(r["recipe"], r["log_every"]) for r in sync["rows"]] == [("supervised", 1),
                                                                    ("supervised", 2)]
    for row in sync["rows"]:  # counted on the stand-in: one read per logging interval
        assert row["ms_per_step"] > 0
        assert row["transfers_per_step"] == pytest.approx(1 / row["log_every"])
    assert sync["over_budget"] == [] and sync["counted_by"] == "stand-in counter"
    assert set(report["steps"]["demo"]["zero_shot"]) >= {"zero_shot_shape", "zero_shot_colour"}
    preset = report["steps"]["preset"]
    assert preset["last_step"] == 3 and preset["loss_last"] is not None
    assert report["steps"]["notebooks"]["passed"] == report["steps"]["notebooks"]["total"] >= 1
    for step in STEPS:  # the table has a row per step
        assert f"| {step} | ok |" in r.stdout


def test_the_tests_step_selects_the_gpu_marker_not_names(tmp_path, monkeypatch):
    """The cuda half is what the gpu marker selects (tests/conftest.py puts it on the cuda
    parameter of every test taking ``device``; device tests without the parameter carry it
    themselves), slow tests left to their own steps: not ``-k cuda``, which misses marked
    tests without "cuda" in their names and takes unmarked ones that have it."""
    gc = _load_script()
    seen = {}

    def fake(cmd, limit, env=None, cwd=None):
        seen["cmd"] = cmd
        return {"rc": 0, "wall_s": 1.0, "timed_out": False, "output": "3 passed in 1.00s"}

    monkeypatch.setattr(gc, "run_limited", fake)
    rec = gc.step_tests(gc.parse_args([]), 100, tmp_path)
    cmd = seen["cmd"]
    assert cmd[cmd.index("pytest") + 1:].count("-m") == 1
    assert cmd[len(cmd) - 1 - cmd[::-1].index("-m") + 1] == "gpu and not slow"
    assert "-k" not in seen["cmd"] and rec["ok"] and rec["passed"] == 3
    assert rec["command"].endswith("-m 'gpu and not slow'")


def test_the_ci_script_runs_the_cuda_half_by_marker():
    commands = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines()
                if ln.startswith("python -m pytest")]
    assert "python -m pytest -q -p no:cacheprovider --cupy-standin -m gpu" in commands
    assert not any(" -k " in ln for ln in commands), commands


def test_the_limits_fit_the_8_minute_budget():
    """The steps' limits add up to at most the budget, and the budget plus the 20 s a step
    stopped at its limit may take to exit stays within the 8 minutes."""
    gc = _load_script()
    assert list(gc.STEPS) == STEPS
    assert sum(limit for limit, _ in gc.STEPS.values()) <= gc.BUDGET
    assert gc.BUDGET + 20 <= 8 * 60


def _fake_host_sync(gc, monkeypatch, rows, rc=0):
    """host_sync's child replaced: it writes ``rows`` where --json says and exits with rc."""
    def fake(cmd, limit, env=None, cwd=None):
        path = Path(cmd[cmd.index("--json") + 1])
        path.write_text(json.dumps({"counted_by": "test", "rows": rows}))
        return {"rc": rc, "wall_s": 0.1, "timed_out": False, "output": "fake"}
    monkeypatch.setattr(gc, "run_limited", fake)


def _row(recipe, L, ms, transfers):
    return {"recipe": recipe, "log_every": L, "steps": 20, "ms_per_step": ms,
            "transfers_per_step": transfers, "to_device_per_step": 2.0,
            "budget_per_step": 1 / L, "device_name": "test"}


def test_host_sync_step_runs_the_bench_and_reports_ms_beside_transfers(tmp_path, monkeypatch):
    gc = _load_script()
    rows = [_row("mlm", 1, 12.5, 1.0), _row("mlm", 10, 4.25, 0.1),
            _row("dino", 1, 30.0, 1.0), _row("dino", 10, 20.0, 0.1)]
    _fake_host_sync(gc, monkeypatch, rows)
    a = gc.parse_args([])
    rec = gc.step_host_sync(a, 100, tmp_path)
    assert rec["ok"] and rec["over_budget"] == [] and len(rec["rows"]) == 4
    for flag in ("--device cuda", "--preset tiny", "--log-every 1,10", "--steps 20",
                 "--warmup 10", f"--json {tmp_path / 'host_sync.json'}"):
        assert flag in rec["command"], flag
    cell = gc.summary("host_sync", rec)
    assert "log every 1/10" in cell
    assert "mlm 12.5/4.2 ms, 1.00/0.10" in cell and "dino 30.0/20.0 ms, 1.00/0.10" in cell


def test_host_sync_step_fails_when_a_recipe_is_over_budget(tmp_path, monkeypatch):
    gc = _load_script()
    _fake_host_sync(gc, monkeypatch, [_row("clip", 1, 9.0, 1.0), _row("clip", 10, 8.0, 0.3)])
    rec = gc.step_host_sync(gc.parse_args(["--standin", "--quick"]), 100, tmp_path)
    assert not rec["ok"] and rec["over_budget"] == ["clip L=10: 0.3"]
    assert "--device standin" in rec["command"] and "--recipes supervised" in rec["command"]
    assert "over budget: clip L=10: 0.3" in gc.summary("host_sync", rec)
    _fake_host_sync(gc, monkeypatch, [], rc=1)  # the bench crashed before writing its rows
    assert not gc.step_host_sync(gc.parse_args([]), 100, tmp_path)["ok"]


def _load_script():
    return load_bench("gpu_check")


def test_a_failing_step_is_recorded_and_the_next_steps_still_run(tmp_path, monkeypatch):
    gc = _load_script()
    monkeypatch.delenv("MINITRANSFORMER_DEVICE", raising=False)
    monkeypatch.setattr(mt, "pick_device", lambda: ("cuda", "injected for the test"))
    monkeypatch.setattr(gc, "machine_info", lambda cp: {"gpu": "none (test)"})
    ran = []

    def broken(a, limit, work):
        ran.append("tests")
        raise RuntimeError("injected failure")

    def fine(name):
        def runner(a, limit, work):
            ran.append(name)
            assert 0 < limit <= gc.STEPS[name][0]
            return {"ok": True}
        return runner

    runners = {name: fine(name) for name in STEPS}
    runners["tests"] = broken
    monkeypatch.setattr(gc, "RUNNERS", runners)
    monkeypatch.setattr(gc, "summary", lambda name, rec: "-")
    assert gc.main(["--out", str(tmp_path)]) == 1
    assert ran == STEPS
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["steps"]["tests"] == {"ok": False, "error": "RuntimeError: injected failure",
                                        "limit_s": gc.STEPS["tests"][0],
                                        "step_wall_s": report["steps"]["tests"]["step_wall_s"]}
    assert all(report["steps"][s]["ok"] for s in STEPS[1:]) and not report["all_ok"]


def test_a_step_past_its_limit_is_stopped_and_recorded():
    gc = _load_script()
    r = gc.run_limited([sys.executable, "-c", "import time; print('started', flush=True); "
                        "time.sleep(60)"], limit=1.5)
    assert r["timed_out"] and r["wall_s"] < 30 and "started" in r["output"]
    assert r["rc"] == -15  # SIGTERM reached it


def test_pytest_summary_line_is_parsed():
    gc = _load_script()
    out = "....\nFAILED tests/x.py::t - boom\n= 2 failed, 650 passed, 3 skipped, 1 error in 40s ="
    assert gc.parse_pytest_summary(out) == {"passed": 650, "failed": 2, "skipped": 3,
                                            "errors": 1}
    assert gc.parse_pytest_summary("no summary here") == {}


def test_pytest_progress_of_a_run_cut_by_its_limit_is_counted():
    gc = _load_script()
    out = "a line that is not progress\n..F.s.E..s                                  [ 42%]\n...."
    assert gc.count_pytest_progress(out) == {"passed": 10, "failed": 1, "skipped": 2,
                                             "errors": 1}
