"""CLIP zero-shot accuracy and prompt-ensembled class embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from minitransformer.eval import zero_shot_accuracy, zero_shot_class_embeddings


def test_hand_made_cosines(device, xp):
    classes = xp.asarray([[1.0, 0.0], [0.0, 1.0]])
    images = xp.asarray([[2.0, 1.0], [1.0, 3.0], [-1.0, 0.1]])
    # cosines: [0.894, 0.447] -> 0; [0.316, 0.949] -> 1; [-0.995, 0.0995] -> 1
    acc, pred = zero_shot_accuracy(images, classes, xp.asarray([0, 1, 0]),
                                   return_predictions=True)
    assert pred.tolist() == [0, 1, 1]
    assert acc == pytest.approx(2 / 3)


def test_synthetic_features_are_classified(device, xp, rng):
    K, D, B = 6, 16, 60
    text = rng.standard_normal((K, D))
    labels = rng.integers(0, K, B)
    images = text[labels] * rng.uniform(0.5, 5.0, (B, 1)) + 0.05 * rng.standard_normal((B, D))
    assert zero_shot_accuracy(xp.asarray(images), xp.asarray(text), xp.asarray(labels)) == 1.0
    assert zero_shot_accuracy(xp.asarray(images), xp.asarray(text),
                              xp.asarray((labels + 1) % K)) == 0.0


def test_class_embeddings_are_normalised_means(device, xp, rng):
    t = rng.standard_normal((5, 3))
    y = np.array([0, 1, 0, 1, 1])
    out = zero_shot_class_embeddings(xp.asarray(t), xp.asarray(y))
    u = t / np.linalg.norm(t, axis=1, keepdims=True)
    expected = np.stack([u[[0, 2]].mean(0), u[[1, 3, 4]].mean(0)])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(out.get() if hasattr(out, "get") else out), expected,
                               rtol=1e-12)
    with pytest.raises(ValueError, match=r"classes \[2\] have no caption"):
        zero_shot_class_embeddings(t, y, num_classes=3)


def test_zero_shot_rejects_mismatched_widths():
    with pytest.raises(ValueError, match="zero_shot_accuracy"):
        zero_shot_accuracy(np.ones((2, 3)), np.ones((4, 5)), np.zeros(2, int))
