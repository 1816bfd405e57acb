"""Procedural shapes: labels, masks, colours and captions agree with each other."""

from __future__ import annotations

import numpy as np
import pytest

from minitransformer.backend import to_numpy
from minitransformer.data import (
    ALL_SHAPES,
    COLOUR_RGB,
    COLOURS,
    POSITION_PHRASES,
    POSITIONS,
    SHAPES,
    SIZES,
    caption_for,
    make_shapes,
    patch_mask_targets,
)

S = 32


@pytest.fixture(scope="module")
def one():
    return make_shapes(600, size=S, seed=0)


@pytest.fixture(scope="module")
def two():
    return make_shapes(400, size=S, seed=1, max_objects=2)


def test_vocabulary():
    assert SHAPES == ("circle", "square", "triangle")
    assert set(SHAPES) <= set(ALL_SHAPES)
    assert len(COLOURS) == 8 == len(COLOUR_RGB) and len(set(COLOURS)) == 8
    assert SIZES == ("small", "large")
    assert len(POSITIONS) == 5 and set(POSITION_PHRASES) == set(POSITIONS)


def test_arrays_shapes_dtypes_ranges(one):
    n = len(one)
    assert n == 600
    assert one.images.shape == (n, 3, S, S) and one.images.dtype == np.float32
    assert one.images.min() >= 0.0 and one.images.max() <= 1.0
    assert one.masks.shape == (n, S, S) and one.masks.dtype == bool
    assert one.object_masks.shape == (n, 1, S, S)
    for name, vocab in one.names.items():
        labels = getattr(one, name)
        assert labels.shape == (n,) and labels.dtype == np.int64
        assert labels.min() >= 0 and labels.max() < len(vocab)
        assert len(np.unique(labels)) == len(vocab)  # every value occurs in 600 images
    assert len(one.captions) == n
    assert (one.masks.sum(axis=(1, 2)) > 10).all()


def test_deterministic_per_seed():
    a, b, c = make_shapes(20, seed=5), make_shapes(20, seed=5), make_shapes(20, seed=6)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert a.captions == b.captions
    assert not np.array_equal(a.images, c.images)


def test_position_label_matches_mask(one):
    rows, cols = np.mgrid[0:S, 0:S] + 0.5
    area = one.masks.sum(axis=(1, 2))
    cy = (one.masks * rows).sum(axis=(1, 2)) / area
    cx = (one.masks * cols).sum(axis=(1, 2)) / area
    left_share = (one.masks[:, :, : S // 2]).sum(axis=(1, 2)) / area
    top_share = (one.masks[:, : S // 2, :]).sum(axis=(1, 2)) / area
    pos = np.array(POSITIONS)[one.position]
    assert (left_share[pos == "left"] > 0.6).all()
    assert (left_share[pos == "right"] < 0.4).all()
    assert (top_share[pos == "top"] > 0.6).all()
    assert (top_share[pos == "bottom"] < 0.4).all()
    # the centroid is nearest to the anchor of its own position
    anchors = {"left": (16, 8), "right": (16, 24), "top": (8, 16), "bottom": (24, 16)}
    anchors["centre"] = (16, 16)
    names = list(anchors)
    pts = np.array([anchors[k] for k in names], dtype=float)  # (5, 2)
    dist = (cy[:, None] - pts[None, :, 0]) ** 2 + (cx[:, None] - pts[None, :, 1]) ** 2
    assert (np.array(names)[dist.argmin(axis=1)] == pos).all()


def test_small_objects_have_fewer_pixels_than_large_ones(one):
    area = one.masks.sum(axis=(1, 2))
    for k in range(len(SHAPES)):
        small = area[(one.shape == k) & (one.size == 0)]
        large = area[(one.shape == k) & (one.size == 1)]
        assert len(small) > 20 and len(large) > 20
        assert small.max() < large.min(), SHAPES[k]


def _nearest_colour(mean_rgb: np.ndarray) -> np.ndarray:
    d = ((mean_rgb[:, None, :] - COLOUR_RGB[None, :, :]) ** 2).sum(-1)  # (n, 8)
    return d.argmin(axis=1)


def test_pixels_under_the_mask_have_the_named_colour(one):
    m = one.masks[:, None]  # (n, 1, S, S)
    mean_in = (one.images * m).sum(axis=(2, 3)) / m.sum(axis=(2, 3))  # (n, 3)
    np.testing.assert_array_equal(_nearest_colour(mean_in), one.colour)
    # and the background is dark
    out = ~one.object_masks.any(axis=1)[:, None]
    mean_out = (one.images * out).sum(axis=(1, 2, 3)) / (3 * out.sum(axis=(1, 2, 3)))
    assert mean_out.max() < 0.3


def test_shape_label_matches_mask_geometry(one):
    """A circle fills pi/4 of its bounding box, a square all of it, a triangle about half."""
    m = one.masks
    rows_any, cols_any = m.any(axis=2), m.any(axis=1)
    height, width = rows_any.sum(1), cols_any.sum(1)
    fill = m.sum(axis=(1, 2)) / (height * width)
    # edge clipping changes the box, so judge on objects away from the border
    inside = ~(rows_any[:, 0] | rows_any[:, -1] | cols_any[:, 0] | cols_any[:, -1])
    for k, (lo, hi) in enumerate([(0.64, 0.93), (0.99, 1.0), (0.45, 0.64)]):
        f = fill[inside & (one.shape == k)]
        assert len(f) > 20 and f.min() >= lo and f.max() <= hi, (SHAPES[k], f.min(), f.max())


def test_captions_match_labels(one):
    for i in range(len(one)):
        expected = caption_for(
            SHAPES[one.shape[i]],
            COLOURS[one.colour[i]],
            SIZES[one.size[i]],
            POSITIONS[one.position[i]],
        )
        assert one.captions[i] == expected
    assert caption_for("circle", "red", "small", "left") == "a small red circle on the left"


def test_two_objects(two):
    n = len(two)
    assert set(np.unique(two.n_objects)) == {1, 2}
    assert two.object_masks.shape == (n, 2, S, S)
    has2 = two.n_objects == 2
    # absent slots: -1 labels and empty masks
    for a in (two.object_shape, two.object_colour, two.object_size, two.object_position):
        assert (a[~has2, 1] == -1).all() and (a[:, 0] >= 0).all() and (a[has2, 1] >= 0).all()
    assert not two.object_masks[~has2, 1].any()
    # distinct positions, disjoint visible masks, main object fully visible
    assert (two.object_position[has2, 0] != two.object_position[has2, 1]).all()
    assert not (two.object_masks[:, 0] & two.object_masks[:, 1]).any()
    np.testing.assert_array_equal(two.masks, two.object_masks[:, 0])
    np.testing.assert_array_equal(two.shape, two.object_shape[:, 0])
    # the captions name both objects, main first
    for i in range(n):
        parts = two.captions[i].split(" and ")
        assert len(parts) == two.n_objects[i]
        for k, part in enumerate(parts):
            assert part == caption_for(
                SHAPES[two.object_shape[i, k]],
                COLOURS[two.object_colour[i, k]],
                SIZES[two.object_size[i, k]],
                POSITIONS[two.object_position[i, k]],
            )
    # the second object's visible pixels have its colour too
    big = has2 & (two.object_masks[:, 1].sum(axis=(1, 2)) >= 20)
    m = two.object_masks[big, 1][:, None]
    mean_in = (two.images[big] * m).sum(axis=(2, 3)) / m.sum(axis=(2, 3))
    np.testing.assert_array_equal(_nearest_colour(mean_in), two.object_colour[big, 1])


def test_all_shapes_and_other_sizes():
    d = make_shapes(60, size=48, seed=2, shapes=ALL_SHAPES)
    assert d.images.shape == (60, 3, 48, 48)
    assert d.shape_names == ALL_SHAPES and d.names["shape"] == ALL_SHAPES
    for k in np.unique(d.shape):
        assert d.masks[d.shape == k].sum(axis=(1, 2)).min() > 20
    assert all(ALL_SHAPES[s] in c for s, c in zip(d.shape, d.captions))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown shape"):
        make_shapes(4, shapes=("circle", "hexagon"))
    with pytest.raises(ValueError, match="max_objects"):
        make_shapes(4, max_objects=0)
    with pytest.raises(ValueError, match="size"):
        make_shapes(4, size=4)


def test_patch_mask_targets_majority_rule(xp):
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, 0, :2] = True  # patch (0,0) of size 2: 2 of 4 pixels -> not more than half
    masks[0, 2:, 2:] = True  # patch (1,1): all 4
    masks[1, 0:2, 2] = True  # patch (0,1): 2 of 4
    masks[1, 0, 3] = True  # patch (0,1): now 3 of 4
    out = patch_mask_targets(xp.asarray(masks), 2)
    assert out.shape == (2, 4) and out.dtype == bool
    np.testing.assert_array_equal(
        to_numpy(out), [[False, False, False, True], [False, True, False, False]]
    )


def test_patch_mask_targets_against_loop(one, xp):
    p = 4
    got = to_numpy(patch_mask_targets(xp.asarray(one.masks[:50]), p))
    g = S // p
    expected = np.zeros((50, g * g), dtype=bool)
    for i in range(50):
        for r in range(g):
            for c in range(g):
                block = one.masks[i, r * p : (r + 1) * p, c * p : (c + 1) * p]
                expected[i, r * g + c] = block.mean() > 0.5
    np.testing.assert_array_equal(got, expected)
    assert got.any(axis=1).mean() > 0.9  # most objects cover at least one patch


def test_patch_mask_targets_errors():
    with pytest.raises(ValueError, match="divide"):
        patch_mask_targets(np.zeros((1, 10, 10), dtype=bool), 4)
    with pytest.raises(ValueError, match="masks must be"):
        patch_mask_targets(np.zeros((10, 10), dtype=bool), 2)
