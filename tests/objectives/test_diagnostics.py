"""Collapse diagnostics: teacher entropy, KL of the mean teacher to uniform, feature std."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer.objectives import feature_std, kl_to_uniform, teacher_entropy

from . import reference as ref


@given(B=st.integers(1, 6), K=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_diagnostics_match_reference(device, B, K, seed):
    rng = np.random.default_rng(seed)
    p = ref.softmax(rng.standard_normal((B, K)) * 3)
    x = rng.standard_normal((B, K))
    pt = mt.tensor(p, device=device)
    H = teacher_entropy(pt)
    # a device scalar: a NumPy float64 (a Python float) on the CPU, a 0-d array on a GPU
    assert H.shape == () and H.dtype == np.float64
    assert mt.backend.device_of(H) == mt.backend.as_device(device)
    assert isinstance(H, float) == (device == "cpu")
    np.testing.assert_allclose(float(H), ref.entropy_rows(p).mean(), rtol=1e-12, atol=1e-15)
    mean = p.mean(0)
    kl = float((mean * np.log(mean * K)).sum())
    np.testing.assert_allclose(float(kl_to_uniform(pt)), kl, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(float(feature_std(mt.tensor(x, device=device))),
                               x.std(0).mean(), rtol=1e-12)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(feature_std(x, normalize=True), xn.std(0).mean(), rtol=1e-12)


def test_collapse_signatures():
    K = 16
    uniform = np.full((8, K), 1.0 / K)
    assert math.isclose(teacher_entropy(uniform), math.log(K), rel_tol=1e-12)
    assert abs(kl_to_uniform(uniform)) < 1e-12
    same_one_hot = np.zeros((8, K))
    same_one_hot[:, 3] = 1.0  # every image -> prototype 3: one-hot collapse
    assert teacher_entropy(same_one_hot) == 0.0
    assert math.isclose(kl_to_uniform(same_one_hot), math.log(K), rel_tol=1e-12)
    spread = np.eye(K)  # healthy: sharp and every prototype used equally
    assert teacher_entropy(spread) == 0.0 and abs(kl_to_uniform(spread)) < 1e-12
    assert feature_std(np.tile([[1.0, 2.0, 3.0]], (5, 1))) == 0.0
    # lists of per-crop chunks are pooled
    chunks = [spread[:8], spread[8:]]
    assert abs(kl_to_uniform(chunks)) < 1e-12


def test_diagnostics_bad_input():
    with pytest.raises(ValueError, match="empty"):
        teacher_entropy([])
    with pytest.raises(ValueError, match="no rows"):
        feature_std(np.zeros((0, 3)))


def test_diagnostics_read_nothing_on_the_host(device, rng):
    """On the CuPy stand-in the three diagnostics make no device-to-host transfer: a loop
    logs them every step and reads them once per logging interval."""
    cp = mt.backend.cupy()
    if device != "cuda" or not getattr(cp, "IS_STANDIN", False):
        pytest.skip("counted on the CuPy stand-in (pytest --cupy-standin)")
    p = [mt.tensor(ref.softmax(rng.standard_normal((4, 8))), device=device) for _ in range(2)]
    x = mt.tensor(rng.standard_normal((4, 5)), device=device)
    cp.reset_transfers()
    out = [teacher_entropy(p), kl_to_uniform(p), feature_std(x, normalize=True)]
    assert cp.transfers() == 0, cp.transfer_counts()
    assert all(mt.backend.device_of(v) == mt.backend.as_device(device) for v in out)


class _ThreadRanks:
    """W ranks as W threads: ``all_reduce`` sums every thread's array (in rank order) and
    gives the sum to each, as ``distributed.all_reduce`` does across MPI ranks."""

    def __init__(self, w: int):
        import threading

        self.w, self.local = w, threading.local()
        self.barrier = threading.Barrier(w)
        self.slots: list = [None] * w
        self.calls = 0

    def is_distributed(self) -> bool:
        return True

    def all_reduce(self, x, op="sum", *, check=True):
        r = self.local.rank
        self.slots[r] = x.copy()
        self.barrier.wait()
        total = self.slots[0].copy()
        for s in self.slots[1:]:
            total = total + s
        if r == 0:
            self.calls += 1
        self.barrier.wait()  # every rank has read the slots before the next call fills them
        return total

    def run(self, fn, shards):
        import threading

        out = [None] * self.w

        def rank(r):
            self.local.rank = r
            out[r] = fn(shards[r])

        threads = [threading.Thread(target=rank, args=(r,)) for r in range(self.w)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out


@given(w=st.integers(2, 3), sizes=st.lists(st.integers(1, 5), min_size=3, max_size=3),
       K=st.integers(2, 8), seed=st.integers(0, 2**16))
def test_diagnostics_over_ranks_are_the_global_batch(monkeypatch, w, sizes, K, seed):
    """Over W ranks each rank passes its shard (unequal shards too) and every rank gets the
    global batch's value: plain NumPy on the whole batch (teacher entropy: the mean of the
    rows' entropies; KL of the batch-mean distribution to uniform; the population std of the
    normalised rows), not the mean of the shards' values."""
    from minitransformer.objectives import diagnostics

    rng = np.random.default_rng(seed)
    n = sizes[:w]
    p = ref.softmax(rng.standard_normal((sum(n), K)) * 3)  # (n, K), the global batch
    x = rng.standard_normal((sum(n), K)) + rng.standard_normal(K)  # (n, D), off-centre
    cuts = np.cumsum(n)[:-1]
    ranks = _ThreadRanks(w)
    monkeypatch.setattr(diagnostics, "distributed", ranks)
    H = ranks.run(teacher_entropy, np.split(p, cuts))
    kl = ranks.run(kl_to_uniform, np.split(p, cuts))
    std = ranks.run(lambda s: feature_std(s, normalize=True), np.split(x, cuts))
    assert ranks.calls == 4  # one all-reduce each, two for the spread
    mean = p.mean(0)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    for r in range(w):
        np.testing.assert_allclose(H[r], ref.entropy_rows(p).mean(), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(kl[r], (mean * np.log(mean * K)).sum(), rtol=1e-10,
                                   atol=1e-12)
        np.testing.assert_allclose(std[r], xn.std(0).mean(), rtol=1e-12)
