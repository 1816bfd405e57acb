"""Exercises of notebooks 01 (self-attention) and 02 (multi-head attention): eq. 1-3.

01: the stable softmax, scaled dot-product attention (eq. 2), the causal mask, and masked
attention (True = may attend, a query with no allowed key gets zeros). 02: splitting the width
into heads and merging them back, the fused QKV projection, and multi-head attention (eq. 3).

Each reference solution is plain NumPy, as a learner would write it; ``expected`` computes
the same thing with the library op or module named in ``library``, in float64.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..autograd import tensor
from ..backend import to_numpy
from ..nn import Linear, MultiHeadAttention
from ._core import Case, default_rng_untouched, exercise


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


# --------------------------------------------------------------------------------------------
# Notebook 01: the softmax, masks and masked attention
# --------------------------------------------------------------------------------------------
def _softmax_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case("3 rows of 4 scores", (rng.standard_normal((3, 4)),)),
        Case("a batch of rows (2, 3, 5)", (rng.standard_normal((2, 3, 5)),)),
        Case("a single score per row (K = 1)", (rng.standard_normal((4, 1)),)),
        Case("equal scores: a uniform row", (np.full((2, 6), 3.0),)),
        Case("extreme scores (+-1000: exp overflows without the max)",
             (1000 * rng.standard_normal((3, 5)),)),
    ]


@exercise(
    "softmax",
    title="the numerically stable softmax exp(x - max) / sum exp(x - max) over the last axis",
    signature="softmax(x) -> array; x (..., K) -> (..., K), each row summing to 1",
    equation="the softmax inside eq. 2",
    library="F.softmax",
    notebook="01_self_attention",
    hint="subtract each row's max (x.max(axis=-1, keepdims=True)) before exp, so exp never "
         "overflows, and divide by the sum over the last axis only, with keepdims=True",
    cases=_softmax_cases,
    expected=lambda x: F.softmax(tensor(x), axis=-1).numpy(),
)
def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))  # every exponent <= 0: no overflow
    return e / e.sum(axis=-1, keepdims=True)  # (..., K), rows sum to 1


@exercise(
    "causal_mask",
    title="the causal mask: query t may attend to key s exactly when s <= t",
    signature="causal_mask(T) -> boolean array (T, T), True = may attend",
    equation="the causal (decoder) mask of eq. 2",
    library="F.causal_mask",
    notebook="01_self_attention",
    hint="row t is the query, column s the key; True = may attend, so True on and below the "
         "diagonal (a token sees itself and the past), False above it; the result must be "
         "boolean, not 0/1 floats",
    cases=lambda rng: [Case("a single token", (1,)), Case("4 tokens", (4,)),
                       Case("7 tokens", (7,)), Case("12 tokens", (12,))],
    expected=lambda T: to_numpy(F.causal_mask(T, device="cpu")),
)
def causal_mask(T):
    t = np.arange(T)
    return t[None, :] <= t[:, None]  # (T, T): key s <= query t


def _masked_attention_cases(rng: np.random.Generator) -> list[Case]:
    def qkv(B, Tq, Tk, d, scale=1.0):
        return (scale * rng.standard_normal((B, Tq, d)), scale * rng.standard_normal((B, Tk, d)),
                rng.standard_normal((B, Tk, d)))

    def causal(T):
        return np.tril(np.ones((T, T), dtype=bool))  # (T, T), broadcasts over the batch

    lengths = np.array([6, 2])
    padding = np.arange(6)[None, None, :] < lengths[:, None, None]  # (B, 1, Tk)
    padded_queries = padding & padding.transpose(0, 2, 1)  # (B, Tq, Tk): rows 2-5 of seq. 2
    return [
        Case("a causal mask (T, T), a batch of 2, 5 tokens", (*qkv(2, 5, 5, 8), causal(5))),
        Case("a padding mask (B, 1, Tk): the second sequence has 2 real keys",
             (*qkv(2, 6, 6, 4), padding)),
        Case("fully masked rows (padded queries): zeros, never NaN",
             (*qkv(2, 6, 6, 4), padded_queries)),
        Case("every key allowed: the same as no mask", (*qkv(2, 3, 7, 8),
                                                        np.ones((2, 3, 7), dtype=bool))),
        Case("a single token that may attend to itself", (*qkv(1, 1, 1, 4), causal(1))),
        Case("large scores (d_k = 64, q and k x 4) with a causal mask",
             (*qkv(1, 6, 6, 64, scale=4.0), causal(6))),
    ]


def _library_masked_attention(q, k, v, mask):
    B, Tq, Tk = q.shape[0], q.shape[1], k.shape[1]
    m = np.broadcast_to(mask, (B, Tq, Tk))[:, None]  # a head axis: (B, 1, Tq, Tk)
    out, _ = F.scaled_dot_product_attention(tensor(q[:, None]), tensor(k[:, None]),
                                            tensor(v[:, None]), mask=m)  # (B, 1, Tq, d_v)
    return out.numpy()[:, 0]


@exercise(
    "masked_attention",
    title="masked attention softmax(Q K^T / sqrt(d_k), keys with mask False excluded) V",
    signature="masked_attention(q, k, v, mask) -> array; q (B, Tq, d_k), k (B, Tk, d_k), "
              "v (B, Tk, d_v), mask boolean broadcastable to (B, Tq, Tk), True = may attend "
              "-> (B, Tq, d_v)",
    equation="eq. 2 with a mask",
    library="F.scaled_dot_product_attention(..., mask=...)",
    notebook="01_self_attention",
    hint="True = may attend: keep the scores where mask is True and put the most negative "
         "finite number (np.finfo(scores.dtype).min, not -inf) where it is False, before the "
         "softmax; then a query with no allowed key at all (mask.any(axis=-1) False) must "
         "get all-zero weights, not a uniform row and not NaN",
    cases=_masked_attention_cases,
    expected=_library_masked_attention,
)
def masked_attention(q, k, v, mask):
    scores = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])  # (B, Tq, Tk)
    scores = np.where(mask, scores, np.finfo(scores.dtype).min)  # masked keys: lowest finite
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)  # (B, Tq, Tk), rows sum to 1
    weights *= np.any(mask, axis=-1, keepdims=True)  # a row with no allowed key: all zeros
    return weights @ v  # (B, Tq, d_v)


# --------------------------------------------------------------------------------------------
# Notebook 02: heads, the fused QKV projection, multi-head attention (eq. 3)
# --------------------------------------------------------------------------------------------
def _split_heads_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case("B = 2, T = 5, D = 12, H = 3 heads of width 4", (rng.standard_normal((2, 5, 12)), 3)),
        Case("H = 4 heads of width 2", (rng.standard_normal((2, 3, 8)), 4)),
        Case("one head (H = 1, hd = D)", (rng.standard_normal((2, 4, 6)), 1)),
        Case("D heads of width 1 (H = D)", (rng.standard_normal((1, 3, 5)), 5)),
        Case("a batch of one, a single token", (rng.standard_normal((1, 1, 8)), 2)),
    ]


def _library_split_heads(x, H):
    B, T, D = x.shape
    # as nn.MultiHeadAttention.forward: (B, T, D) -> (B, T, H, hd) -> (B, H, T, hd)
    return tensor(x).reshape(B, T, H, D // H).transpose(0, 2, 1, 3).numpy()


@exercise(
    "split_heads",
    title="splitting the width into heads, (B, T, D) -> (B, H, T, hd), heads contiguous",
    signature="split_heads(x, H) -> array; x (B, T, D) -> (B, H, T, hd), hd = D / H; head h "
              "is columns h*hd ... (h+1)*hd - 1 of x",
    equation="eq. 3: head h sees its own hd columns",
    library="nn.MultiHeadAttention's layout (reshape (B, T, H, hd), transpose to (B, H, T, hd))",
    notebook="02_multi_head_attention",
    hint="reshape the last axis D into (H, hd) (heads are contiguous blocks of hd columns, "
         "so H comes first), then move the head axis in front of the tokens with a "
         "transpose; reshaping straight to (B, H, T, hd) mixes tokens into heads",
    cases=_split_heads_cases,
    expected=_library_split_heads,
)
def split_heads(x, H):
    B, T, D = x.shape
    hd = D // H
    return x.reshape(B, T, H, hd).transpose(0, 2, 1, 3)  # (B, T, H, hd) -> (B, H, T, hd)


def _merge_heads_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case("B = 2, H = 3 heads, T = 5, hd = 4", (rng.standard_normal((2, 3, 5, 4)),)),
        Case("H = 4 heads of width 2", (rng.standard_normal((2, 4, 3, 2)),)),
        Case("one head (H = 1)", (rng.standard_normal((2, 1, 4, 6)),)),
        Case("heads of width 1", (rng.standard_normal((1, 5, 3, 1)),)),
        Case("a batch of one, a single token", (rng.standard_normal((1, 2, 1, 4)),)),
    ]


def _library_merge_heads(x):
    B, H, T, hd = x.shape
    # as nn.MultiHeadAttention.forward: (B, H, T, hd) -> (B, T, H, hd) -> (B, T, H*hd)
    return tensor(x).transpose(0, 2, 1, 3).reshape(B, T, H * hd).numpy()


@exercise(
    "merge_heads",
    title="merging the heads back side by side, (B, H, T, hd) -> (B, T, D): the Concat of eq. 3",
    signature="merge_heads(x) -> array; x (B, H, T, hd) -> (B, T, D), D = H * hd; head h "
              "fills columns h*hd ... (h+1)*hd - 1",
    equation="eq. 3, Concat(head_1, ..., head_H)",
    library="nn.MultiHeadAttention's layout (transpose to (B, T, H, hd), reshape (B, T, D))",
    notebook="02_multi_head_attention",
    hint="undo split_heads in reverse order: first transpose the head axis back behind the "
         "tokens, (B, T, H, hd), then reshape the last two axes into D; a reshape without "
         "the transpose mixes tokens of different heads",
    cases=_merge_heads_cases,
    expected=_library_merge_heads,
)
def merge_heads(x):
    B, H, T, hd = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * hd)  # (B, T, H, hd) -> (B, T, D)


def _qkv_cases(rng: np.random.Generator) -> list[Case]:
    def draw(B, T, D, bias=True):
        b = rng.standard_normal(3 * D) if bias else np.zeros(3 * D)
        return (rng.standard_normal((B, T, D)), rng.standard_normal((D, 3 * D)) / np.sqrt(D), b)

    return [
        Case("B = 2, T = 5, D = 8", draw(2, 5, 8)),
        Case("a batch of one, a single token, D = 4", draw(1, 1, 4)),
        Case("D = 3 (K, V columns right next to Q's)", draw(2, 4, 3)),
        Case("zero bias (qkv_bias=False)", draw(2, 3, 6, bias=False)),
    ]


def _library_qkv(x, w_qkv, b_qkv):
    D = x.shape[-1]
    with default_rng_untouched():
        qkv = Linear(D, 3 * D).to(dtype=np.float64)  # its weights are replaced just below
    qkv.load_state_dict({"weight": w_qkv, "bias": b_qkv})
    q, k, v = F.split(qkv(tensor(x)), 3, axis=-1)  # (B, T, 3D) -> three (B, T, D)
    return q.numpy(), k.numpy(), v.numpy()


@exercise(
    "qkv_projection",
    title="Q, K, V from one fused projection [Q | K | V] = X W_qkv + b_qkv",
    signature="qkv_projection(x, w_qkv, b_qkv) -> (q, k, v); x (B, T, D), w_qkv (D, 3D) with "
              "columns [W_Q | W_K | W_V], b_qkv (3D,) -> q, k, v (B, T, D) each",
    equation="eq. 1, with the three weights side by side in one (D, 3D) matrix",
    library="nn.MultiHeadAttention.qkv (an nn.Linear(D, 3D)), split in three",
    notebook="02_multi_head_attention",
    hint="one matrix product x @ w_qkv + b_qkv gives (B, T, 3D); Q is its first D columns, K "
         "the next D, V the last D (slice the last axis in three consecutive blocks, not "
         "every third column); do not forget the bias",
    cases=_qkv_cases,
    expected=_library_qkv,
)
def qkv_projection(x, w_qkv, b_qkv):
    D = x.shape[-1]
    qkv = x @ w_qkv + b_qkv  # (B, T, 3D), columns [Q | K | V]
    return qkv[..., :D], qkv[..., D:2 * D], qkv[..., 2 * D:]  # (B, T, D) each


def _mha_cases(rng: np.random.Generator) -> list[Case]:
    def draw(B, T, D, H, scale=1.0):
        return (rng.standard_normal((B, T, D)),
                scale * rng.standard_normal((D, 3 * D)) / np.sqrt(D),
                0.1 * rng.standard_normal(3 * D),
                rng.standard_normal((D, D)) / np.sqrt(D), 0.1 * rng.standard_normal(D), H)

    return [
        Case("B = 2, T = 5, D = 12, H = 3 heads", draw(2, 5, 12, 3)),
        Case("one head (H = 1)", draw(2, 4, 8, 1)),
        Case("a batch of one, a single token", draw(1, 1, 8, 2)),
        Case("heads of width 1 (H = D = 4)", draw(2, 3, 4, 4)),
        Case("large scores (W_qkv x 3), D = 16, H = 4", draw(2, 6, 16, 4, scale=3.0)),
    ]


def _library_mha(x, w_qkv, b_qkv, w_o, b_o, H):
    with default_rng_untouched():
        mha = MultiHeadAttention(x.shape[-1], H).to(dtype=np.float64)  # weights replaced below
    mha.load_state_dict({"qkv.weight": w_qkv, "qkv.bias": b_qkv, "proj.weight": w_o,
                         "proj.bias": b_o})
    return mha(tensor(x)).numpy()


@exercise(
    "multi_head_attention",
    title="multi-head attention Concat(head_1, ..., head_H) W_O + b_O, each head eq. 2 on "
          "its hd columns, scaled by 1/sqrt(hd)",
    signature="multi_head_attention(x, w_qkv, b_qkv, w_o, b_o, H) -> array; x (B, T, D), "
              "w_qkv (D, 3D), b_qkv (3D,), w_o (D, D), b_o (D,) -> (B, T, D)",
    equation="eq. 3",
    library="nn.MultiHeadAttention",
    notebook="02_multi_head_attention",
    hint="project once (x @ w_qkv + b_qkv), cut Q, K, V as consecutive D-wide blocks, split "
         "each into heads (B, H, T, hd), run eq. 2 per head with the scale 1/sqrt(hd) (the "
         "HEAD width, not D), merge the heads back to (B, T, D), then apply W_O and b_O",
    cases=_mha_cases,
    expected=_library_mha,
)
def multi_head_attention(x, w_qkv, b_qkv, w_o, b_o, H):
    B, T, D = x.shape
    hd = D // H
    qkv = x @ w_qkv + b_qkv  # (B, T, 3D), columns [Q | K | V], heads contiguous in each
    qkv = qkv.reshape(B, T, 3, H, hd).transpose(2, 0, 3, 1, 4)  # (3, B, H, T, hd)
    q, k, v = qkv  # (B, H, T, hd) each
    scores = q @ k.swapaxes(-1, -2) / np.sqrt(hd)  # (B, H, T, T)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    heads = weights @ v  # (B, H, T, hd)
    concat = heads.transpose(0, 2, 1, 3).reshape(B, T, D)  # (B, T, H, hd) -> (B, T, D)
    return concat @ w_o + b_o  # (B, T, D)
