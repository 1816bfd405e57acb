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


def std_normal_pdf(x):
    return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def std_normal_cdf(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def truncated_moments(mean, std, a, b):
    """Mean and std of N(mean, std^2) truncated to [a, b] (absolute bounds), closed form:
    alpha, beta = (a - mean)/std, (b - mean)/std, Z = Phi(beta) - Phi(alpha),
    E = mean + std (phi(alpha) - phi(beta)) / Z,
    Var = std^2 [1 + (alpha phi(alpha) - beta phi(beta)) / Z - ((phi(alpha) - phi(beta)) / Z)^2]."""
    al, be = (a - mean) / std, (b - mean) / std
    Z = std_normal_cdf(be) - std_normal_cdf(al)
    d = (std_normal_pdf(al) - std_normal_pdf(be)) / Z
    var = std**2 * (1 + (al * std_normal_pdf(al) - be * std_normal_pdf(be)) / Z - d * d)
    return mean + std * d, math.sqrt(var)


def test_trunc_normal_cuts_are_absolute_std_002_is_untruncated(device):
    """timm / DINO / DINOv2 call trunc_normal_(std=.02) with a=-2, b=2 in units of the value:
    for std 0.02 that is ±100 std, so the weights are N(0, 0.02^2) (not 12% smaller)."""
    n = 200 * 500
    t = init.trunc_normal_(empty((200, 500), device), std=0.02, rng=np.random.default_rng(0))
    v = t.numpy().astype(np.float64)
    assert t.dtype == np.float32 and t.device == device
    # the sample std of n normal draws has std sigma / sqrt(2 n); 5 of those either side
    assert abs(v.std() - 0.02) < 5 * 0.02 / math.sqrt(2 * n)
    assert abs(v.mean()) < 5 * 0.02 / math.sqrt(n)
    # draws beyond ±2 std are kept: about 4.55% of them (binomial bounds, 5 sigma)
    frac = (np.abs(v) > 2 * 0.02).mean()
    p = 2 * (1 - std_normal_cdf(2.0))
    assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_trunc_normal_std_1_respects_bounds(device):
    n = 100000
    v = init.trunc_normal_(empty((n,), device, np.float64), std=1.0,
                           rng=np.random.default_rng(4)).numpy()
    assert v.min() >= -2.0 and v.max() <= 2.0
    assert v.min() < -1.99 and v.max() > 1.99  # the cut, not a narrower one
    _, sd = truncated_moments(0.0, 1.0, -2.0, 2.0)
    assert abs(sd - 0.8796) < 1e-4
    assert abs(v.std() - sd) < 5 * sd / math.sqrt(2 * n)


def test_trunc_normal_mean_and_bounds(device):
    """Absolute, asymmetric bounds: values in [a, b], sample mean and std those of the
    truncated normal."""
    n = 40000
    v = init.trunc_normal_(empty((n,), device, np.float64), std=2.0, mean=5.0, a=3.0, b=6.0,
                           rng=np.random.default_rng(1)).numpy()
    assert v.min() >= 3.0 and v.max() <= 6.0
    mu, sd = truncated_moments(5.0, 2.0, 3.0, 6.0)
    assert abs(v.mean() - mu) < 5 * sd / math.sqrt(n)
    assert abs(v.std() - sd) < 0.02 * sd
    with pytest.raises(ValueError, match="a < b"):
        init.trunc_normal_(empty((3,), device), a=1.0, b=-1.0)
    with pytest.raises(ValueError, match=r"\[a, b\] = \[5.0, 6.0\] holds only .* absolute"):
        init.trunc_normal_(empty((3,), device), std=0.02, a=5.0, b=6.0)
    with pytest.raises(ValueError, match="std must be > 0, got 0.0"):
        init.trunc_normal_(empty((3,), device), std=0.0)


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
