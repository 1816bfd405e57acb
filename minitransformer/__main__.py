"""The command line: ``python -m minitransformer {train,eval,demo,list} ...``.

    python -m minitransformer demo                       # CLIP in minutes, with pictures
    python -m minitransformer train dino --preset cpu --out runs/dino
    python -m minitransformer train dino --out runs/dino --resume
    python -m minitransformer eval runs/dino --baseline
    python -m minitransformer list                       # recipes, presets and settings
    mpiexec -n 2 python -m minitransformer train dino --preset cpu --out runs/dino-2
                                      # data parallel: 2 processes share each global batch

The same program is installed as the ``minitransformer`` console script.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["UsageError", "main"]

# The largest accepted step counts and seeds (the recipes' own LIMITS; kept equal by a test).
MAX_STEPS = 10_000_000
MAX_SEED = 2**32 - 1
class UsageError(Exception):
    """A mistake in what the user asked for: ``main`` prints it as one line,
    ``minitransformer: error: ...``, and exits with status 2 (``--debug``: the traceback)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors (unknown recipe, a flag's bad value) as one-line UsageErrors
    instead of the usage text and ``SystemExit``."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        command = self.prog.split()[-1] if " " in self.prog else ""
        raise UsageError(f"{command}: {message}" if command else message)


def _whole(lo: int, hi: int) -> Any:
    """An argparse type: a whole number in [lo, hi]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a whole number (allowed: {lo} to {hi})") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is out of range (allowed: {lo} to {hi})")
        return value

    parse.__name__ = "whole number"
    return parse


def _one_line(message: str) -> str:
    return "; ".join(part.strip() for part in str(message).splitlines() if part.strip())


def _parse_set(items: list[str]) -> dict[str, Any]:
    """``["lr=1e-3", "augment=true"]`` -> ``{"lr": 0.001, "augment": True}`` (JSON values,
    or the raw string when the value is not JSON)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set expects KEY=VALUE (e.g. --set lr=1e-3), got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise UsageError(f"--set expects KEY=VALUE with a setting's name, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _merge(overrides: dict[str, Any], key: str, flag: str, value: Any) -> None:
    """``--steps N`` / ``--seed N`` into the settings; one given twice must agree."""
    if value is None:
        return
    if key in overrides and overrides[key] != value:
        raise UsageError(f"{flag} {value} and --set {key}={overrides[key]!r} disagree; "
                         "give one of them")
    overrides[key] = value


def _device(spec: str) -> Any:
    """The device ``--device`` names, or a UsageError saying why it cannot be used."""
    from .backend import as_device

    try:
        return as_device(spec)
    except (ValueError, RuntimeError, TypeError) as e:
        raise UsageError(f"--device {spec}: {e} (allowed: cpu, or cuda/gpu where CuPy sees "
                         "a GPU)") from e


def _config(cls: Any, preset: str, settings: dict[str, Any], where: str = "") -> Any:
    """The validated settings (no data or model built yet), or a UsageError naming the
    setting, the value and what is allowed."""
    try:
        return cls.make_config(preset, **settings)
    except ValueError as e:
        raise UsageError(f"{where}{e}") from e


def _writable_dir(out: Path, flag: str = "--out") -> None:
    """Create ``out`` if needed; a UsageError when it names a file or cannot be written."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{flag} {out} is a file, not a folder; name a folder (created if "
                         "missing) or another path")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{flag} {out}: cannot create the folder ({e.strerror or e})") from e
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {out}: the folder is not writable by this user")


def _latest(run: Path, what: str) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """``load_latest(run)``, with a UsageError for a missing, non-run or unreadable folder."""
    from .io import CheckpointError
    from .train import load_latest

    if not run.exists():
        raise UsageError(f"{what}: {run} does not exist (give the --out folder of a train run)")
    if not run.is_dir():
        raise UsageError(f"{what}: {run} is a file, not a run folder (the --out of train)")
    try:
        return load_latest(run)
    except FileNotFoundError as e:
        hint = "; start the run without --resume" if what == "--resume" else ""
        raise UsageError(f"{what}: {run} is not a run folder: it holds no checkpoint "
                         f"(ckpt-*.safetensors){hint}") from e
    except CheckpointError as e:
        raise UsageError(f"{what}: {_one_line(e)}") from e


def _saved_config(meta: dict[str, Any], path: Path, what: str) -> tuple[str, dict[str, Any]]:
    """The recipe name and configuration stored beside a checkpoint."""
    name, config = meta.get("recipe"), meta.get("config")
    if not isinstance(name, str) or not isinstance(config, dict):
        raise UsageError(f"{what}: {path} has no recipe name or configuration in its metadata")
    return name, config


def _table(rows: dict[str, dict[str, float]]) -> str:
    """Metrics side by side: ``{"trained": {...}, "random init": {...}}`` -> aligned text."""
    cols = list(rows)
    keys = list(dict.fromkeys(k for r in rows.values() for k in r))
    width = max([len("metric")] + [len(k) for k in keys])
    lines = ["  ".join([f"{'metric':<{width}}"] + [f"{c:>12}" for c in cols])]
    for k in keys:
        cells = []
        for c in cols:
            v = rows[c].get(k)
            cells.append(f"{v:>12.4f}" if isinstance(v, (int, float)) else f"{'':>12}")
        lines.append("  ".join([f"{k:<{width}}"] + cells))
    return "\n".join(lines)


def _cmd_train(args: argparse.Namespace) -> int:
    from . import distributed
    from .backend import keep_freed_memory
    from .train import TrainingDiverged, loop, recipe_class, train
    from .train.config_check import compare_config
    from .train.recipes.base import DistributedProblem

    try:  # under mpiexec -n W (W > 1) the W processes train one model together
        distributed.init("mpi" if args.distributed else "auto")
    except ImportError as e:
        raise UsageError(str(e)) from e
    lead = distributed.rank() == 0  # prints and writes (the others train silently)
    device = _device(args.device)
    cls = recipe_class(args.recipe)
    overrides = _parse_set(args.set)
    _merge(overrides, "steps", "--steps", args.steps)
    _merge(overrides, "seed", "--seed", args.seed)
    allow = [a.strip() for a in (args.allow_changes or "").split(",") if a.strip()]
    if allow and not args.resume:
        raise UsageError("--allow-changes applies to --resume only (a fresh run takes any "
                         "settings)")
    if args.resume and args.overwrite:
        raise UsageError("--resume continues the run in --out, --overwrite deletes it: give "
                         "one of them")
    out = Path(args.out or f"runs/{args.recipe}-{args.preset or 'cpu'}")
    if args.resume:
        # The run continues with the checkpoint's settings; what the command line sets must
        # equal them, except the settings named in --allow-changes (config_check).
        _, meta, path = _latest(out, "--resume")
        name, saved = _saved_config(meta, path, "--resume")
        if name != args.recipe:
            raise UsageError(f"--resume: {path} is a {name!r} run, not {args.recipe!r}")
        if args.preset is None:  # the checkpoint's preset and settings, plus what is set
            preset = str(saved.get("preset", "cpu"))
            settings = {**{k: v for k, v in saved.items() if k != "preset"}, **overrides}
        else:  # the preset asked for, as a fresh run would have it
            preset, settings = args.preset, overrides
        cfg = _config(cls, preset, settings)
        try:
            compare_config(saved, {"preset": preset, **dataclasses.asdict(cfg)}, allow)
        except ValueError as e:  # ConfigMismatch, or an unknown/unsafe --allow-changes
            msg = str(e)
            if msg.startswith("allow_changes"):  # the flag's name, not the parameter's
                msg = "--allow-changes" + msg[len("allow_changes"):]
            raise UsageError(msg) from e
        problem = loop.world_size_problem(meta, path.name)
        if problem:
            raise UsageError(problem)
    else:
        preset = args.preset or "cpu"
        cfg = _config(cls, preset, overrides)
    problem = cls.distributed_problem(cfg)  # over W ranks: an unsupported recipe, a batch
    if problem:  # that W does not divide
        raise UsageError(problem)

    keep_freed_memory()  # a training process: no page faults for each step's activations
    try:  # over W ranks it also checks the batch against the data set (batch_size > n)
        recipe = cls(preset=preset, device=device, **dataclasses.asdict(cfg))
    except DistributedProblem as e:
        raise UsageError(str(e)) from e
    _writable_dir(out)  # after every refusal: a refused run leaves no folder behind
    if args.resume and lead:
        print(f"resuming {args.recipe} from {path.name} (step {meta.get('step')})")
    save_every = args.save_every if args.save_every is not None else max(recipe.steps // 10, 1)
    locked = getattr(loop, "RunDirectoryLocked", ())
    try:
        result = train(recipe, out, resume=args.resume, eval_every=args.eval_every,
                       save_every=save_every, progress=not args.no_progress,
                       log_every=args.log_every or loop.default_log_every(recipe.steps),
                       overwrite=args.overwrite,
                       allow_changes=tuple(allow))
    except (FileExistsError, locked, loop.WorldSizeMismatch, DistributedProblem) as e:
        raise UsageError(str(e)) from e
    except TrainingDiverged as e:
        if args.debug:
            raise
        if lead:
            print(f"minitransformer: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except ValueError as e:  # the checkpoint's config against this run's (config_check)
        from .train.config_check import ConfigMismatch

        if isinstance(e, ConfigMismatch):
            raise UsageError(str(e)) from e
        raise
    state = "interrupted" if result.interrupted else "done"
    ranks = distributed.world_size()
    if lead:
        print(f"{recipe.name}: {state} at step {result.steps_done} in {result.seconds:.1f} s"
              f"{f' on {ranks} ranks' if ranks > 1 else ''}; checkpoint {result.checkpoint}")
        if result.eval_metrics:
            print(_table({"trained": result.eval_metrics}))
    if not result.interrupted:
        return 0
    return 143 if result.signal == "SIGTERM" else 130  # 128 + the signal's number, as shells


def _one_process_only(command: str) -> None:
    """A UsageError when launched as several MPI processes: ``command`` runs in one process
    (each rank would do the same work and print or write the same output). Chooses the world
    from the environment, as ``train`` does."""
    from . import distributed

    try:
        distributed.init("auto")
    except ImportError as e:
        raise UsageError(str(e)) from e
    if distributed.world_size() > 1:
        raise UsageError(
            f"{command} runs in one process (launched as {distributed.world_size()} MPI "
            "processes); for data-parallel training: mpiexec -n N python -m minitransformer "
            "train RECIPE")


def _cmd_eval(args: argparse.Namespace) -> int:
    from .train import recipe_class

    _one_process_only("eval")  # rank 0's table printed W times otherwise
    device = _device(args.device)
    run = Path(args.run_dir)
    arrays, meta, path = _latest(run, "eval")
    name, saved = _saved_config(meta, path, "eval")
    try:
        cls = recipe_class(name)
    except ValueError as e:
        raise UsageError(f"eval: {path}: {e}") from e
    preset = str(saved.get("preset", "cpu"))
    cfg = _config(cls, preset, {k: v for k, v in saved.items() if k != "preset"},
                  where=f"eval: {path.name}: ")
    recipe = cls(preset=preset, device=device, **dataclasses.asdict(cfg))
    rows: dict[str, dict[str, float]] = {}
    if args.baseline:
        rows["random init"] = recipe.evaluate()  # freshly built: the same seed, untrained
    recipe.load_state(arrays, meta)
    rows = {f"step {meta['step']}": recipe.evaluate(), **rows}
    print(f"{name} ({preset} preset), {path}")
    print(_table(rows))
    if args.json:
        print(json.dumps(rows))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .backend import keep_freed_memory
    from .train import recipe_class
    from .train.demo import DEMO_RECIPE, run_demo

    _one_process_only("demo")  # every rank would write the same pictures
    _device(args.device)
    name = args.recipe or DEMO_RECIPE
    _config(recipe_class(name), args.preset,
            {} if args.steps is None else {"steps": args.steps})
    _writable_dir(Path(args.out))
    keep_freed_memory()

    run_demo(out_dir=args.out, device=args.device, steps=args.steps, preset=args.preset,
             recipe=args.recipe or DEMO_RECIPE, progress=not args.no_progress)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    import dataclasses

    from .train import RECIPES, recipe_class

    _one_process_only("list")
    for name in RECIPES:
        cls = recipe_class(name)
        print(f"{name}: {cls.description}")
        for preset, values in cls.PRESETS.items():
            print(f"  --preset {preset}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
        fields = ", ".join(f.name for f in dataclasses.fields(cls.Config))
        print(f"  settings (--set KEY=VALUE): {fields}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m minitransformer``."""
    from .train.config_check import SAFE_CHANGES
    from .train.loop import LOG_EVERY
    from .train.recipes import RECIPES

    steps, seed = _whole(0, MAX_STEPS), _whole(0, MAX_SEED)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error instead of one line")

    p = _Parser(prog="minitransformer", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a recipe", parents=[common])
    t.add_argument("recipe", choices=list(RECIPES))
    t.add_argument("--preset", default=None,
                   help="tiny: seconds (CI); cpu: minutes on 2 cores; gpu: larger (default cpu;"
                        " with --resume the checkpoint's); some recipes have more (see `list`)")
    t.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    t.add_argument("--steps", type=steps, default=None,
                   help=f"optimiser steps, 0 to {MAX_STEPS} (default: the preset's)")
    t.add_argument("--out", default=None, help="run directory (default runs/RECIPE-PRESET)")
    t.add_argument("--resume", action="store_true",
                   help="continue from the last checkpoint, with its settings")
    t.add_argument("--allow-changes", default=None, metavar="KEY[,KEY...]",
                   help="with --resume: settings that may differ from the checkpoint's (only "
                        f"{', '.join(SAFE_CHANGES)}; e.g. steps to extend a run)")
    t.add_argument("--overwrite", action="store_true",
                   help="start over in an --out that holds an earlier run's checkpoints")
    t.add_argument("--seed", type=seed, default=None,
                   help="seed, the same as --set seed=N (default: the preset's, 0)")
    t.add_argument("--eval-every", type=steps, default=0,
                   help="evaluate every N steps (default 0: at the end only)")
    t.add_argument("--save-every", type=steps, default=None,
                   help="checkpoint every N steps (default: a tenth of the run; 0: at the end "
                        "only)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe setting (see `list`); JSON values, e.g. "
                        "betas=[0.9,0.98]")
    t.add_argument("--log-every", type=_whole(1, MAX_STEPS), default=None, metavar="N",
                   help="read the losses from the device and log them every N steps (one "
                        "host-device synchronisation per N steps; a NaN loss is found at the "
                        "end of its interval; default: a hundredth of the run, at least 1 and "
                        f"at most {LOG_EVERY})")
    t.add_argument("--distributed", action="store_true",
                   help="insist on MPI (mpi4py) even for one process; without it, "
                        "`mpiexec -n N python -m minitransformer train ...` is detected from "
                        "the environment and the N processes split each global batch "
                        "(--set batch_size is the global batch; docs/distributed.md)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(fn=_cmd_train)

    e = sub.add_parser("eval", help="evaluate the last checkpoint of a run directory",
                       parents=[common])
    e.add_argument("run_dir")
    e.add_argument("--device", default="cpu")
    e.add_argument("--baseline", action="store_true",
                   help="also evaluate the same model at random init")
    e.add_argument("--json", action="store_true", help="also print the metrics as JSON")
    e.set_defaults(fn=_cmd_eval)

    d = sub.add_parser("demo", help="a short CLIP run on the shapes that prints its metrics "
                                    "beside the random-init baseline and saves attention maps",
                       parents=[common])
    d.add_argument("--device", default="cpu")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--steps", type=steps, default=None)
    d.add_argument("--recipe", default=None, choices=list(RECIPES),
                   help="the recipe to demo (default clip)")
    d.add_argument("--preset", default="demo")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(fn=_cmd_demo)

    ls = sub.add_parser("list", help="recipes, presets and settings", parents=[common])
    ls.set_defaults(fn=_cmd_list)
    return p


def _lead_rank() -> bool:
    """False on the MPI ranks other than 0 of a data-parallel ``train`` (which print nothing);
    True otherwise. Starts no MPI: a command that did not start it is rank 0."""
    from . import distributed

    return distributed.rank_if_initialized() in (None, 0)  # starts no MPI


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m minitransformer`` and the ``minitransformer`` script.

    Returns the exit status: 0 done, 1 the training diverged, 2 a user error (printed as one
    line ``minitransformer: error: ...``; ``--debug`` raises it with its traceback instead),
    130 interrupted by Ctrl-C (SIGINT), 143 by SIGTERM (each saved its last step first)."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        print(f"minitransformer: error: {_one_line(e)}", file=sys.stderr)
        return 2
    try:
        return int(args.fn(args) or 0)
    except UsageError as e:
        if args.debug:
            raise
        if _lead_rank():  # under mpiexec every rank has the same error: rank 0 says it
            print(f"minitransformer: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
