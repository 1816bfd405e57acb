"""``MultiHeadAttention``: seed equations 1-3 with one fused QKV projection (timm ``Attention``).

    Q = X W_Q,  K = X W_K,  V = X W_V                               (1)
    head_h = softmax(Q_h K_h^T / sqrt(hd)) V_h                       (2)
    MultiHead(X) = Concat(head_1, ..., head_H) W_O + b_O             (3)

``qkv.weight`` is (D, 3D) with columns ``[W_Q | W_K | W_V]``; inside each block head h owns
columns ``h*hd:(h+1)*hd``. That is the transpose of timm's / torch's (3D, D) ``qkv.weight`` /
``in_proj_weight`` (rows [Q; K; V], heads contiguous), so checkpoints map by ``w.T``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import backend
from .. import functional as F
from ..autograd import Tensor, as_tensor
from .dropout import Dropout
from .linear import Linear
from .module import Module

__all__ = ["MultiHeadAttention", "check_attention_mask"]


def check_attention_mask(mask: Any, B: int, H: int, Tq: int, Tk: int, where: str) -> Any:
    """Return the raw boolean mask after checking it broadcasts to the scores (B, H, Tq, Tk).

    True = may attend (the SDPA / timm convention; torch ``nn.MultiheadAttention`` is the
    opposite). Accepted shapes: (Tq, Tk), (B, 1, Tq, Tk), (B, 1, 1, Tk), (B, H, Tq, Tk), ...
    """
    m = mask.data if isinstance(mask, Tensor) else mask
    if not hasattr(m, "dtype"):
        m = np.asarray(m)
    if m.dtype != bool:
        raise TypeError(f"{where}: the mask must be boolean (True = may attend), got {m.dtype}")
    scores = (B, H, Tq, Tk)
    try:
        ok = m.ndim <= 4 and np.broadcast_shapes(tuple(m.shape), scores) == scores
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"{where}: mask of shape {tuple(m.shape)} does not broadcast to the attention "
            f"scores (B, H, Tq, Tk) = {scores}"
        )
    return m


class MultiHeadAttention(Module):
    """Multi-head self-attention, equations (1)-(3), as timm / DINO ``Attention``.

    The scale is $1/\\sqrt{hd}$ with $hd = D/H$ the *per-head* width (timm
    ``head_dim ** -0.5``): the seed's $d_k$ is the head dim, not $D$.

    Shapes: x (B, T, D) -> y (B, T, D); probs (B, H, T, T); qkv.weight (D, 3D), qkv.bias (3D,),
    proj.weight (D, D) = W_O, proj.bias (D,).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(
                f"MultiHeadAttention: num_heads={num_heads} does not divide dim={dim}"
            )
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = Dropout(attn_drop)
        self.proj = Linear(dim, dim)
        self.proj_drop = Dropout(proj_drop)

    def forward(self, x: Any, mask: Any = None, return_attention: bool = False
                ) -> Tensor | tuple[Tensor, Tensor]:
        """``mask``: boolean, True = may attend, broadcastable to (B, H, T, T). Returns ``y``,
        or ``(y, probs)`` with ``return_attention=True``."""
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(
                f"MultiHeadAttention: expected x of shape (B, T, {self.dim}), got {tuple(x.shape)}"
            )
        B, T, D = x.shape
        H, hd = self.num_heads, self.head_dim
        if mask is not None:
            mask = check_attention_mask(mask, B, H, T, T, "MultiHeadAttention")
            mask = backend.to_device(mask, x.device)

        qkv = self.qkv(x)  # (B, T, 3D), columns [Q | K | V], heads contiguous in each
        qkv = qkv.reshape(B, T, 3, H, hd).transpose(2, 0, 3, 1, 4)  # (3, B, H, T, hd)
        q, k, v = (t.reshape(B, H, T, hd) for t in F.split(qkv, 3, axis=0))  # (B, H, T, hd) each

        if self.attn_drop.p > 0.0 and self.training:
            out, probs = self._attention_with_dropout(q, k, v, mask)
        else:
            out, probs = F.scaled_dot_product_attention(q, k, v, mask=mask, scale=self.scale)

        out = out.transpose(0, 2, 1, 3).reshape(B, T, D)  # (B, T, H, hd) -> concat heads
        y = self.proj_drop(self.proj(out))  # Concat(head_1..head_H) W_O + b_O
        return (y, probs) if return_attention else y

    def _attention_with_dropout(self, q: Tensor, k: Tensor, v: Tensor, mask: Any
                                ) -> tuple[Tensor, Tensor]:
        """Equation 2 with dropout on the probabilities (timm ``attn_drop``), written out
        because the fused attention has no dropout inside. Shapes as ``forward``."""
        scores = F.matmul(q, F.swapaxes(k, -1, -2)) * self.scale  # (B, H, T, T)
        if mask is not None:
            lowest = np.finfo(scores.dtype).min  # most negative finite value, never -inf
            scores = F.where(mask, scores, lowest)
        probs = F.softmax(scores, axis=-1)
        if mask is not None:  # a row with no allowed key gets zeros, not a uniform row
            probs = probs * mask.any(axis=-1, keepdims=True).astype(scores.dtype)
        return F.matmul(self.attn_drop(probs), v), probs  # (B, H, T, hd)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"
