"""Why a DINO run on the shapes fails: the collapse diagnostics over training and where each
head's CLS attention goes, for the teacher and the student of a run's newest checkpoint and
for the random init of the same seed (issue 15, docs/dino.md "Why some seeds failed").

    python bench/dino_diagnostics.py RUN_DIR [RUN_DIR ...] [--json OUT.json]

A run directory is what ``python -m minitransformer train dino --preset cpu-shapes ...``
writes (metrics.jsonl, ckpt-*.safetensors); ``--eval-every N`` adds the attention IoU over
training to the log. For each run it prints:

- the logged diagnostics at a few steps: the loss, the teacher's mean entropy and the KL of
  its batch-mean distribution to uniform (both against ln K: ``objectives.diagnostics``), the
  spread of the teacher's normalised CLS features, and the evaluations' best-head and
  head-averaged attention IoU;
- per head of the last block, for the random init, the teacher and the student of the
  newest checkpoint, on the test images: the IoU of DINO's 60%-of-the-mass map with the
  object (``eval.attention_iou``); the share of the CLS attention that falls on object
  patches (``object mass``; the object's share of the patches is the chance level, given as
  ``object area``); the attention's entropy over the patches in units of ln N (1 = spread
  evenly, 0 = one patch); and ``top-patch share``, the fraction of images whose most
  attended patch is at the most common position: near 1 when a head looks at one fixed
  place whatever the image (a background "register" rather than the object).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

STEPS_SHOWN = (1, 10, 30, 60, 100, 150, 200)
LOGGED = ("loss", "teacher_entropy", "kl_to_uniform", "feature_std")


def trajectory(records: list[dict[str, Any]], steps: tuple[int, ...] = STEPS_SHOWN
               ) -> dict[str, Any]:
    """The logged diagnostics at ``steps`` (those present) and every evaluation's metrics."""
    by_step = {r["step"]: r for r in records if "loss" in r}
    evals = {r["step"]: r["eval"] for r in records if "eval" in r}
    rows = {s: {k: by_step[s][k] for k in LOGGED if k in by_step[s]}
            for s in steps if s in by_step}
    ln_k = next((r["ln_K"] for r in by_step.values() if "ln_K" in r), None)
    return {"steps": rows, "evals": evals, "ln_K": ln_k}


def head_stats(attn: np.ndarray, obj: np.ndarray) -> dict[str, np.ndarray]:
    """Per head, averaged over images. Shapes: attn (B, H, N) CLS-to-patch attention of the
    last block (rows sum to 1 over the N patches once normalised here), obj (B, N) bool.

    object mass_h = mean_b sum_n a_bhn obj_bn; entropy_h = mean_b (-sum_n a log a) / ln N;
    top-patch share_h = max_n (count of images whose argmax_n a_bhn is n) / B."""
    from minitransformer.eval import attention_iou

    a = attn / attn.sum(-1, keepdims=True)  # (B, H, N)
    B, H, N = a.shape
    mass = (a * obj[:, None, :]).sum(-1).mean(0)  # (H,)
    ent = (-(a * np.log(np.where(a > 0, a, 1.0))).sum(-1) / math.log(N)).mean(0)  # (H,)
    top = a.argmax(-1)  # (B, H)
    share = np.array([np.bincount(top[:, h], minlength=N).max() / B for h in range(H)])
    iou = attention_iou(attn, obj, 0.6)
    return {"iou": np.asarray(iou.per_head, dtype=np.float64), "object_mass": mass,
            "entropy": ent, "top_patch_share": share,
            "object_area": np.full(H, obj.mean())}


def attention_of(net: Any, x: np.ndarray, device: Any) -> np.ndarray:
    """(B, H, N) CLS-to-patch attention of ``net``'s last block, in eval mode, on the host."""
    from minitransformer import backend
    from minitransformer.train.recipes.base import batched

    net.eval()
    out = batched(lambda b: net.get_last_selfattention(b)[:, :, 0, 1:], x, device)
    return np.asarray(backend.to_numpy(out), dtype=np.float64)


def analyse(run_dir: Path) -> dict[str, Any]:
    from minitransformer.eval import patch_masks_from_pixels
    from minitransformer.train import load_latest, read_metrics, recipe_from_config

    out: dict[str, Any] = {"run": str(run_dir)}
    out["trajectory"] = trajectory(read_metrics(run_dir))
    arrays, meta, path = load_latest(run_dir)
    config = dict(meta["config"])
    out["step"] = meta.get("step")
    out["config"] = config
    fresh = recipe_from_config(meta.get("recipe", "dino"), config)  # the same seed's init
    d = fresh.data
    x, obj = d.x_test, np.asarray(patch_masks_from_pixels(d.masks_test, fresh.cfg.patch_size))
    heads = {"random init": head_stats(attention_of(fresh.teacher.backbone, x, fresh.device),
                                       obj)}
    fresh.load_state(arrays, meta)
    heads["teacher"] = head_stats(attention_of(fresh.teacher.backbone, x, fresh.device), obj)
    heads["student"] = head_stats(attention_of(fresh.student.backbone, x, fresh.device), obj)
    out["checkpoint"] = path.name
    out["heads"] = {k: {m: v.tolist() for m, v in s.items()} for k, s in heads.items()}
    return out


def report(res: dict[str, Any]) -> str:
    t = res["trajectory"]
    lines = [f"## {res['run']} (seed {res['config'].get('seed')}, {res['checkpoint']})", "",
             f"ln K = {t['ln_K']:.3f}" if t["ln_K"] else "", "",
             "| step | " + " | ".join(LOGGED) + " |",
             "| --- | " + " | ".join("---" for _ in LOGGED) + " |"]
    for s, row in t["steps"].items():
        lines.append(f"| {s} | " + " | ".join(f"{row.get(k, float('nan')):.3f}"
                                             for k in LOGGED) + " |")
    if t["evals"]:
        lines += ["", "| step | " + " | ".join(t["evals"][next(iter(t["evals"]))]) + " |",
                  "| --- |" + " --- |" * len(t["evals"][next(iter(t["evals"]))])]
        for s, e in t["evals"].items():
            lines.append(f"| {s} | " + " | ".join(f"{v:.3f}" for v in e.values()) + " |")
    lines += ["", "| network | head | IoU | object mass | object area | entropy / ln N "
                  "| top-patch share |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for net, s in res["heads"].items():
        for h in range(len(s["iou"])):
            lines.append(f"| {net if h == 0 else ''} | {h} | {s['iou'][h]:.3f} | "
                         f"{s['object_mass'][h]:.3f} | {s['object_area'][h]:.3f} | "
                         f"{s['entropy'][h]:.3f} | {s['top_patch_share'][h]:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run directories")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    results = []
    for run in args.runs:
        res = analyse(run)
        results.append(res)
        print(report(res), flush=True)
        print()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
