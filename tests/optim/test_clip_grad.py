"""Gradient clipping: DINO's per-tensor rule (facebookresearch/dino utils.py,
clip_gradients: each p.grad whose own norm exceeds clip is scaled by clip / (norm + 1e-6)) and
the global-norm clip."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer import backend
from minitransformer.optim import clip_grad_norm_, clip_grad_per_param_


def _with_grad(xp, g):
    t = mt.Tensor(xp.zeros(np.shape(g)), requires_grad=True)
    t.grad = xp.array(g, dtype=np.float64)  # a copy: clipping scales in place
    return t


def test_per_param_clip_dino_sanity(device, xp):
    # DINO's clip_gradients at 3.0: norm 6 -> ~3, norm 2 untouched even though the global
    # norm sqrt(40) > 3.
    big = _with_grad(xp, [6.0, 0.0, 0.0])
    small = _with_grad(xp, [0.0, 2.0])
    none = mt.Tensor(xp.zeros(2), requires_grad=True)
    norms = clip_grad_per_param_([big, none, small], 3.0)
    assert backend.device_of(norms) == backend.as_device(device)  # stays on the device
    assert mt.to_numpy(norms).tolist() == pytest.approx([6.0, 2.0], rel=1e-15)
    np.testing.assert_allclose(mt.to_numpy(big.grad), [6 * 3 / (6 + 1e-6), 0, 0], rtol=1e-15)
    assert np.linalg.norm(mt.to_numpy(big.grad)) == pytest.approx(3.0, rel=1e-6)
    np.testing.assert_array_equal(mt.to_numpy(small.grad), [0.0, 2.0])
    assert none.grad is None


def test_global_norm_clip_scales_all_by_one_factor(device, xp, rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal(5)
    total = np.sqrt((a**2).sum() + (b**2).sum())
    pa, pb = _with_grad(xp, a), _with_grad(xp, b)
    norm = clip_grad_norm_([pa, pb], max_norm=total / 2)
    assert norm.shape == () and backend.device_of(norm) == backend.as_device(device)
    assert float(norm) == pytest.approx(total, rel=1e-14)
    coef = (total / 2) / (total + 1e-6)
    np.testing.assert_allclose(mt.to_numpy(pa.grad), a * coef, rtol=1e-14)
    np.testing.assert_allclose(mt.to_numpy(pb.grad), b * coef, rtol=1e-14)


def test_global_norm_below_max_is_untouched(device, xp):
    p = _with_grad(xp, [3.0, 4.0])
    assert float(clip_grad_norm_([p], 5.1)) == pytest.approx(5.0)
    np.testing.assert_array_equal(mt.to_numpy(p.grad), [3.0, 4.0])


def test_global_norm_nonfinite_is_reported_not_applied(device, xp):
    p = _with_grad(xp, [np.inf, 1.0])
    assert float(clip_grad_norm_([p], 1.0)) == np.inf
    np.testing.assert_array_equal(mt.to_numpy(p.grad), [np.inf, 1.0])


def test_clipping_keeps_dtype(device, xp):
    p = mt.Tensor(xp.zeros(2, dtype=np.float32), requires_grad=True)
    p.grad = xp.asarray([30.0, 40.0], dtype=np.float32)
    clip_grad_norm_([p], 5.0)
    assert p.grad.dtype == np.float32
    clip_grad_per_param_([p], 1.0)
    assert p.grad.dtype == np.float32
    assert np.linalg.norm(mt.to_numpy(p.grad)) == pytest.approx(1.0, rel=1e-5)


def test_clip_rejects_non_positive_limits():
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm_([], 0.0)
    with pytest.raises(ValueError, match="clip"):
        clip_grad_per_param_([], -1.0)


@given(scales=st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=5), clip=st.floats(0.1, 10.0))
def test_per_param_clip_property(scales, clip):
    # Each tensor ends with norm min(||g||, ~clip) and keeps its direction.
    r = np.random.default_rng(len(scales))
    grads = [r.standard_normal(4) * s for s in scales]
    ps = [_with_grad(np, g) for g in grads]
    norms = clip_grad_per_param_(ps, clip)
    for p, g, n in zip(ps, grads, norms):
        assert n == pytest.approx(np.linalg.norm(g), rel=1e-12)
        out = mt.to_numpy(p.grad)
        assert np.linalg.norm(out) == pytest.approx(min(n, clip * n / (n + 1e-6)), rel=1e-12)
        np.testing.assert_allclose(out / np.linalg.norm(out), g / n, rtol=1e-12, atol=1e-15)


def test_global_norm_nan_is_reported_not_applied(device, xp):
    p = _with_grad(xp, [np.nan, 1.0])
    assert np.isnan(float(clip_grad_norm_([p], 1.0)))
    np.testing.assert_array_equal(mt.to_numpy(p.grad), [np.nan, 1.0])


def test_no_parameter_with_a_gradient():
    assert clip_grad_norm_([mt.Tensor(np.zeros(2), requires_grad=True)], 1.0) == 0.0
    assert clip_grad_per_param_([], 1.0).shape == (0,)


def test_clipping_reads_nothing_on_the_host(device, xp, rng):
    """Both clips scale on the device and return device values: on the CuPy stand-in, not
    one device-to-host transfer (a GPU never waits for them)."""
    cp = backend.cupy()
    if device != "cuda" or not getattr(cp, "IS_STANDIN", False):
        pytest.skip("counted on the CuPy stand-in (pytest --cupy-standin)")
    ps = [_with_grad(xp, rng.standard_normal((3, 4)) * 10), _with_grad(xp, rng.standard_normal(5))]
    cp.reset_transfers()
    norm = clip_grad_norm_(ps, 1.0)
    norms = clip_grad_per_param_(ps, 0.5)
    assert cp.transfers() == 0, cp.transfer_counts()
    assert float(norm) > 1.0 and mt.to_numpy(norms).shape == (2,)
