"""Layers: Module, Parameter and the transformer building blocks.

Parameter names and shapes follow the timm / DINOv2 layout (design §3) so real checkpoints map
onto them by name; only ``Linear.weight`` is transposed, (in, out) here as in $Q = X W_Q$.
"""

from . import init
from .attention import MultiHeadAttention, check_attention_mask
from .block import TransformerBlock
from .dropout import Dropout, DropPath
from .layer_scale import LayerScale
from .linear import Embedding, Linear
from .mlp import ACTIVATIONS, Mlp, activation
from .module import Module, ModuleList, Parameter, Sequential, StateDictError
from .normalization import LayerNorm
from .patch_embed import PatchEmbed
from .positional import (
    bicubic_matrix,
    interpolate_pos_embed,
    sincos_1d,
    sincos_2d_position_embedding,
    sinusoidal_position_encoding,
)

__all__ = [
    "ACTIVATIONS", "DropPath", "Dropout", "Embedding", "LayerNorm", "LayerScale", "Linear",
    "Mlp", "Module", "ModuleList", "MultiHeadAttention", "Parameter", "PatchEmbed",
    "Sequential", "StateDictError", "TransformerBlock", "activation", "bicubic_matrix",
    "check_attention_mask", "init", "interpolate_pos_embed", "sincos_1d",
    "sincos_2d_position_embedding", "sinusoidal_position_encoding",
]
