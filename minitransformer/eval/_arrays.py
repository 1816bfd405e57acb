"""Input handling shared by the evaluations: Tensors, NumPy or CuPy arrays, lists."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import backend
from ..autograd import Tensor


def raw(x: Any, xp: Any = None) -> Any:
    """The raw array behind ``x`` (a Tensor's ``.data``), on ``xp``'s device when given."""
    a = x.data if isinstance(x, Tensor) else x
    if not (isinstance(a, np.ndarray) or type(a).__module__.startswith("cupy")):
        a = np.asarray(a)
    if xp is not None and backend.get_array_module(a) is not xp:
        a = xp.asarray(backend.to_numpy(a)) if xp is not np else backend.to_numpy(a)
    return a


def float_array(x: Any, xp: Any = None) -> Any:
    """``raw(x)`` as a floating array (ints become the default float dtype)."""
    a = raw(x, xp)
    return a if a.dtype.kind == "f" else a.astype(backend.get_default_dtype())


def int_labels(y: Any, xp: Any, fn: str, n: int) -> Any:
    """Integer labels of length ``n`` on ``xp``'s device."""
    a = raw(y, xp)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{fn}: labels must be integers, got dtype {a.dtype}")
    if a.shape != (n,):
        raise ValueError(f"{fn}: expected {n} labels of shape ({n},), got shape {a.shape}")
    return a.astype(xp.int64, copy=False)


def l2_normalize(x: Any, eps: float = 1e-12) -> Any:
    """Rows scaled to unit L2 norm, $x / \\max(\\|x\\|, \\epsilon)$ (as F.normalize / torch)."""
    xp = backend.get_array_module(x)
    return x / xp.maximum(xp.linalg.norm(x, axis=-1, keepdims=True), eps)
