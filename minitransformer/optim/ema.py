"""The exponential moving average that makes DINO's teacher from its student."""

from __future__ import annotations

from ..autograd import no_grad
from ..nn import Module

__all__ = ["ema_update"]


def ema_update(teacher: Module, student: Module, momentum: float) -> None:
    """$\\theta_t \\leftarrow m \\theta_t + (1 - m) \\theta_s$ for every parameter, in place.

    DINO's teacher update after each optimiser step (``main_dino.py``: over the backbone *and*
    the head, momentum from ``teacher_momentum_schedule``). Parameters are paired by name and
    must have the same shapes; buffers (e.g. BatchNorm statistics) are not averaged, as in DINO.
    The teacher is not trained: its parameters are set to ``requires_grad=False`` and their
    gradients cleared, so no optimiser or backward touches them.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"ema_update: momentum must be in [0, 1], got {momentum}")
    t_params = dict(teacher.named_parameters())
    s_params = dict(student.named_parameters())
    if t_params.keys() != s_params.keys():
        missing = sorted(set(s_params) - set(t_params))
        extra = sorted(set(t_params) - set(s_params))
        raise ValueError(
            f"ema_update: teacher and student parameters differ: missing in teacher {missing}, "
            f"extra in teacher {extra}"
        )
    with no_grad():
        for name, p_t in t_params.items():
            p_s = s_params[name]
            if p_t.shape != p_s.shape:
                raise ValueError(
                    f"ema_update: {name} has shape {tuple(p_t.shape)} in the teacher and "
                    f"{tuple(p_s.shape)} in the student"
                )
            p_t.data *= momentum
            p_t.data += (1.0 - momentum) * p_s.data.astype(p_t.dtype, copy=False)
            p_t.requires_grad = False
            p_t.grad = None
