"""The CLIP dual encoder: towers, projections, the learned temperature, EOT pooling."""

from __future__ import annotations

import math

import numpy as np
import pytest

import minitransformer as mt
from minitransformer.models import TextConfig, ViTConfig
from minitransformer.models.clip import CLIP
from minitransformer.objectives import clamp_logit_scale, clip_loss
from minitransformer.testing import gradcheck
from tests.nn.reference import swapped_parameters

EOT = 127  # the largest id of text-nano's vocabulary: OpenAI's argmax pooling finds it


def _model(device, dtype=np.float64):
    vis = ViTConfig.preset("vit-nano", img_size=16, patch_size=8, depth=1)
    txt = TextConfig.preset("text-nano", causal=True, pool="eot", depth=1, context_length=8)
    return CLIP(vis, txt, embed_dim=6).to(device, dtype)


def _tokens(rng, B, T=8, lengths=None):
    """[SOT=1] + words + [EOT], zero-padded, as OpenAI's ``tokenize``."""
    toks = np.zeros((B, T), dtype=np.int64)
    for b in range(B):
        n = lengths[b] if lengths is not None else int(rng.integers(1, T - 2))
        toks[b, 0] = 1
        toks[b, 1:1 + n] = rng.integers(2, EOT, n)
        toks[b, 1 + n] = EOT
    return toks


def test_clip_parameters_and_init(device):
    model = _model(device)
    assert model.visual_proj.shape == (32, 6) and model.text_proj.shape == (32, 6)
    assert model.logit_scale.shape == ()
    assert round(model.logit_scale.item(), 6) == 2.659260  # ln(1/0.07)
    names = [n for n, _ in model.named_parameters()]
    assert "visual.patch_embed.proj.weight" in names and "text.token_embed.weight" in names
    assert {"visual_proj", "text_proj", "logit_scale"} <= set(names)
    # open_clip init: normal(0, width^-0.5) projections
    std = np.std(_model(device, np.float32).visual_proj.numpy())
    assert 0.5 * 32 ** -0.5 < std < 1.5 * 32 ** -0.5


def test_clip_forward_is_the_towers_then_projections(device, rng):
    model = _model(device)
    imgs = mt.tensor(rng.standard_normal((3, 3, 16, 16)), device=device)
    toks = _tokens(rng, 3)
    img, txt, scale = model(imgs, toks)
    assert scale is model.logit_scale
    cls = model.visual.forward_features(imgs)["x_norm_clstoken"].numpy()
    i = cls @ model.visual_proj.numpy()
    pooled = model.text(toks).numpy()  # EOT-pooled by the tower itself
    tokens = model.text.forward_tokens(toks).numpy()
    eot_pos = toks.argmax(-1)
    np.testing.assert_allclose(pooled, tokens[np.arange(3), eot_pos], rtol=1e-12)
    t = pooled @ model.text_proj.numpy()
    np.testing.assert_allclose(img.numpy(), i / np.linalg.norm(i, axis=1, keepdims=True),
                               rtol=1e-10)
    np.testing.assert_allclose(txt.numpy(), t / np.linalg.norm(t, axis=1, keepdims=True),
                               rtol=1e-10)
    np.testing.assert_allclose(model.encode_image(imgs).numpy(), i, rtol=1e-10)


def test_clip_padding_after_eot_changes_nothing(device, rng):
    """openai/CLIP clip/model.py (encode_text pools x[arange(B), text.argmax(-1)], "eot_token
    is the highest number in each sequence"; build_attention_mask is causal): pooling at the
    max id (EOT); tokens after it cannot leak into it through the causal mask."""
    model = _model(device)
    toks = _tokens(rng, 2, lengths=[3, 2])
    other = toks.copy()
    other[0, 5:] = rng.integers(2, 100, 3)  # junk after EOT (position 4), all below EOT
    other[1, 4:] = rng.integers(2, 100, 4)
    a = model.encode_text(toks).numpy()
    b = model.encode_text(other).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_clip_gradients_and_clamp(device, rng):
    """Gradients reach both towers, both projections and the temperature; a step that pushes
    logit_scale past ln 100 is clamped back (CLIP, Radford et al. 2021, sec. 2.5;
    mlfoundations/open_clip image_text_task.py, clamp_logit_scale)."""
    model = _model(device)
    imgs = mt.tensor(rng.standard_normal((4, 3, 16, 16)), device=device)
    toks = _tokens(rng, 4)
    loss = clip_loss(*model(imgs, toks))
    loss.backward()
    for name in ("visual_proj", "text_proj", "logit_scale", "visual.patch_embed.proj.weight",
                 "text.token_embed.weight"):
        assert dict(model.named_parameters())[name].grad is not None, name
    model.logit_scale.data = model.logit_scale.data + 10.0  # an oversized optimiser step
    clamp_logit_scale(model.logit_scale)
    assert model.logit_scale.item() == pytest.approx(math.log(100), abs=1e-12)


def test_clip_gradcheck_projections_and_scale(device, rng):
    model = _model(device)
    imgs = mt.tensor(rng.standard_normal((3, 3, 16, 16)), device=device)
    toks = _tokens(rng, 3)
    names = ["visual_proj", "text_proj", "logit_scale"]
    params = [getattr(model, n) for n in names]

    def loss(*ps):
        with swapped_parameters(model, dict(zip(names, ps))):
            return clip_loss(*model(imgs, toks))

    assert gradcheck(loss, params, max_elements=64)


def test_clip_bad_input(device, rng):
    model = _model(device)
    imgs = mt.tensor(rng.standard_normal((3, 3, 16, 16)), device=device)
    with pytest.raises(ValueError, match="same\\s+batch|batch"):
        model(imgs, _tokens(rng, 2))
    vis = ViTConfig.preset("vit-nano")
    with pytest.raises(ValueError, match="causal"):
        CLIP(vis, TextConfig.preset("text-nano"), 8)
    with pytest.raises(ValueError, match="num_classes"):
        CLIP(vis.replace(num_classes=3), TextConfig.preset("text-shapes"), 8)
