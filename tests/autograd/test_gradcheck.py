"""gradcheck itself: it passes correct backwards, catches wrong ones (element by element and
along random directions), reports the worst element, and avoids the summed-softmax trap.

The ops under test are small Functions defined here, so a bug in the library's ops cannot
hide a bug in the checker (or the other way round).
"""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import Function
from minitransformer.testing import GradcheckError, gradcheck


class _Square(Function):
    """y = x^2 with a correct (2 x gy) or a buggy (x gy) backward."""

    def __init__(self, buggy: bool = False):
        self.buggy = buggy

    def forward(self, x):
        self.save_for_backward(x)
        return x * x

    def backward(self, gy):
        (x,) = self.saved
        return gy * x if self.buggy else 2.0 * gy * x


class _Softmax(Function):
    """Softmax along the last axis. Correct backward: gx = y (gy - sum(gy y)).

    The buggy one subtracts mean(gy) instead of sum(gy y): a plausible slip that is exact
    whenever gy is constant along the row, which is what summing the output produces."""

    def __init__(self, buggy: bool = False):
        self.buggy = buggy

    def forward(self, x):
        z = np.exp(x - x.max(axis=-1, keepdims=True))
        y = z / z.sum(axis=-1, keepdims=True)
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        (y,) = self.saved
        if self.buggy:
            return y * (gy - gy.mean(axis=-1, keepdims=True))
        return y * (gy - (gy * y).sum(axis=-1, keepdims=True))


def leaf(a, requires_grad=True):
    return mt.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


# ---------------------------------------------------------------------------- passes / fails
def test_passes_a_correct_backward(rng):
    assert gradcheck(lambda x: _Square()(x), [leaf(rng.standard_normal((3, 4)))]) is True


def test_catches_a_wrong_backward_and_names_the_worst_element():
    x = leaf([[0.1, -0.2, 3.0], [0.5, 0.3, -0.4]])  # the error |x gy| peaks where |x gy| does
    gy = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda t: _Square(buggy=True)(t), [x], gy=gy)
    message = str(info.value)
    assert "input #0" in message and "shape (2, 3)" in message
    assert "worst element (0, 2)" in message
    assert "analytic 3" in message and "numeric 6" in message  # x gy = 3 vs 2 x gy = 6
    assert "6 of 6 elements differ" in message
    assert "analytic:\n" in message and "numeric:\n" in message  # both gradients in full


def test_checks_every_input_that_requires_grad(rng):
    a, b = leaf(rng.standard_normal(3)), leaf(rng.standard_normal(3))
    assert gradcheck(lambda p, q: _Square()(p) * q, [a, b])
    with pytest.raises(GradcheckError, match="input #1"):
        gradcheck(lambda p, q: p * _Square(buggy=True)(q), [a, b])
    # an input that does not require grad is not checked
    assert gradcheck(lambda p, q: p * _Square(buggy=True)(q), [a, leaf(b.data, False)])


def test_multiple_outputs_each_get_their_own_random_gy(rng):
    x = leaf(rng.standard_normal(4))
    assert gradcheck(lambda t: (_Square()(t), t * 3.0), [x])
    with pytest.raises(GradcheckError):
        gradcheck(lambda t: (t * 3.0, _Square(buggy=True)(t)), [x])


def test_non_tensor_arguments_pass_through(rng):
    x = leaf(rng.standard_normal((2, 3)))
    assert gradcheck(lambda t, axis: t.sum(axis=axis), [x, 1])


def test_directional_mode_for_large_inputs(rng):
    x = leaf(rng.standard_normal((40, 50)))  # 2000 elements > max_elements
    assert gradcheck(lambda t: _Square()(t), [x], max_elements=100)
    with pytest.raises(GradcheckError, match=r"direction.*analytic <grad, v>") as info:
        gradcheck(lambda t: _Square(buggy=True)(t), [x], max_elements=100, n_directions=3)
    assert "checked along 3 random unit directions" in str(info.value)


def test_the_callers_tensors_are_left_alone(rng):
    x0 = rng.standard_normal(5)
    x = leaf(x0)
    gradcheck(lambda t: _Square()(t), [x])
    assert x.grad is None
    np.testing.assert_array_equal(x.data, x0)


def test_non_contiguous_inputs_keep_their_layout(rng):
    seen = []

    def fn(t):
        seen.append(t.data.flags.c_contiguous)
        return _Square()(t)

    x = mt.Tensor(rng.standard_normal((3, 4)).T, requires_grad=True)  # wraps the view
    assert not x.data.flags.c_contiguous
    assert gradcheck(fn, [x])
    assert not any(seen)


# ---------------------------------------------------------------------------- the trap
def test_summed_softmax_trap(rng):
    x = leaf(rng.standard_normal((3, 5)))
    # sum(softmax(x)) == 1 for every x, so its gradient is 0 and the buggy backward returns
    # 0 too (gy is constant along each row): the check that sums the output passes a bug
    assert gradcheck(lambda t: _Softmax(buggy=True)(t).sum(), [x])
    # a random upstream gradient catches it ...
    with pytest.raises(GradcheckError):
        gradcheck(lambda t: _Softmax(buggy=True)(t), [x])
    # ... and passes the correct backward
    assert gradcheck(lambda t: _Softmax()(t), [x])


# ---------------------------------------------------------------------------- bad use
def test_rejects_float32_inputs():
    x = mt.tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    with pytest.raises(TypeError, match="float64.*float32"):
        gradcheck(lambda t: t * 2.0, [x])


def test_needs_an_input_that_requires_grad():
    with pytest.raises(ValueError, match="requires_grad"):
        gradcheck(lambda t: t * 2.0, [leaf(np.ones(3), False)])


def test_output_must_depend_on_the_checked_inputs():
    with pytest.raises(GradcheckError, match="no output depends"):
        gradcheck(lambda t: mt.tensor(np.ones(3)), [leaf(np.ones(3))])


def test_runs_on_every_device(device, xp, rng):
    x = mt.tensor(xp.asarray(rng.standard_normal((2, 3))), requires_grad=True)
    assert gradcheck(lambda t: (t * t).exp(), [x])
    with pytest.raises(GradcheckError):
        gradcheck(lambda t: _Square(buggy=True)(t), [x])
