"""Fixtures for the op tests: ``fused`` runs a test with the fused composites, with their
composed versions (``F.use_fused(False)``), and, where Numba is installed, once more with the
fused ops' NumPy calls instead of the compiled kernels (``F.use_numba(False)``), so every
version meets the same reference."""

from __future__ import annotations

import pytest

from minitransformer import functional as F
from minitransformer.functional.fusion import _import_kernels

NUMBA = _import_kernels(required=False) is not None


@pytest.fixture(params=["fused", "fused-numpy", "composed"])
def fused(request):
    """True for the fused versions (compiled kernels on CPU arrays where Numba is installed;
    NumPy calls for ``fused-numpy``), False for the composed ones."""
    if request.param == "fused-numpy":
        if not NUMBA:
            pytest.skip("without Numba, 'fused' already runs the NumPy calls")
        if getattr(request.node, "callspec", None) and request.node.callspec.params.get(
                "device") == "cuda":
            pytest.skip("on the GPU, 'fused' already runs CuPy calls (Numba is CPU-only)")
    numba = NUMBA and request.param == "fused"
    with F.use_fused(request.param != "composed"), F.use_numba(numba):
        yield request.param != "composed"


@pytest.fixture(params=["numba", "numpy"])
def cpu_kernels(request):
    """The fused ops' CPU code: the compiled Numba kernels (skipped without Numba), then the
    NumPy calls."""
    if request.param == "numba" and not NUMBA:
        pytest.skip("Numba is not installed")
    with F.use_numba(request.param == "numba"):
        yield request.param
