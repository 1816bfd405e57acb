"""The training loop: resume reproduces losses, corrupt/partial checkpoints, NaN stop, Ctrl-C."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from minitransformer import io
from minitransformer.train import (
    TrainingDiverged,
    list_checkpoints,
    load_latest,
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
    recipe = _NaNAt(preset="tiny", steps=6)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 3.*ckpt-00000003"):
        train(recipe, tmp_path, save_every=1, progress=False)
    arrays, meta, path = load_latest(tmp_path)
    assert meta["step"] == 3
    # the NaN step updated nothing: the recipe still holds the checkpointed, finite weights
    for k, v in recipe.model.state_dict().items():
        assert np.isfinite(v).all()
        np.testing.assert_array_equal(arrays[f"model.{k}"], v)
    assert [r["step"] for r in read_metrics(tmp_path) if "loss" in r] == [1, 2, 3]


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
