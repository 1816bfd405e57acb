"""The command line: train (and resume), eval, list, and the errors users hit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minitransformer.__main__ import main
from minitransformer.train import list_checkpoints, load_latest, read_metrics

ROOT = Path(__file__).resolve().parents[1]


def test_python_m_train_then_eval(tmp_path):
    """The real entry point, in a subprocess: train writes a run directory, eval reads it."""
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "minitransformer", "train", "supervised", "--preset", "tiny",
         "--out", str(out), "--no-progress"],
        capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "supervised: done at step 6" in proc.stdout and "test_acc" in proc.stdout
    assert [p.name for p in list_checkpoints(out)][-1] == "ckpt-00000006.safetensors"
    assert len([r for r in read_metrics(out) if "loss" in r]) == 6


def test_eval_prints_trained_and_baseline(tmp_path, capsys):
    assert main(["train", "supervised", "--preset", "tiny", "--out", str(tmp_path),
                 "--no-progress", "--steps", "3", "--set", "lr=0.002"]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path), "--baseline", "--json"]) == 0
    text = capsys.readouterr().out
    assert "step 3" in text and "random init" in text
    rows = json.loads(text.strip().splitlines()[-1])
    assert set(rows) == {"step 3", "random init"}
    assert set(rows["step 3"]) == {"test_acc", "train_acc"}


def test_resume_continues_from_the_checkpoint(tmp_path, capsys):
    args = ["train", "supervised", "--preset", "tiny", "--out", str(tmp_path), "--no-progress"]
    assert main(args + ["--steps", "4", "--save-every", "2"]) == 0
    assert main(args + ["--steps", "6", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resuming supervised from ckpt-00000004" in out and "done at step 6" in out
    assert [r["step"] for r in read_metrics(tmp_path) if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_a_second_fresh_run_in_the_same_out_needs_overwrite(tmp_path, capsys):
    args = ["train", "supervised", "--preset", "tiny", "--out", str(tmp_path), "--no-progress",
            "--steps", "2"]
    assert main(args) == 0
    assert main(args) == 2
    assert "already holds 2 checkpoint(s)" in capsys.readouterr().err  # steps 1 and 2
    assert main(args + ["--overwrite", "--set", "augment=False"]) == 0
    _, meta, _ = load_latest(tmp_path)
    assert meta["config"]["augment"] is False  # "False" from the command line: a bool


def test_errors_are_clear(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "nope"])
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        main(["eval", str(tmp_path)])
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        main(["train", "supervised", "--preset", "tiny", "--set", "lr"])
    with pytest.raises(ValueError, match="unknown settings"):
        main(["train", "supervised", "--preset", "tiny", "--set", "nope=1",
              "--out", str(tmp_path)])


def test_list_shows_every_recipe(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    for name in ("supervised", "mlm", "mim", "clip", "dino", "dinov2"):
        assert f"\n{name}: " in "\n" + text
    assert "--preset tiny" in text


@pytest.mark.slow
def test_demo_prints_metrics_beside_the_baseline_and_saves_pictures(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--preset", "tiny", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "random init" in text and "zero_shot_colour" in text
    for name in ("attention.png", "attention_random_init.png", "patch_pca.png", "loss.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert list_checkpoints(out)
    assert main(["demo", "--recipe", "dino", "--preset", "tiny-shapes", "--out",
                 str(tmp_path / "dino"), "--no-progress"]) == 0
    assert "attn_iou_best_head" in capsys.readouterr().out
