"""Attention maps: the CLS token's attention over the patches, per head, drawn over the image
(DINO's ``visualize_attention.py``: ``attentions[0, :, 0, 1:]`` reshaped to the patch grid
and upsampled by the patch size)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import backend
from ..autograd import Tensor, no_grad
from ._figure import host_array, new_figure, save_figure, show_image

__all__ = ["cls_attention_maps", "plot_attention_maps", "upsample_maps"]


def cls_attention_maps(model: Any, images: Any, batch: int = 128) -> np.ndarray:
    """The last block's CLS-query attention over the patch keys, per head, on the patch grid.

    ``model`` is a ``VisionTransformer`` (anything with ``get_last_selfattention`` and a
    ``patch_embed.patch_size``); it is put in eval mode. The rows are renormalised over the
    patches (the CLS key's share is dropped), as DINO does before thresholding. With register
    tokens (DINOv2 with registers) the keys of CLS and the registers, the first
    ``model.num_prefix_tokens`` = 1 + R, are dropped alike.

    Shapes: images (B, C, H, W) -> (B, heads, H/p, W/p) NumPy float.
    """
    imgs = images.data if isinstance(images, Tensor) else images
    if getattr(imgs, "ndim", None) != 4:
        raise ValueError(f"cls_attention_maps: images must be (B, C, H, W), got shape "
                         f"{getattr(imgs, 'shape', None)}")
    B, _, H, W = imgs.shape
    p = int(model.patch_embed.patch_size)
    if H % p or W % p:
        raise ValueError(f"cls_attention_maps: image size {(H, W)} is not a multiple of the "
                         f"patch size {p}")
    model.eval()
    dev = model.cls_token.device
    first = int(getattr(model, "num_prefix_tokens", 1))  # CLS (+ registers) come first
    out = []
    with no_grad():
        for s in range(0, B, batch):
            x = backend.to_device(backend.to_numpy(imgs[s:s + batch]), dev)
            probs = model.get_last_selfattention(x)  # (b, heads, first+N, first+N)
            cls = backend.to_numpy(probs.data[:, :, 0, first:])  # (b, heads, N): CLS row, patches
            out.append(cls)
    attn = np.concatenate(out).astype(np.float64)  # (B, heads, N)
    attn /= attn.sum(-1, keepdims=True)
    return attn.reshape(B, attn.shape[1], H // p, W // p)  # (B, heads, gh, gw)


def upsample_maps(maps: Any, factor: int) -> np.ndarray:
    """Nearest-neighbour upsampling of the last two axes (DINO upsamples by the patch size).
    ``maps``: NumPy, CuPy or Tensor; the result is NumPy.
    Shapes: (..., gh, gw) -> (..., gh*factor, gw*factor)."""
    return np.repeat(np.repeat(host_array(maps), factor, axis=-2), factor, axis=-1)


def plot_attention_maps(images: Any, maps: Any, masks: Any = None,
                        titles: Sequence[str] | None = None, path: str | Path | None = None,
                        max_images: int = 6, cmap: str = "inferno") -> Any:
    """One row per image: the image, each head's attention map over it, and the mean over
    heads; with ``masks``, the object's outline is drawn on the mean map.

    Shapes: images (B, C, H, W) in [0, 1], maps (B, heads, gh, gw) (``cls_attention_maps``),
    masks (B, H, W) bool; each a NumPy or CuPy array or a Tensor. Returns the matplotlib
    Figure; saves a PNG when ``path`` is given.
    """
    imgs = host_array(images)
    maps = host_array(maps)
    if masks is not None:
        masks = host_array(masks)
    if imgs.ndim != 4 or maps.ndim != 4 or maps.shape[0] != imgs.shape[0]:
        raise ValueError(f"plot_attention_maps: need images (B, C, H, W) and maps (B, heads, "
                         f"gh, gw), got {imgs.shape} and {maps.shape}")
    B, _, H, W = imgs.shape
    if H % maps.shape[2] or W % maps.shape[3]:
        raise ValueError(f"plot_attention_maps: the map grid {maps.shape[2:]} does not divide "
                         f"the image size {(H, W)}")
    n = min(B, max_images)
    heads = maps.shape[1]
    factor = H // maps.shape[2]
    cols = heads + 2
    fig = new_figure(figsize=(1.6 * cols, 1.7 * n))
    axes = fig.subplots(n, cols, squeeze=False)
    for i in range(n):
        show_image(axes[i, 0], imgs[i])
        title = textwrap.fill(titles[i], 24) if titles is not None else "image"
        axes[i, 0].set_title(title, fontsize=6 if titles is not None else 7)
        for h in range(heads + 1):
            ax = axes[i, h + 1]
            m = maps[i, h] if h < heads else maps[i].mean(0)
            ax.imshow(upsample_maps(m, factor), cmap=cmap, interpolation="nearest")
            ax.set_title(f"head {h}" if h < heads else "mean", fontsize=7)
            if masks is not None and h == heads:
                ax.contour(masks[i].astype(float), levels=[0.5],
                           colors="cyan", linewidths=0.8)
            ax.set_axis_off()
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig
