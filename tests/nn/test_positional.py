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


def resample_1d_reference(v, n_out, scale=None, antialias=False):
    """Independent reference of torch's 1-D bicubic resampling, align_corners=False.

    Output pixel d covers [d r, (d + 1) r) of the input, r = 1/scale when a scale factor is
    given (torch uses the given scale, not n_in/n_out), else n_in/n_out; its centre is
    c = (d + 0.5) r and input pixel k's centre is k + 0.5.
    Plain: the 4 input samples nearest to s = c - 0.5, weighted by the kernel (a = -0.75) of
    their distance to s, out-of-range samples replaced by the edge sample.
    Anti-aliased (PIL): every input pixel weighted by the kernel (a = -0.5) of its distance to
    c divided by max(r, 1), the weights divided by their sum; an axis whose length does not
    change is copied (torch skips it)."""
    n_in = len(v)
    r = 1.0 / scale if scale is not None else n_in / n_out
    out = np.zeros(n_out)
    if antialias and n_in == n_out:
        return np.array(v, dtype=float)
    for d in range(n_out):
        c = (d + 0.5) * r
        if antialias:
            w = [cubic_kernel((k + 0.5 - c) / max(r, 1.0), a=-0.5) for k in range(n_in)]
            out[d] = sum(wk * v[k] for k, wk in enumerate(w)) / sum(w)
        else:
            s = c - 0.5
            base = math.floor(s)
            for k in range(base - 1, base + 3):
                out[d] += cubic_kernel(s - k) * v[min(max(k, 0), n_in - 1)]
    return out


def resample_2d_reference(grid, new, offset=0.0, antialias=False):
    """(gh, gw, D) -> (nh, nw, D): columns then rows with the 1-D reference, scale factors
    (n + offset) / g when offset != 0 (DINO's scale_factor call), else by size."""
    gh, gw, D = grid.shape
    sh, sw = ((new[0] + offset) / gh, (new[1] + offset) / gw) if offset else (None, None)
    rows = np.stack([[resample_1d_reference(grid[i, :, c], new[1], sw, antialias)
                      for c in range(D)] for i in range(gh)])  # (gh, D, nw)
    out = np.stack([[resample_1d_reference(rows[:, c, j], new[0], sh, antialias)
                     for c in range(D)] for j in range(new[1])])  # (nw, D, nh)
    return out.transpose(2, 0, 1)  # (nh, nw, D)


@given(n_in=st.integers(1, 9), n_out=st.integers(1, 12))
def test_bicubic_matrix_matches_reference(n_in, n_out):
    M = nn.bicubic_matrix(n_in, n_out)
    eye = np.eye(n_in)
    ref = np.stack([resample_1d_reference(eye[k], n_out) for k in range(n_in)], axis=1)
    np.testing.assert_allclose(M, ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(M.sum(axis=1), 1.0, rtol=1e-12)  # constants are preserved


@given(n_in=st.integers(1, 40), n_out=st.integers(1, 40), antialias=st.booleans(),
       offset=st.sampled_from([0.0, 0.1, 0.5, 0.9]))
def test_bicubic_matrix_modes_match_reference(n_in, n_out, antialias, offset):
    """By size or by scale factor (n_out + offset) / n_in, plain or anti-aliased."""
    scale = (n_out + offset) / n_in if offset else None
    M = nn.bicubic_matrix(n_in, n_out, scale, antialias)
    assert M.shape == (n_out, n_in)
    eye = np.eye(n_in)
    ref = np.stack([resample_1d_reference(eye[k], n_out, scale, antialias)
                    for k in range(n_in)], axis=1)
    np.testing.assert_allclose(M, ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(M.sum(axis=1), 1.0, rtol=1e-12)  # constants are preserved


def test_bicubic_modes_differ():
    """The modes are different maps (the errors issue 12 measured come from mixing them):
    anti-aliasing changes the weights even when upsampling, and a scale factor with the 0.1
    offset moves the samples, even on an axis whose length does not change."""
    plain, aa = nn.bicubic_matrix(4, 6), nn.bicubic_matrix(4, 6, antialias=True)
    assert np.abs(plain - aa).max() > 0.01
    assert np.abs(plain - nn.bicubic_matrix(4, 6, 6.1 / 4)).max() > 0.01
    assert np.abs(nn.bicubic_matrix(4, 4, 4.1 / 4) - np.eye(4)).max() > 0.01
    np.testing.assert_array_equal(nn.bicubic_matrix(4, 4, 4.1 / 4, antialias=True), np.eye(4))
    # downsampling 16 -> 4 with antialias: the kernel is stretched by r = 4, so each output
    # reads the pixels within 2 r = 8 of its centre (16 inside, fewer at the border), while plain
    # bicubic reads only the 4 nearest samples
    assert (nn.bicubic_matrix(16, 4, antialias=True) != 0).sum(axis=1).tolist() == [10, 14,
                                                                                    14, 10]
    assert (nn.bicubic_matrix(16, 4) != 0).sum(axis=1).tolist() == [4, 4, 4, 4]
    np.testing.assert_allclose(nn.bicubic_matrix(37, 16, antialias=True).sum(1), 1.0,
                               rtol=1e-12)


def test_bicubic_identity_at_same_size():
    np.testing.assert_array_equal(nn.bicubic_matrix(5, 5), np.eye(5))
    np.testing.assert_allclose(nn.bicubic_matrix(5, 5, antialias=True), np.eye(5), atol=1e-15)


def test_interpolate_identity_at_native_grid(device, rng):
    pos = mt.tensor(rng.standard_normal((1, 9, 4)), device=device)
    assert nn.interpolate_pos_embed(pos, (3, 3)) is pos
    assert nn.interpolate_pos_embed(pos, (3, 3), offset=0.1, antialias=True) is pos


MODES = [(0.0, False), (0.1, False), (0.0, True), (0.1, True)]


@pytest.mark.parametrize("offset,antialias", MODES)
@pytest.mark.parametrize("old,new", [((3, 3), (5, 2)), ((4, 2), (2, 3)), ((2, 2), (6, 6)),
                                     ((6, 6), (6, 9)), ((7, 7), (3, 3))])
def test_interpolate_matches_separable_reference(device, rng, old, new, offset, antialias):
    D = 3
    grid = rng.standard_normal((old[0], old[1], D))
    pos = mt.tensor(grid.reshape(1, -1, D), device=device)
    y = nn.interpolate_pos_embed(pos, new, old_grid=old, offset=offset,
                                 antialias=antialias).numpy()
    ref = resample_2d_reference(grid, new, offset, antialias)
    np.testing.assert_allclose(y, ref.reshape(1, -1, D), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("offset,antialias", MODES)
def test_interpolate_is_differentiable(device, rng, offset, antialias):
    pos = mt.tensor(rng.standard_normal((1, 9, 2)), requires_grad=True, device=device)
    assert gradcheck(lambda p: nn.interpolate_pos_embed(p, (2, 4), offset=offset,
                                                        antialias=antialias), [pos])
    pos = mt.tensor(rng.standard_normal((1, 6, 2)), requires_grad=True, device=device)
    assert gradcheck(lambda p: nn.interpolate_pos_embed(p, (5, 2), old_grid=(3, 2),
                                                        offset=offset, antialias=antialias),
                     [pos])


def test_interpolate_errors():
    with pytest.raises(ValueError, match="10 position tokens are not a square grid"):
        nn.interpolate_pos_embed(np.zeros((1, 10, 4)), (2, 2))
    with pytest.raises(ValueError, match=r"old_grid \(2, 3\) does not hold 4 tokens"):
        nn.interpolate_pos_embed(np.zeros((1, 4, 4)), (2, 2), old_grid=(2, 3))
    with pytest.raises(ValueError, match=r"\(1, N, D\)"):
        nn.interpolate_pos_embed(np.zeros((4, 4)), (2, 2))
    with pytest.raises(ValueError, match=r"offset 1.5 gives scale factors .* a \(3, 3\) grid, "
                                         r"not \(2, 2\)"):
        nn.interpolate_pos_embed(np.zeros((1, 9, 4)), (2, 2), offset=1.5)
    with pytest.raises(ValueError, match="scale must be > 0, got -1"):
        nn.bicubic_matrix(3, 2, -1.0)
