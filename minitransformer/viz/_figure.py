"""Figures without pyplot: an Agg-backed ``matplotlib.figure.Figure`` works headless (CI,
servers) and displays in notebooks; matplotlib is imported here, on first use only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import backend
from ..autograd import Tensor


def host_array(x: Any, dtype: Any = None) -> np.ndarray:
    """A NumPy array from a NumPy or CuPy array, a Tensor, or a list, for drawing: device
    arrays are copied with ``backend.to_numpy`` (``np.asarray`` on a CuPy array raises)."""
    if isinstance(x, Tensor):
        x = x.data
    return np.asarray(backend.to_numpy(x), dtype=dtype)


def new_figure(figsize: tuple[float, float]) -> Any:
    """A Figure with an Agg canvas attached (no GUI backend, no global pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG (parent folders are created). Returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=dpi, format="png")
    return p


def image_hwc(img: Any) -> np.ndarray:
    """CHW image (NumPy, CuPy or Tensor) -> NumPy HWC for imshow (one channel -> 2-D),
    clipped to [0, 1]. Shapes: (C, H, W) -> (H, W, C) or (H, W)."""
    a = host_array(img, dtype=np.float64)
    if a.ndim != 3:
        raise ValueError(f"image_hwc: expected (C, H, W), got shape {a.shape}")
    a = np.clip(a, 0.0, 1.0)
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)  # (H, W, C)


def show_image(ax: Any, img: Any) -> None:
    """Draw one CHW image in [0, 1] (NumPy, CuPy or Tensor) on ``ax`` (grey for one
    channel), without axes."""
    a = image_hwc(img)
    ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0.0, vmax=1.0,
              interpolation="nearest")
    ax.set_axis_off()
