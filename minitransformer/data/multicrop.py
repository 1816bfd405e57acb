"""DINO's multi-crop: two global views and several small local views of each image.

The recipe of DINO's ``DataAugmentationDINO`` (``main_dino.py``), batched::

    view       crop scale                 blur p   solarize p
    global 1   global_scale (0.4, 1.0)    1.0      0
    global 2   global_scale               0.1      0.2
    local i    local_scale (0.05, 0.4)    0.5      0

Every view first gets: random resized crop -> horizontal flip (p 0.5) -> colour jitter
(0.4, 0.4, 0.2, 0.1) with p 0.8 -> grayscale p 0.2; then the blur and solarisation of the
table, then an optional per-channel normalisation (DINO's is ImageNet's mean/std). Sizes are
parameters (224 / 96 px in DINO; e.g. 8 / 6 px for the 8x8 digits).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from minitransformer.backend import default_rng

from . import augment as A

__all__ = ["MultiCrop"]


class MultiCrop:
    """Make ``2 + n_local`` augmented views of a batch, ordered ``[global1, global2, local1, ...]``.

    Single-channel images (the digits) work: colour jitter then changes brightness and contrast
    only, and grayscale is a no-op, because saturation, hue and grayscale need 3 channels.
    ``mean``/``std`` (one value per channel), when given, normalise every view at the end.

    Shapes: ``x (B, C, H, W)`` -> a list of ``(B, C, g, g)`` twice, then ``(B, C, l, l)``
    ``n_local`` times.
    """

    def __init__(
        self,
        global_size: int | Sequence[int],
        local_size: int | Sequence[int],
        n_local: int = 8,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.4),
        *,
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
        jitter_p: float = 0.8,
        gray_p: float = 0.2,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        solarize_threshold: float = 0.5,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        if n_local < 0:
            raise ValueError(f"MultiCrop: n_local must be >= 0, got {n_local}")
        if (mean is None) != (std is None):
            raise ValueError("MultiCrop: give both mean and std, or neither")
        self.global_size = global_size
        self.local_size = local_size
        self.n_local = int(n_local)
        self.global_scale = global_scale
        self.local_scale = local_scale
        self.ratio = ratio
        self.flip_p = flip_p
        self.jitter = jitter
        self.jitter_p = jitter_p
        self.gray_p = gray_p
        self.blur_sigma = blur_sigma
        self.solarize_threshold = solarize_threshold
        self.mean = mean
        self.std = std

    @property
    def n_views(self) -> int:
        return 2 + self.n_local

    def __repr__(self) -> str:
        return (
            f"MultiCrop(global_size={self.global_size}, local_size={self.local_size}, "
            f"n_local={self.n_local}, global_scale={self.global_scale}, "
            f"local_scale={self.local_scale})"
        )

    def view(
        self,
        x: Any,
        size: int | Sequence[int],
        scale: tuple[float, float],
        blur_p: float,
        solarize_p: float,
        rng: np.random.Generator,
    ) -> Any:
        """One augmented view: crop, flip, jitter, grayscale, blur, solarize, normalise."""
        b, c, s, h = self.jitter
        x = A.random_resized_crop(x, size, scale=scale, ratio=self.ratio, rng=rng)
        x = A.horizontal_flip(x, p=self.flip_p, rng=rng)
        x = A.color_jitter(x, b, c, s, h, p=self.jitter_p, rng=rng)
        x = A.grayscale(x, p=self.gray_p, rng=rng)
        x = A.gaussian_blur(x, p=blur_p, sigma=self.blur_sigma, rng=rng)
        if solarize_p > 0:
            x = A.solarize(x, p=solarize_p, threshold=self.solarize_threshold, rng=rng)
        if self.mean is not None:
            x = A.normalize_image(x, self.mean, self.std)
        return x

    def __call__(self, x: Any, rng: np.random.Generator | None = None) -> list[Any]:
        """The views ``[global1, global2, local1, ..., local_n]`` of the batch ``x``."""
        rng = default_rng("cpu") if rng is None else rng
        views = [
            self.view(x, self.global_size, self.global_scale, 1.0, 0.0, rng),
            self.view(x, self.global_size, self.global_scale, 0.1, 0.2, rng),
        ]
        for _ in range(self.n_local):
            views.append(self.view(x, self.local_size, self.local_scale, 0.5, 0.0, rng))
        return views
