"""models.config: presets, overrides and validation."""

from __future__ import annotations

import pytest

from minitransformer.models import TextConfig, ViTConfig


def test_vit_presets():
    nano = ViTConfig.preset("vit-nano")
    assert (nano.img_size, nano.patch_size, nano.dim, nano.depth, nano.num_heads) == (
        32, 8, 32, 2, 2)
    assert nano.num_patches == 16 and nano.grid_size == 4
    tiny, small = ViTConfig.preset("vit-tiny"), ViTConfig.preset("vit-small")
    assert (tiny.dim, tiny.depth, tiny.num_heads) == (192, 12, 3)
    assert (small.dim, small.depth, small.num_heads) == (384, 12, 6)
    digits = ViTConfig.preset("vit-digits")
    assert (digits.img_size, digits.patch_size, digits.in_chans, digits.dim, digits.depth,
            digits.num_heads) == (8, 2, 1, 64, 4, 4)
    shapes = ViTConfig.preset("vit-shapes")
    assert (shapes.img_size, shapes.patch_size, shapes.dim, shapes.depth, shapes.num_heads) == (
        32, 4, 96, 4, 4)
    # defaults of the design contract
    assert (nano.in_chans, nano.mlp_ratio, nano.num_classes, nano.qkv_bias, nano.norm_first,
            nano.eps, nano.act, nano.layer_scale) == (3, 4.0, 0, True, True, 1e-6, "gelu", None)
    assert (nano.num_register_tokens, nano.pre_norm, nano.interpolate_offset,
            nano.interpolate_antialias) == (0, False, 0.0, False)
    assert {"vit-nano", "vit-tiny", "vit-small", "vit-digits", "vit-shapes"} <= set(
        ViTConfig.presets())


def test_text_presets_and_overrides():
    nano = TextConfig.preset("text-nano")
    assert nano.dim == 32 and nano.causal is False and nano.pool == "cls"
    tiny = TextConfig.preset("text-tiny", causal=True, pool="eot")
    assert (tiny.dim, tiny.depth, tiny.num_heads, tiny.causal, tiny.pool) == (
        192, 12, 3, True, "eot")
    assert TextConfig.preset("text-small").dim == 384
    assert ViTConfig.preset("vit-nano", num_classes=10).num_classes == 10
    assert ViTConfig.preset("vit-nano").replace(depth=1).depth == 1


def test_config_errors():
    with pytest.raises(ValueError, match="unknown preset 'vit-huge'"):
        ViTConfig.preset("vit-huge")
    with pytest.raises(ValueError, match="num_heads=5 does not divide dim=32"):
        ViTConfig.preset("vit-nano", num_heads=5)
    with pytest.raises(ValueError, match="img_size=30 is not divisible by patch_size=8"):
        ViTConfig.preset("vit-nano", img_size=30)
    with pytest.raises(ValueError, match="num_register_tokens must be >= 0, got -1"):
        ViTConfig.preset("vit-nano", num_register_tokens=-1)
    with pytest.raises(ValueError, match=r"interpolate_offset must be in \[0, 1\), got 1.5"):
        ViTConfig.preset("vit-nano", interpolate_offset=1.5)
    with pytest.raises(ValueError, match="unknown act"):
        ViTConfig.preset("vit-nano", act="swish")
    with pytest.raises(ValueError, match="pool must be one of"):
        TextConfig.preset("text-nano", pool="max")
    with pytest.raises(ValueError, match="num_heads=3 does not divide dim=32"):
        TextConfig.preset("text-nano", num_heads=3)
    with pytest.raises(ValueError, match=r"eot_id=200 is outside \[0, 128\)"):
        TextConfig.preset("text-nano", eot_id=200)
