"""``TransformerBlock``: attention and MLP sub-layers with residuals, post-norm or pre-norm.

Post-norm (``norm_first=False``) is the seed's block, the original Transformer's, BERT's and
torch ``TransformerEncoderLayer(norm_first=False)``'s::

    x = norm1(x + attn(x))
    x = norm2(x + mlp(x))

Pre-norm (``norm_first=True``) is what ViT, DINO, DINOv2, CLIP and timm ``Block`` use::

    x = x + drop_path(ls1(attn(norm1(x))))
    x = x + drop_path(ls2(mlp(norm2(x))))

LayerScale (``ls1``/``ls2``, DINOv2) and DropPath (DINO, DINOv2) are optional in both.
"""

from __future__ import annotations

from typing import Any

from ..autograd import Tensor, as_tensor
from .attention import MultiHeadAttention
from .dropout import DropPath
from .layer_scale import LayerScale
from .mlp import Mlp
from .module import Module
from .normalization import LayerNorm

__all__ = ["TransformerBlock"]


class TransformerBlock(Module):
    """One encoder layer. Parameters ``norm1, attn, norm2, mlp`` (+ ``ls1.gamma, ls2.gamma``
    when ``layer_scale`` is a number), matching the timm / DINOv2 ``Block`` layout.

    Shapes: x (B, T, D) -> y (B, T, D); mask broadcastable to (B, H, T, T), True = may attend.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, norm_first: bool = True,
                 eps: float = 1e-6, act: str = "gelu", layer_scale: float | None = None,
                 drop_path: float = 0.0, qkv_bias: bool = True, drop: float = 0.0,
                 attn_drop: float = 0.0):
        super().__init__()
        self.norm_first = norm_first
        self.norm1 = LayerNorm(dim, eps=eps)
        self.attn = MultiHeadAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                       proj_drop=drop)
        if layer_scale is not None:
            self.ls1 = LayerScale(dim, layer_scale)
        self.norm2 = LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act=act, drop=drop)
        if layer_scale is not None:
            self.ls2 = LayerScale(dim, layer_scale)
        self.layer_scale = layer_scale
        self.drop_path = DropPath(drop_path)

    def _ls(self, i: int, x: Tensor) -> Tensor:
        return getattr(self, f"ls{i}")(x) if self.layer_scale is not None else x

    def forward(self, x: Any, mask: Any = None, return_attention: bool = False
                ) -> Tensor | tuple[Tensor, Tensor]:
        """Returns ``y``, or ``(y, probs)`` with probs (B, H, T, T) when ``return_attention``.
        In the pre-norm block the probabilities are those of ``attn(norm1(x))``, as DINO's
        ``get_last_selfattention``."""
        x = as_tensor(x)
        if self.norm_first:
            a, probs = self.attn(self.norm1(x), mask=mask, return_attention=True)
            x = x + self.drop_path(self._ls(1, a))
            x = x + self.drop_path(self._ls(2, self.mlp(self.norm2(x))))
        else:
            a, probs = self.attn(x, mask=mask, return_attention=True)
            x = self.norm1(x + self.drop_path(self._ls(1, a)))
            x = self.norm2(x + self.drop_path(self._ls(2, self.mlp(x))))
        return (x, probs) if return_attention else x

    def extra_repr(self) -> str:
        return f"norm_first={self.norm_first}"
