"""Element-wise ops: forward against plain NumPy float64 written from the formula, and gradcheck
with a random upstream gradient, over Hypothesis-drawn (broadcastable) shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minitransformer as mt
from minitransformer import functional as F
from minitransformer.testing import gradcheck
from tests.functional.helpers import assert_close, host, leaf
from tests.strategies import (
    broadcastable_pair,
    float_arrays,
    generic_arrays,
    noncontiguous,
    shapes,
)

_erf = np.vectorize(math.erf)

# name: (op, reference, value range of a, value range of b)
BINARY = {
    "add": (F.add, lambda a, b: a + b, (-2, 2), (-2, 2)),
    "sub": (F.sub, lambda a, b: a - b, (-2, 2), (-2, 2)),
    "mul": (F.mul, lambda a, b: a * b, (-2, 2), (-2, 2)),
    "div": (F.div, lambda a, b: a * (1.0 / b), (-2, 2), (0.5, 2)),
    "pow": (F.pow, lambda a, b: np.exp(b * np.log(a)), (0.5, 2), (-2, 2)),
    "maximum": (F.maximum, lambda a, b: np.where(a > b, a, b), (-2, 2), (-2, 2)),
    "minimum": (F.minimum, lambda a, b: np.where(a < b, a, b), (-2, 2), (-2, 2)),
}

# name: (op, reference, value range)
UNARY = {
    "neg": (F.neg, lambda x: 0.0 - x, (-2, 2)),
    "exp": (F.exp, lambda x: math.e ** x, (-2, 2)),
    "log": (F.log, np.log, (0.2, 3)),
    "sqrt": (F.sqrt, lambda x: x ** 0.5, (0.2, 3)),
    "tanh": (F.tanh, lambda x: (np.exp(2 * x) - 1) / (np.exp(2 * x) + 1), (-2, 2)),
    "sigmoid": (F.sigmoid, lambda x: 1.0 / (1.0 + np.exp(-x)), (-4, 4)),
    "abs": (F.abs, lambda x: np.where(x < 0, -x, x), (-2, 2)),
    "erf": (F.erf, _erf, (-2, 2)),
    "clip": (lambda x: F.clip(x, -0.5, 0.7), lambda x: np.where(x < -0.5, -0.5,
                                                                np.where(x > 0.7, 0.7, x)),
             (-2, 2)),
}


@pytest.mark.parametrize("name", list(BINARY))
@settings(max_examples=15)  # x 7 ops
@given(data=st.data())
def test_binary_forward_and_gradcheck_broadcasting(device, name, data):
    sa, sb = data.draw(broadcastable_pair())
    op, ref, ra, rb = BINARY[name]
    a = data.draw(generic_arrays(sa, *ra))
    b = data.draw(generic_arrays(sb, *rb))
    y = op(leaf(a, device), leaf(b, device))
    assert y.shape == np.broadcast_shapes(sa, sb)
    assert_close(y, ref(a, b))
    assert gradcheck(op, [leaf(a, device), leaf(b, device)])


@pytest.mark.parametrize("name", ["add", "sub", "mul"])
@given(data=st.data())
def test_binary_forward_on_drawn_values(device, name, data):
    # Hypothesis-drawn elements: zeros, repeats and extremes of the range
    sa, sb = data.draw(broadcastable_pair())
    op, ref, _, _ = BINARY[name]
    a, b = data.draw(float_arrays(sa)), data.draw(float_arrays(sb))
    assert_close(op(leaf(a, device), leaf(b, device)), ref(a, b))


@pytest.mark.parametrize("name", list(UNARY))
@settings(max_examples=15)  # x 9 ops
@given(data=st.data())
def test_unary_forward_and_gradcheck(device, name, data):
    op, ref, (lo, hi) = UNARY[name]
    x = data.draw(generic_arrays(data.draw(shapes(min_dims=0)), lo, hi))
    assert_close(op(leaf(x, device)), ref(x))
    assert gradcheck(op, [leaf(x, device)])


@pytest.mark.parametrize("name", ["exp", "tanh", "abs", "clip"])
@settings(max_examples=10)  # x 4 ops
@given(data=st.data())
def test_unary_on_noncontiguous_input(device, name, data):
    op, ref, (lo, hi) = UNARY[name]
    x = data.draw(noncontiguous(data.draw(shapes(min_dims=2, min_side=2)), lo, hi))
    assert not x.flags.c_contiguous
    assert_close(op(leaf(x, device)), ref(x))
    assert gradcheck(op, [leaf(x, device)])


@given(data=st.data())
def test_binary_on_noncontiguous_inputs(device, data):
    shape = data.draw(shapes(min_dims=2, min_side=2))
    a = data.draw(noncontiguous(shape))
    b = data.draw(noncontiguous(shape))
    assert_close(F.mul(leaf(a, device), leaf(b, device)), a * b)
    assert gradcheck(F.mul, [leaf(a, device), leaf(b, device)])


@given(data=st.data())
def test_where_broadcasts_condition_and_operands(device, data):
    sc, sa, sb = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=3, max_side=3)
                           .map(lambda b: b.input_shapes))
    cond = data.draw(hnp.arrays(bool, sc))
    a, b = data.draw(generic_arrays(sa)), data.draw(generic_arrays(sb))
    expected = cond * a + (1 - cond) * b  # the formula, not np.where
    xp = mt.backend.as_device(device).xp
    c = xp.asarray(cond)
    assert_close(F.where(c, leaf(a, device), leaf(b, device)), expected)
    assert gradcheck(lambda a, b: F.where(c, a, b), [leaf(a, device), leaf(b, device)])


def test_python_scalars_on_either_side(device):
    x = leaf(np.array([0.5, 1.5, 2.0]), device)
    assert_close(x * 2.0, [1.0, 3.0, 4.0])
    assert_close(2.0 - x, [1.5, 0.5, 0.0])
    assert_close(x ** 2, [0.25, 2.25, 4.0])
    assert_close(2 ** x, [2 ** 0.5, 2 ** 1.5, 4.0])
    assert_close(1.0 / x, [2.0, 1 / 1.5, 0.5])
    assert gradcheck(lambda x: 3.0 / x + x ** 3 - 2 ** x, [x])


def test_maximum_splits_the_gradient_at_ties(device):
    a = leaf(np.array([1.0, 2.0, 5.0]), device)
    b = leaf(np.array([1.0, 3.0, 4.0]), device)
    F.maximum(a, b).backward(np.array([2.0, 2.0, 2.0]))
    assert_close(a.grad, [1.0, 0.0, 2.0])
    assert_close(b.grad, [1.0, 2.0, 0.0])


def test_scalar_broadcast_against_a_tensor_sums_the_gradient(device):
    x = leaf(np.ones((2, 3)), device)
    s = leaf(np.array(2.0), device)
    (x * s).backward(np.arange(6.0).reshape(2, 3))
    assert s.grad.shape == ()
    assert float(host(s.grad)) == 15.0


@pytest.mark.parametrize("name", list(BINARY))
def test_float32_stays_float32(device, name):
    op, _, ra, rb = BINARY[name]
    rng = np.random.default_rng(0)
    a = leaf(rng.uniform(*ra, size=(2, 3)).astype(np.float32), device)
    b = leaf(rng.uniform(*rb, size=(3,)).astype(np.float32), device)
    y = op(a, b)
    y.backward(np.ones((2, 3), np.float32))
    assert y.dtype == np.float32 and a.grad.dtype == np.float32 and b.grad.dtype == np.float32


def test_shape_mismatch_names_the_op_and_the_shapes(device):
    a, b = leaf(np.zeros((2, 3)), device), leaf(np.zeros((4,)), device)
    for op, name in [(F.add, "add"), (F.mul, "mul"), (F.sub, "sub"), (F.div, "div"),
                     (F.maximum, "maximum")]:
        with pytest.raises(ValueError, match=rf"{name}: shapes \(2, 3\) and \(4,\)"):
            op(a, b)


def test_where_needs_a_boolean_condition(device):
    a = leaf(np.zeros(3), device)
    with pytest.raises(TypeError, match="where: the condition must be boolean"):
        F.where(np.array([1, 0, 1]), a, a)
    with pytest.raises(ValueError, match=r"where: condition \(2,\)"):
        F.where(np.array([True, False]), a, a)


@pytest.mark.gpu
def test_mixing_devices_is_an_error(device):
    if device != "cuda":
        pytest.skip("needs a GPU to put the two inputs on different devices")
    a, b = leaf(np.zeros(3), "cpu"), leaf(np.zeros(3), "cuda")
    with pytest.raises(ValueError, match="different devices"):
        F.add(a, b)


# ------------------------------------------------------------------ number operands
# name: (tensor op number, float64 reference), each side
SCALAR_OPS = {
    "x+c": (lambda x, c: x + c, lambda x, c: x + c),
    "c+x": (lambda x, c: c + x, lambda x, c: c + x),
    "x-c": (lambda x, c: x - c, lambda x, c: x - c),
    "c-x": (lambda x, c: c - x, lambda x, c: c - x),
    "x*c": (lambda x, c: x * c, lambda x, c: x * c),
    "c*x": (lambda x, c: c * x, lambda x, c: c * x),
    "x/c": (lambda x, c: x / c, lambda x, c: x * (1.0 / c)),
    "c/x": (lambda x, c: c / x, lambda x, c: c * (1.0 / x)),
    "x**c": (lambda x, c: x ** c, lambda x, c: np.exp(c * np.log(x))),
    "c**x": (lambda x, c: c ** x, lambda x, c: np.exp(x * np.log(c))),
    "max": (lambda x, c: F.maximum(x, c), lambda x, c: np.where(x > c, x, c)),
    "min": (lambda x, c: F.minimum(c, x), lambda x, c: np.where(x < c, x, c)),
    "where": (lambda x, c: F.where(host_mask(x), x, c), lambda x, c: np.where(x > 1.2, x, c)),
}


def host_mask(x):
    return x.data > 1.2  # a raw boolean array on x's device


@pytest.mark.parametrize("name", list(SCALAR_OPS))
@pytest.mark.parametrize("c", [1.5, 2, np.float64(0.75)], ids=["float", "int", "np.float64"])
def test_number_operands_forward_and_gradcheck(device, name, c, rng):
    op, ref = SCALAR_OPS[name]
    a = rng.uniform(0.5, 2.0, (3, 4))
    x = leaf(a, device)
    y = op(x, c)
    assert y.dtype == np.float64 and y.creator.name == y.creator.op.name  # shown as the op
    assert_close(y, ref(a, float(c)))
    assert gradcheck(lambda t: op(t, c), [x], gy=rng.standard_normal((3, 4)))


@pytest.mark.parametrize("name", list(SCALAR_OPS))
def test_number_operands_keep_float32(device, name, rng):
    op, _ = SCALAR_OPS[name]
    x = leaf(rng.uniform(0.5, 2.0, (2, 3)).astype(np.float32), device)
    for c in (0.5, 3, True, np.float64(0.25), np.float32(2.0)):
        y = op(x, c)
        assert y.dtype == np.float32, (name, c)
        y.sum().backward()
        assert x.grad.dtype == np.float32


def test_number_operands_of_integer_tensors_promote_as_numpy_arrays(device):
    ids = mt.tensor(np.array([1, 2, 3]), device=device)  # int64
    assert (ids + 1).dtype == np.int64 and (ids * np.int64(2)).dtype == np.int64
    assert (ids * 0.5).dtype == np.float64
    np.testing.assert_array_equal(host(ids * 0.5), [0.5, 1.0, 1.5])


def test_number_operands_make_no_device_array(cupy_standin, rng):
    """x * 2.0, 1 - x, x ** 2, where(m, x, 0.0), ... forward and backward: no host-to-device
    copy (the number is a kernel argument) and no read."""
    cp = cupy_standin
    x = mt.tensor(rng.uniform(0.5, 2.0, (3, 4)).astype(np.float32), device="cuda",
                  requires_grad=True)
    with cp.counting() as c:
        ys = [op(x, 1.5) for op, _ in SCALAR_OPS.values()]
        sum(y.sum() for y in ys).backward()
    assert (c.to_device, c.to_host) == (0, 0), c.kinds()
    assert x.grad.dtype == np.float32


def test_clip_backward_is_a_where_with_no_transfer(cupy_standin):
    cp = cupy_standin
    a = np.array([-1.0, -0.5, 0.0, 0.7, 0.9])
    x = mt.tensor(a, device="cuda", requires_grad=True)
    gy = mt.tensor(np.array([1.0, 2.0, np.nan, 4.0, 5.0]), device="cuda")
    with cp.counting() as c:
        F.clip(x, -0.5, 0.7).backward(gy)
    assert (c.to_device, c.to_host) == (0, 0), c.kinds()
    np.testing.assert_array_equal(x.grad.get(), [0.0, 2.0, np.nan, 4.0, 0.0])
