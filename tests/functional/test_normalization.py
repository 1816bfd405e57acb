"""layer_norm (fused and composed) and normalize: forward against plain NumPy float64,
gradcheck with a random upstream gradient, and the normalisation invariants as properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitransformer import functional as F
from minitransformer.testing import gradcheck
from tests.functional.helpers import assert_close, host, leaf
from tests.strategies import float_arrays, generic_arrays, noncontiguous, shapes


def _ref_layer_norm(x, weight, bias, eps):
    D = x.shape[-1]
    mu = x.sum(axis=-1, keepdims=True) / D
    var = ((x - mu) ** 2).sum(axis=-1, keepdims=True) / D  # biased, as torch
    y = (x - mu) / np.sqrt(var + eps)
    return y * (1.0 if weight is None else weight) + (0.0 if bias is None else bias)


@pytest.mark.parametrize("affine", ["weight+bias", "weight", "bias", "none"])
@settings(max_examples=12)  # 4 affine variants x 2 modes
@given(data=st.data())
def test_layer_norm(device, fused, affine, data):
    shape = data.draw(shapes(min_dims=1, max_dims=3))
    D = shape[-1]
    x = data.draw(generic_arrays(shape, -3, 3))
    w = data.draw(generic_arrays((D,), 0.5, 1.5)) if "weight" in affine else None
    b = data.draw(generic_arrays((D,))) if "bias" in affine else None
    params = [leaf(p, device) for p in (w, b) if p is not None]

    def fn(x, *p):
        it = iter(p)
        return F.layer_norm(x, next(it) if w is not None else None,
                            next(it) if b is not None else None, eps=1e-5)

    assert_close(fn(leaf(x, device), *params), _ref_layer_norm(x, w, b, 1e-5), rtol=1e-10,
                 atol=1e-10)
    assert gradcheck(fn, [leaf(x, device)] + params, rtol=1e-5, atol=1e-7)


@given(data=st.data())
def test_layer_norm_of_noncontiguous_input(device, fused, data):
    x = data.draw(noncontiguous(data.draw(shapes(min_dims=2, min_side=2))))
    D = x.shape[-1]
    w, b = np.linspace(0.5, 1.5, D), np.linspace(-1, 1, D)
    args = [leaf(x, device), leaf(w, device), leaf(b, device)]
    assert_close(F.layer_norm(*args), _ref_layer_norm(x, w, b, 1e-5), rtol=1e-10, atol=1e-10)
    assert gradcheck(F.layer_norm, args, rtol=1e-5, atol=1e-7)


@given(data=st.data())
def test_layer_norm_output_has_mean_zero_and_variance_one(device, fused, data):
    shape = data.draw(shapes(min_dims=1, max_dims=3, min_side=2, max_side=6))
    x = data.draw(generic_arrays(shape, -10, 10))
    offset = data.draw(st.floats(-100, 100))
    D = shape[-1]
    y = host(F.layer_norm(leaf(x + offset, device), leaf(np.ones(D), device),
                          leaf(np.zeros(D), device), eps=0.0))
    np.testing.assert_allclose(y.mean(axis=-1), 0.0, atol=1e-10)
    np.testing.assert_allclose(y.var(axis=-1), 1.0, rtol=1e-9)


def test_layer_norm_eps_matters_for_a_constant_row(device, fused):
    # a constant row has variance 0: y = 0 exactly, gradients finite (eps keeps 1/sqrt finite)
    x = leaf(np.full((2, 4), 3.0), device)
    assert_close(F.layer_norm(x, eps=1e-5), np.zeros((2, 4)))
    assert gradcheck(lambda t: F.layer_norm(t, eps=1e-5), [x], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_norm_dtype_and_parameter_gradients(device, fused, dtype):
    rng = np.random.default_rng(0)
    x = leaf(rng.standard_normal((2, 3, 4)).astype(dtype), device)
    w = leaf(np.ones(4, dtype), device)
    b = leaf(np.zeros(4, dtype), device)
    gy = rng.standard_normal((2, 3, 4)).astype(dtype)
    y = F.layer_norm(x, w, b)
    y.backward(gy)
    assert y.dtype == x.grad.dtype == w.grad.dtype == b.grad.dtype == dtype
    # weight and bias gradients are sums over every leading axis
    xhat = _ref_layer_norm(host(x).astype(np.float64), None, None, 1e-5)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert_close(b.grad, gy.astype(np.float64).sum(axis=(0, 1)), rtol=tol, atol=tol)
    assert_close(w.grad, (gy * xhat).sum(axis=(0, 1)), rtol=tol, atol=tol)


def test_layer_norm_bad_parameters_name_the_shapes(device, fused):
    x = leaf(np.zeros((2, 5)), device)
    with pytest.raises(ValueError, match=r"layer_norm: weight has shape \(4,\) but the input "
                                         r"\(2, 5\) needs \(5,\)"):
        F.layer_norm(x, leaf(np.ones(4), device), None)
    with pytest.raises(ValueError, match=r"layer_norm: bias has shape \(5, 1\)"):
        F.layer_norm(x, None, leaf(np.ones((5, 1)), device))
    with pytest.raises(TypeError, match="layer_norm: needs a floating-point input"):
        F.layer_norm(leaf(np.zeros((2, 5), int), device, requires_grad=False))


# ---------------------------------------------------------------------------- normalize
@given(data=st.data())
def test_normalize(device, data):
    shape = data.draw(shapes(min_dims=1, max_dims=3))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = data.draw(generic_arrays(shape))
    norm = np.sqrt((x * x).sum(axis=axis, keepdims=True))
    assert_close(F.normalize(leaf(x, device), axis=axis), x / np.maximum(norm, 1e-12))
    assert gradcheck(lambda t: F.normalize(t, axis=axis), [leaf(x, device)])


@given(data=st.data())
def test_normalize_gives_unit_rows(device, data):
    x = data.draw(float_arrays(data.draw(shapes(min_dims=2, max_dims=2)), -5, 5))
    y = host(F.normalize(leaf(x, device)))
    norms = np.sqrt((y * y).sum(axis=-1))
    nonzero = np.abs(x).sum(axis=-1) > 1e-6
    np.testing.assert_allclose(norms[nonzero], 1.0, rtol=1e-12)


def test_normalize_of_a_zero_row_is_zero_with_zero_gradient(device):
    x = leaf(np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 4.0]]), device)
    y = F.normalize(x)
    assert_close(y, [[0.0, 0.0, 0.0], [0.6, 0.0, 0.8]])
    y.backward(np.ones((2, 3)))
    g = host(x.grad)
    assert np.isfinite(g).all()
    # the zero row: y = x / eps there, so the gradient is 1/eps (as torch), not NaN
    np.testing.assert_allclose(g[0], 1e12)
