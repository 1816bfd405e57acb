"""DataLoader: coverage per epoch, shuffling with an explicit rng, drop_last, devices, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minitransformer.backend import get_array_module, to_numpy
from minitransformer.data import DataLoader
from tests import cupy_standin


@given(
    n=st.integers(1, 60),
    batch_size=st.integers(1, 70),
    drop_last=st.booleans(),
    shuffle=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_every_index_once_per_epoch(n, batch_size, drop_last, shuffle, seed):
    idx = np.arange(n)
    loader = DataLoader(
        (idx, idx * 10),
        batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        rng=np.random.default_rng(seed),
        device="cpu",
    )
    expected_batches = n // batch_size if drop_last else -(-n // batch_size)
    assert len(loader) == expected_batches
    for _epoch in range(2):
        batches = list(loader)
        assert len(batches) == expected_batches
        seen = np.concatenate([b[0] for b in batches]) if batches else np.zeros(0, int)
        for a, b in batches:
            np.testing.assert_array_equal(b, a * 10)  # rows stay aligned across arrays
            assert len(a) <= batch_size
            if drop_last:
                assert len(a) == batch_size
        assert len(np.unique(seen)) == len(seen)  # no index twice
        if drop_last:
            assert len(seen) == (n // batch_size) * batch_size
        else:
            np.testing.assert_array_equal(np.sort(seen), idx)  # every index exactly once
        if not shuffle:
            np.testing.assert_array_equal(seen, idx[: len(seen)])


def test_shuffle_changes_per_epoch_and_is_seeded():
    idx = np.arange(100)
    loader = DataLoader((idx,), 100, rng=np.random.default_rng(0))
    (e1,), (e2,) = next(iter(loader)), next(iter(loader))
    assert not np.array_equal(e1, e2) and not np.array_equal(e1, idx)
    again = DataLoader((idx,), 100, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(next(iter(again))[0], e1)


# A device array as strict as CuPy's (no implicit host conversion), from the test suite's
# CuPy stand-in: the backend recognises it as a device array by its module name.
_StrictDeviceArray = cupy_standin.asarray


class _DeviceGenerator:
    """A stand-in for ``cupy.random.Generator``: ``random`` returns device arrays, and there
    is no ``permutation`` (CuPy's Generator has none)."""

    def __init__(self, seed):
        self._g = np.random.default_rng(seed)

    def random(self, size=None, dtype=np.float64):
        return _StrictDeviceArray(self._g.random(size, dtype=dtype))


def test_numpy_generators_keep_their_permutation_stream():
    """Seeded runs keep their batches: a NumPy generator still draws rng.permutation(n)."""
    idx = np.arange(30)
    (got,) = next(iter(DataLoader((idx,), 30, rng=np.random.default_rng(7))))
    np.testing.assert_array_equal(got, np.random.default_rng(7).permutation(30))
    (got,) = next(iter(DataLoader((idx,), 30, rng=np.random.RandomState(7))))
    np.testing.assert_array_equal(got, np.random.RandomState(7).permutation(30))


def test_a_generator_without_permutation_shuffles_like_cupys():
    """Issue 13 item 9: CuPy's Generator has no permutation; the loader then orders by the
    argsort of uniform draws, copied from the device through backend.to_numpy."""
    assert not hasattr(_DeviceGenerator(0), "permutation")
    idx = np.arange(50)
    loader = DataLoader((idx, idx * 10), 8, rng=_DeviceGenerator(3))
    epochs = []
    for _ in range(2):
        batches = list(loader)
        for a, b in batches:
            np.testing.assert_array_equal(b, a * 10)
        epochs.append(np.concatenate([a for a, _ in batches]))
        np.testing.assert_array_equal(np.sort(epochs[-1]), idx)  # each index once per epoch
    assert not np.array_equal(epochs[0], idx) and not np.array_equal(epochs[0], epochs[1])
    ref = np.random.default_rng(3)
    np.testing.assert_array_equal(epochs[0], np.argsort(ref.random(50)))  # the documented rule
    np.testing.assert_array_equal(epochs[1], np.argsort(ref.random(50)))
    again = DataLoader((idx, idx * 10), 8, rng=_DeviceGenerator(3))
    np.testing.assert_array_equal(np.concatenate([a for a, _ in again]), epochs[0])  # seeded


def test_the_devices_own_generator_shuffles(device, xp):
    """The device's own generator (a cupy.random.Generator on the GPU run) drives the shuffle."""
    x = np.arange(40)
    on_dev = (xp.asarray(x), [f"c{i}" for i in x])
    seen = []
    for bx, captions in DataLoader(on_dev, 16, rng=xp.random.default_rng(0), device=device):
        assert get_array_module(bx) is xp
        assert captions == [f"c{i}" for i in to_numpy(bx)]
        seen.append(to_numpy(bx))
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), x)


def test_a_non_generator_rng_is_refused():
    with pytest.raises(TypeError, match="rng must be a NumPy or CuPy random generator .* got int"):
        DataLoader(np.zeros(5), 2, rng=42)


def test_last_batch_and_drop_last():
    x = np.arange(10)
    sizes = [len(b) for b in DataLoader(x, 4, shuffle=False)]
    assert sizes == [4, 4, 2]
    sizes = [len(b) for b in DataLoader(x, 4, shuffle=False, drop_last=True)]
    assert sizes == [4, 4]
    assert (
        len(DataLoader(x, 11, drop_last=True)) == 0
        and list(DataLoader(x, 11, drop_last=True)) == []
    )
    assert len(DataLoader(x, 11)) == 1


def test_structures_dict_tuple_single_and_lists():
    images = np.arange(24, dtype=np.float32).reshape(6, 1, 2, 2)
    labels = np.arange(6)
    captions = [f"caption {i}" for i in range(6)]
    batch = next(iter(DataLoader({"x": images, "y": labels, "text": captions}, 4, shuffle=False)))
    assert isinstance(batch, dict) and list(batch) == ["x", "y", "text"]
    assert batch["x"].shape == (4, 1, 2, 2)
    np.testing.assert_array_equal(batch["y"], [0, 1, 2, 3])
    assert batch["text"] == captions[:4]
    shuffled = next(iter(DataLoader({"y": labels, "t": captions}, 6, rng=np.random.default_rng(3))))
    assert shuffled["t"] == [f"caption {i}" for i in shuffled["y"]]
    batch = next(iter(DataLoader((images, labels), 3, shuffle=False)))
    assert isinstance(batch, tuple) and len(batch) == 2
    single = next(iter(DataLoader(images, 3, shuffle=False)))
    np.testing.assert_array_equal(single, images[:3])


def test_batches_go_to_the_device(device, xp):
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    y = np.arange(6)
    for bx, by in DataLoader((x, y), 4, rng=np.random.default_rng(0), device=device):
        assert get_array_module(bx) is xp and get_array_module(by) is xp
        np.testing.assert_array_equal(to_numpy(bx)[:, 0], 2 * to_numpy(by))
    # arrays that already live on the device are indexed there
    on_dev = (xp.asarray(x), xp.asarray(y))
    bx, by = next(iter(DataLoader(on_dev, 6, shuffle=False, device=device)))
    np.testing.assert_array_equal(to_numpy(bx), x)


def test_mismatched_lengths_name_the_values():
    with pytest.raises(ValueError, match=r"'x': 5.*'y': 4"):
        DataLoader({"x": np.zeros(5), "y": np.zeros(4)}, 2)
    with pytest.raises(ValueError, match=r"0: 3, 1: 2"):
        DataLoader((np.zeros(3), np.zeros(2)), 2)


@pytest.mark.parametrize("bad", [0, -3, 2.5, None, True, "4"])
def test_bad_batch_size(bad):
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(np.zeros(5), bad)


def test_other_errors():
    with pytest.raises(ValueError, match="no arrays"):
        DataLoader((), 2)
    with pytest.raises(ValueError, match="0-d"):
        DataLoader(np.float32(1.0), 2)
    with pytest.raises(TypeError, match="not an array"):
        DataLoader({"x": 5}, 2)
