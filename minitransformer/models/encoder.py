"""``TransformerEncoder``: a stack of ``TransformerBlock``s (``blocks.{i}``) and a final norm.

``make_blocks`` is shared with the ViT and the text transformer, which keep ``blocks`` and
``norm`` at their top level (the timm / DINOv2 key layout) instead of nesting an encoder.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Tensor, as_tensor
from ..nn import LayerNorm, Module, ModuleList, TransformerBlock

__all__ = ["TransformerEncoder", "drop_path_rates", "make_blocks"]


def drop_path_rates(rate: float, depth: int, uniform: bool = False) -> list[float]:
    """Stochastic-depth rate per block: ``linspace(0, rate, depth)`` (DINO, timm: deeper blocks
    are dropped more often), or ``rate`` everywhere with ``uniform`` (DINOv2
    ``drop_path_uniform``)."""
    if uniform:
        return [float(rate)] * depth
    return [float(r) for r in np.linspace(0.0, rate, depth)]


def make_blocks(dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                norm_first: bool = True, eps: float = 1e-6, act: str = "gelu",
                layer_scale: float | None = None, drop_path: float = 0.0,
                drop_path_uniform: bool = False, qkv_bias: bool = True, drop: float = 0.0,
                attn_drop: float = 0.0) -> ModuleList:
    """``depth`` blocks of one configuration, registered as ``0``, ``1``, ..."""
    if num_heads < 1 or dim % num_heads:
        raise ValueError(f"make_blocks: num_heads={num_heads} does not divide dim={dim}")
    rates = drop_path_rates(drop_path, depth, drop_path_uniform)
    return ModuleList(
        TransformerBlock(dim, num_heads, mlp_ratio=mlp_ratio, norm_first=norm_first, eps=eps,
                         act=act, layer_scale=layer_scale, drop_path=rates[i],
                         qkv_bias=qkv_bias, drop=drop, attn_drop=attn_drop)
        for i in range(depth)
    )


class TransformerEncoder(Module):
    """$x_{l} = \\mathrm{block}_l(x_{l-1})$ for $l = 1..L$, then ``norm`` (LayerNorm) when
    ``final_norm`` (pre-norm stacks need it; torch's ``nn.TransformerEncoder(norm=...)``).
    Keyword arguments are those of ``TransformerBlock`` plus ``drop_path_uniform``.

    Shapes: x (B, T, D) -> (B, T, D); mask broadcastable to (B, H, T, T), True = may attend.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, final_norm: bool = True,
                 **block_kwargs: Any):
        super().__init__()
        self.blocks = make_blocks(dim, depth, num_heads, **block_kwargs)
        if final_norm:
            self.norm = LayerNorm(dim, eps=block_kwargs.get("eps", 1e-6))
        self.final_norm = final_norm

    def forward(self, x: Any, mask: Any = None) -> Tensor:
        x = as_tensor(x)
        for blk in self.blocks:
            x = blk(x, mask=mask)
        return self.norm(x) if self.final_norm else x
