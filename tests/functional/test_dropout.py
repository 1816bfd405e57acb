"""Dropout: identity when off, keep fraction 1-p, survivors scaled by 1/(1-p), the gradient
routed through the same mask, seeded and reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from minitransformer import functional as F
from minitransformer.testing import gradcheck
from tests.functional.helpers import assert_close, host, leaf


def _x(device, shape=(4, 5)):
    return leaf(np.random.default_rng(0).uniform(1.0, 2.0, size=shape), device)  # never 0


def test_eval_mode_and_p_zero_are_the_identity(device):
    x = _x(device)
    for y in (F.dropout(x, 0.5, training=False), F.dropout(x, 0.0, training=True)):
        assert_close(y, host(x))
        y.backward(np.full(x.shape, 3.0))
        assert_close(x.grad, np.full(x.shape, 3.0))
        x.grad = None


def test_keep_fraction_is_one_minus_p(device):
    p, n = 0.3, 200_000
    x = leaf(np.ones(n), device, requires_grad=False)
    kept = host(F.dropout(x, p, training=True, rng=np.random.default_rng(123))) != 0
    # binomial(n, 0.7): standard deviation sqrt(n p (1-p)) / n ~ 0.001; allow 5 sigma
    assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_survivors_are_scaled_by_one_over_one_minus_p(device, p):
    x = _x(device, (50, 40))
    y = host(F.dropout(x, p, training=True, rng=np.random.default_rng(0)))
    kept = y != 0
    assert 0 < kept.sum() < kept.size
    np.testing.assert_allclose(y[kept], host(x)[kept] / (1 - p), rtol=1e-15)


def test_gradient_is_routed_through_the_mask(device):
    x = _x(device, (6, 7))
    y = F.dropout(x, 0.4, training=True, rng=np.random.default_rng(5))
    mask = host(y) != 0
    gy = np.random.default_rng(1).standard_normal(x.shape)
    y.backward(gy)
    assert_close(x.grad, gy * mask / 0.6, rtol=1e-15, atol=0)


def test_gradcheck_with_a_fixed_mask(device):
    x = _x(device, (3, 4))
    assert gradcheck(lambda t: F.dropout(t, 0.5, True, rng=np.random.default_rng(7)), [x])


def test_same_seed_same_mask_and_fresh_draws_differ(device):
    x = _x(device, (20, 20))
    a = host(F.dropout(x, 0.5, True, rng=np.random.default_rng(42)))
    b = host(F.dropout(x, 0.5, True, rng=np.random.default_rng(42)))
    np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(42)
    c, d = host(F.dropout(x, 0.5, True, rng=rng)), host(F.dropout(x, 0.5, True, rng=rng))
    assert (c != d).any()


def test_default_generator_follows_manual_seed(device):
    import minitransformer as mt

    x = _x(device, (20, 20))
    mt.manual_seed(3)
    a = host(F.dropout(x, 0.5, True))
    mt.manual_seed(3)
    b = host(F.dropout(x, 0.5, True))
    np.testing.assert_array_equal(a, b)


def test_p_one_drops_everything(device):
    x = _x(device)
    y = F.dropout(x, 1.0, training=True)
    assert_close(y, np.zeros(x.shape))
    y.backward(np.ones(x.shape))
    assert_close(x.grad, np.zeros(x.shape))


def test_float32_stays_float32(device):
    x = leaf(np.ones((3, 3), np.float32), device)
    y = F.dropout(x, 0.5, True, rng=np.random.default_rng(0))
    y.backward(np.ones((3, 3), np.float32))
    assert y.dtype == x.grad.dtype == np.float32


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_p_out_of_range_is_an_error(device, p):
    with pytest.raises(ValueError, match=r"dropout: p must be in \[0, 1\]"):
        F.dropout(_x(device), p, training=True)
