"""Weight-decay groups, the coverage check, and DINOv2's layer-wise lr decay."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import nn
from minitransformer.optim import (
    AdamW,
    check_param_groups,
    layer_decay_lr_mult,
    layer_id,
    param_groups,
)


class _Leaf(nn.Module):
    def __init__(self, **shapes):
        super().__init__()
        for name, shape in shapes.items():
            setattr(self, name, nn.Parameter(mt.zeros(*shape)))


class _Block(nn.Module):
    def __init__(self, D):
        super().__init__()
        self.norm1 = _Leaf(weight=(D,), bias=(D,))
        self.attn = nn.Module()
        self.attn.qkv = _Leaf(weight=(D, 3 * D), bias=(3 * D,))
        self.ls1 = _Leaf(gamma=(D,))


class _TinyViT(nn.Module):
    """The timm / DINOv2 parameter names, without the forward pass."""

    def __init__(self, D=4, depth=3):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = _Leaf(weight=(12, D), bias=(D,))
        self.cls_token = nn.Parameter(mt.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(mt.zeros(1, 5, D))
        self.mask_token = nn.Parameter(mt.zeros(1, D))
        self.blocks = nn.ModuleList([_Block(D) for _ in range(depth)])
        self.norm = _Leaf(weight=(D,), bias=(D,))
        self.head = _Leaf(weight=(D, 7), bias=(7,))
        self.logit_scale = nn.Parameter(mt.zeros(()))


def _names_by_decay(groups):
    decay, no_decay = set(), set()
    for g in groups:
        (decay if g["wd_mult"] > 0 else no_decay).update(g["names"])
    return decay, no_decay


def test_default_groups_exclude_biases_norms_tokens():
    model = _TinyViT()
    groups = param_groups(model, weight_decay=0.05)
    decay, no_decay = _names_by_decay(groups)
    assert decay == {"patch_embed.proj.weight", "head.weight",
                     *(f"blocks.{i}.attn.qkv.weight" for i in range(3))}
    assert {"cls_token", "pos_embed", "mask_token", "logit_scale", "norm.weight",
            "blocks.0.ls1.gamma", "blocks.2.attn.qkv.bias", "patch_embed.proj.bias"} <= no_decay
    for g in groups:
        assert g["weight_decay"] == (0.05 if g["wd_mult"] > 0 else 0.0)
        assert g["lr_mult"] == 1.0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_dino_v1_rule_decays_tokens():
    # DINO v1's get_params_groups: only biases and 1-D params are excluded.
    decay, no_decay = _names_by_decay(param_groups(_TinyViT(), 0.04, no_decay=()))
    assert {"cls_token", "pos_embed", "mask_token"} <= decay
    assert "norm.weight" in no_decay and "logit_scale" in no_decay


def test_frozen_parameters_are_left_out():
    model = _TinyViT()
    model.head.weight.requires_grad = False
    names = {n for g in param_groups(model, 0.1) for n in g["names"]}
    assert "head.weight" not in names and "head.bias" in names


def test_layer_decay_matches_dinov2_rule():
    # facebookresearch/dinov2 utils/param_groups.py (get_vit_lr_decay_rate: lr_mult =
    # 0.9^(L + 1 - layer_id), block i has layer_id i + 1, embeddings 0; patch_embed_lr_mult
    # 0.2): block i gets 0.9^(L - i), patch_embed 0.9^(L+1) * 0.2, heads 1.
    L = 3
    assert layer_id("cls_token", L) == 0
    assert layer_id("student.backbone.blocks.2.attn.qkv.weight", L) == 3
    assert layer_id("head.weight", L) == L + 1
    for i in range(L):
        assert layer_decay_lr_mult(f"blocks.{i}.norm1.weight", L, 0.9) == pytest.approx(
            0.9 ** (L - i), rel=1e-15)
    assert layer_decay_lr_mult("patch_embed.proj.weight", L, 0.9, 0.2) == pytest.approx(
        0.9 ** (L + 1) * 0.2, rel=1e-15)
    assert layer_decay_lr_mult("pos_embed", L, 0.9, 0.2) == pytest.approx(0.9 ** (L + 1))
    assert layer_decay_lr_mult("norm.weight", L, 0.9) == 1.0
    assert layer_decay_lr_mult("head.weight", L, 0.9) == 1.0

    groups = param_groups(_TinyViT(depth=L), 0.04, layer_decay=0.9, patch_embed_lr_mult=0.2)
    mult = {n: g["lr_mult"] for g in groups for n in g["names"]}
    assert mult["blocks.0.attn.qkv.weight"] == pytest.approx(0.9**3)
    assert mult["blocks.2.ls1.gamma"] == pytest.approx(0.9)
    assert mult["patch_embed.proj.bias"] == pytest.approx(0.9**4 * 0.2)
    assert mult["head.weight"] == 1.0


def test_check_catches_missing_duplicated_and_foreign():
    model = _TinyViT()
    groups = param_groups(model, 0.1)
    decay = next(g for g in groups if g["wd_mult"] > 0)
    assert decay["names"][-1] == "head.weight"
    dropped = decay["params"].pop()
    with pytest.raises(ValueError, match=r"missing \(1\): head\.weight"):
        check_param_groups(model, groups)
    decay["params"].append(dropped)
    groups[1]["params"].append(model.cls_token)
    with pytest.raises(ValueError, match=r"duplicated \(1\): cls_token \(x2\)"):
        check_param_groups(model, groups)
    groups[1]["params"].pop()
    groups[1]["params"].append(mt.tensor(np.zeros(3), requires_grad=True))
    with pytest.raises(ValueError, match="not trainable parameters of the model"):
        check_param_groups(model, groups)


def test_adamw_on_groups_decays_only_the_decay_group(device):
    model = _TinyViT().to(device)
    xp = mt.backend.as_device(device).xp
    for p in model.parameters():
        p.data[...] = 1.0
        p.grad = xp.zeros(p.shape, dtype=p.dtype)  # Adam step is 0: only decay acts
    opt = AdamW(param_groups(model, weight_decay=0.5), lr=0.1)
    opt.step()
    for name, p in model.named_parameters():
        decayed = name.endswith("weight") and p.ndim == 2
        np.testing.assert_allclose(p.numpy(), 0.95 if decayed else 1.0, rtol=1e-6,
                                   err_msg=name)


def test_groups_cover_our_vision_transformer():
    models = pytest.importorskip("minitransformer.models")
    if not hasattr(models, "VisionTransformer"):
        pytest.skip("minitransformer.models.VisionTransformer is not written yet")
    cfg = models.ViTConfig(img_size=8, patch_size=2, dim=8, depth=2, num_heads=2,
                           num_classes=3, mask_token=True, layer_scale=1e-5)
    model = models.VisionTransformer(cfg)
    groups = param_groups(model, 0.05, layer_decay=0.9, patch_embed_lr_mult=0.2)
    decay, no_decay = _names_by_decay(groups)
    assert decay == {n for n, p in model.named_parameters()
                     if p.ndim == 2 and n not in ("mask_token",)}
    assert {"cls_token", "pos_embed", "mask_token", "blocks.1.ls2.gamma"} <= no_decay
    mult = {n: g["lr_mult"] for g in groups for n in g["names"]}
    assert mult["blocks.1.mlp.fc2.weight"] == pytest.approx(0.9)
    assert mult["patch_embed.proj.weight"] == pytest.approx(0.9**3 * 0.2)
