"""``load_pretrained``: synthetic torch-layout checkpoints against plain-NumPy forwards of
those layouts (tests/io/torch_layout.py), the error paths, and the knowingly dropped keys.
The real libraries' own outputs are tested in test_interop_fixtures.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from minitransformer.io import PretrainedLoadError, detect_family, load_pretrained
from minitransformer.io.convert_bert import convert_hf_bert_state_dict
from minitransformer.io.convert_clip import CLIP_KEYMAP, convert_openai_clip_state_dict
from minitransformer.models import (
    BERT,
    CLIP,
    BackboneWithHead,
    DINOHead,
    VisionTransformer,
    ViTConfig,
)
from tests.io import torch_layout as tl

F64 = dict(dtype=np.float64)
TOL = dict(rtol=0, atol=1e-10)


def _close(got, want):
    got = got.numpy() if hasattr(got, "numpy") else np.asarray(got)
    np.testing.assert_allclose(got, want, **TOL)


# ---------------------------------------------------------------------------- ViT families
def test_timm_vit_with_head_matches_the_numpy_forward(rng):
    sd = tl.vit_state_dict(rng, heads_classes=5)
    assert detect_family(sd) == "timm-vit"
    model = load_pretrained(sd, num_heads=2, **F64)
    assert isinstance(model, VisionTransformer) and model.cfg.num_classes == 5
    assert (model.cfg.patch_size, model.cfg.img_size, model.cfg.depth) == (4, 12, 2)
    assert model.cfg.mlp_ratio == 2.0 and model.cfg.interpolate_antialias
    img = rng.standard_normal((2, 3, 12, 12))
    cls, _, patches, probs = tl.vit_forward(sd, img, heads=2)
    out = model.forward_features(img)
    _close(out["x_norm_clstoken"], cls)
    _close(out["x_norm_patchtokens"], patches)
    _close(model(img), cls @ sd["head.weight"].T + sd["head.bias"])
    _close(model.get_last_selfattention(img), probs)
    assert not model.training


def test_timm_register_model_without_cls_position(rng):
    # timm's DINOv2-with-registers layout: reg_token, pos_embed over the patches only
    sd = tl.vit_state_dict(rng, registers=4, reg_name="reg_token", no_embed_class=True,
                           layer_scale=True)
    model = load_pretrained(sd, num_heads=2, **F64)
    assert model.cfg.num_register_tokens == 4
    np.testing.assert_array_equal(model.pos_embed.numpy()[0, 0], 0.0)  # CLS gets no position
    img = rng.standard_normal((2, 3, 12, 12))
    cls, regs, patches, _ = tl.vit_forward(sd, img, heads=2, reg_name="reg_token")
    out = model.forward_features(img)
    _close(out["x_norm_clstoken"], cls)
    _close(out["x_norm_regtokens"], regs)
    _close(out["x_norm_patchtokens"], patches)


@pytest.mark.parametrize("registers", [0, 4])
def test_dinov2_layer_scale_registers_and_mask_token(rng, registers):
    sd = tl.vit_state_dict(rng, layer_scale=True, registers=registers, mask_token=True)
    assert detect_family(sd) == "dinov2"
    model = load_pretrained(sd, num_heads=2, **F64)
    assert model.cfg.mask_token and model.cfg.num_register_tokens == registers
    # DINOv2's hub: by scale factor with the 0.1 offset; *_reg: by size with antialias
    assert model.cfg.interpolate_offset == (0.0 if registers else 0.1)
    assert model.cfg.interpolate_antialias == bool(registers)
    np.testing.assert_array_equal(model.mask_token.numpy(), sd["mask_token"])
    img = rng.standard_normal((2, 3, 12, 12))
    cls, regs, patches, _ = tl.vit_forward(sd, img, heads=2)
    out = model.forward_features(img)
    _close(out["x_norm_clstoken"], cls)
    _close(out["x_norm_patchtokens"], patches)
    if registers:
        _close(out["x_norm_regtokens"], regs)
    assert model.dropped_keys == {}


def test_dinov2_mask_token_is_dropped_only_when_the_model_has_none(rng):
    sd = tl.vit_state_dict(rng, layer_scale=True, mask_token=True)
    model = load_pretrained(sd, num_heads=2, mask_token=False, **F64)
    assert not hasattr(model, "mask_token")
    assert list(model.dropped_keys) == ["mask_token"]


def test_dino_training_checkpoint_gives_backbone_with_dino_head(rng):
    bb = tl.vit_state_dict(rng)
    head = tl.dino_head_state_dict(rng, D=16)
    sd = {**{"backbone." + k: v for k, v in bb.items()},
          **{"head." + k: v for k, v in head.items()}}
    assert detect_family(sd) == "dino"
    for source in (sd, {"module." + k: v for k, v in sd.items()}):  # the student's DDP prefix
        model = load_pretrained(source, num_heads=2, **F64)
        assert isinstance(model, BackboneWithHead) and isinstance(model.head, DINOHead)
        assert model.backbone.cfg.interpolate_offset == 0.1
        assert not model.backbone.cfg.interpolate_antialias
        img = rng.standard_normal((2, 3, 12, 12))
        cls, _, _, probs = tl.vit_forward(bb, img, heads=2)
        _close(model.backbone(img), cls)
        _close(model(img), tl.dino_head_forward(head, cls))
        _close(model.backbone.get_last_selfattention(img), probs)


def test_backbone_with_head_is_head_of_backbone(rng):
    vit = VisionTransformer(ViTConfig.preset("vit-nano"))
    head = DINOHead(32, 10, hidden_dim=8, bottleneck_dim=4)
    model = BackboneWithHead(vit, head)
    img = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(model(img).numpy(), head(vit(img)).numpy())
    assert {k.split(".")[0] for k in model.state_dict()} == {"backbone", "head"}


def test_headless_vit_is_ambiguous_between_dino_and_timm(rng):
    sd = tl.vit_state_dict(rng)
    with pytest.raises(PretrainedLoadError, match="dino and timm-vit") as e:
        load_pretrained(sd, num_heads=2)
    assert "0.1 offset" in str(e.value) and "family=" in str(e.value)
    dino = load_pretrained(sd, family="dino", num_heads=2, **F64)
    timm = load_pretrained(sd, family="timm-vit", num_heads=2, **F64)
    assert (dino.cfg.interpolate_offset, timm.cfg.interpolate_offset) == (0.1, 0.0)
    img = rng.standard_normal((1, 3, 12, 12))
    np.testing.assert_array_equal(dino(img).numpy(), timm(img).numpy())  # same at native size


def test_default_head_count_is_width_over_64(rng):
    sd = tl.vit_state_dict(rng, D=128, depth=1, heads_classes=3)
    assert load_pretrained(sd).cfg.num_heads == 2
    assert load_pretrained(sd, num_heads=4).cfg.num_heads == 4
    with pytest.raises(PretrainedLoadError, match="width 16 is not a multiple of 64.*num_heads="):
        load_pretrained(tl.vit_state_dict(rng, heads_classes=3))


def test_default_dtype_is_the_library_default(rng):
    model = load_pretrained(tl.vit_state_dict(rng, heads_classes=3), num_heads=2)
    assert model.pos_embed.dtype == np.float32


# ---------------------------------------------------------------------------- CLIP
def test_open_clip_requires_act_and_matches_the_numpy_towers(rng):
    sd = tl.clip_state_dict(rng)
    assert detect_family(sd) == "open_clip"
    with pytest.raises(PretrainedLoadError, match="act='quick_gelu' for OpenAI"):
        load_pretrained(sd, num_heads=2)
    model = load_pretrained(sd, act="quick_gelu", num_heads=2, **F64)
    assert isinstance(model, CLIP) and model.visual.cfg.pre_norm
    assert not model.visual.cfg.patch_bias and model.text.cfg.causal
    img = rng.standard_normal((2, 3, 8, 8))
    ids = np.array([[1, 5, 19, 0, 0, 0, 0], [2, 3, 4, 5, 19, 0, 0]])
    _close(model.encode_image(img), tl.clip_encode_image(sd, img, heads=2))
    _close(model.encode_text(ids), tl.clip_encode_text(sd, ids, heads=2))
    _close(model.logit_scale, sd["logit_scale"])
    gelu = load_pretrained(sd, act="gelu", num_heads=2, **F64)  # a LAION-style tower
    _close(gelu.encode_text(ids), tl.clip_encode_text(sd, ids, heads=2, act=tl.gelu))


def test_open_clip_tower_specific_overrides(rng):
    sd = tl.clip_state_dict(rng, W=16, Wt=32)
    model = load_pretrained(sd, act="quick_gelu", vision_num_heads=2, text_num_heads=4)
    assert (model.visual.cfg.num_heads, model.text.cfg.num_heads) == (2, 4)
    with pytest.raises(PretrainedLoadError, match="unknown override"):
        load_pretrained(sd, act="quick_gelu", num_heads=2, num_hedas=3)


def test_open_clip_causal_attn_mask_is_checked_and_dropped(rng):
    sd = tl.clip_state_dict(rng)
    mask = np.triu(np.full((7, 7), -np.inf), k=1)  # open_clip build_causal_mask
    model = load_pretrained({**sd, "attn_mask": mask}, act="quick_gelu", num_heads=2)
    assert list(model.dropped_keys) == ["attn_mask"]
    bad = mask.copy()
    bad[0, 1] = 0.0
    with pytest.raises(ValueError, match="attn_mask is not the causal mask"):
        load_pretrained({**sd, "attn_mask": bad}, act="quick_gelu", num_heads=2)


def test_clip_keymap_round_trips_names():
    for src, ours, _ in CLIP_KEYMAP.table():
        for i in ("0", "11"):
            s, o = src.replace("{i}", i), ours.replace("{i}", i)
            assert CLIP_KEYMAP.target(s)[0] == o and CLIP_KEYMAP.source(o) == s


def test_clip_converter_orientation(rng):
    sd = tl.clip_state_dict(rng)
    out = convert_openai_clip_state_dict(sd).arrays
    w = sd["visual.transformer.resblocks.1.attn.in_proj_weight"]
    np.testing.assert_array_equal(out["visual.blocks.1.attn.qkv.weight"], w.T)
    np.testing.assert_array_equal(out["text_proj"], sd["text_projection"])  # applied x @ P
    assert out["visual.cls_token"].shape == (1, 1, 16)
    assert out["text.pos_embed"].shape == (1, 7, 16)


# ---------------------------------------------------------------------------- BERT
def _bert_inputs(rng):
    ids = rng.integers(0, 30, (2, 9))
    mask = np.ones((2, 9), bool)
    mask[1, 6:] = False  # padding at the end of row 1
    types = np.zeros((2, 9), np.int64)
    types[:, 5:] = 1
    return ids, mask, types


def test_hf_bert_folder_with_config_json(rng, tmp_path):
    sd = tl.bert_state_dict(rng)
    save_file(sd, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "architectures": ["BertForPreTraining"], "hidden_size": 16, "num_attention_heads": 4,
        "num_hidden_layers": 2, "intermediate_size": 24, "hidden_act": "gelu",
        "layer_norm_eps": 1e-12, "max_position_embeddings": 12, "type_vocab_size": 2,
        "vocab_size": 30}))
    model = load_pretrained(tmp_path, **F64)
    assert isinstance(model, BERT) and model.cfg.num_heads == 4  # from config.json
    ids, mask, types = _bert_inputs(rng)
    x, pooled, logits = tl.bert_forward(sd, ids, heads=4, mask=mask, types=types)
    _close(model.forward_tokens(ids, attention_mask=mask, token_type_ids=types), x)
    _close(model.pooled(ids, attention_mask=mask, token_type_ids=types), pooled)
    _close(model.mlm_logits(ids, attention_mask=mask, token_type_ids=types), logits)
    assert sorted(model.dropped_keys) == ["cls.seq_relationship.bias",
                                          "cls.seq_relationship.weight"]


def test_hf_bert_config_json_that_disagrees_with_the_weights(rng, tmp_path):
    save_file(tl.bert_state_dict(rng), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 32}))
    with pytest.raises(PretrainedLoadError, match=r"hidden_size=32 \(weights: 16\)"):
        load_pretrained(tmp_path)


def test_hf_bert_buffers_and_tied_decoder_are_checked_and_dropped(rng):
    sd = tl.bert_state_dict(rng)
    extra = {"bert.embeddings.position_ids": np.arange(12)[None],
             "cls.predictions.decoder.weight": sd["bert.embeddings.word_embeddings.weight"],
             "cls.predictions.decoder.bias": sd["cls.predictions.bias"]}
    model = load_pretrained({**sd, **extra}, num_heads=2, **F64)
    assert set(extra) | {"cls.seq_relationship.weight", "cls.seq_relationship.bias"} == set(
        model.dropped_keys)
    ids, mask, types = _bert_inputs(rng)
    _close(model.mlm_logits(ids, mask, types), tl.bert_forward(sd, ids, 2, mask, types)[2])
    untied = dict(extra, **{"cls.predictions.decoder.weight": extra[
        "cls.predictions.decoder.weight"] + 1})
    with pytest.raises(ValueError, match="untied decoder is not supported"):
        load_pretrained({**sd, **untied}, num_heads=2)
    with pytest.raises(ValueError, match="position_ids should be the index buffer"):
        load_pretrained({**sd, "bert.embeddings.position_ids": np.arange(12)[None] + 1},
                        num_heads=2)


def test_bert_qkv_columns_are_q_then_k_then_v(rng):
    sd = tl.bert_state_dict(rng)
    out = convert_hf_bert_state_dict(sd).arrays
    w = out["encoder.blocks.1.attn.qkv.weight"]  # (D, 3D)
    for j, n in enumerate(("query", "key", "value")):
        np.testing.assert_array_equal(w[:, 16 * j:16 * (j + 1)],
                                      sd[f"bert.encoder.layer.1.attention.self.{n}.weight"].T)


# ---------------------------------------------------------------------------- errors
def test_leftover_key_is_named(rng):
    sd = tl.vit_state_dict(rng, heads_classes=3)
    sd["blocks.0.attn.q_norm.weight"] = np.ones(8)
    with pytest.raises(PretrainedLoadError, match=r"left over.*blocks\.0\.attn\.q_norm\.weight"):
        load_pretrained(sd, num_heads=2)
    clip = tl.clip_state_dict(rng)
    clip["logit_bias"] = np.zeros(())
    with pytest.raises(PretrainedLoadError, match="left over.*logit_bias"):
        load_pretrained(clip, act="gelu", num_heads=2)


def test_missing_key_is_named_with_its_checkpoint_name(rng):
    sd = tl.clip_state_dict(rng)
    del sd["transformer.resblocks.1.ln_2.bias"]
    with pytest.raises(PretrainedLoadError, match=r"missing.*text\.blocks\.1\.norm2\.bias "
                                                  r"\(checkpoint key transformer\.resblocks\.1"
                                                  r"\.ln_2\.bias\)"):
        load_pretrained(sd, act="gelu", num_heads=2)
    bert = tl.bert_state_dict(rng)
    del bert["bert.encoder.layer.0.attention.self.key.bias"]
    with pytest.raises(ValueError, match="layer 0 has no attention.self.key.bias"):
        load_pretrained(bert, num_heads=2)


def test_mismatched_shapes_name_the_key_and_both_shapes(rng):
    sd = tl.vit_state_dict(rng, heads_classes=3)
    with pytest.raises(PretrainedLoadError, match=r"blocks\.0\.mlp\.fc1\.weight: checkpoint "
                                                  r"\(16, 32\).*vs model \(16, 48\)"):
        load_pretrained(sd, num_heads=2, mlp_ratio=3.0)


@pytest.mark.parametrize("suffix", [".pth", ".bin", ".pt"])
def test_torch_pickle_files_are_refused_with_the_conversion_snippet(tmp_path, suffix):
    path = tmp_path / ("model" + suffix)
    path.write_bytes(b"not read")
    with pytest.raises(PretrainedLoadError, match="safetensors.torch import save_file") as e:
        load_pretrained(path)
    assert f'torch.load("model{suffix}"' in str(e.value)
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / ("pytorch_model" + suffix)).write_bytes(b"not read")
    with pytest.raises(PretrainedLoadError, match="PyTorch pickle"):
        load_pretrained(folder)


def test_dinov2_g_swiglu_is_named_unsupported(rng):
    sd = tl.vit_state_dict(rng, layer_scale=True, mask_token=True)
    for i in range(2):
        sd[f"blocks.{i}.mlp.w12.weight"] = sd.pop(f"blocks.{i}.mlp.fc1.weight")
    with pytest.raises(PretrainedLoadError, match="w12.*SwiGLU.*unsupported"):
        load_pretrained(sd, num_heads=2)


def test_wrong_family_is_refused(rng):
    with pytest.raises(PretrainedLoadError, match="family='hf-bert' does not match.*DINOv2"):
        load_pretrained(tl.vit_state_dict(rng, mask_token=True), family="hf-bert")
    with pytest.raises(PretrainedLoadError, match="family='dino' does not match.*CLIP"):
        load_pretrained(tl.clip_state_dict(rng), family="dino")
    with pytest.raises(PretrainedLoadError, match="unknown family 'vit'"):
        load_pretrained(tl.clip_state_dict(rng), family="vit")
    with pytest.raises(PretrainedLoadError, match="match none of the families"):
        load_pretrained({"foo.weight": np.ones(2)})


def test_unknown_override_is_named(rng):
    with pytest.raises(PretrainedLoadError, match=r"unknown override\(s\) \['depht'\]"):
        load_pretrained(tl.vit_state_dict(rng, heads_classes=2), num_heads=2, depht=3)


def test_safetensors_file_and_open_clip_file_name(rng, tmp_path):
    sd = tl.vit_state_dict(rng, heads_classes=3)
    save_file(sd, str(tmp_path / "vit.safetensors"))
    img = rng.standard_normal((1, 3, 12, 12))
    a = load_pretrained(tmp_path / "vit.safetensors", num_heads=2, **F64)
    b = load_pretrained(sd, num_heads=2, **F64)
    np.testing.assert_array_equal(a(img).numpy(), b(img).numpy())
    folder = tmp_path / "clip"
    folder.mkdir()
    save_file(tl.clip_state_dict(rng), str(folder / "open_clip_model.safetensors"))
    assert isinstance(load_pretrained(folder, act="quick_gelu", num_heads=2), CLIP)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PretrainedLoadError, match="holds none of model.safetensors"):
        load_pretrained(empty)


# ---------------------------------------------------------------------------- devices
def test_load_onto_a_device_and_from_device_arrays(device, xp, rng):
    sd = tl.clip_state_dict(rng)
    model = load_pretrained({k: xp.asarray(v) for k, v in sd.items()}, act="quick_gelu",
                            num_heads=2, device=device, **F64)
    assert model.visual_proj.device == device
    img = rng.standard_normal((2, 3, 8, 8))
    ids = np.array([[1, 5, 19, 0, 0, 0, 0], [2, 3, 4, 5, 19, 0, 0]])
    _close(model.encode_image(xp.asarray(img)), tl.clip_encode_image(sd, img, heads=2))
    _close(model.encode_text(xp.asarray(ids)), tl.clip_encode_text(sd, ids, heads=2))


def test_layer_scale_without_mask_token_is_ambiguous(rng):
    # timm's DINOv2 conversion (no mask_token) resamples as timm, DINOv2's own code does not
    sd = tl.vit_state_dict(rng, layer_scale=True)
    with pytest.raises(PretrainedLoadError, match="dinov2 and timm-vit.*family="):
        load_pretrained(sd, num_heads=2)
    assert load_pretrained(sd, family="dinov2", num_heads=2).cfg.interpolate_offset == 0.1


def test_dinov2_chunked_blocks_and_backbone_prefix(rng):
    # DINOv2 training checkpoints (block_chunks=2): blocks.{chunk}.{i}., teacher backbone.
    sd = tl.vit_state_dict(rng, depth=4, layer_scale=True, mask_token=True)
    chunked = {"backbone." + k.replace(f"blocks.{k.split('.')[1]}.",
                                       f"blocks.{int(k.split('.')[1]) // 2}.{k.split('.')[1]}.")
               if k.startswith("blocks.") else "backbone." + k: v for k, v in sd.items()}
    assert "backbone.blocks.1.3.norm1.weight" in chunked
    model = load_pretrained(chunked, num_heads=2, **F64)
    assert model.cfg.depth == 4
    img = rng.standard_normal((1, 3, 12, 12))
    _close(model.forward_features(img)["x_norm_clstoken"], tl.vit_forward(sd, img, 2)[0])


def test_config_json_beside_a_safetensors_file_is_read(rng, tmp_path):
    save_file(tl.bert_state_dict(rng), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"num_attention_heads": 4}))
    assert load_pretrained(tmp_path / "model.safetensors").cfg.num_heads == 4


def test_openai_metadata_scalars_are_checked_and_dropped(rng):
    sd = tl.clip_state_dict(rng)  # image 8 px, context 7, vocabulary 20
    meta = {"input_resolution": np.array(8), "context_length": np.array(7),
            "vocab_size": np.array(20)}
    model = load_pretrained({**sd, **meta}, act="quick_gelu", num_heads=2)
    assert set(model.dropped_keys) == set(meta)
    with pytest.raises(PretrainedLoadError, match=r"context_length=77 \(weights: 7\)"):
        load_pretrained({**sd, **meta, "context_length": np.array(77)}, act="quick_gelu",
                        num_heads=2)


# ---------------------------------------------------------------------------- properties
@settings(max_examples=15)
@given(D=st.sampled_from([8, 12, 16]), heads=st.sampled_from([1, 2, 4]),
       depth=st.integers(1, 2), p=st.integers(1, 3), grid=st.integers(1, 3),
       registers=st.integers(0, 2), layer_scale=st.booleans(), qkv_bias=st.booleans(),
       mlp=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_any_vit_shape_loads_and_matches_the_numpy_forward(D, heads, depth, p, grid, registers,
                                                           layer_scale, qkv_bias, mlp, seed):
    rng = np.random.default_rng(seed)
    sd = tl.vit_state_dict(rng, D=D, depth=depth, p=p, grid=grid, mlp=mlp,
                           layer_scale=layer_scale, registers=registers, mask_token=True,
                           qkv_bias=qkv_bias)
    model = load_pretrained(sd, family="dinov2", num_heads=heads, **F64)
    c = model.cfg
    assert (c.patch_size, c.img_size, c.depth, c.mlp_ratio) == (p, grid * p, depth, mlp)
    assert (c.qkv_bias, c.layer_scale is not None, c.num_register_tokens) == (
        qkv_bias, layer_scale, registers)
    img = rng.standard_normal((2, 3, grid * p, grid * p))
    cls, regs, patches, probs = tl.vit_forward(sd, img, heads)
    out = model.forward_features(img)
    _close(out["x_norm_clstoken"], cls)
    _close(out["x_norm_regtokens"], regs)
    _close(out["x_norm_patchtokens"], patches)
    _close(model.get_last_selfattention(img), probs)


@settings(max_examples=15)
@given(D=st.sampled_from([8, 16]), heads=st.sampled_from([1, 2, 4]), depth=st.integers(1, 2),
       T=st.integers(1, 8), real=st.lists(st.integers(1, 8), min_size=1, max_size=3),
       seed=st.integers(0, 2**16))
def test_any_bert_shape_and_padding_matches_the_numpy_forward(D, heads, depth, T, real, seed):
    rng = np.random.default_rng(seed)
    sd = tl.bert_state_dict(rng, D=D, depth=depth, V=11, P=8, inter=2 * D)
    model = load_pretrained(sd, num_heads=heads, **F64)
    ids = rng.integers(0, 11, (len(real), T))
    mask = np.arange(T)[None, :] < np.minimum(real, T)[:, None]  # (B, T): a real prefix
    types = rng.integers(0, 2, (len(real), T))
    x, pooled, logits = tl.bert_forward(sd, ids, heads, mask, types)
    _close(model.forward_tokens(ids, attention_mask=mask, token_type_ids=types), x)
    _close(model.pooled(ids, attention_mask=mask, token_type_ids=types), pooled)
    _close(model.mlm_logits(ids, attention_mask=mask, token_type_ids=types), logits)


def test_timm_clip_image_tower_asks_for_act_and_uses_eps_1e5(rng):
    sd = tl.vit_state_dict(rng, pre_norm=True, heads_classes=8)
    del sd["patch_embed.proj.bias"]  # CLIP's conv1 has no bias
    with pytest.raises(PretrainedLoadError, match="norm_pre marks a CLIP image tower.*act="):
        load_pretrained(sd, num_heads=2)
    model = load_pretrained(sd, num_heads=2, act="gelu", **F64)
    assert model.cfg.pre_norm and not model.cfg.patch_bias and model.cfg.eps == 1e-5
    img = rng.standard_normal((2, 3, 12, 12))
    cls = tl.vit_forward(sd, img, heads=2, eps=1e-5)[0]
    _close(model(img), cls @ sd["head.weight"].T + sd["head.bias"])


@pytest.mark.parametrize("quick", [True, False])
def test_open_clip_config_json_gives_act_and_heads(rng, tmp_path, quick):
    sd = tl.clip_state_dict(rng, W=32, Wt=32)
    save_file(sd, str(tmp_path / "open_clip_model.safetensors"))
    model_cfg = {"embed_dim": 8, "vision_cfg": {"width": 32, "head_width": 8},
                 "text_cfg": {"width": 32, "heads": 2}}
    if quick:
        model_cfg["quick_gelu"] = True  # absent = False, open_clip's CLIP default
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    model = load_pretrained(tmp_path, **F64)
    assert (model.visual.cfg.num_heads, model.text.cfg.num_heads) == (4, 2)
    assert model.text.cfg.act == ("quick_gelu" if quick else "gelu")
    ids = np.array([[1, 5, 19, 0, 0, 0, 0]])
    act = tl.quick_gelu if quick else tl.gelu
    _close(model.encode_text(ids), tl.clip_encode_text(sd, ids, heads=2, act=act))
    img = rng.standard_normal((1, 3, 8, 8))
    _close(model.encode_image(img), tl.clip_encode_image(sd, img, heads=4, act=act))
    assert load_pretrained(tmp_path, act="gelu", num_heads=4).text.cfg.num_heads == 4


def test_hf_bert_token_type_buffer_and_a_decoder_bias_saved_alone(rng):
    sd = tl.bert_state_dict(rng)
    sd["bert.embeddings.token_type_ids"] = np.zeros((1, 12), np.int64)  # older HF buffer
    sd["cls.predictions.decoder.bias"] = sd.pop("cls.predictions.bias")  # the tied twin only
    model = load_pretrained(sd, num_heads=2, **F64)
    assert "bert.embeddings.token_type_ids" in model.dropped_keys
    np.testing.assert_array_equal(model.mlm_head.bias.numpy(), sd["cls.predictions.decoder.bias"])
    with pytest.raises(ValueError, match="token_type_ids should be the index buffer zeros"):
        load_pretrained({**sd, "bert.embeddings.token_type_ids": np.ones((1, 12), np.int64)},
                        num_heads=2)


# ---------------------------------------------------------------------------- review fixes
@pytest.mark.parametrize("model_type", ["roberta", "xlm-roberta", "distilbert", "electra"])
def test_config_json_model_type_other_than_bert_is_refused(rng, tmp_path, model_type):
    # RoBERTa saves the same key names (its positions start at padding_idx + 1), so it would
    # load as BERT and give wrong outputs
    save_file(tl.bert_state_dict(rng), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type,
                                                      "num_attention_heads": 2}))
    with pytest.raises(PretrainedLoadError, match=rf"model_type='{model_type}'.*only 'bert'") as e:
        load_pretrained(tmp_path)
    if "roberta" in model_type:
        assert "padding_idx + 1" in str(e.value)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert",
                                                      "num_attention_heads": 2}))
    assert isinstance(load_pretrained(tmp_path), BERT)


def test_bert_without_cls_predictions_has_no_mlm_head(rng):
    full = tl.bert_state_dict(rng)
    sd = {k: v for k, v in full.items() if not k.startswith("cls.")}
    model = load_pretrained(sd, num_heads=2, **F64)
    assert not model.has_mlm_head and model.has_pooler and model.dropped_keys == {}
    ids, mask, types = _bert_inputs(rng)
    x, pooled, _ = tl.bert_forward(full, ids, 2, mask, types)
    _close(model.forward_tokens(ids, mask, types), x)
    _close(model.pooled(ids, mask, types), pooled)
    with pytest.raises(ValueError, match="mlm_head=False"):
        model.mlm_logits(ids)


@pytest.mark.parametrize("case", ["missing key weight", "untied decoder", "non-causal mask",
                                  "linear rank"])
def test_converter_errors_are_pretrained_load_errors_with_the_family(rng, case):
    if case == "missing key weight":
        sd = tl.bert_state_dict(rng)
        del sd["bert.encoder.layer.1.attention.self.key.weight"]
        family, what = "hf-bert", r"layer 1 has no attention\.self\.key\.weight"
    elif case == "untied decoder":
        sd = tl.bert_state_dict(rng)
        sd["cls.predictions.decoder.weight"] = sd["bert.embeddings.word_embeddings.weight"] + 1
        family, what = "hf-bert", "untied decoder is not supported"
    elif case == "non-causal mask":
        sd = {**tl.clip_state_dict(rng), "attn_mask": np.zeros((7, 7))}
        family, what = "open_clip", "attn_mask is not the causal mask"
    else:
        sd = tl.clip_state_dict(rng)
        k = "transformer.resblocks.1.attn.in_proj_weight"
        sd[k] = sd[k][None]
        family, what = "open_clip", k.replace(".", r"\.") + ": a Linear weight should be 2-D"
    with pytest.raises(PretrainedLoadError, match=rf"^load_pretrained\({family}\): .*{what}"):
        load_pretrained(sd, act="gelu", num_heads=2) if family == "open_clip" else \
            load_pretrained(sd, num_heads=2)


def _hf_clip_keys(rng):
    """A few names of HF transformers' CLIPModel (models/clip/modeling_clip.py)."""
    z = np.zeros(4)
    return {"logit_scale": np.zeros(()), "text_projection.weight": z, "visual_projection.weight": z,
            "text_model.embeddings.token_embedding.weight": z,
            "text_model.encoder.layers.0.self_attn.q_proj.weight": z,
            "vision_model.embeddings.patch_embedding.weight": z,
            "vision_model.encoder.layers.0.mlp.fc1.weight": z}


def _hf_dinov2_keys(rng):
    """A few names of HF transformers' Dinov2Model (models/dinov2/modeling_dinov2.py)."""
    z = np.zeros(4)
    return {"embeddings.cls_token": z, "embeddings.mask_token": z,
            "embeddings.position_embeddings": z,
            "embeddings.patch_embeddings.projection.weight": z,
            "encoder.layer.0.attention.attention.query.weight": z,
            "encoder.layer.0.layer_scale1.lambda1": z, "layernorm.weight": z}


@pytest.mark.parametrize("family", [None, "open_clip", "timm-vit"])
def test_hf_clip_and_dinov2_layouts_say_what_to_download(rng, family):
    with pytest.raises(PretrainedLoadError, match=r"HF transformers' CLIPModel layout .*not "
                                                  r"supported.*open_clip_model\.safetensors"):
        load_pretrained(_hf_clip_keys(rng), family=family)
    with pytest.raises(PretrainedLoadError, match=r"Dinov2Model.*not supported.*dinov2's hub "
                                                  r".*timm/vit_small_patch14_reg4_dinov2"):
        load_pretrained(_hf_dinov2_keys(rng), family=family)
    with pytest.raises(PretrainedLoadError, match="CLIPModel"):
        detect_family(_hf_clip_keys(rng))
    # CLIPVisionModel / CLIPTextModel without the tower prefix
    for k in ("embeddings.class_embedding", "embeddings.token_embedding.weight",
              "encoder.layers.0.self_attn.k_proj.weight"):
        with pytest.raises(PretrainedLoadError, match="CLIPModel layout"):
            load_pretrained({k: np.zeros(4), "post_layernorm.weight": np.zeros(4)}, family=family)


def test_conversion_snippet_covers_dino_training_checkpoints_and_torchscript(tmp_path):
    path = tmp_path / "checkpoint.pth"
    path.write_bytes(b"not read")
    with pytest.raises(PretrainedLoadError) as e:
        load_pretrained(path)
    msg = " ".join(str(e.value).split())
    assert 'weights_only=False)["teacher"]' in msg and "argparse.Namespace" in msg
    assert "only for a file you trust" in msg.lower() and "run any code" in msg
    assert 'torch.jit.load("checkpoint.pth", map_location="cpu").state_dict()' in msg


def test_open_clip_flags_from_any_block(rng):
    sd = tl.clip_state_dict(rng)
    del sd["transformer.resblocks.0.attn.in_proj_bias"]
    del sd["visual.transformer.resblocks.0.attn.in_proj_bias"]
    with pytest.raises(PretrainedLoadError) as e:
        load_pretrained(sd, act="gelu", num_heads=2)
    assert "left over" not in str(e.value)
    assert "missing from the checkpoint (2): visual.blocks.0.attn.qkv.bias" in str(e.value)


def test_lone_open_clip_config_beside_model_safetensors_is_still_read(rng, tmp_path):
    save_file(tl.clip_state_dict(rng), str(tmp_path / "model.safetensors"))
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {
        "quick_gelu": True, "vision_cfg": {"head_width": 8}, "text_cfg": {"heads": 2}}}))
    model = load_pretrained(tmp_path)
    assert model.text.cfg.act == "quick_gelu" and model.visual.cfg.num_heads == 2
