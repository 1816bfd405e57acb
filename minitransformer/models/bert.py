"""``BERT``: a BERT-style text encoder with (optionally) its masked-LM head and pooler (Devlin
et al. 2019; HF ``transformers`` ``models/bert/modeling_bert.py``: ``BertModel``,
``BertForMaskedLM``).

    x   = LN_e(E[ids] + P[:T] + S[types])                   BertEmbeddings      (B, T, D)
    x   = LN2(x' + MLP(x')),  x' = LN1(x + Attn(x))          BertLayer, post-norm (B, T, D)
    MLM = LN_h(gelu(x W_d + b_d)) E^T + b                    BertLMPredictionHead (B, T, V)
    pooled = tanh(x[:, 0] W_p + b_p)                         BertPooler           (B, D)

with padded keys masked in attention and no norm after the last layer. The encoder is a
``TextTransformer`` with ``TextConfig.preset("bert-base")``'s switches (``norm_first=False``,
``type_vocab_size=2``, ``embed_norm=True``, ``final_norm=False``, ``eps=1e-12``, erf GELU).
"""

from __future__ import annotations

from typing import Any

from .. import functional as F
from ..autograd import Tensor
from ..nn import Linear, Module
from .config import TextConfig
from .heads import MLMHead
from .text import TextTransformer

__all__ = ["BERT"]


class BERT(Module):
    """BERT's encoder and (optionally) its MLM head and pooler, under the names a converted HF
    checkpoint loads into:

    - ``encoder``: a ``TextTransformer(cfg)`` (HF ``bert.embeddings`` and ``bert.encoder``);
    - ``mlm_head`` (when ``mlm_head=True``): ``models.heads.MLMHead`` (HF ``cls.predictions``:
      ``transform.dense``, GELU, ``transform.LayerNorm`` with ``cfg.eps``, then the decoder),
      its output weight *tied* to ``encoder.token_embed.weight`` (E, (V, D); not a parameter
      of the head) plus the output bias ``mlm_head.bias`` (V,). A plain ``BertModel`` checkpoint
      (``BertModel.save_pretrained``, sentence encoders) has no ``cls.predictions.*``: build it
      with ``mlm_head=False``, and ``mlm_logits`` raises;
    - ``pooler`` (when ``pooler=True``): ``Linear(D, D)`` applied to the first token's feature,
      then tanh (HF ``bert.pooler.dense``).

    ``attention_mask`` (B, T) bool, True = real token (HF's 1); ``token_type_ids`` (B, T)
    integers in [0, type_vocab_size), default zeros; ``check`` as in ``TextTransformer``.
    """

    def __init__(self, cfg: TextConfig, pooler: bool = True, mlm_head: bool = True):
        super().__init__()
        if cfg.causal:
            raise ValueError("BERT: the encoder is bidirectional; got TextConfig(causal=True)")
        self.cfg = cfg
        self.encoder = TextTransformer(cfg)
        self.has_mlm_head = mlm_head
        if mlm_head:
            self.mlm_head = MLMHead(cfg.dim, cfg.vocab_size, self.encoder.token_embed.weight,
                                    eps=cfg.eps, act=cfg.act)
        self.has_pooler = pooler
        if pooler:
            self.pooler = Linear(cfg.dim, cfg.dim)

    def forward_tokens(self, ids: Any, attention_mask: Any = None, token_type_ids: Any = None,
                       check: bool | None = None) -> Tensor:
        """Every token's feature after the last layer (HF ``BertModel(...)
        .last_hidden_state``, padded positions included: padded queries still attend to the
        real keys). Shapes: ids (B, T) -> (B, T, D)."""
        return self.encoder.forward_tokens(ids, attention_mask, token_type_ids, check=check)

    def mlm_logits(self, ids: Any, attention_mask: Any = None, token_type_ids: Any = None,
                   check: bool | None = None) -> Tensor:
        """$\\mathrm{LN_h}(\\mathrm{gelu}(h W_d + b_d)) E^\\top + b$ at every position (HF
        ``BertForMaskedLM(...).logits``). Shapes: ids (B, T) -> (B, T, V)."""
        if not self.has_mlm_head:
            raise ValueError(
                "BERT.mlm_logits: this model was built with mlm_head=False (a plain BertModel "
                "checkpoint has no cls.predictions.* weights); load a BertForMaskedLM or "
                "BertForPreTraining checkpoint for masked-word logits")
        return self.mlm_head(self.forward_tokens(ids, attention_mask, token_type_ids, check))

    def pooled(self, ids: Any, attention_mask: Any = None, token_type_ids: Any = None,
               check: bool | None = None) -> Tensor:
        """$\\tanh(h_{:,0} W_p + b_p)$ (HF ``BertModel(...).pooler_output``).
        Shapes: ids (B, T) -> (B, D)."""
        if not self.has_pooler:
            raise ValueError("BERT.pooled: this model was built with pooler=False")
        h = self.forward_tokens(ids, attention_mask, token_type_ids, check)  # (B, T, D)
        B, _, D = h.shape
        first, _ = F.split(h, [1], axis=1)  # (B, 1, D): the [CLS] position
        return F.tanh(self.pooler(first.reshape(B, D)))  # (B, 1, D) -> (B, D) -> (B, D)

    def forward(self, ids: Any, attention_mask: Any = None, token_type_ids: Any = None,
                check: bool | None = None) -> Tensor:
        """As ``BertModel``'s first output: ``forward_tokens``. Shapes: (B, T) -> (B, T, D)."""
        return self.forward_tokens(ids, attention_mask, token_type_ids, check)

    def extra_repr(self) -> str:
        return f"pooler={self.has_pooler}, mlm_head={self.has_mlm_head}"
