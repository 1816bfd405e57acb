"""The handwritten digits bundled with scikit-learn: 1,797 real 8x8 images, no download.

Each image is NCHW ``(1, 8, 8)`` with values in [0, 1] (scikit-learn's 0..16 grey levels / 16).
The split is stratified: every class gives the same fraction of its images to the test set, so
the class balance of both sets matches the full data.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Digits", "load_digits"]


class Digits(NamedTuple):
    """A train/test split of the digits. Unpacks as ``x_train, y_train, x_test, y_test``."""

    x_train: np.ndarray  # (N_train, 1, 8, 8) float in [0, 1]
    y_train: np.ndarray  # (N_train,) int64 class 0..9
    x_test: np.ndarray  # (N_test, 1, 8, 8)
    y_test: np.ndarray  # (N_test,)


@lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits, read once per process (the import alone takes a second)."""
    from sklearn.datasets import load_digits as _sklearn_load_digits  # lazy: a heavy import

    bunch = _sklearn_load_digits()
    images = np.asarray(bunch.images, dtype=np.float64) / 16.0  # (1797, 8, 8), 0..16 -> [0, 1]
    labels = np.asarray(bunch.target, dtype=np.int64)  # (1797,)
    images.flags.writeable = False  # shared by every call: fancy indexing below copies
    labels.flags.writeable = False
    return images, labels


def load_digits(test_fraction: float = 0.28, seed: int = 0, dtype: Any = np.float32) -> Digits:
    """Load scikit-learn's digits as NCHW images in [0, 1], split stratified by class.

    ``round(test_fraction * count)`` images of each class go to the test set, chosen with
    ``np.random.default_rng(seed)``; both sets are then shuffled. The default gives 1,293 train
    and 504 test images (the project's PyTorch reference runs used about 1,300 / 497).

    Shapes: ``x_train (N_train, 1, 8, 8)``, ``y_train (N_train,)`` int64, same for the test set.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"load_digits: test_fraction must be in (0, 1), got {test_fraction!r}")
    images, labels = _raw_digits()  # (1797, 8, 8) in [0, 1], (1797,)

    rng = np.random.default_rng(seed)
    test_parts = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test_parts.append(idx[: int(round(len(idx) * test_fraction))])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test_parts)] = True
    train_idx = rng.permutation(np.flatnonzero(~is_test))
    test_idx = rng.permutation(np.flatnonzero(is_test))

    x = images[:, None, :, :].astype(dtype)  # (1797, 1, 8, 8): NCHW with one channel
    return Digits(
        x_train=x[train_idx],
        y_train=labels[train_idx],
        x_test=x[test_idx],
        y_test=labels[test_idx],
    )
