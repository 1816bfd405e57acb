"""Positional encodings: seed sinusoids, MAE 2-D sin-cos, bicubic resampling of a grid."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer import nn
from minitransformer.testing import gradcheck


def test_sinusoidal_interleaved_formula():
    T, D = 7, 6
    pe = nn.sinusoidal_position_encoding(T, D)
    assert pe.shape == (T, D)
    for t in range(T):
        for i in range(D // 2):
            angle = t / 10000 ** (2 * i / D)
            assert pe[t, 2 * i] == pytest.approx(math.sin(angle), abs=1e-15)
            assert pe[t, 2 * i + 1] == pytest.approx(math.cos(angle), abs=1e-15)
    with pytest.raises(ValueError, match="even"):
        nn.sinusoidal_position_encoding(3, 5)


def test_mae_2d_sincos_formula_and_properties():
    """MAE's fixed 2-D table (facebookresearch/mae util/pos_embed.py,
    get_2d_sincos_pos_embed): shape (1 + g^2, D), zero CLS row, concatenated sin | cos halves,
    each half a function of one grid coordinate only."""
    g, D = 4, 16
    emb = nn.sincos_2d_position_embedding(D, g, cls_token=True)
    assert emb.shape == (1 + g * g, D)
    np.testing.assert_array_equal(emb[0], 0.0)
    grid = emb[1:].reshape(g, g, D)  # (row i, col j, D), raster order
    # MAE's meshgrid(grid_w, grid_h) puts the column index j in grid[0], the first half:
    first, second = grid[..., : D // 2], grid[..., D // 2:]
    assert np.allclose(first, first[:1, :, :])  # same for every row i: depends on j only
    assert np.allclose(second, second[:, :1, :])  # same for every column j: depends on i only
    assert not np.allclose(first, first[:, :1, :]) and not np.allclose(second, second[:1])
    # each half is [sin(p w_d), cos(p w_d)] concatenated, w_d = 1 / 10000^(d / (D/4))
    for i in range(g):
        for j in range(g):
            for d in range(D // 4):
                w = 1.0 / 10000 ** (d / (D / 4))
                assert grid[i, j, d] == pytest.approx(math.sin(j * w), abs=1e-14)
                assert grid[i, j, D // 4 + d] == pytest.approx(math.cos(j * w), abs=1e-14)
                assert grid[i, j, D // 2 + d] == pytest.approx(math.sin(i * w), abs=1e-14)
                assert grid[i, j, 3 * D // 4 + d] == pytest.approx(math.cos(i * w), abs=1e-14)
    assert nn.sincos_2d_position_embedding(8, (2, 3), cls_token=False).shape == (6, 8)
    with pytest.raises(ValueError, match="divisible by 4"):
        nn.sincos_2d_position_embedding(6, 2)


def cubic_kernel(s, a=-0.75):
    """Keys' cubic convolution kernel as a function of the distance s."""
    s = abs(s)
    if s <= 1:
        return (a + 2) * s**3 - (a + 3) * s**2 + 1
    if s < 2:
        return a * s**3 - 5 * a * s**2 + 8 * a * s - 4 * a
    return 0.0


def resample_1d_reference(v, n_out):
    """Independent reference: each output pixel's centre mapped back to the input with
    align_corners=False, sum over the 4 nearest input samples weighted by the kernel of their
    distance, out-of-range samples replaced by the edge sample."""
    n_in = len(v)
    out = np.zeros(n_out)
    for d in range(n_out):
        s = (d + 0.5) * n_in / n_out - 0.5
        base = math.floor(s)
        for k in range(base - 1, base + 3):
            out[d] += cubic_kernel(s - k) * v[min(max(k, 0), n_in - 1)]
    return out


@given(n_in=st.integers(1, 9), n_out=st.integers(1, 12))
def test_bicubic_matrix_matches_reference(n_in, n_out):
    M = nn.bicubic_matrix(n_in, n_out)
    eye = np.eye(n_in)
    ref = np.stack([resample_1d_reference(eye[k], n_out) for k in range(n_in)], axis=1)
    np.testing.assert_allclose(M, ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(M.sum(axis=1), 1.0, rtol=1e-12)  # constants are preserved


def test_bicubic_identity_at_same_size():
    np.testing.assert_array_equal(nn.bicubic_matrix(5, 5), np.eye(5))


def test_interpolate_identity_at_native_grid(device, rng):
    pos = mt.tensor(rng.standard_normal((1, 9, 4)), device=device)
    assert nn.interpolate_pos_embed(pos, (3, 3)) is pos


@pytest.mark.parametrize("old,new", [((3, 3), (5, 2)), ((4, 2), (2, 3)), ((2, 2), (6, 6))])
def test_interpolate_matches_separable_reference(device, rng, old, new):
    D = 3
    grid = rng.standard_normal((old[0], old[1], D))
    pos = mt.tensor(grid.reshape(1, -1, D), device=device)
    y = nn.interpolate_pos_embed(pos, new, old_grid=old).numpy()
    ref = np.zeros((new[0], new[1], D))
    for c in range(D):
        rows = np.stack([resample_1d_reference(grid[r, :, c], new[1]) for r in range(old[0])])
        ref[:, :, c] = np.stack([resample_1d_reference(rows[:, j], new[0])
                                 for j in range(new[1])], axis=1)
    np.testing.assert_allclose(y, ref.reshape(1, -1, D), rtol=1e-12, atol=1e-13)


def test_interpolate_is_differentiable(device, rng):
    pos = mt.tensor(rng.standard_normal((1, 9, 2)), requires_grad=True, device=device)
    assert gradcheck(lambda p: nn.interpolate_pos_embed(p, (2, 4)), [pos])


def test_interpolate_errors():
    with pytest.raises(ValueError, match="10 position tokens are not a square grid"):
        nn.interpolate_pos_embed(np.zeros((1, 10, 4)), (2, 2))
    with pytest.raises(ValueError, match=r"old_grid \(2, 3\) does not hold 4 tokens"):
        nn.interpolate_pos_embed(np.zeros((1, 4, 4)), (2, 2), old_grid=(2, 3))
    with pytest.raises(ValueError, match=r"\(1, N, D\)"):
        nn.interpolate_pos_embed(np.zeros((4, 4)), (2, 2))
