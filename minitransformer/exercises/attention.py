"""Exercises of notebooks 01 (self-attention) and 02 (multi-head attention): eq. 1-3.

Each reference solution is plain NumPy, as a learner would write it; ``expected`` computes
the same thing with the library op named in ``library``.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..autograd import tensor
from ._core import Case, exercise


def _attention_cases(rng: np.random.Generator) -> list[Case]:
    def qkv(B, Tq, Tk, d):
        return (rng.standard_normal((B, Tq, d)), rng.standard_normal((B, Tk, d)),
                rng.standard_normal((B, Tk, d)))

    return [
        Case("a batch of 2, 5 tokens, d_k = 8", qkv(2, 5, 5, 8)),
        Case("a batch of one, a single token", qkv(1, 1, 1, 4)),
        Case("3 queries attending to 7 keys", qkv(2, 3, 7, 16)),
        Case("large scores (d_k = 64, inputs x 4)", tuple(4 * a for a in qkv(1, 6, 6, 64))),
    ]


def _library_attention(q, k, v):
    out, _ = F.scaled_dot_product_attention(tensor(q[:, None]), tensor(k[:, None]),
                                            tensor(v[:, None]))  # a head axis: (B, 1, T, d)
    return out.numpy()[:, 0]


@exercise(
    "scaled_attention",
    title="scaled dot-product attention softmax(Q K^T / sqrt(d_k)) V",
    signature="scaled_attention(q, k, v) -> array; q (B, Tq, d_k), k (B, Tk, d_k), "
              "v (B, Tk, d_v) -> (B, Tq, d_v)",
    equation="eq. 2",
    library="F.scaled_dot_product_attention",
    notebook="01_self_attention",
    hint="divide the scores Q K^T by sqrt(d_k) (the last axis of q), take the softmax over "
         "the keys (the last axis of the scores) after subtracting each row's max, then "
         "multiply by V",
    cases=_attention_cases,
    expected=_library_attention,
)
def scaled_attention(q, k, v):
    scores = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])  # (B, Tq, Tk)
    scores = scores - scores.max(axis=-1, keepdims=True)  # exp cannot overflow
    weights = np.exp(scores)
    weights /= weights.sum(axis=-1, keepdims=True)  # each query's row sums to 1
    return weights @ v  # (B, Tq, d_v)
