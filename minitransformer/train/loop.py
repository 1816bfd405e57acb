"""The training loop shared by every recipe.

A recipe (``train/recipes/*.py``) knows its model, data and loss; the loop knows the rest:
steps, a progress bar with loss and throughput, JSON-lines metrics, periodic evaluation,
checkpoints (safetensors + JSON sidecar, written atomically), resuming, and stopping cleanly.

    for step in range(start, steps):
        metrics = recipe.train_step(step)      # forward, backward, optimiser step
        keep metrics on the device; every log_every steps (and before a checkpoint) read
        them in one transfer: a non-finite loss stops the run, keeping the last good
        checkpoint; log them; every eval_every steps: recipe.evaluate()

Host synchronisation: a step's metrics (the loss, accuracies, norms, diagnostics) are device
scalars the loop does not read when the step ends. It reads them once per logging interval:
the losses of every step of the interval and the metrics of its last step, stacked and copied
to the host in one transfer (``_read_scalars``). So in the steady state a training step waits
for the device at most once per ``log_every`` steps (tests/train/test_host_sync_budget.py
counts it for every recipe). The finite-loss check runs on those values: a NaN or inf loss
at step n is found at the end of its interval (or before a checkpoint, whichever comes
first), the run stops with ``TrainingDiverged`` naming step n, and no checkpoint of a step
from n on is ever written (every save reads the pending losses first, and ``_save`` refuses
a state holding a NaN or inf). The model in memory may hold the updates of the steps up to
the end of that interval.

Checkpoints are ``ckpt-{step:08d}.safetensors`` + ``.json`` pairs in the run directory. A new
pair is complete before the previous one is deleted (``keep`` pairs are kept), so a crash in the
middle of a save never leaves the run without a loadable checkpoint; ``load_latest`` skips a
corrupt or half-written newest pair and falls back to the one before, saying so.

Resuming restores the recipe's tensors (model, optimiser, teacher, centers) and its random
generator, so the steps after a resume reproduce the losses of an uninterrupted run.

The run directory (docs/training.md, "What a run guarantees"): every file is replaced
atomically, the metrics log included (``_truncate_metrics``); leftovers of killed writes are
removed at start (``_remove_leftovers``); the directory is locked while a process trains in it
(``train.lock``, ``RunDirectoryLocked``); SIGTERM stops like the first Ctrl-C; a state with a
NaN or inf array is never saved as a checkpoint.

Over W > 1 ranks (``mpiexec -n W``, ``minitransformer.distributed``): every rank runs this
loop on its shard of each global batch (the recipe shards; ``recipes/base.py``). Rank 0
alone locks and cleans the run directory and writes into it (checkpoints, the metrics log);
the other ranks write nothing. A decision taken on rank 0 (the directory is locked, holds an
earlier run, the checkpoint does not fit) is sent to every rank, which all raise the same
error instead of leaving the others waiting in a collective. After the start (fresh or
resumed: every rank reads the same checkpoint) rank 0's modules are broadcast
(``recipe.broadcast_state``). The logged metrics are means over ranks: each device scalar of
the interval is all-reduced in the same read (for the loss, a mean of per-shard means, the
global batch's loss with equal shards; for diagnostics such as the teacher entropy, the mean
of the ranks' values). Ctrl-C or SIGTERM on any rank stops every rank after the same step (the
flag is all-reduced each step). Evaluation runs on rank 0 alone (``distributed.rank_local``)
and its metrics are sent to every rank. Checkpoints record the world size: resuming with
another number of ranks is refused (``WorldSizeMismatch``), though the saved state does not
depend on it (every rank holds the same model, optimiser and generator).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .. import backend, distributed, io
from ..autograd import Tensor
from ..io.checkpoint import fsync_dir

try:  # POSIX; on Windows the run directory is not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK",
    "Recipe",
    "RunDirectoryLocked",
    "TrainResult",
    "TrainingDiverged",
    "WorldSizeMismatch",
    "checkpoint_path",
    "default_log_every",
    "list_checkpoints",
    "load_latest",
    "metrics_as_floats",
    "read_metrics",
    "train",
]


class Recipe(Protocol):
    """What the loop needs from a recipe."""

    name: str
    steps: int  # default number of steps of the chosen preset (the schedules' horizon)

    def train_step(self, step: int) -> dict[str, Any]:
        """One optimiser step; returns metrics with at least "loss": Python floats or device
        scalars (0-d arrays or Tensors), which the loop reads once per logging interval. The
        step must not read its own metrics on the host (no ``float(loss.item())``)."""

    def evaluate(self) -> dict[str, float]:
        """The recipe's headline metrics (e.g. k-NN accuracy), as floats."""

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(arrays, JSON-able metadata) that fully describe the run's state."""

    def load_state(self, arrays: dict[str, Any], metadata: dict[str, Any]) -> None:
        """Restore what ``state`` returned."""

    def config(self) -> dict[str, Any]:
        """The preset's settings, saved beside every checkpoint."""


class TrainingDiverged(RuntimeError):
    """The loss, or an array of the state about to be saved, became NaN or infinite; the last
    good (all-finite) checkpoint is kept."""


class RunDirectoryLocked(RuntimeError):
    """Another process is training in this run directory (its PID is in the message)."""


class WorldSizeMismatch(ValueError):
    """A checkpoint written by a run over W ranks is resumed with another number of ranks."""


def _shared_errors() -> dict[str, type[BaseException]]:
    """Errors that rank 0 raises and every other rank re-raises as the same class
    (``_on_rank0``)."""
    from .config_check import ConfigMismatch

    return {cls.__name__: cls for cls in (
        FileExistsError, FileNotFoundError, ValueError, RuntimeError, OSError, KeyError,
        RunDirectoryLocked, TrainingDiverged, WorldSizeMismatch, io.CheckpointError,
        ConfigMismatch)}


def world_size_problem(meta: dict[str, Any], name: str) -> str | None:
    """Why a checkpoint (its sidecar ``meta``, file ``name``) cannot be resumed by this many
    ranks, or None. Checkpoints without ``world_size`` were written by one process."""
    saved, now = int(meta.get("world_size", 1)), distributed.world_size()
    if saved == now:
        return None
    return (f"cannot resume: {name} was written by a run over {saved} rank(s) (processes), "
            f"and this run has {now}; resume it with the same number (mpiexec -n {saved}), "
            "or start a new run in another directory")


def _lead() -> bool:
    """True on the rank that writes the run directory (rank 0; the only one in one process)."""
    return distributed.rank() == 0 or not distributed.is_distributed()


def _bcast_json(value: Any) -> Any:
    """Rank 0's JSON-able ``value`` on every rank (``value`` itself in one process)."""
    if not distributed.is_distributed():
        return value
    data = np.frombuffer(json.dumps(value).encode("utf-8"), dtype=np.uint8) \
        if distributed.rank() == 0 else None
    return json.loads(bytes(distributed.broadcast(data)).decode("utf-8"))


def _on_rank0(fn: Any) -> Any:
    """Run ``fn()`` on rank 0 alone; every rank returns its JSON-able result, or raises:
    rank 0 its own exception, the others one of the same class (``_shared_errors``, else
    ``RuntimeError``) with the same message. So a decision made on rank 0 (a locked
    directory, a checkpoint that does not fit) stops every rank instead of leaving the others
    waiting in their next collective. One broadcast; in one process just ``fn()``."""
    if not distributed.is_distributed():
        return fn()
    error: BaseException | None = None
    report: dict[str, Any] = {}
    if distributed.rank() == 0:
        try:
            report["value"] = fn()
        except Exception as e:  # sent to the other ranks, then raised here
            error = e
            report = {"error": type(e).__name__, "message": str(e)}
    report = _bcast_json(report)
    if error is not None:
        raise error
    if "error" in report:
        cls = _shared_errors().get(report["error"], RuntimeError)
        raise cls(report["message"] if cls is not RuntimeError or report["error"] ==
                  "RuntimeError" else f"rank 0: {report['error']}: {report['message']}")
    return report.get("value")


def _any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any rank (one all-reduce of one integer;
    ``flag`` itself in one process)."""
    if not distributed.is_distributed():
        return bool(flag)
    return bool(distributed.all_reduce(np.array([int(bool(flag))], dtype=np.int64),
                                       check=False)[0] > 0)


@dataclass
class TrainResult:
    """What ``train`` returns: steps done (in total, counting a resumed start), the last
    step's metrics, the final evaluation, whether Ctrl-C or SIGTERM stopped it (``signal``
    names which: ``"SIGINT"`` or ``"SIGTERM"``), and the wall time."""

    steps_done: int
    last_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False
    signal: str | None = None
    seconds: float = 0.0
    checkpoint: Path | None = None


_CKPT_RE = re.compile(r"^ckpt-(\d{8,})\.safetensors$")
_SIDECAR_RE = re.compile(r"^ckpt-(\d{8,})\.json$")
# The temporary files of atomic writes (io.checkpoint's and this module's): ".{final}.{random}.tmp"
_TMP_RE = re.compile(r"^\.(ckpt-\d{8,}\.(safetensors|json)|metrics\.jsonl)\.[A-Za-z0-9_]+\.tmp$")
METRICS = "metrics.jsonl"
LOCK = "train.lock"


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


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically: write a temporary file ``.{name}.{random}.tmp``
    beside it, fsync it, ``os.replace`` it over ``path`` and fsync the directory. Killed at
    any moment, ``path`` holds either its old or its new content, never a mix or nothing; a
    kill before the rename leaves the temporary file, which the next ``train`` in the
    directory removes. The file keeps its permission bits."""
    import tempfile

    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with contextlib.suppress(OSError):
            os.chmod(tmp, path.stat().st_mode & 0o7777)  # mkstemp makes it owner-only
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[: 1 << 20]):]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop the records logged after ``step`` (steps a crashed run did after its last
    checkpoint) and any torn line, so a resumed run's log has each step once. The log is
    replaced atomically (``_atomic_write_bytes``), never rewritten in place; when nothing is
    to be dropped it is left untouched."""
    if not path.exists():
        return
    data = path.read_bytes()
    kept = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:  # a torn line (JSON or UTF-8 cut in the middle)
            continue
        if (isinstance(rec, dict) and isinstance(rec.get("step", 0), int)
                and rec.get("step", 0) <= step):
            kept.append(line + b"\n")
    new = b"".join(kept)
    if new != data:
        _atomic_write_bytes(path, new)


def _remove_leftovers(out: Path) -> list[str]:
    """Delete what killed writes leave in a run directory: temporary files of atomic writes
    (``.ckpt-*.safetensors.*.tmp``, ``.ckpt-*.json.*.tmp``, ``.metrics.jsonl.*.tmp``) and the
    half of a checkpoint pair whose other half is missing (a sidecar without its weights, or
    weights without their sidecar: neither can be loaded). Only names matching these patterns
    are touched. Called with the directory locked. Returns the names removed."""
    names = {p.name for p in out.iterdir()}
    removed = []
    for name in sorted(names):
        orphan = False
        if m := _CKPT_RE.match(name):
            orphan = io.sidecar_path(out / name).name not in names
        elif m := _SIDECAR_RE.match(name):
            orphan = f"ckpt-{m.group(1)}.safetensors" not in names
        if orphan or _TMP_RE.match(name):
            with contextlib.suppress(FileNotFoundError):
                (out / name).unlink()
            removed.append(name)
    return removed


def _read_pid(path: Path) -> str:
    """The PID written in a lock file (retrying briefly: its holder may be writing it)."""
    for _ in range(20):
        with contextlib.suppress(OSError):
            text = path.read_text(encoding="ascii", errors="replace").strip()
            if text:
                return text
        time.sleep(0.01)
    return "unknown"


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``out/train.lock`` (which holds this process's PID)
    while the body runs, and remove the file afterwards. A second process gets
    ``RunDirectoryLocked`` naming the holder's PID. The kernel drops the lock of a process that
    dies, so the file a killed run leaves (with a dead PID) is simply taken over."""
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    path = out / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = _read_pid(path)
            raise RunDirectoryLocked(
                f"{out} is in use: another training process (PID {pid}) holds {path}; wait "
                "for it to finish or stop it, or choose another directory"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # The previous holder may have removed the file between our open and our flock:
        # then we hold a lock on a deleted file, and must lock the current one instead.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still locked: nobody can be holding the path's lock now
        os.close(fd)  # releases the lock


def _first_non_finite(arrays: dict[str, Any]) -> tuple[str, int] | None:
    """``(name, count)``: the first floating-point array holding a NaN or inf, and how many
    arrays do; None when every array is finite. One host transfer for all the arrays."""
    names, flags = [], []
    for k, v in arrays.items():
        a = v.data if isinstance(v, Tensor) else v
        if getattr(a, "dtype", None) is None or a.dtype.kind not in "fc":
            continue
        xp = backend.get_array_module(a)
        names.append(k)
        flags.append(xp.isfinite(a).all())
    if not names:
        return None
    xp = backend.get_array_module(flags[0])
    ok = backend.to_numpy(xp.stack(flags))
    bad = [n for n, f in zip(names, ok) if not f]
    return (bad[0], len(bad)) if bad else None


def _last_good(out: Path) -> str:
    saved = list_checkpoints(out)
    return (f"the last good checkpoint ({saved[-1].name}) is kept in {out}" if saved
            else "no good checkpoint was saved before it (save often with save_every)")


def _save(recipe: Recipe, out: Path, step: int, keep: int) -> Path:
    """Write the pair for ``step``, then delete the older pairs beyond the newest ``keep``
    (never a pair of a later step: those belong to no run that reaches this one). A state
    holding a NaN or inf is not saved: ``TrainingDiverged`` names the first such array, and
    the previous (finite) checkpoint stays the newest. Over W ranks every rank checks its
    (identical) state and rank 0 alone writes; the metadata records ``world_size``."""
    arrays, meta = recipe.state()
    bad = _first_non_finite(arrays)
    if bad is not None:
        name, count = bad
        raise TrainingDiverged(
            f"{recipe.name}: after step {step}, {count} of the state's arrays hold NaN or inf "
            f"(the first: {name!r}); stopping without saving them. {_last_good(out)}. "
            "Try a lower learning rate or stronger gradient clipping."
        )
    meta = dict(meta, step=step, recipe=recipe.name, config=recipe.config(),
                world_size=distributed.world_size())

    def write() -> str:
        path = io.save_checkpoint(checkpoint_path(out, step), arrays, meta)
        _prune(out, step, keep)
        return str(path)

    return Path(_on_rank0(write))


def _prune(out: Path, step: int, keep: int) -> None:
    """Delete the pairs of steps up to ``step`` beyond the newest ``keep`` (never a pair of a
    later step: those belong to no run that reaches this one)."""
    upto = [p for p in list_checkpoints(out) if _step_of(p) <= step]
    for old in upto[:-max(keep, 1)]:
        _delete_pair(old)


_STOP_SIGNALS = ("SIGINT", "SIGTERM")


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[dict[str, Any]]:
    """Turn the first Ctrl-C (SIGINT) or SIGTERM (what a job scheduler or ``docker stop``
    sends) into a flag checked between steps, so a step (and its optimiser update) is never
    cut in half and the saved state is consistent. A second signal raises
    ``KeyboardInterrupt`` at once. Only the main thread can install signal handlers; elsewhere
    both signals keep their usual behaviour."""
    flag: dict[str, Any] = {"stop": False, "signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True
        flag["signal"] = signal.Signals(signum).name

    previous = {}
    try:
        for name in _STOP_SIGNALS:
            sig = getattr(signal, name)
            previous[sig] = signal.signal(sig, handler)
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# `train --log-every` by default (the command line and the demo): the losses are read (and a
# metrics.jsonl record written) every steps / 100 steps, at least 1 (a tiny run logs each
# step) and at most LOG_EVERY; a checkpoint reads the pending ones first, so a save never
# holds an unchecked loss.
LOG_EVERY = 10


def default_log_every(steps: int) -> int:
    """``--log-every``'s default for a run of ``steps``: steps // 100 in [1, LOG_EVERY]."""
    return min(LOG_EVERY, max(1, int(steps) // 100))


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
    in ``out_dir``. Steps are numbered as the log numbers them: step ``n`` is the ``n``-th
    optimiser step. A NaN/inf loss, or a NaN/inf in any array of the state about to be saved,
    raises ``TrainingDiverged`` naming that step (and the array), after logging a
    ``{"step": n, "diverged": ...}`` record; the checkpoints on disk are the last good, finite
    ones (save often with ``save_every``). Ctrl-C or SIGTERM finishes the current step, saves
    a checkpoint and returns with ``interrupted=True``. The final evaluation is skipped when
    interrupted.

    While it runs, the directory is locked (``train.lock``, holding the PID): a second
    ``train`` on it raises ``RunDirectoryLocked``. At start, leftovers of killed writes
    (temporary files, half checkpoint pairs) are removed.

    A fresh run (``resume=False``) into a directory that already holds checkpoints raises
    ``FileExistsError``, so an earlier run is never mixed with or lost to a new one, unless
    ``overwrite=True``, which deletes them (and the metrics log) first.

    Launched over W ranks (``mpiexec -n W``), every rank calls ``train`` with the same
    arguments; see the module docstring for who does what. A checkpoint of a run over
    another number of ranks is refused (``WorldSizeMismatch``).

    Resuming compares the checkpoint's configuration with ``recipe.config()``
    (``config_check.compare_config``) and refuses any difference (``ConfigMismatch``, listing
    each changed setting) except the settings named in ``allow_changes`` (e.g. ``("steps",)``
    to extend a run on purpose).
    """
    out = Path(out_dir)
    with contextlib.ExitStack() as stack:

        def prepare() -> None:  # rank 0 alone: the directory is its to lock and clean
            out.mkdir(parents=True, exist_ok=True)
            stack.enter_context(_locked(out))
            _remove_leftovers(out)

        _on_rank0(prepare)
        return _train_locked(recipe, out, steps, resume, eval_every, save_every, progress,
                             log_every, keep, overwrite, allow_changes)


def _train_locked(recipe: Recipe, out: Path, steps: int | None, resume: bool, eval_every: int,
                  save_every: int, progress: bool, log_every: int, keep: int, overwrite: bool,
                  allow_changes: tuple[str, ...] | list[str]) -> TrainResult:
    """``train``'s body, run with ``out`` locked and cleaned."""
    from tqdm.auto import tqdm  # lazy: only the training loop needs it

    total = int(steps if steps is not None else recipe.steps)
    start = 0
    lead = _lead()

    def fresh() -> None:  # rank 0: refuse, or delete, an earlier run's checkpoints
        found = list_checkpoints(out)
        if found:
            if not overwrite:
                raise FileExistsError(
                    f"{out} already holds {len(found)} checkpoint(s) of an earlier run (newest:"
                    f" {found[-1].name}); continue it with resume=True (--resume), or start "
                    "over with overwrite=True (--overwrite), or choose another directory"
                )
            for old in found:
                _delete_pair(old)

    loaded: dict[str, Any] = {}

    def check_resume() -> str:  # rank 0: the checkpoint every rank will load, checked
        arrays, meta, path = load_latest(out)
        loaded["state"] = arrays, meta
        if meta.get("recipe") != recipe.name:
            raise ValueError(
                f"cannot resume: {path} is a {meta.get('recipe')!r} run, not {recipe.name!r}"
            )
        from .config_check import compare_config

        compare_config(saved=meta.get("config", {}), current=recipe.config(),
                       allow=allow_changes)
        problem = world_size_problem(meta, path.name)
        if problem:
            raise WorldSizeMismatch(problem)
        return path.name

    if not resume:
        _on_rank0(fresh)
    else:
        name = _on_rank0(check_resume)
        # rank 0 has it; every other rank reads the same file
        arrays, meta = loaded.get("state") or io.load_checkpoint(out / name)
        recipe.load_state(arrays, meta)
        start = int(meta["step"])

        def tidy() -> None:  # rank 0, once every rank has read the checkpoint
            _truncate_metrics(out / METRICS, start)
            _prune(out, start, keep)  # a run killed while pruning left one pair too many

        distributed.barrier()
        _on_rank0(tidy)
    broadcast = getattr(recipe, "broadcast_state", None)
    if broadcast is not None:
        broadcast()  # rank 0's modules on every rank (nothing in one process)
    result = TrainResult(steps_done=start)
    batch = getattr(recipe, "batch_size", None)
    t0 = time.perf_counter()
    mode = "a" if resume else "w"
    with open(out / METRICS if lead else os.devnull, mode, encoding="utf-8") as log, tqdm(
        total=total, initial=start, disable=not (progress and lead), desc=recipe.name,
        unit="step",
        dynamic_ncols=True,
    ) as bar, _deferred_interrupt() as interrupt:

        def write(record: dict[str, Any]) -> None:
            log.write(json.dumps(record) + "\n")
            log.flush()

        def save(at: int) -> Path:
            try:
                return _save(recipe, out, at, keep)
            except TrainingDiverged as e:
                write({"step": at, "diverged": str(e)})
                raise

        def evaluate() -> dict[str, Any]:
            """The recipe's evaluation, on rank 0 alone; its metrics on every rank."""

            def run() -> dict[str, Any]:
                with distributed.rank_local():
                    return _floats(recipe.evaluate())

            return _on_rank0(run)

        # Steps whose metrics are still on the device: (step number as logged, metrics).
        pending: list[tuple[int, dict[str, Any]]] = []
        clock = {"t": time.perf_counter()}  # when the last read ended

        def flush() -> None:
            """Read the pending metrics (one device-to-host transfer), stop on the first
            non-finite loss, log the last pending step if it is a logging step."""
            if not pending:
                return
            done, pending[:] = list(pending), []
            losses, last = _read_scalars(done)
            now = time.perf_counter()
            dt = (now - clock["t"]) / len(done)  # mean seconds per step of the interval
            clock["t"] = now
            for (n, _), loss in zip(done, losses):
                if not math.isfinite(loss):
                    msg = (f"{recipe.name}: the loss is {loss} at step {n}; stopping (found "
                           f"at step {done[-1][0]}: the losses are read once per logging "
                           f"interval, so the model in memory may hold the updates of the "
                           f"steps up to it; no checkpoint of step {n} or later is written). "
                           f"{_last_good(out)}. Try a lower learning rate or stronger "
                           "gradient clipping.")
                    write({"step": n, "diverged": msg})
                    raise TrainingDiverged(msg)
            n = done[-1][0]
            result.last_metrics = last
            if n % log_every == 0 or n == total:
                write({"step": n, **last, "sec": dt})
            post = {"loss": f"{losses[-1]:.4f}"}
            if batch:
                post["samples/s"] = f"{batch / max(dt, 1e-9):.0f}"
            bar.set_postfix(post, refresh=False)

        step = start
        try:
            while step < total and not _any_rank(interrupt["stop"]):
                metrics = recipe.train_step(step)
                step += 1
                result.steps_done = step
                pending.append((step, metrics))
                bar.update(1)
                saving = bool(save_every) and step % save_every == 0
                if step % log_every == 0 or step == total or saving:
                    flush()  # the interval's one read (a save needs the losses checked)
                if saving:
                    result.checkpoint = save(step)
                if eval_every and step % eval_every == 0 and step < total:
                    write({"step": step, "eval": evaluate()})
        except KeyboardInterrupt:
            # A second Ctrl-C cut a step in half: its state may be half-updated, so nothing
            # is saved and the last checkpoint on disk stays the latest good one.
            hard_stop = True
        else:
            hard_stop = False
        # (after a hard stop the ranks are no longer in step: no collective)
        stopped = interrupt["stop"] if hard_stop else _any_rank(interrupt["stop"])
        result.interrupted = hard_stop or stopped
        result.signal = interrupt["signal"] or ("SIGINT" if hard_stop or stopped else None)
        if not hard_stop and (result.steps_done > start
                              or _on_rank0(lambda: not list_checkpoints(out))):
            flush()  # the losses of the steps about to be saved are checked first
            result.checkpoint = save(result.steps_done)
        else:
            saved = list_checkpoints(out)
            result.checkpoint = saved[-1] if saved else None
        if not result.interrupted:
            result.eval_metrics = evaluate()
            write({"step": result.steps_done, "eval": result.eval_metrics})
    result.seconds = time.perf_counter() - t0
    return result


def _floats(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, (int, float)) or hasattr(v, "item") else v)
            for k, v in d.items()}


def metrics_as_floats(metrics: dict[str, Any]) -> dict[str, Any]:
    """One step's metrics (``recipe.train_step(step)``: device scalars and Python floats) as
    Python floats, read in one device-to-host transfer. For a loop written by hand (a
    notebook) that prints or plots every step; ``train`` reads them once per interval. Over
    W ranks the array values are means over ranks (every rank must call it)."""
    return _read_scalars([(0, metrics)])[1]


def _read_scalars(done: list[tuple[int, dict[str, Any]]]
                  ) -> tuple[list[float], dict[str, Any]]:
    """The losses of the steps in ``done`` and every metric of the last one, as Python
    floats, read in one device-to-host transfer per device: the device scalars (0-d arrays,
    or Tensors) are cast to float64, stacked on their device and copied together. Python and
    NumPy numbers are taken as they are; other values (strings) pass through.

    Over W ranks, every value that is not a plain Python number (the arrays and NumPy
    scalars a step computes from its shard) is then replaced by its mean over ranks, in one
    all-reduce on the host for the whole interval; Python numbers (the lr, constants) are the
    same on every rank and kept."""
    last_step = len(done) - 1
    slots: list[tuple[int, str]] = []
    values: list[Any] = []
    for i, (_, metrics) in enumerate(done):
        if "loss" not in metrics:
            raise KeyError(f"train_step must return a 'loss' metric, got {sorted(metrics)}")
        for key in (metrics if i == last_step else ("loss",)):
            slots.append((i, key))
            values.append(metrics[key])
    read: list[Any] = list(values)
    by_module: dict[int, tuple[Any, list[int]]] = {}
    for j, v in enumerate(values):
        a = v.data if isinstance(v, Tensor) else v
        if isinstance(a, (bool, int, float, str)) or a is None:
            continue
        if getattr(a, "shape", None) != ():
            raise ValueError(f"metric {slots[j][1]!r} must be a scalar, got shape "
                             f"{getattr(a, 'shape', None)}")
        xp = backend.get_array_module(a)
        if xp is np:  # host values: nothing to wait for
            read[j] = float(a)
            continue
        by_module.setdefault(id(xp), (xp, []))[1].append(j)
        read[j] = a
    for xp, idx in by_module.values():
        stacked = xp.stack([read[j].astype(xp.float64) for j in idx])  # (n,) on the device
        host = backend.to_numpy(stacked)  # the one transfer
        for j, h in zip(idx, host):
            read[j] = float(h)
    if distributed.is_distributed():
        shard = [j for j, v in enumerate(values)
                 if type(v.data if isinstance(v, Tensor) else v) not in (bool, int, float, str)
                 and v is not None]  # values computed from this rank's shard
        if shard:
            mean = distributed.all_reduce(np.array([read[j] for j in shard], dtype=np.float64),
                                          "mean")  # (n,) on the host, the same on every rank
            for j, m in zip(shard, mean):
                read[j] = float(m)
    losses = [float(read[j]) for j, (_, key) in enumerate(slots) if key == "loss"]
    last = {key: (float(read[j]) if isinstance(read[j], (bool, int, float)) else read[j])
            for j, (i, key) in enumerate(slots) if i == last_step}
    return losses, last
