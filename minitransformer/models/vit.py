"""``VisionTransformer`` (Dosovitskiy et al.; the timm / DINO / DINOv2 backbone), seed eq. 5 on.

    tokens = [CLS; patch_embed(img)] + pos_embed        (mask_token replaces masked patches first)
    tokens = [tokens[:, :1]; registers; tokens[:, 1:]]  (R >= 0 registers, no position: DINOv2)
    tokens = norm_pre(tokens)                           (only with ``pre_norm``: CLIP's ln_pre)
    x      = blocks(tokens);  y = norm(x)
    out    = head(y[:, 0])  or  y[:, 0]                  (CLS feature, the DINO backbone output)

Token order everywhere: CLS, then the R registers, then the N patches (1 + R + N tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import backend
from .. import functional as F
from ..autograd import Tensor, as_tensor, zeros
from ..nn import (
    Dropout,
    LayerNorm,
    Linear,
    Module,
    Parameter,
    PatchEmbed,
    init,
    interpolate_pos_embed,
    sincos_2d_position_embedding,
)
from .config import ViTConfig
from .encoder import make_blocks

__all__ = ["VisionTransformer"]


class VisionTransformer(Module):
    """ViT with a CLS token, learned (or MAE sin-cos) position embedding, pre-norm blocks and a
    final LayerNorm; a linear ``head`` on the CLS token when ``cfg.num_classes > 0``.

    Parameters (design §3, timm / DINOv2 names): ``patch_embed``, ``cls_token`` (1, 1, D),
    ``pos_embed`` (1, N+1, D), ``register_tokens`` (1, R, D) when ``cfg.num_register_tokens``
    = R > 0, ``mask_token`` (1, D) when ``cfg.mask_token``, ``norm_pre`` when ``cfg.pre_norm``,
    ``blocks.{i}``, ``norm``, ``head``. Init as timm ``init_weights`` / DINOv2 ``init_weights``:
    ``pos_embed ~ trunc_normal(0.02)``, ``cls_token ~ normal(1e-6)``, ``register_tokens ~
    normal(1e-6)``, ``mask_token = 0``, Linear ``trunc_normal(0.02)`` with zero bias,
    LayerNorm (1, 0).

    Registers (Darcet et al. 2024, "Vision Transformers Need Registers"; dinov2
    models/vision_transformer.py ``num_register_tokens``, ``prepare_tokens_with_masks``): R
    extra learned tokens inserted right after CLS *after* the positions are added, so
    ``pos_embed`` covers CLS and patches only and the registers get no position. They take
    part in attention like any token and are dropped from the outputs that describe the
    image (``x_norm_patchtokens``, ``get_intermediate_layers``); ``forward_features`` returns
    them normalised as ``x_norm_regtokens``. ``num_prefix_tokens`` = 1 + R (timm's name) is
    where the patches start in the token sequence.

    ``pre_norm`` adds ``norm_pre`` (timm's name for CLIP's ``ln_pre``; open_clip
    transformer.py ``VisionTransformer``): a LayerNorm, same eps as the others, on the tokens
    after positions and registers, before the first block.

    Inputs of another size than ``cfg.img_size`` (multi-crop) are accepted when divisible by
    the patch size: the position grid is resampled bicubically (``interpolate_pos_embed``),
    as the checkpoint's own code does, set by ``cfg.interpolate_offset`` and
    ``cfg.interpolate_antialias``: by size without antialias by default; DINO v1 and DINOv2
    without registers: offset 0.1, no antialias (by scale factor); DINOv2 with registers:
    offset 0, antialias; timm ``dynamic_img_size``: offset 0, antialias.

    Shapes: x (B, C, H, W) -> logits (B, num_classes), or CLS features (B, D) without a head.
    """

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.dim
        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, D,
                                      bias=cfg.patch_bias)
        N = self.patch_embed.num_patches
        self.cls_token = Parameter(zeros(1, 1, D))
        init.normal_(self.cls_token, std=1e-6)  # timm / DINOv2 (DINO v1: trunc_normal 0.02)
        R = cfg.num_register_tokens
        if R > 0:  # DINOv2: a Parameter only when R > 0, normal(1e-6)
            self.register_tokens = Parameter(zeros(1, R, D))
            init.normal_(self.register_tokens, std=1e-6)
        if cfg.pos_embed == "learned":
            self.pos_embed = Parameter(zeros(1, N + 1, D))
            init.trunc_normal_(self.pos_embed, std=0.02)
        else:  # MAE: a fixed table, kept as a frozen Parameter so it is in the state dict
            self.pos_embed = Parameter(zeros(1, N + 1, D), requires_grad=False)
            table = sincos_2d_position_embedding(D, self.patch_embed.grid_size, cls_token=True)
            self.pos_embed.data = backend.to_device(table[None].astype(self.pos_embed.dtype),
                                                    self.pos_embed.device)
        if cfg.mask_token:
            self.mask_token = Parameter(zeros(1, D))  # DINOv2: zeros
        self.pos_drop = Dropout(cfg.drop)
        if cfg.pre_norm:
            self.norm_pre = LayerNorm(D, eps=cfg.eps)
        self.blocks = make_blocks(
            D, cfg.depth, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, norm_first=cfg.norm_first,
            eps=cfg.eps, act=cfg.act, layer_scale=cfg.layer_scale, drop_path=cfg.drop_path,
            drop_path_uniform=cfg.drop_path_uniform, qkv_bias=cfg.qkv_bias, drop=cfg.drop,
            attn_drop=cfg.attn_drop,
        )
        self.norm = LayerNorm(D, eps=cfg.eps)
        if cfg.num_classes > 0:
            self.head = Linear(D, cfg.num_classes)

    @property
    def num_prefix_tokens(self) -> int:
        """1 + R: the tokens before the patches (CLS and the registers), timm's name."""
        return 1 + self.cfg.num_register_tokens

    # ------------------------------------------------------------------ tokens
    def interpolate_pos_encoding(self, gh: int, gw: int) -> Tensor:
        """``pos_embed`` for a gh x gw patch grid: unchanged at the native grid, else the grid
        part resampled bicubically with the config's ``interpolate_offset`` and
        ``interpolate_antialias`` and the CLS row kept (DINO / DINOv2
        ``interpolate_pos_encoding``). Shapes: -> (1, 1 + gh*gw, D)."""
        native = self.patch_embed.grid_size
        if (gh, gw) == native:
            return self.pos_embed
        cls_pos, grid_pos = F.split(self.pos_embed, [1], axis=1)  # (1, 1, D), (1, N, D)
        grid_pos = interpolate_pos_embed(grid_pos, (gh, gw), native,
                                         offset=self.cfg.interpolate_offset,
                                         antialias=self.cfg.interpolate_antialias)
        return F.concat([cls_pos, grid_pos], axis=1)  # (1, 1 + gh*gw, D)

    def prepare_tokens(self, x: Any, masks: Any = None) -> Tensor:
        """Patch tokens, masked ones replaced by ``mask_token``, CLS prepended, positions
        added, then the registers inserted after CLS (no position) and ``norm_pre`` applied
        when the config has them (DINOv2 ``prepare_tokens_with_masks``: the mask token gets
        the position of the patch it replaces). ``masks``: (B, N) bool, True = masked.

        Shapes: x (B, C, H, W) -> (B, 1 + R + N, D)."""
        x = as_tensor(x)
        if x.ndim != 4:
            raise ValueError(
                f"VisionTransformer: expected images (B, C, H, W), got shape {tuple(x.shape)}"
            )
        B, _, H, W = x.shape
        gh, gw = self.patch_embed.grid(H, W)
        t = self.patch_embed(x)  # (B, N, D)
        if masks is not None:
            m = self._check_masks(masks, B, gh * gw)
            t = F.where(m[:, :, None], self.mask_token, t)  # (B, N, 1) picks (1, D) or token
        D = self.cfg.dim
        cls = F.broadcast_to(self.cls_token, (B, 1, D))
        t = F.concat([cls, t], axis=1)  # (B, 1 + N, D)
        t = t + self.interpolate_pos_encoding(gh, gw)
        R = self.cfg.num_register_tokens
        if R > 0:
            cls, patches = F.split(t, [1], axis=1)  # (B, 1, D), (B, N, D)
            reg = F.broadcast_to(self.register_tokens, (B, R, D))
            t = F.concat([cls, reg, patches], axis=1)  # (B, 1 + R + N, D)
        t = self.pos_drop(t)
        return self.norm_pre(t) if self.cfg.pre_norm else t

    def _check_masks(self, masks: Any, B: int, N: int) -> Any:
        if not self.cfg.mask_token:
            raise ValueError(
                "VisionTransformer: masks were given but the model has no mask_token "
                "(build it with ViTConfig(mask_token=True))"
            )
        m = masks.data if isinstance(masks, Tensor) else masks
        if not hasattr(m, "dtype"):
            m = np.asarray(m)
        if m.dtype != bool or tuple(m.shape) != (B, N):
            raise ValueError(
                f"VisionTransformer: masks must be boolean of shape (B, N) = {(B, N)}, got "
                f"shape {tuple(m.shape)} and dtype {m.dtype}"
            )
        return backend.to_device(m, self.cls_token.device)

    # ------------------------------------------------------------------ forward passes
    def forward_features(self, x: Any, masks: Any = None) -> dict[str, Any]:
        """All tokens, DINOv2 naming: ``x_norm_clstoken`` (B, D), ``x_norm_regtokens``
        (B, R, D) (present, (B, 0, D), without registers, as DINOv2), ``x_norm_patchtokens``
        (B, N, D), ``x_prenorm`` (B, 1 + R + N, D) before the final norm, and ``masks``."""
        t = self.prepare_tokens(x, masks)
        for blk in self.blocks:
            t = blk(t)
        y = self.norm(t)
        cls, regs, patches = F.split(y, [1, self.num_prefix_tokens], axis=1)
        # (B, 1, D), (B, R, D), (B, N, D)
        return {
            "x_norm_clstoken": cls.reshape(cls.shape[0], cls.shape[2]),  # (B, D)
            "x_norm_regtokens": regs,
            "x_norm_patchtokens": patches,
            "x_prenorm": t,
            "masks": masks,
        }

    def forward(self, x: Any) -> Tensor:
        """``head(norm(x)[:, 0])``, or the CLS feature itself without a head (DINO backbone)."""
        cls = self.forward_features(x)["x_norm_clstoken"]  # (B, D)
        return self.head(cls) if self.cfg.num_classes > 0 else cls

    def get_last_selfattention(self, x: Any) -> Tensor:
        """The last block's attention probabilities, computed on ``norm1(x)`` in a pre-norm
        block, as DINO's ``get_last_selfattention`` (for attention maps).

        Over all tokens, registers included, as DINOv2's code gives them: rows and columns in
        the order CLS, R registers, N patches. CLS's attention to the patches, for a map, is
        ``probs[:, :, 0, model.num_prefix_tokens:]`` (``1:`` only when R = 0).
        Shapes: x (B, C, H, W) -> (B, H, 1 + R + N, 1 + R + N)."""
        t = self.prepare_tokens(x)
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            if i < last:
                t = blk(t)
            else:
                _, probs = blk(t, return_attention=True)
        return probs

    def get_intermediate_layers(self, x: Any, n: int | Sequence[int] = 1, norm: bool = True
                                ) -> list[Tensor]:
        """Outputs of the last ``n`` blocks (an int), or of the blocks with the given indices,
        through the final norm when ``norm`` (DINO ``get_intermediate_layers``, DINOv2's
        ``n`` as int or indices). All tokens, CLS first: with registers the list holds
        (B, 1 + R + N, D) and the patches start at ``num_prefix_tokens`` (DINOv2's version
        returns the patches only; slice ``[:, num_prefix_tokens:]`` for that).
        Shapes: -> list of (B, 1 + R + N, D)."""
        depth = len(self.blocks)
        wanted = set(range(depth - n, depth)) if isinstance(n, int) else set(n)
        bad = [i for i in wanted if not 0 <= i < depth]
        if bad:
            raise ValueError(f"get_intermediate_layers: block indices {bad} outside [0, {depth})")
        t = self.prepare_tokens(x)
        out = []
        for i, blk in enumerate(self.blocks):
            t = blk(t)
            if i in wanted:
                out.append(self.norm(t) if norm else t)
        return out

    def extra_repr(self) -> str:
        c = self.cfg
        extra = f", num_register_tokens={c.num_register_tokens}" if c.num_register_tokens else ""
        return (f"img_size={c.img_size}, patch_size={c.patch_size}, dim={c.dim}, "
                f"depth={c.depth}{extra}")
