"""The training loop shared by every recipe.

A recipe (``train/recipes/*.py``) knows its model, data and loss; the loop knows the rest:
steps, a progress bar with loss and throughput, JSON-lines metrics, periodic evaluation,
checkpoints (safetensors + JSON sidecar, written atomically), resuming, and stopping cleanly.

    for step in range(start, steps):
        metrics = recipe.train_step(step)      # forward, backward, optimiser step
        if not finite(metrics["loss"]): stop, keep the last good checkpoint
        log metrics; every eval_every steps: recipe.evaluate(); every save_every: checkpoint

Checkpoints are ``ckpt-{step:08d}.safetensors`` + ``.json`` pairs in the run directory. A new
pair is complete before the previous one is deleted (``keep`` pairs are kept), so a crash in the
middle of a save never leaves the run without a loadable checkpoint; ``load_latest`` skips a
corrupt or half-written newest pair and falls back to the one before, saying so.

Resuming restores the recipe's tensors (model, optimiser, teacher, centers) and its random
generator, so the steps after a resume reproduce the losses of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .. import io

__all__ = [
    "Recipe",
    "TrainResult",
    "TrainingDiverged",
    "checkpoint_path",
    "list_checkpoints",
    "load_latest",
    "read_metrics",
    "train",
]


class Recipe(Protocol):
    """What the loop needs from a recipe."""

    name: str
    steps: int  # default number of steps of the chosen preset (the schedules' horizon)

    def train_step(self, step: int) -> dict[str, float]:
        """One optimiser step; returns metrics with at least "loss" (a float). When the loss is
        not finite the recipe must leave its state untouched (no optimiser step)."""

    def evaluate(self) -> dict[str, float]:
        """The recipe's headline metrics (e.g. k-NN accuracy), as floats."""

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(arrays, JSON-able metadata) that fully describe the run's state."""

    def load_state(self, arrays: dict[str, Any], metadata: dict[str, Any]) -> None:
        """Restore what ``state`` returned."""

    def config(self) -> dict[str, Any]:
        """The preset's settings, saved beside every checkpoint."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    """What ``train`` returns: steps done (in total, counting a resumed start), the last
    step's metrics, the final evaluation, whether Ctrl-C stopped it, and the wall time."""

    steps_done: int
    last_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False
    seconds: float = 0.0
    checkpoint: Path | None = None


_CKPT_RE = re.compile(r"^ckpt-(\d{8,})\.safetensors$")
METRICS = "metrics.jsonl"


def checkpoint_path(out_dir: str | Path, step: int) -> Path:
    """``out_dir/ckpt-{step:08d}.safetensors`` (its sidecar is the ``.json`` beside it)."""
    return Path(out_dir) / f"ckpt-{int(step):08d}.safetensors"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """The checkpoint files of a run directory, oldest first (by step)."""
    d = Path(out_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def load_latest(out_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """Load the newest readable checkpoint of ``out_dir``: ``(arrays, metadata, path)``.

    A newest pair that is corrupt, truncated or missing its sidecar (a save interrupted by a
    crash) is reported with a warning and the previous pair is tried. Raises
    ``FileNotFoundError`` when the directory holds no checkpoint, and ``io.CheckpointError``
    (listing every failure) when none of them loads.
    """
    paths = list_checkpoints(out_dir)
    if not paths:
        raise FileNotFoundError(f"load_latest: no checkpoint (ckpt-*.safetensors) in {out_dir}")
    errors = []
    for p in reversed(paths):
        try:
            arrays, meta = io.load_checkpoint(p)
        except (io.CheckpointError, FileNotFoundError) as e:
            errors.append(f"{p.name}: {e}")
            continue
        if errors:
            warnings.warn(
                "load_latest: skipped unreadable checkpoint(s), using "
                f"{p.name}:\n  " + "\n  ".join(errors), RuntimeWarning, stacklevel=2,
            )
        return arrays, meta, p
    raise io.CheckpointError(
        f"load_latest: no checkpoint in {out_dir} could be loaded:\n  " + "\n  ".join(errors)
    )


def read_metrics(out_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``out_dir/metrics.jsonl``: one dict per logged step (``{"step", "loss",
    ...}``) or evaluation (``{"step", "eval": {...}}``). A torn last line is ignored."""
    path = Path(out_dir) / METRICS
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the line being written when the process died
    return out


def _step_of(path: Path) -> int:
    return int(_CKPT_RE.match(path.name).group(1))  # type: ignore[union-attr]


def _delete_pair(path: Path) -> None:
    for f in (path, io.sidecar_path(path)):
        with contextlib.suppress(OSError):
            f.unlink()


def _save(recipe: Recipe, out: Path, step: int, keep: int) -> Path:
    """Write the pair for ``step``, then delete the older pairs beyond the newest ``keep``
    (never a pair of a later step: those belong to no run that reaches this one)."""
    arrays, meta = recipe.state()
    meta = dict(meta, step=step, recipe=recipe.name, config=recipe.config())
    path = io.save_checkpoint(checkpoint_path(out, step), arrays, meta)
    upto = [p for p in list_checkpoints(out) if _step_of(p) <= step]
    for old in upto[:-max(keep, 1)]:
        _delete_pair(old)
    return path


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop the records logged after ``step`` (steps a crashed run did after its last
    checkpoint), so a resumed run's log has each step once."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if int(rec.get("step", 0)) <= step:
            kept.append(line)
    path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[dict[str, bool]]:
    """Turn the first Ctrl-C into a flag checked between steps, so a step (and its optimiser
    update) is never cut in half and the saved state is consistent. A second Ctrl-C raises
    ``KeyboardInterrupt`` at once. Only the main thread can install signal handlers; elsewhere
    Ctrl-C keeps its usual behaviour."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def train(
    recipe: Recipe,
    out_dir: str | Path,
    steps: int | None = None,
    resume: bool = False,
    eval_every: int = 0,
    save_every: int = 0,
    progress: bool = True,
    log_every: int = 1,
    keep: int = 2,
    overwrite: bool = False,
    allow_changes: tuple[str, ...] | list[str] = (),
) -> TrainResult:
    """Run ``recipe`` until ``steps`` optimiser steps are done, writing into ``out_dir``:

    - ``metrics.jsonl``: one JSON object per logged step (and per evaluation);
    - ``ckpt-{step}.safetensors`` + ``.json``: the latest good states (the newest ``keep``).

    ``steps`` is the total (a resumed run continues from its checkpoint's step up to it);
    None means ``recipe.steps``. ``resume=True`` continues from the newest readable checkpoint
    in ``out_dir``. A NaN/inf loss raises ``TrainingDiverged`` (the checkpoints on disk are the
    last good ones: save often with ``save_every``); Ctrl-C finishes the current step, saves
    a checkpoint and returns with ``interrupted=True``. The final evaluation is skipped when
    interrupted.

    A fresh run (``resume=False``) into a directory that already holds checkpoints raises
    ``FileExistsError``, so an earlier run is never mixed with or lost to a new one, unless
    ``overwrite=True``, which deletes them (and the metrics log) first.

    Resuming compares the checkpoint's configuration with ``recipe.config()``
    (``config_check.compare_config``) and refuses any difference (``ConfigMismatch``, listing
    each changed setting) except the settings named in ``allow_changes`` (e.g. ``("steps",)``
    to extend a run on purpose).
    """
    from tqdm.auto import tqdm  # lazy: only the training loop needs it

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    total = int(steps if steps is not None else recipe.steps)
    start = 0
    found = [] if resume else list_checkpoints(out)
    if found:
        if not overwrite:
            raise FileExistsError(
                f"{out} already holds {len(found)} checkpoint(s) of an earlier run (newest: "
                f"{found[-1].name}); continue it with resume=True (--resume), or start over "
                "with overwrite=True (--overwrite), or choose another directory"
            )
        for old in found:
            _delete_pair(old)
    if resume:
        arrays, meta, path = load_latest(out)
        if meta.get("recipe") != recipe.name:
            raise ValueError(
                f"cannot resume: {path} is a {meta.get('recipe')!r} run, not {recipe.name!r}"
            )
        from .config_check import compare_config

        compare_config(saved=meta.get("config", {}), current=recipe.config(),
                       allow=allow_changes)
        recipe.load_state(arrays, meta)
        start = int(meta["step"])
        _truncate_metrics(out / METRICS, start)
    result = TrainResult(steps_done=start)
    batch = getattr(recipe, "batch_size", None)
    t0 = time.perf_counter()
    mode = "a" if resume else "w"
    with open(out / METRICS, mode, encoding="utf-8") as log, tqdm(
        total=total, initial=start, disable=not progress, desc=recipe.name, unit="step",
        dynamic_ncols=True,
    ) as bar, _deferred_interrupt() as interrupt:

        def write(record: dict[str, Any]) -> None:
            log.write(json.dumps(record) + "\n")
            log.flush()

        step = start
        try:
            while step < total and not interrupt["stop"]:
                t_step = time.perf_counter()
                metrics = recipe.train_step(step)
                loss = float(metrics["loss"])
                if not math.isfinite(loss):
                    saved = list_checkpoints(out)
                    where = (f"the last good checkpoint ({saved[-1].name}) is kept in {out}"
                             if saved else "no checkpoint was saved yet (use save_every)")
                    raise TrainingDiverged(
                        f"{recipe.name}: the loss is {loss} at step {step}; stopping. {where}. "
                        "Try a lower learning rate or stronger gradient clipping."
                    )
                step += 1
                result.steps_done = step
                result.last_metrics = metrics
                dt = time.perf_counter() - t_step
                if step % log_every == 0 or step == total:
                    write({"step": step, **_floats(metrics), "sec": dt})
                post = {"loss": f"{loss:.4f}"}
                if batch:
                    post["samples/s"] = f"{batch / max(dt, 1e-9):.0f}"
                bar.set_postfix(post, refresh=False)
                bar.update(1)
                if save_every and step % save_every == 0:
                    result.checkpoint = _save(recipe, out, step, keep)
                if eval_every and step % eval_every == 0 and step < total:
                    write({"step": step, "eval": _floats(recipe.evaluate())})
        except KeyboardInterrupt:
            # A second Ctrl-C cut a step in half: its state may be half-updated, so nothing
            # is saved and the last checkpoint on disk stays the latest good one.
            hard_stop = True
        else:
            hard_stop = False
        result.interrupted = hard_stop or interrupt["stop"]
        if not hard_stop and (result.steps_done > start or not list_checkpoints(out)):
            result.checkpoint = _save(recipe, out, result.steps_done, keep)
        else:
            saved = list_checkpoints(out)
            result.checkpoint = saved[-1] if saved else None
        if not result.interrupted:
            result.eval_metrics = recipe.evaluate()
            write({"step": result.steps_done, "eval": _floats(result.eval_metrics)})
    result.seconds = time.perf_counter() - t0
    return result


def _floats(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, (int, float)) or hasattr(v, "item") else v)
            for k, v in d.items()}
