"""Global autograd switches: ``no_grad``, ``enable_grad``, ``set_grad_enabled``, ``debug_mode``.

``no_grad`` and ``enable_grad`` work as context managers and as function decorators, and
nest; ``set_grad_enabled(mode)`` switches at once (a plain call) and restores the previous
mode when used in a ``with`` block, as in PyTorch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["debug_mode", "detect_anomaly", "enable_grad", "is_debug_mode", "is_grad_enabled",
           "no_grad", "set_grad_enabled"]


class _State:
    """Mutable module state, read on every op (attribute access on a class is fast)."""

    grad_enabled: bool = True
    debug: bool = False


def is_grad_enabled() -> bool:
    """Whether ops record the graph now."""
    return _State.grad_enabled


def is_debug_mode() -> bool:
    """Whether every op's outputs and gradients are checked for NaN/inf now."""
    return _State.debug


class _GradMode(contextlib.ContextDecorator):
    """Sets grad mode to ``mode`` on entry and restores the previous mode on exit.

    A stack of previous modes (not one slot) lets one instance be re-entered, which happens
    when it decorates a recursive function."""

    mode: bool

    def __init__(self) -> None:
        self._previous: list[bool] = []

    def __enter__(self) -> None:
        self._previous.append(_State.grad_enabled)
        _State.grad_enabled = self.mode

    def __exit__(self, *exc: Any) -> None:
        _State.grad_enabled = self._previous.pop()


class no_grad(_GradMode):  # noqa: N801 - the name users know from PyTorch
    """Ops inside the block (or the decorated function) record no graph: their outputs have
    ``requires_grad=False`` and no creator. Use it for evaluation, the EMA teacher and
    in-place parameter updates."""

    mode = False


class enable_grad(_GradMode):  # noqa: N801
    """Record the graph again inside a ``no_grad`` block."""

    mode = True


class set_grad_enabled:  # noqa: N801
    """Switch graph recording on or off now; as a ``with`` block, restore the old mode after.

    ``set_grad_enabled(False)`` alone switches recording off until switched back on."""

    def __init__(self, mode: bool):
        self.previous = _State.grad_enabled
        _State.grad_enabled = bool(mode)

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        _State.grad_enabled = self.previous


@contextlib.contextmanager
def debug_mode(enabled: bool = True) -> Iterator[None]:
    """Check every op's forward output and backward gradients for NaN/inf.

    The first op that produces a non-finite value raises ``FloatingPointError`` naming the op,
    the pass (forward or backward), the shapes involved and whether its inputs were finite.
    Slow (a reduction per array): for hunting bugs only. Like ``torch.autograd.detect_anomaly``.
    """
    previous = _State.debug
    _State.debug = bool(enabled)
    try:
        yield
    finally:
        _State.debug = previous


detect_anomaly = debug_mode  # the name PyTorch users know
