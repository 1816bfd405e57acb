"""Linear probe and patch-level segmentation mIoU on synthetic, linearly separable data."""

from __future__ import annotations

import numpy as np
import pytest

from minitransformer.eval import (
    linear_probe,
    patch_segmentation_miou,
    segmentation_iou,
    train_linear_classifier,
)


def _separable(rng, n, D=12, K=3, W=None):
    """Labels from a random linear rule, keeping only points with a clear margin."""
    W = rng.standard_normal((D, K)) if W is None else W
    x = rng.standard_normal((4 * n, D)) * rng.uniform(0.5, 3.0, D)  # uneven feature scales
    z = x @ W
    top2 = np.sort(z, axis=1)[:, -2:]
    keep = (top2[:, 1] - top2[:, 0]) > 0.5
    return x[keep][:n], z[keep][:n].argmax(1), W


def test_linear_probe_learns_a_linear_rule(device, xp, rng):
    x, y, W = _separable(rng, 600)
    xt, yt, _ = _separable(rng, 300, W=W)
    acc, pred = linear_probe(xp.asarray(x), xp.asarray(y), xp.asarray(xt), xp.asarray(yt),
                             return_predictions=True)
    assert acc >= 0.95
    assert acc == pytest.approx(float(np.mean(pred == yt)))
    # Deterministic: full batch from zeros, no random numbers.
    assert linear_probe(x, y, xt, yt) == linear_probe(x, y, xt, yt)


def test_linear_classifier_beats_chance_only_with_signal(rng):
    x = rng.standard_normal((300, 5))
    y = rng.integers(0, 3, 300)  # labels independent of x
    xt, yt = rng.standard_normal((300, 5)), rng.integers(0, 3, 300)
    assert linear_probe(x, y, xt, yt) < 0.5
    clf = train_linear_classifier(x, y, steps=10)
    assert clf.weight.shape == (5, 3) and clf.predict(xt).shape == (300,)


def test_segmentation_iou_by_hand():
    pred = np.array([0, 0, 1, 1, 2])
    target = np.array([0, 1, 1, 1, 2])
    # class 0: TP 1, FP 1 -> 1/2; class 1: TP 2, FN 1 -> 2/3; class 2: 1; class 3: absent
    iou = segmentation_iou(pred, target, num_classes=4)
    np.testing.assert_allclose(iou[:3], [0.5, 2 / 3, 1.0])
    assert np.isnan(iou[3])


def test_patch_segmentation_miou(device, xp, rng):
    # Patches (B, N, D) whose class (background 0, objects 1-2) is a linear rule of features.
    x, y, W = _separable(rng, 40 * 16, D=8)
    xt, yt, _ = _separable(rng, 20 * 16, D=8, W=W)
    miou = patch_segmentation_miou(xp.asarray(x.reshape(40, 16, 8)),
                                   xp.asarray(y.reshape(40, 16)),
                                   xp.asarray(xt.reshape(20, 16, 8)),
                                   xp.asarray(yt.reshape(20, 16)), num_classes=3)
    assert miou >= 0.9
    # A fixed random subset of the training patches (the default caps at 16384).
    small = patch_segmentation_miou(x, y, xt, yt, num_classes=3, max_train_patches=200)
    assert small >= 0.8
    assert small == patch_segmentation_miou(x, y, xt, yt, num_classes=3, max_train_patches=200)
    shuffled = patch_segmentation_miou(x, rng.permutation(y), xt, yt, num_classes=3)
    assert shuffled < 0.5
