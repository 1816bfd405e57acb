"""The switch for the ops' data checks: validation that reads the values of an input.

A few ops check the *values* of their integer inputs, because a bad value gives no error on
a GPU, only wrong numbers: ``cross_entropy`` its targets (in [0, K) or ``ignore_index``),
``getitem`` its integer index arrays (CuPy wraps an out-of-range index around silently), and
``nn.Embedding`` its ids. Such a check is a reduction whose answer the host must read: on a
GPU, one device-to-host transfer that waits for every queued kernel, per call.

The checks are on by default, on every device, so that a learner gets an error naming the
bad value. A training loop that has validated its whole dataset once (issue 14: validation
once per dataset, not per call) runs its steps with them off::

    with F.use_data_checks(False):      # the ops read no values: no host synchronisation
        for batch in loader:
            loss = step(batch)

Off applies to device (CuPy) arrays only: on NumPy arrays the data is already on the host and
a check costs one cheap reduction, so the CPU keeps its clear errors whatever the switch says.
Checks of shapes and dtypes never read values and always run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["check_values", "data_checks_enabled", "use_data_checks"]


class _Checks:
    enabled: bool = True


def data_checks_enabled() -> bool:
    """True when the ops check the values of their inputs on a GPU too (the default)."""
    return _Checks.enabled


@contextlib.contextmanager
def use_data_checks(enabled: bool = True) -> Iterator[None]:
    """Inside the block, the ops' data checks run (True, the default) or are skipped on device
    arrays (False: no device-to-host read); the previous setting is restored afterwards."""
    previous = _Checks.enabled
    _Checks.enabled = bool(enabled)
    try:
        yield
    finally:
        _Checks.enabled = previous


def check_values(a: Any) -> bool:
    """Whether an op checks the values of the raw array ``a`` now: always for NumPy arrays
    (free), for device arrays unless ``use_data_checks(False)`` is in force."""
    return _Checks.enabled or isinstance(a, np.ndarray)
