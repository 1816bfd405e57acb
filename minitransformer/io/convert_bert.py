"""Map Hugging Face BERT state dicts (torch layout, as NumPy arrays) onto ``models.BERT``.

The layout is HF transformers' ``models/bert/modeling_bert.py`` (``BertEmbeddings``,
``BertSelfAttention``, ``BertSelfOutput``, ``BertIntermediate``, ``BertOutput``, ``BertPooler``,
``BertLMPredictionHead``), as ``BertForPreTraining`` / ``BertForMaskedLM`` / ``BertModel``
save it. A leading ``bert.`` is stripped first (``BertModel`` saves without it, and with no
``cls.*``: ``load_pretrained`` then builds ``models.BERT(mlm_head=False)``). BERT's block
is post-norm, which is ``nn.TransformerBlock(norm_first=False)``: ``x = norm1(x + attn(x))``,
``x = norm2(x + mlp(x))``, so ``attention.output.LayerNorm`` is ``norm1`` and
``output.LayerNorm`` is ``norm2``. ``{i}`` is the layer index; every torch Linear weight
(out, in) is transposed to ours (in, out).

=================================================  ===============================  ==========
checkpoint key (shape)                             ours (shape)                     transform
=================================================  ===============================  ==========
``embeddings.word_embeddings.weight`` (V, D)       ``encoder.token_embed.weight``   copy
``embeddings.position_embeddings.weight`` (P, D)   ``encoder.pos_embed`` (1, P, D)  batch axis
``embeddings.token_type_embeddings.weight``        ``encoder.type_embed.weight``    copy
``embeddings.LayerNorm.{weight,bias}``             ``encoder.embed_norm.*``         copy
``encoder.layer.{i}.attention.self.query.weight``  ``encoder.blocks.{i}.attn.qkv.``  columns
  ``...self.key.weight``, ``...self.value.weight``   ``weight`` (D, 3D)               [Q|K|V]
``encoder.layer.{i}.attention.self.{query,key,``   ``encoder.blocks.{i}.attn.qkv.``  concat
  ``value}.bias`` (D) each                           ``bias`` (3D)                    [q, k, v]
``encoder.layer.{i}.attention.output.dense.*``     ``encoder.blocks.{i}.attn.proj``  linear
``encoder.layer.{i}.attention.output.LayerNorm``   ``encoder.blocks.{i}.norm1.*``    copy
``encoder.layer.{i}.intermediate.dense.*``         ``encoder.blocks.{i}.mlp.fc1.*``  linear
``encoder.layer.{i}.output.dense.*``               ``encoder.blocks.{i}.mlp.fc2.*``  linear
``encoder.layer.{i}.output.LayerNorm.*``           ``encoder.blocks.{i}.norm2.*``    copy
``pooler.dense.*``                                 ``pooler.*``                     linear
``cls.predictions.transform.dense.*``              ``mlm_head.dense.*``             linear
``cls.predictions.transform.LayerNorm.*``          ``mlm_head.norm.*``              copy
``cls.predictions.bias`` (V)                       ``mlm_head.bias``                copy
=================================================  ===============================  ==========

Q, K and V are three (D, D) Linears in HF; ours is one fused ``qkv`` Linear whose columns
are [W_Q | W_K | W_V] with heads contiguous inside each, which is how HF splits each of the
three projections into heads (``transpose_for_scores``: view (B, T, H, hd)), so the three
transposed weights are concatenated along the output axis. Old TF-converted checkpoints name
LayerNorm parameters ``gamma`` / ``beta``: read as ``weight`` / ``bias``.

Knowingly dropped (each one tested):

- ``cls.seq_relationship.{weight,bias}``: the next-sentence-prediction head of
  ``BertForPreTraining``, which ``models.BERT`` does not have;
- ``embeddings.position_ids`` and ``embeddings.token_type_ids``: index buffers
  (``arange(P)`` and zeros) older HF versions saved; checked to be exactly that;
- ``cls.predictions.decoder.weight``: tied to ``word_embeddings`` (HF ties them, and
  ``MLMHead`` reads the encoder's token embedding); checked equal, else an error;
- ``cls.predictions.decoder.bias``: tied to ``cls.predictions.bias``; checked equal (or used as
  the bias when it is the only one saved).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from .keymap import Converted, KeyMap, transform

__all__ = ["BERT_KEYMAP", "POOLER", "convert_hf_bert_state_dict"]

POOLER = "pooler"  # our name of the pooler Linear (models.BERT)

_L = "encoder.layer.{i}."
_B = "encoder.blocks.{i}."
BERT_KEYMAP = KeyMap([
    ("embeddings.word_embeddings.weight", "encoder.token_embed.weight", "copy"),
    ("embeddings.position_embeddings.weight", "encoder.pos_embed", "table"),
    ("embeddings.token_type_embeddings.weight", "encoder.type_embed.weight", "copy"),
    ("embeddings.LayerNorm.weight", "encoder.embed_norm.weight", "copy"),
    ("embeddings.LayerNorm.bias", "encoder.embed_norm.bias", "copy"),
    (_L + "attention.output.dense.weight", _B + "attn.proj.weight", "linear"),
    (_L + "attention.output.dense.bias", _B + "attn.proj.bias", "copy"),
    (_L + "attention.output.LayerNorm.weight", _B + "norm1.weight", "copy"),
    (_L + "attention.output.LayerNorm.bias", _B + "norm1.bias", "copy"),
    (_L + "intermediate.dense.weight", _B + "mlp.fc1.weight", "linear"),
    (_L + "intermediate.dense.bias", _B + "mlp.fc1.bias", "copy"),
    (_L + "output.dense.weight", _B + "mlp.fc2.weight", "linear"),
    (_L + "output.dense.bias", _B + "mlp.fc2.bias", "copy"),
    (_L + "output.LayerNorm.weight", _B + "norm2.weight", "copy"),
    (_L + "output.LayerNorm.bias", _B + "norm2.bias", "copy"),
    ("pooler.dense.weight", POOLER + ".weight", "linear"),
    ("pooler.dense.bias", POOLER + ".bias", "copy"),
    ("cls.predictions.transform.dense.weight", "mlm_head.dense.weight", "linear"),
    ("cls.predictions.transform.dense.bias", "mlm_head.dense.bias", "copy"),
    ("cls.predictions.transform.LayerNorm.weight", "mlm_head.norm.weight", "copy"),
    ("cls.predictions.transform.LayerNorm.bias", "mlm_head.norm.bias", "copy"),
    ("cls.predictions.bias", "mlm_head.bias", "copy"),
])

_QKV = re.compile(r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)$")
_OURS_QKV = re.compile(r"^encoder\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$")
_PARTS = ("query", "key", "value")


def _strip(key: str) -> str:
    key = key[len("bert."):] if key.startswith("bert.") else key
    if key.endswith(".gamma") and "LayerNorm" in key:  # TF-era names
        key = key[: -len("gamma")] + "weight"
    elif key.endswith(".beta") and "LayerNorm" in key:
        key = key[: -len("beta")] + "bias"
    return key


def _source_of(ours: str) -> str | None:
    m = _OURS_QKV.match(ours)
    if m:
        i, kind = m.groups()
        return f"bert.encoder.layer.{i}.attention.self.{{query,key,value}}.{kind}"
    src = BERT_KEYMAP.source(ours)
    if src is None:
        return None
    return src if src.startswith("cls.") else "bert." + src


def convert_hf_bert_state_dict(sd: dict[str, Any]) -> Converted:
    """Convert a HF BERT state dict (name -> NumPy array, torch layout) to ``models.BERT``'s
    names and orientations (the table in this module's docstring).

    Returns a ``Converted`` (``arrays``, ``origin``, ``unknown`` keys, ``dropped`` keys with
    the reason). Raises ValueError naming the key for an untied MLM decoder, index buffers
    that are not ``arange`` / zeros, or a layer with only some of query / key / value
    (``load_pretrained`` re-raises it as ``PretrainedLoadError`` naming the family)."""
    plain: dict[str, np.ndarray] = {}
    names: dict[str, str] = {}  # stripped -> original key
    for key, v in sd.items():
        s = _strip(key)
        if s in plain:
            raise ValueError(f"convert_hf_bert_state_dict: {names[s]!r} and {key!r} both map "
                             f"to {s!r}")
        plain[s], names[s] = np.asarray(v), key
    dropped: dict[str, str] = {}
    for k in ("cls.seq_relationship.weight", "cls.seq_relationship.bias"):
        if k in plain:
            plain.pop(k)
            dropped[names[k]] = "next-sentence-prediction head (models.BERT has none)"
    for k, want in (("embeddings.position_ids", "arange"), ("embeddings.token_type_ids", "zeros")):
        if k in plain:
            ids = plain.pop(k).reshape(-1)
            ok = (np.array_equal(ids, np.arange(ids.size)) if want == "arange"
                  else not np.any(ids))
            if not ok:
                raise ValueError(f"convert_hf_bert_state_dict: {names[k]} should be the index "
                                 f"buffer {want}({ids.size}), got other values")
            dropped[names[k]] = "index buffer, checked; rebuilt from positions"
    words = plain.get("embeddings.word_embeddings.weight")
    if "cls.predictions.decoder.weight" in plain:
        dec = plain.pop("cls.predictions.decoder.weight")
        if words is None or dec.shape != words.shape or not np.array_equal(dec, words):
            raise ValueError(
                "convert_hf_bert_state_dict: cls.predictions.decoder.weight differs from "
                "bert.embeddings.word_embeddings.weight; models.BERT's MLM decoder is tied to "
                "the token embedding, so an untied decoder is not supported")
        dropped[names["cls.predictions.decoder.weight"]] = "tied to word_embeddings, checked"
    if "cls.predictions.decoder.bias" in plain:
        dec_b = plain.pop("cls.predictions.decoder.bias")
        if "cls.predictions.bias" not in plain:
            plain["cls.predictions.bias"] = dec_b
            names["cls.predictions.bias"] = names["cls.predictions.decoder.bias"]
        else:
            if not np.array_equal(dec_b, plain["cls.predictions.bias"]):
                raise ValueError(
                    "convert_hf_bert_state_dict: cls.predictions.decoder.bias differs from "
                    "cls.predictions.bias (HF ties them); an untied pair is not supported")
            dropped[names["cls.predictions.decoder.bias"]] = "tied to cls.predictions.bias"
    qkv: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    rest: dict[str, np.ndarray] = {}
    for k, v in plain.items():
        m = _QKV.match(k)
        if m:
            i, part, kind = m.groups()
            qkv.setdefault((i, kind), {})[part] = v
        else:
            rest[k] = v
    out = BERT_KEYMAP.convert(rest)
    out.unknown = [names[k] for k in out.unknown]
    out.origin = {o: names[s] for o, s in out.origin.items()}
    for (i, kind), parts in qkv.items():
        absent = [p for p in _PARTS if p not in parts]
        if absent:
            raise ValueError(f"convert_hf_bert_state_dict: layer {i} has no attention.self."
                             f"{'/'.join(absent)}.{kind} beside the other projections")
        ours = f"encoder.blocks.{i}.attn.qkv.{kind}"
        src = [f"encoder.layer.{i}.attention.self.{p}.{kind}" for p in _PARTS]
        if kind == "weight":
            ws = [transform("linear", names[s], parts[p]) for s, p in zip(src, _PARTS)]
            out.arrays[ours] = np.concatenate(ws, axis=1)  # 3 x (D, D) -> (D, 3D) [Q|K|V]
        else:
            out.arrays[ours] = np.concatenate([parts[p] for p in _PARTS])  # 3 x (D,) -> (3D,)
        out.origin[ours] = ", ".join(names[s] for s in src)
    out.dropped.update(dropped)
    out.source_of = _source_of
    return out
