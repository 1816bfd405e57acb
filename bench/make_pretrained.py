"""Make the checkpoints shipped in minitransformer/pretrained/checkpoints/ and their model
cards, from outcome runs or by training them.

    # export from runs of bench/outcomes.py (each DIR holds outcomes.json and <outcome>/)
    python bench/make_pretrained.py --from-runs runs/a runs/b
    # train the named checkpoints here (each recipe's cpu preset, seed 0, one BLAS thread,
    # exactly as bench/outcomes.py does), then export them
    python bench/make_pretrained.py dino-shapes clip-shapes
    python bench/make_pretrained.py --preset tiny --dest /tmp/ckpts   # a smoke run (seconds)

Checkpoint <- outcome of bench/outcomes.py:

    supervised-digits <- supervised      clip-shapes   <- clip
    dino-shapes       <- dino-shapes     dinov2-shapes <- dinov2
    mae-shapes        <- mim

Each checkpoint keeps only the parameters and buffers of the module ``pretrained.load``
returns (for DINO and DINOv2 the teacher's backbone); its card records the recipe, preset,
seed and settings, the training and export commands, the commit, the date, every metric
trained and at random init (the same seed), the train time and the library versions. After
writing, each pair is loaded back and the recipe is re-evaluated with it: the table printed
at the end puts the card's metric beside the recomputed one. The shipped files must stay
within 5 MB each and 20 MB together; a larger one is an error.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import outcomes  # noqa: E402  (bench/outcomes.py: the runs, their presets and bars)

from minitransformer import pretrained  # noqa: E402
from minitransformer.pretrained.export import export  # noqa: E402

MAX_BYTES = 5 * 2**20  # one checkpoint
MAX_TOTAL = 20 * 2**20  # all of them


def _display(path: Path) -> str:
    """A run directory as the card writes it: relative to the repository when inside it,
    else its last two components (the runs' location on the machine that made them is not
    part of the recipe)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return f"{p.parent.name}/{p.name}"


def _outcomes_command(names: list[str], run_dir: Path, entry: dict, outcome: str) -> str:
    """The bench/outcomes.py command that wrote ``run_dir`` (its options at their defaults
    are left out, as they were typed)."""
    suffix = outcomes.OUTCOMES[outcome][1]
    preset = entry["preset"][: len(entry["preset"]) - len(suffix)] if suffix else entry["preset"]
    args = ["python", "bench/outcomes.py", *names, "--out", _display(run_dir)]
    if preset != "cpu":
        args += ["--preset", preset]
    if entry.get("device", "cpu") != "cpu":
        args += ["--device", entry["device"]]
    if int(entry.get("threads", 1)) != 1:
        args += ["--threads", str(entry["threads"])]
    return shlex.join(args)


def _git_commit() -> str:
    """HEAD, with ``-dirty`` when the library or the bench scripts have uncommitted changes
    (the card then says so: the files were made from code no commit holds)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "minitransformer",
                                "bench"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + ("-dirty" if dirty else "")


def _commit_of_runs(dirs: list[Path], given: str | None) -> str:
    """``--commit``, else the ``COMMIT`` file in a run directory or beside them."""
    if given:
        return given
    for d in dirs:
        for f in (d / "COMMIT", d.parent / "COMMIT"):
            if f.exists():
                return f.read_text().strip()
    raise SystemExit("make_pretrained: the runs' commit is unknown: give --commit HASH (the "
                     "commit the runs were trained at), or put it in DIR/COMMIT")


def _own_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """This command as the card records it: the options that differ from their defaults,
    folders written by ``_display``."""
    out = ["python", "bench/make_pretrained.py", *args.names]
    if args.from_runs:
        out += ["--from-runs", *(_display(d) for d in args.from_runs)]
    for opt in ("out", "dest"):
        value = getattr(args, opt)
        if Path(value).resolve() != Path(parser.get_default(opt)).resolve():
            out += [f"--{opt}", _display(value)]
    for opt in ("preset", "threads", "commit"):
        value = getattr(args, opt)
        if value != parser.get_default(opt):
            out += [f"--{opt}", str(value)]
    if args.no_evaluate:
        out.append("--no-evaluate")
    return shlex.join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0] + " " + __doc__.split("\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[3:]))
    p.add_argument("names", nargs="*",
                   help=f"checkpoints to make (default all: {', '.join(pretrained.names())})")
    p.add_argument("--from-runs", nargs="+", type=Path, metavar="DIR",
                   help="export from these bench/outcomes.py output directories instead of "
                        "training")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "pretrained",
                   help="where to train when not --from-runs (default runs/pretrained)")
    p.add_argument("--preset", default="cpu",
                   help="preset to train with when not --from-runs (default cpu, as shipped)")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads for training (1)")
    p.add_argument("--dest", type=Path, default=pretrained.checkpoint_dir(),
                   help="where to write the pairs (default the package's checkpoints/)")
    p.add_argument("--commit", help="the commit the runs were trained at (--from-runs; "
                                    "default: the COMMIT file in or beside the run folders)")
    p.add_argument("--no-evaluate", action="store_true",
                   help="skip re-evaluating each exported checkpoint")
    args = p.parse_args(argv)
    names = args.names or pretrained.names()
    unknown = [n for n in names if n not in pretrained.CHECKPOINTS]
    if unknown:
        p.error(f"unknown checkpoints {unknown}; known: {pretrained.names()}")
    this_command = _own_command(args, p)

    if args.from_runs:
        dirs = list(args.from_runs)
        commit = _commit_of_runs(dirs, args.commit)
    else:
        dirs = [args.out]
        commit = _git_commit()
        wanted = [pretrained.CHECKPOINTS[n].outcome for n in names]
        code = outcomes.main([*wanted, "--out", str(args.out), "--preset", args.preset,
                              "--threads", str(args.threads)])
        if code:
            return code

    # every outcome of every directory: (directory, its outcome names in run order, entry)
    found: dict[str, tuple[Path, list[str], dict]] = {}
    for d in dirs:
        saved = d / "outcomes.json"
        if not saved.exists():
            raise SystemExit(f"make_pretrained: {saved} is missing (not a bench/outcomes.py "
                             "output directory, or its runs have not finished)")
        results = json.loads(saved.read_text())
        for outcome, entry in results.items():
            found[outcome] = (d, list(results), entry)
    others = {k: v[2]["trained"] for k, v in found.items()}

    rows = []
    dest = Path(args.dest)
    for name in names:
        outcome = pretrained.CHECKPOINTS[name].outcome
        if outcome not in found:
            raise SystemExit(f"make_pretrained: no {outcome!r} outcome (for {name}) in "
                             f"{[str(d) for d in dirs]}")
        d, run_names, entry = found[outcome]
        command = (_outcomes_command(run_names, d, entry, outcome) if args.from_runs
                   else this_command)
        bars = outcomes.bars(outcome, entry["trained"], entry["baseline"], others)
        t0 = time.perf_counter()
        c, metrics = export(name, d / outcome, entry, dest, command=command,
                            export_command=this_command, commit=commit, bars=bars,
                            evaluate=not args.no_evaluate)
        rows.append((c, metrics, time.perf_counter() - t0))
        print(f"{name}: {c.file} ({c.num_bytes / 2**20:.2f} MB), {c.metric} {c.value:.4f} "
              f"(random init {c.baseline:.4f})", flush=True)
        for bar, ok in bars:
            if not ok:
                print(f"  WARNING: {name} misses its bar: {bar}", flush=True)

    print()
    print("| checkpoint | MB | metric | trained | random init | re-evaluated | export s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for c, metrics, secs in rows:
        again = "" if metrics is None else f"{metrics[c.metric]:.4f}"
        print(f"| {c.name} | {c.num_bytes / 2**20:.2f} | {c.metric} | {c.value:.4f} | "
              f"{c.baseline:.4f} | {again} | {secs:.1f} |")
        if metrics is not None:
            for k, v in c.metrics.items():
                if metrics.get(k) != v:
                    print(f"  {c.name}: {k} re-evaluated {metrics.get(k)} vs card {v}")
    sizes = {f.name: f.stat().st_size for f in sorted(dest.glob("*.safetensors"))}
    total = sum(sizes.values())
    print(f"\n{len(sizes)} checkpoints in {dest}: {total / 2**20:.2f} MB together")
    too_big = {k: v for k, v in sizes.items() if v > MAX_BYTES}
    if too_big or total > MAX_TOTAL:
        print(f"ERROR: over the size limits (5 MB each, 20 MB together): {too_big or total}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
