"""Small helpers for the op tests: leaves on a device, host copies, closeness."""

from __future__ import annotations

from typing import Any

import numpy as np

import minitransformer as mt
from minitransformer import backend


def leaf(a: Any, device: str, requires_grad: bool = True) -> mt.Tensor:
    """A leaf Tensor holding ``a`` on ``device``. On the CPU the array is wrapped as is, so a
    non-contiguous view stays non-contiguous; on the GPU a strided copy is rebuilt there."""
    a = np.asarray(a)
    if device == "cpu":
        data = a
    else:
        data = backend.to_device(a, device)
        if not a.flags.c_contiguous and a.ndim >= 1:  # rebuild a strided view on the device
            xp = backend.as_device(device).xp
            big = xp.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
            big[..., ::2] = data
            data = big[..., ::2]
    return mt.Tensor(data, requires_grad=requires_grad and a.dtype.kind == "f")


def host(x: Any) -> np.ndarray:
    """A NumPy copy of a Tensor or array from any device."""
    if isinstance(x, mt.Tensor):
        return x.numpy()
    return np.array(backend.to_numpy(x))


def assert_close(actual: Any, expected: Any, rtol: float = 1e-12, atol: float = 1e-12) -> None:
    np.testing.assert_allclose(host(actual), np.asarray(expected), rtol=rtol, atol=atol)
