"""``VisionTransformer`` (Dosovitskiy et al.; the timm / DINO / DINOv2 backbone), seed eq. 5 on.

    tokens = [CLS; patch_embed(img)] + pos_embed        (mask_token replaces masked patches first)
    x      = blocks(tokens);  y = norm(x)
    out    = head(y[:, 0])  or  y[:, 0]                  (CLS feature, the DINO backbone output)
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
    ``pos_embed`` (1, N+1, D), ``mask_token`` (1, D) when ``cfg.mask_token``, ``blocks.{i}``,
    ``norm``, ``head``. Init as timm ``init_weights`` / DINOv2 ``init_weights``:
    ``pos_embed ~ trunc_normal(0.02)``, ``cls_token ~ normal(1e-6)``, ``mask_token = 0``,
    Linear ``trunc_normal(0.02)`` with zero bias, LayerNorm (1, 0).

    Inputs of another size than ``cfg.img_size`` (multi-crop) are accepted when divisible by
    the patch size: the position grid is resampled bicubically (``interpolate_pos_embed``).

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
        self.blocks = make_blocks(
            D, cfg.depth, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, norm_first=cfg.norm_first,
            eps=cfg.eps, act=cfg.act, layer_scale=cfg.layer_scale, drop_path=cfg.drop_path,
            drop_path_uniform=cfg.drop_path_uniform, qkv_bias=cfg.qkv_bias, drop=cfg.drop,
            attn_drop=cfg.attn_drop,
        )
        self.norm = LayerNorm(D, eps=cfg.eps)
        if cfg.num_classes > 0:
            self.head = Linear(D, cfg.num_classes)

    # ------------------------------------------------------------------ tokens
    def interpolate_pos_encoding(self, gh: int, gw: int) -> Tensor:
        """``pos_embed`` for a gh x gw patch grid: unchanged at the native grid, else the grid
        part resampled bicubically and the CLS row kept (DINO ``interpolate_pos_encoding``).
        Shapes: -> (1, 1 + gh*gw, D)."""
        native = self.patch_embed.grid_size
        if (gh, gw) == native:
            return self.pos_embed
        cls_pos, grid_pos = F.split(self.pos_embed, [1], axis=1)  # (1, 1, D), (1, N, D)
        return F.concat([cls_pos, interpolate_pos_embed(grid_pos, (gh, gw), native)], axis=1)

    def prepare_tokens(self, x: Any, masks: Any = None) -> Tensor:
        """Patch tokens, masked ones replaced by ``mask_token``, CLS prepended, positions
        added (DINOv2 ``prepare_tokens_with_masks``: the mask token gets the position of the
        patch it replaces). ``masks``: (B, N) bool, True = masked.

        Shapes: x (B, C, H, W) -> (B, 1 + N, D)."""
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
        return self.pos_drop(t + self.interpolate_pos_encoding(gh, gw))

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
        """All tokens, DINOv2 naming: ``x_norm_clstoken`` (B, D), ``x_norm_patchtokens``
        (B, N, D), ``x_prenorm`` (B, 1 + N, D) before the final norm, and ``masks``."""
        t = self.prepare_tokens(x, masks)
        for blk in self.blocks:
            t = blk(t)
        y = self.norm(t)
        cls, patches = F.split(y, [1], axis=1)  # (B, 1, D), (B, N, D)
        return {
            "x_norm_clstoken": cls.reshape(cls.shape[0], cls.shape[2]),  # (B, D)
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
        Shapes: x (B, C, H, W) -> (B, H, 1 + N, 1 + N)."""
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
        ``n`` as int or indices). Shapes: -> list of (B, 1 + N, D)."""
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
        return f"img_size={c.img_size}, patch_size={c.patch_size}, dim={c.dim}, depth={c.depth}"
