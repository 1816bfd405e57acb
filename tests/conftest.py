"""Shared fixtures: every test that takes ``device`` runs once per available backend.

The GPU run is the same test, parameterised; it is skipped (not copied) when no GPU is there,
unless the strict CuPy stand-in (``tests/cupy_standin.py``: NumPy underneath, CuPy's refusals
and a host-transfer counter on top) is asked for, with ``pytest --cupy-standin`` or
``MINITRANSFORMER_CUPY_STANDIN=tests.cupy_standin``: then the ``cuda`` half runs on it. A real
GPU always wins over the stand-in.
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
    cp = mt.backend.cupy()
    if getattr(cp, "IS_STANDIN", False):
        return f"cuda half: on the CuPy stand-in {cp.__name__} (no GPU)"
    return f"cuda half: {'real CuPy ' + cp.__version__ if mt.cuda_available() else 'skipped'}"


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
def rng():
    """A seeded NumPy generator for test inputs (inputs are made on the host, then moved)."""
    return np.random.default_rng(0)
