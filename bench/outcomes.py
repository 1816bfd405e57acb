"""The outcomes of issue 5: each recipe's ``cpu`` preset trained from scratch, its headline
metric beside the same model at random init and the bar it must reach, with the wall time.

    python bench/outcomes.py                     # every outcome, one after the other
    python bench/outcomes.py dino dino-shapes    # selected ones
    python bench/outcomes.py --preset tiny       # a smoke run of the script (seconds)
    python bench/outcomes.py --device cuda --preset gpu
    python bench/outcomes.py dino-shapes dinov2 --seeds 21 22 23 24 25   # per-seed table

Bars (issue 5; 2 CPU cores, each run within 10 minutes):

    supervised    ViT on the digits: test accuracy >= 97%
    mlm           masked-token accuracy >= 2x the unigram baseline
    mim           (no bar) linear probe and patch segmentation beside random init
    clip          zero-shot accuracy >= 90% for shape and for colour
    dino          k-NN accuracy on the digits >= 90%
    dino-shapes   CLS-attention IoU on the shapes >= 0.5 and >= 2x random init
    dinov2        patch-segmentation mIoU above dino-shapes' (the same budget); with
                  --seeds, a paired lead over the seeds of at least twice its standard error

Each run writes ``OUT/<name>/`` (metrics.jsonl, the final checkpoint); the table is printed
in Markdown (for the README) and saved with the raw numbers to ``OUT/outcomes.json``.

With ``--seeds S1 S2 ...`` (issue 15) each outcome is trained once per seed (a seed draws the
data and the initialisation; ``OUT/<name>/seed-<S>/``), each seed's trained metric is shown
beside the random init of the same seed, then the mean, the standard deviation (n - 1) and
the worst seed, and each bar must hold on every seed. DINOv2 against dino-shapes is a paired
comparison: per seed the difference d_s of their patch mIoU (same seed, same images), its
mean and standard error SE = sd(d) / sqrt(n); the bar is mean >= 2 SE (and > 0). The raw
per-seed numbers are kept in ``OUT/outcomes.json`` under ``runs``; runs of other seeds (from
other processes sharing OUT) are merged in, under a file lock. A summary table follows, one
row per headline metric, with the columns of the README's table.
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
from typing import Any

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
    p.add_argument("--seeds", type=int, nargs="+", metavar="S",
                   help="train each outcome once per seed; per-seed table with mean, sd, "
                        "worst case and the bars on every seed")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe setting in every named outcome (JSON value), "
                        "e.g. --set lr=1e-3; recorded in the JSON")
    args = p.parse_args(argv)
    names = args.names or list(OUTCOMES)
    unknown = [n for n in names if n not in OUTCOMES]
    if unknown:
        p.error(f"unknown outcomes {unknown}; known: {list(OUTCOMES)}")
    overrides = parse_set(p, args.set)
    if args.seeds is not None and len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds has repeated seeds: {args.seeds}")
    saved = Path(args.out) / "outcomes.json"
    if args.table:
        results = json.loads(saved.read_text())
        shown = [n for n in names if n in results]
        if args.seeds is not None or any("runs" in results[n] for n in shown):
            print(seeds_table(results, shown, args.seeds))
        else:
            print(table(results, shown))
        return 0

    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import numpy as np

    import minitransformer as mt
    from minitransformer.train import make_recipe, train

    out = Path(args.out)
    results: dict[str, dict] = {}
    mt.backend.set_num_threads(args.threads)  # the blocked element-wise kernels, as BLAS
    mt.backend.keep_freed_memory()  # as the `train` command: no page faults every step
    def run_one(name: str, seed: int | None, run_dir: Path) -> dict:
        recipe_name, suffix, _ = OUTCOMES[name]
        preset = args.preset + suffix
        t0 = time.perf_counter()
        recipe = make_recipe(recipe_name, preset=preset, device=args.device, seed=seed,
                             **overrides)
        build_s = time.perf_counter() - t0
        baseline = recipe.evaluate()  # the same model at random init
        cpu0 = time.process_time()
        result = train(recipe, run_dir, progress=args.progress, save_every=recipe.steps,
                       overwrite=True)
        cpu_s = time.process_time() - cpu0
        return {
            "recipe": recipe_name, "preset": preset, "seed": recipe.cfg.seed,
            "overrides": overrides, "settings": settings_of(recipe),
            "steps": result.steps_done,
            "trained": result.eval_metrics, "baseline": baseline,
            "train_s": result.seconds, "train_cpu_s": cpu_s, "build_s": build_s,
            "s_per_step": result.seconds / max(result.steps_done, 1),
            "device": args.device, "threads": args.threads,
            # the fused CPU kernels compiled by Numba, or their NumPy calls (float32 rounding
            # and speed differ a little between the two)
            "numba": mt.functional.numba_kernels_for(np.zeros(1, np.float32)) is not None,
        }

    with threadpool_limits(limits=args.threads):
        for name in names:
            for seed in (args.seeds if args.seeds is not None else [None]):
                if seed is None:
                    r = run_one(name, None, out / name)
                else:
                    r = run_one(name, seed, out / name / f"seed-{seed}")
                print(f"{name}{'' if seed is None else f' seed {seed}'}: {json.dumps(r)}",
                      flush=True)
                # merge into the saved outcomes: several bench processes may share OUT, and
                # dinov2's bar reads dino-shapes' result
                merge_saved(saved, name, r, seed)
    print()
    merged = json.loads(saved.read_text())
    if args.seeds is None:
        print(table(merged, names))
    else:
        print(seeds_table(merged, names, args.seeds))
    return 0


def parse_set(p: argparse.ArgumentParser, items: list[str]) -> dict:
    """``["lr=1e-3"]`` -> ``{"lr": 0.001}`` (JSON values, else the raw string), as the CLI's
    ``--set``."""
    out: dict = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            p.error(f"--set expects KEY=VALUE (e.g. --set lr=1e-3), got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
        if key.strip() == "seed":
            p.error("--set seed=... : give the seeds with --seeds")
    return out


def settings_of(recipe: Any) -> dict:
    """A recipe's resolved settings (``recipe.config()``) without its seed and preset name, as
    JSON gives them back (tuples become lists): what two seeds of one outcome must share."""
    out = json.loads(json.dumps(recipe.config()))
    out.pop("seed", None)
    out.pop("preset", None)  # recorded beside them, and compared on its own
    return out


def merge_saved(saved: Path, name: str, r: dict, seed: int | None) -> None:
    """Read-modify-write ``saved`` under an exclusive lock (bench processes may share it):
    a single-seed run replaces ``name``'s entry; a seeded run goes into ``name``'s ``runs``
    under its seed, next to the other seeds' runs, which must be of the same preset and
    overrides, and of the same resolved settings (a preset edited between two runs changes
    them), else a ValueError: the seeds would not be comparable."""
    import fcntl

    saved.parent.mkdir(parents=True, exist_ok=True)
    with open(saved.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = json.loads(saved.read_text()) if saved.exists() else {}
        if seed is None:
            merged[name] = r
        else:
            entry = merged.get(name, {})
            if "runs" in entry and (entry["preset"], entry["overrides"]) != (
                    r["preset"], r["overrides"]):
                raise ValueError(
                    f"{saved} holds {name} runs of preset {entry['preset']!r} with "
                    f"overrides {entry['overrides']} (seeds {sorted(entry['runs'], key=int)}),"
                    f" not {r['preset']!r} with {r['overrides']}: use another --out")
            mine, theirs = r.get("settings"), entry.get("settings")
            differ = ([] if mine is None or theirs is None else
                      sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k)))
            if "runs" in entry and differ:
                raise ValueError(
                    f"{saved} holds {name} runs (seeds {sorted(entry['runs'], key=int)}) whose "
                    f"settings differ from this run's in {differ} (the preset "
                    f"{entry['preset']!r} changed between them?): use another --out")
            if "runs" not in entry:  # none yet, or a single-seed entry: start the seeds
                entry = {"recipe": r["recipe"], "preset": r["preset"],
                         "overrides": r["overrides"], "runs": {}}
            if mine is not None and entry.get("settings") is None:
                entry["settings"] = mine
            entry["runs"][str(seed)] = r
            merged[name] = entry
        tmp = saved.with_suffix(".tmp")
        tmp.write_text(json.dumps(merged, indent=1))
        tmp.replace(saved)


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


# metrics where lower is better (the worst seed is the largest)
LOWER_IS_BETTER = {"test_loss"}


def stats(values: list[float], lower_is_better: bool = False) -> dict[str, float]:
    """Mean, sample standard deviation (n - 1; 0 for one value) and worst value."""
    n = len(values)
    mean = sum(values) / n
    sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else 0.0
    return {"mean": mean, "sd": sd, "worst": max(values) if lower_is_better else min(values),
            "n": n}


def paired(diffs: list[float]) -> dict[str, float]:
    """Paired comparison: mean of the per-seed differences d, its standard error
    sd(d) / sqrt(n) (n - 1 in sd) and whether mean >= 2 SE with mean > 0 (needs n >= 2)."""
    st = stats(diffs)
    se = st["sd"] / st["n"] ** 0.5
    return {"mean": st["mean"], "se": se, "n": st["n"],
            "holds": st["n"] >= 2 and st["mean"] > 0 and st["mean"] >= 2 * se}


def seed_bars(name: str, results: dict[str, dict], seeds: list[str]
              ) -> list[tuple[str, dict[str, bool]]]:
    """(bar, {seed: passed}) for each per-seed bar of ``name`` (the single-seed bars, each
    seed against its own random init); dinov2's bar is the paired one (``paired_dinov2``)."""
    runs = results[name]["runs"]
    if name == "dinov2":
        return []
    out: dict[str, dict[str, bool]] = {}
    for s in seeds:
        for bar, ok in bars(name, runs[s]["trained"], runs[s]["baseline"], {}):
            out.setdefault(bar, {})[s] = ok
    return list(out.items())


def paired_dinov2(results: dict[str, dict], seeds: list[str]) -> dict | None:
    """dinov2 minus dino-shapes in patch mIoU on the seeds both have: per seed and paired."""
    if "dinov2" not in results or "dino-shapes" not in results:
        return None
    a, b = results["dinov2"].get("runs", {}), results["dino-shapes"].get("runs", {})
    both = [s for s in seeds if s in a and s in b]
    if not both:
        return None
    d = {s: a[s]["trained"]["patch_seg_miou"] - b[s]["trained"]["patch_seg_miou"]
         for s in both}
    return {"per_seed": d, **paired(list(d.values()))}


def seeds_table(results: dict[str, dict], names: list[str], seeds: list[int] | None = None
                ) -> str:
    """The per-seed Markdown table: for each outcome and metric, each seed's trained value
    with the random init of the same seed in brackets, mean ± sd and worst (trained; random
    init's mean in brackets), then a row per bar with the seeds where it fails."""
    lines = []
    for name in names:
        entry = results[name]
        if "runs" not in entry:
            raise ValueError(f"{name}: no per-seed runs in the saved outcomes (run with "
                             "--seeds)")
        runs = entry["runs"]
        have = sorted(runs, key=int) if seeds is None else [str(s) for s in seeds]
        missing = [s for s in have if s not in runs]
        if missing:
            raise ValueError(f"{name}: no saved run for seeds {missing} (saved: "
                             f"{sorted(runs, key=int)})")
        sets = ", ".join(f"{k}={v}" for k, v in entry.get("overrides", {}).items())
        lines += ["", f"**{name}** (`{entry['preset']}`{', ' + sets if sets else ''}; "
                      "trained (random init of the same seed))", "",
                  "| metric | " + " | ".join(f"seed {s}" for s in have)
                  + " | mean ± sd | worst | bar | every seed |",
                  "| --- | " + " | ".join("---" for _ in have) + " | --- | --- | --- | --- |"]
        checks = seed_bars(name, results, have)
        keys = OUTCOMES[name][2]
        for key in keys:
            t = [runs[s]["trained"][key] for s in have]
            b = [runs[s]["baseline"][key] for s in have]
            st, sb = stats(t, key in LOWER_IS_BETTER), stats(b)
            cells = [f"{x:.3f} ({y:.3f})" for x, y in zip(t, b)]
            lines.append(f"| {key} | " + " | ".join(cells)
                         + f" | {st['mean']:.3f} ± {st['sd']:.3f} ({sb['mean']:.3f}) "
                         f"| {st['worst']:.3f} | | |")
        for bar, okc in checks:  # each bar on a row of its own, below the metrics
            lines.append("| | " + " | ".join("" for _ in have) + f" | | | {bar} | "
                         f"{_every(okc)} |")
        if name == "dinov2":
            pd = paired_dinov2(results, have)
            if pd is None:
                lines.append("| | " + " | ".join("" for _ in have)
                             + " | | | patch mIoU lead over dino-shapes (not run on these "
                             "seeds) | **no** |")
            else:
                cells = [f"{pd['per_seed'][s]:+.3f}" if s in pd["per_seed"] else ""
                         for s in have]
                lines.append("| lead over dino-shapes (patch mIoU) | " + " | ".join(cells)
                             + f" | {pd['mean']:+.3f} ± {pd['se']:.3f} (SE) | "
                             f"{min(pd['per_seed'].values()):+.3f} | paired mean lead >= 2 SE "
                             f"({2 * pd['se']:.3f}) | {'yes' if pd['holds'] else '**no**'} |")
    lines += ["", summary_table(results, names, seeds)]
    return "\n".join(lines).strip("\n")


# the metrics the summary shows per outcome: the ones its bars are about
HEADLINE: dict[str, tuple[str, ...]] = {
    "supervised": ("test_acc",), "mlm": ("ratio_to_unigram",),
    "mim": ("test_loss", "probe_acc", "patch_seg_miou"),
    "clip": ("zero_shot_shape", "zero_shot_colour"),
    "dino": ("knn_acc",), "dino-shapes": ("attn_iou_best_head",),
    "dinov2": ("patch_seg_miou",),
}


def summary_table(results: dict[str, dict], names: list[str], seeds: list[int] | None = None
                  ) -> str:
    """One row per headline metric (the README's table): the seeds, the random init's mean,
    the trained mean ± sd and worst seed, whether every bar holds on every seed, and the
    training's CPU time (mean and largest, one BLAS thread: its time on an idle core)."""
    lines = ["**Summary**", "",
             "| outcome | metric | seeds | random init (mean) | trained mean ± sd | worst "
             "| bars on every seed | training CPU s (mean, max) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in names:
        runs = results[name]["runs"]
        have = sorted(runs, key=int) if seeds is None else [str(s) for s in seeds]
        checks = seed_bars(name, results, have)
        failed = sorted({s for _, okc in checks for s, ok in okc.items() if not ok}, key=int)
        if name == "dinov2":
            pd = paired_dinov2(results, have)
            verdict = ("(dino-shapes not run on these seeds)" if pd is None
                       else "yes" if pd["holds"] else "**no**")
        elif checks:
            verdict = "yes" if not failed else f"**no** (seed {', '.join(failed)})"
        else:
            verdict = "(no bar)"
        cpu = [runs[s].get("train_cpu_s", float("nan")) for s in have]
        for i, key in enumerate(HEADLINE[name]):
            st = stats([runs[s]["trained"][key] for s in have], key in LOWER_IS_BETTER)
            b = stats([runs[s]["baseline"][key] for s in have])
            lines.append(
                f"| {name if i == 0 else ''} | {key} | {', '.join(have) if i == 0 else ''} | "
                f"{b['mean']:.3f} | {st['mean']:.3f} ± {st['sd']:.3f} | {st['worst']:.3f} | "
                f"{verdict if i == 0 else ''} | "
                + (f"{sum(cpu) / len(cpu):.0f}, {max(cpu):.0f}" if i == 0 else "") + " |")
        if name == "dinov2" and pd is not None:
            lines.append(f"| | lead over dino-shapes (paired) | | | {pd['mean']:+.3f} ± "
                         f"{pd['se']:.3f} (SE) | {min(pd['per_seed'].values()):+.3f} | "
                         f"mean >= 2 SE: {'yes' if pd['holds'] else '**no**'} | |")
    return "\n".join(lines)


def _every(ok: dict[str, bool] | None) -> str:
    """'yes' when a bar holds on every seed, else the seeds where it fails."""
    if ok is None:
        return ""
    failed = [s for s, v in ok.items() if not v]
    return "yes" if not failed else f"**no** (seed {', '.join(failed)})"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
