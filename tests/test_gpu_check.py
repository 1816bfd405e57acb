"""bench/gpu_check.py, the one prepared GPU check: its help, its refusal without a GPU, and a
whole run on the strict CuPy stand-in at tiny sizes (``--standin --quick``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import minitransformer as mt

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"
STEPS = ["tests", "vit_step", "demo", "preset", "notebooks"]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 300):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


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
    for what in ("-k cuda", "--device cuda", "--preset gpu", "MINITRANSFORMER_DEVICE=cuda",
                 "8 minutes", "report.json"):
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
    assert set(report["steps"]["demo"]["zero_shot"]) >= {"zero_shot_shape", "zero_shot_colour"}
    preset = report["steps"]["preset"]
    assert preset["last_step"] == 3 and preset["loss_last"] is not None
    assert report["steps"]["notebooks"]["passed"] == report["steps"]["notebooks"]["total"] >= 1
    for step in STEPS:  # the table has a row per step
        assert f"| {step} | ok |" in r.stdout


def _load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
