"""Activations and the softmax family, each run fused and composed (the ``fused`` fixture):
forward against plain NumPy float64 written from the formula, gradcheck with a random upstream
gradient, numerically hard inputs, and the invariants as properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitransformer import functional as F
from minitransformer.testing import gradcheck
from tests.functional.helpers import assert_close, host, leaf
from tests.strategies import float_arrays, generic_arrays, noncontiguous, shapes

_erf = np.vectorize(math.erf)


def _ref_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _ref_logsumexp(x, axis, keepdims=False):
    m = x.max(axis=axis, keepdims=True)
    out = m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis)


def _ref_gelu(x, approximate):
    if approximate == "none":
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


@st.composite
def _shape_and_axis(draw):
    shape = draw(shapes(min_dims=1, max_dims=3))
    return shape, draw(st.integers(-len(shape), len(shape) - 1))


# ---------------------------------------------------------------------------- pointwise
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@settings(max_examples=15)  # x 2 forms x 2 modes
@given(data=st.data())
def test_gelu(device, fused, approximate, data):
    x = data.draw(generic_arrays(data.draw(shapes(min_dims=0)), -4, 4))
    assert_close(F.gelu(leaf(x, device), approximate), _ref_gelu(x, approximate))
    assert gradcheck(lambda t: F.gelu(t, approximate), [leaf(x, device)])


def test_gelu_limits_and_approximation(device, fused):
    x = np.array([-30.0, -1.0, 0.0, 1.0, 30.0])
    exact = host(F.gelu(leaf(x, device)))
    assert exact[2] == 0.0 and exact[4] == 30.0 and abs(exact[0]) < 1e-100
    # the tanh form approximates the erf form to ~1e-3 (Hendrycks & Gimpel)
    assert np.abs(host(F.gelu(leaf(x, device), "tanh")) - exact).max() < 1e-3
    with pytest.raises(ValueError, match="gelu: approximate must be 'none' or 'tanh'"):
        F.gelu(leaf(x, device), "erf")


@given(data=st.data())
def test_relu_and_quick_gelu(device, data):
    x = data.draw(generic_arrays(data.draw(shapes(min_dims=0)), -3, 3))
    assert_close(F.relu(leaf(x, device)), np.where(x > 0, x, 0.0))
    assert_close(F.quick_gelu(leaf(x, device)), x / (1.0 + np.exp(-1.702 * x)))
    assert gradcheck(F.relu, [leaf(x, device)])
    assert gradcheck(F.quick_gelu, [leaf(x, device)])


def test_relu_gradient_is_zero_at_zero(device):
    x = leaf(np.array([-1.0, 0.0, 2.0]), device)
    F.relu(x).backward(np.ones(3))
    assert_close(x.grad, [0.0, 0.0, 1.0])


# ---------------------------------------------------------------------------- softmax family
@given(data=st.data())
def test_softmax(device, fused, data):
    shape, axis = data.draw(_shape_and_axis())
    x = data.draw(generic_arrays(shape, -5, 5))
    y = F.softmax(leaf(x, device), axis=axis)
    assert_close(y, _ref_softmax(x, axis))
    assert gradcheck(lambda t: F.softmax(t, axis=axis), [leaf(x, device)])


@given(data=st.data())
def test_log_softmax(device, fused, data):
    shape, axis = data.draw(_shape_and_axis())
    x = data.draw(generic_arrays(shape, -5, 5))
    assert_close(F.log_softmax(leaf(x, device), axis=axis),
                 x - _ref_logsumexp(x, axis, keepdims=True))
    assert gradcheck(lambda t: F.log_softmax(t, axis=axis), [leaf(x, device)])


@given(data=st.data(), keepdims=st.booleans())
def test_logsumexp(device, fused, data, keepdims):
    shape, axis = data.draw(_shape_and_axis())
    x = data.draw(generic_arrays(shape, -5, 5))
    assert_close(F.logsumexp(leaf(x, device), axis=axis, keepdims=keepdims),
                 _ref_logsumexp(x, axis, keepdims))
    assert gradcheck(lambda t: F.logsumexp(t, axis=axis, keepdims=keepdims), [leaf(x, device)])


@given(data=st.data())
def test_softmax_family_on_noncontiguous_input(device, fused, data):
    x = data.draw(noncontiguous(data.draw(shapes(min_dims=2, min_side=2))))
    assert_close(F.softmax(leaf(x, device)), _ref_softmax(x, -1))
    assert_close(F.log_softmax(leaf(x, device), axis=0), np.log(_ref_softmax(x, 0)))
    assert gradcheck(lambda t: F.softmax(t, axis=-1), [leaf(x, device)])
    assert gradcheck(lambda t: F.log_softmax(t, axis=0), [leaf(x, device)])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_of_minus_1000_and_1_is_exact(device, fused, dtype):
    x = leaf(np.array([[-1000.0, 1.0], [1000.0, 1000.0]], dtype=dtype), device)
    p = host(F.softmax(x))
    assert not np.isnan(p).any()
    np.testing.assert_array_equal(p, np.array([[0.0, 1.0], [0.5, 0.5]], dtype=dtype))
    np.testing.assert_array_equal(host(F.log_softmax(x)),
                                  np.array([[-1001.0, 0.0], [-math.log(2), -math.log(2)]],
                                           dtype=dtype))
    np.testing.assert_allclose(host(F.logsumexp(x)), [1.0, 1000.0 + math.log(2)], rtol=1e-7)


def test_softmax_gradient_at_a_saturated_row_is_finite(device, fused):
    x = leaf(np.array([[-1000.0, 1.0, 0.5]]), device)
    assert gradcheck(F.softmax, [x])
    assert gradcheck(F.log_softmax, [x])


def test_logsumexp_of_an_all_minus_inf_row_is_minus_inf(device):
    x = leaf(np.array([[-np.inf, -np.inf], [0.0, 0.0]]), device, requires_grad=False)
    with np.errstate(divide="ignore", invalid="ignore"):  # log(0) = -inf is the answer
        np.testing.assert_array_equal(host(F.logsumexp(x)), [-np.inf, math.log(2)])


@given(data=st.data(), shift=st.floats(-50, 50))
def test_softmax_shift_invariance_and_rows_sum_to_one(device, fused, data, shift):
    shape, axis = data.draw(_shape_and_axis())
    x = data.draw(float_arrays(shape, -10, 10))
    p = host(F.softmax(leaf(x, device), axis=axis))
    np.testing.assert_allclose(host(F.softmax(leaf(x + shift, device), axis=axis)), p,
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(p.sum(axis=axis), 1.0, rtol=1e-12)
    assert (p >= 0).all()


@given(data=st.data())
def test_exp_of_log_softmax_is_softmax(device, fused, data):
    shape, axis = data.draw(_shape_and_axis())
    x = data.draw(float_arrays(shape, -20, 20))
    np.testing.assert_allclose(np.exp(host(F.log_softmax(leaf(x, device), axis=axis))),
                               host(F.softmax(leaf(x, device), axis=axis)), rtol=1e-12,
                               atol=1e-15)


@pytest.mark.parametrize("op", [F.softmax, F.log_softmax, F.logsumexp, F.gelu, F.relu])
def test_float32_stays_float32(device, fused, op):
    x = leaf(np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32), device)
    y = op(x)
    y.backward(np.ones(y.shape, np.float32))
    assert y.dtype == np.float32 and x.grad.dtype == np.float32


def test_integer_inputs_are_rejected(device):
    x = leaf(np.array([[1, 2], [3, 4]]), device, requires_grad=False)
    for op, name in [(F.softmax, "softmax"), (F.log_softmax, "log_softmax"),
                     (F.logsumexp, "logsumexp"), (F.gelu, "gelu")]:
        with pytest.raises(TypeError, match=f"{name}: needs a floating-point input"):
            op(x)
