"""Checkpoints (safetensors + a JSON sidecar, atomic, checksummed, no pickle) and weight
import: ``load_pretrained`` turns real DINOv2 / DINO / timm ViT / OpenAI-open_clip CLIP / HF BERT
checkpoints into minitransformer models."""

from .checkpoint import (
    MAX_CHECKPOINT_BYTES,
    CheckpointError,
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
    sidecar_path,
)
from .convert_bert import convert_hf_bert_state_dict
from .convert_clip import convert_openai_clip_state_dict
from .load_pretrained import (
    FAMILIES,
    PretrainedLoadError,
    detect_family,
    load_pretrained,
    read_state_dict,
)
from .state import flatten_state, unflatten_state
from .tokenizer import encode_bert, encode_clip, load_tokenizer
from .torch_weights import convert_timm_vit_state_dict

__all__ = [
    "FAMILIES", "MAX_CHECKPOINT_BYTES", "CheckpointError", "PretrainedLoadError",
    "convert_hf_bert_state_dict", "convert_openai_clip_state_dict", "convert_timm_vit_state_dict",
    "detect_family", "encode_bert", "encode_clip", "flatten_state", "load_checkpoint",
    "load_model", "load_pretrained", "load_tokenizer", "read_state_dict", "save_checkpoint",
    "save_model", "sidecar_path", "unflatten_state",
]
