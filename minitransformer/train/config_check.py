"""Resuming a run with the settings it was started with (stub: filled in by the next commit).

``compare_config(saved, current, allow)`` raises ``ConfigMismatch`` listing every setting whose
value differs between a checkpoint's configuration and the recipe about to resume it, except
those named in ``allow`` (settings safe to change mid-run, such as ``steps``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["ConfigMismatch", "compare_config"]


class ConfigMismatch(ValueError):
    """A resumed run's settings differ from its checkpoint's."""


def compare_config(saved: dict[str, Any], current: dict[str, Any],
                   allow: Iterable[str] = ()) -> None:
    """Raise ``ConfigMismatch`` naming each setting that differs (old and new values), except
    those in ``allow``."""
