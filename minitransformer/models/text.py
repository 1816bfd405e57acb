"""``TextTransformer``: token + position embedding, transformer blocks, final norm, pooling.

With ``causal=False`` and ``pool="cls"`` it is a BERT-style encoder (masked language modelling
uses every token: ``forward_tokens``); with ``causal=True`` and ``pool="eot"`` it is CLIP's text
tower (``openai/CLIP`` ``encode_text``: the feature at the end-of-text token).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import backend
from .. import functional as F
from ..autograd import Tensor, zeros
from ..nn import (
    Dropout,
    Embedding,
    LayerNorm,
    Module,
    Parameter,
    init,
    sinusoidal_position_encoding,
)
from .config import TextConfig
from .encoder import make_blocks

__all__ = ["TextTransformer"]


class TextTransformer(Module):
    """$x = E[\\mathrm{ids}] + P_{0:T}$, then the blocks (causal when ``cfg.causal``), the final
    norm, and pooling to one feature per sequence.

    Parameters (design §3): ``token_embed`` (V, D), ``pos_embed`` (1, T_max, D), ``blocks.{i}``,
    ``norm``. Init: token embedding ``normal(0.02)`` (CLIP), position embedding
    ``trunc_normal(0.02)`` (BERT, timm) or the seed's fixed sinusoids (frozen) with
    ``pos_embed="sinusoidal"``.

    ``attention_mask`` (B, T) bool marks the real tokens (True) as HF's ``attention_mask``;
    padding keys are masked out and left out of "mean" pooling. Without it, ``cfg.pad_id``
    (when set) defines it as ``ids != pad_id``.

    Shapes: ids (B, T) integer, T <= context_length -> features (B, D).
    """

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        D, T = cfg.dim, cfg.context_length
        self.token_embed = Embedding(cfg.vocab_size, D)
        if cfg.pos_embed == "learned":
            self.pos_embed = Parameter(zeros(1, T, D))
            init.trunc_normal_(self.pos_embed, std=0.02)
        else:  # the seed's sinusoids, fixed: a frozen Parameter so it is in the state dict
            self.pos_embed = Parameter(zeros(1, T, D), requires_grad=False)
            table = sinusoidal_position_encoding(T, D)[None]  # (1, T, D)
            self.pos_embed.data = backend.to_device(table.astype(self.pos_embed.dtype),
                                                    self.pos_embed.device)
        self.emb_drop = Dropout(cfg.drop)
        self.blocks = make_blocks(
            D, cfg.depth, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, norm_first=cfg.norm_first,
            eps=cfg.eps, act=cfg.act, layer_scale=cfg.layer_scale, drop_path=cfg.drop_path,
            qkv_bias=cfg.qkv_bias, drop=cfg.drop, attn_drop=cfg.attn_drop,
        )
        self.norm = LayerNorm(D, eps=cfg.eps)

    # ------------------------------------------------------------------ inputs
    def _ids(self, ids: Any) -> Any:
        raw = ids.data if isinstance(ids, Tensor) else ids
        if not hasattr(raw, "dtype"):
            raw = np.asarray(raw)
        if raw.ndim != 2 or raw.dtype.kind not in "iu":
            raise ValueError(
                f"TextTransformer: ids must be integers of shape (B, T), got shape "
                f"{tuple(raw.shape)} and dtype {raw.dtype}"
            )
        if raw.shape[1] > self.cfg.context_length:
            raise ValueError(
                f"TextTransformer: sequence length {raw.shape[1]} is longer than the position "
                f"table (context_length={self.cfg.context_length})"
            )
        return backend.to_device(raw, self.pos_embed.device)

    def key_mask(self, ids: Any, attention_mask: Any = None) -> Any:
        """(B, T) bool, True at real tokens: ``attention_mask`` if given, else
        ``ids != pad_id`` when ``cfg.pad_id`` is set, else None (every token is real)."""
        B, T = ids.shape
        if attention_mask is not None:
            m = attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask
            if not hasattr(m, "dtype"):
                m = np.asarray(m)
            if m.dtype != bool or tuple(m.shape) != (B, T):
                raise ValueError(
                    f"TextTransformer: attention_mask must be boolean of shape (B, T) = "
                    f"{(B, T)}, got shape {tuple(m.shape)} and dtype {m.dtype}"
                )
            return backend.to_device(m, self.pos_embed.device)
        if self.cfg.pad_id is not None:
            return ids != self.cfg.pad_id
        return None

    def _attention_mask(self, keys: Any, T: int) -> Any:
        """The mask the blocks get, True = may attend: causal (T, T) and/or padding keys
        (B, 1, 1, T), combined to (B, 1, T, T)."""
        causal = F.causal_mask(T, device=self.pos_embed.device) if self.cfg.causal else None
        if keys is None:
            return causal
        pad = keys[:, None, None, :]  # (B, 1, 1, T): key s may be attended if real
        return pad if causal is None else pad & causal  # (B, 1, T, T)

    # ------------------------------------------------------------------ forward passes
    def forward_tokens(self, ids: Any, attention_mask: Any = None) -> Tensor:
        """Every token's feature after the final norm (what an MLM head reads).
        Shapes: ids (B, T) -> (B, T, D)."""
        ids = self._ids(ids)
        B, T = ids.shape
        keys = self.key_mask(ids, attention_mask)
        mask = self._attention_mask(keys, T)
        if T == self.cfg.context_length:
            pos = self.pos_embed
        else:
            pos, _ = F.split(self.pos_embed, [T], axis=1)  # (1, T, D): the first T positions
        x = self.emb_drop(self.token_embed(ids) + pos)  # (B, T, D)
        for blk in self.blocks:
            x = blk(x, mask=mask)
        return self.norm(x)

    def pool(self, tokens: Tensor, ids: Any, attention_mask: Any = None) -> Tensor:
        """One feature per sequence from ``forward_tokens``' output, by ``cfg.pool``:
        "cls": position 0; "eot": the first position of ``cfg.eot_id`` in each row, or of the
        largest id when ``eot_id`` is None (OpenAI CLIP's ``text.argmax(dim=-1)``); "mean": the
        mean over real tokens. Shapes: tokens (B, T, D), ids (B, T) -> (B, D)."""
        ids = self._ids(ids)
        B, T, D = tokens.shape
        xp = backend.get_array_module(ids)
        if self.cfg.pool == "cls":
            first, _ = F.split(tokens, [1], axis=1)  # (B, 1, D)
            return first.reshape(B, D)  # (B, 1, D) -> (B, D)
        if self.cfg.pool == "eot":
            if self.cfg.eot_id is None:
                pos = ids.argmax(axis=-1)  # (B,)
            else:
                hit = ids == self.cfg.eot_id
                missing = ~hit.any(axis=-1)
                if bool(missing.any()):
                    rows = backend.to_numpy(xp.nonzero(missing)[0]).tolist()
                    raise ValueError(
                        f"TextTransformer: eot pooling found no eot_id={self.cfg.eot_id} in "
                        f"rows {rows}"
                    )
                pos = hit.argmax(axis=-1)  # (B,): first occurrence
            return tokens[xp.arange(B), pos]  # (B, D)
        keys = self.key_mask(ids, attention_mask)
        if keys is None:
            return tokens.mean(axis=1)
        w = keys.astype(tokens.dtype)[:, :, None]  # (B, T, 1)
        count = xp.maximum(w.sum(axis=1), 1.0)  # (B, 1): no division by 0 on empty rows
        return (tokens * w).sum(axis=1) / count

    def forward(self, ids: Any, attention_mask: Any = None) -> Tensor:
        """Pooled sequence features. Shapes: ids (B, T) -> (B, D)."""
        return self.pool(self.forward_tokens(ids, attention_mask), ids, attention_mask)

    def extra_repr(self) -> str:
        c = self.cfg
        return f"vocab_size={c.vocab_size}, context_length={c.context_length}, dim={c.dim}, " \
               f"causal={c.causal}, pool={c.pool!r}"
