"""``TextTransformer``: token (+ position, + token-type) embedding, transformer blocks, an
optional final norm, and pooling.

With ``causal=True`` and ``pool="eot"`` it is CLIP's text tower (``openai/CLIP``
``encode_text``: pre-norm blocks, final ``ln_final``, the feature at the end-of-text token).
With ``causal=False``, ``norm_first=False``, ``type_vocab_size=2``, ``embed_norm=True`` and
``final_norm=False`` it is BERT's encoder (Devlin et al. 2019, sec. 3 and fig. 2; HF
``transformers`` ``models/bert/modeling_bert.py``: ``BertEmbeddings`` then post-norm
``BertLayer``s, no norm after the last one); ``models.BERT`` adds the MLM head and pooler.
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


def _raw(a: Any) -> Any:
    """The raw array of a Tensor, array or nested list (lists become NumPy arrays)."""
    a = a.data if isinstance(a, Tensor) else a
    return a if hasattr(a, "dtype") else np.asarray(a)


class TextTransformer(Module):
    """$x = \\mathrm{drop}(\\mathrm{LN_e}(E[\\mathrm{ids}] + P_{0:T} + S[\\mathrm{types}]))$,
    then the blocks (causal when ``cfg.causal``), the final norm (when ``cfg.final_norm``), and
    pooling to one feature per sequence. The type term $S$ is there only when
    ``cfg.type_vocab_size > 0`` and $\\mathrm{LN_e}$ only when ``cfg.embed_norm`` (BERT's
    ``BertEmbeddings``: word + position + token type, LayerNorm, dropout).

    Parameters (design §3): ``token_embed`` (V, D), ``pos_embed`` (1, T_max, D), ``type_embed``
    (type_vocab_size, D) when types are on (HF ``token_type_embeddings``), ``embed_norm`` (D,)
    when ``cfg.embed_norm`` (HF ``embeddings.LayerNorm``), ``blocks.{i}``, ``norm`` when
    ``cfg.final_norm`` (CLIP's ``ln_final``; a post-norm stack such as BERT has none). Init:
    token and type embeddings ``normal(0.02)`` (CLIP, BERT), position embedding
    ``trunc_normal(0.02)`` (BERT, timm) or the seed's fixed sinusoids (frozen) with
    ``pos_embed="sinusoidal"``.

    ``attention_mask`` (B, T) bool marks the real tokens (True) as HF's ``attention_mask``;
    padding keys are masked out and left out of "mean" pooling; padded *queries* still attend
    to the real keys, so their outputs are defined (and equal HF's, whose additive mask
    $-\\infty$-masks the same keys). Without it, ``cfg.pad_id`` (when set) defines it as
    ``ids != pad_id``. A row with no real token at all gives zeros after attention here (the
    package's fully-masked-row rule), where HF's additive mask would attend uniformly.

    ``token_type_ids`` (B, T) integers in [0, type_vocab_size) (BERT's segment A = 0, B = 1);
    None means all zeros, as HF's default.

    Validation that reads the ids' values (an ``eot_id`` in every row, type ids in range)
    costs a device-to-host transfer per call on a GPU. ``check=None`` (the default) follows
    the package's data-check switch, as ``nn.Embedding`` and ``F.cross_entropy`` do
    (``F.check_values``): ids given as NumPy arrays are checked on the host, before they are
    copied to the device (free); device arrays are checked unless inside
    ``F.use_data_checks(False)``. ``check=True`` always validates, ``check=False`` never. A
    training loop validates its whole dataset once with ``validate_ids`` and runs its steps
    with the switch off: no per-step transfer (issue 14's budget).

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
        if cfg.type_vocab_size > 0:
            self.type_embed = Embedding(cfg.type_vocab_size, D)
        if cfg.embed_norm:
            self.embed_norm = LayerNorm(D, eps=cfg.eps)
        self.emb_drop = Dropout(cfg.drop)
        self.blocks = make_blocks(
            D, cfg.depth, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, norm_first=cfg.norm_first,
            eps=cfg.eps, act=cfg.act, layer_scale=cfg.layer_scale, drop_path=cfg.drop_path,
            qkv_bias=cfg.qkv_bias, drop=cfg.drop, attn_drop=cfg.attn_drop,
        )
        if cfg.final_norm:
            self.norm = LayerNorm(D, eps=cfg.eps)

    # ------------------------------------------------------------------ inputs
    def _check_shape(self, raw: Any) -> None:
        """ids must be (B, T) integers with T <= context_length (no value is read)."""
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

    def _ids(self, ids: Any) -> Any:
        """The checked (B, T) ids on the model's device (no copy when already there)."""
        raw = _raw(ids)
        self._check_shape(raw)
        return backend.to_device(raw, self.pos_embed.device)

    @staticmethod
    def _checking(check: bool | None, raw: Any) -> bool:
        """Whether to read values: ``check`` when given, else the data-check switch (always
        for host arrays; device arrays unless ``F.use_data_checks(False)``)."""
        return F.check_values(raw) if check is None else bool(check)

    def _types(self, token_type_ids: Any, shape: tuple[int, int], check: bool | None) -> Any:
        """The validated (B, T) type ids on the model's device, or None (all zeros)."""
        nt = self.cfg.type_vocab_size
        if token_type_ids is None:
            return None
        if nt == 0:
            raise ValueError(
                "TextTransformer: token_type_ids given to a model without token types "
                "(type_vocab_size=0); build it with TextConfig(type_vocab_size=...) or pass None"
            )
        raw = _raw(token_type_ids)
        if tuple(raw.shape) != tuple(shape) or raw.dtype.kind not in "iu":
            raise ValueError(
                f"TextTransformer: token_type_ids must be integers of the ids' shape (B, T) = "
                f"{tuple(shape)}, got shape {tuple(raw.shape)} and dtype {raw.dtype}"
            )
        if self._checking(check, raw) and raw.size:
            if bool(((raw < 0) | (raw >= nt)).any()):  # one read (free on the host)
                lo, hi = int(raw.min()), int(raw.max())
                raise ValueError(
                    f"TextTransformer: token_type_ids must be in [0, type_vocab_size={nt}), got "
                    f"values in [{lo}, {hi}]"
                )
        return backend.to_device(raw, self.pos_embed.device)

    def _check_eot(self, ids: Any) -> None:
        """Raise if a row of ``ids`` has no ``cfg.eot_id`` (reads the ids' values)."""
        xp = backend.get_array_module(ids)
        missing = ~(ids == self.cfg.eot_id).any(axis=-1)  # (B,)
        if bool(missing.any()):
            rows = backend.to_numpy(xp.nonzero(missing)[0]).tolist()
            raise ValueError(
                f"TextTransformer: eot pooling found no eot_id={self.cfg.eot_id} in rows {rows}"
            )

    def validate_ids(self, ids: Any, token_type_ids: Any = None) -> None:
        """Check a whole dataset once, so that training steps need not (issue 14: validation
        once per dataset, not per call): shape, dtype and length of ``ids``, every id in
        [0, vocab_size), an ``eot_id`` in every row for "eot" pooling with ``cfg.eot_id`` set,
        and ``token_type_ids`` in [0, type_vocab_size). Host (NumPy) arrays are read where they
        are; device arrays cost one device-to-host read per check (the range of ``ids``, the
        eot rows, the range of ``token_type_ids``), the min and max being read only to name
        them in the error. Shapes: ids (N, T)."""
        raw = _raw(ids)
        self._check_shape(raw)
        V = self.cfg.vocab_size
        if raw.size and bool(((raw < 0) | (raw >= V)).any()):  # one read (free on the host)
            lo, hi = int(raw.min()), int(raw.max())
            raise ValueError(
                f"TextTransformer: ids must be in [0, vocab_size={V}), got values in "
                f"[{lo}, {hi}]"
            )
        if self.cfg.pool == "eot" and self.cfg.eot_id is not None:
            self._check_eot(raw)
        self._types(token_type_ids, tuple(raw.shape), check=True)

    def key_mask(self, ids: Any, attention_mask: Any = None) -> Any:
        """(B, T) bool, True at real tokens: ``attention_mask`` if given, else
        ``ids != pad_id`` when ``cfg.pad_id`` is set, else None (every token is real)."""
        B, T = ids.shape
        if attention_mask is not None:
            m = _raw(attention_mask)
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
    def embed(self, ids: Any, token_type_ids: Any = None, check: bool | None = None) -> Tensor:
        """The input of the first block:
        $\\mathrm{drop}(\\mathrm{LN_e}(E[\\mathrm{ids}] + P_{0:T} + S[\\mathrm{types}]))$ (the
        type term and $\\mathrm{LN_e}$ only when configured; types default to 0, i.e. $S_0$ is
        added to every token). Shapes: ids (B, T) -> (B, T, D)."""
        types = self._types(token_type_ids, tuple(_raw(ids).shape), check)
        ids = self._ids(ids)
        B, T = ids.shape
        if T == self.cfg.context_length:
            pos = self.pos_embed
        else:
            pos, _ = F.split(self.pos_embed, [T], axis=1)  # (1, T, D): the first T positions
        x = self.token_embed(ids) + pos  # (B, T, D)
        if self.cfg.type_vocab_size > 0:
            if types is None:  # HF's default token_type_ids = zeros: row 0 for every token
                s0, _ = F.split(self.type_embed.weight, [1], axis=0)  # (1, D)
                x = x + s0  # (B, T, D) + (1, D)
            else:
                x = x + self.type_embed(types)  # (B, T, D); Embedding checks by the switch
        if self.cfg.embed_norm:
            x = self.embed_norm(x)
        return self.emb_drop(x)

    def forward_tokens(self, ids: Any, attention_mask: Any = None, token_type_ids: Any = None,
                       check: bool | None = None) -> Tensor:
        """Every token's feature after the last block and the final norm when there is one
        (what an MLM head reads; BERT: HF ``BertModel(...).last_hidden_state``, padded
        positions included). Shapes: ids (B, T), attention_mask (B, T) bool, token_type_ids
        (B, T) int -> (B, T, D)."""
        ids = self._ids(ids)  # on the device once; embed's own _ids is then a no-op
        x = self.embed(ids, token_type_ids, check=check)  # (B, T, D)
        keys = self.key_mask(ids, attention_mask)
        mask = self._attention_mask(keys, ids.shape[1])
        for blk in self.blocks:
            x = blk(x, mask=mask)
        return self.norm(x) if self.cfg.final_norm else x

    def pool(self, tokens: Tensor, ids: Any, attention_mask: Any = None,
             check: bool | None = None) -> Tensor:
        """One feature per sequence from ``forward_tokens``' output, by ``cfg.pool``:
        "cls": position 0; "eot": the first position of ``cfg.eot_id`` in each row, or of the
        largest id when ``eot_id`` is None (OpenAI CLIP's ``text.argmax(dim=-1)``); "mean": the
        mean over real tokens.

        "eot" selects with a one-hot weight, $y_b = \\sum_t [t = t_b]\\, h_{b,t}$, a dense
        computation with no data-dependent indexing. Whether every row holds ``eot_id`` is
        checked by ``check`` (see the class docstring: by default on the host, and on a GPU
        unless inside ``F.use_data_checks(False)``, where a step then does no transfer): a
        clear ValueError naming the rows. An unchecked row without ``eot_id`` pools to NaN, so
        the problem shows in the loss instead of silently pooling position 0.

        Shapes: tokens (B, T, D), ids (B, T) -> (B, D)."""
        raw = _raw(ids)
        ids = self._ids(ids)
        B, T, D = tokens.shape
        xp = backend.get_array_module(ids)
        if self.cfg.pool == "cls":
            first, _ = F.split(tokens, [1], axis=1)  # (B, 1, D)
            return first.reshape(B, D)  # (B, 1, D) -> (B, D)
        if self.cfg.pool == "eot":
            if self.cfg.eot_id is None:
                pos = ids.argmax(axis=-1)  # (B,)
                missing = None
            else:
                if self._checking(check, raw):
                    self._check_eot(raw)
                hit = ids == self.cfg.eot_id  # (B, T)
                pos = hit.argmax(axis=-1)  # (B,): first occurrence (0 when there is none)
                missing = ~hit.any(axis=-1)  # (B,)
            onehot = xp.arange(T)[None, :] == pos[:, None]  # (B, T)
            w = onehot.astype(tokens.dtype)[:, :, None]  # (B, T, 1)
            y = (tokens * w).sum(axis=1)  # (B, D)
            if missing is not None:
                nan = xp.where(missing, np.nan, 0.0).astype(tokens.dtype)[:, None]  # (B, 1)
                y = y + nan
            return y
        keys = self.key_mask(ids, attention_mask)
        if keys is None:
            return tokens.mean(axis=1)
        w = keys.astype(tokens.dtype)[:, :, None]  # (B, T, 1)
        count = xp.maximum(w.sum(axis=1), 1.0)  # (B, 1): no division by 0 on empty rows
        return (tokens * w).sum(axis=1) / count

    def forward(self, ids: Any, attention_mask: Any = None, token_type_ids: Any = None,
                check: bool | None = None) -> Tensor:
        """Pooled sequence features (``check`` as in the class docstring: the eot check runs on
        the ids as given, before they are copied to the device). Shapes: ids (B, T) -> (B, D)."""
        raw = _raw(ids)
        self._check_shape(raw)
        if self.cfg.pool == "eot" and self.cfg.eot_id is not None and self._checking(check, raw):
            self._check_eot(raw)
        ids = self._ids(raw)  # one copy to the device, shared by both calls below
        tokens = self.forward_tokens(ids, attention_mask, token_type_ids, check=check)
        return self.pool(tokens, ids, attention_mask, check=False)  # eot checked above

    def extra_repr(self) -> str:
        c = self.cfg
        return f"vocab_size={c.vocab_size}, context_length={c.context_length}, dim={c.dim}, " \
               f"causal={c.causal}, pool={c.pool!r}, type_vocab_size={c.type_vocab_size}, " \
               f"embed_norm={c.embed_norm}, final_norm={c.final_norm}"
