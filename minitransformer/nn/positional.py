"""Positional encodings: the seed's 1-D sinusoids, MAE's fixed 2-D sin-cos table, and bicubic
resampling of a learned position grid to another resolution (multi-crop, other image sizes).

The tables are built in NumPy float64 (they are constants); callers cast and move them.
Learned position embeddings are plain Parameters of the models (``pos_embed``).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from .. import backend
from .. import functional as F
from ..autograd import Tensor, as_tensor

__all__ = [
    "bicubic_matrix",
    "interpolate_pos_embed",
    "sincos_1d",
    "sincos_2d_position_embedding",
    "sinusoidal_position_encoding",
]


def sinusoidal_position_encoding(T: int, D: int, base: float = 10000.0) -> np.ndarray:
    """The seed's / original Transformer's table, sin and cos **interleaved**:

    $PE_{t,2i} = \\sin(t / 10000^{2i/D})$, $PE_{t,2i+1} = \\cos(t / 10000^{2i/D})$
    (pytorch/examples ``word_language_model`` ``PositionalEncoding``).

    Shapes: -> (T, D), D even.
    """
    if D % 2:
        raise ValueError(f"sinusoidal_position_encoding: D must be even, got {D}")
    t = np.arange(T, dtype=np.float64)[:, None]  # (T, 1)
    freq = base ** (-np.arange(0, D, 2, dtype=np.float64) / D)  # (D/2,) = 1/10000^(2i/D)
    pe = np.zeros((T, D))
    pe[:, 0::2] = np.sin(t * freq)
    pe[:, 1::2] = np.cos(t * freq)
    return pe


def sincos_1d(D: int, pos: np.ndarray) -> np.ndarray:
    """MAE ``get_1d_sincos_pos_embed_from_grid``: $[\\sin(p\\,\\omega), \\cos(p\\,\\omega)]$
    **concatenated** (not interleaved), $\\omega_d = 1/10000^{d/(D/2)}$, d < D/2.

    Shapes: pos (M,) -> (M, D), D even.
    """
    if D % 2:
        raise ValueError(f"sincos_1d: D must be even, got {D}")
    omega = 1.0 / 10000.0 ** (np.arange(D // 2, dtype=np.float64) / (D / 2.0))  # (D/2,)
    out = np.asarray(pos, dtype=np.float64).reshape(-1)[:, None] * omega[None, :]  # (M, D/2)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d_position_embedding(D: int, grid: int | tuple[int, int], cls_token: bool = True
                                 ) -> np.ndarray:
    """MAE's fixed 2-D sin-cos table (``util/pos_embed.py:get_2d_sincos_pos_embed``).

    Half the channels encode one grid coordinate and half the other, each half a
    ``sincos_1d`` table; with ``cls_token`` a row of zeros comes first (the CLS slot).

    Faithful to MAE's ``meshgrid(grid_w, grid_h)`` ("here w goes first"): the first half,
    which MAE names ``emb_h``, is computed from ``grid[0]``, which holds the **column** index
    of each patch; the second half holds the row index. (For a square grid the table is the
    same up to which half is called what; this keeps MAE checkpoints' tables bit-compatible.)

    Shapes: -> (cls_token + gh*gw, D), D divisible by 4; rows in raster patch order.
    """
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    if D % 4:
        raise ValueError(f"sincos_2d_position_embedding: D must be divisible by 4, got {D}")
    cols, rows = np.meshgrid(np.arange(gw), np.arange(gh))  # each (gh, gw): [i, j] -> j, i
    emb = np.concatenate([sincos_1d(D // 2, cols), sincos_1d(D // 2, rows)], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros((1, D)), emb], axis=0)
    return emb


def _cubic_weights(t: np.ndarray, A: float = -0.75) -> np.ndarray:
    """Keys' cubic convolution weights of the 4 taps at offsets -1, 0, 1, 2 for a fractional
    position t in [0, 1), with torch's A = -0.75 (ATen ``get_cubic_upsample_coefficients``).
    Shapes: t (M,) -> (M, 4)."""

    def near(x: np.ndarray) -> np.ndarray:  # |x| <= 1
        return ((A + 2) * x - (A + 3)) * x * x + 1

    def far(x: np.ndarray) -> np.ndarray:  # 1 < |x| < 2
        return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=1)


@functools.lru_cache(maxsize=64)
def bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The (n_out, n_in) matrix of 1-D bicubic resampling as torch
    ``F.interpolate(mode="bicubic", size=n_out, align_corners=False)``:
    source coordinate $s = (d + 0.5)\\,n_{in}/n_{out} - 0.5$, taps $\\lfloor s\\rfloor - 1 \\ldots
    \\lfloor s\\rfloor + 2$ clamped to the border, weights ``_cubic_weights(s - floor(s))``.
    No antialiasing (DINO / DINOv2 ``interpolate_pos_encoding`` default). Identity when
    n_in == n_out. Read-only (cached).

    Shapes: -> (n_out, n_in).
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"bicubic_matrix: sizes must be >= 1, got {n_in} -> {n_out}")
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5  # (n_out,)
    i0 = np.floor(src).astype(np.int64)
    w = _cubic_weights(src - i0)  # (n_out, 4)
    m = np.zeros((n_out, n_in))
    for tap in range(4):
        idx = np.clip(i0 - 1 + tap, 0, n_in - 1)  # border taps repeat the edge value
        np.add.at(m, (np.arange(n_out), idx), w[:, tap])
    m.setflags(write=False)
    return m


def interpolate_pos_embed(pos_embed_grid: Any, new_grid: tuple[int, int],
                          old_grid: tuple[int, int] | None = None) -> Tensor:
    """Resample a learned position grid to another grid size, bicubically (DINO / DINOv2
    ``interpolate_pos_encoding``, timm ``resample_abs_pos_embed``).

    Separable 2-D bicubic = one fixed linear map $M = M_h \\otimes M_w$ applied with a matmul,
    $P' = M P$, so the gradient reaches the learned table ($\\partial L/\\partial P = M^T
    \\partial L/\\partial P'$); multi-crop training updates ``pos_embed`` through its local crops.
    Resampled by *size* (DINOv2 with ``interpolate_offset=0``, timm), not DINO's
    ``scale_factor`` with the +0.1 offset. Returns the input unchanged at the native grid.

    ``pos_embed_grid`` holds the grid tokens only (no CLS row); ``old_grid`` defaults to a
    square grid.

    Shapes: (1, gh*gw, D) -> (1, nh*nw, D).
    """
    pos = as_tensor(pos_embed_grid)
    if pos.ndim != 3 or pos.shape[0] != 1:
        raise ValueError(
            f"interpolate_pos_embed: expected (1, N, D) grid tokens, got shape {tuple(pos.shape)}"
        )
    N = pos.shape[1]
    if old_grid is None:
        side = math.isqrt(N)
        if side * side != N:
            raise ValueError(
                f"interpolate_pos_embed: {N} position tokens are not a square grid; "
                "pass old_grid=(gh, gw)"
            )
        old_grid = (side, side)
    gh, gw = old_grid
    if gh * gw != N:
        raise ValueError(f"interpolate_pos_embed: old_grid {old_grid} does not hold {N} tokens")
    nh, nw = new_grid
    if (nh, nw) == (gh, gw):
        return pos
    m = np.kron(bicubic_matrix(gh, nh), bicubic_matrix(gw, nw))  # (nh*nw, gh*gw)
    m = backend.to_device(m.astype(pos.dtype), pos.device)
    D = pos.shape[2]
    # a 2-D GEMM: NumPy's broadcasting matmul of a 2-D by a 3-D operand skips BLAS
    y = F.matmul(Tensor(m), pos.reshape(N, D))  # (nh*nw, gh*gw) @ (gh*gw, D) -> (nh*nw, D)
    return y.reshape(1, nh * nw, D)  # (1, nh*nw, D)
