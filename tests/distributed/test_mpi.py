"""The cross-rank parts over 2 MPI processes equal one process on the global batch.

One ``mpiexec -n 2 python tests/distributed/_worker.py OUT CASE ...`` runs every case (about
3 s on this machine, most of it starting two interpreters); each test below judges one case
from both ranks' reports. In float64: the collectives against NumPy, a distributed
finite-difference gradient check of the differentiable collectives and of synchronised
BatchNorm, the DINO center, CLIP's logits/loss/gradients under open_clip's four option
combinations, the DINO head's synchronised BatchNorm (outputs, gradients, running
statistics), Sinkhorn-Knopp on unequal shards, and DINOv2's iBOT weighting and per-rank
KoLeo. Each also checks that the rank's data *alone* gives a different value, so a
collective that did nothing would fail.

Skipped when mpi4py or ``mpiexec`` is missing: ``pip install -e ".[dist]"`` (mpi4py and the
``mpich`` wheel, which brings ``mpiexec``).
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

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("_worker.py")
CASES = ["world", "collectives", "dino_center", "clip", "syncbn", "sinkhorn", "dinov2",
         "random_shards", "data_parallel", "device"]
EXACT = 1e-12  # float64: only summation order differs
GRADCHECK = 1e-6  # central differences, eps = 1e-6


def _mpiexec() -> str | None:
    """The launcher next to this interpreter (the one of mpi4py's MPI), else on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.is_file() else shutil.which("mpiexec")


pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None,
                       reason='mpi4py is not installed: pip install -e ".[dist]"'),
    pytest.mark.skipif(_mpiexec() is None,
                       reason='no mpiexec: pip install -e ".[dist]" brings the mpich wheel'),
]


def _launch(out: Path, cases: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["MINITRANSFORMER_NUMBA"] = "0"  # no JIT compilation in two fresh interpreters
    env.pop("MINITRANSFORMER_DEVICE", None)
    env.setdefault("MINITRANSFORMER_CUPY_STANDIN", "tests.cupy_standin")  # a GPU wins over it
    return subprocess.run([_mpiexec(), "-n", "2", sys.executable, str(WORKER), str(out), *cases],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """{case: [rank 0's numbers, rank 1's numbers]} from one 2-rank run."""
    out = tmp_path_factory.mktemp("mpi")
    start = time.perf_counter()
    proc = _launch(out, CASES, timeout=180)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, (
        f"mpiexec failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    print(f"mpiexec -n 2, {len(CASES)} cases: {seconds:.2f} s")
    return {case: [ranks[0][case], ranks[1][case]] for case in CASES}


def _case(reports, name):
    both = reports[name]
    for r, numbers in enumerate(both):
        assert "error" not in numbers, f"rank {r} raised in case {name}:\n{numbers['error']}"
    return both


def test_both_processes_join_one_world(reports):
    """A launcher of another MPI than mpi4py's would start two worlds of one."""
    got = [(n["rank"], n["world_size"], n["is_distributed"]) for n in _case(reports, "world")]
    assert got == [(0, 2, True), (1, 2, True)]


def test_collectives(reports):
    for n in _case(reports, "collectives"):
        for key in ("all_reduce_sum", "all_reduce_mean", "input_unchanged", "all_gather_uneven",
                    "broadcast", "rank_local_sum"):
            assert n[key] == 0.0, (key, n[key])
        # the same error on every rank, naming both ranks' shapes
        assert "rank 0: float64 (2,), rank 1: float64 (3,)" in n["mismatch_error"]
        assert "rank 0: float64 (2, 2), rank 1: float64 (2, 3)" in n["gather_mismatch_error"]
        for key in ("gradcheck_all_gather", "gradcheck_all_reduce", "gradcheck_all_reduce_mean"):
            assert n[key] < GRADCHECK, (key, n[key])


def test_dino_center_is_the_global_batch_mean(reports):
    for n in _case(reports, "dino_center"):
        assert n["center"] < EXACT
        assert n["center_dtype"] == "float64"
        assert n["local_only_differs"] > 1e-3


def test_clip_gathered_logits_loss_and_gradients(reports):
    """The claims of clip_loss's docstring, for open_clip's options."""
    for n in _case(reports, "clip"):
        assert n["local_only_loss_differs"] > 1e-2  # the global negatives change the loss
        for key in ("gwg=1,local=0", "gwg=1,local=1", "gwg=0,local=0", "gwg=0,local=1"):
            c = n[key]
            for part in ("logits_per_image", "logits_per_text", "labels", "mean_loss_vs_global",
                         "scale_vs_global"):
                assert c[part] < EXACT, (key, part, c[part])
        exact = [n["gwg=1,local=0"], n["gwg=1,local=1"]]
        for c in exact:  # averaged gradients = the global loss's gradients
            assert c["towers_vs_global"] < EXACT
        assert n["gwg=1,local=0"]["loss_vs_global"] < EXACT  # every rank returns L_g
        assert n["gwg=0,local=0"]["loss_vs_global"] < EXACT
        assert n["gwg=1,local=1"]["loss_vs_global"] > 1e-3  # L_r, whose mean is L_g
        # without gather_with_grad: the towers' gradient is the global one divided by W ...
        c = n["gwg=0,local=0"]
        assert c["towers_vs_global_over_W"] < EXACT and c["towers_vs_global"] > 1e-3
        # ... and with local_loss too, that of the loss with the columns detached
        c = n["gwg=0,local=1"]
        assert c["towers_vs_detached_columns"] < EXACT and c["towers_vs_global"] > 1e-3
        assert c["towers_vs_global_over_W"] > 1e-3


def test_dino_head_sync_batchnorm(reports):
    for n in _case(reports, "syncbn"):
        assert n["sync_flag"] and n["same_param_names"]
        for key in ("output", "input_grad", "param_grads_summed", "buffers"):
            assert n[key] < EXACT, (key, n[key])
        assert n["local_stats_differ"] > 1e-3
        assert n["gradcheck_bn"] < GRADCHECK


def test_sinkhorn_knopp_over_unequal_shards(reports):
    for n in _case(reports, "sinkhorn"):
        for key in ("output", "rows_sum_to_one", "chunks"):
            assert n[key] < EXACT, (key, n[key])
        assert n["local_only_differs"] > 1e-3


def test_random_sizes_and_unequal_shards(reports):
    for n in _case(reports, "random_shards"):
        for key in ("sinkhorn", "center", "clip_logits", "clip_loss", "clip_grads"):
            assert n[key] < EXACT, (key, n[key])


def test_average_gradients_and_broadcast_tensors(reports):
    for n in _case(reports, "data_parallel"):
        # 13-value buckets over float64 grads of 12, 4, 1 values, then a float32 one
        assert n["n_buckets"] == 3
        assert n["mean"] < EXACT and n["float32"] < 1e-6 and n["float32_dtype"] == "float32"
        assert n["none_stays_none"] and n["shapes_kept"]
        assert "4 parameters have a gradient on some ranks only" in n["partial_error"]
        assert n["broadcast"] == 0.0 and n["broadcast_same_objects"]
        assert n["broadcast_differed_before"]


def test_dinov2_ibot_weighting_and_koleo_per_rank(reports):
    for n in _case(reports, "dinov2"):
        assert n["ibot_mean_vs_global"] < EXACT  # unequal shards: rank-mean = global iBOT
        assert n["ibot_local_vs_global"] > 1e-3
        assert n["koleo_is_per_rank"] < EXACT and n["koleo_mean_vs_shards"] < EXACT
        assert n["koleo_global_differs"] > 1e-3  # KoLeo stays per rank, as in DINOv2
        assert n["ibot_center"] < EXACT


@pytest.mark.gpu  # CI's cuda half and bench/gpu_check.py select `-m gpu`
def test_cupy_arrays_through_the_collectives(reports):
    """On the CuPy stand-in (CI) or a GPU: the host-staged path, results on the device."""
    for n in _case(reports, "device"):
        if "skipped" in n:
            pytest.skip(n["skipped"])
        assert all(n["types"]), n["types"]
        for key in ("all_reduce", "all_gather", "broadcast", "all_gather_grad", "clip_loss",
                    "average_gradients"):
            assert n[key] < EXACT, (key, n[key])


def test_an_uncaught_exception_on_one_rank_ends_the_run(tmp_path):
    """Rank 1 raises while rank 0 waits in a barrier: the run must end (MPI_Abort), with the
    error shown, instead of hanging until the timeout."""
    start = time.perf_counter()
    proc = _launch(tmp_path, ["uncaught"], timeout=60)
    assert proc.returncode != 0
    assert "RuntimeError: uncaught on rank 1" in proc.stdout + proc.stderr
    assert time.perf_counter() - start < 30
