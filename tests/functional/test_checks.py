"""The ops' data checks (``functional/checks.py``): on by default on every device, with a clear
error; inside ``F.use_data_checks(False)`` no value is read on a GPU (counted with the CuPy
stand-in), while NumPy arrays keep their (free) checks."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import functional as F
from minitransformer import nn


def test_use_data_checks_nests_and_restores():
    assert F.data_checks_enabled()
    with F.use_data_checks(False):
        assert not F.data_checks_enabled()
        with F.use_data_checks(True):
            assert F.data_checks_enabled()
        assert not F.data_checks_enabled()
    assert F.data_checks_enabled()
    with pytest.raises(RuntimeError), F.use_data_checks(False):
        raise RuntimeError("an error inside the block restores the setting too")
    assert F.data_checks_enabled()


# ------------------------------------------------------------------ on: the errors fire
def test_cross_entropy_checks_targets_by_default(device, fused, rng):
    logits = mt.tensor(rng.standard_normal((4, 5)), device=device)
    with pytest.raises(ValueError, match=r"target values must be in \[0, 5\) or "
                                         r"ignore_index=-100, got 7"):
        F.cross_entropy(logits, mt.tensor(np.array([0, 7, 1, -100]), device=device))
    with pytest.raises(ValueError, match=r"got -3"):
        F.cross_entropy(logits, np.array([0, -3, 1, 2]))  # host targets, device logits


def test_getitem_checks_integer_indices_by_default(device):
    x = mt.tensor(np.arange(12.0).reshape(3, 4), device=device)
    index = mt.tensor(np.array([0, 3]), device=device)
    with pytest.raises(IndexError, match=r"axis 0 has values in \[0, 3\], outside \[-3, 2\]"):
        F.getitem(x, index)


def test_embedding_checks_ids_by_default(device):
    emb = nn.Embedding(5, 3).to(device)
    with pytest.raises(ValueError, match=r"ids must be in \[0, 5\), got values in \[-1, 2\]"):
        emb(mt.tensor(np.array([[0, 2], [-1, 1]]), device=device))


def test_checks_stay_on_for_host_arrays_when_switched_off(rng):
    """Off concerns device arrays: on the CPU the data is on the host, the checks are free."""
    with F.use_data_checks(False):
        with pytest.raises(ValueError, match="target values"):
            F.cross_entropy(mt.tensor(rng.standard_normal((2, 3))), np.array([0, 3]))
        with pytest.raises(ValueError, match="ids must be in"):
            nn.Embedding(4, 2)(np.array([4]))
        with pytest.raises(IndexError, match="outside"):
            F.getitem(mt.tensor(np.ones(3)), np.array([-4]))


# ------------------------------------------------------------------ off: nothing is read
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "composed"])
def test_cross_entropy_reads_nothing_with_checks_off(cupy_standin, rng, fused):
    cp = cupy_standin
    logits = mt.tensor(rng.standard_normal((6, 5)), device="cuda", requires_grad=True)
    target = mt.tensor(np.array([0, 4, -100, 1, 2, 3]), device="cuda")
    with F.use_fused(fused):
        with cp.counting() as on:
            F.cross_entropy(logits, target).backward()
        with F.use_data_checks(False), cp.counting() as off:
            loss = F.cross_entropy(logits, target)
            loss.backward()
    assert on.to_host == 1, on.kinds()  # the check's one read
    assert (off.to_host, off.to_device) == (0, 0), off.kinds()
    z = logits.numpy()  # float64 reference: -log softmax at the kept rows' targets
    nll = np.log(np.exp(z).sum(axis=1)) - z[np.arange(6), [0, 4, 0, 1, 2, 3]]
    np.testing.assert_allclose(loss.numpy(), nll[[0, 1, 3, 4, 5]].mean(), rtol=1e-12)


def test_getitem_and_embedding_read_nothing_with_checks_off(cupy_standin, rng):
    cp = cupy_standin
    emb = nn.Embedding(10, 4).to("cuda")
    ids = mt.tensor(rng.integers(0, 10, (3, 5)), device="cuda")
    x = mt.tensor(rng.standard_normal((6, 2)), device="cuda", requires_grad=True)
    index = mt.tensor(np.array([5, 0, -6, 2]), device="cuda")
    with cp.counting() as on:
        emb(ids)
        F.getitem(x, index)
    assert on.to_host == 2, on.kinds()  # one read each: Embedding's getitem is not re-checked
    with F.use_data_checks(False), cp.counting() as off:
        y = emb(ids)
        z = F.getitem(x, index)
        (y.sum() + z.sum()).backward()
    assert (off.to_host, off.to_device) == (0, 0), off.kinds()
    np.testing.assert_array_equal(z.numpy(), x.numpy()[[5, 0, -6, 2]])
    np.testing.assert_array_equal(y.numpy(), emb.weight.numpy()[ids.numpy()])


def test_padding_mask_keeps_device_lengths_on_the_device(cupy_standin):
    cp = cupy_standin
    lengths = mt.tensor(np.array([3, 1]), device="cuda")
    with cp.counting() as c:
        m = F.padding_mask(lengths, 4, device="cuda")
    assert (c.to_host, c.to_device) == (0, 0), c.kinds()
    want = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=bool)[:, None, None, :]
    np.testing.assert_array_equal(m.get(), want)
    with cp.counting() as c:
        m = F.padding_mask([3, 1], 4, device="cuda")  # host lengths: one copy to the device
    assert (c.to_host, c.to_device) == (0, 1), c.kinds()
    np.testing.assert_array_equal(F.padding_mask(lengths, 4, device="cpu"), want)
