"""Patch features as colours: the first three principal components of the patch tokens,
mapped to RGB (the picture DINOv2 shows: parts of one object get the same colour)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import backend
from ..autograd import Tensor
from ._figure import new_figure, save_figure, show_image

__all__ = ["patch_pca_rgb", "plot_patch_pca"]


def patch_pca_rgb(patch_features: Any, grid: tuple[int, int] | None = None,
                  n_components: int = 3) -> np.ndarray:
    """Project every patch feature on the top principal components of all patches together,
    and min-max scale each component to [0, 1] (DINOv2's feature visualisation).

    $X_c = X - \\bar X$; $X_c = U S V^\\top$; $Y = X_c V_{:, :3}$; each column of Y scaled to
    [0, 1]. The sign of a component is arbitrary (as in any PCA); it is fixed here so that the
    largest-magnitude entry of each component vector is positive, for stable colours.

    Shapes: patch_features (B, N, D) -> (B, gh, gw, 3) with ``grid = (gh, gw)`` (default the
    square grid, N = gh * gw).
    """
    f = backend.to_numpy(patch_features.data if isinstance(patch_features, Tensor)
                         else patch_features).astype(np.float64)
    if f.ndim != 3:
        raise ValueError(f"patch_pca_rgb: patch_features must be (B, N, D), got {f.shape}")
    B, N, D = f.shape
    if grid is None:
        side = int(round(np.sqrt(N)))
        if side * side != N:
            raise ValueError(f"patch_pca_rgb: N={N} patches is not a square grid; pass grid")
        grid = (side, side)
    if grid[0] * grid[1] != N:
        raise ValueError(f"patch_pca_rgb: grid {grid} does not hold N={N} patches")
    k = min(n_components, D)
    x = f.reshape(B * N, D)  # (B*N, D): every patch of every image
    x = x - x.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)  # vt (D', D): rows = components
    comps = vt[:k]  # (k, D)
    flip = np.sign(comps[np.arange(k), np.abs(comps).argmax(1)])  # (k,) deterministic signs
    y = x @ (comps * flip[:, None]).T  # (B*N, k)
    lo, hi = y.min(0, keepdims=True), y.max(0, keepdims=True)
    y = (y - lo) / np.maximum(hi - lo, 1e-12)
    if k < 3:  # pad to RGB
        y = np.concatenate([y, np.zeros((B * N, 3 - k))], axis=1)
    return y.reshape(B, grid[0], grid[1], 3)  # (B, gh, gw, 3)


def plot_patch_pca(images: Any, patch_features: Any, path: str | Path | None = None,
                   max_images: int = 8) -> Any:
    """Images (top row) and the PCA colours of their patch features (bottom row).

    Shapes: images (B, C, H, W) in [0, 1], patch_features (B, N, D). Returns the Figure;
    saves a PNG when ``path`` is given.
    """
    imgs = backend.to_numpy(images.data if isinstance(images, Tensor) else images)
    rgb = patch_pca_rgb(patch_features)
    if imgs.ndim != 4 or imgs.shape[0] != rgb.shape[0]:
        raise ValueError(f"plot_patch_pca: images {imgs.shape} and features for "
                         f"{rgb.shape[0]} images do not match")
    n = min(len(imgs), max_images)
    fig = new_figure(figsize=(1.4 * n, 3.0))
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        show_image(axes[0, i], imgs[i])
        axes[1, i].imshow(rgb[i], interpolation="nearest")
        axes[1, i].set_axis_off()
    axes[0, 0].set_title("image", fontsize=7, loc="left")
    axes[1, 0].set_title("patch PCA", fontsize=7, loc="left")
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig
