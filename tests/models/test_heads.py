"""Heads: DINOHead (weight-normed prototypes, optional BatchNorm), MLM, MIM and projections."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer import nn
from minitransformer.models.heads import (
    BatchNorm1d,
    DINOHead,
    MIMPixelHead,
    MIMTokenHead,
    MLMHead,
    ProjectionHead,
    WeightNormLinear,
    cancel_last_layer_gradients,
)
from tests.nn.reference import gelu, gradcheck_module, layer_norm, params


def _np_bn_train(x, w, b, eps=1e-5):
    mu = x.mean(0)
    var = x.var(0)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _np_dino_head(x, p, nlayers, use_bn):
    """DINO's DINOHead.forward written out from its layers."""
    i = 0
    h = x
    for layer in range(nlayers):
        h = h @ p[f"mlp.{i}.weight"] + p[f"mlp.{i}.bias"]
        i += 1
        if layer == nlayers - 1:
            break
        if use_bn:
            h = _np_bn_train(h, p[f"mlp.{i}.weight"], p[f"mlp.{i}.bias"])
            i += 1
        h = gelu(h)
        i += 1
    z = h / np.maximum(np.linalg.norm(h, axis=-1, keepdims=True), 1e-12)
    v, g = p["last_layer.weight_v"], p["last_layer.weight_g"]
    W = g * v / np.linalg.norm(v, axis=0, keepdims=True)
    return z @ W


# ----------------------------------------------------------------------------------- DINOHead
@pytest.mark.parametrize("nlayers, use_bn", [(3, False), (3, True), (2, False), (1, False)])
def test_dino_head_names_and_forward(device, rng, nlayers, use_bn):
    head = DINOHead(6, 11, hidden_dim=8, bottleneck_dim=5, nlayers=nlayers, use_bn=use_bn)
    head.to(device, np.float64)
    names = [n for n, _ in head.named_parameters()]
    if nlayers == 3 and not use_bn:
        assert names == ["mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias",
                         "mlp.4.weight", "mlp.4.bias", "last_layer.weight_g",
                         "last_layer.weight_v"]
    if use_bn:
        assert "mlp.1.running_mean" in head.state_dict() and "mlp.6.weight" in names
    if nlayers == 1:
        assert names[:2] == ["mlp.weight", "mlp.bias"]
    p = params(head)
    assert p["last_layer.weight_g"].shape == (1, 11) and p["last_layer.weight_v"].shape == (5, 11)
    x = rng.standard_normal((7, 6))
    got = head(mt.tensor(x, device=device)).numpy()
    if nlayers == 1:
        z = x @ p["mlp.weight"] + p["mlp.bias"]
        z = z / np.linalg.norm(z, axis=-1, keepdims=True)
        v = p["last_layer.weight_v"]
        expected = z @ (v / np.linalg.norm(v, axis=0, keepdims=True))
    else:
        expected = _np_dino_head(x, p, nlayers, use_bn)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_dino_head_gradcheck(device, rng):
    head = DINOHead(3, 4, hidden_dim=5, bottleneck_dim=3, use_bn=True,
                    norm_last_layer=False).to(device, np.float64)
    x = mt.tensor(rng.standard_normal((4, 3)), device=device, requires_grad=True)
    assert gradcheck_module(head, head, [x])


def test_dino_head_unit_prototypes_and_frozen_norm(device, rng):
    """facebookresearch/dino vision_transformer.py (DINOHead: L2-normalised bottleneck,
    weight_norm last layer with weight_g filled with 1 and frozen) and utils.py
    (cancel_gradients_last_layer): with g = 1 frozen every logit is a cosine in [-1, 1];
    every prototype keeps unit norm after gradient steps on v; cancel_last_layer_gradients
    freezes last_layer for the first epoch."""
    head = DINOHead(4, 9, hidden_dim=8, bottleneck_dim=3).to(device, np.float64)
    assert not head.last_layer.weight_g.requires_grad
    x = mt.tensor(rng.standard_normal((16, 4)) * 10, device=device)
    for _ in range(3):
        head.zero_grad()
        out = head(x)
        assert np.abs(out.numpy()).max() <= 1.0 + 1e-12
        (out * mt.tensor(rng.standard_normal(out.shape), device=device)).sum().backward()
        assert head.last_layer.weight_g.grad is None
        for p in head.parameters():
            if p.grad is not None:
                p.data = p.data - 0.5 * p.grad  # an SGD step
        W = head.last_layer.weight().numpy()
        np.testing.assert_allclose(np.linalg.norm(W, axis=0), 1.0, rtol=1e-12)
    before = {k: v.copy() for k, v in head.state_dict().items()}
    head.zero_grad()
    head(x).sum().backward()
    cancel_last_layer_gradients(head)
    for p in head.parameters():
        if p.grad is not None:
            p.data = p.data - 0.5 * p.grad
    after = head.state_dict()
    for k in before:
        if "last_layer" in k:
            np.testing.assert_array_equal(after[k], before[k])
    assert not np.array_equal(after["mlp.0.weight"], before["mlp.0.weight"])


def test_weight_norm_linear_scales_with_g(rng):
    layer = WeightNormLinear(3, 4).to(dtype=np.float64)
    layer.weight_g.data = np.array([[1.0, 2.0, 0.5, 3.0]])
    W = layer.weight().numpy()
    np.testing.assert_allclose(np.linalg.norm(W, axis=0), [1.0, 2.0, 0.5, 3.0], rtol=1e-12)
    x = rng.standard_normal((2, 3))
    np.testing.assert_allclose(layer(mt.tensor(x)).numpy(), x @ W, rtol=1e-12)


# -------------------------------------------------------------------------------- BatchNorm1d
def test_batchnorm_train_eval_and_running_stats(device, rng):
    bn = BatchNorm1d(3).to(device, np.float64)
    bn.weight.data = bn.weight.data * 2.0
    x1 = rng.standard_normal((5, 3)) * 2 + 1
    got = bn(mt.tensor(x1, device=device)).numpy()
    np.testing.assert_allclose(got, _np_bn_train(x1, 2.0, 0.0), rtol=1e-12)
    rm, rv = mt.to_numpy(bn.running_mean), mt.to_numpy(bn.running_var)
    np.testing.assert_allclose(rm, 0.1 * x1.mean(0), rtol=1e-12)
    np.testing.assert_allclose(rv, 0.9 + 0.1 * x1.var(0, ddof=1), rtol=1e-12)  # unbiased
    assert int(mt.to_numpy(bn.num_batches_tracked)) == 1
    bn.eval()
    x2 = rng.standard_normal((4, 3))
    np.testing.assert_allclose(bn(mt.tensor(x2, device=device)).numpy(),
                               (x2 - rm) / np.sqrt(rv + 1e-5) * 2.0, rtol=1e-12)
    bn.train()
    x3 = mt.tensor(rng.standard_normal((2, 4, 3)), device=device)  # stats over (B, N)
    np.testing.assert_allclose(bn(x3).numpy().reshape(8, 3),
                               _np_bn_train(x3.numpy().reshape(8, 3), 2.0, 0.0), rtol=1e-12)


def test_batchnorm_gradcheck_and_errors(device, rng):
    bn = BatchNorm1d(3).to(device, np.float64)
    x = mt.tensor(rng.standard_normal((4, 3)), device=device, requires_grad=True)
    assert gradcheck_module(bn, bn, [x])
    with pytest.raises(ValueError, match="more than 1 value"):
        bn(mt.tensor(np.ones((1, 3)), device=device))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        bn(mt.tensor(np.ones((4, 2)), device=device))


# ------------------------------------------------------------------------------------ MLMHead
@given(B=st.integers(1, 2), T=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_mlm_head_tied_to_embedding(device, B, T, seed):
    rng = np.random.default_rng(seed)
    D, V = 4, 7
    emb = nn.Embedding(V, D).to(device, np.float64)
    head = MLMHead(D, V, emb.weight).to(device, np.float64)
    head.bias.data = mt.backend.to_device(rng.standard_normal(V), device)
    assert sorted(n for n, _ in head.named_parameters()) == [
        "bias", "dense.bias", "dense.weight", "norm.bias", "norm.weight"]  # no embedding
    p = params(head)
    E = emb.weight.numpy()
    h = rng.standard_normal((B, T, D))
    x = layer_norm(gelu(h @ p["dense.weight"] + p["dense.bias"]), p["norm.weight"],
                   p["norm.bias"], 1e-12)
    got = head(mt.tensor(h, device=device)).numpy()
    np.testing.assert_allclose(got, x @ E.T + p["bias"], rtol=1e-10, atol=1e-12)


def test_mlm_head_gradient_reaches_the_shared_embedding(device, rng):
    emb = nn.Embedding(6, 4).to(device, np.float64)
    head = MLMHead(4, 6, emb.weight).to(device, np.float64)
    h = mt.tensor(rng.standard_normal((3, 4)), device=device, requires_grad=True)
    assert gradcheck_module(lambda a: head(a), head, [h])
    head(h).sum().backward()
    assert emb.weight.grad is not None  # the tied output layer trains the input embedding
    with pytest.raises(ValueError, match="embedding_weight"):
        MLMHead(4, 7, emb.weight)


# -------------------------------------------------------------------- MIM heads, projection
def test_small_heads_shapes_and_names(device, rng):
    x = mt.tensor(rng.standard_normal((2, 5, 8)), device=device)
    pix = MIMPixelHead(8, patch_size=2, in_chans=3).to(device)
    assert pix(x).shape == (2, 5, 12) and list(pix.state_dict()) == ["proj.weight", "proj.bias"]
    tok = MIMTokenHead(8, 16).to(device)
    assert tok(x).shape == (2, 5, 16) and "lm_head.weight" in tok.state_dict()
    proj = ProjectionHead(8, 3).to(device, np.float64)
    assert list(proj.state_dict()) == ["weight"]
    xs = rng.standard_normal((4, 8))
    np.testing.assert_allclose(proj(mt.tensor(xs, device=device)).numpy(),
                               xs @ proj.weight.numpy(), rtol=1e-12)
