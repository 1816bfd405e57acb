"""Model configurations: dataclasses with commented fields and named presets.

    cfg = ViTConfig.preset("vit-nano")                     # tiny, for CPU tests and notebooks
    cfg = ViTConfig.preset("vit-digits", num_classes=10)   # any field can be overridden
    model = VisionTransformer(cfg)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from ..nn.mlp import ACTIVATIONS

__all__ = ["TextConfig", "ViTConfig"]

_POOLS = ("cls", "eot", "mean")


def _check_common(name: str, dim: int, depth: int, num_heads: int, act: str, drop_path: float
                  ) -> None:
    if num_heads < 1 or dim % num_heads:
        raise ValueError(f"{name}: num_heads={num_heads} does not divide dim={dim}")
    if depth < 1:
        raise ValueError(f"{name}: depth must be >= 1, got {depth}")
    if act not in ACTIVATIONS:
        raise ValueError(f"{name}: unknown act {act!r}; expected one of {ACTIVATIONS}")
    if not 0.0 <= drop_path < 1.0:
        raise ValueError(f"{name}: drop_path must be in [0, 1), got {drop_path}")


class _Presets:
    """``Config.preset(name, **overrides)`` and ``Config.presets()`` for a config dataclass."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Any:
        """The named preset, with any fields replaced by ``overrides``."""
        if name not in cls.PRESETS:
            raise ValueError(
                f"{cls.__name__}.preset: unknown preset {name!r}; known: {sorted(cls.PRESETS)}"
            )
        return cls(**{**cls.PRESETS[name], **overrides})

    @classmethod
    def presets(cls) -> list[str]:
        return sorted(cls.PRESETS)

    def replace(self, **changes: Any) -> Any:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


@dataclass
class ViTConfig(_Presets):
    """A Vision Transformer (timm / DINO / DINOv2 ``VisionTransformer``)."""

    img_size: int  # side of the (square) training image, in pixels
    patch_size: int  # P: side of a patch; img_size must be divisible by it
    dim: int  # D: token width
    depth: int  # number of transformer blocks
    num_heads: int  # H; D must be divisible by H (head dim hd = D / H)
    in_chans: int = 3  # C: image channels
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio * D
    num_classes: int = 0  # > 0 adds a linear ``head`` on the CLS token
    qkv_bias: bool = True  # bias in the fused QKV projection (timm, DINOv2: True)
    norm_first: bool = True  # pre-norm (ViT); False = the seed's post-norm block
    eps: float = 1e-6  # LayerNorm epsilon (1e-6 in timm/DINO/DINOv2)
    act: str = "gelu"  # MLP activation: gelu | gelu_tanh | quick_gelu | relu
    layer_scale: float | None = None  # LayerScale init (DINOv2: 1e-5); None = no LayerScale
    drop_path: float = 0.0  # stochastic depth rate of the last block
    drop_path_uniform: bool = False  # same rate in every block (DINOv2) vs linspace(0, rate)
    mask_token: bool = False  # learn a (1, D) mask token for masked image modelling (iBOT)
    pos_embed: str = "learned"  # "learned" (ViT, DINO) or "sincos" (MAE's fixed 2-D table)
    patch_bias: bool = True  # bias of the patch projection (False in CLIP)
    drop: float = 0.0  # dropout after position embedding, attention proj and MLP
    attn_drop: float = 0.0  # dropout on the attention probabilities
    num_register_tokens: int = 0  # R learned registers after CLS, no position (DINOv2 *_reg: 4)
    pre_norm: bool = False  # LayerNorm ``norm_pre`` on the tokens before the blocks (CLIP ln_pre)
    # resampling of pos_embed at another grid (nn.interpolate_pos_embed; DINOv2's names):
    interpolate_offset: float = 0.0  # != 0: by scale factor (g + offset) / M (DINO, DINOv2: 0.1)
    interpolate_antialias: bool = False  # torch's anti-aliased bicubic (DINOv2 *_reg, timm)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # tiny: CPU unit tests and notebooks in seconds (16 patches of 8x8)
        "vit-nano": dict(img_size=32, patch_size=8, dim=32, depth=2, num_heads=2),
        # sklearn digits, 8x8 grey images: 16 patches of 2x2
        "vit-digits": dict(img_size=8, patch_size=2, in_chans=1, dim=64, depth=4, num_heads=4),
        # the synthetic shapes data, 32x32 RGB: 64 patches of 4x4
        "vit-shapes": dict(img_size=32, patch_size=4, dim=96, depth=4, num_heads=4),
        # DeiT-Ti / DINO ViT-Ti, DeiT-S / DINO ViT-S/16, ViT-B/16 (DeiT, Touvron et al. 2021,
        # Table 1; ViT, Dosovitskiy et al. 2021, Table 1; facebookresearch/dino
        # vision_transformer.py, vit_tiny / vit_small / vit_base)
        "vit-tiny": dict(img_size=224, patch_size=16, dim=192, depth=12, num_heads=3),
        "vit-small": dict(img_size=224, patch_size=16, dim=384, depth=12, num_heads=6),
        "vit-base": dict(img_size=224, patch_size=16, dim=768, depth=12, num_heads=12),
    }

    def __post_init__(self) -> None:
        _check_common("ViTConfig", self.dim, self.depth, self.num_heads, self.act, self.drop_path)
        if self.patch_size < 1 or self.img_size % self.patch_size:
            raise ValueError(
                f"ViTConfig: img_size={self.img_size} is not divisible by "
                f"patch_size={self.patch_size}"
            )
        if self.pos_embed not in ("learned", "sincos"):
            raise ValueError(
                f"ViTConfig: pos_embed must be 'learned' or 'sincos', got {self.pos_embed!r}"
            )
        if not 0.0 <= self.interpolate_offset < 1.0:
            raise ValueError(
                f"ViTConfig: interpolate_offset must be in [0, 1), got {self.interpolate_offset}"
            )
        if self.num_register_tokens < 0:
            raise ValueError(
                f"ViTConfig: num_register_tokens must be >= 0, got {self.num_register_tokens}"
            )

    @property
    def grid_size(self) -> int:
        """Patches per side at ``img_size``."""
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """N at ``img_size``."""
        return self.grid_size**2


@dataclass
class TextConfig(_Presets):
    """A text Transformer (BERT-style encoder, or CLIP's causal text tower)."""

    vocab_size: int  # V: number of token ids
    context_length: int  # T_max: rows of the position table; longer sequences are an error
    dim: int  # D: token width
    depth: int  # number of transformer blocks
    num_heads: int  # H; D must be divisible by H
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio * D
    causal: bool = False  # causal self-attention (CLIP's text tower); False = bidirectional
    pool: str = "cls"  # sentence feature: "cls" (position 0), "eot" (CLIP), "mean" (non-pad)
    eot_id: int | None = None  # "eot" pooling: this id's first position; None = argmax id (CLIP)
    pad_id: int | None = None  # padding id: masked as a key and left out of "mean" pooling
    qkv_bias: bool = True  # bias in the fused QKV projection
    norm_first: bool = True  # pre-norm (CLIP); False = post-norm (BERT, the seed)
    eps: float = 1e-5  # LayerNorm epsilon (1e-5 in CLIP and torch; BERT uses 1e-12)
    act: str = "gelu"  # MLP activation: gelu (erf: HF BERT) | gelu_tanh | quick_gelu (CLIP) | relu
    layer_scale: float | None = None  # LayerScale init; None = no LayerScale
    drop_path: float = 0.0  # stochastic depth rate of the last block
    pos_embed: str = "learned"  # "learned" (BERT, CLIP) or "sinusoidal" (the seed, fixed)
    drop: float = 0.0  # dropout after embeddings, attention proj and MLP
    attn_drop: float = 0.0  # dropout on the attention probabilities
    type_vocab_size: int = 0  # rows of a token-type (segment) embedding; BERT: 2; 0 = none
    embed_norm: bool = False  # LayerNorm on the summed embeddings (BERT); CLIP: False
    final_norm: bool = True  # LayerNorm after the last block (pre-norm stacks); BERT: False

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # tiny: CPU unit tests and notebooks
        "text-nano": dict(vocab_size=128, context_length=16, dim=32, depth=2, num_heads=2),
        # the shapes captions (tokenizer ids [PAD]=0, [EOT]=4), width matching vit-shapes
        "text-shapes": dict(vocab_size=512, context_length=16, dim=96, depth=4, num_heads=4,
                            causal=True, pool="eot", eot_id=4, pad_id=0),
        # widths matching vit-tiny / vit-small; CLIP's context length and vocabulary
        "text-tiny": dict(vocab_size=49408, context_length=77, dim=192, depth=12, num_heads=3),
        "text-small": dict(vocab_size=49408, context_length=77, dim=384, depth=12, num_heads=6),
        # bert-base-uncased: HF config.json (vocab_size 30522, max_position_embeddings 512,
        # hidden_size 768, 12 layers, 12 heads, intermediate 3072, hidden_act "gelu" (erf),
        # layer_norm_eps 1e-12, type_vocab_size 2); Devlin et al. 2019, sec. 3 (BERT_BASE).
        # No pad_id: HF takes the padding from attention_mask, not from the ids.
        "bert-base": dict(vocab_size=30522, context_length=512, dim=768, depth=12, num_heads=12,
                          mlp_ratio=4.0, norm_first=False, eps=1e-12, act="gelu",
                          type_vocab_size=2, embed_norm=True, final_norm=False, pool="cls"),
        # OpenAI CLIP's text tower (ViT-B/32, ViT-B/16): causal, EOT pooling, QuickGELU
        "text-clip": dict(vocab_size=49408, context_length=77, dim=512, depth=12, num_heads=8,
                          causal=True, pool="eot", act="quick_gelu"),
    }

    def __post_init__(self) -> None:
        _check_common("TextConfig", self.dim, self.depth, self.num_heads, self.act,
                      self.drop_path)
        if self.pool not in _POOLS:
            raise ValueError(f"TextConfig: pool must be one of {_POOLS}, got {self.pool!r}")
        if self.pos_embed not in ("learned", "sinusoidal"):
            raise ValueError(
                f"TextConfig: pos_embed must be 'learned' or 'sinusoidal', got {self.pos_embed!r}"
            )
        if self.type_vocab_size < 0:
            raise ValueError(
                f"TextConfig: type_vocab_size must be >= 0, got {self.type_vocab_size}"
            )
        for name in ("eot_id", "pad_id"):
            v = getattr(self, name)
            if v is not None and not 0 <= v < self.vocab_size:
                raise ValueError(f"TextConfig: {name}={v} is outside [0, {self.vocab_size})")
