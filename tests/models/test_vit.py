"""models.VisionTransformer: the forward pass written out in NumPy, resolutions, masks,
attention maps, errors, gradcheck."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import models, nn
from tests.nn.reference import block, gradcheck_module, layer_norm, mha_eq3, params
from tests.nn.test_positional import resample_2d_reference


def make_vit(device, seed=0, dtype=np.float64, **kw):
    mt.manual_seed(seed)
    cfg = models.ViTConfig(**{**dict(img_size=8, patch_size=4, dim=8, depth=2, num_heads=2,
                                     in_chans=2, mlp_ratio=2.0), **kw})
    m = models.VisionTransformer(cfg).to(device, dtype=dtype)
    m.eval()
    return m


def patchify(x, P):
    """(B, C, H, W) -> (B, N, C*P*P): raster patch order, (c, i, j) inside a patch."""
    B, C, H, W = x.shape
    out = np.zeros((B, (H // P) * (W // P), C * P * P))
    for r in range(H // P):
        for c in range(W // P):
            out[:, r * (W // P) + c] = x[:, :, r * P:(r + 1) * P, c * P:(c + 1) * P].reshape(B, -1)
    return out


def vit_reference(m, x, masks=None, return_last_attention=False):
    """Tokens = [CLS; patches W_E + b_E (masked -> mask_token)] + pos, registers inserted
    after CLS with no position (DINOv2), norm_pre (CLIP ln_pre), blocks, final norm.
    Returns (prenorm, normed), or the last block's attention probabilities."""
    cfg, p = m.cfg, params(m)
    P, D = cfg.patch_size, cfg.dim
    t = patchify(x, P) @ p["patch_embed.proj.weight"] + p["patch_embed.proj.bias"]
    if masks is not None:
        t = np.where(masks[:, :, None], p["mask_token"], t)
    B = x.shape[0]
    t = np.concatenate([np.broadcast_to(p["cls_token"], (B, 1, D)), t], axis=1)
    pos = p["pos_embed"]
    gh, gw = x.shape[2] // P, x.shape[3] // P
    g = cfg.img_size // P
    if (gh, gw) != (g, g):
        grid = resample_2d_reference(pos[0, 1:].reshape(g, g, D), (gh, gw),
                                     cfg.interpolate_offset, cfg.interpolate_antialias)
        grid = grid.reshape(1, -1, D)
        pos = np.concatenate([pos[:, :1], grid], axis=1)
    t = t + pos
    R = cfg.num_register_tokens
    if R:
        regs = np.broadcast_to(p["register_tokens"], (B, R, D))
        t = np.concatenate([t[:, :1], regs, t[:, 1:]], axis=1)  # CLS, registers, patches
    if cfg.pre_norm:
        t = layer_norm(t, p["norm_pre.weight"], p["norm_pre.bias"], cfg.eps)
    for i in range(cfg.depth):
        if return_last_attention and i == cfg.depth - 1:
            h = layer_norm(t, p[f"blocks.{i}.norm1.weight"], p[f"blocks.{i}.norm1.bias"],
                           cfg.eps)
            return mha_eq3(h, p, cfg.num_heads, prefix=f"blocks.{i}.attn.")[1]
        t = block(t, p, cfg.num_heads, cfg.norm_first, cfg.eps, cfg.act,
                  prefix=f"blocks.{i}.")
    return t, layer_norm(t, p["norm.weight"], p["norm.bias"], cfg.eps)


def randomize(m, rng):
    """Random values everywhere (cls_token starts at ~1e-6 and mask_token at 0)."""
    for _, p in m.named_parameters():
        p.data = mt.tensor(rng.standard_normal(p.shape) * 0.5, device=p.device).data


@pytest.mark.parametrize("size", [(8, 8), (12, 8), (4, 16)])
def test_forward_features_equals_reference_at_several_resolutions(device, rng, size):
    m = make_vit(device, num_classes=3)
    randomize(m, rng)
    x = rng.standard_normal((2, 2) + size)
    f = m.forward_features(mt.tensor(x, device=device))
    prenorm, normed = vit_reference(m, x)
    np.testing.assert_allclose(f["x_prenorm"].numpy(), prenorm, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(f["x_norm_clstoken"].numpy(), normed[:, 0], rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(f["x_norm_patchtokens"].numpy(), normed[:, 1:], rtol=1e-9,
                               atol=1e-11)
    p = params(m)
    np.testing.assert_allclose(m(mt.tensor(x, device=device)).numpy(),
                               normed[:, 0] @ p["head.weight"] + p["head.bias"], rtol=1e-9,
                               atol=1e-11)


@pytest.mark.parametrize("offset,antialias", [(0.1, False), (0.0, True), (0.1, True)])
def test_resampling_modes_equal_reference(device, rng, offset, antialias):
    """DINO v1 / DINOv2 (scale factor with the 0.1 offset), DINOv2 with registers and timm
    (by size, antialias): the config picks the mode; each changes the features at another
    resolution and none at the native one."""
    m = make_vit(device, img_size=16, num_register_tokens=1, interpolate_offset=offset,
                 interpolate_antialias=antialias)
    randomize(m, rng)
    default = make_vit(device, img_size=16, num_register_tokens=1)
    default.load_state_dict(m.state_dict())
    for size in ((12, 20), (16, 16), (24, 8)):
        x = rng.standard_normal((2, 2) + size)
        f = m.forward_features(mt.tensor(x, device=device))
        prenorm, normed = vit_reference(m, x)
        np.testing.assert_allclose(f["x_prenorm"].numpy(), prenorm, rtol=1e-9, atol=1e-11)
        other = default.forward_features(mt.tensor(x, device=device))["x_prenorm"].numpy()
        if size == (16, 16):
            np.testing.assert_array_equal(other, f["x_prenorm"].numpy())
        else:
            assert np.abs(other - prenorm).max() > 1e-3


def test_runs_at_two_resolutions_and_pos_interpolation(device, rng):
    """As facebookresearch/dino vision_transformer.py (interpolate_pos_encoding): identity at
    the native grid; a smaller crop gets (1, 1 + n, D) with the CLS slot untouched."""
    m = make_vit(device, dtype=np.float32, img_size=32, patch_size=8, dim=16, in_chans=3)
    assert m.interpolate_pos_encoding(4, 4) is m.pos_embed
    small = m.interpolate_pos_encoding(2, 2)
    assert small.shape == (1, 5, 16)
    np.testing.assert_array_equal(small.numpy()[:, 0], m.pos_embed.numpy()[:, 0])
    for side in (32, 16):
        x = mt.tensor(rng.standard_normal((2, 3, side, side)).astype(np.float32), device=device)
        f = m.forward_features(x)
        assert f["x_norm_patchtokens"].shape == (2, (side // 8) ** 2, 16)
        assert m(x).shape == (2, 16)  # no head: the CLS feature


def test_mask_token_replaces_patches_before_positions(device, rng):
    m = make_vit(device, mask_token=True)
    randomize(m, rng)
    x = rng.standard_normal((2, 2, 8, 8))
    masks = np.array([[True, False, False, True], [False, False, False, False]])
    f = m.forward_features(mt.tensor(x, device=device), masks=masks)
    prenorm, _ = vit_reference(m, x, masks)
    np.testing.assert_allclose(f["x_prenorm"].numpy(), prenorm, rtol=1e-9, atol=1e-11)
    # the masked image's prepared tokens are mask_token + the patch's own position
    tok = m.prepare_tokens(mt.tensor(x, device=device), masks).numpy()
    p = params(m)
    np.testing.assert_allclose(tok[0, 1], p["mask_token"][0] + p["pos_embed"][0, 1], rtol=1e-12)
    np.testing.assert_allclose(tok[0, 4], p["mask_token"][0] + p["pos_embed"][0, 4], rtol=1e-12)
    # all-False masks change nothing; the mask token then gets no gradient
    none = m.forward_features(mt.tensor(x, device=device), masks=np.zeros((2, 4), bool))
    np.testing.assert_array_equal(none["x_prenorm"].numpy(),
                                  m.forward_features(mt.tensor(x, device=device))[
                                      "x_prenorm"].numpy())
    none["x_norm_clstoken"].sum().backward()
    np.testing.assert_array_equal(mt.to_numpy(m.mask_token.grad), 0.0)


def test_get_last_selfattention_is_last_block_on_norm1(device, rng):
    m = make_vit(device, depth=3)
    randomize(m, rng)
    x = rng.standard_normal((2, 2, 8, 8))
    att = m.get_last_selfattention(mt.tensor(x, device=device)).numpy()
    assert att.shape == (2, 2, 5, 5)
    np.testing.assert_allclose(att.sum(-1), 1.0, rtol=1e-12)
    # rebuild the input of the last block, then its attention on norm1(x)
    p, cfg = params(m), m.cfg
    t = m.prepare_tokens(mt.tensor(x, device=device)).numpy()
    for i in range(2):
        t = block(t, p, 2, True, cfg.eps, "gelu", prefix=f"blocks.{i}.")
    h = layer_norm(t, p["blocks.2.norm1.weight"], p["blocks.2.norm1.bias"], cfg.eps)
    _, ref = mha_eq3(h, p, 2, prefix="blocks.2.attn.")
    np.testing.assert_allclose(att, ref, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("R,pre_norm", [(0, True), (3, False), (2, True)])
@pytest.mark.parametrize("size", [(8, 8), (12, 4)])
def test_registers_and_norm_pre_equal_reference(device, rng, R, pre_norm, size):
    """DINOv2 registers (dinov2 models/vision_transformer.py prepare_tokens_with_masks) and
    CLIP's ln_pre (open_clip transformer.py VisionTransformer): every output against the
    NumPy forward, at the native grid and at a resampled one, with masked patches."""
    m = make_vit(device, num_register_tokens=R, pre_norm=pre_norm, mask_token=True,
                 num_classes=3)
    randomize(m, rng)
    assert m.num_prefix_tokens == 1 + R
    B, N = 2, (size[0] // 4) * (size[1] // 4)
    x = rng.standard_normal((B, 2) + size)
    masks = rng.random((B, N)) < 0.4
    xt = mt.tensor(x, device=device)
    for mk in (None, masks):
        f = m.forward_features(xt, masks=mk)
        prenorm, normed = vit_reference(m, x, mk)
        assert f["x_prenorm"].shape == (B, 1 + R + N, 8)
        np.testing.assert_allclose(f["x_prenorm"].numpy(), prenorm, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(f["x_norm_clstoken"].numpy(), normed[:, 0], rtol=1e-9,
                                   atol=1e-11)
        assert f["x_norm_regtokens"].shape == (B, R, 8)  # (B, 0, D) without registers
        np.testing.assert_allclose(f["x_norm_regtokens"].numpy(), normed[:, 1:1 + R],
                                   rtol=1e-9, atol=1e-11)
        assert f["x_norm_patchtokens"].shape == (B, N, 8)
        np.testing.assert_allclose(f["x_norm_patchtokens"].numpy(), normed[:, 1 + R:],
                                   rtol=1e-9, atol=1e-11)
    p, normed = params(m), vit_reference(m, x)[1]  # no masks
    np.testing.assert_allclose(m(xt).numpy(), normed[:, 0] @ p["head.weight"] + p["head.bias"],
                               rtol=1e-9, atol=1e-11)
    # attention over all 1 + R + N tokens, as DINOv2's code gives it
    att = m.get_last_selfattention(xt).numpy()
    assert att.shape == (B, 2, 1 + R + N, 1 + R + N)
    np.testing.assert_allclose(att, vit_reference(m, x, return_last_attention=True),
                               rtol=1e-8, atol=1e-12)
    # intermediate layers hold all tokens; the last one normed is forward_features' output
    outs = m.get_intermediate_layers(xt, n=2)
    assert [o.shape for o in outs] == [(B, 1 + R + N, 8)] * 2
    np.testing.assert_allclose(outs[-1].numpy(), normed, rtol=1e-9, atol=1e-11)


def test_registers_get_no_position_and_follow_cls(device, rng):
    """Prepared tokens: row 0 is CLS + pos[0], rows 1..R the registers themselves (no position,
    not masked), then each patch with its own position."""
    m = make_vit(device, num_register_tokens=2, mask_token=True)
    randomize(m, rng)
    x = rng.standard_normal((1, 2, 8, 8))
    masks = np.array([[True, False, False, False]])
    tok = m.prepare_tokens(mt.tensor(x, device=device), masks).numpy()
    p = params(m)
    assert tok.shape == (1, 1 + 2 + 4, 8)
    np.testing.assert_allclose(tok[0, 0], p["cls_token"][0, 0] + p["pos_embed"][0, 0],
                               rtol=1e-12)
    np.testing.assert_array_equal(tok[0, 1:3], p["register_tokens"][0])
    np.testing.assert_allclose(tok[0, 3], p["mask_token"][0] + p["pos_embed"][0, 1],
                               rtol=1e-12)
    # the registers get a gradient (they take part in attention), the position table has
    # no row for them
    m.forward_features(mt.tensor(x, device=device))["x_norm_clstoken"].sum().backward()
    assert np.abs(mt.to_numpy(m.register_tokens.grad)).max() > 0
    assert m.pos_embed.shape == (1, 5, 8)


def test_registers_and_norm_pre_parameters_and_init():
    mt.manual_seed(0)
    m = models.VisionTransformer(models.ViTConfig.preset("vit-small", depth=1,
                                                         num_register_tokens=4, pre_norm=True))
    sd = m.state_dict()
    assert sd["register_tokens"].shape == (1, 4, 384) and sd["pos_embed"].shape == (1, 197, 384)
    assert 0 < sd["register_tokens"].std() < 1e-5  # normal(1e-6), DINOv2 init_weights
    np.testing.assert_array_equal(sd["norm_pre.weight"], 1.0)
    np.testing.assert_array_equal(sd["norm_pre.bias"], 0.0)
    assert m.norm_pre.eps == m.norm.eps == 1e-6
    plain = models.VisionTransformer(models.ViTConfig.preset("vit-nano")).state_dict()
    assert "register_tokens" not in plain and not any(k.startswith("norm_pre") for k in plain)
    assert "num_register_tokens=4" in repr(m)


def test_get_intermediate_layers(device, rng):
    m = make_vit(device, depth=3)
    x = mt.tensor(rng.standard_normal((1, 2, 8, 8)), device=device)
    outs = m.get_intermediate_layers(x, n=2)
    assert len(outs) == 2 and outs[0].shape == (1, 5, 8)
    f = m.forward_features(x)
    np.testing.assert_allclose(outs[-1].numpy()[:, 0], f["x_norm_clstoken"].numpy(), rtol=1e-12)
    first = m.get_intermediate_layers(x, n=[0], norm=False)[0]
    np.testing.assert_allclose(first.numpy(), m.blocks[0](m.prepare_tokens(x)).numpy(),
                               rtol=1e-12)
    with pytest.raises(ValueError, match=r"block indices \[5\]"):
        m.get_intermediate_layers(x, n=[5])


def test_init_and_parameter_shapes():
    mt.manual_seed(0)
    m = models.VisionTransformer(models.ViTConfig.preset("vit-small", depth=1, num_classes=7,
                                                         mask_token=True, layer_scale=1e-5))
    sd = m.state_dict()
    assert sd["cls_token"].shape == (1, 1, 384) and sd["pos_embed"].shape == (1, 197, 384)
    assert sd["mask_token"].shape == (1, 384) and sd["head.weight"].shape == (384, 7)
    assert sd["blocks.0.ls1.gamma"].shape == (384,)
    assert sd["cls_token"].std() < 1e-5  # normal(1e-6), timm / DINOv2
    # trunc_normal(0.02) cut at ±2 absolute (timm, DINOv2): N(0, 0.02^2) in practice;
    # 197 * 384 draws: the sample std is within 5 * 0.02 / sqrt(2 n) of 0.02
    assert abs(sd["pos_embed"].std() - 0.02) < 5 * 0.02 / np.sqrt(2 * 197 * 384)
    np.testing.assert_array_equal(sd["mask_token"], 0.0)


def test_sincos_pos_embed_is_fixed():
    m = models.VisionTransformer(models.ViTConfig.preset("vit-nano", pos_embed="sincos"))
    assert not m.pos_embed.requires_grad
    assert "pos_embed" in m.state_dict()
    table = nn.sincos_2d_position_embedding(32, 4, cls_token=True)
    np.testing.assert_allclose(m.pos_embed.numpy()[0], table, rtol=1e-6, atol=1e-7)
    x = mt.tensor(np.ones((1, 3, 32, 32), dtype=np.float32))
    m(x).sum().backward()
    assert m.pos_embed.grad is None and m.cls_token.grad is not None


def test_bad_inputs():
    m = models.VisionTransformer(models.ViTConfig.preset("vit-nano"))
    with pytest.raises(ValueError, match="image size 30x32 is not divisible by patch_size 8"):
        m(np.zeros((1, 3, 30, 32), dtype=np.float32))
    with pytest.raises(ValueError, match="expected 3 input channels, got 1"):
        m(np.zeros((1, 1, 32, 32), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        m(np.zeros((3, 32, 32), dtype=np.float32))
    with pytest.raises(ValueError, match="no mask_token"):
        m.forward_features(np.zeros((1, 3, 32, 32), dtype=np.float32),
                           masks=np.zeros((1, 16), bool))
    mm = models.VisionTransformer(models.ViTConfig.preset("vit-nano", mask_token=True))
    with pytest.raises(ValueError, match=r"masks must be boolean of shape \(B, N\) = \(1, 16\), "
                                         r"got shape \(1, 9\)"):
        mm.forward_features(np.zeros((1, 3, 32, 32), dtype=np.float32),
                            masks=np.zeros((1, 9), bool))


def test_gradcheck_two_block_vit(device, rng):
    """Input, every parameter (mask token included) at the native grid with masks, and at
    another grid so the gradient also flows through the position resampling."""
    m = make_vit(device, img_size=4, patch_size=2, dim=4, depth=2, num_heads=2, in_chans=1,
                 mlp_ratio=1.0, num_classes=3, mask_token=True)
    randomize(m, rng)
    masks = np.array([[False, True, False, False]])
    x = mt.tensor(rng.standard_normal((1, 1, 4, 4)), requires_grad=True, device=device)
    assert gradcheck_module(lambda x: m.forward_features(x, masks)["x_norm_patchtokens"], m,
                            [x], max_elements=24)
    x2 = mt.tensor(rng.standard_normal((1, 1, 6, 4)), requires_grad=True, device=device)
    assert gradcheck_module(m, m, [x2], max_elements=24)


def test_gradcheck_vit_with_registers_and_norm_pre(device, rng):
    m = make_vit(device, img_size=4, patch_size=2, dim=4, depth=1, num_heads=2, in_chans=1,
                 mlp_ratio=1.0, mask_token=True, num_register_tokens=2, pre_norm=True,
                 interpolate_offset=0.1, interpolate_antialias=True)
    randomize(m, rng)
    masks = np.array([[False, True, False, False, True, False]])
    x = mt.tensor(rng.standard_normal((1, 1, 6, 4)), requires_grad=True, device=device)
    f = lambda x: m.forward_features(x, masks)  # noqa: E731
    assert gradcheck_module(lambda x: f(x)["x_norm_patchtokens"], m, [x], max_elements=24)
    assert gradcheck_module(lambda x: f(x)["x_norm_regtokens"], m, [x], max_elements=24)
