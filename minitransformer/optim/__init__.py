"""Optimisers (SGD, AdamW with parameter groups), parameter grouping, gradient clipping,
schedules and the EMA teacher update."""

from .adamw import AdamW
from .clip_grad import clip_grad_norm_, clip_grad_per_param_
from .optimizer import Optimizer
from .param_groups import (
    DEFAULT_NO_DECAY,
    check_param_groups,
    layer_decay_lr_mult,
    layer_id,
    param_groups,
)
from .sgd import SGD

__all__ = [
    "DEFAULT_NO_DECAY", "SGD", "AdamW", "Optimizer", "check_param_groups", "clip_grad_norm_",
    "clip_grad_per_param_", "layer_decay_lr_mult", "layer_id", "param_groups",
]

# Schedules and EMA are written alongside the objectives; guarded so this package imports
# while they are in progress.
try:
    from .schedules import cosine_schedule, teacher_momentum_schedule, teacher_temp_schedule

    __all__ += ["cosine_schedule", "teacher_momentum_schedule", "teacher_temp_schedule"]
except ImportError:  # pragma: no cover
    pass
try:
    from .ema import ema_update

    __all__ += ["ema_update"]
except ImportError:  # pragma: no cover
    pass
