"""Fixtures for the op tests: ``fused`` runs a test once with the fused composites and once
with their composed versions (``F.use_fused(False)``), so both meet the same reference."""

from __future__ import annotations

import pytest

from minitransformer import functional as F


@pytest.fixture(params=[True, False], ids=["fused", "composed"])
def fused(request):
    with F.use_fused(request.param):
        yield request.param
