"""Per-iteration schedules of DINO / DINOv2: cosine LR, weight decay, teacher momentum, and the
teacher-temperature warm-up. Each returns a NumPy array indexed by the iteration (or epoch)."""

from __future__ import annotations

import numpy as np

__all__ = ["cosine_schedule", "teacher_momentum_schedule", "teacher_temp_schedule"]


def cosine_schedule(base: float, final: float, total_iters: int, warmup_iters: int = 0,
                    start_warmup_value: float = 0.0) -> np.ndarray:
    """DINO's ``utils.cosine_scheduler``, per iteration.

    A linear warm-up ``linspace(start_warmup_value, base, warmup_iters)``, then for
    $i = 0 .. n-1$, $n$ = total_iters - warmup_iters:
    $v_i = \\text{final} + \\tfrac12 (\\text{base} - \\text{final})(1 + \\cos(\\pi i / n))$.
    Note $v_{n-1}$ is just short of ``final`` (the cosine never reaches $\\pi$), as in DINO.
    DINO uses it for the LR (``0.0005 * B / 256`` -> 1e-6, 10 warm-up epochs), the weight
    decay (0.04 -> 0.4) and the teacher momentum (0.996 -> 1).

    Shapes: -> (total_iters,) float64.
    """
    if total_iters < 1:
        raise ValueError(f"cosine_schedule: total_iters must be >= 1, got {total_iters}")
    if not 0 <= warmup_iters <= total_iters:
        raise ValueError(
            f"cosine_schedule: warmup_iters must be in [0, total_iters={total_iters}], got "
            f"{warmup_iters}"
        )
    warmup = np.linspace(start_warmup_value, base, warmup_iters) if warmup_iters > 0 \
        else np.array([])
    i = np.arange(total_iters - warmup_iters)
    n = max(len(i), 1)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * i / n))
    schedule = np.concatenate((warmup, cosine))
    assert len(schedule) == total_iters
    return schedule


def teacher_temp_schedule(warmup_temp: float, temp: float, warmup_epochs: int,
                          total_epochs: int) -> np.ndarray:
    """DINO's teacher temperature, per **epoch**: ``linspace(warmup_temp, temp,
    warmup_epochs)`` then ``temp`` (``main_dino.py: DINOLoss.__init__``).

    DINO's recipe: 0.04 -> 0.07 over 30 epochs (epoch 1: 0.0410345; epoch 29 and later: 0.07);
    "anything above 0.07 is unstable". A lower temperature sharpens more (0.02 on small data,
    dino#43). DINOv2 runs the same warm-up per iteration: pass iteration counts instead.

    Shapes: -> (total_epochs,) float64.
    """
    for name, t in (("warmup_temp", warmup_temp), ("temp", temp)):
        if not t > 0:
            raise ValueError(f"teacher_temp_schedule: {name} must be positive, got {t}")
    if not 0 <= warmup_epochs <= total_epochs:
        raise ValueError(
            f"teacher_temp_schedule: warmup_epochs must be in [0, total_epochs={total_epochs}], "
            f"got {warmup_epochs}"
        )
    return np.concatenate((np.linspace(warmup_temp, temp, warmup_epochs),
                           np.ones(total_epochs - warmup_epochs) * temp))


def teacher_momentum_schedule(total_iters: int, base: float = 0.996,
                              final: float = 1.0) -> np.ndarray:
    """The EMA momentum of the teacher per iteration: cosine from ``base`` to ``final``
    (``cosine_schedule(base, final, total_iters)``, DINO's ``momentum_schedule``). DINO: 0.996
    (0.9995 suggested for batch 256); DINOv2: 0.992 (0.994 for ViT-L/g).

    Shapes: -> (total_iters,) float64.
    """
    if not 0.0 <= base <= 1.0 or not 0.0 <= final <= 1.0:
        raise ValueError(
            f"teacher_momentum_schedule: momenta must be in [0, 1], got base={base}, "
            f"final={final}"
        )
    return cosine_schedule(base, final, total_iters)
