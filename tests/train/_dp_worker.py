"""One rank of the data-parallel training tests: ``mpiexec -n 2 python
tests/train/_dp_worker.py OUT CASE [CASE ...]`` (launched by ``test_data_parallel.py``).

Each case trains a tiny float64 recipe with ``train.train`` over the 2 ranks into
``OUT/CASE`` (rank 0 writes the checkpoint and the metrics log there, as every run does), and
every rank writes ``OUT/rank{r}.json``: per case, the numbers the test judges (the largest
difference between this rank's final state and rank 0's, the files this rank opened for
writing, the error a case raised). Nothing is asserted here, so that one failing case cannot
leave the other rank waiting in a collective; the test compares the run directories with a
single-process run of the same settings.

Cases (the recipe settings are ``CASES`` in the test, passed as JSON in ``OUT/cases.json``):
``train`` (a fresh run), ``resume`` (2 of the steps, then a resume to the end), ``resume_in``
(resume a directory the test prepared: refused when another world size wrote it),
``perturbed`` (a fresh run after rank 1's weights and buffers were changed: the start-of-
training broadcast must undo it),
``no_average``, ``no_syncbn``, ``plain_views``, ``local_mean`` (fresh runs with the gradient
averaging, the synchronised BatchNorm, the sharded random draws or MLM's global token count
switched off: the deliberate breaks),
``build`` (only build the recipe: the refusals).
"""

from __future__ import annotations

import builtins
import json
import os
import sys
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import minitransformer as mt  # noqa: E402
from minitransformer import distributed as dist  # noqa: E402
from minitransformer.train import loop, make_recipe  # noqa: E402

R = dist.rank()
OUT = Path(sys.argv[1])


class WriteLog:
    """Every path this rank opens for writing (``open`` in the loop, ``io.save_checkpoint``,
    the atomic writes), except ``os.devnull``."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self._open = builtins.open

    def install(self) -> None:
        from minitransformer import io

        def logged_open(file, mode="r", *args, **kw):
            if any(c in mode for c in "wax+") and str(file) != os.devnull:
                self.paths.append(str(file))
            return self._open(file, mode, *args, **kw)

        def logged(fn):
            def wrapper(path, *args, **kw):
                self.paths.append(str(path))
                return fn(path, *args, **kw)
            return wrapper

        loop.open = logged_open  # the loop's module-level name shadows the builtin
        io.save_checkpoint = logged(io.save_checkpoint)  # the loop calls io.save_checkpoint
        loop._atomic_write_bytes = logged(loop._atomic_write_bytes)


def state_diff_to_rank0(recipe) -> float:
    """max |this rank's array - rank 0's| over the recipe's whole state (0.0 on rank 0)."""
    arrays, _ = recipe.state()
    worst = 0.0
    for k in sorted(arrays):
        a = np.asarray(mt.backend.to_numpy(arrays[k]), dtype=np.float64)
        b = dist.broadcast(a)
        worst = max(worst, float(np.max(np.abs(a - b))) if a.size else 0.0)
    return worst


def perturb_rank1(recipe) -> float:
    """On rank 1, change every floating parameter and buffer of every module (weights, the
    teacher, DINO's center, BatchNorm's running means and variances) before training, so that
    only the loop's broadcast of rank 0's state (``BaseRecipe.broadcast_state``) can make the
    ranks train one model. Returns the largest difference to rank 0 this leaves (every rank
    calls it: ``state_diff_to_rank0`` is collective)."""
    if R == 1:
        rng = np.random.default_rng(1)
        for m in recipe.modules.values():
            state = {}
            for k, v in m.state_dict().items():  # host copies
                v = np.asarray(mt.backend.to_numpy(v))
                if v.dtype.kind == "f":
                    # positive factors keep running variances positive
                    v = v * rng.uniform(1.1, 1.5, v.shape) + rng.uniform(0.05, 0.1, v.shape)
                state[k] = v
            m.load_state_dict(state)
    return state_diff_to_rank0(recipe)


def run(case: dict) -> dict:
    name, kind = case["name"], case["kind"]
    out = OUT / name
    if case.get("device") == "cuda" and not mt.cuda_available():
        return {"skipped": "no CuPy device (nor the stand-in)"}
    recipe = make_recipe(case["recipe"], preset=case.get("preset", "tiny"),
                         device=case.get("device"), **case["settings"])
    if kind == "build":
        return {"built": True}
    numbers: dict = {}
    if kind == "no_syncbn":  # the head's BatchNorm left per rank: the deliberate break
        recipe = make_recipe(case["recipe"], preset=case.get("preset", "tiny"),
                             **case["settings"])
        for m in list(recipe.student.modules()) + list(recipe.teacher.modules()):
            if hasattr(m, "sync"):
                m.sync = False
        loop.train(recipe, out, progress=False, log_every=1)
    elif kind == "plain_views":  # each rank draws its views from the plain generator
        from minitransformer.train.recipes import base

        wrapper = base.ShardedGenerator
        base.ShardedGenerator = lambda rng, n, part: rng
        try:
            loop.train(recipe, out, progress=False, log_every=1)
        finally:
            base.ShardedGenerator = wrapper
    elif kind == "local_mean":  # MLM's per-rank mean over its own masked tokens
        import types

        from minitransformer.train.recipes import mlm

        real = mlm.distributed
        mlm.distributed = types.SimpleNamespace(is_distributed=lambda: False)
        try:
            loop.train(recipe, out, progress=False, log_every=1)
        finally:
            mlm.distributed = real
    elif kind == "no_average":
        dist_average = dist.average_gradients
        dist.average_gradients = lambda params, *a, **k: 0
        try:
            loop.train(recipe, out, progress=False, log_every=1)
        finally:
            dist.average_gradients = dist_average
    elif kind in ("train", "perturbed"):
        if kind == "perturbed":  # rank 1 starts from another model: the broadcast's work
            numbers["diff_before_train"] = perturb_rank1(recipe)
        result = loop.train(recipe, out, progress=False, log_every=1)
        numbers["eval"] = result.eval_metrics
        numbers["last"] = result.last_metrics
    elif kind == "resume":
        loop.train(recipe, out, steps=case["first"], progress=False, log_every=1)
        recipe = make_recipe(case["recipe"], preset=case.get("preset", "tiny"),
                             device=case.get("device"), **case["settings"])
        loop.train(recipe, out, resume=True, progress=False, log_every=1)
    elif kind == "resume_in":
        loop.train(recipe, out, resume=True, progress=False, log_every=1)
    numbers["state_diff_to_rank0"] = state_diff_to_rank0(recipe)
    return numbers


def main() -> None:
    mt.set_default_dtype(np.float64)
    writes = WriteLog()
    writes.install()
    cases = {c["name"]: c for c in json.loads((OUT / "cases.json").read_text())}
    report: dict = {"world_size": dist.world_size(), "rank": R}
    for name in sys.argv[2:]:
        start = len(writes.paths)
        try:
            report[name] = run(cases[name])
        except Exception as e:  # reported; both ranks raise the same errors in these cases
            report[name] = {"error": f"{type(e).__name__}: {e}",
                            "traceback": traceback.format_exc()}
        report[name]["written"] = writes.paths[start:]
    (OUT / f"rank{R}.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
