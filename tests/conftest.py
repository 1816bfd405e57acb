"""Shared fixtures: every test that takes ``device`` runs once per available backend.

The GPU run is the same test, parameterised; it is skipped (not copied) when no GPU is there,
unless the strict CuPy stand-in (``tests/cupy_standin.py``: NumPy underneath, CuPy's refusals
and a host-transfer counter on top) is asked for, with ``pytest --cupy-standin`` or
``MINITRANSFORMER_CUPY_STANDIN=tests.cupy_standin``: then the ``cuda`` half runs on it. A real
GPU always wins over the stand-in.

How the float64 tolerances were chosen, and why they also hold on a GPU. The tests compare
float64 results with references written in plain NumPy float64, so the only differences are
rounding, and on a GPU the rounding differs: cuBLAS and CuPy's reductions (CUB) add in other
orders (blocked, tree-shaped, atomics in ``scatter_add``), and CUDA's exp/log/tanh/erf are
within 1-2 ulp where NumPy's are within 1. A sum of n terms in any order has an error of at
most (n - 1) u sum|x_i|, u = 2^-53 = 1.1e-16 (Higham, Accuracy and Stability of Numerical
Algorithms, 2nd ed., section 4.2), so two orders differ by at most 2 n u sum|x_i|, that is a
relative difference of about 2 n u kappa in the result, kappa = sum|x_i| / |sum x_i| its
condition number; a composed op (matmul, softmax, matmul) adds one such term per reduction.
- ``rtol=1e-12`` (``tests/functional/helpers.assert_close``'s default): element-wise ops and
  single reductions over the tests' small axes (n <= 256): 2 n u = 6e-14, so this leaves a
  factor of ~15 for kappa (inputs drawn in O(1) ranges, kappa = 1 for positive terms such as
  softmax denominators, ~sqrt(n) for random signs), and ~4000 ulp for an element-wise op.
- ``rtol=1e-10`` to ``1e-9``: composites and whole models (several chained reductions of up
  to ~10^3 terms, kappa up to ~10^2): depth * 2 n u * kappa ~ 3 * 2e-13 * 100 = 6e-11.
- ``atol=1e-12`` to ``1e-11`` beside them where a result may cancel to ~0 (kappa unbounded),
  as a relative bound then means nothing: the absolute error is n u sum|x_i| ~ 1e-13.
- ``gradcheck`` (central differences, eps 1e-6, rtol 1e-5): its own error (truncation
  ~eps^2, rounding ~u / eps ~ 1e-10) dwarfs any reduction order.
These are bounds for the magnitudes the tests use, not for any input; a real GPU has not run
them yet: ``bench/gpu_check.py`` runs this cuda half on one and reports what fails.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import minitransformer as mt

settings.register_profile(
    "default",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("ci" if os.environ.get("CI") else "default")

_DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


_STANDIN = "tests.cupy_standin"


def pytest_addoption(parser):
    parser.addoption("--cupy-standin", action="store_true", default=False,
                     help="run the cuda half of the suite on the strict CuPy stand-in "
                          f"({_STANDIN}) when no real GPU is there (same as "
                          f"{mt.backend.STANDIN_VARIABLE}={_STANDIN})")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: runs on the CuPy backend; skipped without a GPU "
                                       "(or run on the CuPy stand-in with --cupy-standin)")
    if config.getoption("--cupy-standin"):
        # read by backend.cupy() on its first call, which no import makes
        os.environ[mt.backend.STANDIN_VARIABLE] = _STANDIN


def pytest_report_header(config):
    if not mt.cuda_available():  # no CuPy: backend.cupy() is a proxy that raises on any name
        return "cuda half: skipped (no CuPy or no GPU; --cupy-standin runs it on the stand-in)"
    cp = mt.backend.cupy()
    if getattr(cp, "IS_STANDIN", False):
        return f"cuda half: on the CuPy stand-in {cp.__name__} (no GPU)"
    return f"cuda half: real CuPy {cp.__version__}"


@pytest.fixture(params=_DEVICES)
def device(request):
    """The device name: "cpu", and "cuda" when CuPy and a GPU are present."""
    if request.param == "cuda" and not mt.cuda_available():
        pytest.skip("no CUDA GPU (or CuPy) available; --cupy-standin runs it on the stand-in")
    return request.param


@pytest.fixture
def xp(device):
    """The array module of ``device``: numpy or cupy."""
    return mt.backend.as_device(device).xp


@pytest.fixture
def cupy_standin(monkeypatch):
    """The strict CuPy stand-in as the backend's "cuda" during the test, whatever the
    environment and whether or not a GPU is there: the module, with its transfer counters
    reset (``counting()``, ``transfers(direction)``). For tests of host synchronisation, which
    only the stand-in can count."""
    from minitransformer import backend
    from tests import cupy_standin as cp

    for name in ("_default_device", "_cupy_module", "_cuda_device", "_seed"):
        monkeypatch.setattr(backend, name, getattr(backend, name))
    monkeypatch.setattr(backend, "_rngs", dict(backend._rngs))
    monkeypatch.delenv("MINITRANSFORMER_DEVICE", raising=False)
    monkeypatch.setenv(backend.STANDIN_VARIABLE, _STANDIN)
    monkeypatch.setattr(backend, "_import_real_cupy",
                        lambda: backend._CupyMissing("ModuleNotFoundError: no cupy in this test"))
    backend._cupy_module = None
    backend._cuda_device = None
    backend.set_default_device(None)
    assert backend.cupy() is cp and mt.cuda_available()
    cp.reset_transfers()
    yield cp
    cp.reset_transfers()


@pytest.fixture
def rng():
    """A seeded NumPy generator for test inputs (inputs are made on the host, then moved)."""
    return np.random.default_rng(0)
