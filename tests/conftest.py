"""Shared fixtures: every test that takes ``device`` runs once per available backend.

The GPU run is the same test, parameterised; it is skipped (not copied) when no GPU is there.
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


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: runs on the CuPy backend; skipped without a GPU")


@pytest.fixture(params=_DEVICES)
def device(request):
    """The device name: "cpu", and "cuda" when CuPy and a GPU are present."""
    if request.param == "cuda" and not mt.cuda_available():
        pytest.skip("no CUDA GPU (or CuPy) available")
    return request.param


@pytest.fixture
def xp(device):
    """The array module of ``device``: numpy or cupy."""
    return mt.backend.as_device(device).xp


@pytest.fixture
def rng():
    """A seeded NumPy generator for test inputs (inputs are made on the host, then moved)."""
    return np.random.default_rng(0)
