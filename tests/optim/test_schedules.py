"""DINO's schedules: cosine per iteration, teacher temperature per epoch, teacher momentum."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minitransformer.optim.schedules import (
    cosine_schedule,
    teacher_momentum_schedule,
    teacher_temp_schedule,
)


@given(base=st.floats(1e-4, 1.0), final=st.floats(0.0, 1.0), total=st.integers(1, 200),
       warm_frac=st.floats(0, 1), start=st.floats(0, 0.1))
def test_cosine_schedule_is_dino_cosine_scheduler(base, final, total, warm_frac, start):
    warm = int(warm_frac * total)
    got = cosine_schedule(base, final, total, warm, start)
    assert got.shape == (total,)
    # DINO utils.cosine_scheduler, element by element
    n = total - warm
    for it in range(total):
        if it < warm:
            expected = start + (base - start) * it / (warm - 1) if warm > 1 else start
        else:
            i = it - warm
            expected = final + 0.5 * (base - final) * (1 + np.cos(np.pi * i / n))
        np.testing.assert_allclose(got[it], expected, rtol=1e-12, atol=1e-15)


def test_teacher_momentum_sanity_values():
    """DINO's cosine 0.996 -> 1 per iteration (facebookresearch/dino main_dino.py,
    momentum_schedule = utils.cosine_scheduler(0.996, 1, epochs, len(data_loader))), over 100
    epochs x 10 iterations: m[i] = 1 - 0.002 (1 + cos(pi i / 1000)), so m[0] = 0.996,
    m[500] = 0.998 and 1 - m[999] = 0.002 (1 - cos(pi / 1000)) ~ 0.002 pi^2 / 2e6 ~ 1e-8."""
    m = teacher_momentum_schedule(1000)
    assert m[0] == 0.996
    np.testing.assert_allclose(m[500], 0.998, rtol=1e-12)
    np.testing.assert_allclose(1 - m[-1], 1e-8, rtol=0.02)
    assert np.all(np.diff(m) >= 0)
    np.testing.assert_array_equal(teacher_momentum_schedule(50, base=0.992),
                                  cosine_schedule(0.992, 1.0, 50))


def test_teacher_temp_sanity_values():
    """facebookresearch/dino main_dino.py (DINOLoss.teacher_temp_schedule) with the README's
    ViT-S recipe (teacher_temp 0.07, warmup_teacher_temp_epochs 30): linspace(0.04, 0.07,
    30), then 0.07; epoch 1 = 0.04 + 0.03 / 29 = 0.0410345."""
    t = teacher_temp_schedule(0.04, 0.07, 30, 100)
    assert t.shape == (100,)
    assert t[0] == 0.04
    assert round(t[1], 7) == 0.0410345
    np.testing.assert_allclose(t[29], 0.07, rtol=1e-15)
    assert (t[30:] == 0.07).all()
    np.testing.assert_array_equal(teacher_temp_schedule(0.04, 0.04, 0, 5), np.full(5, 0.04))


def test_lr_warmup_then_cosine():
    lr = cosine_schedule(0.0005 * 512 / 256, 1e-6, 100, warmup_iters=10)
    np.testing.assert_allclose(lr[:10], np.linspace(0, 0.001, 10), rtol=1e-15)
    assert lr[10] == 0.001 and lr[-1] > 1e-6 and lr[-1] < 2e-6


def test_schedule_bad_input():
    with pytest.raises(ValueError, match="warmup_iters"):
        cosine_schedule(1.0, 0.0, 10, warmup_iters=11)
    with pytest.raises(ValueError, match="total_iters"):
        cosine_schedule(1.0, 0.0, 0)
    with pytest.raises(ValueError, match="positive"):
        teacher_temp_schedule(0.0, 0.07, 3, 10)
    with pytest.raises(ValueError, match="warmup_epochs"):
        teacher_temp_schedule(0.04, 0.07, 30, 10)
    with pytest.raises(ValueError, match="momenta"):
        teacher_momentum_schedule(10, base=1.5)
