"""Wrong answers to the attention exercises (notebooks 01-02) fail their checks."""

from __future__ import annotations

import numpy as np

from minitransformer import exercises

from .helpers import assert_wrong_answer_fails, parametrize_wrong


def _softmax(s):
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def attention_without_scale(q, k, v):
    return _softmax(q @ k.swapaxes(-1, -2)) @ v


def attention_softmax_over_queries(q, k, v):
    s = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
    e = np.exp(s - s.max(axis=-2, keepdims=True))
    return (e / e.sum(axis=-2, keepdims=True)) @ v


def attention_transposed(q, k, v):
    return exercises.solution("scaled_attention")(q, k, v).swapaxes(-1, -2)


# ------------------------------------------------------------------------------ softmax
def softmax_without_max(x):
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(x)  # overflows to inf for large scores: inf / inf = NaN
        return e / e.sum(axis=-1, keepdims=True)


def softmax_over_first_axis(x):
    e = np.exp(x - x.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def softmax_not_normalized(x):
    return np.exp(x - x.max(axis=-1, keepdims=True))


def softmax_global_max_and_sum(x):
    e = np.exp(x - x.max())
    return e / e.sum()  # one distribution over the whole array, not one per row


# ------------------------------------------------------------------------------ causal_mask
def causal_mask_transposed(T):
    return np.triu(np.ones((T, T), dtype=bool))  # the future, not the past


def causal_mask_without_diagonal(T):
    return np.tril(np.ones((T, T), dtype=bool), k=-1)  # off by one: a token cannot see itself


def causal_mask_as_floats(T):
    return np.tril(np.ones((T, T)))


def causal_mask_inverted(T):
    return ~np.tril(np.ones((T, T), dtype=bool))  # True = masked out


# ------------------------------------------------------------------------------ masked_attention
def _scores(q, k):
    return q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])


def masked_attention_inverted_mask(q, k, v, mask):
    return exercises.solution("masked_attention")(q, k, v, ~np.asarray(mask))


def masked_attention_with_minus_inf(q, k, v, mask):
    s = np.where(mask, _scores(q, k), -np.inf)
    with np.errstate(invalid="ignore"):  # a fully masked row: -inf - (-inf) = NaN
        return _softmax(s) @ v


def masked_attention_uniform_masked_rows(q, k, v, mask):
    s = np.where(mask, _scores(q, k), -1e9)  # fine, except that a fully masked row is uniform
    return _softmax(s) @ v


def masked_attention_after_softmax(q, k, v, mask):
    return (_softmax(_scores(q, k)) * mask) @ v  # zeroed, but the rows no longer sum to 1


# ------------------------------------------------------------------------------ split_heads
def split_heads_plain_reshape(x, H):
    B, T, D = x.shape
    return x.reshape(B, H, T, D // H)  # the right shape, tokens mixed into heads


def split_heads_interleaved(x, H):
    B, T, D = x.shape
    return x.reshape(B, T, D // H, H).transpose(0, 3, 1, 2)  # head h = every H-th column


def split_heads_channels_before_tokens(x, H):
    B, T, D = x.shape
    return x.reshape(B, T, H, D // H).transpose(0, 2, 3, 1)  # (B, H, hd, T)


# ------------------------------------------------------------------------------ merge_heads
def merge_heads_plain_reshape(x):
    B, H, T, hd = x.shape
    return x.reshape(B, T, H * hd)  # no transpose


def merge_heads_interleaved(x):
    B, H, T, hd = x.shape
    return x.transpose(0, 2, 3, 1).reshape(B, T, H * hd)  # channel-major: heads interleaved


def merge_heads_mean(x):
    return x.mean(axis=1)  # averages the heads instead of concatenating them: (B, T, hd)


# ------------------------------------------------------------------------------ qkv_projection
def qkv_every_third_column(x, w_qkv, b_qkv):
    qkv = x @ w_qkv + b_qkv
    return qkv[..., 0::3], qkv[..., 1::3], qkv[..., 2::3]


def qkv_without_bias(x, w_qkv, b_qkv):
    D = x.shape[-1]
    qkv = x @ w_qkv
    return qkv[..., :D], qkv[..., D:2 * D], qkv[..., 2 * D:]


def qkv_blocks_in_reverse(x, w_qkv, b_qkv):
    q, k, v = exercises.solution("qkv_projection")(x, w_qkv, b_qkv)
    return v, k, q


def qkv_split_weight_rows(x, w_qkv, b_qkv):
    D = x.shape[-1]
    w_q, w_k, w_v = w_qkv[:D], w_qkv[D:2 * D], w_qkv[2 * D:]  # rows: torch's (3D, D) layout
    b_q, b_k, b_v = b_qkv[:D], b_qkv[D:2 * D], b_qkv[2 * D:]
    return x @ w_q + b_q, x @ w_k + b_k, x @ w_v + b_v


# ---------------------------------------------------------------------- multi_head_attention
def _mha(x, w_qkv, b_qkv, w_o, b_o, H, scale_width=None, interleaved=False, use_w_o=True,
         softmax_axis=-1):
    B, T, D = x.shape
    hd = D // H
    qkv = x @ w_qkv + b_qkv  # (B, T, 3D)
    if interleaved:
        qkv = qkv.reshape(B, T, 3, hd, H).transpose(2, 0, 4, 1, 3)
    else:
        qkv = qkv.reshape(B, T, 3, H, hd).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv
    s = q @ k.swapaxes(-1, -2) / np.sqrt(scale_width or hd)
    e = np.exp(s - s.max(axis=softmax_axis, keepdims=True))
    p = e / e.sum(axis=softmax_axis, keepdims=True)
    out = (p @ v).transpose(0, 2, 1, 3).reshape(B, T, D)
    return out @ w_o + b_o if use_w_o else out


def mha_scaled_by_model_width(x, w_qkv, b_qkv, w_o, b_o, H):
    return _mha(x, w_qkv, b_qkv, w_o, b_o, H, scale_width=x.shape[-1])  # 1/sqrt(D), not hd


def mha_heads_interleaved(x, w_qkv, b_qkv, w_o, b_o, H):
    return _mha(x, w_qkv, b_qkv, w_o, b_o, H, interleaved=True)


def mha_without_output_projection(x, w_qkv, b_qkv, w_o, b_o, H):
    return _mha(x, w_qkv, b_qkv, w_o, b_o, H, use_w_o=False)


def mha_softmax_over_queries(x, w_qkv, b_qkv, w_o, b_o, H):
    return _mha(x, w_qkv, b_qkv, w_o, b_o, H, softmax_axis=-2)


def mha_without_output_bias(x, w_qkv, b_qkv, w_o, b_o, H):
    return _mha(x, w_qkv, b_qkv, w_o, np.zeros_like(b_o), H)


WRONG_ANSWERS = {
    "softmax": [softmax_without_max, softmax_over_first_axis, softmax_not_normalized,
                softmax_global_max_and_sum],
    "scaled_attention": [attention_without_scale, attention_softmax_over_queries,
                         attention_transposed],
    "causal_mask": [causal_mask_transposed, causal_mask_without_diagonal, causal_mask_as_floats,
                    causal_mask_inverted],
    "masked_attention": [masked_attention_inverted_mask, masked_attention_with_minus_inf,
                         masked_attention_uniform_masked_rows, masked_attention_after_softmax],
    "split_heads": [split_heads_plain_reshape, split_heads_interleaved,
                    split_heads_channels_before_tokens],
    "merge_heads": [merge_heads_plain_reshape, merge_heads_interleaved, merge_heads_mean],
    "qkv_projection": [qkv_every_third_column, qkv_without_bias, qkv_blocks_in_reverse,
                       qkv_split_weight_rows],
    "multi_head_attention": [mha_scaled_by_model_width, mha_heads_interleaved,
                             mha_without_output_projection, mha_softmax_over_queries,
                             mha_without_output_bias],
}


@parametrize_wrong(WRONG_ANSWERS)
def test_wrong_answer_fails(name, wrong):
    assert_wrong_answer_fails(name, wrong)


def test_a_missing_scale_is_named():
    def half(q, k, v):
        return 0.5 * exercises.solution("scaled_attention")(q, k, v)

    assert "times the expected one" in assert_wrong_answer_fails("scaled_attention", half)


def test_an_overflowing_softmax_is_caught_by_the_extreme_case():
    """The softmax without the max agrees on small scores; only the +-1000 case catches it,
    as NaN where numbers were expected."""
    message = assert_wrong_answer_fails("softmax", softmax_without_max)
    assert "extreme scores" in message and "NaN" in message


def test_the_off_by_one_causal_mask_names_the_diagonal():
    message = assert_wrong_answer_fails("causal_mask", causal_mask_without_diagonal)
    assert "a single token" in message
    assert "1 of 1 elements differ; the first at index (0, 0)" in message


def test_a_float_mask_is_named():
    message = assert_wrong_answer_fails("causal_mask", causal_mask_as_floats)
    assert "expected bool values, got float64" in message


def test_fully_masked_rows_must_be_zeros_not_nan_or_uniform():
    message = assert_wrong_answer_fails("masked_attention", masked_attention_with_minus_inf)
    assert "fully masked rows" in message and "NaN" in message
    message = assert_wrong_answer_fails("masked_attention", masked_attention_uniform_masked_rows)
    assert "fully masked rows" in message


def test_mixing_tokens_into_heads_is_a_value_error_not_a_shape_error():
    message = assert_wrong_answer_fails("split_heads", split_heads_plain_reshape)
    assert "shape (2, 3, 5, 4) is right" in message


def test_the_model_width_scale_is_caught():
    message = assert_wrong_answer_fails("multi_head_attention", mha_scaled_by_model_width)
    assert "case 1 of" in message


def test_a_check_leaves_the_default_generator_alone():
    """Checking builds nn modules (their weights are then replaced); a notebook's later cells
    must draw the same numbers whether or not the learner ran the check."""
    from minitransformer import backend

    gen = backend.default_rng("cpu")
    before = gen.bit_generator.state
    for name in ("qkv_projection", "multi_head_attention"):
        assert exercises.check(name, exercises.solution(name))
    assert gen.bit_generator.state == before
