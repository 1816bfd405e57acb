"""Loss curves from a run's ``metrics.jsonl``: the training metrics per step and the
evaluations made along the way."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._figure import new_figure, save_figure

__all__ = ["plot_loss_curves", "read_jsonl", "smooth"]


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file such as the training loop's ``metrics.jsonl``
    (``{"step", "loss", ...}`` per step, ``{"step", "eval": {...}}`` per evaluation); a torn
    last line (a run killed while writing) is skipped."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (the first points average what exists).
    Shapes: (n,) -> (n,)."""
    v = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(v) == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_loss_curves(run: str | Path | Sequence[dict[str, Any]],
                     keys: Sequence[str] | None = None, path: str | Path | None = None,
                     smoothing: int = 0, log_y: bool = False) -> Any:
    """Plot the step metrics (``keys``; default every numeric key but ``step``, ``sec``
    and ``lr``) in one panel each, and the evaluation metrics in a last panel.

    ``run`` is a run directory, a ``metrics.jsonl`` path, or its records. ``smoothing`` is a
    moving-average window (0: raw). Returns the Figure; saves a PNG when ``path`` is given.
    """
    if isinstance(run, (str, Path)):
        p = Path(run)
        records = read_jsonl(p if p.is_file() else p / "metrics.jsonl")
    else:
        records = list(run)
    steps_rec = [r for r in records if "eval" not in r]
    evals = [r for r in records if "eval" in r]
    if keys is None:
        keys = sorted({k for r in steps_rec for k, v in r.items()
                       if isinstance(v, (int, float)) and k not in ("step", "sec", "lr")})
        keys = sorted(keys, key=lambda k: (k != "loss", k))
    eval_keys = sorted({k for r in evals for k, v in r["eval"].items()
                        if isinstance(v, (int, float))})
    panels = len(keys) + (1 if eval_keys else 0)
    if panels == 0:
        raise ValueError("plot_loss_curves: no numeric metrics to plot")
    cols = min(panels, 3)
    rows = -(-panels // cols)
    fig = new_figure(figsize=(4.0 * cols, 2.8 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).reshape(-1)
    for ax, key in zip(axes, keys):
        pts = [(r["step"], r[key]) for r in steps_rec if isinstance(r.get(key), (int, float))]
        if not pts:
            continue
        x, y = np.array(pts, dtype=np.float64).T
        ax.plot(x, y, lw=0.6, alpha=0.35 if smoothing > 1 else 1.0, color="C0")
        if smoothing > 1:
            ax.plot(x, smooth(y, smoothing), lw=1.2, color="C0")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        if log_y and np.all(y > 0):
            ax.set_yscale("log")
    if eval_keys:
        ax = axes[len(keys)]
        for i, key in enumerate(eval_keys):
            pts = sorted((r["step"], r["eval"][key]) for r in evals if key in r["eval"])
            x, y = np.array(pts, dtype=np.float64).T
            ax.plot(x, y, marker="o", ms=3, lw=1.0, color=f"C{i}", label=key)
        ax.set_title("evaluation", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.legend(fontsize=7)
    for ax in axes[panels:]:
        ax.set_axis_off()
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig
