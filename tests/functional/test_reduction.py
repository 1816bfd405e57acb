"""Reductions (sum, mean, max, min, var) and the broadcasting helper sum_to: forward against
plain NumPy float64, gradcheck with a random upstream gradient."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minitransformer import functional as F
from minitransformer.backend import as_device
from minitransformer.testing import gradcheck
from tests.functional.helpers import assert_close, host, leaf
from tests.strategies import broadcastable_pair, generic_arrays, noncontiguous, shapes


def _ref_sum(x, axes, keepdims):
    """Sum by looping over every index of x and adding into the output slot it maps to."""
    out_shape = tuple(1 if i in axes else n for i, n in enumerate(x.shape))
    out = np.zeros(out_shape)
    for idx in np.ndindex(*x.shape):
        out[tuple(0 if i in axes else k for i, k in enumerate(idx))] += x[idx]
    return out if keepdims else out.reshape([n for i, n in enumerate(x.shape) if i not in axes])


def _ref_reduce(name, x, axes, keepdims, ddof=0):
    count = int(np.prod([x.shape[a] for a in axes]))
    if name == "sum":
        return _ref_sum(x, axes, keepdims)
    if name == "mean":
        return _ref_sum(x, axes, keepdims) / count
    if name == "var":
        mu = _ref_sum(x, axes, True) / count
        return _ref_sum((x - mu) ** 2, axes, keepdims) / (count - ddof)
    moved = np.moveaxis(x, axes, list(range(len(axes)))).reshape(count, -1)  # reduced axes first
    vals = [max(col) if name == "max" else min(col) for col in moved.T]
    keep_shape = tuple(1 if i in axes else n for i, n in enumerate(x.shape))
    out = np.array(vals).reshape(keep_shape)
    return out if keepdims else out.reshape([n for i, n in enumerate(x.shape) if i not in axes])


@st.composite
def _shape_and_axis(draw):
    shape = draw(shapes(min_dims=1, max_dims=3))
    choice = draw(st.sampled_from(["none", "int", "negative", "tuple"]))
    nd = len(shape)
    if choice == "none":
        return shape, None, tuple(range(nd))
    if choice == "int":
        a = draw(st.integers(0, nd - 1))
        return shape, a, (a,)
    if choice == "negative":
        a = draw(st.integers(-nd, -1))
        return shape, a, (a % nd,)
    axes = tuple(sorted(draw(st.sets(st.integers(0, nd - 1), min_size=1))))
    return shape, axes, axes


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min", "var"])
@given(data=st.data(), keepdims=st.booleans())
def test_reduction_forward_and_gradcheck(device, name, data, keepdims):
    shape, axis, axes = data.draw(_shape_and_axis())
    x = data.draw(generic_arrays(shape))  # tie-free: max/min are differentiable
    op = getattr(F, name)
    assert_close(op(leaf(x, device), axis=axis, keepdims=keepdims),
                 _ref_reduce(name, x, axes, keepdims))
    assert gradcheck(lambda t: op(t, axis=axis, keepdims=keepdims), [leaf(x, device)])


def test_var_ddof_one_is_the_unbiased_variance(device):
    x = np.array([[1.0, 2.0, 4.0], [0.0, 0.0, 3.0]])
    assert_close(F.var(leaf(x, device), axis=1, ddof=1), [7 / 3, 3.0])
    assert gradcheck(lambda t: F.var(t, axis=0, ddof=1), [leaf(x, device)])


def test_tensor_methods_reduce_too(device):
    x = leaf(np.arange(6.0).reshape(2, 3), device)
    assert_close(x.sum(axis=0), [3.0, 5.0, 7.0])
    assert_close(x.mean(axis=1, keepdims=True), [[1.0], [4.0]])
    assert_close(x.max(), 5.0)
    assert_close(x.min(axis=-1), [0.0, 3.0])


def test_max_splits_the_gradient_between_ties(device):
    x = leaf(np.array([[3.0, 1.0, 3.0], [0.0, 2.0, 1.0]]), device)
    F.max(x, axis=1).backward(np.array([6.0, 1.0]))
    assert_close(x.grad, [[3.0, 0.0, 3.0], [0.0, 1.0, 0.0]])


def test_axis_out_of_range_is_an_error(device):
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        F.sum(leaf(np.zeros((2, 3)), device), axis=2)


@given(data=st.data())
def test_reduction_of_noncontiguous_input(device, data):
    x = data.draw(noncontiguous(data.draw(shapes(min_dims=2, min_side=2))))
    assert_close(F.sum(leaf(x, device), axis=-1), _ref_sum(x, (x.ndim - 1,), False))
    assert gradcheck(lambda t: F.mean(t, axis=0), [leaf(x, device)])


# ---------------------------------------------------------------------------- sum_to
@given(data=st.data())
def test_sum_to_is_the_adjoint_of_broadcast_to(device, data):
    s_small, s_other = data.draw(broadcastable_pair())
    s_big = np.broadcast_shapes(s_small, s_other)
    x = data.draw(generic_arrays(s_small))
    g = data.draw(generic_arrays(s_big))
    # <broadcast_to(x), g> == <x, sum_to(g)>, and sum_to is the explicit sum over the
    # broadcast axes: every element of g lands in the element of x it was copied from
    expected = np.zeros(s_small)
    lead = len(s_big) - len(s_small)
    for idx in np.ndindex(*s_big):
        src = tuple(0 if n == 1 else k for k, n in zip(idx[lead:], s_small))
        expected[src] += g[idx]
    y = F.sum_to(leaf(g, device), s_small)
    assert_close(y, expected)
    lhs = float((np.broadcast_to(x, s_big) * g).sum())
    assert np.isclose(lhs, float((x * expected).sum()), rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda t: F.sum_to(t, s_small), [leaf(g, device)])


def test_sum_to_shape_rejects_a_longer_target(device):
    xp = as_device(device).xp
    with pytest.raises(ValueError, match="sum_to"):
        F.sum_to_shape(xp.zeros((3,)), (2, 3))


# ---------------------------------------------------------------------------- raw helpers
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_sum_and_dot_keepdims(device, layout, axis):
    xp = as_device(device).xp
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    if layout == "transposed":
        a = np.ascontiguousarray(a.transpose(2, 1, 0)).transpose(2, 1, 0)
    ref_sum = np.zeros([1 if i == axis % 3 else n for i, n in enumerate(a.shape)])
    ref_dot = np.zeros_like(ref_sum)
    for idx in itertools.product(*map(range, a.shape)):
        out = tuple(0 if i == axis % 3 else k for i, k in enumerate(idx))
        ref_sum[out] += a[idx]
        ref_dot[out] += a[idx] * b[idx]
    da, db = xp.asarray(a), xp.asarray(b)
    np.testing.assert_allclose(host(F.sum_keepdims(da, axis)), ref_sum, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(host(F.dot_keepdims(da, db, axis)), ref_dot, rtol=1e-12,
                               atol=1e-12)


def test_ones_vector_is_made_once_per_module_length_and_dtype(device):
    from minitransformer.functional.reduction import ones_vector

    xp = as_device(device).xp
    a = ones_vector(xp, 7, np.float32)
    assert ones_vector(xp, 7, "float32") is a  # the same array, not a new one per call
    assert ones_vector(xp, 7, np.float64) is not a and ones_vector(xp, 8, np.float32) is not a
    assert a.shape == (7,) and a.dtype == np.float32
    np.testing.assert_array_equal(host(a), np.ones(7))
    if device == "cpu":
        with pytest.raises(ValueError, match="read-only"):
            a[0] = 2.0  # shared by every caller


def test_fused_row_sums_allocate_no_vector_of_ones_per_call(cupy_standin, monkeypatch, rng):
    """softmax, layer_norm and sum_keepdims forward and backward: after a first call, no
    ``ones`` is made again (the vector is cached)."""
    import minitransformer as mt

    cp = cupy_standin
    x = mt.tensor(rng.standard_normal((4, 6)), device="cuda", requires_grad=True)
    w = mt.tensor(rng.standard_normal(6), device="cuda", requires_grad=True)

    def step():
        y = F.layer_norm(F.softmax(x, axis=-1), w, w)
        (y * y).sum().backward()
        return F.sum_keepdims(x.data, -1)

    step()
    made = []
    real_ones = cp.ones
    monkeypatch.setattr(cp, "ones", lambda *a, **k: made.append(a) or real_ones(*a, **k),
                        raising=False)
    step()
    assert made == []
