"""nn.TransformerBlock: post-norm (the seed) and pre-norm (ViT) against their formulas."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer import nn

from .reference import block, gradcheck_module, params


def make_block(device, seed=0, **kw):
    mt.manual_seed(seed)
    return nn.TransformerBlock(**kw).to(device, dtype=np.float64)


def randomize_norms(b, rng):
    """LayerNorm starts at (1, 0); give it random affine parameters so the test sees them."""
    for name, p in b.named_parameters():
        if name.startswith(("norm", "ls")):
            p.data = mt.tensor(rng.standard_normal(p.shape) * 0.5 + 1.0, device=p.device).data


@given(norm_first=st.booleans(), act=st.sampled_from(["gelu", "gelu_tanh", "quick_gelu", "relu"]),
       layer_scale=st.sampled_from([None, 0.3]), causal=st.booleans(),
       T=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_block_equals_formula(device, norm_first, act, layer_scale, causal, T, seed):
    rng = np.random.default_rng(seed)
    eps = 1e-6 if norm_first else 1e-5  # ViT (timm) vs the seed / torch defaults
    b = make_block(device, seed, dim=8, num_heads=2, mlp_ratio=2.0, norm_first=norm_first,
                   eps=eps, act=act, layer_scale=layer_scale)
    randomize_norms(b, rng)
    x = rng.standard_normal((2, T, 8))
    mask = np.tril(np.ones((T, T), dtype=bool)) if causal else None
    y = b(mt.tensor(x, device=device), mask=mask).numpy()
    ref = block(x, params(b), 2, norm_first, eps, act, mask)
    np.testing.assert_allclose(y, ref, rtol=1e-9, atol=1e-11)


def test_post_norm_is_the_seed_order(device, rng):
    """norm_first=False: attention, add, LayerNorm, FFN, add, LayerNorm — each output row is
    normalised (mean 0, variance 1 before the final affine, which starts at (1, 0))."""
    b = make_block(device, dim=8, num_heads=2, norm_first=False, eps=1e-5, act="relu")
    y = b(mt.tensor(rng.standard_normal((2, 4, 8)) * 3 + 1, device=device)).numpy()
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(-1), 1.0, rtol=1e-4)


def test_layer_scale_zero_makes_pre_norm_block_identity(device, rng):
    """LayerScale (Touvron et al. 2021, CaiT; timm layers/layer_scale.py, LayerScale) with
    gamma = 0 multiplies both residual branches by 0, so the pre-norm block is the identity."""
    b = make_block(device, dim=8, num_heads=2, layer_scale=0.0)
    x = rng.standard_normal((2, 5, 8))
    np.testing.assert_array_equal(b(mt.tensor(x, device=device)).numpy(), x)


def test_permutation_equivariance(device, rng):
    for norm_first in (True, False):
        b = make_block(device, dim=8, num_heads=2, norm_first=norm_first)
        x = rng.standard_normal((2, 6, 8))
        perm = rng.permutation(6)
        y = b(mt.tensor(x, device=device)).numpy()
        y_perm = b(mt.tensor(x[:, perm], device=device)).numpy()
        np.testing.assert_allclose(y_perm, y[:, perm], rtol=1e-10, atol=1e-12)


def test_return_attention_is_on_norm1_of_x(device, rng):
    b = make_block(device, dim=8, num_heads=2)
    x = rng.standard_normal((1, 4, 8))
    y, probs = b(mt.tensor(x, device=device), return_attention=True)
    p = params(b)
    ln = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
    from .reference import mha_eq3

    _, ref = mha_eq3(ln, p, 2, prefix="attn.")
    np.testing.assert_allclose(probs.numpy(), ref, rtol=1e-9)
    np.testing.assert_array_equal(y.numpy(), b(mt.tensor(x, device=device)).numpy())


@pytest.mark.parametrize("norm_first", [True, False])
def test_gradcheck_block(device, rng, norm_first):
    b = make_block(device, dim=4, num_heads=2, mlp_ratio=2.0, norm_first=norm_first,
                   layer_scale=0.5)
    randomize_norms(b, rng)
    x = mt.tensor(rng.standard_normal((2, 3, 4)), requires_grad=True, device=device)
    mask = np.tril(np.ones((3, 3), dtype=bool))
    assert gradcheck_module(lambda x: b(x, mask=mask), b, [x])


def test_drop_path_train_vs_eval(device, rng):
    b = make_block(device, dim=8, num_heads=2, drop_path=0.5)
    x = mt.tensor(rng.standard_normal((16, 3, 8)), device=device)
    b.eval()
    ref = block(x.numpy(), params(b), 2, True, 1e-6, "gelu")
    np.testing.assert_allclose(b(x).numpy(), ref, rtol=1e-9, atol=1e-11)
    b.train()
    outs = [b(x).numpy() for _ in range(3)]
    assert not np.allclose(outs[0], outs[1])
    assert not np.allclose(outs[0], ref)


def test_names_and_shapes():
    b = nn.TransformerBlock(8, 2, layer_scale=1e-5)
    shapes = {k: v.shape for k, v in b.state_dict().items()}
    assert shapes == {
        "norm1.weight": (8,), "norm1.bias": (8,), "attn.qkv.weight": (8, 24),
        "attn.qkv.bias": (24,), "attn.proj.weight": (8, 8), "attn.proj.bias": (8,),
        "ls1.gamma": (8,), "norm2.weight": (8,), "norm2.bias": (8,),
        "mlp.fc1.weight": (8, 32), "mlp.fc1.bias": (32,), "mlp.fc2.weight": (32, 8),
        "mlp.fc2.bias": (8,), "ls2.gamma": (8,),
    }
    np.testing.assert_allclose(b.state_dict()["ls1.gamma"], 1e-5)
    assert "ls1.gamma" not in nn.TransformerBlock(8, 2).state_dict()


def test_bad_inputs():
    with pytest.raises(ValueError, match="num_heads=3 does not divide dim=8"):
        nn.TransformerBlock(8, 3)
    with pytest.raises(ValueError, match="unknown act 'swish'"):
        nn.TransformerBlock(8, 2, act="swish")
