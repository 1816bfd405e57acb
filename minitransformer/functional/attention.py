"""Scaled dot-product attention (seed equation 2):

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

with d_k the *per-head* dimension (timm, DINO: ``scale = head_dim ** -0.5``). Masks are
boolean with True = may attend (timm / torch SDPA); masked scores take the dtype's most
negative finite value, and a query with no allowed key gets zero probabilities, never NaN.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import backend
from ..autograd import Function, Tensor
from ..backend import get_array_module
from . import elementwise as E
from .activation import softmax_composed, softmax_rows, softmax_rows_backward
from .blocks import stacked_matmul
from .fusion import is_fused
from .linalg import matmul
from .reduction import sum_to_shape
from .shape import swapaxes

__all__ = ["causal_mask", "padding_mask", "scaled_dot_product_attention",
           "scaled_dot_product_attention_composed"]


def causal_mask(T: int, device: Any = None) -> Any:
    """Boolean (T, T) mask, True where query t may attend to key s, i.e. s <= t."""
    xp = backend.as_device(device).xp
    return xp.tril(xp.ones((T, T), dtype=bool))


def padding_mask(lengths: Any, T: int, device: Any = None) -> Any:
    """Boolean (B, 1, 1, T) mask, True at the keys that are real tokens (position < length).

    ``lengths`` (B,): a Tensor, an array on any device, or a list; moved to ``device`` only
    when it lives elsewhere (no round trip through the host for lengths already there)."""
    dev = backend.as_device(device)
    xp = dev.xp
    lengths = lengths.data if isinstance(lengths, Tensor) else lengths
    if not hasattr(lengths, "dtype"):
        lengths = np.asarray(lengths)
    lengths = backend.to_device(lengths, dev)  # (B,)
    return (xp.arange(T)[None, :] < lengths[:, None])[:, None, None, :]


def _check(q: Any, k: Any, v: Any, mask: Any) -> Any:
    """Validate shapes and the mask; return the mask as a raw boolean array (or None)."""
    name = "scaled_dot_product_attention"
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim:
        raise ValueError(
            f"{name}: q, k, v need the same rank >= 2, got shapes {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"{name}: q {tuple(q.shape)} and k {tuple(k.shape)} must share the head dim, and "
            f"k and v {tuple(v.shape)} the number of keys"
        )
    try:
        batch = np.broadcast_shapes(tuple(q.shape[:-2]), tuple(k.shape[:-2]),
                                    tuple(v.shape[:-2]))
    except ValueError:
        raise ValueError(
            f"{name}: the batch axes of q {tuple(q.shape)}, k {tuple(k.shape)} and v "
            f"{tuple(v.shape)} do not broadcast"
        ) from None
    if mask is None:
        return None
    m = mask.data if isinstance(mask, Tensor) else mask
    if isinstance(m, (list, tuple)):
        m = np.asarray(m)
    if not hasattr(m, "dtype") or m.dtype != bool:
        raise TypeError(
            f"{name}: mask must be a boolean array (True = may attend), got "
            f"{getattr(m, 'dtype', type(m).__name__)}"
        )
    scores_shape = tuple(batch) + (q.shape[-2], k.shape[-2])
    try:
        fits = np.broadcast_shapes(tuple(m.shape), scores_shape) == scores_shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"{name}: mask of shape {tuple(m.shape)} does not broadcast to the scores "
            f"{scores_shape} (B, H, Tq, Tk)"
        )
    return backend.to_device(m, backend.device_of(q.data if isinstance(q, Tensor) else q))


def scaled_dot_product_attention_composed(q: Any, k: Any, v: Any, mask: Any = None,
                                          scale: float | None = None) -> tuple[Tensor, Tensor]:
    """Equation 2 step by step from primitives; returns ``(out, probs)``.

    Shapes: q (B, H, Tq, hd), k and v (B, H, Tk, hd), mask broadcastable to (B, H, Tq, Tk)
    with True = may attend -> out (B, H, Tq, hd), probs (B, H, Tq, Tk)."""
    m = _check(q, k, v, mask)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = matmul(q, swapaxes(k, -1, -2)) * scale  # (B, H, Tq, Tk)
    if m is None:
        probs = softmax_composed(scores, axis=-1)
    else:
        xp = get_array_module(scores.data)
        lowest = xp.finfo(scores.dtype).min  # the most negative finite value, not -inf
        probs = softmax_composed(E.where(m, scores, lowest), axis=-1)
        # rows with no allowed key: softmax of all-equal scores would be uniform; zero them
        probs = probs * m.any(axis=-1, keepdims=True).astype(scores.dtype)
    out = matmul(probs, v)  # (B, H, Tq, hd)
    return out, probs


class ScaledDotProductAttention(Function):
    """Fused attention: $P = \\mathrm{softmax}(s\\,Q K^T)$ (masked), $O = P V$, returning both.
    Saves Q, K, V and P; the backward takes a gradient on O and on P:

        gV = P^T gO,  gP = gO V^T (+ g_probs),  gS = P (gP - rowsum(gP P)),
        gQ = s gS K,  gK = s gS^T Q

    Masked keys have P = 0, so they get gS = 0; a fully masked row has P = 0 and zero grads."""

    def __init__(self, scale: float, mask: Any):
        self.scale, self.mask = scale, mask

    def forward(self, q: Any, k: Any, v: Any) -> Any:
        xp = get_array_module(q)
        mask, self.mask = self.mask, None
        p = stacked_matmul(q, xp.swapaxes(k, -1, -2))  # scores (B, H, Tq, Tk), ours
        p *= self.scale
        if mask is not None:
            lowest = xp.asarray(xp.finfo(p.dtype).min, dtype=p.dtype)  # not -inf: no inf - inf
            xp.copyto(p, lowest, where=~mask)  # masked scores take the lowest finite value
        softmax_rows(p, p)  # softmax over the keys, in place
        if mask is not None:
            p *= mask.any(axis=-1, keepdims=True)  # fully masked rows: 0, not uniform
        self.save_for_backward(q, k, v, p)
        return stacked_matmul(p, v), p  # out (B, H, Tq, hd), probs (B, H, Tq, Tk)

    def backward(self, g_out: Any, g_probs: Any) -> Any:
        # gV = P^T gO ; gP = gO V^T + g_probs ; gS = P (gP - rowsum(gP P)) ;
        # gQ = scale gS K ; gK = scale gS^T Q   (batch axes summed back where they broadcast)
        q, k, v, p = self.saved
        xp = get_array_module(p)
        need = self.needs_input_grad
        gq = gk = gv = None
        if need[2]:
            gv = sum_to_shape(stacked_matmul(xp.swapaxes(p, -1, -2), g_out), v.shape)
        if need[0] or need[1]:
            gs = stacked_matmul(g_out, xp.swapaxes(v, -1, -2))  # gP (B, H, Tq, Tk), ours
            gs += g_probs
            softmax_rows_backward(gs, p, gs)  # gS = P (gP - rowsum(gP P)), without the scale
            if need[0]:
                gq = stacked_matmul(gs, k)
                gq *= self.scale
                gq = sum_to_shape(gq, q.shape)
            if need[1]:
                gk = stacked_matmul(xp.swapaxes(gs, -1, -2), q)
                gk *= self.scale
                gk = sum_to_shape(gk, k.shape)
        return gq, gk, gv


def scaled_dot_product_attention(q: Any, k: Any, v: Any, mask: Any = None,
                                 scale: float | None = None) -> tuple[Tensor, Tensor]:
    """$\\mathrm{softmax}(Q K^T / \\sqrt{d_k}) V$, with $d_k$ the head dim (timm Attention's
    ``head_dim ** -0.5``) unless ``scale`` is given; returns ``(out, probs)``.

    Shapes: q (B, H, Tq, hd), k/v (B, H, Tk, hd) -> out (B, H, Tq, hd), probs (B, H, Tq, Tk);
    the batch axes broadcast. ``mask``: boolean, True = may attend, broadcastable to
    (B, H, Tq, Tk)."""
    if not is_fused():
        return scaled_dot_product_attention_composed(q, k, v, mask, scale)
    m = _check(q, k, v, mask)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return ScaledDotProductAttention(scale, m)(q, k, v)
