"""nn.init: distributions, explicit rng, dtype and device preserved."""

from __future__ import annotations

import math

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import nn
from minitransformer.nn import init


def empty(shape, device, dtype=np.float32):
    return mt.zeros(*shape, device=device, dtype=dtype)


def test_trunc_normal_is_cut_at_two_std(device):
    t = init.trunc_normal_(empty((200, 500), device), std=0.02, rng=np.random.default_rng(0))
    v = t.numpy()
    assert t.dtype == np.float32 and t.device == device
    assert np.abs(v).max() <= 2 * 0.02 + 1e-9
    # std of N(0, 1) truncated to [-2, 2]: sqrt(1 - 2 * 2 phi(2) / (Phi(2) - Phi(-2)))
    phi2 = math.exp(-2.0) / math.sqrt(2 * math.pi)
    mass = math.erf(2 / math.sqrt(2))
    expected = 0.02 * math.sqrt(1 - 4 * phi2 / mass)
    assert abs(v.std() - expected) < 0.01 * expected
    assert abs(v.mean()) < 1e-3 * 0.02 * 30


def test_trunc_normal_mean_and_bounds(device):
    v = init.trunc_normal_(empty((10000,), device, np.float64), std=2.0, mean=5.0, a=-1.0, b=0.5,
                           rng=np.random.default_rng(1)).numpy()
    assert v.min() >= 5.0 - 2.0 and v.max() <= 5.0 + 1.0
    with pytest.raises(ValueError, match="a < b"):
        init.trunc_normal_(empty((3,), device), a=1.0, b=-1.0)


def test_normal_statistics(device):
    v = init.normal_(empty((100000,), device, np.float64), std=3.0, mean=1.0,
                     rng=np.random.default_rng(2)).numpy()
    assert abs(v.mean() - 1.0) < 0.05 and abs(v.std() - 3.0) < 0.05


def test_xavier_uniform_bound_and_variance(device):
    v = init.xavier_uniform_(empty((300, 500), device), gain=2.0,
                             rng=np.random.default_rng(3)).numpy()
    bound = 2.0 * math.sqrt(6.0 / 800)
    assert np.abs(v).max() <= bound + 1e-7
    assert abs(v.var() - bound**2 / 3) < 0.02 * bound**2 / 3
    with pytest.raises(ValueError, match="shape"):
        init.xavier_uniform_(empty((5,), device))


def test_constant_zeros_ones(device):
    t = empty((2, 3), device, np.float64)
    np.testing.assert_array_equal(init.ones_(t).numpy(), 1.0)
    np.testing.assert_array_equal(init.constant_(t, 0.25).numpy(), 0.25)
    np.testing.assert_array_equal(init.zeros_(t).numpy(), 0.0)
    assert t.dtype == np.float64


def test_explicit_rng_and_manual_seed_reproduce(device):
    a = init.normal_(empty((5,), device), rng=np.random.default_rng(7)).numpy()
    b = init.normal_(empty((5,), device), rng=np.random.default_rng(7)).numpy()
    np.testing.assert_array_equal(a, b)
    mt.manual_seed(11)
    l1 = nn.Linear(4, 3).to(device)
    mt.manual_seed(11)
    l2 = nn.Linear(4, 3).to(device)
    np.testing.assert_array_equal(l1.weight.numpy(), l2.weight.numpy())
    l3 = nn.Linear(4, 3)
    assert not np.array_equal(l1.weight.numpy(), l3.weight.numpy())
