"""The command line: ``python -m minitransformer {train,eval,demo,list} ...``.

    python -m minitransformer demo                       # CLIP in minutes, with pictures
    python -m minitransformer train dino --preset cpu --out runs/dino
    python -m minitransformer train dino --out runs/dino --resume
    python -m minitransformer eval runs/dino --baseline
    python -m minitransformer list                       # recipes, presets and settings

The same program is installed as the ``minitransformer`` console script.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _parse_set(items: list[str]) -> dict[str, Any]:
    """``["lr=1e-3", "augment=true"]`` -> ``{"lr": 0.001, "augment": True}`` (JSON values,
    or the raw string when the value is not JSON)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


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
    from .backend import keep_freed_memory
    from .train import TrainingDiverged, load_latest, make_recipe, recipe_from_config, train

    keep_freed_memory()  # a training process: no page faults for each step's activations

    out = Path(args.out or f"runs/{args.recipe}-{args.preset}")
    overrides = _parse_set(args.set)
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.resume:
        _, meta, path = load_latest(out)
        if meta.get("recipe") != args.recipe:
            raise SystemExit(f"{path} is a {meta.get('recipe')!r} run, not {args.recipe!r}")
        recipe = recipe_from_config(args.recipe, meta["config"], device=args.device,
                                    **overrides)
        print(f"resuming {args.recipe} from {path.name} (step {meta['step']})")
    else:
        recipe = make_recipe(args.recipe, preset=args.preset, device=args.device,
                             seed=args.seed, **overrides)
    save_every = args.save_every if args.save_every is not None else max(recipe.steps // 10, 1)
    try:
        result = train(recipe, out, resume=args.resume, eval_every=args.eval_every,
                       save_every=save_every, progress=not args.no_progress,
                       overwrite=args.overwrite)
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    state = "interrupted" if result.interrupted else "done"
    print(f"{recipe.name}: {state} at step {result.steps_done} in {result.seconds:.1f} s; "
          f"checkpoint {result.checkpoint}")
    if result.eval_metrics:
        print(_table({"trained": result.eval_metrics}))
    return 130 if result.interrupted else 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .train import load_latest, recipe_from_config

    arrays, meta, path = load_latest(args.run_dir)
    recipe = recipe_from_config(meta["recipe"], meta["config"], device=args.device)
    rows: dict[str, dict[str, float]] = {}
    if args.baseline:
        rows["random init"] = recipe.evaluate()  # freshly built: the same seed, untrained
    recipe.load_state(arrays, meta)
    rows = {f"step {meta['step']}": recipe.evaluate(), **rows}
    print(f"{meta['recipe']} ({meta['config'].get('preset')} preset), {path}")
    print(_table(rows))
    if args.json:
        print(json.dumps(rows))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .backend import keep_freed_memory
    from .train.demo import DEMO_RECIPE, run_demo

    keep_freed_memory()

    run_demo(out_dir=args.out, device=args.device, steps=args.steps, preset=args.preset,
             recipe=args.recipe or DEMO_RECIPE, progress=not args.no_progress)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    import dataclasses

    from .train import RECIPES, recipe_class

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
    from .train.recipes import RECIPES

    p = argparse.ArgumentParser(prog="minitransformer", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a recipe")
    t.add_argument("recipe", choices=list(RECIPES))
    t.add_argument("--preset", default="cpu",
                   help="tiny: seconds (CI); cpu: minutes on 2 cores; gpu: larger (default cpu);"
                        " some recipes have more (see `list`)")
    t.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    t.add_argument("--steps", type=int, default=None, help="optimiser steps (default: preset)")
    t.add_argument("--out", default=None, help="run directory (default runs/RECIPE-PRESET)")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    t.add_argument("--overwrite", action="store_true",
                   help="start over in an --out that holds an earlier run's checkpoints")
    t.add_argument("--seed", type=int, default=None, help="seed (default: preset's, 0)")
    t.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps")
    t.add_argument("--save-every", type=int, default=None,
                   help="checkpoint every N steps (default: a tenth of the run)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe setting (see `list`)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(fn=_cmd_train)

    e = sub.add_parser("eval", help="evaluate the last checkpoint of a run directory")
    e.add_argument("run_dir")
    e.add_argument("--device", default="cpu")
    e.add_argument("--baseline", action="store_true",
                   help="also evaluate the same model at random init")
    e.add_argument("--json", action="store_true", help="also print the metrics as JSON")
    e.set_defaults(fn=_cmd_eval)

    d = sub.add_parser("demo", help="a short CLIP run on the shapes that prints its metrics "
                                    "beside the random-init baseline and saves attention maps")
    d.add_argument("--device", default="cpu")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--steps", type=int, default=None)
    d.add_argument("--recipe", default=None, help="the recipe to demo (default clip)")
    d.add_argument("--preset", default="demo")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(fn=_cmd_demo)

    ls = sub.add_parser("list", help="recipes, presets and settings")
    ls.set_defaults(fn=_cmd_list)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m minitransformer`` and the ``minitransformer`` script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
