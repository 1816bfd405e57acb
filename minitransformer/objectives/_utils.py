"""Small helpers shared by the objectives: input coercion, checks and draws.

Private: the public names live in the modules that use them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import backend
from ..autograd import Tensor


def is_array(x: Any) -> bool:
    return isinstance(x, np.ndarray) or type(x).__module__.startswith("cupy")


def as_tensor(x: Any, name: str, fn: str) -> Tensor:
    """A Tensor view of a differentiable input (arrays are wrapped, not copied)."""
    if isinstance(x, Tensor):
        return x
    if is_array(x):
        return Tensor(x)
    raise TypeError(f"{fn}: {name} must be a Tensor or an array, got {type(x).__name__}")


def raw(x: Any) -> Any:
    """The raw array of a Tensor or array: the teacher side and targets carry no gradient."""
    if isinstance(x, Tensor):
        return x.data
    if is_array(x):
        return x
    return np.asarray(x)


def as_list(xs: Any, name: str, fn: str) -> list[Any]:
    """A non-empty list of per-crop chunks."""
    if isinstance(xs, (Tensor, np.ndarray)) or is_array(xs) or not isinstance(xs, Sequence):
        raise TypeError(
            f"{fn}: {name} must be a list with one (B, K) entry per crop, got "
            f"{type(xs).__name__}"
        )
    if len(xs) == 0:
        raise ValueError(f"{fn}: {name} is empty")
    return list(xs)


def check_temp(temp: float, name: str, fn: str) -> float:
    if not np.isfinite(temp) or temp <= 0:
        raise ValueError(f"{fn}: {name} must be a positive temperature, got {temp}")
    return float(temp)


def shape_str(xs: Sequence[Any]) -> str:
    return ", ".join(str(tuple(x.shape)) for x in xs)


def uniform(rng: Any, shape: tuple[int, ...], device: Any = None) -> Any:
    """U[0, 1) samples in float64 on ``device`` (default: the generator's own device).

    ``rng`` is a NumPy Generator (drawn on the host, then moved) or CuPy's generator, as in
    ``functional.dropout``; ``None`` is ``backend.default_rng(device)``."""
    if rng is None:
        rng = backend.default_rng(device)
    u = rng.random(shape)
    if device is None:
        return u
    return backend.to_device(u, device)


def scalar_uniform(rng: Any, low: float, high: float) -> float:
    """One U[low, high) draw as a Python float (``random.uniform`` in the reference code)."""
    return low + (high - low) * float(rng.random())


def scalar_randint(rng: Any, low: int, high: int) -> int:
    """One integer uniform on [low, high] *inclusive* (Python's ``random.randint``)."""
    n = high - low + 1
    return low + min(int(float(rng.random()) * n), n - 1)
