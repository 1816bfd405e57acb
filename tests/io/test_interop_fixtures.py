"""``load_pretrained`` against the real libraries: tiny float64 random-init models saved by
timm, DINO, DINOv2, open_clip and HF transformers with their own code, with inputs and their
reference outputs (tests/fixtures/interop/<name>/, made by tests/interop/make_fixtures.py; no
torch here). Every checkpoint loads strictly and every output matches to 1e-10, at the
training resolution and at the others the fixture holds (resampled as that family does)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from minitransformer.io import PretrainedLoadError, load_pretrained, read_state_dict
from minitransformer.models import BERT, CLIP, BackboneWithHead, DINOHead, VisionTransformer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "interop"
TOL = dict(rtol=0, atol=1e-10)


def _fixture(name):
    folder = FIXTURES / name
    if not (folder / "meta.json").is_file():
        pytest.skip(f"fixture {name} is not in this checkout")
    meta = json.loads((folder / "meta.json").read_text())
    return folder, meta, dict(np.load(folder / "io.npz"))


def _sizes(io):
    """The input sizes a fixture holds: "32x32" for ``x_32x32``, ..."""
    return sorted(k[2:] for k in io if re.fullmatch(r"x_\d+x\d+", k))


def _close(got, want):
    got = got.numpy() if hasattr(got, "numpy") else np.asarray(got)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, **TOL)


def test_timm_vit_fixture():
    folder, meta, io = _fixture("timm-vit")
    model = load_pretrained(folder / "model.safetensors", num_heads=meta["kwargs"]["num_heads"],
                            dtype=np.float64)
    assert isinstance(model, VisionTransformer) and model.dropped_keys == {}
    sizes = _sizes(io)
    assert len(sizes) >= 2
    for s in sizes:
        x = io["x_" + s]
        out = model.forward_features(x)
        tokens = np.concatenate([out["x_norm_clstoken"].numpy()[:, None],
                                 out["x_norm_patchtokens"].numpy()], axis=1)  # (B, 1 + N, D)
        _close(tokens, io["features_" + s])
        _close(model(x), io["logits_" + s])


@pytest.mark.parametrize("size", ["32x32", "48x40", "24x24"])
def test_timm_vit_fixture_attention(size):
    folder, meta, io = _fixture("timm-vit")
    model = load_pretrained(folder, num_heads=meta["kwargs"]["num_heads"], dtype=np.float64)
    x = io["x_" + size]
    _close(model.get_last_selfattention(x), io["attn_" + size])


@pytest.mark.parametrize("name", ["dino", "dino-bn"])
def test_dino_training_checkpoint_fixture(name):
    folder, meta, io = _fixture(name)
    model = load_pretrained(folder, num_heads=meta["kwargs"]["num_heads"], dtype=np.float64)
    assert isinstance(model, BackboneWithHead) and isinstance(model.head, DINOHead)
    for s in _sizes(io):
        x = io["x_" + s]
        _close(model.backbone(x), io["cls_" + s])
        _close(model(x), io["head_" + s])
        _close(model.backbone.get_last_selfattention(x), io["attn_" + s])
        inter = np.stack([t.numpy() for t in model.backbone.get_intermediate_layers(x, n=2)])
        _close(inter, io["intermediate_" + s])


@pytest.mark.parametrize("name", ["dinov2", "dinov2-reg"])
def test_dinov2_fixture(name):
    folder, meta, io = _fixture(name)
    model = load_pretrained(folder, num_heads=meta["kwargs"]["num_heads"], dtype=np.float64)
    R = meta["kwargs"].get("num_register_tokens", 0)
    assert model.cfg.num_register_tokens == R and model.cfg.mask_token
    keys = ("x_norm_clstoken", "x_norm_regtokens", "x_norm_patchtokens")
    for s in _sizes(io):
        x = io["x_" + s]
        out = model.forward_features(x)
        for k in keys:
            _close(out[k], io[f"{k}_{s}"])
        _close(model.get_last_selfattention(x), io["attn_" + s])
    out = model.forward_features(io["x_32x32"], masks=io["masks"])
    for k in keys:
        _close(out[k], io[k + "_masked"])


def test_open_clip_fixture():
    folder, meta, io = _fixture("open_clip")
    assert meta["quick_gelu"]
    model = load_pretrained(folder, act="quick_gelu", num_heads=meta["text"]["heads"],
                            dtype=np.float64)
    assert isinstance(model, CLIP) and model.dropped_keys == {}
    _close(model.encode_image(io["x"]), io["image_features"])
    _close(model.encode_text(io["text"]), io["text_features"])
    _close(model.logit_scale, io["logit_scale"])
    img = model.encode_image(io["x"], normalize=True).numpy()
    txt = model.encode_text(io["text"], normalize=True).numpy()
    _close(np.exp(model.logit_scale.numpy()) * img @ txt.T, io["logits_per_image"])
    # GELU instead of QuickGELU loads just as strictly but gives other features
    gelu = load_pretrained(folder, act="gelu", num_heads=2, dtype=np.float64)
    assert np.abs(gelu.encode_text(io["text"]).numpy() - io["text_features"]).max() > 1e-3


def test_hf_bert_fixture():
    folder, meta, io = _fixture("hf-bert")
    model = load_pretrained(folder, dtype=np.float64)  # heads from config.json
    assert isinstance(model, BERT) and model.cfg.num_heads == meta["config"][
        "num_attention_heads"]
    assert set(model.dropped_keys) == {"cls.seq_relationship.weight",
                                       "cls.seq_relationship.bias"}
    ids, types = io["input_ids"], io["token_type_ids"]
    mask = io["attention_mask"].astype(bool)
    _close(model.forward_tokens(ids, attention_mask=mask, token_type_ids=types),
           io["last_hidden_state"])
    _close(model.pooled(ids, attention_mask=mask, token_type_ids=types), io["pooler_output"])
    _close(model.mlm_logits(ids, attention_mask=mask, token_type_ids=types), io["mlm_logits"])


def test_dino_backbone_alone_needs_the_family_and_it_matters():
    folder, meta, io = _fixture("dino")
    sd, _ = read_state_dict(folder)
    backbone = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    heads = meta["kwargs"]["num_heads"]
    with pytest.raises(PretrainedLoadError, match="dino and timm-vit"):
        load_pretrained(backbone, num_heads=heads)
    dino = load_pretrained(backbone, family="dino", num_heads=heads, dtype=np.float64)
    timm = load_pretrained(backbone, family="timm-vit", num_heads=heads, dtype=np.float64)
    x = io["x_48x40"]
    _close(dino(x), io["cls_48x40"])
    assert np.abs(timm(x).numpy() - io["cls_48x40"]).max() > 1e-4  # other resampling


def test_fixture_leftover_and_missing_keys_are_named():
    folder, meta, _ = _fixture("dinov2-reg")
    sd, _ = read_state_dict(folder)
    heads = meta["kwargs"]["num_heads"]
    with pytest.raises(PretrainedLoadError, match="left over.*blocks.1.attn.k_norm.weight"):
        load_pretrained({**sd, "blocks.1.attn.k_norm.weight": np.ones(16)}, num_heads=heads)
    del sd["register_tokens"]
    with pytest.raises(PretrainedLoadError, match="missing"):
        load_pretrained(sd, num_heads=heads, num_register_tokens=4)


@pytest.mark.parametrize("pooler", [True, False])
def test_hf_bert_model_without_mlm_head_loads_strictly(tmp_path, pooler):
    """A plain BertModel checkpoint (BertModel.save_pretrained, sentence encoders): the
    fixture's bert.* keys with the prefix stripped, no cls.*; with pooler=False as
    BertModel(add_pooling_layer=False) saves it, without pooler.*."""
    from safetensors.numpy import save_file

    folder, meta, io = _fixture("hf-bert")
    sd, _ = read_state_dict(folder)
    plain = {k[len("bert."):]: v for k, v in sd.items() if k.startswith("bert.")
             and (pooler or not k.startswith("bert.pooler."))}
    assert not any(k.startswith("cls.") for k in plain)
    save_file(plain, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    model = load_pretrained(tmp_path, dtype=np.float64)  # strict: nothing left, nothing missing
    assert isinstance(model, BERT) and model.dropped_keys == {}
    assert not model.has_mlm_head and model.has_pooler == pooler
    ids, types = io["input_ids"], io["token_type_ids"]
    mask = io["attention_mask"].astype(bool)
    _close(model.forward_tokens(ids, attention_mask=mask, token_type_ids=types),
           io["last_hidden_state"])
    if pooler:
        _close(model.pooled(ids, attention_mask=mask, token_type_ids=types),
               io["pooler_output"])
    with pytest.raises(ValueError, match="mlm_head=False"):
        model.mlm_logits(ids)
    # asking for the head anyway names the checkpoint keys it needs
    with pytest.raises(PretrainedLoadError, match=r"missing.*cls\.predictions\.bias"):
        load_pretrained(tmp_path, mlm_head=True)


def _mixed_folder(tmp_path):
    """timm/vit_base_patch32_clip_224.openai's construction: timm's image tower
    (model.safetensors + config.json) beside open_clip's CLIP (open_clip_model.safetensors +
    open_clip_config.json)."""
    import shutil

    timm_folder, timm_meta, _ = _fixture("timm-vit")
    clip_folder, clip_meta, _ = _fixture("open_clip")
    shutil.copy(timm_folder / "model.safetensors", tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(
        {"architecture": "vit_base_patch32_clip_224", "num_classes": 512}))
    shutil.copy(clip_folder / "model.safetensors", tmp_path / "open_clip_model.safetensors")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {
        "quick_gelu": clip_meta["quick_gelu"],
        "vision_cfg": {"width": clip_meta["vision"]["width"],
                       "head_width": clip_meta["vision"]["head_width"]},
        "text_cfg": {"heads": clip_meta["text"]["heads"]}}}))
    return timm_meta


def test_folder_with_two_layouts_pairs_each_file_with_its_config(tmp_path):
    timm_meta = _mixed_folder(tmp_path)
    with pytest.raises(PretrainedLoadError, match=r"open_clip_model\.safetensors.*"
                                                  r"model\.safetensors.*family="):
        load_pretrained(tmp_path)
    _, _, clip_io = _fixture("open_clip")
    # family="open_clip": the open_clip pair; the path of the file: its own config beside it
    # (act and heads from open_clip_config.json, none passed here)
    for model in (load_pretrained(tmp_path, family="open_clip", dtype=np.float64),
                  load_pretrained(tmp_path / "open_clip_model.safetensors", dtype=np.float64)):
        assert isinstance(model, CLIP) and model.text.cfg.act == "quick_gelu"
        _close(model.encode_image(clip_io["x"]), clip_io["image_features"])
        _close(model.encode_text(clip_io["text"]), clip_io["text_features"])
    _, _, timm_io = _fixture("timm-vit")
    vit = load_pretrained(tmp_path, family="timm-vit", num_heads=timm_meta["kwargs"]["num_heads"],
                          dtype=np.float64)
    assert isinstance(vit, VisionTransformer)
    _close(vit(timm_io["x_32x32"]), timm_io["logits_32x32"])


def test_layout_flags_from_any_block_report_a_gap_in_block_0_as_missing():
    folder, meta, _ = _fixture("dinov2-reg")
    sd, _ = read_state_dict(folder)
    del sd["blocks.0.attn.qkv.bias"], sd["blocks.0.ls1.gamma"]
    with pytest.raises(PretrainedLoadError) as e:
        load_pretrained(sd, num_heads=meta["kwargs"]["num_heads"])
    msg = str(e.value)
    assert "missing from the checkpoint (2): blocks.0.attn.qkv.bias, blocks.0.ls1.gamma" in msg
    assert "left over" not in msg


def test_leftover_count_counts_checkpoint_names_of_a_fused_key():
    folder, meta, _ = _fixture("hf-bert")
    depth = meta["config"]["num_hidden_layers"]
    with pytest.raises(PretrainedLoadError, match=rf"left over, no place in the model "
                                                  rf"\({3 * depth}\): bert\.encoder\.layer\.0"
                                                  rf"\.attention\.self\.query\.bias, "):
        load_pretrained(folder, qkv_bias=False)
