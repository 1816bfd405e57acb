"""The training loop shared by every recipe.

A recipe (``train/recipes/*.py``) knows its model, data and loss; the loop knows the rest:
steps, a progress bar with loss and throughput, JSON-lines metrics, periodic evaluation,
checkpoints (safetensors + JSON sidecar, written atomically), resuming, and stopping cleanly.

    for step in range(start, steps):
        metrics = recipe.train_step(step)      # forward, backward, optimiser step
        if not finite(metrics["loss"]): stop, keep the last good checkpoint
        log metrics; every eval_every steps: recipe.evaluate(); every save_every: checkpoint

Resuming restores the recipe's tensors (model, optimiser, teacher, centers) and its random
generator, so the steps after a resume reproduce the losses of an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .. import io

__all__ = ["Recipe", "TrainingDiverged", "TrainResult", "train"]


class Recipe(Protocol):
    """What the loop needs from a recipe."""

    name: str
    steps: int  # default number of steps of the chosen preset

    def train_step(self, step: int) -> dict[str, float]:
        """One optimiser step; returns metrics with at least "loss" (a float)."""

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
    steps_done: int
    last_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False
    seconds: float = 0.0


CHECKPOINT = "checkpoint.safetensors"


def _save(recipe: Recipe, out: Path, step: int) -> None:
    arrays, meta = recipe.state()
    meta = dict(meta, step=step, recipe=recipe.name, config=recipe.config())
    io.save_checkpoint(out / CHECKPOINT, arrays, meta)


def train(
    recipe: Recipe,
    out_dir: str | Path,
    steps: int | None = None,
    resume: bool = False,
    eval_every: int = 0,
    save_every: int = 0,
    progress: bool = True,
    log_every: int = 1,
) -> TrainResult:
    """Run ``recipe`` for ``steps`` optimiser steps, writing into ``out_dir``:

    - ``metrics.jsonl``: one JSON object per logged step (and per evaluation);
    - ``checkpoint.safetensors`` + ``checkpoint.json``: the latest good state.

    ``resume=True`` continues from the checkpoint in ``out_dir``. A NaN/inf loss raises
    ``TrainingDiverged`` (the checkpoint on disk is the last good one); Ctrl-C saves a
    checkpoint at the last completed step and returns with ``interrupted=True``.
    """
    from tqdm.auto import tqdm  # lazy: only the training loop needs it

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    total = int(steps if steps is not None else recipe.steps)
    start = 0
    if resume:
        arrays, meta = io.load_checkpoint(out / CHECKPOINT)
        if meta.get("recipe") != recipe.name:
            raise ValueError(
                f"cannot resume: {out / CHECKPOINT} is a {meta.get('recipe')!r} run, "
                f"not {recipe.name!r}"
            )
        recipe.load_state(arrays, meta)
        start = int(meta["step"])
    result = TrainResult(steps_done=start)
    t0 = time.perf_counter()
    mode = "a" if resume else "w"
    with open(out / "metrics.jsonl", mode, encoding="utf-8") as log, tqdm(
        total=total, initial=start, disable=not progress, desc=recipe.name, unit="step",
        dynamic_ncols=True,
    ) as bar:
        step = start
        try:
            while step < total:
                t_step = time.perf_counter()
                metrics = recipe.train_step(step)
                loss = float(metrics["loss"])
                if not math.isfinite(loss):
                    raise TrainingDiverged(
                        f"{recipe.name}: the loss is {loss} at step {step}; stopping. The last "
                        f"good checkpoint (step {result.steps_done}) is kept in {out}. Try a "
                        "lower learning rate or stronger gradient clipping."
                    )
                step += 1
                result.steps_done = step
                result.last_metrics = metrics
                dt = time.perf_counter() - t_step
                if step % log_every == 0 or step == total:
                    log.write(json.dumps({"step": step, **_floats(metrics), "sec": dt}) + "\n")
                    log.flush()
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                bar.update(1)
                if save_every and step % save_every == 0:
                    _save(recipe, out, step)
                if eval_every and step % eval_every == 0 and step < total:
                    ev = recipe.evaluate()
                    log.write(json.dumps({"step": step, "eval": _floats(ev)}) + "\n")
                    log.flush()
        except KeyboardInterrupt:
            result.interrupted = True
        if result.steps_done > start or not (out / CHECKPOINT).exists():
            _save(recipe, out, result.steps_done)
        if not result.interrupted:
            result.eval_metrics = recipe.evaluate()
            log.write(json.dumps({"step": result.steps_done,
                                  "eval": _floats(result.eval_metrics)}) + "\n")
    result.seconds = time.perf_counter() - t0
    return result


def _floats(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, (int, float)) or hasattr(v, "item") else v)
            for k, v in d.items()}
