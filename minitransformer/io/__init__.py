"""Checkpoints (safetensors + a JSON sidecar, atomic, checksummed, no pickle) and weight
import."""

from .checkpoint import (
    MAX_CHECKPOINT_BYTES,
    CheckpointError,
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
    sidecar_path,
)
from .state import flatten_state, unflatten_state
from .torch_weights import convert_timm_vit_state_dict

__all__ = [
    "MAX_CHECKPOINT_BYTES", "CheckpointError", "convert_timm_vit_state_dict", "flatten_state",
    "load_checkpoint", "load_model", "save_checkpoint", "save_model", "sidecar_path",
    "unflatten_state",
]
