"""Scaled dot-product attention (seed equation 2):

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

with d_k the *per-head* dimension (timm, DINO: ``scale = head_dim ** -0.5``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import backend
from ..autograd import Tensor
from . import elementwise as E
from .activation import softmax
from .linalg import matmul
from .shape import swapaxes

__all__ = ["causal_mask", "padding_mask", "scaled_dot_product_attention",
           "scaled_dot_product_attention_composed"]


def causal_mask(T: int, device: Any = None) -> Any:
    """Boolean (T, T) mask, True where query t may attend to key s, i.e. s <= t."""
    xp = backend.as_device(device).xp
    return xp.tril(xp.ones((T, T), dtype=bool))


def padding_mask(lengths: Any, T: int, device: Any = None) -> Any:
    """Boolean (B, 1, 1, T) mask, True at the keys that are real tokens (position < length)."""
    xp = backend.as_device(device).xp
    lengths = xp.asarray(backend.to_numpy(lengths) if device in (None, "cpu") else lengths)
    return (xp.arange(T)[None, :] < lengths[:, None])[:, None, None, :]


def _check(q: Any, k: Any, v: Any, mask: Any) -> None:
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim:
        raise ValueError(
            f"scaled_dot_product_attention: q, k, v need the same rank >= 2, got shapes "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"scaled_dot_product_attention: q {tuple(q.shape)} and k {tuple(k.shape)} must share "
            f"the head dim, and k and v {tuple(v.shape)} the number of keys"
        )
    if mask is not None:
        m = mask.data if isinstance(mask, Tensor) else mask
        if m.dtype != bool:
            raise TypeError(f"attention mask must be boolean (True = may attend), got {m.dtype}")
        scores_shape = tuple(q.shape[:-1]) + (k.shape[-2],)
        try:
            np.broadcast_shapes(tuple(m.shape), scores_shape)
        except ValueError:
            raise ValueError(
                f"attention mask of shape {tuple(m.shape)} does not broadcast to the scores "
                f"{scores_shape} (B, H, Tq, Tk)"
            ) from None


def scaled_dot_product_attention_composed(q: Any, k: Any, v: Any, mask: Any = None,
                                          scale: float | None = None) -> tuple[Tensor, Tensor]:
    """Equation 2 step by step; returns ``(out, probs)``.

    Shapes: q (B, H, Tq, hd), k and v (B, H, Tk, hd), mask broadcastable to (B, H, Tq, Tk)
    with True = may attend. A query whose keys are all masked gets zero probabilities (and a
    zero output), never NaN."""
    _check(q, k, v, mask)
    hd = q.shape[-1]
    scale = 1.0 / math.sqrt(hd) if scale is None else scale
    scores = matmul(q, swapaxes(k, -1, -2)) * scale  # (B, H, Tq, Tk)
    if mask is None:
        probs = softmax(scores, axis=-1)
    else:
        m = mask.data if isinstance(mask, Tensor) else mask
        xp = backend.get_array_module(scores.data)
        m = xp.asarray(m)
        lowest = xp.finfo(scores.dtype).min  # the most negative finite value, not -inf
        probs = softmax(E.where(m, scores, lowest), axis=-1)
        # rows with no allowed key: softmax of all-equal scores would be uniform; zero them
        probs = probs * m.any(axis=-1, keepdims=True).astype(scores.dtype)
    out = matmul(probs, v)  # (B, H, Tq, hd)
    return out, probs


def scaled_dot_product_attention(q: Any, k: Any, v: Any, mask: Any = None,
                                 scale: float | None = None) -> tuple[Tensor, Tensor]:
    """$\\mathrm{softmax}(Q K^T / \\sqrt{d_k}) V$, with $d_k$ the head dim; returns
    ``(out, probs)``. Shapes: q (B, H, Tq, hd), k/v (B, H, Tk, hd) -> out (B, H, Tq, hd),
    probs (B, H, Tq, Tk). ``mask``: boolean, True = may attend."""
    return scaled_dot_product_attention_composed(q, k, v, mask, scale)
