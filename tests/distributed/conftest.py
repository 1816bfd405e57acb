"""Fixtures of the communication-layer tests: each test starts from, and leaves behind, the
world that was there before it (tests that call ``distributed.init`` or fake an MPI launch
in the environment must not change what the rest of the suite sees)."""

from __future__ import annotations

import pytest

from minitransformer import distributed

LAUNCH_VARIABLES = [v for pair in distributed.LAUNCHER_VARIABLES for v in pair]


@pytest.fixture(autouse=True)
def _keep_world(monkeypatch):
    saved = distributed._world
    for name in LAUNCH_VARIABLES + [distributed.CUDA_AWARE_VARIABLE]:
        monkeypatch.delenv(name, raising=False)
    distributed._world = None  # the next call detects the (cleaned) environment
    yield
    distributed._world = saved
