"""nn.MultiHeadAttention: seed equations 1-3 against literal references, properties, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer import nn

from .reference import gradcheck_module, mha_eq3, mha_loops, params, softmax_rows


def make_mha(dim, heads, device, qkv_bias=True, seed=0):
    mt.manual_seed(seed)
    return nn.MultiHeadAttention(dim, heads, qkv_bias=qkv_bias).to(device, dtype=np.float64)


def run(m, x, device, mask=None):
    out, probs = m(mt.tensor(x, device=device), mask=mask, return_attention=True)
    return out.numpy(), probs.numpy()


@st.composite
def attention_case(draw):
    """(B, T, H, hd, mask kind, seed): small shapes, with or without masks."""
    B = draw(st.integers(1, 2))
    T = draw(st.integers(1, 5))
    H = draw(st.integers(1, 3))
    hd = draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["none", "causal", "padding", "random"]))
    return B, T, H, hd, kind, draw(st.integers(0, 2**16))


def make_mask(kind, B, H, T, rng):
    if kind == "none":
        return None
    if kind == "causal":
        return np.tril(np.ones((T, T), dtype=bool))  # (T, T)
    if kind == "padding":
        lengths = rng.integers(0, T + 1, size=B)  # a length of 0 masks every key of that row
        return (np.arange(T)[None, :] < lengths[:, None])[:, None, None, :]  # (B, 1, 1, T)
    return rng.random((B, H, T, T)) < 0.6  # (B, H, T, T), some rows fully masked


@given(case=attention_case())
def test_mha_equals_explicit_double_loop(device, case):
    B, T, H, hd, kind, seed = case
    rng = np.random.default_rng(seed)
    D = H * hd
    m = make_mha(D, H, device, seed=seed)
    x = rng.standard_normal((B, T, D))
    mask = make_mask(kind, B, H, T, rng)
    out, _ = run(m, x, device, mask)
    np.testing.assert_allclose(out, mha_loops(x, params(m), H, mask), rtol=1e-9, atol=1e-12)


@given(case=attention_case())
def test_mha_equals_equation_3_per_head(device, case):
    B, T, H, hd, kind, seed = case
    rng = np.random.default_rng(seed)
    D = H * hd
    m = make_mha(D, H, device, qkv_bias=bool(seed % 2), seed=seed)
    x = rng.standard_normal((B, T, D))
    mask = make_mask(kind, B, H, T, rng)
    out, probs = run(m, x, device, mask)
    ref_out, ref_probs = mha_eq3(x, params(m), H, mask)
    np.testing.assert_allclose(out, ref_out, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(probs, ref_probs, rtol=1e-9, atol=1e-12)


def test_scale_is_per_head_dim_not_model_dim(device, rng):
    """The scale is 1/sqrt(hd), the per-head width (Vaswani et al. 2017, sec. 3.2.1-3.2.2;
    timm layers/attention.py, Attention.scale = head_dim ** -0.5): a reference using sqrt(D)
    instead of sqrt(hd) must not match."""
    m = make_mha(8, 4, device)
    x = rng.standard_normal((2, 5, 8))
    _, probs = run(m, x, device)
    p = params(m)
    qkv = x @ p["qkv.weight"] + p["qkv.bias"]
    q = qkv[..., :8].reshape(2, 5, 4, 2).transpose(0, 2, 1, 3)  # (B, H, T, hd)
    k = qkv[..., 8:16].reshape(2, 5, 4, 2).transpose(0, 2, 1, 3)
    wrong = softmax_rows(q @ k.transpose(0, 1, 3, 2) / math.sqrt(8))
    right = softmax_rows(q @ k.transpose(0, 1, 3, 2) / math.sqrt(2))
    np.testing.assert_allclose(probs, right, rtol=1e-10)
    assert not np.allclose(probs, wrong, rtol=1e-3)


def test_one_head_is_single_head_attention(device, rng):
    """H = 1: softmax(X W_Q (X W_K)^T / sqrt(D)) X W_V W_O + b_O, with d_k = D."""
    D = 6
    m = make_mha(D, 1, device)
    x = rng.standard_normal((3, 4, D))
    out, probs = run(m, x, device)
    p = params(m)
    W, b = p["qkv.weight"], p["qkv.bias"]
    Q, K, V = x @ W[:, :D] + b[:D], x @ W[:, D:2 * D] + b[D:2 * D], x @ W[:, 2 * D:] + b[2 * D:]
    A = softmax_rows(Q @ K.transpose(0, 2, 1) / math.sqrt(D))
    np.testing.assert_allclose(probs[:, 0], A, rtol=1e-10)
    np.testing.assert_allclose(out, A @ V @ p["proj.weight"] + p["proj.bias"], rtol=1e-9,
                               atol=1e-12)


def test_rows_sum_to_one_and_causal_row_zero(device, rng):
    """A softmax row sums to 1; with a causal mask (Vaswani et al. 2017, sec. 3.2.3) query 0
    has key 0 as its only allowed key, so it gets weight 1 there, and masked probabilities
    are exactly 0 (exp(-inf))."""
    m = make_mha(8, 2, device)
    x = rng.standard_normal((2, 6, 8))
    causal = np.tril(np.ones((6, 6), dtype=bool))
    _, probs = run(m, x, device, causal)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(probs[:, :, 0, 0], 1.0)
    assert np.all(probs[:, :, ~causal] == 0.0)


def test_permutation_equivariance(device, rng):
    """Without positions, permuting the tokens permutes the outputs: each output is a
    function of its own query and of the set of keys and values (the reason Vaswani et al.
    2017, sec. 3.5, add positional encodings)."""
    m = make_mha(8, 2, device)
    x = rng.standard_normal((2, 7, 8))
    perm = rng.permutation(7)
    out, _ = run(m, x, device)
    out_perm, _ = run(m, x[:, perm], device)
    np.testing.assert_allclose(out_perm, out[:, perm], rtol=1e-10, atol=1e-12)


def test_causal_mask_leaks_nothing_from_the_future(device, rng):
    T = 6
    m = make_mha(8, 2, device)
    causal = np.tril(np.ones((T, T), dtype=bool))
    x = rng.standard_normal((2, T, 8))
    out, _ = run(m, x, device, causal)
    for t in range(T - 1):
        x2 = x.copy()
        x2[:, t + 1:] += rng.standard_normal(x2[:, t + 1:].shape) * 10.0
        out2, _ = run(m, x2, device, causal)
        np.testing.assert_array_equal(out2[:, :t + 1], out[:, :t + 1])
        assert not np.allclose(out2[:, t + 1:], out[:, t + 1:])


def test_masked_keys_do_not_affect_output(device, rng):
    T = 6
    m = make_mha(8, 2, device)
    lengths = np.array([4, 2])
    mask = (np.arange(T)[None, :] < lengths[:, None])[:, None, None, :]  # (B, 1, 1, T)
    x = rng.standard_normal((2, T, 8))
    out, probs = run(m, x, device, mask)
    x2 = x.copy()
    x2[0, 4:] = rng.standard_normal((2, 8)) * 100.0
    x2[1, 2:] = rng.standard_normal((4, 8)) * 100.0
    out2, _ = run(m, x2, device, mask)
    np.testing.assert_array_equal(out2[0, :4], out[0, :4])
    np.testing.assert_array_equal(out2[1, :2], out[1, :2])
    assert np.all(probs[0, :, :, 4:] == 0.0) and np.all(probs[1, :, :, 2:] == 0.0)


def test_fully_masked_row_gives_bias_only_not_nan(device, rng):
    m = make_mha(4, 2, device)
    mask = np.zeros((1, 1, 3, 3), dtype=bool)
    mask[..., 0, :] = True  # only query 0 may attend anywhere
    out, probs = run(m, rng.standard_normal((1, 3, 4)), device, mask)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(probs[:, :, 1:], 0.0)
    np.testing.assert_allclose(out[0, 1:], np.broadcast_to(params(m)["proj.bias"], (2, 4)))


def test_gradcheck_mha(device, rng):
    m = make_mha(6, 2, device)
    x = mt.tensor(rng.standard_normal((2, 4, 6)), requires_grad=True, device=device)
    mask = rng.random((2, 1, 4, 4)) < 0.7
    assert gradcheck_module(lambda x: m(x, mask=mask, return_attention=True), m, [x])


def test_attention_dropout_train_vs_eval(device, rng):
    mt.manual_seed(0)
    m = nn.MultiHeadAttention(8, 2, attn_drop=0.5).to(device, dtype=np.float64)
    x = mt.tensor(rng.standard_normal((2, 5, 8)), device=device)
    m.eval()
    np.testing.assert_array_equal(m(x).numpy(), m(x).numpy())
    ref, _ = mha_eq3(x.numpy(), params(m), 2)
    np.testing.assert_allclose(m(x).numpy(), ref, rtol=1e-9, atol=1e-12)
    m.train()
    a, b = m(x).numpy(), m(x).numpy()
    assert not np.allclose(a, b) and not np.allclose(a, ref)


def test_qkv_layout_and_names():
    m = nn.MultiHeadAttention(12, 3)
    shapes = {k: v.shape for k, v in m.state_dict().items()}
    assert shapes == {"qkv.weight": (12, 36), "qkv.bias": (36,), "proj.weight": (12, 12),
                      "proj.bias": (12,)}
    assert list(nn.MultiHeadAttention(12, 3, qkv_bias=False).state_dict()) == [
        "qkv.weight", "proj.weight", "proj.bias"]


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"num_heads=5 does not divide dim=12"):
        nn.MultiHeadAttention(12, 5)
    m = nn.MultiHeadAttention(8, 2)
    x = mt.tensor(np.zeros((2, 5, 8), dtype=np.float32))
    with pytest.raises(ValueError, match=r"mask of shape \(4, 4\).*\(2, 2, 5, 5\)"):
        m(x, mask=np.ones((4, 4), dtype=bool))
    with pytest.raises(ValueError, match=r"mask of shape \(3, 1, 5, 5\)"):
        m(x, mask=np.ones((3, 1, 5, 5), dtype=bool))
    with pytest.raises(TypeError, match="boolean"):
        m(x, mask=np.ones((5, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(B, T, 8\), got \(2, 5, 6\)"):
        m(mt.tensor(np.zeros((2, 5, 6), dtype=np.float32)))
