"""bench/outcomes.py: the per-seed table of issue 15 (``--seeds``) at the tiny presets
(seconds), its statistics against NumPy on the saved raw numbers, the per-seed bars against
each seed's own random init, the paired DINOv2 comparison, and the single-seed behaviour."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from .bench_scripts import load_bench, run_bench


def load_script():
    return load_bench("outcomes")


def run(*args: str) -> subprocess.CompletedProcess:
    return run_bench("outcomes", *args)


def row(out: str, first_cell: str) -> list[str]:
    """The cells of the Markdown row whose first cell is ``first_cell``."""
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in\n{out}")


def test_seeds_tiny_end_to_end(tmp_path):
    """Two seeds of dino-shapes and dinov2 at the tiny presets: per-seed runs on disk, raw
    numbers in the JSON (each seed's own random init), and the printed mean, sd (n - 1),
    worst and paired lead recomputed here with NumPy from those raw numbers."""
    out = tmp_path / "o"
    r = run("dino-shapes", "dinov2", "--preset", "tiny", "--seeds", "3", "5", "--out",
            str(out))
    assert r.returncode == 0, r.stderr
    saved = json.loads((out / "outcomes.json").read_text())
    for name in ("dino-shapes", "dinov2"):
        assert sorted(saved[name]["runs"]) == ["3", "5"]
        for s in ("3", "5"):
            run_ = saved[name]["runs"][s]
            assert run_["seed"] == int(s) and run_["steps"] == 6
            assert (out / name / f"seed-{s}" / "metrics.jsonl").exists()
            assert set(run_["trained"]) == set(run_["baseline"])
    # the two seeds draw different data: their random-init metrics differ
    b = [saved["dino-shapes"]["runs"][s]["baseline"]["attn_iou_mean"] for s in ("3", "5")]
    assert b[0] != b[1]

    cells = row(r.stdout, "attn_iou_best_head")  # the first such row is dino-shapes'
    t = np.array([saved["dino-shapes"]["runs"][s]["trained"]["attn_iou_best_head"]
                  for s in ("3", "5")])
    rb = np.array([saved["dino-shapes"]["runs"][s]["baseline"]["attn_iou_best_head"]
                   for s in ("3", "5")])
    assert cells[1] == f"{t[0]:.3f} ({rb[0]:.3f})"
    assert cells[2] == f"{t[1]:.3f} ({rb[1]:.3f})"
    assert cells[3] == f"{t.mean():.3f} ± {t.std(ddof=1):.3f} ({rb.mean():.3f})"
    assert cells[4] == f"{t.min():.3f}"
    # the bars: each seed against the random init of the same seed
    fails = [s for s, x, y in zip(("3", "5"), t, rb) if not (x >= 0.5 and x >= 2 * y)]
    assert fails  # six tiny steps cannot reach the bar

    d = np.array([saved["dinov2"]["runs"][s]["trained"]["patch_seg_miou"]
                  - saved["dino-shapes"]["runs"][s]["trained"]["patch_seg_miou"]
                  for s in ("3", "5")])
    lead = row(r.stdout, "lead over dino-shapes (patch mIoU)")
    assert lead[1:3] == [f"{d[0]:+.3f}", f"{d[1]:+.3f}"]
    assert lead[3] == f"{d.mean():+.3f} ± {d.std(ddof=1) / np.sqrt(2):.3f} (SE)"

    # --table reprints the same table from the JSON alone
    again = run("dino-shapes", "dinov2", "--table", "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == r.stdout.split("\n\n", 1)[1].strip()


def test_single_seed_behaviour_kept(tmp_path):
    """Without --seeds: one run in OUT/<name>, the old entry and the old table."""
    out = tmp_path / "o"
    r = run("dino", "--preset", "tiny", "--out", str(out))
    assert r.returncode == 0, r.stderr
    saved = json.loads((out / "outcomes.json").read_text())
    assert "runs" not in saved["dino"] and saved["dino"]["steps"] == 6
    assert (out / "dino" / "metrics.jsonl").exists()
    assert "| outcome | metric | trained | random init | bar | pass | train time |" in r.stdout
    acc = saved["dino"]["trained"]["knn_acc"]
    assert row(r.stdout, "dino")[2] == f"{acc:.3f}"


def fake(trained: dict, baseline: dict, preset: str = "cpu-shapes") -> dict:
    return {"trained": trained, "baseline": baseline, "preset": preset}


def test_per_seed_bar_uses_the_same_seeds_random_init():
    """0.55 passes >= 0.5 and is >= 2x the *mean* random init (0.25) but not 2x its own
    seed's (0.30): the bar fails on that seed, and the table names it."""
    m = load_script()
    runs = {"1": fake({"attn_iou_best_head": 0.60, "attn_iou_mean": 0.4, "patch_seg_miou": 0.4},
                      {"attn_iou_best_head": 0.20, "attn_iou_mean": 0.2, "patch_seg_miou": 0.3}),
            "2": fake({"attn_iou_best_head": 0.55, "attn_iou_mean": 0.4, "patch_seg_miou": 0.4},
                      {"attn_iou_best_head": 0.30, "attn_iou_mean": 0.2, "patch_seg_miou": 0.3})}
    results = {"dino-shapes": {"preset": "cpu-shapes", "overrides": {}, "runs": runs}}
    out = m.seeds_table(results, ["dino-shapes"])
    cells = row(out, "attn_iou_best_head")
    assert cells[4] == "0.550"  # worst seed
    first = [ln for ln in out.splitlines() if ">= 0.5 |" in ln][0]
    assert first.rstrip(" |").endswith("| yes")
    second = [ln for ln in out.splitlines() if "2x random" in ln][0]
    assert second.rstrip(" |").endswith("**no** (seed 2)")


def test_summary_rows_against_numpy():
    """The summary (the README's table): per outcome the random init's mean, the trained
    mean ± sd (n - 1) and worst seed, the bars over every seed (the failing seeds named),
    the CPU time's mean and largest, and dinov2's paired lead, each recomputed with NumPy."""
    m = load_script()
    rng = np.random.default_rng(0)
    seeds = ["3", "7", "9"]
    acc, acc0 = rng.uniform(0.95, 1.0, 3), rng.uniform(0.05, 0.15, 3)
    cpu = rng.uniform(100, 300, 3)
    sup = {s: {**fake({"test_acc": a}, {"test_acc": b}, "cpu"), "train_cpu_s": c}
           for s, a, b, c in zip(seeds, acc, acc0, cpu)}
    keys = ("attn_iou_best_head", "attn_iou_mean", "patch_seg_miou")
    iou, miou2 = rng.uniform(0.3, 0.8, 3), rng.uniform(0.3, 0.5, 3)
    miou1 = miou2 - rng.uniform(0.0, 0.02, 3)
    dino = {s: fake(dict(zip(keys, (x, x, y))), dict(zip(keys, (0.2, 0.2, 0.3))))
            for s, x, y in zip(seeds, iou, miou1)}
    v2 = {s: fake({"patch_seg_miou": y, "attn_iou_best_head": 0.5},
                  {"patch_seg_miou": 0.3, "attn_iou_best_head": 0.2}, "cpu")
          for s, y in zip(seeds, miou2)}
    results = {n: {"preset": "p", "overrides": {}, "runs": r}
               for n, r in (("supervised", sup), ("dino-shapes", dino), ("dinov2", v2))}
    out = m.summary_table(results, ["supervised", "dino-shapes", "dinov2"])

    cells = row(out, "supervised")
    assert cells[1:3] == ["test_acc", "3, 7, 9"]
    assert cells[3] == f"{acc0.mean():.3f}"
    assert cells[4] == f"{acc.mean():.3f} ± {acc.std(ddof=1):.3f}"
    assert cells[5] == f"{acc.min():.3f}"
    want = ("yes" if (acc >= 0.97).all()
            else f"**no** (seed {', '.join(s for s, a in zip(seeds, acc) if a < 0.97)})")
    assert cells[6] == want
    assert cells[7] == f"{cpu.mean():.0f}, {cpu.max():.0f}"

    fails = [s for s, x in zip(seeds, iou) if not (x >= 0.5 and x >= 0.4)]
    assert row(out, "dino-shapes")[6] == ("yes" if not fails
                                          else f"**no** (seed {', '.join(fails)})")
    d = miou2 - miou1
    se = d.std(ddof=1) / np.sqrt(3)
    lead = [ln for ln in out.splitlines() if "lead over dino-shapes (paired)" in ln][0]
    lead_cells = [c.strip() for c in lead.strip().strip("|").split("|")]
    assert lead_cells[4] == f"{d.mean():+.3f} ± {se:.3f} (SE)"
    assert lead_cells[5] == f"{d.min():+.3f}"
    holds = d.mean() > 0 and d.mean() >= 2 * se
    assert lead_cells[6] == f"mean >= 2 SE: {'yes' if holds else '**no**'}"


@pytest.mark.parametrize("diffs", [[0.02, 0.03, 0.025, 0.01, 0.04],
                                   [0.02, -0.01, 0.03, 0.0, 0.01],
                                   [-0.02, -0.03, -0.01]])
def test_paired_comparison_against_numpy(diffs):
    """mean of d, SE = sd(d, n - 1) / sqrt(n), holds iff mean > 0 and mean >= 2 SE."""
    m = load_script()
    d = np.array(diffs)
    se = d.std(ddof=1) / np.sqrt(len(d))
    p = m.paired(diffs)
    assert p["mean"] == pytest.approx(d.mean(), abs=1e-15)
    assert p["se"] == pytest.approx(se, rel=1e-12)
    assert p["holds"] == bool(d.mean() > 0 and d.mean() >= 2 * se)


def test_paired_needs_two_seeds_and_stats_worst():
    m = load_script()
    assert m.paired([0.5])["holds"] is False  # no SE from one seed
    assert m.stats([0.3, 0.1, 0.2])["worst"] == 0.1
    assert m.stats([0.3, 0.1, 0.2], lower_is_better=True)["worst"] == 0.3
    assert m.stats([0.3])["sd"] == 0.0


def test_merge_refuses_runs_of_another_setting(tmp_path):
    """Seeds of different presets or overrides are not comparable: a clear error."""
    m = load_script()
    saved = tmp_path / "outcomes.json"
    base = {"recipe": "dino", "preset": "cpu-shapes", "overrides": {}, "trained": {},
            "baseline": {}}
    m.merge_saved(saved, "dino-shapes", base, 11)
    m.merge_saved(saved, "dino-shapes", base, 12)
    assert sorted(json.loads(saved.read_text())["dino-shapes"]["runs"]) == ["11", "12"]
    with pytest.raises(ValueError, match=r"overrides \{\}.*seeds \['11', '12'\].*another --out"):
        m.merge_saved(saved, "dino-shapes", {**base, "overrides": {"lr": 1e-3}}, 13)


def test_merge_refuses_seeds_whose_resolved_settings_differ(tmp_path):
    """The same preset name and overrides but a preset edited in between (here its steps):
    the saved settings differ, and the error names the setting that changed."""
    m = load_script()
    saved = tmp_path / "outcomes.json"
    settings = {"steps": 1200, "lr": 2e-3, "local_scale": [0.05, 0.4]}
    base = {"recipe": "clip", "preset": "cpu", "overrides": {}, "trained": {}, "baseline": {},
            "settings": settings}
    m.merge_saved(saved, "clip", base, 21)
    m.merge_saved(saved, "clip", dict(base), 22)  # the same settings: merged
    assert json.loads(saved.read_text())["clip"]["settings"] == settings
    with pytest.raises(ValueError, match=r"settings differ from this run's in \['steps'\]"):
        m.merge_saved(saved, "clip", {**base, "settings": {**settings, "steps": 3000}}, 31)
    assert sorted(json.loads(saved.read_text())["clip"]["runs"]) == ["21", "22"]


def test_settings_of_drops_the_seed_and_round_trips_through_json():
    from minitransformer.train import make_recipe

    m = load_script()
    recipe = make_recipe("dino", preset="tiny-shapes", seed=5)
    cfg = recipe.cfg
    s = m.settings_of(recipe)
    assert "seed" not in s and s["steps"] == cfg.steps
    assert s["local_scale"] == list(cfg.local_scale)  # a tuple, as JSON gives it back
    assert json.loads(json.dumps(s)) == s


def test_usage_errors(tmp_path):
    r = run("dino", "--seeds", "1", "1", "--out", str(tmp_path))
    assert r.returncode == 2 and "repeated seeds" in r.stderr
    r = run("dino", "--seeds", "1", "--set", "seed=3", "--out", str(tmp_path))
    assert r.returncode == 2 and "--seeds" in r.stderr
    r = run("dino", "--set", "lr", "--out", str(tmp_path))
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr
