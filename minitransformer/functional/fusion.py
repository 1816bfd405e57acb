"""The switch between fused and composed composites.

Every composite op (softmax, layer_norm, cross_entropy, attention, ...) exists twice: a
readable ``*_composed`` version built from primitives, whose gradient the engine derives, and
a fused ``Function`` with a hand-written backward that is faster and keeps less memory. The
public names (``F.softmax``, ``F.layer_norm``, ...) use the fused version unless fusion is
switched off::

    with F.use_fused(False):        # every public composite now runs its composed version
        loss = model(x).sum()
        loss.backward()

This is how a learner can step through the composed graph, and how the tests prove that the
two versions agree.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["is_fused", "use_fused"]


class _Fusion:
    enabled: bool = True


def is_fused() -> bool:
    """True when the public composites run their fused Functions (the default)."""
    return _Fusion.enabled


@contextlib.contextmanager
def use_fused(enabled: bool = True) -> Iterator[None]:
    """Inside the block, public composites use the fused (True) or composed (False) version;
    the previous setting is restored afterwards."""
    previous = _Fusion.enabled
    _Fusion.enabled = bool(enabled)
    try:
        yield
    finally:
        _Fusion.enabled = previous
