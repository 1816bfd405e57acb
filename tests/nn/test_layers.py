"""Linear, Embedding, LayerNorm, Dropout, DropPath, Mlp, LayerScale: forward against NumPy,
gradchecks, train/eval, errors."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import nn

from .reference import ACT, gradcheck_module, layer_norm, params


def f64(module, device):
    return module.to(device, dtype=np.float64)


def test_linear_forward_init_and_grad(device, rng):
    mt.manual_seed(0)
    lin = nn.Linear(40, 300)
    w = lin.weight.numpy()
    assert w.shape == (40, 300) and lin.bias.shape == (300,)
    # trunc_normal(0.02) cut at ±2 absolute (timm): N(0, 0.02^2) in practice, values beyond
    # ±2 std kept; the sample std of 12000 draws is within 5 * 0.02 / sqrt(2 * 12000) of 0.02
    assert abs(w.std() - 0.02) < 5 * 0.02 / np.sqrt(2 * w.size) and np.abs(w).max() > 0.04
    np.testing.assert_array_equal(lin.bias.numpy(), 0.0)
    small = f64(nn.Linear(3, 2), device)
    small.bias.data = small.bias.data + 0.5
    x = rng.standard_normal((4, 5, 3))
    p = params(small)
    np.testing.assert_allclose(small(mt.tensor(x, device=device)).numpy(),
                               x @ p["weight"] + p["bias"], rtol=1e-12)
    xt = mt.tensor(x, requires_grad=True, device=device)
    assert gradcheck_module(small, small, [xt])
    assert "bias" not in nn.Linear(3, 2, bias=False).state_dict()


def test_embedding_lookup_and_accumulating_grad(device, rng):
    emb = f64(nn.Embedding(5, 3), device)
    ids = np.array([[0, 4, 4], [2, 4, 0]])
    y = emb(ids)
    np.testing.assert_array_equal(y.numpy(), emb.weight.numpy()[ids])
    gy = rng.standard_normal((2, 3, 3))
    y.backward(mt.tensor(gy, device=device).data)
    expected = np.zeros((5, 3))
    np.add.at(expected, ids, gy)  # id 4 appears three times, 0 twice
    np.testing.assert_allclose(mt.to_numpy(emb.weight.grad), expected, rtol=1e-12)
    assert gradcheck_module(lambda: emb(ids), emb, [])


def test_embedding_errors():
    emb = nn.Embedding(5, 3)
    with pytest.raises(ValueError, match=r"ids must be in \[0, 5\), got values in \[0, 7\]"):
        emb(np.array([[0, 7]]))
    with pytest.raises(TypeError, match="integers"):
        emb(np.array([[0.0, 1.0]]))


def test_layer_norm(device, rng):
    ln = f64(nn.LayerNorm(6, eps=1e-6), device)
    ln.weight.data = mt.tensor(rng.standard_normal(6), device=device).data
    ln.bias.data = mt.tensor(rng.standard_normal(6), device=device).data
    x = rng.standard_normal((3, 4, 6)) * 5 + 2
    np.testing.assert_allclose(ln(mt.tensor(x, device=device)).numpy(),
                               layer_norm(x, ln.weight.numpy(), ln.bias.numpy(), 1e-6),
                               rtol=1e-10, atol=1e-12)
    assert gradcheck_module(ln, ln, [mt.tensor(x, requires_grad=True, device=device)])
    assert nn.LayerNorm(4).eps == 1e-5


@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "quick_gelu", "relu"])
def test_mlp(device, rng, act):
    mlp = f64(nn.Mlp(4, 7, act=act), device)
    for p in mlp.parameters():  # non-zero biases
        p.data = mt.tensor(rng.standard_normal(p.shape) * 0.5, device=device).data
    x = rng.standard_normal((2, 3, 4))
    p = params(mlp)
    ref = ACT[act](x @ p["fc1.weight"] + p["fc1.bias"]) @ p["fc2.weight"] + p["fc2.bias"]
    np.testing.assert_allclose(mlp(mt.tensor(x, device=device)).numpy(), ref, rtol=1e-9,
                               atol=1e-12)
    x = x + 0.05  # keep relu's kink away from the finite-difference steps
    assert gradcheck_module(mlp, mlp, [mt.tensor(x, requires_grad=True, device=device)])
    assert list(p) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]


def test_mlp_bad_activation():
    with pytest.raises(ValueError, match="unknown act 'tanh'"):
        nn.Mlp(4, 8, act="tanh")


def test_layer_scale(device, rng):
    ls = nn.LayerScale(5, init_values=0.1)
    np.testing.assert_array_equal(ls.gamma.numpy(), np.float32(0.1))
    ls = f64(ls, device)
    nn.init.constant_(ls.gamma, 0.1)
    x = rng.standard_normal((2, 3, 5))
    np.testing.assert_allclose(ls(mt.tensor(x, device=device)).numpy(), x * 0.1, rtol=1e-12)
    assert gradcheck_module(ls, ls, [mt.tensor(x, requires_grad=True, device=device)])


def test_dropout_train_eval(device, rng):
    d = nn.Dropout(0.25, rng=np.random.default_rng(0))
    x = mt.tensor(np.ones((200, 100)), device=device)
    y = d(x).numpy()
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    d.eval()
    np.testing.assert_array_equal(d(x).numpy(), x.numpy())
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\), got 1.0"):
        nn.Dropout(1.0)


def test_drop_path_is_per_sample(device, rng):
    dp = nn.DropPath(0.4, rng=np.random.default_rng(0))
    x = rng.standard_normal((1000, 3, 4)) + 3.0
    y = dp(mt.tensor(x, device=device)).numpy()
    dropped = np.all(y == 0, axis=(1, 2))
    kept = np.all(np.isclose(y, x / 0.6, rtol=1e-12), axis=(1, 2))
    assert np.all(dropped | kept)  # whole samples, never parts of one
    assert abs(kept.mean() - 0.6) < 0.05
    dp.eval()
    np.testing.assert_array_equal(dp(mt.tensor(x, device=device)).numpy(), x)
    # the gradient flows through the kept samples with the same 1/(1-p) scale
    dp.train()
    dp.rng = np.random.default_rng(5)
    xt = mt.tensor(x[:8], requires_grad=True, device=device)
    dp(xt).sum().backward()
    scale = mt.to_numpy(xt.grad)[:, 0, 0]
    assert set(np.round(scale, 12)) <= {0.0, round(1 / 0.6, 12)}


def test_train_eval_propagates():
    mlp = nn.Mlp(4, 8, drop=0.5)
    mlp.eval()
    assert not mlp.training and not mlp.drop1.training and not mlp.drop2.training
    mlp.train()
    assert mlp.drop1.training
    x = mt.tensor(np.ones((4, 4), dtype=np.float32))
    assert not np.array_equal(mlp(x).numpy(), mlp(x).numpy())
    mlp.eval()
    np.testing.assert_array_equal(mlp(x).numpy(), mlp(x).numpy())
