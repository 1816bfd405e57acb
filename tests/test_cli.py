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
    assert main(args + ["--steps", "6", "--resume", "--allow-changes", "steps"]) == 0
    out = capsys.readouterr().out
    assert "resuming supervised from ckpt-00000004" in out and "done at step 6" in out
    assert [r["step"] for r in read_metrics(tmp_path) if "loss" in r] == [1, 2, 3, 4, 5, 6]
    _, meta, _ = load_latest(tmp_path)
    assert meta["config"]["steps"] == 6


def test_resume_without_flags_takes_the_checkpoints_settings(tmp_path, capsys):
    """``--resume`` alone continues with the saved preset and settings (not the default
    preset, cpu)."""
    args = ["train", "supervised", "--out", str(tmp_path), "--no-progress"]
    assert main(args + ["--preset", "tiny", "--set", "lr=0.002", "--seed", "3", "--steps",
                        "2"]) == 0
    assert main(args + ["--resume"]) == 0
    _, meta, _ = load_latest(tmp_path)
    assert (meta["config"]["preset"], meta["config"]["lr"], meta["config"]["seed"]) == (
        "tiny", 0.002, 3)


def _user_error(capsys, argv, *expected):
    """``main(argv)`` returns status 2 and prints one line ``minitransformer: error: ...``
    holding each of ``expected``, and no traceback."""
    assert main(argv) == 2, argv
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("minitransformer: error: "), lines[0]
    for part in expected:
        assert part in lines[0], (part, lines[0])
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def _saved_run(tmp_path, steps="2"):
    run = tmp_path / "run"
    assert main(["train", "supervised", "--preset", "tiny", "--out", str(run), "--no-progress",
                 "--steps", steps]) == 0
    return run


def test_resume_refuses_every_changed_setting(tmp_path, capsys):
    """Issue 13, item 1: a resume with another seed, preset or setting would redraw the split
    halfway; each change is refused, listed with old and new values; the run is untouched."""
    run = _saved_run(tmp_path)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    capsys.readouterr()
    base = ["train", "supervised", "--out", str(run), "--no-progress", "--resume"]
    _user_error(capsys, base + ["--seed", "5"], "seed 0 -> 5", "--overwrite")
    _user_error(capsys, base + ["--set", "seed=5"], "seed 0 -> 5")
    line = _user_error(capsys, base + ["--preset", "cpu"], 'preset "tiny" -> "cpu"',
                       "dim 16 -> 64", "depth 1 -> 4", "batch_size 32 -> 128")
    assert "setting(s) differ" in line
    _user_error(capsys, base + ["--set", "lr=0.001", "--set", "betas=[0.9,0.98]"],
                "2 setting(s) differ", "lr 0.003 -> 0.001", "betas [0.9, 0.999] -> [0.9, 0.98]")
    _user_error(capsys, base + ["--steps", "4"], "steps 2 -> 4", "--allow-changes steps")
    _user_error(capsys, base + ["--steps", "4", "--allow-changes", "stpes"],
                "--allow-changes names unknown setting(s) 'stpes'")
    _user_error(capsys, base + ["--seed", "5", "--allow-changes", "seed"],
                "seed can never change")
    _user_error(capsys, base + ["--steps", "4", "--seed", "5", "--allow-changes", "steps"],
                "seed 0 -> 5")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert main(base + ["--steps", "4", "--allow-changes", "steps"]) == 0  # extended on purpose
    assert [r["step"] for r in read_metrics(run) if "loss" in r] == [1, 2, 3, 4]


@pytest.mark.parametrize("argv, expected", [
    (["train", "nope"], ["invalid choice: 'nope'", "supervised", "dinov2"]),
    (["train", "supervised", "--preset", "huge"], ["unknown preset 'huge'", "tiny, cpu, gpu"]),
    (["train", "supervised", "--preset", "tiny", "--set", "nope=1"],
     ["unknown settings ['nope']", "batch_size"]),
    (["train", "supervised", "--preset", "tiny", "--set", "lr"], ["KEY=VALUE", "'lr'"]),
    (["train", "supervised", "--preset", "tiny", "--set", "steps=abc"],
     ["steps='abc' is not an int"]),
    (["train", "supervised", "--preset", "tiny", "--set", "augment=maybe"],
     ["augment='maybe' is not a bool"]),
    (["train", "supervised", "--preset", "tiny", "--set", "betas=0.9"],
     ["betas=0.9 is not a tuple", "JSON list"]),
    (["train", "supervised", "--preset", "tiny", "--set", "batch_size=0"],
     ["batch_size=0", "an integer in [1, 65536]"]),
    (["train", "supervised", "--preset", "tiny", "--set", "eval_size=-1"],
     ["eval_size=-1", "[0, 200000]"]),
    (["train", "supervised", "--preset", "tiny", "--set", "dim=60000"],
     ["dim=60000", "[1, 4096]"]),
    (["train", "supervised", "--preset", "tiny", "--set", "lr=-1"], ["lr=-1.0", "> 0"]),
    (["train", "dino", "--preset", "tiny", "--set", "n_local=-1"], ["n_local=-1", "[0, 32]"]),
    (["train", "supervised", "--preset", "tiny", "--steps", "-3"],
     ["--steps", "-3 is out of range", "0 to 10000000"]),
    (["train", "supervised", "--preset", "tiny", "--steps", "2.5"],
     ["--steps", "'2.5' is not a whole number"]),
    (["train", "supervised", "--preset", "tiny", "--save-every", "-1"],
     ["--save-every", "-1 is out of range"]),
    (["train", "supervised", "--preset", "tiny", "--eval-every", "-1"], ["--eval-every"]),
    (["train", "supervised", "--preset", "tiny", "--seed", "-1"], ["--seed", "out of range"]),
    (["train", "supervised", "--preset", "tiny", "--seed", "3", "--set", "seed=4"],
     ["--seed 3 and --set seed=4 disagree"]),
    (["train", "supervised", "--preset", "tiny", "--allow-changes", "steps"],
     ["--allow-changes applies to --resume only"]),
    (["train", "supervised", "--preset", "tiny", "--device", "tpu"],
     ["--device tpu", "unknown device 'tpu'"]),
    (["demo", "--steps", "-1"], ["--steps", "out of range"]),
    (["demo", "--preset", "huge"], ["unknown preset 'huge'"]),
    ([], ["required"]),
])
def test_user_errors_are_one_line_and_status_2(tmp_path, capsys, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)  # the default --out (runs/...) would be created here
    _user_error(capsys, argv, *expected)
    assert list(tmp_path.iterdir()) == []  # refused before any folder is made


def test_cuda_without_cupy_or_gpu_is_a_user_error(tmp_path, capsys):
    from minitransformer import cuda_available

    if cuda_available():
        pytest.skip("a GPU is available here")
    for argv in (["train", "supervised", "--preset", "tiny", "--out", str(tmp_path / "r"),
                  "--device", "cuda"],
                 ["eval", str(tmp_path), "--device", "cuda"],
                 ["demo", "--device", "gpu", "--out", str(tmp_path / "d")]):
        _user_error(capsys, argv, "--device", "was asked for, but")
    assert list(tmp_path.iterdir()) == []


def test_unusable_out_folders_are_user_errors(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    base = ["train", "supervised", "--preset", "tiny", "--no-progress", "--out"]
    _user_error(capsys, base + [str(a_file)], f"--out {a_file} is a file, not a folder")
    _user_error(capsys, base + [str(a_file / "sub")], "cannot create the folder")
    assert a_file.read_text() == "not a folder"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_a_read_only_out_is_a_user_error(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        _user_error(capsys, ["train", "supervised", "--preset", "tiny", "--out", str(ro)],
                    "not writable")
        _user_error(capsys, ["train", "supervised", "--preset", "tiny", "--out",
                             str(ro / "sub")], "cannot create the folder")
    finally:
        ro.chmod(0o755)


def test_eval_and_resume_on_folders_without_a_run(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    a_file = empty / "notes.txt"
    a_file.write_text("a folder, not a run")
    _user_error(capsys, ["eval", str(empty)], "not a run folder", "no checkpoint")
    _user_error(capsys, ["eval", str(tmp_path / "missing")], "does not exist")
    _user_error(capsys, ["eval", str(a_file)], "is a file")
    _user_error(capsys, ["train", "supervised", "--out", str(empty), "--resume"],
                "--resume", "no checkpoint", "without --resume")
    _user_error(capsys, ["train", "supervised", "--out", str(tmp_path / "missing"),
                         "--resume"], "does not exist")
    assert not (tmp_path / "missing").exists()


def test_eval_and_resume_on_a_corrupt_run(tmp_path, capsys):
    run = _saved_run(tmp_path)
    for p in list_checkpoints(run):
        p.write_bytes(p.read_bytes()[:100])  # every weights file truncated
    capsys.readouterr()
    _user_error(capsys, ["eval", str(run)], "eval: ", "could be loaded")
    _user_error(capsys, ["train", "supervised", "--out", str(run), "--resume"], "--resume: ")


def test_another_recipes_run_and_contradicting_flags(tmp_path, capsys):
    run = _saved_run(tmp_path)
    capsys.readouterr()
    _user_error(capsys, ["train", "dino", "--out", str(run), "--resume"],
                "is a 'supervised' run, not 'dino'")
    _user_error(capsys, ["train", "supervised", "--preset", "tiny", "--out", str(run)],
                "already holds", "--overwrite")
    _user_error(capsys, ["train", "supervised", "--out", str(run), "--resume", "--overwrite"],
                "give one of them")


def test_debug_shows_the_traceback(tmp_path):
    from minitransformer.__main__ import UsageError

    with pytest.raises(UsageError, match="batch_size=0") as e:
        main(["train", "supervised", "--preset", "tiny", "--set", "batch_size=0", "--debug"])
    assert isinstance(e.value.__cause__, ValueError)  # the original error, chained
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "minitransformer", "eval", str(tmp_path), "--debug"],
        capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120)
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    assert "FileNotFoundError" in proc.stderr


def test_user_errors_from_the_real_entry_point(tmp_path):
    """In a subprocess: status 2, one line on stderr, nothing on stdout, no traceback."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for argv in (["train", "supervised", "--set", "batch_size=0"],
                 ["train", "supervised", "--steps", "-3"],
                 ["eval", str(tmp_path)]):
        proc = subprocess.run([sys.executable, "-m", "minitransformer", *argv],
                              capture_output=True, text=True, env=env, cwd=str(tmp_path),
                              timeout=120)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith("minitransformer: error: "), proc.stderr
        assert proc.stdout == ""


def test_set_seed_works_and_equals_the_seed_flag(tmp_path):
    """Issue 13, item 5: ``train dino --set seed=3`` crashed with "make_recipe() got multiple
    values for keyword argument 'seed'"."""
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["train", "dino", "--preset", "tiny", "--steps", "1", "--no-progress"]
    assert main(common + ["--out", str(a), "--set", "seed=3"]) == 0
    assert main(common + ["--out", str(b), "--seed", "3"]) == 0
    assert main(common + ["--out", str(b), "--seed", "3", "--set", "seed=3", "--overwrite"]) == 0
    (_, ma, _), (_, mb, _) = load_latest(a), load_latest(b)
    assert ma["config"]["seed"] == mb["config"]["seed"] == 3
    assert read_metrics(a)[0]["loss"] == read_metrics(b)[0]["loss"]


def test_the_command_lines_limits_are_the_recipes():
    from minitransformer.__main__ import MAX_SEED, MAX_STEPS
    from minitransformer.train.recipes.base import LIMITS

    assert (MAX_STEPS, MAX_SEED) == (LIMITS["steps"], LIMITS["seed"])


def test_a_second_fresh_run_in_the_same_out_needs_overwrite(tmp_path, capsys):
    args = ["train", "supervised", "--preset", "tiny", "--out", str(tmp_path), "--no-progress",
            "--steps", "2"]
    assert main(args) == 0
    assert main(args) == 2
    assert "already holds 2 checkpoint(s)" in capsys.readouterr().err  # steps 1 and 2
    assert main(args + ["--overwrite", "--set", "augment=False"]) == 0
    _, meta, _ = load_latest(tmp_path)
    assert meta["config"]["augment"] is False  # "False" from the command line: a bool


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


@pytest.mark.skipif(sys.platform == "win32", reason="the run folder is locked on POSIX only")
def test_a_run_folder_in_use_is_a_user_error(tmp_path, capsys):
    """A second process training in the same --out: one line naming the holder's PID."""
    import fcntl

    from minitransformer.train import loop

    run = _saved_run(tmp_path)
    capsys.readouterr()
    with open(run / loop.LOCK, "a+") as holder:  # another open file: flock conflicts with it
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.seek(0)
        holder.truncate()
        holder.write(str(os.getpid()))
        holder.flush()
        _user_error(capsys, ["train", "supervised", "--out", str(run), "--resume", "--steps",
                             "4", "--allow-changes", "steps", "--no-progress"],
                    f"PID {os.getpid()}")
    assert main(["train", "supervised", "--out", str(run), "--resume", "--steps", "4",
                 "--allow-changes", "steps", "--no-progress"]) == 0  # released: it runs


def test_sigterm_saves_and_exits_143(tmp_path):
    """What a scheduler or `docker stop` sends: the step finishes, a checkpoint is saved, and
    the exit status is 128 + 15 (Ctrl-C gives 130)."""
    import signal
    import time

    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "minitransformer", "train", "supervised", "--preset", "tiny",
         "--steps", "100000", "--out", str(out), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(tmp_path))
    deadline = time.monotonic() + 120
    while not any("loss" in r for r in (read_metrics(out) if out.is_dir() else [])):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    step = int(load_latest(out)[1]["step"])
    assert 0 < step < 100000 and list_checkpoints(out)
