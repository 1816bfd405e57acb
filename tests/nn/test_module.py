"""Module mechanics on real layers: state_dict round trip, load errors, to(), modes."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import models, nn


def nano(seed, **kw):
    mt.manual_seed(seed)
    return models.VisionTransformer(models.ViTConfig.preset("vit-nano", **kw))


def test_state_dict_round_trip(device, rng):
    a, b = nano(0, num_classes=3).to(device), nano(1, num_classes=3).to(device)
    a.eval(), b.eval()
    x = mt.tensor(rng.standard_normal((2, 3, 32, 32)).astype(np.float32), device=device)
    assert not np.allclose(a(x).numpy(), b(x).numpy())
    sd = a.state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    result = b.load_state_dict(sd)
    assert result == {"missing": [], "unexpected": []}
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb
        np.testing.assert_array_equal(va, vb)
    # the state dict is a copy: changing it does not change the model
    sd["cls_token"] += 1.0
    assert not np.array_equal(a.state_dict()["cls_token"], sd["cls_token"])


def test_load_errors_list_every_problem():
    m = nano(0)
    sd = m.state_dict()
    missing = dict(sd)
    del missing["blocks.1.mlp.fc2.bias"]
    with pytest.raises(nn.StateDictError, match=r"missing keys \(1\): blocks\.1\.mlp\.fc2\.bias"):
        m.load_state_dict(missing)
    extra = dict(sd, **{"head.weight": np.zeros((32, 10), np.float32)})
    with pytest.raises(nn.StateDictError, match=r"unexpected keys \(1\): head\.weight"):
        m.load_state_dict(extra)
    wrong = dict(sd, pos_embed=np.zeros((1, 5, 32), np.float32))
    with pytest.raises(nn.StateDictError,
                       match=r"pos_embed: checkpoint \(1, 5, 32\) vs model \(1, 17, 32\)"):
        m.load_state_dict(wrong)
    # all three at once are all listed
    both = dict(missing, **{"head.weight": np.zeros(3)}, pos_embed=np.zeros((1, 5, 32)))
    with pytest.raises(nn.StateDictError) as err:
        m.load_state_dict(both)
    msg = str(err.value)
    assert "missing keys" in msg and "unexpected keys" in msg and "shape mismatches" in msg


def test_load_non_strict_reports_and_loads_the_rest():
    a, b = nano(0), nano(1)
    sd = a.state_dict()
    del sd["norm.weight"]
    sd["extra"] = np.zeros(2)
    out = b.load_state_dict(sd, strict=False)
    assert out == {"missing": ["norm.weight"], "unexpected": ["extra"]}
    np.testing.assert_array_equal(b.state_dict()["cls_token"], a.state_dict()["cls_token"])


def test_to_float64_and_device(device, rng):
    m = nano(0, num_classes=2).to(device, dtype=np.float64)
    assert all(p.dtype == np.float64 and p.device == device for p in m.parameters())
    x = mt.tensor(rng.standard_normal((1, 3, 32, 32)), device=device)
    assert m(x).dtype == np.float64
    m.to(dtype=np.float32)
    assert all(p.dtype == np.float32 for p in m.parameters())


def test_train_eval_and_zero_grad(rng):
    m = nano(0, num_classes=2)
    m.eval()
    assert all(not mod.training for mod in m.modules())
    m.train()
    assert all(mod.training for mod in m.modules())
    x = mt.tensor(rng.standard_normal((1, 3, 32, 32)).astype(np.float32))
    m(x).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_timm_layout_names():
    """design §3: the parameter names of the timm / DINOv2 ViT layout."""
    m = nano(0, num_classes=4, mask_token=True)
    keys = list(m.state_dict())
    assert keys[:4] == ["cls_token", "pos_embed", "mask_token", "patch_embed.proj.weight"]
    expected = {"cls_token", "pos_embed", "mask_token", "patch_embed.proj.weight",
                "patch_embed.proj.bias", "norm.weight", "norm.bias", "head.weight", "head.bias"}
    for i in range(2):
        for n in ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias",
                  "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
                  "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"):
            expected.add(f"blocks.{i}.{n}")
    assert set(keys) == expected
