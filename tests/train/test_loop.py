"""The training loop: resume reproduces losses, corrupt/partial checkpoints, NaN stop, Ctrl-C;
and the run folder's guarantees under fault injection: SIGKILL during metrics truncation and
checkpoint writes, leftovers removed, the folder lock, SIGTERM, non-finite states not saved."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minitransformer import io
from minitransformer.train import (
    RunDirectoryLocked,
    TrainingDiverged,
    list_checkpoints,
    load_latest,
    loop,
    make_recipe,
    read_metrics,
    train,
)
from minitransformer.train.recipes.supervised import SupervisedRecipe


def _losses(run_dir):
    return {r["step"]: r["loss"] for r in read_metrics(run_dir) if "loss" in r}


def _tiny(**kw):
    return make_recipe("supervised", preset="tiny", **kw)


def test_resume_reproduces_the_losses_of_an_uninterrupted_run(tmp_path):
    """2N steps in one go == N steps, a fresh process state, resume, N more: same losses and
    same final weights (the generator, the optimiser moments and the schedule are restored)."""
    full = _tiny(steps=8, augment=True)
    train(full, tmp_path / "full", progress=False)
    first = _tiny(steps=8, augment=True)
    train(first, tmp_path / "split", steps=4, progress=False)
    second = _tiny(steps=8, augment=True)  # rebuilt from scratch, as a new process would
    result = train(second, tmp_path / "split", resume=True, progress=False)
    assert result.steps_done == 8
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "split")
    assert sorted(b) == list(range(1, 9))  # each step logged once
    assert [a[s] for s in range(1, 9)] == [b[s] for s in range(1, 9)]
    for (k, v), (k2, v2) in zip(full.model.state_dict().items(),
                                second.model.state_dict().items()):
        assert k == k2
        np.testing.assert_array_equal(v, v2)


def test_resume_drops_metrics_logged_after_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    train(_tiny(steps=6), run, steps=4, save_every=2, progress=False)
    (run / "metrics.jsonl").open("a").write('{"step": 99, "loss": 1.0}\n{"step": 1')  # torn
    train(_tiny(steps=6), run, resume=True, progress=False)
    steps = [r["step"] for r in read_metrics(run) if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_another_recipe(tmp_path):
    train(_tiny(steps=2), tmp_path, progress=False)

    class Other(SupervisedRecipe):
        name = "other"

    with pytest.raises(ValueError, match="not 'other'"):
        train(Other(preset="tiny"), tmp_path, resume=True, progress=False)


def test_keeps_the_newest_checkpoints_only(tmp_path):
    train(_tiny(steps=6), tmp_path, save_every=1, keep=2, progress=False)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["ckpt-00000005.safetensors", "ckpt-00000006.safetensors"]
    assert all(io.sidecar_path(p).exists() for p in list_checkpoints(tmp_path))


def test_a_fresh_run_never_mixes_with_or_deletes_an_earlier_one(tmp_path):
    """A longer earlier run's checkpoints are not pruned in favour of (or mistaken for) a new
    run's: the new run refuses to start, unless told to overwrite, which starts clean."""
    train(_tiny(steps=6), tmp_path, save_every=2, progress=False)
    before = {p: p.read_bytes() for p in list_checkpoints(tmp_path)}
    with pytest.raises(FileExistsError, match=r"ckpt-00000006.safetensors.*--resume.*--overwrite"):
        train(_tiny(steps=2), tmp_path, progress=False)
    assert {p: p.read_bytes() for p in list_checkpoints(tmp_path)} == before  # untouched
    result = train(_tiny(steps=2), tmp_path, progress=False, overwrite=True)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-00000002.safetensors"]
    assert result.checkpoint.name == "ckpt-00000002.safetensors"
    steps = [r["step"] for r in read_metrics(tmp_path) if "loss" in r]
    assert steps == [1, 2]


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    train(_tiny(steps=6), tmp_path, save_every=2, progress=False)
    newest = list_checkpoints(tmp_path)[-1]
    data = bytearray(newest.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte: the checksum no longer matches the sidecar
    newest.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="ckpt-00000006"):
        _, meta, path = load_latest(tmp_path)
    assert meta["step"] == 4 and path.name == "ckpt-00000004.safetensors"
    with pytest.warns(RuntimeWarning):
        result = train(_tiny(steps=6), tmp_path, resume=True, progress=False)
    assert result.steps_done == 6


def test_partial_save_missing_sidecar_falls_back(tmp_path):
    train(_tiny(steps=4), tmp_path, save_every=2, progress=False)
    io.sidecar_path(list_checkpoints(tmp_path)[-1]).unlink()  # crashed before the sidecar
    with pytest.warns(RuntimeWarning, match="missing"):
        _, meta, _ = load_latest(tmp_path)
    assert meta["step"] == 2


def test_truncated_only_checkpoint_is_a_clear_error(tmp_path):
    train(_tiny(steps=2), tmp_path, progress=False)
    (only,) = list_checkpoints(tmp_path)
    only.write_bytes(only.read_bytes()[:100])  # truncated
    with pytest.raises(io.CheckpointError, match="could be loaded"):
        load_latest(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_latest(tmp_path / "empty")


class _NaNAt(SupervisedRecipe):
    """Supervised tiny whose loss becomes NaN at one step."""

    nan_step = 3

    def optimizer_step(self, loss, step, **kw):
        if step == self.nan_step:
            loss = loss * float("nan")
        return super().optimizer_step(loss, step, **kw)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    """The 4th step (step index 3) gives a NaN loss: the message says step 4, as the log
    numbers steps (record n is the n-th optimiser step), and the log's last record says so."""
    recipe = _NaNAt(preset="tiny", steps=6)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 4;.*ckpt-00000003"):
        train(recipe, tmp_path, save_every=1, progress=False)
    assert read_metrics(tmp_path)[-1]["step"] == 4
    assert "loss is nan at step 4" in read_metrics(tmp_path)[-1]["diverged"]
    arrays, meta, path = load_latest(tmp_path)
    assert meta["step"] == 3
    assert all(np.isfinite(v).all() for v in arrays.values() if v.dtype.kind == "f")
    assert [r["step"] for r in read_metrics(tmp_path) if "loss" in r] == [1, 2, 3]


@pytest.mark.parametrize("save_every", [0, 2])
def test_nan_loss_found_at_the_log_interval_saves_nothing_past_it(tmp_path, save_every):
    """The losses are read once per logging interval (log_every=3): a NaN at step 4 is found
    at step 6, the end of its interval, and reported as step 4; the checkpoints hold steps
    before it only (with save_every=2, the save due at step 4 reads the pending losses
    first and stops there), and nothing after step 3 is logged as a loss."""
    recipe = _NaNAt(preset="tiny", steps=9)
    found = 4 if save_every else 6
    with pytest.raises(TrainingDiverged, match=rf"loss is nan at step 4; stopping \(found "
                                               rf"at step {found}"):
        train(recipe, tmp_path, save_every=save_every, log_every=3, progress=False)
    recs = read_metrics(tmp_path)
    assert [r["step"] for r in recs if "loss" in r] == [3]
    assert recs[-1]["step"] == 4 and "loss is nan at step 4" in recs[-1]["diverged"]
    saved = [p.name for p in list_checkpoints(tmp_path)]
    assert saved == (["ckpt-00000002.safetensors"] if save_every else [])


def test_nan_loss_on_each_device_is_found_at_the_log_interval(tmp_path, device):
    """On the GPU half too (the CuPy stand-in in CI): the losses stay device scalars until the
    interval's read, which finds the NaN of step 4 and names it."""
    recipe = _NaNAt(preset="tiny", steps=6, device=device)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 4; stopping \(found at "
                                               r"step 6"):
        train(recipe, tmp_path, log_every=3, progress=False)
    assert [r["step"] for r in read_metrics(tmp_path) if "loss" in r] == [3]
    assert list_checkpoints(tmp_path) == []


def test_log_every_logs_the_interval_end_and_the_last_step(tmp_path):
    result = train(_tiny(steps=7), tmp_path, log_every=3, progress=False)
    recs = [r for r in read_metrics(tmp_path) if "loss" in r]
    assert [r["step"] for r in recs] == [3, 6, 7]
    assert all(isinstance(r["loss"], float) and isinstance(r["acc"], float) for r in recs)
    assert set(result.last_metrics) == {"loss", "lr", "acc"}
    assert all(isinstance(v, float) for v in result.last_metrics.values())
    assert result.last_metrics["loss"] == recs[-1]["loss"]


class _CtrlCAt(SupervisedRecipe):
    """Sends itself SIGINT (a first Ctrl-C) during one step."""

    def train_step(self, step):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return super().train_step(step)


def test_ctrl_c_finishes_the_step_saves_and_returns(tmp_path):
    result = train(_CtrlCAt(preset="tiny", steps=6), tmp_path, progress=False)
    assert result.interrupted and result.steps_done == 3
    assert result.eval_metrics == {}  # no final evaluation when interrupted
    _, meta, _ = load_latest(tmp_path)
    assert meta["step"] == 3
    resumed = train(_tiny(steps=6), tmp_path, resume=True, progress=False)
    assert resumed.steps_done == 6 and not resumed.interrupted


class _HardStopAt(SupervisedRecipe):
    """A KeyboardInterrupt in the middle of a step (a second Ctrl-C)."""

    def train_step(self, step):
        if step == 2:
            raise KeyboardInterrupt
        return super().train_step(step)


def test_second_ctrl_c_mid_step_saves_nothing_new(tmp_path):
    result = train(_HardStopAt(preset="tiny", steps=6), tmp_path, save_every=1,
                   progress=False)
    assert result.interrupted and result.steps_done == 2
    assert result.checkpoint.name == "ckpt-00000002.safetensors"


def test_metrics_and_eval_records(tmp_path):
    result = train(_tiny(steps=4), tmp_path, eval_every=2, progress=False)
    recs = read_metrics(tmp_path)
    evals = [r for r in recs if "eval" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert set(evals[-1]["eval"]) == {"test_acc", "train_acc"} == set(result.eval_metrics)
    assert all(np.isfinite(r["loss"]) and r["sec"] > 0 for r in recs if "loss" in r)


# ------------------------------------------------------------------------------------------
# The run folder under fault injection
# ------------------------------------------------------------------------------------------

class _LrBlowsUpAt(SupervisedRecipe):
    """``--set lr=1e38`` from one step on: that step's loss is still finite, but its update
    turns parameters and moments into inf/NaN (what the issue's reproduction showed)."""

    blow_up_step = 2

    def lr_at(self, step):
        return 1e60 if step >= self.blow_up_step else super().lr_at(step)


def test_non_finite_state_is_never_saved_as_good(tmp_path):
    recipe = _LrBlowsUpAt(preset="tiny", steps=6)
    with pytest.warns(RuntimeWarning), pytest.raises(
            TrainingDiverged, match=r"after step 3, \d+ of the state's arrays hold NaN or inf "
                                    r"\(the first: 'model\..*ckpt-00000002"):
        train(recipe, tmp_path, save_every=1, progress=False)
    arrays, meta, path = load_latest(tmp_path)
    assert meta["step"] == 2 and path.name == "ckpt-00000002.safetensors"
    assert all(np.isfinite(v).all() for v in arrays.values() if v.dtype.kind == "f")
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "ckpt-00000001.safetensors", "ckpt-00000002.safetensors"]
    recs = read_metrics(tmp_path)
    # step 3's loss was finite and is logged; the divergence record names the same step
    assert [r["step"] for r in recs if "loss" in r] == [1, 2, 3]
    assert recs[-1]["step"] == 3 and "after step 3" in recs[-1]["diverged"]
    assert not (tmp_path / "train.lock").exists()


def test_non_finite_state_at_the_final_save_keeps_no_checkpoint(tmp_path):
    """Without save_every, the end-of-run save is checked too: nothing non-finite is kept."""
    recipe = _LrBlowsUpAt(preset="tiny", steps=3)
    with pytest.warns(RuntimeWarning), pytest.raises(
            TrainingDiverged, match="after step 3.*no good checkpoint was saved before it"):
        train(recipe, tmp_path, progress=False)
    assert list_checkpoints(tmp_path) == []


def test_truncating_the_metrics_log_replaces_it_atomically(tmp_path, monkeypatch):
    """The log is never opened for writing in place: a failure while writing the new content
    leaves the old log whole, and no temporary file."""
    log = tmp_path / "metrics.jsonl"
    old = b"".join(json.dumps({"step": i, "loss": 1.0}).encode() + b"\n" for i in range(1, 9))
    log.write_bytes(old + b'{"step": 9, "lo')  # and a torn line
    os.chmod(log, 0o640)

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", failing_fsync)
        with pytest.raises(OSError, match="No space"):
            loop._truncate_metrics(log, 4)
    assert log.read_bytes() == old + b'{"step": 9, "lo'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]
    loop._truncate_metrics(log, 4)
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]
    assert os.stat(log).st_mode & 0o777 == 0o640  # keeps its permissions
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


# Fault injection by SIGKILL: a forked child counts the file-system calls a run makes
# (os.write, os.fsync, os.replace, os.unlink, safetensors' save_file) and kills itself with
# SIGKILL at the chosen one; at an os.write it first writes half its bytes (a torn file).

def _run_in_child(fn, kill_at=None, counting=None):
    """Run ``fn()`` in a forked child; SIGKILL it at the ``kill_at``-th counted call (None:
    never). ``counting`` (a name of ``loop``) limits counting to inside that function.
    Returns (killed, calls counted)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.close(r)
            from minitransformer import backend
            backend._pool = None  # the parent's worker threads do not exist in a fork
            _install_kill_points(kill_at, counting)
            fn()
            code = 0
        finally:
            os.write(w, str(_Kill.count).encode())
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        count = f.read()
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert killed or os.WEXITSTATUS(status) == 0, "the child failed"
    return killed, int(count or 0)


class _Kill:
    count = 0
    at = None
    on = True


def _install_kill_points(kill_at, counting):
    import safetensors.numpy

    _Kill.at, _Kill.on = kill_at, counting is None

    def tick():
        if _Kill.on:
            _Kill.count += 1
            return _Kill.count == _Kill.at
        return False

    def wrap(fn):
        def hooked(*a, **kw):
            if tick():
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*a, **kw)
        return hooked

    real_write = os.write

    def write(fd, data):
        if tick():
            real_write(fd, bytes(data)[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        return real_write(fd, data)

    os.write = write
    for name in ("fsync", "replace", "unlink"):
        setattr(os, name, wrap(getattr(os, name)))
    safetensors.numpy.save_file = wrap(safetensors.numpy.save_file)
    if counting is not None:
        real = getattr(loop, counting)

        def counted(*a, **kw):
            _Kill.on = True
            try:
                return real(*a, **kw)
            finally:
                _Kill.on = False
        setattr(loop, counting, counted)


def _weights(run_dir):
    arrays, meta, _ = load_latest(run_dir)
    return meta["step"], arrays


def _assert_same_run(run_dir, reference):
    """Same losses at every step, each logged once, same final arrays (bit for bit), and
    nothing in the folder but the log and the last two checkpoint pairs."""
    assert _losses(run_dir) == _losses(reference)
    assert [r["step"] for r in read_metrics(run_dir) if "loss" in r] == \
        [r["step"] for r in read_metrics(reference) if "loss" in r]
    (step, got), (step_ref, want) = _weights(run_dir), _weights(reference)
    assert step == step_ref and got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert sorted(p.name for p in run_dir.iterdir()) == \
        sorted(p.name for p in reference.iterdir())


def _finish(template, run_dir, **kw):
    """Resume (or, when no checkpoint was complete, start) a copy of ``template`` in a child
    and run it to the end."""
    def go():
        try:
            return train(template, run_dir, resume=True, progress=False, **kw)
        except FileNotFoundError:  # killed before its first checkpoint was complete
            return train(template, run_dir, progress=False, overwrite=True, **kw)
    killed, _ = _run_in_child(go)
    assert not killed


def test_sigkill_during_checkpoint_writes_then_resume_is_bit_identical(tmp_path):
    """Killed at random file-system calls of a run that saves every step (weights written
    half, before/after each fsync, rename or deletion), the resumed run ends bit-identical to
    an uninterrupted one, and no temporary file or half pair is left."""
    template = _tiny(steps=5, augment=True)
    kw = dict(save_every=1)
    reference = tmp_path / "reference"
    killed, total = _run_in_child(lambda: train(template, reference, progress=False, **kw))
    assert not killed and total > 20
    rng = np.random.default_rng(0)
    for i, kill_at in enumerate(sorted(rng.choice(np.arange(1, total + 1), 5, replace=False))):
        run = tmp_path / f"killed{i}"
        killed, _ = _run_in_child(lambda run=run: train(template, run, progress=False, **kw),
                                  kill_at=int(kill_at))
        assert killed
        _finish(template, run, **kw)
        _assert_same_run(run, reference)


def test_sigkill_during_metrics_truncation_then_resume_is_bit_identical(tmp_path):
    """A crashed run's log runs past its newest checkpoint; the resume truncates it. Killed at
    each file-system call of that truncation (a half-written temporary file, before and after
    its fsync, the rename, the directory fsync), the log is the old or the new one, never
    empty, and a second resume ends bit-identical to an uninterrupted run."""
    template = _tiny(steps=6, augment=True)
    kw = dict(save_every=2)
    reference = tmp_path / "reference"
    assert not _run_in_child(lambda: train(template, reference, progress=False, **kw))[0]
    crashed = tmp_path / "crashed"
    shutil.copytree(reference, crashed)
    loop._delete_pair(list_checkpoints(crashed)[-1])  # died after step 6, before saving it
    old_log = (crashed / "metrics.jsonl").read_bytes()
    new_log = b"".join(line + b"\n" for line in old_log.splitlines()
                       if json.loads(line)["step"] <= 4)

    def resume(run):
        return lambda: train(template, run, resume=True, progress=False, **kw)

    shutil.copytree(crashed, tmp_path / "count")
    killed, total = _run_in_child(resume(tmp_path / "count"), counting="_truncate_metrics")
    assert not killed and total >= 4  # write, fsync, rename, directory fsync
    for kill_at in range(1, total + 1):
        run = tmp_path / f"killed{kill_at}"
        shutil.copytree(crashed, run)
        killed, _ = _run_in_child(resume(run), kill_at=kill_at, counting="_truncate_metrics")
        assert killed
        assert (run / "metrics.jsonl").read_bytes() in (old_log, new_log)
        _finish(template, run, **kw)
        _assert_same_run(run, reference)


def test_leftovers_of_killed_writes_are_removed_and_nothing_else(tmp_path):
    train(_tiny(steps=6), tmp_path, steps=4, save_every=2, progress=False)
    leftovers = [".ckpt-00000006.safetensors.ab_12xyz.tmp", ".ckpt-00000006.json.q1w2e3r4.tmp",
                 ".metrics.jsonl.k9j8h7g6.tmp", "ckpt-00000001.json",  # a sidecar, no weights
                 "ckpt-00000008.safetensors"]  # weights whose sidecar never came
    others = ["notes.txt", ".ckpt-00000006.safetensors.tmp.bak", "ckpt-1.json",
              "my.tmp", ".hidden", "ckpt-00000002.json.orig"]
    for name in leftovers + others:
        (tmp_path / name).write_bytes(b"x")
    train(_tiny(steps=6), tmp_path, resume=True, save_every=2, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        others + ["metrics.jsonl", "ckpt-00000004.json", "ckpt-00000004.safetensors",
                  "ckpt-00000006.json", "ckpt-00000006.safetensors"])
    for name in leftovers:  # and --overwrite removes them too
        (tmp_path / name).write_bytes(b"x")
    train(_tiny(steps=2), tmp_path, overwrite=True, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        others + ["metrics.jsonl", "ckpt-00000002.json", "ckpt-00000002.safetensors"])


_CHILD = """
import json, sys, time
from minitransformer.train import train
from minitransformer.train.recipes.supervised import SupervisedRecipe

class Slow(SupervisedRecipe):
    def train_step(self, step):
        time.sleep(0.05)
        return super().train_step(step)

r = train(Slow(preset="tiny", steps=10000), sys.argv[1], save_every=10000, progress=False)
print(json.dumps({"steps": r.steps_done, "interrupted": r.interrupted, "signal": r.signal,
                  "checkpoint": r.checkpoint.name}))
"""


def _start_child(run_dir):
    """A subprocess training a slow tiny run in ``run_dir``; returns once it has logged a
    step (so it holds the lock and its signal handlers are in place)."""
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not read_metrics(run_dir):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the child never logged a step"
        time.sleep(0.05)
    return proc


def test_sigterm_finishes_the_step_saves_and_exits(tmp_path):
    proc = _start_child(tmp_path)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["interrupted"] and result["signal"] == "SIGTERM"
    _, meta, path = load_latest(tmp_path)
    assert meta["step"] == result["steps"] >= 1 and path.name == result["checkpoint"]
    assert [r["step"] for r in read_metrics(tmp_path) if "loss" in r] == \
        list(range(1, result["steps"] + 1))
    assert not (tmp_path / "train.lock").exists()


def test_a_second_process_on_the_folder_fails_naming_the_first(tmp_path):
    proc = _start_child(tmp_path)
    try:
        assert (tmp_path / "train.lock").read_text().strip() == str(proc.pid)
        for kw in (dict(resume=True), dict(overwrite=True), {}):
            with pytest.raises(RunDirectoryLocked, match=rf"another training process "
                                                         rf"\(PID {proc.pid}\)"):
                train(_tiny(steps=2), tmp_path, progress=False, **kw)
        assert list_checkpoints(tmp_path) == []  # the refused runs touched nothing
    finally:
        proc.kill()  # SIGKILL: the lock file stays behind, holding a dead PID
        proc.communicate()
    assert (tmp_path / "train.lock").read_text().strip() == str(proc.pid)
    result = train(_tiny(steps=2), tmp_path, progress=False)  # a stale lock is taken over
    assert result.steps_done == 2 and not (tmp_path / "train.lock").exists()
