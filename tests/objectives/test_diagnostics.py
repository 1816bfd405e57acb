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
