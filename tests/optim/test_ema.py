"""The EMA teacher update."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import nn
from minitransformer.optim.ema import ema_update


class _Net(nn.Module):
    def __init__(self, rng, width=3):
        super().__init__()
        self.fc = nn.Linear(2, width)
        self.fc.weight.data = rng.standard_normal((2, width))
        self.fc.bias.data = rng.standard_normal(width)
        self.scale = nn.Parameter(mt.tensor(rng.standard_normal(1)), requires_grad=False)

    def forward(self, x):
        return self.fc(x) * self.scale


def test_ema_one_step(device, rng):
    """DINO, Caron et al. 2021, sec. 3.1 (facebookresearch/dino main_dino.py,
    train_one_epoch's EMA update): theta_t = 0.996 theta_t + 0.004 theta_s, every parameter
    (frozen ones too); the teacher gets no gradients."""
    student = _Net(rng).to(device)
    teacher = _Net(rng).to(device)
    before_t = {k: v.copy() for k, v in teacher.state_dict().items()}
    s = student.state_dict()
    ema_update(teacher, student, 0.996)
    for name, p in teacher.named_parameters():
        np.testing.assert_allclose(p.numpy(), 0.996 * before_t[name] + 0.004 * s[name],
                                   rtol=1e-12)
        assert not p.requires_grad and p.grad is None
    for name, p in student.named_parameters():  # the student is untouched
        np.testing.assert_array_equal(p.numpy(), s[name])
    # a teacher forward + backward leaves the teacher without gradients
    x = mt.tensor(rng.standard_normal((4, 2)), device=device)
    out = teacher(x)
    assert not out.requires_grad
    ema_update(teacher, student, 1.0)  # m = 1: the teacher stays
    for name, p in teacher.named_parameters():
        np.testing.assert_allclose(p.numpy(), 0.996 * before_t[name] + 0.004 * s[name],
                                   rtol=1e-12)
    ema_update(teacher, student, 0.0)  # m = 0: a copy of the student
    for name, p in teacher.named_parameters():
        np.testing.assert_array_equal(p.numpy(), s[name])


def test_ema_bad_input(rng):
    a, b = _Net(rng), _Net(rng, width=4)
    with pytest.raises(ValueError, match="shape"):
        ema_update(a, b, 0.9)
    with pytest.raises(ValueError, match="momentum"):
        ema_update(a, _Net(rng), 1.5)

    class Other(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(mt.tensor(np.zeros(2)))

    with pytest.raises(ValueError, match="differ"):
        ema_update(a, Other(), 0.9)
