"""DINO's emergent segmentation, measured: IoU between the thresholded CLS attention and the
object mask, at patch resolution.

The threshold is DINO's (Caron et al. 2021, who keep 60% of the attention mass;
facebookresearch/dino visualize_attention.py, ``--threshold``). Scoring it against an object
mask at patch resolution, a patch counting as object when more than half its pixels are, is
this module's protocol (the project's PyTorch reference runs on the shapes used the same)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import backend
from ._arrays import float_array, raw

__all__ = ["AttentionIoU", "attention_iou", "attention_mass_mask", "patch_masks_from_pixels"]


def attention_mass_mask(attn: Any, threshold: float = 0.6) -> Any:
    """Keep the largest weights that together hold ``threshold`` of the mass, as DINO's
    ``visualize_attention.py``: normalise to sum 1, sort ascending, keep where
    $\\mathrm{cumsum} > 1 - \\text{threshold}$, undo the sort.

    Shapes: attn (..., N) non-negative -> bool (..., N), same device.
    """
    xp = backend.get_array_module(attn)
    a = attn / attn.sum(axis=-1, keepdims=True)  # (..., N), sums to 1
    order = xp.argsort(a, axis=-1, kind="stable")  # ascending, as torch.sort
    mass = xp.cumsum(xp.take_along_axis(a, order, axis=-1), axis=-1)  # (..., N) sorted
    keep_sorted = mass > (1.0 - threshold)
    return xp.take_along_axis(keep_sorted, xp.argsort(order, axis=-1), axis=-1)  # unsort


def patch_masks_from_pixels(masks: Any, patch_size: int) -> Any:
    """A patch is object when more than half of its pixels are (this module's rule).

    Shapes: masks (B, H, W) bool -> (B, N) bool, N = (H/p)(W/p) in raster order.
    """
    m = raw(masks)
    if m.ndim != 3 or m.shape[1] % patch_size or m.shape[2] % patch_size:
        raise ValueError(f"patch_masks_from_pixels: masks must be (B, H, W) with H, W "
                         f"multiples of {patch_size}, got {m.shape}")
    B, H, W = m.shape
    p = patch_size
    blocks = m.reshape(B, H // p, p, W // p, p).astype(np.float32)  # (B, gh, p, gw, p)
    frac = blocks.mean(axis=(2, 4))  # (B, gh, gw) object fraction per patch
    return (frac > 0.5).reshape(B, -1)  # (B, N)


@dataclass
class AttentionIoU:
    """Results of ``attention_iou`` (all means over images).

    heads_averaged: IoU of the head-averaged attention map.
    best_head: the highest per-head IoU; best_head_index: which.
    per_head: (H,) IoU of each head's own map. mean_over_heads: ``per_head.mean()``.
    """

    heads_averaged: float
    best_head: float
    best_head_index: int
    per_head: np.ndarray
    mean_over_heads: float


def _iou(sel: Any, mask: Any) -> Any:
    """Shapes: (..., N) bool, (..., N) bool -> (...) IoU; 0 when the union is empty."""
    xp = backend.get_array_module(sel)
    inter = (sel & mask).sum(axis=-1)
    union = (sel | mask).sum(axis=-1)
    return inter / xp.maximum(union, 1)


def attention_iou(attn_cls_to_patches: Any, object_masks: Any, threshold: float = 0.6
                  ) -> AttentionIoU:
    """Mean IoU between ``attention_mass_mask(attn, threshold)`` and the object mask.

    ``attn_cls_to_patches`` is the last block's CLS-query row over the patch keys
    (``get_last_selfattention(x)[:, :, 0, model.num_prefix_tokens:]``: ``1:`` without
    registers; with R registers the first 1 + R keys are CLS and the registers, as
    ``viz.cls_attention_maps`` drops them); it is renormalised over the patches, as DINO
    does. Each head's map gives ``per_head``; the mean of the heads' maps gives
    ``heads_averaged``. An image whose mask is empty scores 0 (the kept set is never empty).

    Shapes: attn_cls_to_patches (B, H, N), object_masks (B, N) bool (see
    ``patch_masks_from_pixels``).
    """
    xp = backend.get_array_module(getattr(attn_cls_to_patches, "data", attn_cls_to_patches))
    attn = float_array(attn_cls_to_patches, xp)
    masks = raw(object_masks, xp).astype(bool)
    if attn.ndim != 3 or masks.shape != (attn.shape[0], attn.shape[2]):
        raise ValueError(f"attention_iou: need attention (B, H, N) and masks (B, N), got "
                         f"{attn.shape} and {masks.shape}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"attention_iou: threshold must be in (0, 1], got {threshold}")
    per_head = _iou(attention_mass_mask(attn, threshold), masks[:, None, :]).mean(axis=0)  # (H,)
    averaged = _iou(attention_mass_mask(attn.mean(axis=1), threshold), masks).mean()
    per_head = backend.to_numpy(per_head).astype(np.float64)
    best = int(per_head.argmax())
    return AttentionIoU(float(averaged), float(per_head[best]), best, per_head,
                        float(per_head.mean()))
