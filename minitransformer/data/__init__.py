"""Data: small real datasets (digits, procedural shapes, a text corpus), a tokenizer, batched
augmentations with DINO's multi-crop, and a loader that sends batches to a device.

Imports only NumPy, the standard library and ``minitransformer.backend``; scikit-learn is
imported inside ``load_digits`` only.
"""

from .augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    color_jitter,
    crop_resize,
    gaussian_blur,
    grayscale,
    horizontal_flip,
    normalize_image,
    random_resized_crop,
    resize,
    rgb_to_grayscale,
    sample_crop_boxes,
    solarize,
)
from .digits import Digits, load_digits
from .loader import DataLoader
from .multicrop import MultiCrop
from .shapes import (
    ALL_SHAPES,
    COLOUR_RGB,
    COLOURS,
    POSITION_PHRASES,
    POSITIONS,
    SHAPES,
    SIZES,
    ShapesData,
    caption_for,
    make_shapes,
    patch_mask_targets,
)
from .text import (
    SPECIAL_TOKENS,
    Tokenizer,
    caption_tokens,
    eot_positions,
    load_corpus,
    make_sequences,
    tokenize,
)

__all__ = [
    "ALL_SHAPES",
    "COLOURS",
    "COLOUR_RGB",
    "DataLoader",
    "Digits",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MultiCrop",
    "POSITIONS",
    "POSITION_PHRASES",
    "SHAPES",
    "SIZES",
    "SPECIAL_TOKENS",
    "ShapesData",
    "Tokenizer",
    "caption_for",
    "caption_tokens",
    "color_jitter",
    "crop_resize",
    "eot_positions",
    "gaussian_blur",
    "grayscale",
    "horizontal_flip",
    "load_corpus",
    "load_digits",
    "make_sequences",
    "make_shapes",
    "normalize_image",
    "patch_mask_targets",
    "random_resized_crop",
    "resize",
    "rgb_to_grayscale",
    "sample_crop_boxes",
    "solarize",
    "tokenize",
]
