"""cross_entropy (integer targets, ignore_index) and soft_cross_entropy, fused and composed:
forward against a per-row plain-NumPy loop, gradcheck, sanity values and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitransformer import functional as F
from minitransformer.testing import gradcheck
from tests.functional.helpers import assert_close, host, leaf
from tests.strategies import generic_arrays, shapes


def _ref_nll_rows(z, t, ignore_index):
    """-log softmax(z_i)[t_i] row by row (0 at ignored rows), written out with math.exp."""
    K = z.shape[-1]
    z2, t2 = z.reshape(-1, K), t.reshape(-1)
    out = np.zeros(len(t2))
    for i, (row, ti) in enumerate(zip(z2, t2)):
        if ti == ignore_index:
            continue
        m = max(row)
        lse = m + math.log(sum(math.exp(v - m) for v in row))
        out[i] = lse - row[ti]
    return out.reshape(t.shape)


def _ref_cross_entropy(z, t, ignore_index, reduction):
    rows = _ref_nll_rows(z, t, ignore_index)
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    return rows.sum() / max(int((t != ignore_index).sum()), 1)


@st.composite
def _logits_and_targets(draw, ignore_index=-100):
    lead = draw(shapes(min_dims=0, max_dims=2, max_side=3))
    K = draw(st.integers(1, 4))
    z = draw(generic_arrays(lead + (K,), -3, 3))
    t = np.array(draw(st.lists(st.sampled_from(list(range(K)) + [ignore_index]),
                               min_size=int(np.prod(lead)), max_size=int(np.prod(lead)))),
                 dtype=np.int64).reshape(lead)
    return z, t


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@settings(max_examples=15)  # x 3 reductions x 2 modes
@given(data=st.data())
def test_cross_entropy(device, fused, reduction, data):
    z, t = data.draw(_logits_and_targets())
    y = F.cross_entropy(leaf(z, device), t, reduction=reduction)
    assert y.shape == (t.shape if reduction == "none" else ())
    assert_close(y, _ref_cross_entropy(z, t, -100, reduction))
    assert gradcheck(lambda x: F.cross_entropy(x, t, reduction=reduction), [leaf(z, device)])


def test_cross_entropy_target_on_the_device_and_as_tensor(device, fused):
    z = np.random.default_rng(0).standard_normal((3, 4))
    t = np.array([0, 3, 1])
    t_dev = leaf(t, device, requires_grad=False)
    assert_close(F.cross_entropy(leaf(z, device), t_dev), _ref_cross_entropy(z, t, -100, "mean"))


@pytest.mark.parametrize("K", [2, 7, 100])
def test_uniform_logits_give_log_k(device, fused, K):
    z = leaf(np.full((5, K), 0.37), device)
    t = np.arange(5) % K
    np.testing.assert_allclose(float(host(F.cross_entropy(z, t))), math.log(K), rtol=1e-12)


def test_ignored_rows_do_not_affect_the_loss_or_get_gradient(device, fused):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4, 5))
    t = np.array([1, -100, 3, -100])
    loss = F.cross_entropy(leaf(z, device), t)
    z_changed = z.copy()
    z_changed[[1, 3]] = rng.standard_normal((2, 5)) * 100  # rows nobody predicts
    x = leaf(z_changed, device)
    loss_changed = F.cross_entropy(x, t)
    np.testing.assert_allclose(float(host(loss_changed)), float(host(loss)), rtol=1e-12)
    # the mean is over the two kept rows only
    np.testing.assert_allclose(float(host(loss)), _ref_nll_rows(z, t, -100).sum() / 2,
                               rtol=1e-12)
    loss_changed.backward()
    g = host(x.grad)
    np.testing.assert_array_equal(g[[1, 3]], 0.0)
    np.testing.assert_allclose(g[[0, 2]].sum(axis=-1), 0.0, atol=1e-15)  # softmax - onehot


def test_custom_ignore_index_and_all_ignored(device, fused):
    z = np.random.default_rng(0).standard_normal((3, 4))
    t = np.array([2, 0, 2])
    y = F.cross_entropy(leaf(z, device), t, ignore_index=2)
    np.testing.assert_allclose(float(host(y)), _ref_nll_rows(z, np.array([2, 0, 2]), 2).sum(),
                               rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_targets_ignored_gives_zero_loss_and_zero_gradient(device, fused, reduction):
    """The documented decision (not torch's NaN): rows exist but none is kept -> 0, gradient 0,
    so a batch where BERT masking picked nothing does not stop a run."""
    z = np.random.default_rng(0).standard_normal((3, 4))
    x = leaf(z, device)
    none_kept = F.cross_entropy(x, np.full(3, -100), reduction=reduction)
    assert none_kept.shape == ((3,) if reduction == "none" else ())
    assert_close(none_kept, np.zeros(none_kept.shape))
    assert np.isfinite(host(none_kept)).all()
    none_kept.sum().backward()
    assert_close(x.grad, np.zeros((3, 4)))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(("z_shape", "what"), [
    ((0, 5), r"\(0, 5\) are an empty batch \(no rows\)"),
    ((2, 0, 5), r"\(2, 0, 5\) are an empty batch \(no rows\)"),
    ((3, 0), r"\(3, 0\) have no classes \(K = 0\)"),
])
def test_cross_entropy_on_an_empty_batch_raises(device, fused, reduction, z_shape, what):
    """Issue 13 item 8: an empty batch used to return 0.0; now a ValueError naming the shape."""
    t = np.zeros(z_shape[:-1], dtype=np.int64)
    with pytest.raises(ValueError, match=r"^cross_entropy: logits of shape " + what):
        F.cross_entropy(leaf(np.zeros(z_shape), device), t, reduction=reduction)


def test_cross_entropy_float32(device, fused):
    rng = np.random.default_rng(0)
    x = leaf(rng.standard_normal((6, 10)).astype(np.float32), device)
    y = F.cross_entropy(x, rng.integers(0, 10, size=6))
    y.backward()
    assert y.dtype == x.grad.dtype == np.float32


def test_cross_entropy_bad_targets(device, fused):
    z = leaf(np.zeros((3, 4)), device)
    with pytest.raises(TypeError, match="cross_entropy: target must hold integer class ids, "
                                        "got dtype float64"):
        F.cross_entropy(z, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"cross_entropy: logits \(3, 4\) need target of "
                                         r"shape \(3,\), got \(2,\)"):
        F.cross_entropy(z, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"target values must be in \[0, 4\) or "
                                         r"ignore_index=-100, got 4"):
        F.cross_entropy(z, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match="reduction must be mean, sum or none"):
        F.cross_entropy(z, np.array([0, 1, 2]), reduction="avg")


# ---------------------------------------------------------------------------- soft targets
def _ref_soft_ce(z, p, axis):
    m = z.max(axis=axis, keepdims=True)
    log_q = z - m - np.log(np.exp(z - m).sum(axis=axis, keepdims=True))
    return -(p * log_q).sum(axis=axis)


@given(data=st.data())
def test_soft_cross_entropy(device, fused, data):
    shape = data.draw(shapes(min_dims=1, max_dims=3))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    z = data.draw(generic_arrays(shape, -3, 3))
    p = data.draw(generic_arrays(shape, 0.0, 1.0))
    p = p / p.sum(axis=axis, keepdims=True)
    assert_close(F.soft_cross_entropy(leaf(z, device), leaf(p, device), axis=axis),
                 _ref_soft_ce(z, p, axis))
    # both the logits and the target distribution get gradients
    assert gradcheck(lambda a, b: F.soft_cross_entropy(a, b, axis=axis),
                     [leaf(z, device), leaf(p, device)])


def test_soft_cross_entropy_with_one_hot_targets_is_cross_entropy(device, fused):
    rng = np.random.default_rng(0)
    z, t = rng.standard_normal((5, 6)), rng.integers(0, 6, size=5)
    onehot = np.eye(6)[t]
    assert_close(F.soft_cross_entropy(leaf(z, device), leaf(onehot, device)),
                 host(F.cross_entropy(leaf(z, device), t, reduction="none")))


def test_soft_cross_entropy_of_equal_distributions_is_the_entropy(device, fused):
    # DINO's "loss is not 0" (dino #167): -sum p log p when student == teacher
    p = np.array([[0.7, 0.2, 0.1]])
    y = F.soft_cross_entropy(leaf(np.log(p), device), leaf(p, device))
    assert_close(y, [-(p * np.log(p)).sum()])


@pytest.mark.parametrize(("shape", "axis", "what"), [
    ((0, 5), -1, r"\(0, 5\) are an empty batch"),
    ((3, 0), -1, r"\(3, 0\) have no classes along axis -1"),
    ((3, 0), 0, r"\(3, 0\) are an empty batch"),
])
def test_soft_cross_entropy_on_an_empty_batch_raises(device, fused, shape, axis, what):
    z, p = leaf(np.zeros(shape), device), leaf(np.zeros(shape), device)
    with pytest.raises(ValueError, match=r"^soft_cross_entropy: logits of shape " + what):
        F.soft_cross_entropy(z, p, axis=axis)


def test_soft_cross_entropy_shape_mismatch(device, fused):
    with pytest.raises(ValueError, match=r"soft_cross_entropy: logits \(2, 3\) and "
                                         r"target_probs \(2, 4\) must have the same shape"):
        F.soft_cross_entropy(leaf(np.zeros((2, 3)), device), leaf(np.zeros((2, 4)), device))
