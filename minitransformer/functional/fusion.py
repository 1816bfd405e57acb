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

On the CPU, the fused softmax (with the attention's and the cross-entropies'), layer norm and
GELU have a third form: single-pass loops compiled by Numba (``numba_kernels.py``), used when
Numba is installed (``pip install "minitransformer[fast]"``). ``use_numba(False)``, or
``MINITRANSFORMER_NUMBA=0`` in the environment, makes them run as NumPy calls instead; the GPU
always runs CuPy calls.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import ModuleType

import numpy as np

__all__ = [
    "is_fused", "numba_allowed_by_environment", "numba_kernels_for", "use_fused", "use_numba",
]


def numba_allowed_by_environment() -> bool:
    """False when ``MINITRANSFORMER_NUMBA`` is 0, false, no or off (any case): the fused ops
    then run their NumPy calls even where Numba is installed."""
    value = os.environ.get("MINITRANSFORMER_NUMBA", "").strip().lower()
    return value not in ("0", "false", "no", "off")


class _Fusion:
    enabled: bool = True
    numba: bool = numba_allowed_by_environment()
    kernels: ModuleType | None = None  # numba_kernels, once imported
    missing: str | None = None  # why Numba could not be imported, once tried


_NUMBA_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


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


@contextlib.contextmanager
def use_numba(enabled: bool = True) -> Iterator[None]:
    """Inside the block, the fused ops on CPU arrays use the Numba kernels (True, the default
    when Numba is installed) or NumPy calls (False); the previous setting is restored after.
    ``use_numba(True)`` without Numba installed raises ImportError, naming the extra."""
    if enabled:
        _import_kernels(required=True)
    previous = _Fusion.numba
    _Fusion.numba = bool(enabled)
    try:
        yield
    finally:
        _Fusion.numba = previous


def numba_kernels_for(x: object) -> ModuleType | None:
    """The compiled kernels (``numba_kernels.py``) for the raw array ``x``: the module when
    ``x`` is a float32 or float64 NumPy array, Numba is installed and ``use_numba`` is on;
    otherwise None, and the fused op runs its NumPy/CuPy calls. The first call imports Numba;
    a kernel compiles on its first use for a dtype and is cached on disk after that (a small
    ViT's first float32 step: 5.3 s with an empty cache, 1.1 s with the kernels cached)."""
    if not _Fusion.numba or type(x) is not np.ndarray or x.dtype not in _NUMBA_DTYPES:
        return None
    return _import_kernels(required=False)


def _import_kernels(required: bool) -> ModuleType | None:
    if _Fusion.kernels is None and _Fusion.missing is None:
        try:
            from . import numba_kernels as kernels
        except (ImportError, OSError) as e:  # no Numba, one too old/new for NumPy, no LLVM
            _Fusion.missing = f"{type(e).__name__}: {e}"
        else:
            _Fusion.kernels = kernels
    if _Fusion.kernels is None and required:
        raise ImportError(
            f"use_numba(True): the compiled CPU kernels need Numba, which could not be "
            f"imported ({_Fusion.missing}). Install it with: pip install \"minitransformer[fast]\""
        )
    return _Fusion.kernels
