"""The communication layer without MPI: every collective is the identity, the environment
decides the world, mpi4py is never imported unless a launch asks for it, and the cross-rank
parts of the objectives and the synchronised BatchNorm give exactly the single-process values.

What the collectives compute over several ranks is tested under ``mpiexec -n 2``
(``test_mpi.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer import distributed as dist
from minitransformer.models.heads import BatchNorm1d, DINOHead, convert_sync_batchnorm
from minitransformer.objectives import TeacherCentering, koleo_loss, sinkhorn_knopp
from minitransformer.objectives.clip import clip_logits, clip_loss

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, sys
import numpy as np
import minitransformer
after_import = "mpi4py" in sys.modules
from minitransformer import distributed as d
x = d.all_reduce(np.ones(3)); d.all_gather(np.ones((2, 1))); d.broadcast(np.ones(1)); d.barrier()
print(json.dumps([after_import, "mpi4py" in sys.modules, d.rank(), d.world_size()]))
"""


def _probe(extra_env: dict[str, str]) -> list:
    env = {k: v for k, v in os.environ.items()
           if k not in [v for pair in dist.LAUNCHER_VARIABLES for v in pair]}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra_env)
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("extra_env", [{}, {"PMI_SIZE": "1", "PMI_RANK": "0"},
                                       {"OMPI_COMM_WORLD_SIZE": "1"}])
def test_import_and_single_process_collectives_leave_mpi4py_unimported(extra_env):
    after_import, after_collectives, rank, size = _probe(extra_env)
    assert not after_import, "import minitransformer imported mpi4py"
    assert not after_collectives, "single-process collectives imported mpi4py"
    assert (rank, size) == (0, 1)


def test_world_of_one():
    assert (dist.rank(), dist.world_size(), dist.is_distributed()) == (0, 1, False)
    assert not dist.cuda_aware()


@pytest.mark.parametrize("op", ["sum", "mean"])
def test_single_process_collectives_are_copies(device, xp, rng, op):
    x = mt.backend.to_device(rng.standard_normal((3, 2)), device)
    for y in (dist.all_reduce(x, op), dist.all_gather(x), dist.broadcast(x)):
        assert type(y) is type(x) and y is not x
        assert y.shape == x.shape and y.dtype == x.dtype
        np.testing.assert_array_equal(mt.backend.to_numpy(y), mt.backend.to_numpy(x))
        y[0, 0] = 123.0  # a copy: x is not changed
        assert float(mt.backend.to_numpy(x)[0, 0]) != 123.0
    assert dist.gather_counts(5) == [5]
    dist.barrier()


def test_single_process_tensor_collectives_are_the_tensor_itself(rng):
    t = mt.tensor(rng.standard_normal((3, 2)), requires_grad=True)
    assert dist.all_reduce(t) is t
    assert dist.all_reduce(t, "mean") is t
    assert dist.all_gather(t) is t


@pytest.mark.parametrize("fn", [
    lambda t: dist._AllReduce("sum")(t) * 2.0,
    lambda t: dist._AllReduce("mean")(t) ** 2,
    lambda t: dist._AllGather()(t).tanh(),
], ids=["all_reduce_sum", "all_reduce_mean", "all_gather"])
def test_differentiable_collectives_gradcheck_in_one_process(device, rng, fn):
    """In one process the Functions themselves run (forward a copy, backward the upstream
    gradient); float64 gradcheck with a random upstream gradient. Over 2 ranks: test_mpi."""
    x = mt.tensor(rng.standard_normal((3, 4)), device=device, requires_grad=True)
    assert mt.testing.gradcheck(fn, [x])


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="op must be 'sum' or 'mean', got 'max'"):
        dist.all_reduce(np.ones(2), "max")
    with pytest.raises(TypeError, match="op='mean' needs a floating array, got int64"):
        dist.all_reduce(np.ones(2, dtype=np.int64), "mean")
    with pytest.raises(TypeError, match="unsupported dtype bool"):
        dist.all_reduce(np.ones(2, dtype=bool))
    with pytest.raises(TypeError, match="unsupported dtype complex128"):
        dist.all_gather(np.ones(2, dtype=complex))
    with pytest.raises(ValueError, match="at least one axis"):
        dist.all_gather(np.float64(1.0) * np.ones(()))
    with pytest.raises(ValueError, match="at least one axis"):
        dist.all_gather(mt.tensor(np.ones(())))
    with pytest.raises(ValueError, match=r"root must be in \[0, 1\), got 1"):
        dist.broadcast(np.ones(2), root=1)
    with pytest.raises(ValueError, match="the root must give an array, got None"):
        dist.broadcast(None)
    with pytest.raises(ValueError, match="backend must be 'auto', 'mpi' or 'none'"):
        dist.init("nccl")


def test_all_reduce_keeps_0d_and_integer_arrays():
    assert dist.all_reduce(np.array(2.5)).shape == ()
    got = dist.all_reduce(np.arange(3, dtype=np.int32))
    assert got.dtype == np.int32 and got.tolist() == [0, 1, 2]


def test_data_parallel_helpers_change_nothing_in_one_process(rng):
    params = [mt.tensor(rng.standard_normal((3, 2)), requires_grad=True) for _ in range(2)]
    params[0].grad = rng.standard_normal((3, 2))
    grad, data = params[0].grad, [p.data.copy() for p in params]
    assert dist.average_gradients(params) == 0
    assert params[0].grad is grad and params[1].grad is None
    dist.broadcast_tensors(params)
    for p, d in zip(params, data):
        np.testing.assert_array_equal(p.data, d)


# ------------------------------------------------------------------ detection from the launch
def test_a_multi_process_launch_without_mpi4py_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("PMI_RANK", "1")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # `import mpi4py` raises ImportError
    with pytest.raises(ImportError, match=r"one of 2 MPI processes.*dist extra"):
        dist.rank()


def test_explicit_mpi_without_mpi4py_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match="MPI needs mpi4py.*dist extra"):
        dist.init("mpi")


@pytest.mark.parametrize("name", ["PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"])
def test_a_launch_of_one_process_is_single(monkeypatch, name):
    monkeypatch.setenv(name, "1")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # would fail if it were imported
    assert (dist.rank(), dist.world_size(), dist.is_distributed()) == (0, 1, False)


def test_a_malformed_launch_variable_is_named(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "two")
    with pytest.raises(ValueError, match="PMI_SIZE='two'"):
        dist.world_size()


def test_none_ignores_the_launch_and_cuda_awareness_is_chosen(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "4")
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    dist.init("none")
    assert dist.world_size() == 1
    monkeypatch.setenv(dist.CUDA_AWARE_VARIABLE, "1")
    dist.init("none")
    assert dist.cuda_aware()
    dist.init("none", cuda_aware=False)
    assert not dist.cuda_aware()


def test_rank_local_nests():
    with dist.rank_local():
        with dist.rank_local():
            assert not dist.is_distributed()
        assert dist._local.depth == 1
    assert dist._local.depth == 0


# ------------------------------------------------------------------ the cross-rank parts
@pytest.mark.parametrize("gwg", [True, False])
@pytest.mark.parametrize("local", [True, False])
def test_clip_options_change_nothing_in_one_process(device, rng, gwg, local):
    img = mt.tensor(rng.standard_normal((5, 3)), device=device, requires_grad=True)
    txt = mt.tensor(rng.standard_normal((5, 3)), device=device, requires_grad=True)
    base = clip_loss(img, txt, 0.5)
    base.backward()
    g_img, g_txt = img.grad.copy(), txt.grad.copy()
    img.grad = txt.grad = None
    got = clip_loss(img, txt, 0.5, gather_with_grad=gwg, local_loss=local)
    got.backward()
    assert got.item() == base.item()
    np.testing.assert_array_equal(mt.backend.to_numpy(img.grad), mt.backend.to_numpy(g_img))
    np.testing.assert_array_equal(mt.backend.to_numpy(txt.grad), mt.backend.to_numpy(g_txt))


def test_clip_logits_one_process(rng):
    """(B, B) logits e^s cos(I_i, T_j), their transpose, and labels arange(B), against NumPy."""
    img, txt = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    lpi, lpt, labels = clip_logits(mt.tensor(img), mt.tensor(txt), 0.3)
    i_hat = img / np.linalg.norm(img, axis=1, keepdims=True)
    t_hat = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    np.testing.assert_allclose(lpi.numpy(), np.exp(0.3) * i_hat @ t_hat.T, rtol=1e-12)
    np.testing.assert_array_equal(lpt.numpy(), lpi.numpy().T)
    assert labels.tolist() == [0, 1, 2, 3]


def test_teacher_center_and_sinkhorn_inside_rank_local_match_outside(rng):
    t = rng.standard_normal((6, 4))
    a, b = TeacherCentering(4), TeacherCentering(4)
    a.update(t)
    with dist.rank_local():
        b.update(t)
        s_local = sinkhorn_knopp(t, 0.5).numpy()
    np.testing.assert_array_equal(a.center, b.center)
    np.testing.assert_allclose(a.center, 0.1 * t.mean(0, keepdims=True), rtol=1e-12)
    np.testing.assert_array_equal(sinkhorn_knopp(t, 0.5).numpy(), s_local)


def test_sync_batchnorm_is_plain_batchnorm_in_one_process(device, rng):
    x = rng.standard_normal((6, 3))
    gy = rng.standard_normal((6, 3))
    outs = []
    for sync in (False, True):
        bn = BatchNorm1d(3, sync=sync).to(device, np.float64)
        xt = mt.tensor(x, device=device, requires_grad=True)
        y = bn(xt)
        (y * mt.tensor(gy, device=device)).sum().backward()
        outs.append([y.numpy(), mt.backend.to_numpy(xt.grad),
                     mt.backend.to_numpy(bn.weight.grad), mt.backend.to_numpy(bn.running_var)])
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


def test_convert_sync_batchnorm_and_the_dino_head():
    head = DINOHead(4, 5, hidden_dim=6, bottleneck_dim=3, use_bn=True)
    bns = [m for m in head.modules() if isinstance(m, BatchNorm1d)]
    assert len(bns) == 2 and all(m.sync for m in bns)
    assert "sync=True" in repr(head)
    plain = BatchNorm1d(3)
    assert not plain.sync
    before = {k: v.copy() for k, v in plain.state_dict().items()}
    assert convert_sync_batchnorm(plain) is plain and plain.sync
    assert sorted(plain.state_dict()) == sorted(before)


@given(W=st.integers(2, 4), B=st.integers(2, 5), D=st.integers(2, 4), seed=st.integers(0, 2**16))
def test_koleo_per_rank_is_at_most_the_global_value(W, B, D, seed):
    """koleo_loss's docstring: W ranks train on the mean of KoLeo over their equal shards (as
    DINOv2), and a shard's nearest neighbours are no nearer than the global batch's, so that
    mean is at most the global KoLeo; checked against a NumPy nearest-neighbour computation."""
    x = np.random.default_rng(seed).standard_normal((W * B, D))

    def np_koleo(a):  # DINOv2's KoLeoLoss in plain NumPy
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-8)
        dots = a @ a.T
        np.fill_diagonal(dots, -np.inf)
        d = np.linalg.norm(a - a[dots.argmax(1)] + 1e-8, axis=1)
        return -np.log(d + 1e-8).mean()

    shards = [x[r * B:(r + 1) * B] for r in range(W)]
    per_rank = np.mean([koleo_loss(s).item() for s in shards])
    np.testing.assert_allclose(per_rank, np.mean([np_koleo(s) for s in shards]), rtol=1e-12)
    assert per_rank <= np_koleo(x) + 1e-12


def test_rank_if_initialized_chooses_nothing(monkeypatch):
    """The CLI asks which rank prints without starting MPI: under an MPI launch that has not
    chosen its world yet the answer is None, and mpi4py stays unimported."""
    monkeypatch.setattr(dist, "_world", None)
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.delitem(sys.modules, "mpi4py", raising=False)
    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)
    assert dist.rank_if_initialized() is None
    assert dist._world is None and "mpi4py" not in sys.modules
    monkeypatch.delenv("PMI_SIZE")
    dist.init("none")
    assert dist.rank_if_initialized() == 0 == dist.rank()
