"""Global autograd switches as context managers: ``no_grad``, ``enable_grad``, ``debug_mode``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["debug_mode", "detect_anomaly", "enable_grad", "is_debug_mode", "is_grad_enabled",
           "no_grad", "set_grad_enabled"]


class _State:
    """Mutable module state, read on every op (attribute access on a class is fast)."""

    grad_enabled: bool = True
    debug: bool = False


def is_grad_enabled() -> bool:
    return _State.grad_enabled


def is_debug_mode() -> bool:
    return _State.debug


@contextlib.contextmanager
def set_grad_enabled(mode: bool) -> Iterator[None]:
    """Turn graph recording on or off inside the block, and restore it afterwards."""
    previous = _State.grad_enabled
    _State.grad_enabled = bool(mode)
    try:
        yield
    finally:
        _State.grad_enabled = previous


def no_grad() -> contextlib.AbstractContextManager[None]:
    """Ops inside the block record no graph: outputs have ``requires_grad=False``.

    Use it for evaluation, for the EMA teacher, and for in-place parameter updates.
    """
    return set_grad_enabled(False)


def enable_grad() -> contextlib.AbstractContextManager[None]:
    """Record the graph again inside a ``no_grad`` block."""
    return set_grad_enabled(True)


@contextlib.contextmanager
def debug_mode(enabled: bool = True) -> Iterator[None]:
    """Check every op's forward output and backward gradients for NaN/inf.

    The first op that produces a non-finite value raises ``FloatingPointError`` naming the op,
    the pass (forward or backward) and the shapes involved. Slow: for hunting bugs only.
    """
    previous = _State.debug
    _State.debug = bool(enabled)
    try:
        yield
    finally:
        _State.debug = previous


detect_anomaly = debug_mode  # the name PyTorch users know
