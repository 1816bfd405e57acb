"""Models: dataclass configs with named presets, the transformer encoder, the Vision
Transformer, the text transformer, BERT, the heads and the CLIP dual encoder."""

from .backbone_head import BackboneWithHead
from .bert import BERT
from .clip import CLIP
from .config import TextConfig, ViTConfig
from .encoder import TransformerEncoder, drop_path_rates, make_blocks
from .heads import (
    BatchNorm1d,
    DINOHead,
    MIMPixelHead,
    MIMTokenHead,
    MLMHead,
    ProjectionHead,
    WeightNormLinear,
    cancel_last_layer_gradients,
    convert_sync_batchnorm,
)
from .text import TextTransformer
from .vit import VisionTransformer

__all__ = [
    "BERT", "BackboneWithHead", "CLIP", "BatchNorm1d", "DINOHead", "MIMPixelHead",
    "MIMTokenHead", "MLMHead",
    "ProjectionHead", "TextConfig", "TextTransformer", "TransformerEncoder", "ViTConfig",
    "VisionTransformer", "WeightNormLinear", "cancel_last_layer_gradients",
    "convert_sync_batchnorm", "drop_path_rates", "make_blocks",
]
