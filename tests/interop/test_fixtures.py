"""The interop fixtures (``tests/fixtures/interop``) are complete and self-consistent; no torch.

They are written by hand with ``tests/interop/make_fixtures.py`` (see its docstring); these tests
check what CI can check without the reference libraries: every file that ``meta.json`` lists is
there (and nothing else), every npz array has the shape and dtype ``meta.json`` records and is
float64 where it is a float, the versions and repository commits are recorded, the state dicts
are float64 safetensors with the families' key layouts, the tokenizers' special ids are where
the models expect them, and a few relations any correct reference output must satisfy
(attention rows sum to 1, CLIP's logits are the scaled cosine similarities of its features,
the token counts follow from the input sizes).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "interop"
FIXTURES = {  # name -> family
    "timm-vit": "timm-vit", "dino": "dino", "dino-bn": "dino", "dinov2": "dinov2",
    "dinov2-reg": "dinov2", "open_clip": "open_clip", "hf-bert": "hf-bert",
}
LIBRARY = {"timm-vit": "timm", "dino": None, "dinov2": None, "open_clip": "open_clip",
           "hf-bert": "transformers"}
REPO = {"dino": "facebookresearch/dino", "dinov2": "facebookresearch/dinov2"}


def meta(name: str) -> dict:
    return json.loads((ROOT / name / "meta.json").read_text())


def arrays(name: str) -> dict[str, np.ndarray]:
    with np.load(ROOT / name / "io.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def sizes(a: dict) -> list[tuple[int, int]]:
    """The input sizes of a fixture, from its ``x_<h>x<w>`` arrays."""
    return [tuple(int(v) for v in k[2:].split("x")) for k in a if re.fullmatch(r"x_\d+x\d+", k)]


def test_all_fixtures_present_and_small():
    assert sorted(p.name for p in ROOT.iterdir() if p.is_dir()) == sorted(FIXTURES)
    total = sum(f.stat().st_size for f in ROOT.rglob("*") if f.is_file())
    assert total <= 3_000_000, f"interop fixtures are {total} bytes, more than 3 MB"


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_files_listed_and_present(name):
    m = meta(name)
    assert m["name"] == name and m["family"] == FIXTURES[name]
    present = sorted(p.name for p in (ROOT / name).iterdir())
    assert present == sorted(m["files"]), f"{name}: files {present} but meta.json lists " \
                                          f"{m['files']}"
    for required in ("model.safetensors", "io.npz", "meta.json"):
        assert required in m["files"]


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_versions_and_commits_recorded(name):
    m = meta(name)
    v = m["versions"]
    for lib in ("torch", "numpy", "safetensors", "python"):
        assert isinstance(v.get(lib), str) and v[lib], f"{name}: no {lib} version"
    lib = LIBRARY[m["family"]]
    if lib:
        assert isinstance(v.get(lib), str) and v[lib], f"{name}: no {lib} version"
    if m["family"] in REPO:
        commit = m["repos"][REPO[m["family"]]]
        assert re.fullmatch(r"[0-9a-f]{40}", commit), f"{name}: commit {commit!r}"
    assert m["dtype"] == "float64" and isinstance(m["seed"], int)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_arrays_match_meta(name):
    m, a = meta(name), arrays(name)
    assert sorted(a) == sorted(m["arrays"]), f"{name}: npz and meta.json list other arrays"
    for key, info in m["arrays"].items():
        assert list(a[key].shape) == info["shape"], f"{name}/{key}: shape {a[key].shape}"
        assert str(a[key].dtype) == info["dtype"], f"{name}/{key}: dtype {a[key].dtype}"
        assert a[key].dtype.kind in "fib", f"{name}/{key}: dtype {a[key].dtype}"
        if a[key].dtype.kind == "f":
            assert a[key].dtype == np.float64, f"{name}/{key} is {a[key].dtype}"
            assert np.isfinite(a[key]).all(), f"{name}/{key} has non-finite values"
        assert info["what"], f"{name}/{key}: no description"


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_state_dict_float64(name):
    sd = load_file(ROOT / name / "model.safetensors")
    assert sd
    for key, v in sd.items():
        if key.endswith("num_batches_tracked"):  # BatchNorm's step counter
            assert v.dtype == np.int64 and v.shape == ()
        else:
            assert v.dtype == np.float64, f"{name}: {key} is {v.dtype}"


def _grid(h, w, patch):
    return (h // patch) * (w // patch)


@pytest.mark.parametrize("name", ["timm-vit", "dino", "dino-bn", "dinov2", "dinov2-reg"])
def test_vit_shapes_and_attention(name):
    m, a = meta(name), arrays(name)
    sd = load_file(ROOT / name / "model.safetensors")
    prefix = {"dino": "backbone.", "dino-bn": "module.backbone."}.get(name, "")
    dim, _, patch, _ = sd[prefix + "patch_embed.proj.weight"].shape
    regs = m["kwargs"].get("num_register_tokens", 0)
    assert (prefix + "register_tokens" in sd) == (regs > 0)
    assert sd[prefix + "pos_embed"].shape == (1, 1 + _grid(32, 32, patch), dim)  # no registers
    assert len(sizes(a)) >= (1 if name == "dino-bn" else 2)
    for h, w in sizes(a):
        s, n = f"{h}x{w}", _grid(h, w, patch)
        b = a[f"x_{s}"].shape[0]
        attn = a[f"attn_{s}"]
        assert attn.shape == (b, 2, 1 + regs + n, 1 + regs + n)
        np.testing.assert_allclose(attn.sum(-1), 1.0, rtol=0, atol=1e-12)
        assert (attn >= 0).all()
        if m["family"] == "timm-vit":
            assert a[f"features_{s}"].shape == (b, 1 + n, dim)
            assert a[f"logits_{s}"].shape == (b, sd["head.weight"].shape[0])
        elif m["family"] == "dino":
            inter = a[f"intermediate_{s}"]
            assert inter.shape == (2, b, 1 + n, dim)
            # the last block's normed CLS token is what the backbone's forward returns
            np.testing.assert_allclose(inter[-1][:, 0], a[f"cls_{s}"], rtol=0, atol=1e-14)
            out_dim = sd[prefix.replace("backbone.", "head.") + "last_layer.weight_v"].shape[0]
            assert a[f"head_{s}"].shape == (b, out_dim)
        else:
            assert a[f"x_norm_clstoken_{s}"].shape == (b, dim)
            assert a[f"x_norm_regtokens_{s}"].shape == (b, regs, dim)
            assert a[f"x_norm_patchtokens_{s}"].shape == (b, n, dim)
    assert any((h, w) != (32, 32) and h != w for h, w in sizes(a)) or name == "dino-bn"


def test_dino_checkpoint_layout():
    for name, prefix in (("dino", ""), ("dino-bn", "module.")):
        sd = load_file(ROOT / name / "model.safetensors")
        assert all(k.startswith((prefix + "backbone.", prefix + "head.")) for k in sd), name
        g, v = sd[prefix + "head.last_layer.weight_g"], sd[prefix + "head.last_layer.weight_v"]
        assert g.shape == (v.shape[0], 1)
        assert not np.allclose(g, 1.0), "weight_g left at DINO's constant init"
        has_bn = any(k.endswith("running_var") for k in sd)
        assert has_bn == (name == "dino-bn") == meta(name)["head_kwargs"]["use_bn"]


def test_dinov2_masked_forward():
    for name in ("dinov2", "dinov2-reg"):
        a = arrays(name)
        masks = a["masks"]
        assert masks.dtype == np.bool_ and masks.any(axis=1).all()
        assert a["x_norm_patchtokens_masked"].shape == a["x_norm_patchtokens_32x32"].shape
        changed = np.abs(a["x_norm_patchtokens_masked"] - a["x_norm_patchtokens_32x32"]).max()
        assert changed > 1e-3, f"{name}: the mask changed nothing"


def test_open_clip_consistent():
    m, a = meta("open_clip"), arrays("open_clip")
    tok = json.loads((ROOT / "open_clip" / "tokenizer.json").read_text())
    vocab = {**tok["model"]["vocab"], **{t["content"]: t["id"] for t in tok["added_tokens"]}}
    assert len(vocab) == m["tokenizer"]["vocab_size"] == m["text"]["vocab_size"]
    eot = vocab["<|endoftext|>"]
    assert eot == m["tokenizer"]["eot_id"] == max(vocab.values())
    text = a["text"]
    assert text.dtype == np.int64 and text.shape[1] == m["text"]["context_length"]
    # EOT is each row's largest id (open_clip pools at argmax) and some rows are padded with 0
    assert (text.max(axis=1) == eot).all() and (text[:, -1] == 0).any()
    sd = load_file(ROOT / "open_clip" / "model.safetensors")
    assert sd["token_embedding.weight"].shape[0] == len(vocab)
    for key in ("visual.ln_pre.weight", "visual.class_embedding", "visual.positional_embedding",
                "visual.transformer.resblocks.0.attn.in_proj_weight", "text_projection",
                "logit_scale"):
        assert key in sd, key
    img = a["image_features"] / np.linalg.norm(a["image_features"], axis=1, keepdims=True)
    txt = a["text_features"] / np.linalg.norm(a["text_features"], axis=1, keepdims=True)
    np.testing.assert_allclose(a["logits_per_image"], np.exp(a["logit_scale"]) * img @ txt.T,
                               rtol=1e-12, atol=0)
    np.testing.assert_array_equal(a["logit_scale"], sd["logit_scale"])


def test_bert_consistent():
    m, a = meta("hf-bert"), arrays("hf-bert")
    cfg = json.loads((ROOT / "hf-bert" / "config.json").read_text())
    tok = json.loads((ROOT / "hf-bert" / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    assert len(vocab) == cfg["vocab_size"] == m["tokenizer"]["vocab_size"]
    for special, i in m["tokenizer"]["special"].items():
        assert vocab[special] == i
    sd = load_file(ROOT / "hf-bert" / "model.safetensors")
    assert sd["bert.embeddings.word_embeddings.weight"].shape == (cfg["vocab_size"],
                                                                  cfg["hidden_size"])
    assert sd["bert.embeddings.token_type_embeddings.weight"].shape[0] == 2
    assert sorted(sd) == m["saved_keys"]
    ids, types, mask = a["input_ids"], a["token_type_ids"], a["attention_mask"]
    assert ids.shape == types.shape == mask.shape and ids.shape[1] <= cfg["max_position_embeddings"]
    assert (mask == 0).any() and (types == 1).any() and (ids == vocab["[MASK]"]).any()
    assert (ids[mask == 0] == vocab["[PAD]"]).all()
    b, t = ids.shape
    assert a["last_hidden_state"].shape == (b, t, cfg["hidden_size"])
    assert a["pooler_output"].shape == (b, cfg["hidden_size"])
    assert a["mlm_logits"].shape == (b, t, cfg["vocab_size"])
    assert a["nsp_logits"].shape == (b, 2)
    # the pooler is tanh(dense(h_CLS)): recompute it from the saved weights
    w, bias = sd["bert.pooler.dense.weight"], sd["bert.pooler.dense.bias"]
    np.testing.assert_allclose(np.tanh(a["last_hidden_state"][:, 0] @ w.T + bias),
                               a["pooler_output"], rtol=0, atol=1e-13)
