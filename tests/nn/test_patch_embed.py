"""nn.PatchEmbed (seed equation 5) against explicit per-patch loops."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import nn

from .reference import gradcheck_module, params


def patch_loops(x, W, b, P):
    """For each image and each patch in raster order (row of patches, then column):
    flatten the P x P x C block in (channel, row, col) order and compute W_E^T v + b_E."""
    B, C, H, Wd = x.shape
    out = []
    for img in x:
        tokens = []
        for r in range(H // P):
            for c in range(Wd // P):
                v = [img[ch, r * P + i, c * P + j] for ch in range(C) for i in range(P)
                     for j in range(P)]
                tokens.append(np.asarray(v) @ W + b)
        out.append(tokens)
    return np.asarray(out)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 4, 12), (2, 1, 6, 2)])
def test_equals_per_patch_loops(device, rng, shape):
    pe = nn.PatchEmbed(8, 2, shape[1], 5).to(device, dtype=np.float64)
    pe.proj.bias.data = mt.tensor(rng.standard_normal(5), device=device).data
    x = rng.standard_normal(shape)
    y = pe(mt.tensor(x, device=device)).numpy()
    p = params(pe)
    np.testing.assert_allclose(y, patch_loops(x, p["proj.weight"], p["proj.bias"], 2),
                               rtol=1e-12, atol=1e-14)
    assert y.shape == (shape[0], (shape[2] // 2) * (shape[3] // 2), 5)


def test_names_and_conv_equivalence():
    pe = nn.PatchEmbed(16, 4, 3, 7)
    assert {k: v.shape for k, v in pe.state_dict().items()} == {
        "proj.weight": (48, 7), "proj.bias": (7,)}
    assert pe.num_patches == 16 and pe.grid_size == (4, 4)
    assert "proj.bias" not in nn.PatchEmbed(16, 4, 3, 7, bias=False).state_dict()
    # a torch Conv2d weight (D, C, P, P) maps onto proj.weight as reshape(D, -1).T
    conv = np.random.default_rng(0).standard_normal((7, 3, 4, 4))
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16))
    pe.to(dtype=np.float64)
    pe.proj.weight.data = conv.reshape(7, -1).T.copy()
    y = pe(mt.tensor(x)).numpy()
    # the conv at output position (r, c) is a sum over the input block
    r, c = 2, 3
    expected = np.einsum("dcij,cij->d", conv, x[0, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4])
    np.testing.assert_allclose(y[0, r * 4 + c], expected, rtol=1e-12)


def test_gradcheck(device, rng):
    pe = nn.PatchEmbed(4, 2, 2, 3).to(device, dtype=np.float64)
    x = mt.tensor(rng.standard_normal((2, 2, 4, 6)), requires_grad=True, device=device)
    assert gradcheck_module(pe, pe, [x])


def test_bad_inputs():
    pe = nn.PatchEmbed(8, 4, 3, 5)
    with pytest.raises(ValueError, match=r"image size 10x8 is not divisible by patch_size 4"):
        pe(np.zeros((1, 3, 10, 8), dtype=np.float32))
    with pytest.raises(ValueError, match=r"expected 3 input channels, got 1"):
        pe(np.zeros((1, 1, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        pe(np.zeros((3, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match=r"img_size \(10, 10\) is not divisible by patch_size 4"):
        nn.PatchEmbed(10, 4, 3, 5)


_LOOKS_CHANNELS_LAST = r"looks like channels-last \(B, H, W, C\).*expects \(B, C, H, W\)"


@pytest.mark.parametrize(("img", "P", "C"), [(32, 8, 3), (8, 4, 3), (28, 4, 1), (16, 4, 4)])
def test_a_channels_last_image_is_named_as_such(img, P, C):
    """Issue 13 item 8: (B, H, W, C) used to give '32x3 is not divisible by 8'. Whether or
    not the patch size divides C, the message names the layout and the fix."""
    pe = nn.PatchEmbed(img, P, C, 5)
    x = np.zeros((2, img, img, C), dtype=np.float32)
    with pytest.raises(ValueError, match=r"^PatchEmbed: .*" + _LOOKS_CHANNELS_LAST
                       + r".*x\.transpose\(0, 3, 1, 2\)"):
        pe(x)
    with pytest.raises(ValueError, match=_LOOKS_CHANNELS_LAST):
        pe.check_images(x.shape)
    assert pe(x.transpose(0, 3, 1, 2)).shape == (2, (img // P) ** 2, 5)  # the fix works


def test_a_channels_last_image_given_to_the_vision_transformer():
    """VisionTransformer reads the patch grid with ``patch_embed.grid(H, W)`` before the
    forward pass: that message names the layout too."""
    from minitransformer.models import VisionTransformer, ViTConfig

    cfg = ViTConfig.preset("vit-nano")
    model = VisionTransformer(cfg)
    x = np.zeros((2, cfg.img_size, cfg.img_size, cfg.in_chans), dtype=np.float32)
    with pytest.raises(ValueError, match=_LOOKS_CHANNELS_LAST) as err:
        model(x)
    assert "not divisible" not in str(err.value).split("(")[0]  # leads with the layout
    assert model(x.transpose(0, 3, 1, 2)).shape[0] == 2


def test_grey_images_without_a_channel_axis_are_told_to_add_one():
    pe = nn.PatchEmbed(8, 4, 1, 5)
    with pytest.raises(ValueError, match=r"got shape \(2, 8, 8\); for grey images \(B, H, W\) "
                                         r"add the channel axis: x\[:, None\]"):
        pe(np.zeros((2, 8, 8), dtype=np.float32))
