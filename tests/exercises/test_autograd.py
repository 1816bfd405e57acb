"""Wrong answers to the autograd exercises (notebook 00) fail their checks."""

from __future__ import annotations

import numpy as np

from minitransformer import exercises

from .helpers import assert_wrong_answer_fails, parametrize_wrong


# ------------------------------------------------------------------------------ neuron_grads
def _neuron_forward(x, w, b, t):
    y = np.tanh(x @ w + b)
    return y, 2 * (y - t)


def neuron_without_tanh_derivative(x, w, b, t):
    _, g_y = _neuron_forward(x, w, b, t)
    g_z = g_y  # forgot dy/dz = 1 - y^2
    return g_z[:, None] * w, g_z @ x, np.asarray(g_z.sum())


def neuron_tanh_derivative_one_minus_y(x, w, b, t):
    y, g_y = _neuron_forward(x, w, b, t)
    g_z = g_y * (1 - y)  # the notebook's buggy tanh: 1 - y instead of 1 - y^2
    return g_z[:, None] * w, g_z @ x, np.asarray(g_z.sum())


def neuron_without_factor_two(x, w, b, t):
    y = np.tanh(x @ w + b)
    g_z = (y - t) * (1 - y**2)  # d(y - t)^2 / dy is 2 (y - t)
    return g_z[:, None] * w, g_z @ x, np.asarray(g_z.sum())


def neuron_gw_not_summed_over_batch(x, w, b, t):
    y, g_y = _neuron_forward(x, w, b, t)
    g_z = g_y * (1 - y**2)
    return g_z[:, None] * w, g_z[:, None] * x, np.asarray(g_z.sum())  # gw (B, D), not (D,)


def neuron_gx_and_gw_swapped(x, w, b, t):
    y, g_y = _neuron_forward(x, w, b, t)
    g_z = g_y * (1 - y**2)
    return g_z[:, None] * x, g_z @ x, np.asarray(g_z.sum())  # dz/dx is w, not x


# ------------------------------------------------------------------------------ sum_to
def sum_to_leading_axes_only(g, shape):
    return g.sum(axis=tuple(range(g.ndim - len(shape))))  # forgets the size-1 axes


def sum_to_without_keepdims(g, shape):
    g = g.sum(axis=tuple(range(g.ndim - len(shape))))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=stretched)  # the size-1 axes disappear


def sum_to_first_axis(g, shape):
    return g.sum(axis=0)  # right for a bias on (B, D) only


def sum_to_mean(g, shape):
    return exercises.solution("sum_to")(g, shape) * np.prod(shape) / g.size  # averages


# ------------------------------------------------------------------------------ matmul_backward
def matmul_gw_transposed(x, w, gy):
    K, M = w.shape
    return gy @ w.T, gy.reshape(-1, M).T @ x.reshape(-1, K)  # (M, K): gy^T x, not x^T gy


def matmul_gw_not_summed_over_batch(x, w, gy):
    return gy @ w.T, x.swapaxes(-1, -2) @ gy  # keeps one gw per example: (..., K, M)


def matmul_gradients_swapped(x, w, gy):
    K, M = w.shape
    return x.reshape(-1, K).T @ gy.reshape(-1, M), gy @ w.T


# ------------------------------------------------------------------------------ softmax_backward
def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward_subtracts_mean(x, gy):
    y = _softmax(x)
    return y * (gy - gy.mean(axis=-1, keepdims=True))  # the notebook's summed-softmax trap


def softmax_backward_without_y_factor(x, gy):
    y = _softmax(x)
    return gy - (gy * y).sum(axis=-1, keepdims=True)


def softmax_backward_diagonal_only(x, gy):
    y = _softmax(x)
    return y * (1 - y) * gy  # drops the off-diagonal terms -y_i y_j


def softmax_backward_sum_over_first_axis(x, gy):
    y = _softmax(x)
    return y * (gy - (gy * y).sum(axis=0, keepdims=True))


WRONG_ANSWERS = {
    "neuron_grads": [neuron_without_tanh_derivative, neuron_tanh_derivative_one_minus_y,
                     neuron_without_factor_two, neuron_gw_not_summed_over_batch,
                     neuron_gx_and_gw_swapped],
    "sum_to": [sum_to_leading_axes_only, sum_to_without_keepdims, sum_to_first_axis,
               sum_to_mean],
    "matmul_backward": [matmul_gw_transposed, matmul_gw_not_summed_over_batch,
                        matmul_gradients_swapped],
    "softmax_backward": [softmax_backward_subtracts_mean, softmax_backward_without_y_factor,
                         softmax_backward_diagonal_only, softmax_backward_sum_over_first_axis],
}


@parametrize_wrong(WRONG_ANSWERS)
def test_wrong_answer_fails(name, wrong):
    assert_wrong_answer_fails(name, wrong)


def test_a_missing_factor_two_is_named():
    message = assert_wrong_answer_fails("neuron_grads", neuron_without_factor_two)
    assert "times the expected one" in message


def test_a_gradient_left_per_example_is_a_shape_error():
    message = assert_wrong_answer_fails("neuron_grads", neuron_gw_not_summed_over_batch)
    assert "the output[1]: expected shape (3,), got shape (4, 3)" in message


def test_the_summed_softmax_trap_passes_constant_gy_but_fails_a_random_one():
    """The mean-subtracting backward agrees with the true one where gy is constant along each
    row (the last case), so only the random-gy cases catch it; the check fails on the first."""
    ex = exercises.get("softmax_backward")
    constant_gy = ex.cases(np.random.default_rng(0))[-1]
    assert "constant" in constant_gy.label
    exercises.compare(ex.expected(*constant_gy.args),
                      softmax_backward_subtracts_mean(*constant_gy.args))  # no Mismatch
    message = assert_wrong_answer_fails("softmax_backward", softmax_backward_subtracts_mean)
    assert "case 1 of" in message


def test_keepdims_is_named_by_the_shape():
    message = assert_wrong_answer_fails("sum_to", sum_to_without_keepdims)
    assert "expected shape (2, 1, 3), got shape (2, 3)" in message
