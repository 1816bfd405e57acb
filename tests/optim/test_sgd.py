"""SGD against hand-written NumPy updates (torch.optim.SGD semantics)."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
from minitransformer.optim import SGD


def _param(xp, a):
    return mt.Tensor(xp.array(a, dtype=np.asarray(a).dtype), requires_grad=True)  # a copy


def _sgd_reference(p0, grads, lr, momentum, wd, nesterov=False):
    """torch.optim.SGD (dampening 0) written out in float64."""
    p, buf = np.array(p0, dtype=np.float64), None
    for g in grads:
        d = g + wd * p
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + d
            d = d + momentum * buf if nesterov else buf
        p = p - lr * d
    return p


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_weight_decay_matches_numpy(device, xp, rng, nesterov):
    p0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(4)]
    p = _param(xp, p0)
    opt = SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=nesterov)
    for g in grads:
        p.grad = xp.asarray(g)
        opt.step()
    expected = _sgd_reference(p0, grads, 0.1, 0.9, 0.01, nesterov)
    np.testing.assert_allclose(p.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_sgd_first_step_by_hand(device, xp):
    # p = 1, g = 2, wd = 0.5, lr = 0.1: d = 2 + 0.5 = 2.5, the buffer starts at d -> p = 0.75;
    # second step g = 0: d = 0.375, buf = 0.9 * 2.5 + 0.375 = 2.625 -> p = 0.4875.
    p = _param(xp, np.array([1.0]))
    opt = SGD([p], lr=0.1, momentum=0.9, weight_decay=0.5)
    p.grad = xp.asarray([2.0])
    opt.step()
    assert p.numpy()[0] == pytest.approx(0.75, abs=1e-15)
    p.grad = xp.asarray([0.0])
    opt.step()
    assert p.numpy()[0] == pytest.approx(0.4875, abs=1e-15)


def test_sgd_keeps_dtype_device_and_updates_in_place(device, xp, rng):
    p = _param(xp, rng.standard_normal(5).astype(np.float32))
    data_before = p.data
    opt = SGD([p], lr=0.5, momentum=0.5)
    p.grad = xp.ones(5, dtype=np.float32)
    opt.step()
    assert p.data is data_before  # raw array updated in place
    assert p.dtype == np.float32 and p.device == mt.backend.as_device(device)
    assert opt.state[p]["momentum_buffer"].dtype == np.float32


def test_sgd_skips_params_without_grad(device, xp, rng):
    a, b = _param(xp, rng.standard_normal(3)), _param(xp, rng.standard_normal(3))
    b0 = b.numpy()
    opt = SGD([a, b], lr=0.1, momentum=0.9, weight_decay=0.1)
    a.grad = xp.ones(3)
    opt.step()
    np.testing.assert_array_equal(b.numpy(), b0)
    assert b not in opt.state


def test_sgd_group_multipliers(device, xp):
    a, b = _param(xp, np.ones(2)), _param(xp, np.ones(2))
    opt = SGD([{"params": [a], "lr_mult": 0.5}, {"params": [b], "lr": 1.0}], lr=0.1)
    a.grad = xp.ones(2)
    b.grad = xp.ones(2)
    opt.step()
    np.testing.assert_allclose(a.numpy(), 1 - 0.05)
    np.testing.assert_allclose(b.numpy(), 1 - 1.0)
    opt.set_lr(0.2)
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.2]


def test_sgd_state_dict_round_trip_continues_identically(device, xp, rng):
    p0 = rng.standard_normal(6)
    grads = [rng.standard_normal(6) for _ in range(5)]
    ref = _param(xp, p0)
    ref_opt = SGD([ref], lr=0.05, momentum=0.9, weight_decay=1e-3)
    for g in grads:
        ref.grad = xp.asarray(g)
        ref_opt.step()

    p = _param(xp, p0)
    opt = SGD([p], lr=0.05, momentum=0.9, weight_decay=1e-3)
    for g in grads[:2]:
        p.grad = xp.asarray(g)
        opt.step()
    saved, saved_p = opt.state_dict(), p.numpy()
    q = _param(xp, saved_p)
    resumed = SGD([q], lr=123.0)  # hyper-parameters come back from the state dict
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["lr"] == 0.05
    for g in grads[2:]:
        q.grad = xp.asarray(g)
        resumed.step()
    np.testing.assert_array_equal(q.numpy(), ref.numpy())


def test_sgd_rejects_bad_arguments(device, xp):
    p = _param(xp, np.ones(2))
    with pytest.raises(ValueError, match="lr"):
        SGD([p], lr=-1.0)
    with pytest.raises(ValueError, match="more than one group"):
        SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(TypeError, match="Tensors"):
        SGD([np.ones(2)], lr=0.1)
    with pytest.raises(ValueError, match="empty"):
        SGD([], lr=0.1)


def test_passing_a_module_is_a_clear_error():
    from minitransformer import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(mt.zeros(2))

    with pytest.raises(TypeError, match=r"model\.parameters\(\)"):
        SGD(Net(), lr=0.1)
