"""Augmented views for the self-distillation recipes (DINO, DINOv2) and the datasets they
train on: the digits (8x8 grey) and the procedural shapes (32x32 RGB, with masks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ... import backend
from ...data import (
    MultiCrop,
    color_jitter,
    horizontal_flip,
    load_digits,
    make_shapes,
    patch_mask_targets,
    random_resized_crop,
)

__all__ = ["ImageSet", "LightViews", "load_image_set", "make_views"]


@dataclass
class ImageSet:
    """Training and evaluation images of a self-supervised recipe, on the host.

    ``x_train`` is what training draws from; ``x_eval_train``/``y_eval_train`` the labelled
    images that k-NN and linear probes fit on, ``x_test``/``y_test`` what they are scored on.
    For the shapes, ``masks_test`` (n, H, W) bool holds the object pixels and
    ``patch_labels_*`` (n, N) the patch classes (0 background, 1 + shape index).
    """

    name: str
    x_train: np.ndarray
    x_eval_train: np.ndarray
    y_eval_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    masks_test: np.ndarray | None = None
    patch_labels_eval_train: np.ndarray | None = None
    patch_labels_test: np.ndarray | None = None

    @property
    def img_size(self) -> int:
        return int(self.x_train.shape[-1])

    @property
    def in_chans(self) -> int:
        return int(self.x_train.shape[1])


def load_image_set(name: str, seed: int, n_train: int = 4000, n_eval_train: int = 1000,
                   n_test: int = 500, patch_size: int = 4,
                   background: tuple[float, float] = (0.0, 0.2)) -> ImageSet:
    """The digits (sklearn's split: train on the training images, k-NN fitted on them and
    scored on the test images) or the shapes (one object per image; ``n_train`` images to
    train on, a labelled set of ``n_eval_train`` and a test set of ``n_test`` from other
    seeds; ``background`` goes to ``make_shapes``: the range of each channel of an image's
    background colour). Shapes: images (n, C, S, S) float32 in [0, 1]."""
    if name == "digits":
        d = load_digits(seed=seed)
        return ImageSet("digits", d.x_train, d.x_train, d.y_train, d.x_test, d.y_test, 10)
    if name == "shapes":
        bg = tuple(background)
        train = make_shapes(n_train, seed=seed, background=bg)
        ev = make_shapes(n_eval_train, seed=seed + 10_000, background=bg)
        test = make_shapes(n_test, seed=seed + 20_000, background=bg)

        def patch_labels(s: Any) -> np.ndarray:
            obj = patch_mask_targets(s.masks, patch_size)  # (n, N) bool
            return np.where(obj, s.shape[:, None] + 1, 0).astype(np.int64)  # 0 = background

        return ImageSet("shapes", train.images, ev.images, ev.shape, test.images, test.shape,
                        len(train.shape_names), masks_test=test.masks,
                        patch_labels_eval_train=patch_labels(ev),
                        patch_labels_test=patch_labels(test))
    raise ValueError(f"unknown dataset {name!r}; expected 'digits' or 'shapes'")


class LightViews:
    """Light augmentation, as the project's PyTorch reference runs: a random resized crop
    (scale ``global_scale``, resized back to the input size), a horizontal flip with
    probability ``flip_p``, brightness/contrast jitter (p 0.8) and Gaussian pixel noise of std
    ``noise``; ``n_local`` smaller crops (``local_scale``) at ``local_size``.

    The digits use it with no flip and noise 0.05 (at 8x8, blur and solarisation erase the
    digit); the shapes with ``augment="light"``: flip 0.5, no noise.

    Shapes: x (B, C, S, S) -> [2 x (B, C, S, S)] + n_local x (B, C, l, l)."""

    def __init__(self, n_local: int = 0, local_size: int = 4,
                 global_scale: tuple[float, float] = (0.5, 1.0),
                 local_scale: tuple[float, float] = (0.15, 0.5), noise: float = 0.05,
                 flip_p: float = 0.0):
        self.n_local, self.local_size = n_local, local_size
        self.global_scale, self.local_scale, self.noise = global_scale, local_scale, noise
        self.flip_p = flip_p

    @property
    def n_views(self) -> int:
        return 2 + self.n_local

    def view(self, x: Any, size: int, scale: tuple[float, float],
             rng: np.random.Generator) -> Any:
        x = random_resized_crop(x, size, scale=scale, rng=rng)
        if self.flip_p > 0:
            x = horizontal_flip(x, p=self.flip_p, rng=rng)
        x = color_jitter(x, 0.4, 0.4, 0.0, 0.0, p=0.8, rng=rng)
        if self.noise == 0:
            return x
        noise = rng.standard_normal(x.shape).astype(x.dtype) * self.noise  # drawn on the host
        return x + backend.to_device(noise, backend.device_of(x))

    def __call__(self, x: Any, rng: np.random.Generator) -> list[Any]:
        views = [self.view(x, x.shape[-1], self.global_scale, rng) for _ in range(2)]
        views += [self.view(x, self.local_size, self.local_scale, rng)
                  for _ in range(self.n_local)]
        return views


def make_views(dataset: str, n_local: int, local_size: int,
               global_scale: tuple[float, float], local_scale: tuple[float, float],
               img_size: int, augment: str = "dino") -> Any:
    """The views of a dataset.

    - The digits: ``LightViews`` (crop, brightness/contrast, noise).
    - The shapes with ``augment="dino"``: DINO's ``MultiCrop`` (flip, colour jitter,
      grayscale, blur with sigma up to 1 px at 32 px, solarise on the second global view; no
      normalisation, since the images are already in [0, 1]).
    - The shapes with ``augment="light"``: ``LightViews`` with flips and no noise, as the
      project's PyTorch reference runs on the shapes (docs/dino.md)."""
    if augment not in ("dino", "light"):
        raise ValueError(f"unknown augment {augment!r}; expected 'dino' or 'light'")
    if dataset == "digits":
        return LightViews(n_local, local_size, tuple(global_scale), tuple(local_scale))
    if augment == "light":
        return LightViews(n_local, local_size, tuple(global_scale), tuple(local_scale),
                          noise=0.0, flip_p=0.5)
    return MultiCrop(img_size, local_size, n_local=n_local, global_scale=tuple(global_scale),
                     local_scale=tuple(local_scale), blur_sigma=(0.1, 1.0))
