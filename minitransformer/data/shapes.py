"""Procedural shapes: coloured circles, squares and triangles on a noisy dark background.

Every image comes with its labels (shape, colour, size, position), pixel masks of its objects and
a caption built from the labels ("a small red circle on the left"). Masks make attention maps
measurable (IoU against the object), captions make CLIP trainable, all in seconds on a CPU.

Geometry (for ``size = 32``; everything scales with ``size``): a "small" object has radius
5.1-7.0 px, a "large" one 9.0-10.9 px; the centre sits at one of five anchors (left, right, top,
bottom, centre: 27% / 50% / 73% of the side) plus a jitter of up to 6% of the side. A large
object at the edge may be clipped by a pixel or two. With two objects, their positions differ
and the first ("main") object is drawn on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from minitransformer.backend import get_array_module

__all__ = [
    "ALL_SHAPES",
    "COLOURS",
    "COLOUR_RGB",
    "POSITIONS",
    "POSITION_PHRASES",
    "SHAPES",
    "SIZES",
    "ShapesData",
    "caption_for",
    "make_shapes",
    "patch_mask_targets",
]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
ALL_SHAPES: tuple[str, ...] = SHAPES + ("diamond", "cross")
COLOURS: tuple[str, ...] = (
    "red", "green", "blue", "yellow", "cyan", "magenta", "white", "orange",
)  # fmt: skip
COLOUR_RGB = np.array(
    [
        [1.0, 0.0, 0.0],  # red
        [0.0, 0.85, 0.0],  # green
        [0.1, 0.3, 1.0],  # blue
        [1.0, 1.0, 0.0],  # yellow
        [0.0, 1.0, 1.0],  # cyan
        [1.0, 0.0, 1.0],  # magenta
        [1.0, 1.0, 1.0],  # white
        [1.0, 0.55, 0.0],  # orange
    ],
    dtype=np.float32,
)  # (8, 3): the RGB of each named colour, rows in the order of COLOURS
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "centre")
POSITION_PHRASES: dict[str, str] = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}

# Object centres as (row, column) fractions of the side, one per entry of POSITIONS.
_ANCHORS = np.array([[0.5, 0.27], [0.5, 0.73], [0.27, 0.5], [0.73, 0.5], [0.5, 0.5]])
_JITTER = 0.06  # centre jitter, as a fraction of the side
_RADIUS = np.array([[0.16, 0.22], [0.28, 0.34]])  # radius range per size, fraction of the side
_BRIGHTNESS = (0.85, 1.0)  # each object's colour is scaled by a factor from this range


@dataclass
class ShapesData:
    """Images, labels, masks and captions of a procedural-shapes set.

    The per-image label arrays (``shape``, ``colour``, ``size``, ``position``) describe the main
    (first) object and index into ``shape_names``, ``COLOURS``, ``SIZES`` and ``POSITIONS``.
    The ``object_*`` arrays describe every object, with -1 where an image has fewer objects.
    """

    images: np.ndarray  # (n, 3, S, S) float in [0, 1]
    shape: np.ndarray  # (n,) int64 index into shape_names
    colour: np.ndarray  # (n,) int64 index into COLOURS
    size: np.ndarray  # (n,) int64 index into SIZES (0 small, 1 large)
    position: np.ndarray  # (n,) int64 index into POSITIONS
    masks: np.ndarray  # (n, S, S) bool: the main object's pixels
    object_masks: np.ndarray  # (n, M, S, S) bool: the visible pixels of each object
    object_shape: np.ndarray  # (n, M) int64, -1 where absent
    object_colour: np.ndarray  # (n, M)
    object_size: np.ndarray  # (n, M)
    object_position: np.ndarray  # (n, M)
    n_objects: np.ndarray  # (n,) int64 in 1..M
    captions: list[str]  # n captions
    shape_names: tuple[str, ...] = SHAPES

    def __len__(self) -> int:
        return len(self.images)

    @property
    def names(self) -> dict[str, tuple[str, ...]]:
        """The vocabulary of each label: ``names["colour"][data.colour[i]]`` is a colour name."""
        return {"shape": self.shape_names, "colour": COLOURS, "size": SIZES, "position": POSITIONS}


def caption_for(shape: str, colour: str, size: str, position: str) -> str:
    """One object's phrase: ``caption_for("circle", "red", "small", "left")`` gives
    ``"a small red circle on the left"``."""
    return f"a {size} {colour} {shape} {POSITION_PHRASES[position]}"


def _shape_mask(kind: str, dy: np.ndarray, dx: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Inside test for one shape kind; ``dy, dx`` offsets from the centre (rows grow down),
    ``r`` the radius, all broadcastable to ``(k, S, S)``. Areas are roughly comparable."""
    if kind == "circle":
        return dy**2 + dx**2 <= r**2
    if kind == "square":
        half = 0.85 * r  # area 2.9 r^2, close to the circle's 3.1 r^2
        return (np.abs(dy) <= half) & (np.abs(dx) <= half)
    if kind == "triangle":
        # Upright equilateral triangle with circumradius R: apex at dy = -R, base at dy = R/2,
        # half-width growing linearly to R*sqrt(3)/2 at the base.
        big = 1.2 * r
        return (dy <= 0.5 * big) & (np.abs(dx) <= (dy + big) / np.sqrt(3.0))
    if kind == "diamond":
        return np.abs(dy) + np.abs(dx) <= 1.2 * r
    if kind == "cross":
        arm = 0.35 * r
        return ((np.abs(dy) <= arm) & (np.abs(dx) <= r)) | ((np.abs(dx) <= arm) & (np.abs(dy) <= r))
    raise ValueError(f"make_shapes: unknown shape {kind!r}; expected one of {ALL_SHAPES}")


def make_shapes(
    n: int,
    size: int = 32,
    seed: int = 0,
    max_objects: int = 1,
    shapes: Sequence[str] = SHAPES,
    noise: float = 0.05,
    background: tuple[float, float] = (0.0, 0.2),
    dtype: Any = np.float32,
) -> ShapesData:
    """Generate ``n`` RGB scenes of ``size x size`` pixels, deterministic per ``seed``.

    Each image has between 1 and ``max_objects`` objects (uniformly); each object gets a shape
    from ``shapes`` (default ``SHAPES``; any of ``ALL_SHAPES``), one of the 8 ``COLOURS``, a size
    and a position, all uniform, with positions distinct within an image. The background is one
    dark colour per image (each channel uniform in ``background``); Gaussian noise of std
    ``noise`` is added everywhere and the result clipped to [0, 1].

    Captions join the objects' phrases with " and ", main object first:
    ``"a small red circle on the left and a large blue square at the top"``.

    Shapes: ``images (n, 3, size, size)``, ``masks (n, size, size)``, labels ``(n,)``;
    see ``ShapesData``.
    """
    if n < 0:
        raise ValueError(f"make_shapes: n must be >= 0, got {n}")
    if size < 8:
        raise ValueError(f"make_shapes: size must be >= 8 pixels, got {size}")
    if not 1 <= max_objects <= len(POSITIONS):
        raise ValueError(
            f"make_shapes: max_objects must be in 1..{len(POSITIONS)}, got {max_objects}"
        )
    shapes = tuple(shapes)
    for kind in shapes:
        if kind not in ALL_SHAPES:
            raise ValueError(f"make_shapes: unknown shape {kind!r}; expected one of {ALL_SHAPES}")
    rng = np.random.default_rng(seed)
    m, s = max_objects, size

    # ---- labels, drawn for every object slot (slots beyond n_objects are dropped below) ----
    n_objects = rng.integers(1, m + 1, size=n)  # (n,)
    present = np.arange(m)[None, :] < n_objects[:, None]  # (n, M)
    obj_shape = rng.integers(0, len(shapes), size=(n, m))
    obj_colour = rng.integers(0, len(COLOURS), size=(n, m))
    obj_size = rng.integers(0, len(SIZES), size=(n, m))
    # distinct positions per image: the first M entries of a random permutation of the 5
    obj_pos = rng.permuted(np.tile(np.arange(len(POSITIONS)), (n, 1)), axis=1)[:, :m]  # (n, M)

    # ---- geometry, in pixels ----
    lo, hi = _RADIUS[obj_size, 0], _RADIUS[obj_size, 1]  # (n, M) each
    radius = (lo + (hi - lo) * rng.random((n, m))) * s  # (n, M)
    centre = (_ANCHORS[obj_pos] + rng.uniform(-_JITTER, _JITTER, (n, m, 2))) * s  # (n, M, 2)
    brightness = rng.uniform(*_BRIGHTNESS, size=(n, m))
    bg = rng.uniform(*background, size=(n, 3)).astype(np.float32)  # (n, 3)

    # ---- rasterise: full masks of every object, then visible masks (main object on top) ----
    coords = np.arange(s, dtype=np.float32) + 0.5  # pixel centres
    full = np.zeros((n, m, s, s), dtype=bool)  # (n, M, S, S)
    for k in range(m):
        cy = centre[:, k, 0].astype(np.float32)[:, None, None]  # (n, 1, 1)
        cx = centre[:, k, 1].astype(np.float32)[:, None, None]
        r = radius[:, k].astype(np.float32)[:, None, None]
        dy = coords[None, :, None] - cy  # (n, S, 1)
        dx = coords[None, None, :] - cx  # (n, 1, S)
        for si, kind in enumerate(shapes):
            sel = np.flatnonzero((obj_shape[:, k] == si) & present[:, k])
            if sel.size:
                full[sel, k] = _shape_mask(kind, dy[sel], dx[sel], r[sel])
    visible = full.copy()
    for k in range(1, m):
        visible[:, k] &= ~full[:, :k].any(axis=1)  # hidden by the objects drawn above it

    images = np.broadcast_to(bg[:, :, None, None], (n, 3, s, s)).copy()  # (n, 3, S, S)
    colour_rgb = COLOUR_RGB[obj_colour] * brightness[..., None].astype(np.float32)  # (n, M, 3)
    for k in range(m):
        col = colour_rgb[:, k, :, None, None]  # (n, 3, 1, 1)
        images = np.where(visible[:, k, None], col, images)
    images += noise * rng.standard_normal(images.shape, dtype=np.float32)
    np.clip(images, 0.0, 1.0, out=images)

    # ---- captions ----
    def absent(a: np.ndarray) -> np.ndarray:
        return np.where(present, a, -1).astype(np.int64)

    obj_shape, obj_colour, obj_size, obj_pos = map(
        absent, (obj_shape, obj_colour, obj_size, obj_pos)
    )
    captions = [
        " and ".join(
            caption_for(
                shapes[obj_shape[i, k]],
                COLOURS[obj_colour[i, k]],
                SIZES[obj_size[i, k]],
                POSITIONS[obj_pos[i, k]],
            )
            for k in range(int(n_objects[i]))
        )
        for i in range(n)
    ]

    return ShapesData(
        images=images.astype(dtype, copy=False),
        shape=obj_shape[:, 0].copy(),
        colour=obj_colour[:, 0].copy(),
        size=obj_size[:, 0].copy(),
        position=obj_pos[:, 0].copy(),
        masks=visible[:, 0].copy(),
        object_masks=visible,
        object_shape=obj_shape,
        object_colour=obj_colour,
        object_size=obj_size,
        object_position=obj_pos,
        n_objects=n_objects.astype(np.int64),
        captions=captions,
        shape_names=shapes,
    )


def patch_mask_targets(masks: Any, patch_size: int) -> Any:
    """Pixel masks to patch masks: a patch counts as object when more than half its pixels are.

    Patches are in raster order (row-major), as ``nn.PatchEmbed`` makes them. Runs on the array
    module of ``masks`` (NumPy or CuPy).

    Shapes: ``masks (n, H, W)`` bool -> ``(n, (H // p) * (W // p))`` bool.
    """
    xp = get_array_module(masks)
    if masks.ndim != 3:
        raise ValueError(f"patch_mask_targets: masks must be (n, H, W), got shape {masks.shape}")
    n, h, w = masks.shape
    p = int(patch_size)
    if p <= 0 or h % p or w % p:
        raise ValueError(
            f"patch_mask_targets: patch_size {patch_size} must divide the mask size ({h}, {w})"
        )
    grid = masks.reshape(n, h // p, p, w // p, p)  # (n, gh, p, gw, p)
    counts = grid.sum(axis=(2, 4), dtype=xp.int64)  # (n, gh, gw) object pixels per patch
    return (2 * counts > p * p).reshape(n, -1)  # (n, N)
