"""The sklearn digits: shapes, range, a stratified split that partitions the data, determinism."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minitransformer.data import Digits, load_digits


@pytest.fixture(scope="module")
def digits() -> Digits:
    return load_digits()


def test_shapes_dtypes_and_range(digits):
    x_train, y_train, x_test, y_test = digits  # unpacks like a tuple
    assert x_train.ndim == 4 and x_train.shape[1:] == (1, 8, 8)
    assert x_test.shape[1:] == (1, 8, 8)
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert len(x_train) == len(y_train) and len(x_test) == len(y_test)
    assert len(x_train) + len(x_test) == 1797
    assert 1250 <= len(x_train) <= 1350 and 450 <= len(x_test) <= 550
    for x in (x_train, x_test):
        assert x.min() == 0.0 and x.max() == 1.0
        # sklearn's grey levels are 0..16, so every value is a multiple of 1/16
        np.testing.assert_array_equal(x * 16, np.round(x * 16))
    assert set(np.unique(y_train)) == set(range(10)) == set(np.unique(y_test))


def test_split_is_a_partition_of_sklearn_digits(digits):
    from sklearn.datasets import load_digits as sk_load

    ref = sk_load().images.reshape(-1, 64) / 16.0
    ours = np.concatenate([digits.x_train, digits.x_test]).reshape(-1, 64).astype(np.float64)
    labels = np.concatenate([digits.y_train, digits.y_test])

    def sort_rows(a, lab):
        keyed = np.concatenate([a, lab[:, None]], axis=1)
        return keyed[np.lexsort(keyed.T[::-1])]

    np.testing.assert_array_equal(sort_rows(ours, labels), sort_rows(ref, sk_load().target))


def test_split_is_stratified(digits):
    train_counts = np.bincount(digits.y_train, minlength=10)
    test_counts = np.bincount(digits.y_test, minlength=10)
    frac = test_counts / (train_counts + test_counts)
    np.testing.assert_allclose(frac, 0.28, atol=0.01)


def test_deterministic_per_seed():
    a, b, c = load_digits(seed=3), load_digits(seed=3), load_digits(seed=4)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a.y_train, c.y_train)


def test_fraction_and_dtype_parameters():
    d = load_digits(test_fraction=0.5, dtype=np.float64)
    assert d.x_train.dtype == np.float64
    assert abs(len(d.x_test) - 1797 / 2) <= 10


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_bad_fraction_raises(bad):
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=bad)


def test_importing_data_is_light():
    """scikit-learn, matplotlib and cupy load only inside the functions that need them."""
    code = (
        "import sys, minitransformer.data\n"
        "heavy = [m for m in ('sklearn', 'matplotlib', 'cupy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
