"""Optimisers (SGD, AdamW with parameter groups), parameter grouping, gradient clipping,
schedules and the EMA teacher update."""

from .adamw import AdamW
from .clip_grad import clip_grad_norm_, clip_grad_per_param_
from .ema import ema_update
from .optimizer import Optimizer
from .param_groups import (
    DEFAULT_NO_DECAY,
    check_param_groups,
    layer_decay_lr_mult,
    layer_id,
    param_groups,
)
from .schedules import cosine_schedule, teacher_momentum_schedule, teacher_temp_schedule
from .sgd import SGD

__all__ = [
    "DEFAULT_NO_DECAY", "SGD", "AdamW", "Optimizer", "check_param_groups", "clip_grad_norm_",
    "clip_grad_per_param_", "cosine_schedule", "ema_update", "layer_decay_lr_mult", "layer_id",
    "param_groups", "teacher_momentum_schedule", "teacher_temp_schedule",
]
