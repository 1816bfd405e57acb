"""Pictures: attention maps per head over the image, patch features as PCA colours, loss
curves. matplotlib is imported inside the functions (Agg figures, no pyplot), so importing
this package is free; each function returns a Figure and saves a PNG when given a path."""

from .attention import cls_attention_maps, plot_attention_maps, upsample_maps
from .curves import plot_loss_curves, read_jsonl, smooth
from .pca import patch_pca_rgb, plot_patch_pca

__all__ = [
    "cls_attention_maps", "patch_pca_rgb", "plot_attention_maps", "plot_loss_curves",
    "plot_patch_pca", "read_jsonl", "smooth", "upsample_maps",
]
