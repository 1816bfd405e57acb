"""Wrong answers to the encoder exercises (notebook 03) fail their checks."""

from __future__ import annotations

import math

import numpy as np

from minitransformer import exercises
from minitransformer.exercises.encoder import feed_forward, multi_head_attention

from .helpers import assert_wrong_answer_fails, parametrize_wrong

_erf = np.vectorize(math.erf, otypes=[np.float64])


# ------------------------------------------------------------------ layer_norm
def layer_norm_unbiased_variance(x, weight, bias, eps):
    mu = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, ddof=1, keepdims=True)  # divides by D - 1
    return (x - mu) / np.sqrt(var + eps) * weight + bias


def layer_norm_eps_outside_sqrt(x, weight, bias, eps):
    mu = x.mean(axis=-1, keepdims=True)
    return (x - mu) / (x.std(axis=-1, keepdims=True) + eps) * weight + bias


def layer_norm_over_the_batch(x, weight, bias, eps):
    mu = x.mean(axis=0, keepdims=True)  # the first axis instead of the features
    var = x.var(axis=0, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * weight + bias


def layer_norm_swapped_scale_and_shift(x, weight, bias, eps):
    return exercises.solution("layer_norm")(x, bias, weight, eps)


# ------------------------------------------------------------------ gelu
def gelu_always_tanh(x, approximate="none"):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def gelu_erf_without_sqrt2(x, approximate="none"):
    if approximate == "tanh":
        return gelu_always_tanh(x)
    return 0.5 * x * (1 + _erf(x))


def gelu_sigmoid_form(x, approximate="none"):
    return x / (1 + np.exp(-1.702 * x))  # quick_gelu, CLIP's


def gelu_is_relu(x, approximate="none"):
    return np.maximum(x, 0.0)


# ------------------------------------------------------------------ sinusoidal_positions
def positions_concatenated(T, D):
    t = np.arange(T)[:, None]
    freq = 1.0 / 10000 ** (np.arange(0, D, 2) / D)
    return np.concatenate([np.sin(t * freq), np.cos(t * freq)], axis=1)  # MAE's layout


def positions_exponent_i_over_d(T, D):
    t = np.arange(T)[:, None]
    freq = 1.0 / 10000 ** (np.arange(D // 2) / D)  # i/D instead of 2i/D
    pe = np.zeros((T, D))
    pe[:, 0::2], pe[:, 1::2] = np.sin(t * freq), np.cos(t * freq)
    return pe


def positions_start_at_one(T, D):
    return exercises.solution("sinusoidal_positions")(T + 1, D)[1:]


def positions_sin_cos_swapped(T, D):
    pe = exercises.solution("sinusoidal_positions")(T, D)
    return pe.reshape(T, D // 2, 2)[..., ::-1].reshape(T, D)


# ------------------------------------------------------------------ the blocks
def _ln(x, p, i, eps):
    return exercises.solution("layer_norm")(x, p[f"norm{i}.weight"], p[f"norm{i}.bias"], eps)


def post_norm_is_pre_norm(x, params, num_heads, eps):
    return exercises.solution("pre_norm_block")(x, params, num_heads, eps)


def post_norm_normalises_before_the_residual(x, params, num_heads, eps):
    x = x + _ln(multi_head_attention(x, params, num_heads), params, 1, eps)
    return x + _ln(feed_forward(x, params), params, 2, eps)


def post_norm_ffn_reads_the_input(x, params, num_heads, eps):
    h = _ln(x + multi_head_attention(x, params, num_heads), params, 1, eps)
    return _ln(h + feed_forward(x, params), params, 2, eps)  # FFN of the block's input


def post_norm_without_residuals(x, params, num_heads, eps):
    x = _ln(multi_head_attention(x, params, num_heads), params, 1, eps)
    return _ln(feed_forward(x, params), params, 2, eps)


def pre_norm_is_post_norm(x, params, num_heads, eps):
    return exercises.solution("post_norm_block")(x, params, num_heads, eps)


def pre_norm_residual_of_the_normalised_input(x, params, num_heads, eps):
    h = _ln(x, params, 1, eps)
    x = h + multi_head_attention(h, params, num_heads)  # the residual skips the raw x
    h = _ln(x, params, 2, eps)
    return h + feed_forward(h, params)


def pre_norm_norm1_twice(x, params, num_heads, eps):
    x = x + multi_head_attention(_ln(x, params, 1, eps), params, num_heads)
    return x + feed_forward(_ln(x, params, 1, eps), params)


def pre_norm_with_a_final_norm(x, params, num_heads, eps):
    return _ln(exercises.solution("pre_norm_block")(x, params, num_heads, eps), params, 2, eps)


WRONG_ANSWERS = {
    "layer_norm": [layer_norm_unbiased_variance, layer_norm_eps_outside_sqrt,
                   layer_norm_over_the_batch, layer_norm_swapped_scale_and_shift],
    "gelu": [gelu_always_tanh, gelu_erf_without_sqrt2, gelu_sigmoid_form, gelu_is_relu],
    "sinusoidal_positions": [positions_concatenated, positions_exponent_i_over_d,
                             positions_start_at_one, positions_sin_cos_swapped],
    "post_norm_block": [post_norm_is_pre_norm, post_norm_normalises_before_the_residual,
                        post_norm_ffn_reads_the_input, post_norm_without_residuals],
    "pre_norm_block": [pre_norm_is_post_norm, pre_norm_residual_of_the_normalised_input,
                       pre_norm_norm1_twice, pre_norm_with_a_final_norm],
}


@parametrize_wrong(WRONG_ANSWERS)
def test_wrong_answer_fails(name, wrong):
    assert_wrong_answer_fails(name, wrong)


def test_the_tanh_form_for_the_exact_gelu_fails_on_an_exact_case():
    message = assert_wrong_answer_fails("gelu", gelu_always_tanh)
    assert "the exact (erf) form" in message


def test_concatenated_sin_cos_fails_with_the_right_shape():
    message = assert_wrong_answer_fails("sinusoidal_positions", positions_concatenated)
    assert "shape (10, 16) is right" in message

