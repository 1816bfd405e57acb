"""models.BERT against a plain-NumPy float64 BERT written from HF ``transformers``
``models/bert/modeling_bert.py`` (BertEmbeddings, BertSelfAttention with separate query / key /
value projections and the additive padding mask, BertSelfOutput, BertIntermediate,
BertOutput, BertPooler, BertLMPredictionHead with the decoder tied to the word embeddings).

The reference holds its weights under HF's names in torch's (out, in) layout; the test maps
them onto the package's names (the mapping a checkpoint converter performs) and loads them
strictly, so the names are checked too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer import models
from tests.nn.reference import gradcheck_module

V, T_MAX, D, H, L, I, NT = 23, 9, 8, 2, 2, 12, 2  # I: intermediate (MLP) width
EPS = 1e-12


def tiny_cfg(**kw):
    return models.TextConfig(**{**dict(
        vocab_size=V, context_length=T_MAX, dim=D, depth=L, num_heads=H, mlp_ratio=I / D,
        norm_first=False, eps=EPS, act="gelu", type_vocab_size=NT, embed_norm=True,
        final_norm=False, pool="cls"), **kw})


# ---------------------------------------------------------------------------------------------
# the reference, in HF's names and layout

def hf_weights(seed):
    """Random weights of a tiny BertForPreTraining-like model (no NSP head), torch layout."""
    g = np.random.default_rng(seed)

    def lin(name, n_out, n_in):
        return {f"{name}.weight": g.standard_normal((n_out, n_in)) / math.sqrt(n_in),
                f"{name}.bias": g.standard_normal(n_out) * 0.1}

    def ln(name):
        return {f"{name}.weight": 1 + 0.2 * g.standard_normal(D),
                f"{name}.bias": 0.1 * g.standard_normal(D)}

    w = {"bert.embeddings.word_embeddings.weight": g.standard_normal((V, D)),
         "bert.embeddings.position_embeddings.weight": g.standard_normal((T_MAX, D)),
         "bert.embeddings.token_type_embeddings.weight": g.standard_normal((NT, D)),
         **ln("bert.embeddings.LayerNorm")}
    for i in range(L):
        p = f"bert.encoder.layer.{i}."
        for n in ("query", "key", "value"):
            w.update(lin(p + "attention.self." + n, D, D))
        w.update(lin(p + "attention.output.dense", D, D))
        w.update(ln(p + "attention.output.LayerNorm"))
        w.update(lin(p + "intermediate.dense", I, D))
        w.update(lin(p + "output.dense", D, I))
        w.update(ln(p + "output.LayerNorm"))
    w.update(lin("bert.pooler.dense", D, D))
    w.update(lin("cls.predictions.transform.dense", D, D))
    w.update(ln("cls.predictions.transform.LayerNorm"))
    w["cls.predictions.bias"] = g.standard_normal(V) * 0.1
    return w


def num_layers(w):
    return len({k.split(".")[3] for k in w if k.startswith("bert.encoder.layer.")})


def to_package_names(w):
    """HF names (out, in) -> the package's names (in, out); q, k, v stacked as qkv columns.
    (HF's NSP head ``cls.seq_relationship.*`` has no counterpart and is left out.)"""
    out = {"encoder.token_embed.weight": w["bert.embeddings.word_embeddings.weight"],
           "encoder.pos_embed": w["bert.embeddings.position_embeddings.weight"][None],
           "encoder.type_embed.weight": w["bert.embeddings.token_type_embeddings.weight"],
           "encoder.embed_norm.weight": w["bert.embeddings.LayerNorm.weight"],
           "encoder.embed_norm.bias": w["bert.embeddings.LayerNorm.bias"],
           "pooler.weight": w["bert.pooler.dense.weight"].T,
           "pooler.bias": w["bert.pooler.dense.bias"],
           "mlm_head.dense.weight": w["cls.predictions.transform.dense.weight"].T,
           "mlm_head.dense.bias": w["cls.predictions.transform.dense.bias"],
           "mlm_head.norm.weight": w["cls.predictions.transform.LayerNorm.weight"],
           "mlm_head.norm.bias": w["cls.predictions.transform.LayerNorm.bias"],
           "mlm_head.bias": w["cls.predictions.bias"]}
    for i in range(num_layers(w)):
        p, q = f"bert.encoder.layer.{i}.", f"encoder.blocks.{i}."
        s = p + "attention.self."
        out[q + "attn.qkv.weight"] = np.concatenate(
            [w[s + n + ".weight"].T for n in ("query", "key", "value")], axis=1)  # (D, 3D)
        out[q + "attn.qkv.bias"] = np.concatenate([w[s + n + ".bias"]
                                                   for n in ("query", "key", "value")])
        for ours, theirs in (("attn.proj", "attention.output.dense"),
                             ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense")):
            out[q + ours + ".weight"] = w[p + theirs + ".weight"].T
            out[q + ours + ".bias"] = w[p + theirs + ".bias"]
        for ours, theirs in (("norm1", "attention.output.LayerNorm"),
                             ("norm2", "output.LayerNorm")):
            out[q + ours + ".weight"] = w[p + theirs + ".weight"]
            out[q + ours + ".bias"] = w[p + theirs + ".bias"]
    return out


def _ln(x, w, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * w + b


_erf = np.vectorize(math.erf)


def _gelu(x):  # HF "gelu": the exact erf form
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _dense(w, name, x):  # torch nn.Linear: x W^T + b
    return x @ w[name + ".weight"].T + w[name + ".bias"]


def bert_reference(w, ids, attention_mask, token_type_ids, H=H):
    """(last_hidden_state, mlm logits, pooler_output) of HF BertForPreTraining's forward;
    H heads, the sizes from the weights."""
    B, T = ids.shape
    D = w["bert.embeddings.word_embeddings.weight"].shape[1]
    hd = D // H
    x = (w["bert.embeddings.word_embeddings.weight"][ids]
         + w["bert.embeddings.token_type_embeddings.weight"][token_type_ids]
         + w["bert.embeddings.position_embeddings.weight"][np.arange(T)][None])
    x = _ln(x, w["bert.embeddings.LayerNorm.weight"], w["bert.embeddings.LayerNorm.bias"])
    # HF get_extended_attention_mask: (1 - mask) * finfo.min added to the scores
    ext = (1.0 - attention_mask[:, None, None, :].astype(np.float64)) * np.finfo(np.float64).min
    for i in range(num_layers(w)):
        p = f"bert.encoder.layer.{i}."
        q = _dense(w, p + "attention.self.query", x)
        k = _dense(w, p + "attention.self.key", x)
        v = _dense(w, p + "attention.self.value", x)
        ctx = np.empty_like(x)
        for h in range(H):  # each head on its own slice of the width
            sl = slice(h * hd, (h + 1) * hd)
            s = q[:, :, sl] @ k[:, :, sl].transpose(0, 2, 1) / math.sqrt(hd) + ext[:, 0]
            s = s - s.max(-1, keepdims=True)
            a = np.exp(s) / np.exp(s).sum(-1, keepdims=True)
            ctx[:, :, sl] = a @ v[:, :, sl]
        a_ln = p + "attention.output.LayerNorm"
        x = _ln(x + _dense(w, p + "attention.output.dense", ctx), w[a_ln + ".weight"],
                w[a_ln + ".bias"])
        inter = _gelu(_dense(w, p + "intermediate.dense", x))
        x = _ln(x + _dense(w, p + "output.dense", inter),
                w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    t = _ln(_gelu(_dense(w, "cls.predictions.transform.dense", x)),
            w["cls.predictions.transform.LayerNorm.weight"],
            w["cls.predictions.transform.LayerNorm.bias"])
    logits = t @ w["bert.embeddings.word_embeddings.weight"].T + w["cls.predictions.bias"]
    pooled = np.tanh(_dense(w, "bert.pooler.dense", x[:, 0]))
    return x, logits, pooled


def make_bert(device, seed=0, pooler=True):
    w = hf_weights(seed)
    m = models.BERT(tiny_cfg(), pooler=pooler).to(dtype=np.float64)
    sd = to_package_names(w)
    if not pooler:
        sd = {k: v for k, v in sd.items() if not k.startswith("pooler.")}
    m.load_state_dict(sd, strict=True)
    m.to(device)
    m.eval()
    return m, w


def batch(rng, B, T, lengths=None):
    ids = rng.integers(0, V, size=(B, T))
    lengths = rng.integers(1, T + 1, size=B) if lengths is None else np.asarray(lengths)
    am = np.arange(T)[None, :] < lengths[:, None]  # (B, T): True = real token
    types = rng.integers(0, NT, size=(B, T))
    return ids, am, types


# ---------------------------------------------------------------------------------------------

def test_bert_equals_numpy_reference(device, rng):
    m, w = make_bert(device)
    ids, am, types = batch(rng, 3, 7, lengths=[7, 4, 1])  # full, padded, [CLS] only
    h_ref, logits_ref, pooled_ref = bert_reference(w, ids, am, types)
    h = m.forward_tokens(ids, attention_mask=am, token_type_ids=types).numpy()
    np.testing.assert_allclose(h, h_ref, rtol=0, atol=1e-10)  # padded positions included
    np.testing.assert_allclose(m.mlm_logits(ids, am, types).numpy(), logits_ref, rtol=0,
                               atol=1e-10)
    np.testing.assert_allclose(m.pooled(ids, am, types).numpy(), pooled_ref, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(m(ids, am, types).numpy(), h)
    # defaults: no mask = every token real; no types = all type 0 (HF's defaults)
    ones, zeros = np.ones_like(am), np.zeros_like(types)
    np.testing.assert_allclose(m.forward_tokens(ids).numpy(),
                               bert_reference(w, ids, ones, zeros)[0], rtol=0, atol=1e-10)


FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "interop" / "hf-bert"


def test_bert_equals_hf_transformers_fixture():
    """The committed reference outputs of a random-init HF ``BertForPreTraining`` (transformers
    5, float64; tests/interop/make_fixtures.py): our model with its weights mapped by name, and
    the NumPy reference above, both to 1e-10."""
    from safetensors.numpy import load_file

    meta = json.loads((FIXTURE / "meta.json").read_text())
    c = meta["config"]
    w = {k: v.astype(np.float64) for k, v in load_file(FIXTURE / "model.safetensors").items()}
    sd = to_package_names(w)
    # every HF key is used but the NSP head's 2; per layer q, k, v's 6 become qkv's 2
    assert len(sd) == len(w) - 2 - 4 * num_layers(w)
    cfg = tiny_cfg(vocab_size=c["vocab_size"], context_length=c["max_position_embeddings"],
                   dim=c["hidden_size"], depth=c["num_hidden_layers"],
                   num_heads=c["num_attention_heads"],
                   mlp_ratio=c["intermediate_size"] / c["hidden_size"],
                   type_vocab_size=c["type_vocab_size"])
    m = models.BERT(cfg).to(dtype=np.float64)
    m.load_state_dict(sd, strict=True)
    m.eval()
    z = np.load(FIXTURE / "io.npz")
    ids, am, tt = z["input_ids"], z["attention_mask"] == 1, z["token_type_ids"]
    assert (~am).any() and (tt == 1).any()  # padding and segment B are exercised
    ref = bert_reference(w, ids, am, tt, H=c["num_attention_heads"])
    outputs = (m.forward_tokens(ids, am, tt), m.mlm_logits(ids, am, tt), m.pooled(ids, am, tt))
    for name, got, mine in zip(("last_hidden_state", "mlm_logits", "pooler_output"), outputs,
                               ref):
        np.testing.assert_allclose(got.numpy(), z[name], rtol=0, atol=1e-10, err_msg=name)
        np.testing.assert_allclose(mine, z[name], rtol=0, atol=1e-10, err_msg=name)


@settings(max_examples=8, deadline=None)
@given(B=st.integers(1, 3), T=st.integers(1, T_MAX), seed=st.integers(0, 2**16))
def test_bert_property_random_batches(B, T, seed):
    """Any batch size, length (up to the position table) and padding pattern."""
    m, w = make_bert("cpu", seed=seed % 4)
    ids, am, types = batch(np.random.default_rng(seed), B, T)
    h_ref, logits_ref, pooled_ref = bert_reference(w, ids, am, types)
    np.testing.assert_allclose(m.forward_tokens(ids, am, types).numpy(), h_ref, rtol=0,
                               atol=1e-10)
    np.testing.assert_allclose(m.mlm_logits(ids, am, types).numpy(), logits_ref, rtol=0,
                               atol=1e-10)
    np.testing.assert_allclose(m.pooled(ids, am, types).numpy(), pooled_ref, rtol=0, atol=1e-10)


def test_padded_keys_do_not_change_real_tokens(device, rng):
    """With the mask, what sits in the padded positions (ids and types) cannot reach the real
    tokens' features."""
    m, _ = make_bert(device)
    ids, am, types = batch(rng, 2, 6, lengths=[6, 3])
    h = m.forward_tokens(ids, am, types).numpy()
    ids2, types2 = ids.copy(), types.copy()
    ids2[1, 3:] = (ids2[1, 3:] + 1) % V
    types2[1, 3:] = 1 - types2[1, 3:]
    h2 = m.forward_tokens(ids2, am, types2).numpy()
    np.testing.assert_allclose(h2[:, :3], h[:, :3], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(h2[0], h[0])
    assert not np.allclose(h2[1, 3:], h[1, 3:])


def test_mlm_decoder_is_tied_to_the_token_embedding(device):
    m, _ = make_bert(device)
    E = m.encoder.token_embed.weight
    assert m.mlm_head.embedding_weight is E
    sd = m.state_dict()
    assert sum(v.shape == (V, D) for v in sd.values()) == 1  # saved once, as the encoder's
    assert not any(k.startswith("mlm_head.embedding") for k in sd)
    # the gradient of the logits reaches E through both uses (input lookup and decoder)
    ids = np.array([[1, 2, 3]])
    m.mlm_logits(ids).sum().backward()
    g_both = mt.backend.to_numpy(E.grad)
    assert np.abs(g_both[[0, 4, 5]]).sum() > 0  # rows not looked up: decoder gradient only


def test_gradcheck_bert_heads(device):
    """float64 gradients of the MLM logits and the pooled output w.r.t. every parameter
    (random upstream gradient), padding and token types included. Inputs over 16 elements are
    checked along random directions: the key part of ``qkv.bias`` (24) has an exactly zero
    gradient (softmax is shift invariant per query), so element by element its numeric
    derivative would be pure rounding noise (~1e-8 with 184 logits of size ~5)."""
    m, _ = make_bert(device)
    ids, am, types = batch(np.random.default_rng(3), 2, 4, lengths=[4, 2])
    assert gradcheck_module(lambda: m.mlm_logits(ids, am, types), m, [], max_elements=16)
    assert gradcheck_module(lambda: m.pooled(ids, am, types), m, [], max_elements=16)


def test_parameter_names_and_pooler_switch():
    m = models.BERT(tiny_cfg())
    names = set(m.state_dict())
    assert {"encoder.type_embed.weight", "encoder.embed_norm.weight", "pooler.weight",
            "mlm_head.dense.weight", "mlm_head.norm.weight", "mlm_head.bias"} <= names
    assert not any(n.startswith("encoder.norm.") for n in names)  # BERT has no final norm
    m2 = models.BERT(tiny_cfg(), pooler=False)
    assert not any(n.startswith("pooler") for n in m2.state_dict())
    with pytest.raises(ValueError, match=r"BERT.pooled: this model was built with pooler=False"):
        m2.pooled(np.array([[1, 2]]))
    with pytest.raises(ValueError, match=r"BERT: the encoder is bidirectional"):
        models.BERT(tiny_cfg(causal=True))


def test_mlm_head_switch():
    """A plain BertModel (no cls.predictions.*) is BERT(cfg, mlm_head=False): no mlm_head
    parameters, the same encoder and pooler outputs, and mlm_logits names what is missing."""
    m = models.BERT(tiny_cfg()).to(dtype=np.float64)
    bare = models.BERT(tiny_cfg(), mlm_head=False).to(dtype=np.float64)
    assert not hasattr(bare, "mlm_head") and not bare.has_mlm_head
    names = set(bare.state_dict())
    assert not any(n.startswith("mlm_head") for n in names)
    assert names == {n for n in m.state_dict() if not n.startswith("mlm_head")}
    bare.load_state_dict({k: v for k, v in m.state_dict().items() if k in names}, strict=True)
    ids, am, types = batch(np.random.default_rng(5), 2, 4, lengths=[4, 3])
    np.testing.assert_array_equal(bare.forward_tokens(ids, am, types).numpy(),
                                  m.forward_tokens(ids, am, types).numpy())
    np.testing.assert_array_equal(bare.pooled(ids, am, types).numpy(),
                                  m.pooled(ids, am, types).numpy())
    with pytest.raises(ValueError, match=r"BERT.mlm_logits: this model was built with "
                                         r"mlm_head=False"):
        bare.mlm_logits(ids)
    assert "mlm_head=False" in repr(bare)


# bert-base-uncased (HF config.json: vocab_size 30522, max_position_embeddings 512,
# hidden_size 768, num_hidden_layers 12, num_attention_heads 12, intermediate_size 3072,
# hidden_act "gelu", layer_norm_eps 1e-12, type_vocab_size 2; Devlin et al. 2019, sec. 3)
BERT_BASE = dict(vocab_size=30522, context_length=512, dim=768, depth=12, num_heads=12,
                 mlp_ratio=4.0, norm_first=False, eps=1e-12, act="gelu", type_vocab_size=2,
                 embed_norm=True, final_norm=False, pool="cls")


def test_bert_base_preset_when_present():
    if "bert-base" not in models.TextConfig.presets():
        pytest.skip("TextConfig has no 'bert-base' preset yet")
    assert models.TextConfig.preset("bert-base") == models.TextConfig(**BERT_BASE)


@pytest.mark.slow
def test_bert_base_parameter_count():
    """HF BertModel + BertLMPredictionHead (no NSP head), counted module by module."""
    c = models.TextConfig(**BERT_BASE)
    Dm, Im = c.dim, int(c.dim * c.mlp_ratio)
    lin = lambda i, o: i * o + o  # noqa: E731
    emb = (c.vocab_size + c.context_length + c.type_vocab_size) * Dm + 2 * Dm
    layer = 4 * lin(Dm, Dm) + lin(Dm, Im) + lin(Im, Dm) + 2 * 2 * Dm
    head = lin(Dm, Dm) + 2 * Dm + c.vocab_size  # transform dense + LayerNorm + decoder bias
    m = models.BERT(c)
    assert sum(p.data.size for p in m.parameters()) == emb + c.depth * layer + lin(Dm, Dm) + head
