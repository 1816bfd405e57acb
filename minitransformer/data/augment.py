"""Image augmentations on batches, on either device.

Every function takes a batch ``x`` of shape ``(B, C, H, W)`` (float, NumPy or CuPy) and an
explicit ``rng``, a host ``numpy.random.Generator`` (``None`` uses ``backend.default_rng("cpu")``,
seeded by ``mt.manual_seed``). Random parameters are drawn on the host, one per image, always in
the same number and order, then applied on the device with the array module of ``x``: the same
seed gives the same augmentation on the CPU and the GPU.

The recipes follow torchvision (the library DINO's ``DataAugmentationDINO`` is written in); the
differences are listed in each docstring. Ops whose meaning assumes pixel values in [0, 1]
(colour jitter, solarize) clip their output to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from minitransformer.backend import default_rng, get_array_module

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "color_jitter",
    "crop_resize",
    "gaussian_blur",
    "grayscale",
    "horizontal_flip",
    "normalize_image",
    "random_resized_crop",
    "resize",
    "rgb_to_grayscale",
    "sample_crop_boxes",
    "solarize",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ITU-R 601 luma, the weights torchvision's rgb_to_grayscale uses
_LUMA = (0.299, 0.587, 0.114)


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    if rng is None:
        return default_rng("cpu")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (host side), got {type(rng)}")
    return rng


def _check_batch(x: Any, op: str) -> tuple[int, int, int, int]:
    if getattr(x, "ndim", None) != 4:
        raise ValueError(f"{op}: expected a (B, C, H, W) batch, got shape {getattr(x, 'shape', x)}")
    return x.shape


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _chosen(rng: np.random.Generator, batch: int, p: float) -> np.ndarray:
    """(B,) bool: which images the op is applied to (always draws B numbers)."""
    return rng.random(batch) < p


def _per_image(xp: Any, values: np.ndarray, dtype: Any) -> Any:
    """Host (B,) values -> device (B, 1, 1, 1), ready to broadcast against a batch."""
    return xp.asarray(values.astype(dtype).reshape(-1, 1, 1, 1))


# --------------------------------------------------------------------------------------------
# Geometry: crops, resizing, flips
# --------------------------------------------------------------------------------------------
def sample_crop_boxes(
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    rng: np.random.Generator | None = None,
    attempts: int = 10,
) -> np.ndarray:
    """Draw ``RandomResizedCrop`` boxes, one per image, as ``(top, left, h, w)`` in pixels.

    torchvision's rule: area fraction ~ U(scale), log aspect ratio (w/h) ~ U(log ratio), up to
    ``attempts`` tries until the box fits, else a centre crop with the ratio clamped. Unlike
    torchvision the boxes are not rounded to whole pixels (a sub-pixel box matters on 8x8 images).

    Shapes: ``-> (batch, 4)`` float64 on the host.
    """
    rng = _rng(rng)
    area = height * width
    target = area * rng.uniform(scale[0], scale[1], size=(batch, attempts))  # (B, A)
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    aspect = np.exp(rng.uniform(log_r[0], log_r[1], size=(batch, attempts)))  # (B, A)
    w = np.sqrt(target * aspect)
    h = np.sqrt(target / aspect)
    fits = (w <= width) & (h <= height)  # (B, A)
    first = fits.argmax(axis=1)  # first fitting attempt (0 when none fits)
    rows = np.arange(batch)
    h, w = h[rows, first], w[rows, first]  # (B,)

    # fallback: the whole image, trimmed to the nearest allowed aspect ratio, centred
    in_ratio = width / height
    if in_ratio < min(ratio):
        fh, fw = width / min(ratio), float(width)
    elif in_ratio > max(ratio):
        fh, fw = float(height), height * max(ratio)
    else:
        fh, fw = float(height), float(width)
    ok = fits.any(axis=1)
    h = np.where(ok, h, fh)
    w = np.where(ok, w, fw)
    u = rng.random((batch, 2))
    top = np.where(ok, u[:, 0] * (height - h), (height - h) / 2)
    left = np.where(ok, u[:, 1] * (width - w), (width - w) / 2)
    return np.stack([top, left, h, w], axis=1)


def _sample_grid(start: np.ndarray, extent: np.ndarray, n_out: int, n_in: int):
    """Bilinear source indices and weights along one axis, for output pixels 0..n_out-1.

    The centre of output pixel i maps to ``start + (i + 0.5) * extent / n_out - 0.5`` in input
    pixel coordinates (``align_corners=False``, as torch's ``interpolate``), clamped to the image.
    Shapes: ``start, extent (B,)`` -> ``lo, hi (B, n_out)`` int64 and ``frac (B, n_out)``.
    """
    i = np.arange(n_out) + 0.5
    src = start[:, None] + i[None, :] * (extent / n_out)[:, None] - 0.5  # (B, n_out)
    src = np.clip(src, 0.0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, src - lo


def crop_resize(x: Any, boxes: np.ndarray, out_size: int | Sequence[int]) -> Any:
    """Crop each image to its box and resize it to ``out_size`` with bilinear interpolation.

    Bilinear is separable: blend the two nearest input rows of each output row, then the two
    nearest columns of each output column. Each pass gathers whole rows (columns) of every image
    at once with one ``take``, with no loop over pixels or images.
    $y_{ij} = \\sum$ of the 4 neighbouring input pixels weighted by ``(1 - dy, dy) x (1 - dx, dx)``.

    Shapes: ``x (B, C, H, W)``, ``boxes (B, 4)`` as ``(top, left, h, w)`` -> ``(B, C, oh, ow)``.
    """
    B, C, H, W = _check_batch(x, "crop_resize")
    oh, ow = _pair(out_size)
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.shape != (B, 4):
        raise ValueError(f"crop_resize: boxes must be ({B}, 4), got {boxes.shape}")
    xp = get_array_module(x)
    y0, y1, fy = _sample_grid(boxes[:, 0], boxes[:, 2], oh, H)  # (B, oh)
    x0, x1, fx = _sample_grid(boxes[:, 1], boxes[:, 3], ow, W)  # (B, ow)

    # rows: image b's row h is row b*H + h of a (B*H, C*W) table
    rows = x.transpose(0, 2, 1, 3).reshape(B * H, C * W)  # (B*H, C*W)
    first = (np.arange(B) * H)[:, None]  # (B, 1)
    top, bottom = xp.asarray(first + y0), xp.asarray(first + y1)  # (B, oh) table rows
    wy = xp.asarray(fy.astype(x.dtype))[:, :, None]  # (B, oh, 1)
    t = xp.take(rows, top, axis=0) * (1 - wy) + xp.take(rows, bottom, axis=0) * wy  # (B, oh, C*W)

    # columns: the same on the transposed table, image b's column w is row b*W + w
    cols = t.reshape(B, oh, C, W).transpose(0, 3, 1, 2).reshape(B * W, oh * C)  # (B*W, oh*C)
    first = (np.arange(B) * W)[:, None]
    left, right = xp.asarray(first + x0), xp.asarray(first + x1)  # (B, ow)
    wx = xp.asarray(fx.astype(x.dtype))[:, :, None]  # (B, ow, 1)
    u = xp.take(cols, left, axis=0) * (1 - wx) + xp.take(cols, right, axis=0) * wx  # (B, ow, oh*C)
    out = u.reshape(B, ow, oh, C).transpose(0, 3, 2, 1)  # (B, C, oh, ow)
    return xp.ascontiguousarray(out)


def resize(x: Any, size: int | Sequence[int]) -> Any:
    """Bilinear resize of a batch (``align_corners=False``, no antialiasing, like torch's
    ``F.interpolate(x, size, mode="bilinear")``). Shapes: ``(B, C, H, W) -> (B, C, oh, ow)``."""
    B, _, H, W = _check_batch(x, "resize")
    boxes = np.tile(np.array([0.0, 0.0, H, W]), (B, 1))
    return crop_resize(x, boxes, size)


def random_resized_crop(
    x: Any,
    out_size: int | Sequence[int],
    scale: tuple[float, float] = (0.4, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    rng: np.random.Generator | None = None,
) -> Any:
    """torchvision's ``RandomResizedCrop``: a random box per image, resized to ``out_size``.

    Differences: sub-pixel boxes and bilinear resampling (DINO uses bicubic on integer boxes).
    Shapes: ``(B, C, H, W) -> (B, C, oh, ow)``.
    """
    B, _, H, W = _check_batch(x, "random_resized_crop")
    boxes = sample_crop_boxes(B, H, W, scale=scale, ratio=ratio, rng=_rng(rng))
    return crop_resize(x, boxes, out_size)


def horizontal_flip(x: Any, p: float = 0.5, rng: np.random.Generator | None = None) -> Any:
    """Mirror each image left-right with probability ``p``. Shapes: unchanged."""
    B = _check_batch(x, "horizontal_flip")[0]
    xp = get_array_module(x)
    flip = xp.asarray(_chosen(_rng(rng), B, p).reshape(B, 1, 1, 1))
    return xp.where(flip, x[..., ::-1], x)


# --------------------------------------------------------------------------------------------
# Colour
# --------------------------------------------------------------------------------------------
def rgb_to_grayscale(x: Any) -> Any:
    """Luma $0.299 R + 0.587 G + 0.114 B$; a 1-channel batch is returned as is.
    Shapes: ``(B, 3, H, W) -> (B, 1, H, W)``."""
    C = _check_batch(x, "rgb_to_grayscale")[1]
    if C == 1:
        return x
    if C != 3:
        raise ValueError(f"rgb_to_grayscale: expected 1 or 3 channels, got {C}")
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return _LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b


def grayscale(x: Any, p: float = 0.2, rng: np.random.Generator | None = None) -> Any:
    """torchvision's ``RandomGrayscale``: with probability ``p`` an image becomes its luma,
    repeated on the 3 channels. A 1-channel batch is already grey and is returned unchanged
    (the draws are still made, so the random stream does not depend on the channel count)."""
    B, C, _, _ = _check_batch(x, "grayscale")
    chosen = _chosen(_rng(rng), B, p)
    if C == 1:
        return x
    xp = get_array_module(x)
    gray = xp.broadcast_to(rgb_to_grayscale(x), x.shape)
    return xp.where(xp.asarray(chosen.reshape(B, 1, 1, 1)), gray, x)


def _hue_matrices(shift: np.ndarray) -> np.ndarray:
    """(B,) hue shifts in turns -> (B, 3, 3) RGB matrices rotating chroma in YIQ space."""
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    theta = 2 * np.pi * shift  # (B,)
    cos, sin = np.cos(theta), np.sin(theta)
    rot = np.zeros((len(shift), 3, 3))
    rot[:, 0, 0] = 1.0  # luma (Y) kept
    rot[:, 1, 1], rot[:, 1, 2] = cos, sin
    rot[:, 2, 1], rot[:, 2, 2] = -sin, cos
    return np.linalg.inv(to_yiq) @ rot @ to_yiq  # (B, 3, 3)


def color_jitter(
    x: Any,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.2,
    hue: float = 0.1,
    p: float = 0.8,
    rng: np.random.Generator | None = None,
) -> Any:
    """torchvision's ``RandomApply([ColorJitter(b, c, s, h)], p)`` for images in [0, 1].

    For each chosen image: factors ``b ~ U(1-brightness, 1+brightness)`` (same for contrast and
    saturation, lower bound 0), hue shift ``h ~ U(-hue, hue)`` turns, applied in a random order
    per image, each step clipped to [0, 1]:

    - brightness: ``x * b``
    - contrast: ``c * x + (1 - c) * mean(gray(x))`` (one mean per image)
    - saturation: ``s * x + (1 - s) * gray(x)`` (per pixel)
    - hue: an approximation: a rotation by ``2 pi h`` of the chroma plane of YIQ space, with
      luma kept. torchvision shifts the H of HSV instead; both turn red towards green for
      ``h > 0``, but the colours along the way differ.

    Single-channel images get brightness and contrast only: saturation and hue need 3 channels
    and are skipped. The same random numbers are drawn either way.

    Shapes: unchanged.
    """
    B, C, _, _ = _check_batch(x, "color_jitter")
    if C not in (1, 3):
        raise ValueError(f"color_jitter: expected 1 or 3 channels, got {C}")
    rng = _rng(rng)
    chosen = _chosen(rng, B, p)  # (B,)
    b = rng.uniform(max(0.0, 1 - brightness), 1 + brightness, B)
    c = rng.uniform(max(0.0, 1 - contrast), 1 + contrast, B)
    s = rng.uniform(max(0.0, 1 - saturation), 1 + saturation, B)
    h = rng.uniform(-hue, hue, B)
    order = np.argsort(rng.random((B, 4)), axis=1)  # (B, 4): a random permutation per image

    xp = get_array_module(x)
    dt = x.dtype
    x = x.copy()  # updated in place, a sub-batch at a time
    for step in range(4):
        # at each step, every op runs once on the images that have it at this position of their
        # order: a per-image order with no loop over images
        for op in range(4) if C == 3 else range(2):
            idx = np.flatnonzero(chosen & (order[:, step] == op))
            if idx.size == 0:
                continue
            dev_idx = xp.asarray(idx)
            sub = x[dev_idx]  # (b, C, H, W)
            if op == 0:  # brightness
                sub = sub * _per_image(xp, b[idx], dt)
            elif op == 1:  # contrast: blend with the image's mean luma
                f = _per_image(xp, c[idx], dt)
                sub = f * sub + (1 - f) * rgb_to_grayscale(sub).mean(axis=(1, 2, 3), keepdims=True)
            elif op == 2:  # saturation: blend with the per-pixel luma
                f = _per_image(xp, s[idx], dt)
                sub = f * sub + (1 - f) * rgb_to_grayscale(sub)
            else:  # hue: rotate the chroma plane of YIQ
                mats = xp.asarray(_hue_matrices(h[idx]).astype(dt))  # (b, 3, 3)
                sub = (mats @ sub.reshape(len(idx), 3, -1)).reshape(sub.shape)
            x[dev_idx] = xp.clip(sub, 0, 1)
    return x


def solarize(
    x: Any, p: float = 0.2, threshold: float = 0.5, rng: np.random.Generator | None = None
) -> Any:
    """With probability ``p`` per image, invert every pixel ``>= threshold``: ``x -> 1 - x``
    (PIL's ``ImageOps.solarize`` on [0, 1] values). Shapes: unchanged."""
    B = _check_batch(x, "solarize")[0]
    xp = get_array_module(x)
    chosen = xp.asarray(_chosen(_rng(rng), B, p).reshape(B, 1, 1, 1))
    return xp.where(chosen & (x >= threshold), 1 - x, x)


def gaussian_blur(
    x: Any,
    p: float = 0.5,
    sigma: tuple[float, float] = (0.1, 2.0),
    rng: np.random.Generator | None = None,
) -> Any:
    """With probability ``p`` per image, a Gaussian blur with ``sigma ~ U(sigma)`` pixels.

    DINO's ``GaussianBlur`` uses PIL's radius, which is the standard deviation. The kernel is
    separable, $k_t \\propto \\exp(-t^2 / 2\\sigma^2)$ for $|t| \\le r$ with
    $r = \\lceil 3 \\sigma_{hi} \\rceil$ (at least 1), $\\sigma_{hi}$ = ``sigma[1]`` the upper
    end of the *configured* range, normalised to sum 1, applied along rows then columns with
    edge-replicating padding (so a constant image stays constant). Images not chosen get the
    unit kernel and are unchanged.

    The radius depends on the range only, never on the sigmas drawn, so each image's blur
    depends on its own random numbers alone: a shard of a batch, given its rows of the
    batch's draws (``train.recipes.base.ShardedGenerator``), blurs exactly as the whole batch
    does. (A radius from the batch's largest sigma would truncate an image's kernel according
    to the other images' sigmas.)

    Shapes: unchanged.
    """
    B, _, H, W = _check_batch(x, "gaussian_blur")
    lo, hi = float(sigma[0]), float(sigma[1])
    if not 0 < lo <= hi or not math.isfinite(hi):
        raise ValueError(f"gaussian_blur: sigma must be a range (lo, hi) with 0 < lo <= hi, "
                         f"got {tuple(sigma)}")
    rng = _rng(rng)
    chosen = _chosen(rng, B, p)
    sig = rng.uniform(lo, hi, B)  # (B,)
    xp = get_array_module(x)
    if not chosen.any():
        return x
    radius = max(1, math.ceil(3 * hi))  # from the range: the same for every batch and shard
    taps = np.arange(-radius, radius + 1)  # (K,)
    kernel = np.exp(-(taps[None, :] ** 2) / (2 * sig[:, None] ** 2))  # (B, K)
    kernel /= kernel.sum(axis=1, keepdims=True)
    kernel[~chosen] = (taps == 0).astype(np.float64)  # identity for the others
    k = xp.asarray(kernel.astype(x.dtype))  # (B, K)

    r = radius
    padded = xp.pad(x, ((0, 0), (0, 0), (r, r), (0, 0)), mode="edge")  # (B, C, H + 2r, W)
    out = sum(k[:, t, None, None, None] * padded[:, :, t : t + H, :] for t in range(2 * r + 1))
    padded = xp.pad(out, ((0, 0), (0, 0), (0, 0), (r, r)), mode="edge")  # (B, C, H, W + 2r)
    out = sum(k[:, t, None, None, None] * padded[:, :, :, t : t + W] for t in range(2 * r + 1))
    return out


def normalize_image(x: Any, mean: Sequence[float] | Any, std: Sequence[float] | Any) -> Any:
    """Per-channel standardisation $(x - \\mu_c) / \\sigma_c$.

    Shapes: ``x (B, C, H, W)`` or ``(C, H, W)``; ``mean, std`` of length C.
    """
    xp = get_array_module(x)
    if x.ndim not in (3, 4):
        raise ValueError(f"normalize_image: expected (B, C, H, W) or (C, H, W), got {x.shape}")
    C = x.shape[-3]
    mean = xp.asarray(mean, dtype=x.dtype).reshape(-1)
    std = xp.asarray(std, dtype=x.dtype).reshape(-1)
    if mean.shape[0] != C or std.shape[0] != C:
        raise ValueError(
            f"normalize_image: {C} channels but mean has {mean.shape[0]} and std {std.shape[0]}"
        )
    return (x - mean[:, None, None]) / std[:, None, None]
