"""Scaled dot-product attention, fused and composed: against an explicit double loop over query
and key positions in float64 (with and without masks), gradcheck through both outputs (out and
probs), masking semantics, the scale, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minitransformer import functional as F
from minitransformer.testing import gradcheck
from tests.functional.helpers import assert_close, host, leaf
from tests.strategies import generic_arrays


def _ref_attention(q, k, v, mask=None, scale=None):
    """out[b, i] = sum_j P[b, i, j] v[b, j], P[b, i, j] = e^{s_ij} / sum_{allowed j'} e^{s_ij'},
    s_ij = scale <q_i, k_j>, one query and one key at a time; no allowed key -> zeros."""
    hd = q.shape[-1]
    scale = 1.0 / math.sqrt(hd) if scale is None else scale
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    Tq, Tk = q.shape[-2], k.shape[-2]
    Q = np.broadcast_to(q, batch + q.shape[-2:])
    K = np.broadcast_to(k, batch + k.shape[-2:])
    V = np.broadcast_to(v, batch + v.shape[-2:])
    M = np.ones(batch + (Tq, Tk), bool) if mask is None else np.broadcast_to(
        mask, batch + (Tq, Tk))
    out = np.zeros(batch + (Tq, v.shape[-1]))
    probs = np.zeros(batch + (Tq, Tk))
    for b in np.ndindex(*batch):
        for i in range(Tq):
            allowed = [j for j in range(Tk) if M[b + (i, j)]]
            if not allowed:
                continue
            s = {j: scale * sum(Q[b + (i, d)] * K[b + (j, d)] for d in range(hd))
                 for j in allowed}
            m = max(s.values())
            w = {j: math.exp(s[j] - m) for j in allowed}
            Z = sum(w.values())
            for j in allowed:
                probs[b + (i, j)] = w[j] / Z
                out[b + (i,)] += probs[b + (i, j)] * V[b + (j,)]
    return out, probs


@st.composite
def _attention_inputs(draw):
    B, H = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    Tq, Tk, hd = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    q = draw(generic_arrays((B, H, Tq, hd)))
    k = draw(generic_arrays((B, H, Tk, hd)))
    v = draw(generic_arrays((B, H, Tk, hd)))
    kind = draw(st.sampled_from(["none", "causal", "random", "padding", "per-head"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "none":
        mask = None
    elif kind == "causal":
        mask = np.tril(np.ones((Tq, Tk), bool))
    elif kind == "random":
        mask = rng.random((Tq, Tk)) < 0.6  # fully masked rows happen
    elif kind == "padding":
        mask = rng.random((B, 1, 1, Tk)) < 0.7
    else:
        mask = rng.random((B, H, Tq, Tk)) < 0.6
    return q, k, v, mask


@given(inputs=_attention_inputs())
def test_attention_matches_the_double_loop(device, fused, inputs):
    q, k, v, mask = inputs
    out, probs = F.scaled_dot_product_attention(leaf(q, device), leaf(k, device),
                                                leaf(v, device), mask=mask)
    ref_out, ref_probs = _ref_attention(q, k, v, mask)
    assert_close(out, ref_out)
    assert_close(probs, ref_probs)
    assert not np.isnan(host(out)).any()


@given(inputs=_attention_inputs())
def test_attention_gradcheck_through_out_and_probs(device, fused, inputs):
    q, k, v, mask = inputs
    # gradcheck draws a random upstream gradient for *both* outputs: probs carries one too
    assert gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask=mask),
                     [leaf(q, device), leaf(k, device), leaf(v, device)])


def test_a_fully_masked_row_gives_zeros_and_zero_gradients(device, fused):
    rng = np.random.default_rng(0)
    q, k, v = (leaf(rng.standard_normal((1, 1, 3, 2)), device) for _ in range(3))
    mask = np.array([[True, False, False], [False, False, False], [True, True, True]])
    out, probs = F.scaled_dot_product_attention(q, k, v, mask=mask)
    assert_close(out[0, 0, 1], [0.0, 0.0])
    assert_close(probs[0, 0, 1], [0.0, 0.0, 0.0])
    assert_close(probs[0, 0, 0], [1.0, 0.0, 0.0])  # one allowed key: weight exactly 1
    (out.sum() + (probs * probs).sum()).backward()
    for t in (q, k, v):
        assert np.isfinite(host(t.grad)).all()
    assert_close(q.grad[0, 0, 1], [0.0, 0.0])  # the masked query learns nothing


def test_masked_keys_do_not_affect_the_output(device, fused):
    rng = np.random.default_rng(1)
    q = rng.standard_normal((2, 2, 4, 3))
    k, v = rng.standard_normal((2, 2, 5, 3)), rng.standard_normal((2, 2, 5, 3))
    mask = np.array([True, True, False, True, False])  # keys 2 and 4 are padding
    out, _ = F.scaled_dot_product_attention(leaf(q, device), leaf(k, device), leaf(v, device),
                                            mask=mask)
    k2, v2 = k.copy(), v.copy()
    k2[..., [2, 4], :] = rng.standard_normal((2, 2, 2, 3)) * 1e3
    v2[..., [2, 4], :] = rng.standard_normal((2, 2, 2, 3)) * 1e3
    kt, vt = leaf(k2, device), leaf(v2, device)
    out2, _ = F.scaled_dot_product_attention(leaf(q, device), kt, vt, mask=mask)
    assert_close(out2, host(out), rtol=1e-12, atol=1e-12)
    out2.backward(rng.standard_normal(out2.shape))
    assert_close(host(kt.grad)[..., [2, 4], :], np.zeros((2, 2, 2, 3)))
    assert_close(host(vt.grad)[..., [2, 4], :], np.zeros((2, 2, 2, 3)))


def test_causal_rows_sum_to_one_and_row_zero_sees_only_key_zero(device, fused):
    rng = np.random.default_rng(2)
    q, k, v = (leaf(rng.standard_normal((2, 3, 5, 4)), device) for _ in range(3))
    _, probs = F.scaled_dot_product_attention(q, k, v, mask=F.causal_mask(5, device))
    p = host(probs)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(p[..., 0, :], np.broadcast_to([1.0, 0, 0, 0, 0], (2, 3, 5)))
    assert (p[..., np.triu_indices(5, 1)[0], np.triu_indices(5, 1)[1]] == 0).all()


def test_scale_is_one_over_sqrt_of_the_head_dim(device, fused):
    # single head, q = k: the logit of query i against key j is <q_i, q_j> / sqrt(hd)
    rng = np.random.default_rng(3)
    hd = 16
    x = rng.standard_normal((1, 1, 2, hd))
    _, probs = F.scaled_dot_product_attention(leaf(x, device), leaf(x, device), leaf(x, device))
    p = host(probs)[0, 0]
    logits = x[0, 0] @ x[0, 0].T / math.sqrt(hd)
    np.testing.assert_allclose(np.log(p[0, 0] / p[0, 1]), logits[0, 0] - logits[0, 1],
                               rtol=1e-10)
    _, probs_s = F.scaled_dot_product_attention(leaf(x, device), leaf(x, device),
                                                leaf(x, device), scale=0.5)
    assert_close(probs_s, _ref_attention(x, x, x, scale=0.5)[1])


def test_batch_axes_broadcast_one_kv_head_for_many_query_heads(device, fused):
    rng = np.random.default_rng(4)
    q = rng.standard_normal((2, 3, 2, 2))
    k, v = rng.standard_normal((2, 1, 3, 2)), rng.standard_normal((2, 1, 3, 2))
    out, probs = F.scaled_dot_product_attention(leaf(q, device), leaf(k, device),
                                                leaf(v, device))
    ref_out, ref_probs = _ref_attention(q, k, v)
    assert_close(out, ref_out)
    assert_close(probs, ref_probs)
    assert gradcheck(F.scaled_dot_product_attention,
                     [leaf(q, device), leaf(k, device), leaf(v, device)])


def test_permuting_keys_and_values_together_changes_nothing(device, fused):
    rng = np.random.default_rng(5)
    q, k, v = rng.standard_normal((1, 2, 4, 3)), rng.standard_normal((1, 2, 6, 3)), \
        rng.standard_normal((1, 2, 6, 3))
    perm = rng.permutation(6)
    out, _ = F.scaled_dot_product_attention(leaf(q, device), leaf(k, device), leaf(v, device))
    out_p, _ = F.scaled_dot_product_attention(leaf(q, device), leaf(k[..., perm, :], device),
                                              leaf(v[..., perm, :], device))
    assert_close(out_p, host(out), rtol=1e-12, atol=1e-12)
    qperm = rng.permutation(4)
    out_q, _ = F.scaled_dot_product_attention(leaf(q[..., qperm, :], device), leaf(k, device),
                                              leaf(v, device))
    assert_close(out_q, host(out)[..., qperm, :], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_masked_attention_keeps_the_dtype_and_stays_finite(device, fused, dtype):
    rng = np.random.default_rng(6)
    q, k, v = (leaf(rng.standard_normal((1, 2, 3, 4)).astype(dtype), device) for _ in range(3))
    mask = np.array([[True, False, False], [False, False, False], [True, True, False]])
    out, probs = F.scaled_dot_product_attention(q, k, v, mask=mask)
    (out.sum() + probs.sum()).backward()
    assert out.dtype == probs.dtype == q.grad.dtype == dtype
    for a in (out, probs, q.grad, k.grad, v.grad):
        assert np.isfinite(host(a)).all()


def test_attention_bad_input(device, fused):
    q = leaf(np.zeros((1, 2, 3, 4)), device)
    kv = leaf(np.zeros((1, 2, 5, 4)), device)
    name = "scaled_dot_product_attention"
    with pytest.raises(TypeError, match=f"{name}: mask must be a boolean array"):
        F.scaled_dot_product_attention(q, kv, kv, mask=np.ones((3, 5)))
    with pytest.raises(ValueError, match=rf"{name}: mask of shape \(3, 4\) does not broadcast "
                                         rf"to the scores \(1, 2, 3, 5\)"):
        F.scaled_dot_product_attention(q, kv, kv, mask=np.ones((3, 4), bool))
    with pytest.raises(ValueError, match=rf"{name}: mask of shape \(2, 1, 3, 5\)"):
        F.scaled_dot_product_attention(q, kv, kv, mask=np.ones((2, 1, 3, 5), bool))
    with pytest.raises(ValueError, match=rf"{name}: q \(1, 2, 3, 4\) and k \(1, 2, 5, 3\)"):
        F.scaled_dot_product_attention(q, leaf(np.zeros((1, 2, 5, 3)), device), kv)
    with pytest.raises(ValueError, match=f"{name}: q, k, v need the same rank"):
        F.scaled_dot_product_attention(q, leaf(np.zeros((2, 5, 4)), device), kv)
    with pytest.raises(ValueError, match=f"{name}: the batch axes"):
        F.scaled_dot_product_attention(q, leaf(np.zeros((1, 3, 5, 4)), device), kv)


def test_causal_and_padding_masks(device):
    np.testing.assert_array_equal(host(F.causal_mask(3, device)),
                                  [[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    m = host(F.padding_mask(np.array([2, 3]), 4, device))
    assert m.shape == (2, 1, 1, 4) and m.dtype == bool
    np.testing.assert_array_equal(m[:, 0, 0], [[1, 1, 0, 0], [1, 1, 1, 0]])
