"""Data-parallel training over 2 MPI ranks equals one process on the same global batch.

One ``mpiexec -n 2 python tests/train/_dp_worker.py OUT CASE ...`` trains every case below
with ``train.train`` (tiny presets, float64, 3 steps, every step logged); each test compares
what rank 0 wrote (``metrics.jsonl``, the final checkpoint) with a run of the same settings
in this process, where nothing is distributed:

- the losses of every step and the whole final state (model, teacher, center, BatchNorm
  statistics, AdamW moments) agree to 1e-9, and the generator state is the same (the same
  global batches were drawn), for supervised (with its random resized crops), CLIP (the
  gathered-features loss) and DINO (digits: multi-crop, noise, the BatchNorm head
  synchronised, the all-reduced center, the EMA teacher; its logged collapse diagnostics,
  teacher entropy, KL of the batch-mean distribution to uniform and feature spread, are the
  global batch's at every step);
- the two ranks hold the same state (to the last bit) after training;
- only rank 0 opened files for writing;
- a 2-rank run resumed after 2 of its 3 steps equals the uninterrupted 2-rank run;
- resuming with another number of ranks is refused, naming both (2 ranks on a 1-process
  checkpoint, and 1 process on a 2-rank one);
- MLM too (its masks drawn per global sample, its loss normalised by the global count of
  masked tokens, which differs between the shards);
- recipes that cannot train as one process yet (MIM, DINOv2), a global batch that the
  ranks do not divide, and one larger than the data set whose size they do not divide (each
  step draws the whole set) are refused with a message saying why;
- rank 1 started from other weights and buffers still trains one model equal to one
  process: the start-of-training broadcast.

**The tests can fail** (``test_deliberate_breaks``): the same cases with one part switched
off differ from one process by far more than 1e-9 (each checks > 1e-6):
``distributed.average_gradients`` a no-op (each rank steps with its own shard's gradient,
and the ranks drift apart); the DINO head's BatchNorm not synchronised (each rank normalises
with its shard's statistics); ``ShardedGenerator`` replaced by the plain generator (rank r
crops its images with the first B/W rows of the random numbers instead of its own); MLM's
loss the mean over the rank's own masked tokens (the shards mask different numbers).

Skipped when mpi4py or ``mpiexec`` is missing (``pip install -e ".[dist]"``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer.train import loop, make_recipe, read_metrics
from minitransformer.train.recipes.base import ShardedGenerator

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("_dp_worker.py")
TOL = 1e-9  # float64 after 3 steps: only the summation order differs
STEPS = 3

# name -> the worker's case: recipe, settings (tiny preset), kind
CASES: dict[str, dict] = {
    "supervised": dict(recipe="supervised", kind="train",
                       settings=dict(steps=STEPS, batch_size=16, augment=True)),
    "clip": dict(recipe="clip", kind="train", settings=dict(steps=STEPS, batch_size=8)),
    "dino": dict(recipe="dino", kind="train", settings=dict(steps=STEPS, batch_size=8)),
    # rank 1's weights, teacher, center and BatchNorm statistics changed before train()
    "dino_perturbed": dict(recipe="dino", kind="perturbed",
                           settings=dict(steps=STEPS, batch_size=8)),
    # on the CuPy stand-in in CI (a GPU where there is one): the host-staged collectives
    "supervised_cuda": dict(recipe="supervised", kind="train", device="cuda",
                            settings=dict(steps=STEPS, batch_size=16, augment=True)),
    "dino_cuda": dict(recipe="dino", kind="train", device="cuda",
                      settings=dict(steps=STEPS, batch_size=8)),
    "supervised_resumed": dict(recipe="supervised", kind="resume", first=2,
                               settings=dict(steps=STEPS, batch_size=16, augment=True)),
    "no_average": dict(recipe="supervised", kind="no_average",
                       settings=dict(steps=STEPS, batch_size=16, augment=True)),
    "resume_one_process_run": dict(recipe="supervised", kind="resume_in",
                                   settings=dict(steps=STEPS, batch_size=16, augment=True)),
    "no_syncbn": dict(recipe="dino", kind="no_syncbn", settings=dict(steps=STEPS, batch_size=8)),
    "plain_views": dict(recipe="supervised", kind="plain_views",
                        settings=dict(steps=STEPS, batch_size=16, augment=True)),
    "mlm": dict(recipe="mlm", kind="train", settings=dict(steps=STEPS, batch_size=8)),
    "local_mean": dict(recipe="mlm", kind="local_mean", settings=dict(steps=STEPS, batch_size=8)),
    "mim": dict(recipe="mim", kind="build", settings={}),
    "dinov2": dict(recipe="dinov2", kind="build", settings={}),
    "odd_batch": dict(recipe="supervised", kind="build", settings=dict(batch_size=15)),
    # a multiple of 2, but more than the 1,293 digits: each step's global batch is all 1,293
    "batch_over_data": dict(recipe="dino", kind="build", settings=dict(batch_size=1294)),
}
EQUIVALENT = ["supervised", "clip", "dino", "mlm"]


def _mpiexec() -> str | None:
    """The launcher next to this interpreter (the one of mpi4py's MPI), else on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.is_file() else shutil.which("mpiexec")


def _skip_without_mpi() -> None:
    """The 2-rank tests need mpi4py and mpiexec (ShardedGenerator's tests run anyway)."""
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip('mpi4py is not installed: pip install -e ".[dist]"')
    if _mpiexec() is None:
        pytest.skip('no mpiexec: pip install -e ".[dist]" brings the mpich wheel')


class _Float64:
    def __enter__(self):
        self.previous = mt.get_default_dtype()
        mt.set_default_dtype(np.float64)

    def __exit__(self, *exc):
        mt.set_default_dtype(self.previous)


def _one_process(case: dict, out: Path, steps: int | None = None, resume: bool = False):
    """The case trained in this process (no MPI), float64, every step logged."""
    with _Float64():
        recipe = make_recipe(case["recipe"], preset="tiny", device=case.get("device"),
                             **case["settings"])
        return loop.train(recipe, out, steps=steps, resume=resume, progress=False,
                          log_every=1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(OUT, {case: [rank 0's report, rank 1's report]}) of one 2-rank launch."""
    _skip_without_mpi()
    out = tmp_path_factory.mktemp("dp")
    (out / "cases.json").write_text(json.dumps([dict(c, name=k) for k, c in CASES.items()]))
    # a checkpoint written by one process, for the 2-rank resume to refuse
    _one_process(CASES["resume_one_process_run"], out / "resume_one_process_run", steps=2)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["MINITRANSFORMER_NUMBA"] = "0"  # no JIT compilation in two fresh interpreters
    env.pop("MINITRANSFORMER_DEVICE", None)
    env.setdefault("MINITRANSFORMER_CUPY_STANDIN", "tests.cupy_standin")  # a GPU wins over it
    start = time.perf_counter()
    proc = subprocess.run([_mpiexec(), "-n", "2", sys.executable, str(WORKER), str(out),
                           *CASES], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=240)
    print(f"mpiexec -n 2, {len(CASES)} cases: {time.perf_counter() - start:.1f} s")
    assert proc.returncode == 0, f"mpiexec failed:\n{proc.stdout}\n{proc.stderr}"
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    return out, {name: [ranks[0][name], ranks[1][name]] for name in CASES}


def _ok(reports, name):
    for r, numbers in enumerate(reports[name]):
        assert "error" not in numbers, f"rank {r}, case {name}:\n{numbers['traceback']}"
    return reports[name]


def _losses(out: Path) -> list[float]:
    return [m["loss"] for m in read_metrics(out) if "loss" in m]


# Logged batch statistics that must be the global batch's, not a mean of the shards' values
# (the KL of the batch-mean distribution and the spread are not means over samples: the
# rank means differed from one process by 0.26 and 1.7e-4 before they were all-reduced).
LOGGED = {"dino": ("teacher_entropy", "kl_to_uniform", "feature_std")}


def _logged(out: Path, key: str) -> list[float]:
    return [m[key] for m in read_metrics(out) if key in m]


def _final(out: Path) -> tuple[dict, dict]:
    arrays, meta, _ = loop.load_latest(out)
    return arrays, meta


# DINO's BatchNorm head: BatchNorm subtracts the batch mean of its input, so the bias of the
# Linear layer before it (head.mlp.0 and .3) and the backbone's final LayerNorm bias (which
# reaches the loss only through head.mlp.0) have an analytic gradient of zero. What backward
# gives them is rounding noise (about 1e-14), which AdamW divides by sqrt(v) + eps: their
# values, in one process or over 2 ranks, are noise of about 1e-9 that no summation order
# reproduces. The running means of those BatchNorms carry that bias. Checked apart:
# both runs leave the biases at noise level (< 1e-8, nothing learned) and the running
# means agree to 1e-8 (a tenth of the bias per step); everything else, running variances
# included, to 1e-9.
BN_CANCELLED = ("head.mlp.0.bias", "head.mlp.3.bias", "backbone.norm.bias",
                "head.mlp.1.running_mean", "head.mlp.4.running_mean")


def _cancelled(key: str) -> bool:
    return key.split(".", 1)[-1] in BN_CANCELLED


def _check_cancelled(a: dict, b: dict) -> None:
    for k in a:
        if not _cancelled(k):
            continue
        if k.endswith("running_mean"):
            assert np.max(np.abs(a[k] - b[k])) <= 1e-8, k
        else:
            assert max(np.max(np.abs(a[k])), np.max(np.abs(b[k]))) < 1e-8, k


def _state_diff(a: dict, b: dict, skip: bool = False) -> tuple[float, str]:
    """max |a - b| over every array (``skip``: not the BatchNorm-cancelled ones)."""
    assert sorted(a) == sorted(b)
    worst, where = 0.0, ""
    for k in a:
        if skip and _cancelled(k):
            continue
        d = float(np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64))))
        if d > worst:
            worst, where = d, k
    return worst, where


# The cuda cases carry the gpu marker, so that the cuda half of CI (`-m gpu` on the stand-in)
# runs them.
@pytest.mark.parametrize("name", EQUIVALENT + [
    pytest.param("supervised_cuda", marks=pytest.mark.gpu),
    pytest.param("dino_cuda", marks=pytest.mark.gpu)])
def test_equals_one_process(run, tmp_path, name):
    _equals_one_process(run, tmp_path, name)


def _equals_one_process(run, tmp_path, name):
    out, reports = run
    if CASES[name].get("device") == "cuda":
        if not mt.cuda_available():
            pytest.skip("no CUDA GPU (or CuPy) available; --cupy-standin runs it on the "
                        "stand-in")
        if "skipped" in reports[name][0]:
            pytest.skip(f"the ranks: {reports[name][0]['skipped']}")
    both = _ok(reports, name)
    _one_process(CASES[name], tmp_path / name)
    two, one = _losses(out / name), _losses(tmp_path / name)
    assert len(two) == len(one) == STEPS
    assert np.max(np.abs(np.subtract(two, one))) <= TOL, (two, one)
    for key in LOGGED.get(CASES[name]["recipe"], ()):  # the global batch's, every step
        got, want = _logged(out / name, key), _logged(tmp_path / name, key)
        assert len(got) == len(want) == STEPS, key
        assert np.max(np.abs(np.subtract(got, want))) <= TOL, (key, got, want)
    (a2, m2), (a1, m1) = _final(out / name), _final(tmp_path / name)
    assert m2["world_size"] == 2 and m1["world_size"] == 1
    assert m2["rng"] == m1["rng"]  # the same global batches and views were drawn
    diff, where = _state_diff(a2, a1, skip=True)
    assert diff <= TOL, f"{name}: {where} differs by {diff:.3g}"
    _check_cancelled(a2, a1)
    assert both[1]["state_diff_to_rank0"] == 0.0  # the ranks hold one model
    # the final evaluation (rank 0's) reached every rank and equals one process's
    one_eval = [m["eval"] for m in read_metrics(tmp_path / name) if "eval" in m][-1]
    for r in range(2):
        assert both[r]["eval"] == pytest.approx(one_eval, abs=1e-9)


def test_the_start_broadcast_makes_one_model(run, tmp_path):
    """Rank 1's weights, teacher, DINO center and BatchNorm running statistics are changed
    before ``train`` (every rank otherwise initialises identically from the seed, so nothing
    else exercises the broadcast): the loop's broadcast of rank 0's state
    (``BaseRecipe.broadcast_state``) must still make the 2-rank run equal one process, to
    1e-9, and the ranks one model. Checked by hand: with ``broadcast_state`` a no-op this test
    fails (the losses differ from one process, and the ranks' states from each other)."""
    _, reports = run
    both = _ok(reports, "dino_perturbed")
    assert both[1]["diff_before_train"] > 1e-2  # rank 1 really started from another model
    _equals_one_process(run, tmp_path, "dino_perturbed")


def test_only_rank0_writes(run):
    out, reports = run
    for name in ["supervised", "clip", "dino", "supervised_resumed"]:
        r0, r1 = _ok(reports, name)
        assert r1["written"] == [], f"{name}: rank 1 wrote {r1['written']}"
        assert any(p.endswith(".safetensors") for p in r0["written"])
        assert any(p.endswith(loop.METRICS) for p in r0["written"])
    names = sorted(p.name for p in (out / "supervised").iterdir())
    assert names == ["ckpt-00000003.json", "ckpt-00000003.safetensors", "metrics.jsonl"]


def test_resume_equals_uninterrupted(run):
    out, reports = run
    _ok(reports, "supervised_resumed")
    assert _losses(out / "supervised_resumed") == pytest.approx(
        _losses(out / "supervised"), abs=0)
    (a, _), (b, _) = _final(out / "supervised_resumed"), _final(out / "supervised")
    diff, where = _state_diff(a, b)
    assert diff == 0.0, f"{where} differs by {diff:.3g}"


def test_resume_with_another_world_size_is_refused(run, tmp_path):
    out, reports = run
    for r, numbers in enumerate(reports["resume_one_process_run"]):
        err = numbers.get("error", "")
        assert err.startswith("WorldSizeMismatch"), f"rank {r}: {numbers}"
        assert "over 1 rank(s)" in err and "this run has 2" in err
        assert numbers["written"] == []
    # one process on the 2-rank run's checkpoint
    copy = tmp_path / "copy"
    shutil.copytree(out / "supervised", copy)
    with pytest.raises(loop.WorldSizeMismatch, match=r"over 2 rank.*this run has 1"):
        _one_process(CASES["supervised"], copy, resume=True)


@pytest.mark.parametrize("name", ["no_average", "no_syncbn", "plain_views", "local_mean"])
def test_deliberate_breaks(run, tmp_path, name):
    """Each part switched off makes the 2-rank run differ from one process."""
    out, reports = run
    both = _ok(reports, name)
    _one_process(CASES[name], tmp_path / "one")
    (a2, _), (a1, _) = _final(out / name), _final(tmp_path / "one")
    diff, _ = _state_diff(a2, a1, skip=True)
    assert diff > 1e-6
    if name in ("plain_views", "local_mean"):
        assert both[1]["state_diff_to_rank0"] == 0.0  # still one model, but another one
    else:  # the ranks no longer hold one model (their weights, or BatchNorm's running stats)
        assert both[1]["state_diff_to_rank0"] > 1e-6


@pytest.mark.parametrize("name, words", [
    ("mim", "masked patches"), ("dinov2", "iBOT"),
    ("odd_batch", "batch_size=15 (the global batch) must be a multiple of the number of "
                  "ranks, 2"),
    ("batch_over_data", "batch_size=1294 is larger than the 1293 training examples, so every "
                        "step's global batch is all 1293 of them, which 2 ranks cannot split "
                        "into equal shards; set batch_size to at most 1293 and a multiple of "
                        "2 (e.g. batch_size=1292)"),
])
def test_refusals(run, name, words):
    """Refused when the recipe is built, before any step, with the same DistributedProblem
    (a ValueError) on every rank."""
    _, reports = run
    for r, numbers in enumerate(reports[name]):
        err = numbers.get("error", "")
        assert err.startswith("DistributedProblem: "), f"rank {r}: {numbers}"
        assert words in err
        if name not in ("odd_batch", "batch_over_data"):
            assert "not supported yet" in err and "over 2 ranks" in err


def test_single_process_refuses_nothing():
    """In one process nothing is refused (the checks are for W > 1 only)."""
    from minitransformer.train.recipes import recipe_class

    for name in ("mim", "dinov2", "supervised"):
        cls = recipe_class(name)
        assert cls.distributed_problem(cls.make_config("tiny", batch_size=15)) is None


# ---------------------------------------------------------------- ShardedGenerator, one process
DRAWS = st.lists(st.tuples(
    st.sampled_from(["random", "uniform", "standard_normal", "normal", "integers"]),
    st.lists(st.integers(1, 3), max_size=2),  # the axes after the batch axis
    st.sampled_from(["batch", "none", "other"])),  # first axis: the shard, no size, another
    min_size=1, max_size=6)


def _reference_draw(rng, method, size):
    """One plain NumPy draw (the parameters ShardedGenerator's test uses)."""
    if method == "random":
        return rng.random(size)
    if method == "uniform":
        return rng.uniform(-2.0, 3.0, size)
    if method == "standard_normal":
        return rng.standard_normal(size)
    if method == "normal":
        return rng.normal(1.0, 2.0, size=size)
    return rng.integers(0, 7, size=size)


@given(seed=st.integers(0, 2**32 - 1), w=st.integers(2, 4), b=st.integers(1, 4), draws=DRAWS)
def test_sharded_generator_gives_each_rank_its_rows(seed, w, b, draws):
    """Rank r's draws are rows [r b, (r+1) b) of one process's draws of the global batch
    (n = W b), for draws whose first axis is the shard; other draws are one process's; and
    every rank's generator ends in one process's state. Reference: plain NumPy draws."""
    n = w * b
    ref = np.random.default_rng(seed)
    expected = []
    for method, tail, kind in draws:
        if kind == "batch":
            expected.append(_reference_draw(ref, method, (n, *tail)))
        elif kind == "none":
            expected.append(_reference_draw(ref, method, None))
        else:  # a first axis that is not the shard's length
            expected.append(_reference_draw(ref, method, (b + 1, *tail)))
    for r in range(w):
        rng = np.random.default_rng(seed)
        g = ShardedGenerator(rng, n, slice(r * b, (r + 1) * b))
        for (method, tail, kind), want in zip(draws, expected):
            size = {"batch": (b, *tail), "none": None, "other": (b + 1, *tail)}[kind]
            got = _reference_draw(g, method, size)
            if kind == "batch":
                want = want[r * b:(r + 1) * b]
            np.testing.assert_array_equal(got, want)
        assert rng.bit_generator.state == ref.bit_generator.state  # in step with one process


def test_sharded_generator_int_size_and_errors():
    g = ShardedGenerator(np.random.default_rng(0), 6, slice(2, 4))
    np.testing.assert_array_equal(g.random(2), np.random.default_rng(0).random(6)[2:4])
    with pytest.raises(ValueError, match="per-sample distribution parameters"):
        g.uniform(np.zeros(2), 1.0, size=2)
    with pytest.raises(ValueError, match="out= is not supported"):
        g.random(2, out=np.empty(2))


def _views(x, rng):
    from minitransformer.train.recipes._views import LightViews

    return LightViews(n_local=2, local_size=4, flip_p=0.5)(x, rng)


@pytest.mark.parametrize("augment", ["light", "crop"])
def test_shard_views_are_the_global_views(augment):
    """The recipes' augmentations (random resized crop, flip, brightness/contrast jitter,
    noise; supervised's crop) of a shard, drawn through ShardedGenerator, equal the rows of
    one process's views of the global batch: the views do not depend on the number of
    ranks."""
    from minitransformer.data import random_resized_crop

    x = np.random.default_rng(5).random((6, 3, 8, 8))  # (n, C, H, W)

    def make(batch, rng):
        if augment == "crop":
            return [random_resized_crop(batch, 8, scale=(0.8, 1.0), ratio=(0.9, 1.1), rng=rng)]
        return _views(batch, rng)

    whole = make(x, np.random.default_rng(1))
    for w in (2, 3):
        b = 6 // w
        for r in range(w):
            part = slice(r * b, (r + 1) * b)
            shard = make(x[part], ShardedGenerator(np.random.default_rng(1), 6, part))
            for v_shard, v_whole in zip(shard, whole):
                np.testing.assert_allclose(v_shard, v_whole[part], rtol=0, atol=1e-12)


def test_multicrop_blur_is_per_image():
    """DINO's MultiCrop (the shapes' ``augment="dino"``) blurs; its views of a shard equal
    the global views since the blur's radius comes from the configured sigma range, not from
    the batch's largest sigma (tests/data/test_augment.py holds the blur alone)."""
    from minitransformer.data import MultiCrop

    x = np.random.default_rng(5).random((8, 3, 16, 16))
    crop = MultiCrop(16, 8, n_local=0, blur_sigma=(0.1, 2.0))
    # seed 8: the first half's largest sigma is below the whole batch's by more than a tap,
    # which gave that half a shorter kernel when the radius followed the batch
    whole = crop(x, np.random.default_rng(8))
    part = slice(0, 4)
    shard = crop(x[part], ShardedGenerator(np.random.default_rng(8), 8, part))
    for v_shard, v_whole in zip(shard, whole):
        np.testing.assert_allclose(v_shard, v_whole[part], rtol=0, atol=1e-12)


# ---------------------------------------------------------------- the command line
def test_cli_two_ranks(tmp_path):
    """``mpiexec -n 2 python -m minitransformer train``: one model, rank 0 prints and writes;
    resuming that run in one process is refused (exit 2) naming both world sizes; a batch
    the ranks do not divide, a batch larger than the data set that they do not divide, and
    the demo, eval and list are refused (exit 2, the error said once, no --out folder made)."""
    _skip_without_mpi()
    from minitransformer.__main__ import main

    out = tmp_path / "run"
    env = dict(os.environ, MINITRANSFORMER_NUMBA="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))

    def two_ranks(*argv: str) -> subprocess.CompletedProcess:
        """``mpiexec -n 2 python -m minitransformer ARGV``, output captured."""
        return subprocess.run(
            [_mpiexec(), "-n", "2", sys.executable, "-m", "minitransformer", *argv], env=env,
            cwd=tmp_path, capture_output=True, text=True, timeout=120)

    proc = two_ranks("train", "supervised", "--preset", "tiny", "--steps", "2", "--set",
                     "batch_size=8", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("supervised: done at step 2") == 1  # rank 0 alone prints
    assert "on 2 ranks" in proc.stdout
    assert [m["step"] for m in read_metrics(out) if "loss" in m] == [1, 2]  # log every step
    _, meta = _final(out)
    assert meta["world_size"] == 2
    assert main(["train", "supervised", "--out", str(out), "--resume", "--no-progress"]) == 2
    # a global batch the ranks do not divide: exit 2 on every rank, the error said once
    proc = two_ranks("train", "supervised", "--preset", "tiny", "--set", "batch_size=7",
                     "--out", str(tmp_path / "odd"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("minitransformer: error:") == 1, proc.stderr
    assert "batch_size=7 (the global batch) must be a multiple of the number of ranks, 2" \
        in proc.stderr
    assert not (tmp_path / "odd").exists()  # refused before the --out folder is made
    # more than the 1,293 digits: each step would draw all 1,293, which 2 ranks cannot split
    proc = two_ranks("train", "supervised", "--preset", "tiny", "--set", "batch_size=1294",
                     "--out", str(tmp_path / "big"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("minitransformer: error:") == 1, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr  # one line, no traceback
    assert "batch_size=1294 is larger than the 1293 training examples" in proc.stderr
    assert not (tmp_path / "big").exists()
    # the demo writes pictures, eval and list print: one process only (said once)
    for argv in (["demo", "--out", str(tmp_path / "demo")], ["eval", str(out)], ["list"]):
        proc = two_ranks(*argv)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count(f"{argv[0]} runs in one process") == 1, proc.stderr
        assert proc.stdout == "", proc.stdout
    assert not (tmp_path / "demo").exists()


# ---------------------------------------------------------------- DataLoader(shard=...)
@given(n=st.integers(1, 40), batch=st.integers(1, 12), w=st.integers(1, 4),
       drop_last=st.booleans(), seed=st.integers(0, 1000))
def test_loader_shards_concatenate_to_the_global_batches(n, batch, w, drop_last, seed):
    """The W shards of each batch, in rank order, are the unsharded loader's batch (the same
    generator seed): one process's order. Reference: a NumPy permutation cut by hand."""
    from minitransformer.data import DataLoader

    x = np.arange(n) * 10
    order = np.random.default_rng(seed).permutation(n)
    stop = (n // batch) * batch if drop_last else n
    expected = [x[order[i:i + batch]] for i in range(0, stop, batch)]
    parts = [list(DataLoader(x, batch, drop_last=drop_last, rng=np.random.default_rng(seed),
                             device="cpu", shard=(r, w))) for r in range(w)]
    assert all(len(p) == len(expected) for p in parts)
    for k, want in enumerate(expected):
        got = [parts[r][k] for r in range(w)]
        np.testing.assert_array_equal(np.concatenate(got), want)
        assert max(map(len, got)) - min(map(len, got)) <= 1


def test_loader_shard_errors():
    from minitransformer.data import DataLoader

    with pytest.raises(ValueError, match=r"shard=\(2, 2\) needs count >= 1 and 0 <= index"):
        DataLoader(np.zeros(4), 2, shard=(2, 2))
    with pytest.raises(ValueError, match="shard must be \\(index, count\\)"):
        DataLoader(np.zeros(4), 2, shard=3)
