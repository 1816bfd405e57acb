"""bench/dino_diagnostics.py: the per-head attention statistics against plain NumPy loops, the
trajectory's step selection, and a whole run at the tiny shapes preset (seconds)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from .bench_scripts import ROOT, load_bench, run_bench


def load_script():
    return load_bench("dino_diagnostics")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_head_stats_against_loops(seed):
    m = load_script()
    rng = np.random.default_rng(seed)
    B, H, N = 5, 3, 16
    attn = rng.random((B, H, N)) ** 4  # uneven, unnormalised
    attn[0, 1] = 0.0
    attn[0, 1, 7] = 2.0  # one image, one head: all the mass on one patch
    obj = rng.random((B, N)) < 0.3
    obj[:, 0] = True  # every image has some object
    got = m.head_stats(attn, obj)
    for h in range(H):
        mass, ent, tops = 0.0, 0.0, []
        for b in range(B):
            a = attn[b, h] / attn[b, h].sum()
            mass += sum(a[n] for n in range(N) if obj[b, n]) / B
            ent += -sum(v * math.log(v) for v in a if v > 0) / math.log(N) / B
            tops.append(int(np.argmax(a)))
        share = max(tops.count(t) for t in set(tops)) / B
        assert got["object_mass"][h] == pytest.approx(mass, rel=1e-12)
        assert got["entropy"][h] == pytest.approx(ent, rel=1e-12)
        assert got["top_patch_share"][h] == share
        assert got["object_area"][h] == pytest.approx(obj.mean())
    assert got["iou"].shape == (H,) and np.all((got["iou"] >= 0) & (got["iou"] <= 1))


def test_head_stats_extremes():
    """All mass on the object: object mass 1; the same fixed patch for every image: top-patch
    share 1 and entropy 0."""
    m = load_script()
    B, N = 4, 9
    obj = np.zeros((B, N), bool)
    obj[:, 4] = True
    attn = np.full((B, 1, N), 1e-30)
    attn[:, 0, 4] = 1.0
    s = m.head_stats(attn, obj)
    assert s["object_mass"][0] == pytest.approx(1.0)
    assert s["top_patch_share"][0] == 1.0
    assert s["entropy"][0] == pytest.approx(0.0, abs=1e-26)
    assert s["iou"][0] == pytest.approx(1.0)


def test_trajectory_picks_logged_steps_and_evals():
    m = load_script()
    recs = [{"step": s, "loss": 1.0 / s, "teacher_entropy": 0.5, "kl_to_uniform": 0.1,
             "feature_std": 0.03, "ln_K": 5.0} for s in range(1, 12)]
    recs.append({"step": 10, "eval": {"attn_iou_best_head": 0.3}})
    t = m.trajectory(recs, steps=(1, 10, 30))
    assert list(t["steps"]) == [1, 10] and t["steps"][10]["loss"] == pytest.approx(0.1)
    assert t["evals"] == {10: {"attn_iou_best_head": 0.3}} and t["ln_K"] == 5.0


def test_tiny_run_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "minitransformer", "train", "dino", "--preset",
                        "tiny-shapes", "--out", str(run_dir), "--eval-every", "2",
                        "--no-progress"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "d.json"
    r = run_bench("dino_diagnostics", str(run_dir), "--json", str(out), timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())[0]
    assert res["step"] == 6 and res["config"]["seed"] == 0
    assert set(res["heads"]) == {"random init", "teacher", "student"}
    heads = res["config"]["num_heads"]
    for s in res["heads"].values():
        assert len(s["iou"]) == heads
    assert "| teacher | 0 |" in r.stdout and "| 2 |" in r.stdout  # heads and an evaluation
