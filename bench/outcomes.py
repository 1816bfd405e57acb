"""The outcomes of issue 5: each recipe's ``cpu`` preset trained from scratch, its headline
metric beside the same model at random init and the bar it must reach, with the wall time.

    python bench/outcomes.py                     # every outcome, one after the other
    python bench/outcomes.py dino dino-shapes    # selected ones
    python bench/outcomes.py --preset tiny       # a smoke run of the script (seconds)
    python bench/outcomes.py --device cuda --preset gpu

Bars (issue 5; 2 CPU cores, each run within 10 minutes):

    supervised    ViT on the digits: test accuracy >= 97%
    mlm           masked-token accuracy >= 2x the unigram baseline
    mim           (no bar) linear probe and patch segmentation beside random init
    clip          zero-shot accuracy >= 90% for shape and for colour
    dino          k-NN accuracy on the digits >= 90%
    dino-shapes   CLS-attention IoU on the shapes >= 0.5 and >= 2x random init
    dinov2        patch-segmentation mIoU above dino-shapes' (the same budget)

Each run writes ``OUT/<name>/`` (metrics.jsonl, the final checkpoint); the table is printed
in Markdown (for the README) and saved with the raw numbers to ``OUT/outcomes.json``.
BLAS threads default to one per process (``--threads``): these models are small, and with
another process busy on the second core a 2-thread OpenBLAS GEMM was measured 10-50x slower
than a 1-thread one (it spins waiting for the busy core). The table gives the wall time and
the process CPU time of the training and its final evaluation (the random-init evaluation
excluded): with one thread the CPU time is what the run takes on an otherwise idle core,
whatever else the machine was doing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# name -> (recipe, preset suffix, metric keys shown)
OUTCOMES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "supervised": ("supervised", "", ("test_acc",)),
    "mlm": ("mlm", "", ("masked_acc", "unigram_acc", "ratio_to_unigram")),
    "mim": ("mim", "", ("probe_acc", "patch_seg_miou", "test_loss")),
    "clip": ("clip", "", ("zero_shot_shape", "zero_shot_colour")),
    "dino": ("dino", "", ("knn_acc",)),
    "dino-shapes": ("dino", "-shapes", ("attn_iou_best_head", "attn_iou_mean",
                                        "patch_seg_miou")),
    "dinov2": ("dinov2", "", ("patch_seg_miou", "attn_iou_best_head")),
}


def bars(name: str, trained: dict, baseline: dict, others: dict) -> list[tuple[str, bool]]:
    """(description, passed) for each bar of an outcome."""
    t, b = trained, baseline
    if name == "supervised":
        return [("test_acc >= 0.97", t["test_acc"] >= 0.97)]
    if name == "mlm":
        return [("masked_acc >= 2x unigram", t["masked_acc"] >= 2 * t["unigram_acc"])]
    if name == "clip":
        return [("zero-shot shape >= 0.90", t["zero_shot_shape"] >= 0.9),
                ("zero-shot colour >= 0.90", t["zero_shot_colour"] >= 0.9)]
    if name == "dino":
        return [("knn_acc >= 0.90", t["knn_acc"] >= 0.9)]
    if name == "dino-shapes":
        return [("attn IoU (best head) >= 0.5", t["attn_iou_best_head"] >= 0.5),
                ("attn IoU (best head) >= 2x random",
                 t["attn_iou_best_head"] >= 2 * b["attn_iou_best_head"])]
    if name == "dinov2":
        ref = others.get("dino-shapes")
        if ref is None:
            return [("patch mIoU > dino-shapes (not run)", False)]
        return [(f"patch mIoU > dino-shapes ({ref['patch_seg_miou']:.3f})",
                 t["patch_seg_miou"] > ref["patch_seg_miou"])]
    return []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", help=f"outcomes to run (default all: {list(OUTCOMES)})")
    p.add_argument("--preset", default="cpu", help="tiny | cpu | gpu (default cpu)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/outcomes")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.add_argument("--table", action="store_true",
                   help="only print the table of the outcomes saved in OUT/outcomes.json")
    args = p.parse_args(argv)
    names = args.names or list(OUTCOMES)
    unknown = [n for n in names if n not in OUTCOMES]
    if unknown:
        p.error(f"unknown outcomes {unknown}; known: {list(OUTCOMES)}")
    saved = Path(args.out) / "outcomes.json"
    if args.table:
        results = json.loads(saved.read_text())
        print(table(results, [n for n in names if n in results]))
        return 0

    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import minitransformer as mt
    from minitransformer.train import make_recipe, train

    out = Path(args.out)
    results: dict[str, dict] = {}
    mt.backend.set_num_threads(args.threads)  # the blocked element-wise kernels, as BLAS
    mt.backend.keep_freed_memory()  # as the `train` command: no page faults every step
    with threadpool_limits(limits=args.threads):
        for name in names:
            recipe_name, suffix, _ = OUTCOMES[name]
            preset = args.preset + suffix
            t0 = time.perf_counter()
            recipe = make_recipe(recipe_name, preset=preset, device=args.device)
            build_s = time.perf_counter() - t0
            baseline = recipe.evaluate()  # the same model at random init
            cpu0 = time.process_time()
            result = train(recipe, out / name, progress=args.progress,
                           save_every=recipe.steps, overwrite=True)
            cpu_s = time.process_time() - cpu0
            results[name] = {
                "recipe": recipe_name, "preset": preset, "steps": result.steps_done,
                "trained": result.eval_metrics, "baseline": baseline,
                "train_s": result.seconds, "train_cpu_s": cpu_s, "build_s": build_s,
                "s_per_step": result.seconds / max(result.steps_done, 1),
                "device": args.device, "threads": args.threads,
            }
            print(f"{name}: {json.dumps(results[name])}", flush=True)
            out.mkdir(parents=True, exist_ok=True)
            # merge into the saved outcomes: several bench processes may share OUT, and
            # dinov2's bar reads dino-shapes' result
            merged = json.loads(saved.read_text()) if saved.exists() else {}
            merged[name] = results[name]
            saved.write_text(json.dumps(merged, indent=1))
    print()
    print(table(json.loads(saved.read_text()), names))
    return 0


def table(results: dict[str, dict], names: list[str]) -> str:
    """The Markdown table of the outcomes in ``names``."""
    lines = ["| outcome | metric | trained | random init | bar | pass | train time |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in names:
        r = results[name]
        checks = bars(name, r["trained"], r["baseline"], {k: v["trained"]
                                                          for k, v in results.items()})
        keys = OUTCOMES[name][2]
        for i, key in enumerate(keys):
            bar, ok = checks[i] if i < len(checks) else ("", None)
            mark = "" if ok is None else ("yes" if ok else "**no**")
            t = (f"{r['train_s']:.0f} s wall, {r.get('train_cpu_s', float('nan')):.0f} s CPU "
                 f"({r['steps']} steps)") if i == 0 else ""
            lines.append(f"| {name if i == 0 else ''} | {key} | {r['trained'][key]:.3f} | "
                         f"{r['baseline'][key]:.3f} | {bar} | {mark} | {t} |")
        for bar, ok in checks[len(keys):]:
            lines.append(f"| | | | | {bar} | {'yes' if ok else '**no**'} | |")
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
