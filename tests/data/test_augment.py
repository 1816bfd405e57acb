"""Augmentations and multi-crop, on every available backend."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minitransformer.backend import get_array_module, to_numpy
from minitransformer.data import MultiCrop
from minitransformer.data import augment as A


def _batch(xp, shape=(4, 3, 12, 10), seed=0, lo=0.0, hi=1.0, dtype=np.float32):
    host = np.random.default_rng(seed).uniform(lo, hi, shape).astype(dtype)
    return xp.asarray(host)


def _bilinear_reference(img: np.ndarray, top, left, h, w, oh, ow) -> np.ndarray:
    """Plain float64 loops: sample (C, H, W) at the centres of an (oh, ow) grid over a box."""
    C, H, W = img.shape
    out = np.zeros((C, oh, ow))
    for i in range(oh):
        sy = min(max(top + (i + 0.5) * h / oh - 0.5, 0.0), H - 1.0)
        for j in range(ow):
            sx = min(max(left + (j + 0.5) * w / ow - 0.5, 0.0), W - 1.0)
            y0, x0 = int(math.floor(sy)), int(math.floor(sx))
            y1, x1 = min(y0 + 1, H - 1), min(x0 + 1, W - 1)
            dy, dx = sy - y0, sx - x0
            out[:, i, j] = (
                img[:, y0, x0] * (1 - dy) * (1 - dx)
                + img[:, y0, x1] * (1 - dy) * dx
                + img[:, y1, x0] * dy * (1 - dx)
                + img[:, y1, x1] * dy * dx
            )
    return out


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------
def test_resize_to_same_size_is_identity(xp):
    x = _batch(xp)
    y = A.resize(x, (12, 10))
    assert get_array_module(y) is xp
    np.testing.assert_array_equal(to_numpy(y), to_numpy(x))


@pytest.mark.parametrize("out", [(5, 7), (24, 20), (12, 3)])
def test_resize_matches_loop_reference(xp, out):
    x = _batch(xp, (2, 3, 12, 10), dtype=np.float64)
    y = to_numpy(A.resize(x, out))
    assert y.shape == (2, 3, *out)
    for b in range(2):
        ref = _bilinear_reference(to_numpy(x)[b], 0.0, 0.0, 12, 10, *out)
        np.testing.assert_allclose(y[b], ref, rtol=1e-12, atol=1e-12)


def test_crop_resize_matches_loop_reference(xp):
    x = _batch(xp, (3, 2, 9, 11), dtype=np.float64)
    boxes = np.array([[0.0, 0.0, 9, 11], [1.3, 2.7, 4.1, 5.5], [3.0, 6.2, 6.0, 4.8]])
    y = to_numpy(A.crop_resize(x, boxes, (6, 5)))
    for b in range(3):
        ref = _bilinear_reference(to_numpy(x)[b], *boxes[b], 6, 5)
        np.testing.assert_allclose(y[b], ref, rtol=1e-12, atol=1e-12)


def test_full_scale_crop_without_flip_equals_resize(xp):
    x = _batch(xp, (5, 3, 16, 16))
    y = A.random_resized_crop(
        x, 8, scale=(1.0, 1.0), ratio=(1.0, 1.0), rng=np.random.default_rng(0)
    )
    np.testing.assert_array_equal(to_numpy(y), to_numpy(A.resize(x, 8)))


@given(
    h=st.integers(4, 20),
    w=st.integers(4, 20),
    lo=st.floats(0.05, 1.0),
    span=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_crop_boxes_obey_scale_ratio_and_bounds(h, w, lo, span, seed):
    scale = (lo, min(1.0, lo + span))
    ratio = (3 / 4, 4 / 3)
    boxes = A.sample_crop_boxes(64, h, w, scale=scale, ratio=ratio, rng=np.random.default_rng(seed))
    top, left, bh, bw = boxes.T
    eps = 1e-9
    assert (top >= -eps).all() and (left >= -eps).all()
    assert (top + bh <= h + eps).all() and (left + bw <= w + eps).all()
    assert (bh > 0).all() and (bw > 0).all()
    # boxes that are not the fallback centre crop follow the scale and ratio draws
    frac = bh * bw / (h * w)
    aspect = bw / bh
    in_scale = (frac >= scale[0] - 1e-9) & (frac <= scale[1] + 1e-9)
    in_ratio = (aspect >= ratio[0] - 1e-9) & (aspect <= ratio[1] + 1e-9)
    is_fallback = np.isclose(top, (h - bh) / 2) & np.isclose(left, (w - bw) / 2)
    assert (in_ratio | is_fallback).all() and (in_scale | is_fallback).all()


@given(
    size=st.integers(2, 12),
    batch=st.integers(1, 5),
    channels=st.sampled_from([1, 3]),
    seed=st.integers(0, 2**16),
)
def test_random_resized_crop_shape_range_determinism(xp, size, batch, channels, seed):
    x = _batch(xp, (batch, channels, 9, 13), seed=seed)
    y1 = A.random_resized_crop(x, size, rng=np.random.default_rng(seed))
    y2 = A.random_resized_crop(x, size, rng=np.random.default_rng(seed))
    assert y1.shape == (batch, channels, size, size) and y1.dtype == x.dtype
    y1 = to_numpy(y1)
    np.testing.assert_array_equal(y1, to_numpy(y2))
    assert y1.min() >= to_numpy(x).min() - 1e-6 and y1.max() <= to_numpy(x).max() + 1e-6


def test_same_seed_same_result_on_every_device(xp):
    """The parameters are drawn on the host, so a GPU batch is augmented like a CPU one."""
    host = np.random.default_rng(1).uniform(0, 1, (4, 3, 12, 12)).astype(np.float32)
    mc = MultiCrop(8, 4, n_local=2)
    on_cpu = mc(host, rng=np.random.default_rng(7))
    on_dev = mc(xp.asarray(host), rng=np.random.default_rng(7))
    for a, b in zip(on_cpu, on_dev):
        assert get_array_module(b) is xp
        np.testing.assert_allclose(to_numpy(b), a, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# flips, solarize, grayscale, blur, jitter, normalize
# --------------------------------------------------------------------------------------------
def test_horizontal_flip(xp):
    x = _batch(xp)
    rng = np.random.default_rng(0)
    once = A.horizontal_flip(x, p=1.0, rng=rng)
    np.testing.assert_array_equal(to_numpy(once), to_numpy(x)[..., ::-1])
    twice = A.horizontal_flip(once, p=1.0, rng=rng)
    np.testing.assert_array_equal(to_numpy(twice), to_numpy(x))
    np.testing.assert_array_equal(to_numpy(A.horizontal_flip(x, p=0.0, rng=rng)), to_numpy(x))
    # p = 0.5: each image is either itself or its mirror, and both happen
    x = _batch(xp, (64, 1, 4, 5))
    y, xn = to_numpy(A.horizontal_flip(x, p=0.5, rng=rng)), to_numpy(x)
    same = (y == xn).all(axis=(1, 2, 3))
    mirrored = (y == xn[..., ::-1]).all(axis=(1, 2, 3))
    assert (same | mirrored).all() and same.any() and mirrored.any()


def test_solarize_threshold_semantics(xp):
    values = np.array([0.0, 0.2, 0.49, 0.5, 0.51, 0.8, 1.0], dtype=np.float32)
    x = xp.asarray(np.tile(values, (2, 1, 1, 1)))  # (2, 1, 1, 7)
    y = to_numpy(A.solarize(x, p=1.0, threshold=0.5, rng=np.random.default_rng(0)))
    expected = np.where(values >= 0.5, 1 - values, values)
    np.testing.assert_array_equal(y[0, 0, 0], expected)
    np.testing.assert_array_equal(y[1, 0, 0], expected)
    y = to_numpy(A.solarize(x, p=1.0, threshold=0.8, rng=np.random.default_rng(0)))
    np.testing.assert_array_equal(y[0, 0, 0], np.where(values >= 0.8, 1 - values, values))
    y = to_numpy(A.solarize(x, p=0.0, rng=np.random.default_rng(0)))
    np.testing.assert_array_equal(y, to_numpy(x))


def test_grayscale(xp):
    x = _batch(xp)
    y = to_numpy(A.grayscale(x, p=1.0, rng=np.random.default_rng(0)))
    xn = to_numpy(x)
    luma = 0.299 * xn[:, 0] + 0.587 * xn[:, 1] + 0.114 * xn[:, 2]
    for c in range(3):
        np.testing.assert_allclose(y[:, c], luma, rtol=1e-6)
    np.testing.assert_array_equal(to_numpy(A.grayscale(x, p=0.0, rng=np.random.default_rng(0))), xn)
    one = _batch(xp, (3, 1, 5, 5))
    np.testing.assert_array_equal(
        to_numpy(A.grayscale(one, 1.0, np.random.default_rng(0))), to_numpy(one)
    )
    with pytest.raises(ValueError, match="channels"):
        A.rgb_to_grayscale(_batch(xp, (1, 2, 3, 3)))


def test_blur_preserves_a_constant_image(xp):
    x = xp.full((3, 3, 8, 8), 0.37, dtype=xp.float32)
    y = to_numpy(A.gaussian_blur(x, p=1.0, sigma=(0.1, 2.0), rng=np.random.default_rng(0)))
    np.testing.assert_allclose(y, 0.37, rtol=1e-6)
    np.testing.assert_allclose(y.mean(), 0.37, rtol=1e-6)


@pytest.mark.parametrize("sigma", [0.5, 1.3, 2.0])
def test_blur_matches_scipy(xp, sigma):
    from scipy.ndimage import gaussian_filter

    x = _batch(xp, (2, 3, 9, 12), dtype=np.float64)
    y = to_numpy(A.gaussian_blur(x, p=1.0, sigma=(sigma, sigma), rng=np.random.default_rng(0)))
    radius = math.ceil(3 * sigma)
    ref = gaussian_filter(
        to_numpy(x), sigma=(0, 0, sigma, sigma), mode="nearest", truncate=radius / sigma
    )
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-12)
    assert y.std() < to_numpy(x).std()  # blurring smooths


@given(
    batch=st.integers(2, 7),
    cut=st.integers(1, 6),
    lo=st.floats(0.1, 1.5),
    span=st.floats(0.0, 1.5),
    p=st.sampled_from([0.3, 0.5, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_blur_of_a_batch_equals_blur_of_its_halves(xp, batch, cut, lo, span, p, seed):
    """Each image's blur depends on its own random numbers alone: the two parts of a batch,
    each given its rows of the batch's draws (``ShardedGenerator``, as a rank of a
    data-parallel run gets them), blur exactly as the whole batch. Each image also equals
    SciPy's Gaussian filter with its own sigma, truncated at ceil(3 sigma_hi) of the range."""
    from scipy.ndimage import gaussian_filter

    from minitransformer.train.recipes.base import ShardedGenerator

    cut = min(cut, batch - 1)
    sigma = (lo, lo + span)
    x = _batch(xp, (batch, 2, 7, 6), seed=seed, dtype=np.float64)
    whole = to_numpy(A.gaussian_blur(x, p=p, sigma=sigma, rng=np.random.default_rng(seed)))
    for part in (slice(0, cut), slice(cut, batch)):
        rng = ShardedGenerator(np.random.default_rng(seed), batch, part)
        shard = to_numpy(A.gaussian_blur(x[part], p=p, sigma=sigma, rng=rng))
        np.testing.assert_allclose(shard, whole[part], rtol=0, atol=1e-12)
    # independent reference: the same host draws (B uniforms for p, then B sigmas)
    rng = np.random.default_rng(seed)
    chosen = rng.random(batch) < p
    sig = rng.uniform(sigma[0], sigma[1], batch)
    radius = max(1, math.ceil(3 * sigma[1]))
    xn = to_numpy(x)
    for b in range(batch):
        ref = xn[b] if not chosen[b] else gaussian_filter(
            xn[b], sigma=(0, sig[b], sig[b]), mode="nearest", truncate=radius / sig[b])
        np.testing.assert_allclose(whole[b], ref, rtol=1e-10, atol=1e-12)


def test_blur_radius_comes_from_the_range_not_the_batch(xp):
    """The case that broke when the radius came from the batch's largest sigma: seed 8 draws
    a first half whose largest sigma (1.01) gives radius 4, the batch's (1.65) 5; the first
    four images blurred alone, with their rows of the draws, are the whole batch's first
    four. Also: a range that is no range is refused, with the values."""
    from minitransformer.train.recipes.base import ShardedGenerator

    x = _batch(xp, (8, 3, 16, 16), seed=5, dtype=np.float64)
    sig = np.random.default_rng(8)
    sig.random(8)
    sig = sig.uniform(0.1, 2.0, 8)
    assert math.ceil(3 * sig[:4].max()) < math.ceil(3 * sig.max())  # the case is what it says
    whole = to_numpy(A.gaussian_blur(x, p=1.0, sigma=(0.1, 2.0), rng=np.random.default_rng(8)))
    rng = ShardedGenerator(np.random.default_rng(8), 8, slice(0, 4))
    first = to_numpy(A.gaussian_blur(x[:4], p=1.0, sigma=(0.1, 2.0), rng=rng))
    np.testing.assert_allclose(first, whole[:4], rtol=0, atol=1e-12)
    for bad in [(0.0, 1.0), (1.0, 0.5), (-0.1, 0.2), (0.1, float("inf"))]:
        with pytest.raises(ValueError, match=r"gaussian_blur: sigma must be .*got"):
            A.gaussian_blur(x, sigma=bad, rng=np.random.default_rng(0))


def test_blur_with_p_zero_is_identity(xp):
    x = _batch(xp)
    y = A.gaussian_blur(x, p=0.0, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(to_numpy(y), to_numpy(x))


def test_color_jitter_range_and_identity(xp):
    x = _batch(xp, (16, 3, 6, 6))
    y = to_numpy(A.color_jitter(x, rng=np.random.default_rng(0)))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert not np.allclose(y, to_numpy(x))
    same = A.color_jitter(x, p=0.0, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(to_numpy(same), to_numpy(x))
    none = A.color_jitter(x, 0.0, 0.0, 0.0, 0.0, p=1.0, rng=np.random.default_rng(0))
    np.testing.assert_allclose(to_numpy(none), to_numpy(x), atol=1e-6)


def test_color_jitter_brightness_scales_each_image(xp):
    x = _batch(xp, (8, 3, 5, 5), lo=0.1, hi=0.5)  # x * 1.4 < 1: no clipping
    y = to_numpy(A.color_jitter(x, 0.4, 0.0, 0.0, 0.0, p=1.0, rng=np.random.default_rng(0)))
    ratio = y / to_numpy(x)  # one factor per image
    np.testing.assert_allclose(ratio, ratio[:, :1, :1, :1] * np.ones_like(ratio), rtol=1e-5)
    assert ((ratio >= 0.6 - 1e-6) & (ratio <= 1.4 + 1e-6)).all() and ratio.std() > 0.01


def test_color_jitter_contrast_keeps_the_mean_luma(xp):
    x = _batch(xp, (8, 3, 5, 5), lo=0.4, hi=0.6)  # contrast 0.6..1.4 stays inside [0, 1]
    y = A.color_jitter(x, 0.0, 0.4, 0.0, 0.0, p=1.0, rng=np.random.default_rng(0))
    mean_in = to_numpy(A.rgb_to_grayscale(x)).mean(axis=(1, 2, 3))
    mean_out = to_numpy(A.rgb_to_grayscale(y)).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(mean_out, mean_in, rtol=1e-5)
    assert not np.allclose(to_numpy(y), to_numpy(x))


def test_color_jitter_keeps_grey_images_grey(xp):
    """Saturation and hue move chroma only; a grey image has none."""
    grey = xp.asarray(np.repeat(np.random.default_rng(0).uniform(0, 1, (6, 1, 5, 5)), 3, axis=1))
    y = to_numpy(A.color_jitter(grey, 0.0, 0.0, 0.2, 0.1, p=1.0, rng=np.random.default_rng(0)))
    np.testing.assert_allclose(y, to_numpy(grey), atol=1e-6)


def test_color_jitter_hue_moves_colour(xp):
    red = xp.zeros((32, 3, 2, 2), dtype=xp.float32)
    red[:, 0] = 1.0
    y = to_numpy(A.color_jitter(red, 0.0, 0.0, 0.0, 0.1, p=1.0, rng=np.random.default_rng(0)))
    assert y.min() >= 0 and y.max() <= 1
    assert np.abs(y - to_numpy(red)).max() > 0.05


def test_color_jitter_single_channel(xp):
    x = _batch(xp, (8, 1, 6, 6))
    y = to_numpy(A.color_jitter(x, rng=np.random.default_rng(0)))
    assert y.shape == (8, 1, 6, 6) and 0 <= y.min() and y.max() <= 1
    with pytest.raises(ValueError, match="channels"):
        A.color_jitter(_batch(xp, (1, 2, 3, 3)), rng=np.random.default_rng(0))


def test_normalize_image(xp):
    x = _batch(xp, (2, 3, 4, 4))
    y = to_numpy(A.normalize_image(x, A.IMAGENET_MEAN, A.IMAGENET_STD))
    mean = np.array(A.IMAGENET_MEAN, dtype=np.float32)[:, None, None]
    std = np.array(A.IMAGENET_STD, dtype=np.float32)[:, None, None]
    np.testing.assert_allclose(y, (to_numpy(x) - mean) / std, rtol=1e-6)
    y3 = to_numpy(A.normalize_image(x[0], [0.5] * 3, [0.25] * 3))  # (C, H, W) works too
    np.testing.assert_allclose(y3, (to_numpy(x)[0] - 0.5) / 0.25, rtol=1e-6)
    with pytest.raises(ValueError, match="3 channels"):
        A.normalize_image(x, [0.5], [0.5])


@pytest.mark.parametrize(
    "op",
    [
        lambda x: A.horizontal_flip(x),
        lambda x: A.solarize(x),
        lambda x: A.gaussian_blur(x),
        lambda x: A.color_jitter(x),
        lambda x: A.random_resized_crop(x, 4),
        lambda x: A.resize(x, 4),
    ],
)
def test_ops_reject_non_batches(op):
    with pytest.raises(ValueError, match="B, C, H, W"):
        op(np.zeros((3, 8, 8), dtype=np.float32))


def test_rng_must_be_a_host_generator():
    with pytest.raises(TypeError, match="Generator"):
        A.solarize(np.zeros((1, 1, 2, 2)), rng=0)


# --------------------------------------------------------------------------------------------
# multi-crop
# --------------------------------------------------------------------------------------------
def test_multicrop_views_order_and_shapes(xp):
    x = _batch(xp, (5, 3, 32, 32))
    mc = MultiCrop(global_size=24, local_size=12, n_local=3)
    views = mc(x, rng=np.random.default_rng(0))
    assert mc.n_views == len(views) == 5
    assert [v.shape for v in views] == [(5, 3, 24, 24)] * 2 + [(5, 3, 12, 12)] * 3
    for v in views:
        assert get_array_module(v) is xp and v.dtype == x.dtype
        v = to_numpy(v)
        assert v.min() >= 0 and v.max() <= 1
    again = mc(x, rng=np.random.default_rng(0))
    for a, b in zip(views, again):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    other = mc(x, rng=np.random.default_rng(1))
    assert not np.allclose(to_numpy(other[0]), to_numpy(views[0]))


def test_multicrop_on_single_channel_digits(xp):
    x = _batch(xp, (6, 1, 8, 8))
    mc = MultiCrop(8, 6, n_local=2, blur_sigma=(0.1, 1.0), mean=[0.3], std=[0.4])
    views = mc(x, rng=np.random.default_rng(0))
    assert [v.shape for v in views] == [(6, 1, 8, 8)] * 2 + [(6, 1, 6, 6)] * 2
    assert all(np.isfinite(to_numpy(v)).all() for v in views)
    assert min(to_numpy(v).min() for v in views) < 0  # normalised: (0 - 0.3) / 0.4 < 0


def test_multicrop_follows_the_dino_recipe(monkeypatch):
    """Per-view blur / solarize probabilities and crop scales of DataAugmentationDINO."""
    calls = []

    def spy(name, fn):
        def wrapped(x, *args, **kwargs):
            calls.append((name, kwargs.get("p"), kwargs.get("scale"), kwargs.get("rng")))
            return fn(x, *args, **kwargs)

        monkeypatch.setattr(A, name, wrapped)

    for name in ("random_resized_crop", "horizontal_flip", "color_jitter", "grayscale"):
        spy(name, getattr(A, name))
    spy("gaussian_blur", A.gaussian_blur)
    spy("solarize", A.solarize)
    mc = MultiCrop(16, 8, n_local=2)
    rng = np.random.default_rng(0)
    mc(np.random.default_rng(0).uniform(0, 1, (2, 3, 20, 20)).astype(np.float32), rng=rng)
    assert all(c[3] is rng for c in calls)  # one explicit generator throughout
    blur = [c[1] for c in calls if c[0] == "gaussian_blur"]
    sol = [c[1] for c in calls if c[0] == "solarize"]
    scales = [c[2] for c in calls if c[0] == "random_resized_crop"]
    assert blur == [1.0, 0.1, 0.5, 0.5]
    assert sol == [0.2]  # global 2 only
    assert scales == [(0.4, 1.0), (0.4, 1.0), (0.05, 0.4), (0.05, 0.4)]
    assert [c[1] for c in calls if c[0] == "horizontal_flip"] == [0.5] * 4
    assert [c[1] for c in calls if c[0] == "color_jitter"] == [0.8] * 4
    assert [c[1] for c in calls if c[0] == "grayscale"] == [0.2] * 4
    order = [c[0] for c in calls[:6]]
    assert order == [
        "random_resized_crop", "horizontal_flip", "color_jitter", "grayscale", "gaussian_blur",
        "random_resized_crop",
    ]  # fmt: skip


def test_multicrop_arguments():
    with pytest.raises(ValueError, match="n_local"):
        MultiCrop(8, 4, n_local=-1)
    with pytest.raises(ValueError, match="mean and std"):
        MultiCrop(8, 4, mean=[0.5])
    assert MultiCrop(8, 4, n_local=0).n_views == 2
