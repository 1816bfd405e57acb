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


WRONG_ANSWERS = {
    "scaled_attention": [attention_without_scale, attention_softmax_over_queries,
                         attention_transposed],
}


@parametrize_wrong(WRONG_ANSWERS)
def test_wrong_answer_fails(name, wrong):
    assert_wrong_answer_fails(name, wrong)


def test_a_missing_scale_is_named():
    def half(q, k, v):
        return 0.5 * exercises.solution("scaled_attention")(q, k, v)

    assert "times the expected one" in assert_wrong_answer_fails("scaled_attention", half)
