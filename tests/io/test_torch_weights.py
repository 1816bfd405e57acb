"""timm / DINOv2 state-dict conversion, on fake state dicts with the real timm shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest

import minitransformer as mt
from minitransformer.io import convert_timm_vit_state_dict
from tests import cupy_standin

D, C, P, IMG, DEPTH, CLASSES = 8, 3, 2, 8, 2, 5
N = (IMG // P) ** 2


def _fake_timm_vit(rng, mask_token=True, layer_scale=True, prefix=""):
    """A random state dict with timm's keys and torch layouts (timm models/
    vision_transformer.py, VisionTransformer; facebookresearch/dinov2 models/
    vision_transformer.py, DinoVisionTransformer)."""
    shapes = {
        "cls_token": (1, 1, D), "pos_embed": (1, N + 1, D),
        "patch_embed.proj.weight": (D, C, P, P), "patch_embed.proj.bias": (D,),
        "norm.weight": (D,), "norm.bias": (D,),
        "head.weight": (CLASSES, D), "head.bias": (CLASSES,),
    }
    if mask_token:
        shapes["mask_token"] = (1, D)
    for i in range(DEPTH):
        b = f"blocks.{i}."
        shapes.update({
            b + "norm1.weight": (D,), b + "norm1.bias": (D,),
            b + "attn.qkv.weight": (3 * D, D), b + "attn.qkv.bias": (3 * D,),
            b + "attn.proj.weight": (D, D), b + "attn.proj.bias": (D,),
            b + "norm2.weight": (D,), b + "norm2.bias": (D,),
            b + "mlp.fc1.weight": (4 * D, D), b + "mlp.fc1.bias": (4 * D,),
            b + "mlp.fc2.weight": (D, 4 * D), b + "mlp.fc2.bias": (D,),
        })
        if layer_scale:
            shapes.update({b + "ls1.gamma": (D,), b + "ls2.gamma": (D,)})
    return {prefix + k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def test_linear_weights_are_transposed_and_the_rest_unchanged(rng):
    sd = _fake_timm_vit(rng)
    out = convert_timm_vit_state_dict(sd)
    np.testing.assert_array_equal(out["blocks.1.attn.qkv.weight"], sd["blocks.1.attn.qkv.weight"].T)
    np.testing.assert_array_equal(out["blocks.0.mlp.fc1.weight"], sd["blocks.0.mlp.fc1.weight"].T)
    np.testing.assert_array_equal(out["head.weight"], sd["head.weight"].T)
    for k in ("cls_token", "pos_embed", "blocks.0.attn.qkv.bias", "blocks.1.ls2.gamma"):
        np.testing.assert_array_equal(out[k], sd[k])
    assert out["patch_embed.proj.weight"].shape == (C * P * P, D)
    assert "mask_token" not in out  # no target given: dropped, as timm's _convert_dinov2


def test_patch_embed_conv_equals_linear_on_flattened_patches(rng):
    # A Conv2d(k=p, stride=p) output is sum_{c,i,j} W[d, c, i, j] x[c, i, j] + b[d] per
    # patch: the patches flattened in (c, i, j) order @ W.reshape(D, -1).T + b.
    sd = _fake_timm_vit(rng)
    kernel, bias = sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"]
    W = convert_timm_vit_state_dict(sd)["patch_embed.proj.weight"]
    img = rng.standard_normal((C, IMG, IMG))
    g = IMG // P
    conv = np.zeros((g, g, D))  # stride-p convolution written out as loops
    for r in range(g):
        for s in range(g):
            window = img[:, r * P:(r + 1) * P, s * P:(s + 1) * P]  # (C, P, P)
            conv[r, s] = np.einsum("dcij,cij->d", kernel, window) + bias
    patches = img.reshape(C, g, P, g, P).transpose(1, 3, 0, 2, 4).reshape(g * g, C * P * P)
    np.testing.assert_allclose(patches @ W + bias, conv.reshape(g * g, D), rtol=1e-5,
                               atol=1e-5)


def test_prefixes_chunks_and_mask_token_target(rng):
    sd = _fake_timm_vit(rng, prefix="module.backbone.")
    chunked = {k.replace("blocks.1.", "blocks.0.1."): v for k, v in sd.items()}  # DINOv2 FSDP
    out = convert_timm_vit_state_dict(chunked, target_keys=["mask_token"])
    assert "mask_token" in out and "blocks.1.attn.qkv.weight" in out
    assert not any(k.startswith(("module.", "backbone.")) for k in out)
    assert set(out) == set(convert_timm_vit_state_dict(_fake_timm_vit(rng))) | {"mask_token"}


def test_unsupported_and_clashing_keys(rng):
    with pytest.raises(ValueError, match="SwiGLU"):
        convert_timm_vit_state_dict({"blocks.0.mlp.w12.weight": np.zeros((4, 2))})
    with pytest.raises(ValueError, match="two keys map to 'norm.weight'"):
        convert_timm_vit_state_dict({"norm.weight": np.zeros(2), "module.norm.weight": np.zeros(2)})
    with pytest.raises(ValueError, match=r"\(D, C, p, p\)"):
        convert_timm_vit_state_dict({"patch_embed.proj.weight": np.zeros((4, 12))})


def test_converted_dict_loads_into_our_vision_transformer(rng):
    models = pytest.importorskip("minitransformer.models")
    if not hasattr(models, "VisionTransformer"):
        pytest.skip("minitransformer.models.VisionTransformer is not written yet")
    cfg = models.ViTConfig(img_size=IMG, patch_size=P, dim=D, depth=DEPTH, num_heads=2,
                           in_chans=C, num_classes=CLASSES, layer_scale=1e-5)
    model = models.VisionTransformer(cfg)
    target = model.state_dict()
    out = convert_timm_vit_state_dict(_fake_timm_vit(rng), target_keys=target.keys())
    assert set(out) == set(target)
    for k, v in target.items():
        assert out[k].shape == v.shape, k
    model.load_state_dict(out, strict=True)
    np.testing.assert_array_equal(model.state_dict()["blocks.0.attn.proj.weight"],
                                  out["blocks.0.attn.proj.weight"])

    cfg_mim = cfg.replace(mask_token=True)
    target = models.VisionTransformer(cfg_mim).state_dict()
    out = convert_timm_vit_state_dict(_fake_timm_vit(rng), target_keys=target.keys())
    assert set(out) == set(target)  # DINOv2's mask_token kept when the model has one


# A device array as strict as CuPy's (no implicit host conversion), from the test suite's
# CuPy stand-in: the backend recognises it as a device array by its module name.
_StrictDeviceArray = cupy_standin.asarray


def test_device_arrays_and_tensors_are_converted_like_numpy(rng):
    """Issue 13 item 9: a state dict of device arrays (CuPy refuses np.asarray) or Tensors
    converts to the same NumPy dict as its host copy."""
    sd = _fake_timm_vit(rng)
    ref = convert_timm_vit_state_dict(sd)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(_StrictDeviceArray(sd["head.weight"]))  # the stand-in is as strict as CuPy
    for wrap in (_StrictDeviceArray, mt.tensor):
        out = convert_timm_vit_state_dict({k: wrap(v) for k, v in sd.items()})
        assert set(out) == set(ref)
        for k, v in ref.items():
            assert type(out[k]) is np.ndarray and out[k].dtype == v.dtype, k
            np.testing.assert_array_equal(out[k], v)


def test_arrays_on_the_device_are_converted(device, xp, rng):
    sd = _fake_timm_vit(rng)
    out = convert_timm_vit_state_dict({k: xp.asarray(v) for k, v in sd.items()})
    for k, v in convert_timm_vit_state_dict(sd).items():
        assert type(out[k]) is np.ndarray, k
        np.testing.assert_array_equal(out[k], v)


# ------------------------------------------------------------------ DINO head (weight norm)
IN, HID, BOT, OUT = 6, 10, 5, 9


def _fake_dino_head(rng, prefix="head.", parametrized=False):
    """A random DINO head state dict in torch layout (facebookresearch/dino
    vision_transformer.py, DINOHead, nlayers=3: mlp.0, mlp.2, mlp.4 Linears with GELU between;
    ``last_layer = weight_norm(nn.Linear(bottleneck, out_dim, bias=False))`` saved as
    weight_v (out, bottleneck) and weight_g (out, 1)). g is random, not DINO's frozen 1, so
    the test sees where it goes. ``parametrized``: torch >= 2.1's parametrizations names."""
    shapes = {"mlp.0.weight": (HID, IN), "mlp.0.bias": (HID,),
              "mlp.2.weight": (HID, HID), "mlp.2.bias": (HID,),
              "mlp.4.weight": (BOT, HID), "mlp.4.bias": (BOT,)}
    sd = {prefix + k: rng.standard_normal(s) for k, s in shapes.items()}
    g, v = rng.uniform(0.5, 2.0, (OUT, 1)), rng.standard_normal((OUT, BOT))
    if parametrized:
        sd[prefix + "last_layer.parametrizations.weight.original0"] = g
        sd[prefix + "last_layer.parametrizations.weight.original1"] = v
    else:
        sd[prefix + "last_layer.weight_g"] = g
        sd[prefix + "last_layer.weight_v"] = v
    return sd, g, v


def _torch_dino_head_numpy(sd, g, v, x, prefix="head."):
    """DINOHead.forward as torch computes it, in NumPy float64: Linear is x @ W.T + b,
    GELU the erf form, F.normalize(dim=-1), then the weight-normed Linear
    y = x @ (g * v / ||v||_row).T (torch weight_norm dim=0: one norm per output row)."""
    erf = np.vectorize(math.erf)

    def gelu(a):
        return 0.5 * a * (1.0 + erf(a / math.sqrt(2.0)))

    def lin(a, i):
        return a @ sd[f"{prefix}mlp.{i}.weight"].T + sd[f"{prefix}mlp.{i}.bias"]

    h = lin(gelu(lin(gelu(lin(x, 0)), 2)), 4)
    z = h / np.maximum(np.linalg.norm(h, axis=-1, keepdims=True), 1e-12)
    W = g * v / np.linalg.norm(v, axis=1, keepdims=True)  # (out, bottleneck)
    return z @ W.T


@pytest.mark.parametrize("parametrized", [False, True])
def test_dino_head_weight_norm_converts_to_our_dino_head(rng, parametrized):
    """Issue 12: weight_v (out, bottleneck) -> (bottleneck, out), weight_g (out, 1) ->
    (1, out); the converted head loads strictly into models.DINOHead and gives the torch
    formula's output to float64 rounding (with "backbone." stripped and "head." kept, as in a
    DINO training checkpoint)."""
    models = pytest.importorskip("minitransformer.models")
    sd, g, v = _fake_dino_head(rng, parametrized=parametrized)
    sd["backbone.cls_token"] = rng.standard_normal((1, 1, D))
    out = convert_timm_vit_state_dict(sd)
    assert out["cls_token"].shape == (1, 1, D)
    np.testing.assert_array_equal(out["head.last_layer.weight_v"], v.T)
    np.testing.assert_array_equal(out["head.last_layer.weight_g"], g.T)
    np.testing.assert_array_equal(out["head.mlp.0.weight"], sd["head.mlp.0.weight"].T)
    head = models.DINOHead(IN, OUT, hidden_dim=HID, bottleneck_dim=BOT, nlayers=3,
                           norm_last_layer=False).to(dtype=np.float64)
    head_sd = {k[len("head."):]: a for k, a in out.items() if k.startswith("head.")}
    assert set(head_sd) == set(head.state_dict())
    head.load_state_dict(head_sd, strict=True)
    x = rng.standard_normal((4, IN))
    got = head(mt.tensor(x, dtype=np.float64))
    assert got.dtype == np.float64
    want = _torch_dino_head_numpy(sd, g, v, x)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-14)


def test_dino_head_weight_g_as_a_vector_and_bad_shapes(rng):
    """A 1-D (out,) gain becomes (1, out); a gain or direction of the wrong rank, or a g and
    v pair with different numbers of outputs, raise an error naming the key and shape."""
    v = rng.standard_normal((OUT, BOT))
    g = rng.uniform(0.5, 2.0, OUT)
    out = convert_timm_vit_state_dict({"last_layer.weight_g": g, "last_layer.weight_v": v})
    np.testing.assert_array_equal(out["last_layer.weight_g"], g[None, :])
    with pytest.raises(ValueError, match=r"head\.last_layer\.weight_g.*\(9, 2\)"):
        convert_timm_vit_state_dict({"head.last_layer.weight_g": np.ones((OUT, 2))})
    with pytest.raises(ValueError, match=r"weight_v.*\(9,\)"):
        convert_timm_vit_state_dict({"head.last_layer.weight_v": np.ones(OUT)})
    with pytest.raises(ValueError, match=r"weight_g has 8 outputs.*weight_v has 9"):
        convert_timm_vit_state_dict({"head.last_layer.weight_g": np.ones((OUT - 1, 1)),
                                     "head.last_layer.weight_v": v})
    with pytest.raises(ValueError, match="two keys map"):
        convert_timm_vit_state_dict({"last_layer.weight_g": g[:, None],
                                     "last_layer.parametrizations.weight.original0": g[:, None]})
