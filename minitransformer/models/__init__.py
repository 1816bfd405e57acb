"""Models: dataclass configs with named presets, the transformer encoder, the Vision
Transformer and the text transformer."""

from .config import TextConfig, ViTConfig
from .encoder import TransformerEncoder, drop_path_rates, make_blocks
from .text import TextTransformer
from .vit import VisionTransformer

__all__ = [
    "TextConfig", "TextTransformer", "TransformerEncoder", "ViTConfig", "VisionTransformer",
    "drop_path_rates", "make_blocks",
]
