"""models.TransformerEncoder: the stack equals its blocks applied in turn, then the norm."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import models
from tests.nn.reference import block, gradcheck_module, layer_norm, params


def test_encoder_equals_blocks_then_norm(device, rng):
    mt.manual_seed(0)
    enc = models.TransformerEncoder(8, 3, 2, mlp_ratio=2.0).to(device, dtype=np.float64)
    x = rng.standard_normal((2, 5, 8))
    mask = np.tril(np.ones((5, 5), dtype=bool))
    y = enc(mt.tensor(x, device=device), mask=mask).numpy()
    p = params(enc)
    ref = x
    for i in range(3):
        ref = block(ref, p, 2, True, 1e-6, "gelu", mask, prefix=f"blocks.{i}.")
    ref = layer_norm(ref, p["norm.weight"], p["norm.bias"], 1e-6)
    np.testing.assert_allclose(y, ref, rtol=1e-9, atol=1e-11)


def test_post_norm_encoder_without_final_norm(device, rng):
    mt.manual_seed(0)
    enc = models.TransformerEncoder(8, 2, 4, norm_first=False, eps=1e-5, act="relu",
                                    final_norm=False).to(device, dtype=np.float64)
    assert not any(k.startswith("norm.") for k in enc.state_dict())
    x = rng.standard_normal((1, 4, 8))
    p = params(enc)
    ref = block(block(x, p, 4, False, 1e-5, "relu", prefix="blocks.0."), p, 4, False, 1e-5,
                "relu", prefix="blocks.1.")
    np.testing.assert_allclose(enc(mt.tensor(x, device=device)).numpy(), ref, rtol=1e-9,
                               atol=1e-11)


def test_drop_path_rates():
    assert models.drop_path_rates(0.3, 4) == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert models.drop_path_rates(0.3, 3, uniform=True) == [0.3, 0.3, 0.3]
    enc = models.TransformerEncoder(8, 3, 2, drop_path=0.2)
    assert [b.drop_path.p for b in enc.blocks] == pytest.approx([0.0, 0.1, 0.2])


def test_gradcheck_encoder(device, rng):
    mt.manual_seed(0)
    enc = models.TransformerEncoder(4, 2, 2, mlp_ratio=1.0).to(device, dtype=np.float64)
    x = mt.tensor(rng.standard_normal((1, 3, 4)), requires_grad=True, device=device)
    assert gradcheck_module(enc, enc, [x], max_elements=16)


def test_bad_heads():
    with pytest.raises(ValueError, match="num_heads=3 does not divide dim=8"):
        models.TransformerEncoder(8, 2, 3)
