"""models.TextTransformer: forward written out in NumPy, causal masking, pooling, errors."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import functional as F
from minitransformer import models, nn
from tests.nn.reference import block, gradcheck_module, layer_norm, params

V, T_MAX, D = 20, 8, 8


def make_text(device, seed=0, dtype=np.float64, **kw):
    mt.manual_seed(seed)
    cfg = models.TextConfig(**{**dict(vocab_size=V, context_length=T_MAX, dim=D, depth=2,
                                      num_heads=2, mlp_ratio=2.0), **kw})
    m = models.TextTransformer(cfg).to(device, dtype=dtype)
    m.eval()
    for name, p in m.named_parameters():  # LayerNorm away from (1, 0)
        if "norm" in name:
            p.data = p.data + mt.tensor(np.random.default_rng(seed).standard_normal(p.shape) * 0.3,
                                        device=p.device, dtype=dtype).data
    return m


def tokens_reference(m, ids, keys=None):
    """E[ids] + P[:T], blocks with the causal and/or key-padding mask, final norm."""
    cfg, p = m.cfg, params(m)
    T = ids.shape[1]
    x = p["token_embed.weight"][ids] + p["pos_embed"][:, :T]
    mask = np.ones((ids.shape[0], 1, T, T), dtype=bool)
    if cfg.causal:
        mask &= np.tril(np.ones((T, T), dtype=bool))
    if keys is not None:
        mask &= keys[:, None, None, :]
    for i in range(cfg.depth):
        x = block(x, p, cfg.num_heads, cfg.norm_first, cfg.eps, cfg.act, mask,
                  prefix=f"blocks.{i}.")
    return layer_norm(x, p["norm.weight"], p["norm.bias"], cfg.eps)


IDS = np.array([[2, 7, 9, 4, 0, 0], [2, 11, 12, 13, 5, 4]])  # [CLS] ... [EOT]=4 [PAD]=0


@pytest.mark.parametrize("causal", [False, True])
def test_forward_tokens_equals_reference(device, causal):
    m = make_text(device, causal=causal, pad_id=0)
    keys = IDS != 0
    np.testing.assert_allclose(m.forward_tokens(IDS).numpy(), tokens_reference(m, IDS, keys),
                               rtol=1e-9, atol=1e-11)
    m2 = make_text(device, causal=causal)  # no pad_id: every token is a key
    np.testing.assert_allclose(m2.forward_tokens(IDS).numpy(), tokens_reference(m2, IDS),
                               rtol=1e-9, atol=1e-11)


def test_causal_mask_leaks_nothing_from_the_future(device, rng):
    m = make_text(device, causal=True)
    ids = rng.integers(0, V, size=(2, T_MAX))
    y = m.forward_tokens(ids).numpy()
    for t in range(T_MAX - 1):
        ids2 = ids.copy()
        ids2[:, t + 1] = (ids2[:, t + 1] + 1 + rng.integers(0, V - 1, size=2)) % V  # changed
        y2 = m.forward_tokens(ids2).numpy()
        np.testing.assert_array_equal(y2[:, :t + 1], y[:, :t + 1])
        assert not np.allclose(y2[:, t + 1], y[:, t + 1])


def test_pooling(device):
    ids = np.array([[2, 7, 4, 9, 4, 0], [2, 11, 12, 13, 5, 4]])  # pool at the FIRST [EOT]
    for pool, eot_id in (("cls", None), ("eot", 4), ("eot", None), ("mean", None)):
        m = make_text(device, pool=pool, eot_id=eot_id, pad_id=0)
        tok = m.forward_tokens(ids).numpy()
        out = m(ids).numpy()
        if pool == "cls":
            ref = tok[:, 0]
        elif eot_id is not None:
            ref = tok[[0, 1], [2, 5]]  # first [EOT] in each row
        elif pool == "eot":
            ref = tok[[0, 1], ids.argmax(-1)]  # CLIP: the largest id
        else:
            keys = ids != 0
            ref = (tok * keys[:, :, None]).sum(1) / keys.sum(1, keepdims=True)
        np.testing.assert_allclose(out, ref, rtol=1e-12)
    # an explicit attention_mask overrides pad_id
    m = make_text(device, pool="mean")
    am = np.array([[True] * 3 + [False] * 3, [True] * 6])
    tok = m.forward_tokens(ids, attention_mask=am).numpy()
    np.testing.assert_allclose(tok, tokens_reference(m, ids, am), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(m(ids, attention_mask=am).numpy()[0], tok[0, :3].mean(0),
                               rtol=1e-12)


def test_padding_after_eot_does_not_change_clip_feature(device, rng):
    """openai/CLIP clip/model.py (causal build_attention_mask, EOT pooling): with the causal
    mask, tokens after EOT cannot reach the EOT feature."""
    m = make_text(device, causal=True, pool="eot", eot_id=4)
    y = m(IDS).numpy()
    ids2 = IDS.copy()
    ids2[0, 4:] = rng.integers(5, V, size=2)
    np.testing.assert_array_equal(m(ids2).numpy(), y)


def test_shorter_sequences_use_the_first_positions(device):
    m = make_text(device)
    np.testing.assert_allclose(m.forward_tokens(IDS[:, :3]).numpy(),
                               tokens_reference(m, IDS[:, :3]), rtol=1e-9, atol=1e-11)


def test_sinusoidal_positions_are_the_seed_table_and_frozen():
    m = models.TextTransformer(models.TextConfig.preset("text-nano", pos_embed="sinusoidal"))
    assert not m.pos_embed.requires_grad
    np.testing.assert_allclose(m.pos_embed.numpy()[0], nn.sinusoidal_position_encoding(16, 32),
                               rtol=1e-6, atol=1e-7)


def test_parameter_names():
    m = models.TextTransformer(models.TextConfig.preset("text-nano"))
    sd = m.state_dict()
    assert sd["token_embed.weight"].shape == (128, 32) and sd["pos_embed"].shape == (1, 16, 32)
    assert "blocks.1.attn.qkv.weight" in sd and "norm.weight" in sd


def test_bad_inputs():
    m = models.TextTransformer(models.TextConfig.preset("text-nano", pool="eot", eot_id=4))
    with pytest.raises(ValueError, match=r"sequence length 17 is longer than the position table "
                                         r"\(context_length=16\)"):
        m(np.zeros((1, 17), dtype=np.int64))
    with pytest.raises(ValueError, match=r"ids must be integers of shape \(B, T\)"):
        m(np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"no eot_id=4 in rows \[1\]"):
        m(np.array([[2, 4, 0], [2, 5, 0]]))
    with pytest.raises(ValueError, match=r"attention_mask must be boolean of shape \(B, T\) = "
                                         r"\(1, 3\)"):
        m(np.array([[2, 4, 0]]), attention_mask=np.ones((1, 4), bool))


def test_gradcheck_text_transformer(device):
    m = make_text(device, causal=True, pool="eot", eot_id=4, pad_id=0, dim=4, depth=2,
                  mlp_ratio=1.0, context_length=6)
    assert gradcheck_module(lambda: m(IDS), m, [], max_elements=24)


# ---------------------------------------------------------------------------------------------
# BERT-style embeddings: token types, embedding LayerNorm, no final norm (issue 12)

def make_bert_like(device, seed=0, **kw):
    """A post-norm encoder with BERT's embedding switches, every parameter random."""
    m = make_text(device, seed=seed, **{**dict(norm_first=False, eps=1e-12, type_vocab_size=3,
                                               embed_norm=True, final_norm=False), **kw})
    g = np.random.default_rng(seed + 1)
    for _, p in m.named_parameters():  # biases and norms away from their init too
        p.data = p.data + mt.tensor(g.standard_normal(p.shape) * 0.1, device=p.device,
                                    dtype=p.dtype).data
    return m


def embeddings_reference(p, ids, types, eps, embed_norm=True):
    """E[ids] + P[:T] + S[types] (types None: row 0), then LayerNorm."""
    T = ids.shape[1]
    S = p["type_embed.weight"]
    x = p["token_embed.weight"][ids] + p["pos_embed"][0, :T] + S[np.zeros_like(ids)
                                                                 if types is None else types]
    if embed_norm:
        x = layer_norm(x, p["embed_norm.weight"], p["embed_norm.bias"], eps)
    return x


TYPES = np.array([[0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 1, 0]])


@pytest.mark.parametrize("embed_norm", [True, False])
def test_type_embeddings_embed_norm_and_no_final_norm(device, embed_norm):
    m = make_bert_like(device, pad_id=0, embed_norm=embed_norm)
    sd = m.state_dict()
    assert sd["type_embed.weight"].shape == (3, D) and not any(k.startswith("norm.") for k in sd)
    assert ("embed_norm.weight" in sd) == embed_norm and not hasattr(m, "norm")
    cfg, p = m.cfg, params(m)
    mask = np.broadcast_to((IDS != 0)[:, None, None, :], (2, 1, 6, 6))
    for types in (TYPES, None):
        x = embeddings_reference(p, IDS, types, cfg.eps, embed_norm)
        for i in range(cfg.depth):
            x = block(x, p, cfg.num_heads, False, cfg.eps, cfg.act, mask, prefix=f"blocks.{i}.")
        got = m.forward_tokens(IDS, token_type_ids=types).numpy()
        np.testing.assert_allclose(got, x, rtol=1e-10, atol=1e-12)
    # the default is HF's: token types all zero
    np.testing.assert_array_equal(m.forward_tokens(IDS).numpy(),
                                  m.forward_tokens(IDS, token_type_ids=np.zeros_like(IDS)).numpy())
    # a Tensor and a device array of type ids are accepted; pooling passes them through
    tt = mt.tensor(TYPES, device=device)
    np.testing.assert_array_equal(m(IDS, token_type_ids=tt).numpy(),
                                  m.forward_tokens(IDS, token_type_ids=TYPES).numpy()[:, 0])


def test_gradcheck_bert_embedding_path(device):
    """Gradients through E[ids] + P + S[types] -> LayerNorm -> post-norm blocks, every
    parameter (type rows included: types 0, 1 and 2 are all used), random upstream gradient."""
    m = make_bert_like(device, pad_id=0, dim=4, depth=1, mlp_ratio=1.0, context_length=6)
    assert gradcheck_module(lambda: m.forward_tokens(IDS, token_type_ids=TYPES), m, [],
                            max_elements=24)
    assert gradcheck_module(lambda: m.forward_tokens(IDS), m, [], max_elements=24)  # S_0 only


def test_token_type_errors():
    m = make_bert_like("cpu")
    with pytest.raises(ValueError, match=r"token_type_ids must be in \[0, type_vocab_size=3\), "
                                         r"got values in \[1, 3\]"):
        m.forward_tokens(IDS, token_type_ids=np.minimum(TYPES + 1, 3))
    with pytest.raises(ValueError, match=r"token_type_ids must be in \[0, type_vocab_size=3\), "
                                         r"got values in \[-1, 1\]"):
        m(IDS, token_type_ids=TYPES - 1)
    with pytest.raises(ValueError, match=r"token_type_ids must be integers of the ids' shape "
                                         r"\(B, T\) = \(2, 6\), got shape \(2, 5\)"):
        m.forward_tokens(IDS, token_type_ids=TYPES[:, :5])
    with pytest.raises(ValueError, match=r"got shape \(2, 6\) and dtype float64"):
        m.forward_tokens(IDS, token_type_ids=TYPES.astype(np.float64))
    plain = make_text("cpu")
    with pytest.raises(ValueError, match=r"token_type_ids given to a model without token types "
                                         r"\(type_vocab_size=0\)"):
        plain.forward_tokens(IDS, token_type_ids=TYPES)
    # check=False skips the value read (the embedding's own range check still applies)
    with pytest.raises(ValueError, match=r"Embedding: ids must be in \[0, 3\)"):
        m.forward_tokens(IDS, token_type_ids=TYPES + 1, check=False)


# ---------------------------------------------------------------------------------------------
# eot validation by the data-check switch (issue 14: no device-to-host read per call)

EOT_IDS = np.array([[2, 4, 0], [2, 5, 0]])  # row 1 has no eot_id=4


def test_eot_check_follows_the_data_check_switch(device):
    m = make_text(device, pool="eot", eot_id=4)
    dev_ids = mt.tensor(EOT_IDS, device=device).data
    for ids in (EOT_IDS, dev_ids):  # on by default, host and device ids alike
        with pytest.raises(ValueError, match=r"no eot_id=4 in rows \[1\]"):
            m(ids)
        with pytest.raises(ValueError, match=r"no eot_id=4 in rows \[1\]"):
            m.pool(m.forward_tokens(ids), ids)
    with pytest.raises(ValueError, match=r"no eot_id=4 in rows \[1\]"):
        m.validate_ids(EOT_IDS)
    with F.use_data_checks(False):
        with pytest.raises(ValueError, match=r"no eot_id=4 in rows \[1\]"):
            m(EOT_IDS)  # NumPy ids: checked on the host whatever the switch (free)
        with pytest.raises(ValueError, match=r"no eot_id=4 in rows \[1\]"):
            m(dev_ids, check=True)  # asked for
        y_dev = None if device == "cpu" else m(dev_ids).numpy()  # device ids: not read
    # unchecked: the row without eot_id pools to NaN, the other row is its eot feature
    y = m(EOT_IDS, check=False).numpy()
    assert np.isnan(y[1]).all() and np.isfinite(y[0]).all()
    np.testing.assert_array_equal(y[0], m.forward_tokens(EOT_IDS).numpy()[0, 1])
    if y_dev is not None:  # on the CPU every array is a host array, checked (above)
        np.testing.assert_array_equal(y_dev, y)


def test_pooling_reads_nothing_from_the_device_with_checks_off(device):
    """On the CuPy stand-in: pooling device ids does no device-to-host transfer inside
    ``use_data_checks(False)`` (no check, no data-dependent index), whatever the pooling; the
    eot check is one read when on or asked for."""
    if device == "cpu":
        pytest.skip("the transfer counter is the CuPy stand-in's (the cuda half)")
    cp = mt.backend.cupy()
    ids = mt.tensor(np.array([[2, 7, 4, 9, 4, 0], [2, 11, 12, 13, 5, 4]]), device=device).data
    for pool, eot_id in (("cls", None), ("eot", 4), ("eot", None), ("mean", None)):
        m = make_text(device, pool=pool, eot_id=eot_id, pad_id=0)
        tok = m.forward_tokens(ids)
        cp.reset_transfers()
        with F.use_data_checks(False):
            m.pool(tok, ids)
            assert cp.transfers() == 0, (pool, cp.transfer_counts())
            if eot_id is not None:
                m.pool(tok, ids, check=True)
                assert cp.transfers() == 1, cp.transfer_counts()
        if eot_id is not None:
            cp.reset_transfers()
            m.pool(tok, ids)  # the switch's default: checked, one read
            assert cp.transfers() == 1, cp.transfer_counts()


def test_validate_ids():
    m = make_bert_like("cpu", pool="eot", eot_id=4)
    m.validate_ids(IDS, token_type_ids=TYPES)  # a valid dataset: no error
    with pytest.raises(ValueError, match=r"ids must be in \[0, vocab_size=20\), got values in "
                                         r"\[0, 20\]"):
        m.validate_ids(np.where(IDS == 13, 20, IDS))
    with pytest.raises(ValueError, match=r"token_type_ids must be in \[0, type_vocab_size=3\)"):
        m.validate_ids(IDS, token_type_ids=TYPES + 1)
    with pytest.raises(ValueError, match=r"sequence length 9 is longer than the position table"):
        m.validate_ids(np.full((2, 9), 4))


def test_validate_ids_reads_once_per_check_on_the_device(device):
    """On the CuPy stand-in: a valid dataset of device arrays costs one device-to-host read
    per check (the ids' range, the eot rows, the type ids' range), not a read each of the min
    and the max; the min and max are read only to name them in the error."""
    if device == "cpu":
        pytest.skip("the transfer counter is the CuPy stand-in's (the cuda half)")
    cp = mt.backend.cupy()
    ids, types = (mt.tensor(a, device=device).data for a in (IDS, TYPES))
    for kw, reads in ((dict(), 1), (dict(pool="eot", eot_id=4), 2)):
        m = make_bert_like(device, **kw)
        with cp.counting() as c:
            m.validate_ids(ids)
        assert (c.to_host, c.to_device) == (reads, 0), c.kinds()
        with cp.counting() as c:
            m.validate_ids(ids, token_type_ids=types)
        assert (c.to_host, c.to_device) == (reads + 1, 0), c.kinds()
    bad = mt.tensor(np.where(IDS == 13, 20, IDS), device=device).data
    with cp.counting() as c, pytest.raises(ValueError, match=r"got values in \[0, 20\]"):
        m.validate_ids(bad)
    assert c.to_host == 3, c.kinds()  # the check, then min and max for the message
