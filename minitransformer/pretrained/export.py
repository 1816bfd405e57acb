"""Write a shipped checkpoint (``<name>.safetensors`` + its model card ``<name>.json``) from
the final checkpoint of a training run. ``bench/make_pretrained.py`` drives it; it is here so
that the format has one writer, next to its one reader (``pretrained.load``).

    export("dino-shapes", "runs/outcomes/dino-shapes", outcome, dest,
           command=..., export_command=..., commit=...)

``outcome`` is the run's entry in ``bench/outcomes.py``'s ``outcomes.json``: ``{"preset",
"steps", "trained": {metrics}, "baseline": {metrics at random init}, "train_s", ...}``.
"""

from __future__ import annotations

import datetime as _dt
import platform
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any

import numpy as np

from .. import io
from . import Card, _check_name, _models, _submodule, card, load

__all__ = ["export", "library_versions"]

_PACKAGES = ("numpy", "scipy", "scikit-learn", "safetensors", "numba", "minitransformer")


def library_versions() -> dict[str, str]:
    """Versions of Python and of the packages the numbers depend on (those installed), and
    whether the compiled Numba kernels are on (``functional.numba_kernels_for``)."""
    from .. import functional as F

    out = {"python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            out[pkg] = _metadata.version(pkg)
        except _metadata.PackageNotFoundError:
            continue
    probe = np.zeros(1, dtype=np.float32)
    out["numba_kernels"] = "on" if F.numba_kernels_for(probe) is not None else "off"
    return out


def _utc(timestamp: float) -> str:
    return _dt.datetime.fromtimestamp(timestamp, tz=_dt.timezone.utc).isoformat(
        timespec="seconds")


def export(name: str, run_dir: str | Path, outcome: dict[str, Any], dest: str | Path, *,
           command: str, export_command: str, commit: str,
           bars: list[tuple[str, bool]] | None = None, evaluate: bool = True
           ) -> tuple[Card, dict[str, float] | None]:
    """Export checkpoint ``name`` from the newest checkpoint of ``run_dir`` into ``dest``.

    Keeps only the arrays of the shipped module (``CHECKPOINTS[name].module`` of the recipe,
    its prefix removed), checks they load strictly into the recipe rebuilt from the run's
    config and are float32, writes the pair atomically (``io.save_checkpoint``) and loads it
    back with ``pretrained.load``. With ``evaluate`` the rebuilt recipe is evaluated with the
    exported weights; returns ``(card, those metrics or None)``.
    """
    from ..train import load_latest, recipe_from_config

    entry = _check_name(name)
    arrays, meta, path = load_latest(run_dir)
    if meta.get("recipe") != entry.recipe:
        raise ValueError(f"export {name!r}: {path} is a {meta.get('recipe')!r} run, "
                         f"expected the {entry.recipe!r} recipe")
    config = dict(meta["config"])
    preset = config.pop("preset")
    if outcome.get("preset") != preset or int(outcome.get("steps", -1)) != int(meta["step"]):
        raise ValueError(
            f"export {name!r}: the outcome entry (preset {outcome.get('preset')!r}, steps "
            f"{outcome.get('steps')}) is not the run in {run_dir} (preset {preset!r}, "
            f"step {meta['step']})")
    if int(meta["step"]) != int(config["steps"]):
        raise ValueError(f"export {name!r}: {path} is at step {meta['step']}, not the end of "
                         f"its {config['steps']}-step schedule (an interrupted run?)")
    prefix = entry.module + "."
    shipped = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    odd = {k: str(v.dtype) for k, v in shipped.items()
           if v.dtype.kind == "f" and v.dtype != np.float32}
    if odd:
        raise ValueError(f"export {name!r}: arrays that are not float32: {odd}")

    # The recipe rebuilt from the run's config: the architecture of the shipped module, and
    # a strict check that the arrays are exactly its parameters and buffers.
    r = recipe_from_config(entry.recipe, {"preset": preset, **config})
    target = _submodule(r, entry.module)
    target.load_state_dict(shipped, strict=True)
    target.eval()
    trained, baseline = dict(outcome["trained"]), dict(outcome["baseline"])
    now = _dt.datetime.now(tz=_dt.timezone.utc).timestamp()
    cpu_s = outcome.get("train_cpu_s")
    record = {
        "name": name,
        "description": entry.description,
        "recipe": entry.recipe,
        "preset": preset,
        "seed": int(config["seed"]),
        "settings": config,
        "module": entry.module,
        "model": _models.describe(target),
        "metric": entry.metric,
        "value": float(trained[entry.metric]),
        "baseline": float(baseline[entry.metric]),
        "metrics": trained,
        "baselines": baseline,
        "bars": [{"bar": b, "passed": bool(ok)} for b, ok in (bars or [])],
        "steps": int(meta["step"]),
        "train_seconds": float(outcome["train_s"]),
        "train_cpu_seconds": None if cpu_s is None else float(cpu_s),
        "command": command,
        "export_command": export_command,
        "commit": commit,
        "date": _utc(Path(path).stat().st_mtime),
        "exported": _utc(now),
        "versions": library_versions(),
        "device": outcome.get("device", "cpu"),
        "threads": outcome.get("threads"),
    }
    dest = Path(dest)
    io.save_checkpoint(dest / f"{name}.safetensors", shipped, record)
    load(name, directory=dest)  # the pair reads back through the public path
    metrics = r.evaluate() if evaluate else None
    return card(name, directory=dest), metrics
