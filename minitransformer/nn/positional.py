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


def _keys_cubic(x: np.ndarray, A: float) -> np.ndarray:
    """Keys' cubic convolution kernel of the distance x (Keys 1981):
    $k(x) = (A+2)|x|^3 - (A+3)|x|^2 + 1$ for $|x| \\le 1$,
    $k(x) = A|x|^3 - 5A|x|^2 + 8A|x| - 4A$ for $1 < |x| < 2$, 0 beyond.
    torch uses A = -0.75 for plain bicubic, A = -0.5 (as PIL) for the anti-aliased one.
    Shapes: any -> same."""
    x = np.abs(x)
    near = ((A + 2) * x - (A + 3)) * x * x + 1
    far = ((A * x - 5 * A) * x + 8 * A) * x - 4 * A
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _cubic_weights(t: np.ndarray, A: float = -0.75) -> np.ndarray:
    """Keys' cubic convolution weights of the 4 taps at offsets -1, 0, 1, 2 for a fractional
    position t in [0, 1), with torch's A = -0.75 (ATen ``get_cubic_upsample_coefficients``).
    Shapes: t (M,) -> (M, 4)."""
    taps = np.stack([t + 1, t, 1 - t, 2 - t], axis=1)  # (M, 4) distances to the taps
    return _keys_cubic(taps, A)


def _ratio(n_in: int, n_out: int, scale: float | None) -> float:
    """Input pixels per output pixel, as torch (ATen ``area_pixel_compute_scale``,
    align_corners=False): $1/\\text{scale}$ when a scale factor is given, else $n_{in}/n_{out}$."""
    return 1.0 / scale if scale is not None else n_in / n_out


@functools.lru_cache(maxsize=128)
def bicubic_matrix(n_in: int, n_out: int, scale: float | None = None,
                   antialias: bool = False) -> np.ndarray:
    """The (n_out, n_in) matrix of torch's 1-D bicubic resampling
    ``F.interpolate(mode="bicubic", align_corners=False, antialias=antialias)``, called with
    ``size=n_out`` (``scale=None``) or with ``scale_factor=scale`` (then n_out = floor(n_in *
    scale) and the coordinates use the *given* scale, not n_in / n_out).

    Let $r$ = ``_ratio`` (input pixels per output pixel) and $c_d = r\\,(d + 1/2)$ the centre
    of output pixel d in input coordinates (pixel j covers [j, j+1), its centre is j + 1/2).

    - Plain (``antialias=False``, ATen ``upsample_bicubic2d``): source coordinate
      $s = c_d - 1/2$, the 4 taps $\\lfloor s\\rfloor - 1 \\ldots \\lfloor s\\rfloor + 2$
      weighted by Keys' kernel with A = -0.75 of their distance to s, taps outside the image
      clamped to the border pixel. Identity when n_in == n_out and no scale is given.
    - Anti-aliased (``antialias=True``, ATen ``_upsample_bicubic2d_aa``, PIL's resampling):
      Keys' kernel with A = -0.5 stretched by $\\sigma = \\max(r, 1)$ (wider when
      downsampling: each output pixel averages the about $4r$ input pixels around it),
      $w_{dj} \\propto k((j + 1/2 - c_d)/\\sigma)$ over the pixels j inside the image only,
      each row renormalised to sum to 1 (no clamping). It differs from the plain matrix even
      when upsampling (A, and the border rows). An axis whose size does not change is left
      as it is (identity), even under a scale factor: torch's separable anti-aliased kernel
      skips it (the plain kernel resamples it with the given scale).

    Read-only (cached). Shapes: -> (n_out, n_in).
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"bicubic_matrix: sizes must be >= 1, got {n_in} -> {n_out}")
    if scale is not None and not scale > 0:
        raise ValueError(f"bicubic_matrix: scale must be > 0, got {scale}")
    r = _ratio(n_in, n_out, scale)
    centre = (np.arange(n_out) + 0.5) * r  # (n_out,) output pixel centres, input coordinates
    m = np.zeros((n_out, n_in))
    if antialias and n_in == n_out:
        m = np.eye(n_in)
    elif antialias:
        stretch = max(r, 1.0)
        dist = (np.arange(n_in)[None, :] + 0.5 - centre[:, None]) / stretch  # (n_out, n_in)
        m = _keys_cubic(dist, -0.5)  # zero beyond |dist| >= 2: only the pixels in the support
        m = m / m.sum(axis=1, keepdims=True)  # renormalised over the pixels inside the image
    else:
        src = centre - 0.5  # (n_out,)
        i0 = np.floor(src).astype(np.int64)
        w = _cubic_weights(src - i0)  # (n_out, 4)
        for tap in range(4):
            idx = np.clip(i0 - 1 + tap, 0, n_in - 1)  # border taps repeat the edge value
            np.add.at(m, (np.arange(n_out), idx), w[:, tap])
    m.setflags(write=False)
    return m


def interpolate_pos_embed(pos_embed_grid: Any, new_grid: tuple[int, int],
                          old_grid: tuple[int, int] | None = None, offset: float = 0.0,
                          antialias: bool = False) -> Tensor:
    """Resample a learned position grid to another grid size, bicubically, the way each
    family's own code does (torch ``F.interpolate(mode="bicubic", align_corners=False)``):

    - ``offset == 0``: by size, ``size=(nh, nw)`` (DINOv2 with ``interpolate_offset=0``: its
      ``*_reg`` hub models, which also set ``antialias=True``; timm).
    - ``offset != 0``: by scale factor, ``scale_factor=((nh + offset)/gh, (nw + offset)/gw)``
      (DINO v1 vision_transformer.py and DINOv2 models/vision_transformer.py
      ``interpolate_pos_encoding``, offset 0.1, "to avoid floating point error", dino issue
      #8). torch then maps output pixel i to the source $(i + 1/2)/\\text{scale} - 1/2$ with
      the given scale, not $g/n$: the offset shifts the sampling grid slightly, and an axis
      whose size does not change is resampled too.
    - ``antialias``: torch's anti-aliased bicubic (PIL's filter; ``bicubic_matrix``), DINOv2's
      ``interpolate_antialias``. timm's ``dynamic_img_size`` path (timm layers/pos_embed.py
      ``resample_abs_pos_embed``, called from ``VisionTransformer._pos_embed``) resamples by
      size with ``antialias=True`` (its defaults), i.e. ``offset=0, antialias=True``.

    Separable 2-D bicubic: $P' = M_h\\,P\\,M_w^T$ on each channel, two matmuls with the fixed
    matrices ``bicubic_matrix`` (n, g), so the gradient reaches the learned table
    ($\\partial L/\\partial P = M_h^T\\,\\partial L/\\partial P'\\,M_w$); multi-crop training
    updates ``pos_embed`` through its local crops. Returns the input unchanged at the native
    grid (as DINO, DINOv2 and timm do). (The families' code casts the table to float32 to
    resample it; this keeps the table's dtype.)

    ``pos_embed_grid`` holds the grid tokens only (no CLS row), rows in raster order;
    ``old_grid`` defaults to a square grid.

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
    if offset:
        scales = ((nh + offset) / gh, (nw + offset) / gw)
        got = tuple(math.floor(g * sc) for g, sc in zip((gh, gw), scales))
        if got != (nh, nw):  # torch's output size is floor(g * scale)
            raise ValueError(
                f"interpolate_pos_embed: offset {offset} gives scale factors {scales}, hence "
                f"a {got} grid, not {(nh, nw)}; use an offset in [0, 1)"
            )
        mh = bicubic_matrix(gh, nh, scales[0], antialias)
        mw = bicubic_matrix(gw, nw, scales[1], antialias)
    else:
        mh, mw = bicubic_matrix(gh, nh, None, antialias), bicubic_matrix(gw, nw, None, antialias)
    mh = Tensor(backend.to_device(mh.astype(pos.dtype), pos.device))  # (nh, gh)
    mw = Tensor(backend.to_device(mw.astype(pos.dtype), pos.device))  # (nw, gw)
    D = pos.shape[2]
    # 2-D GEMMs only (NumPy's broadcasting matmul of a 2-D by a 3-D operand skips BLAS)
    y = F.matmul(mh, pos.reshape(gh, gw * D))  # rows: (nh, gh) @ (gh, gw*D) -> (nh, gw*D)
    y = y.reshape(nh, gw, D).transpose(1, 0, 2).reshape(gw, nh * D)  # (gw, nh*D)
    y = F.matmul(mw, y)  # columns: (nw, gw) @ (gw, nh*D) -> (nw, nh*D)
    y = y.reshape(nw, nh, D).transpose(1, 0, 2)  # (nh, nw, D)
    return y.reshape(1, nh * nw, D)  # (1, nh*nw, D), raster order
