"""Weighted k-NN (DINO's eval_knn.py, knn_classifier) against a plain-NumPy transcription, and
the temperature's effect: one exact match outvotes many far neighbours."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
from minitransformer.eval import knn_classifier


def _knn_reference(train, y_train, test, k, T, K):
    """DINO's knn_classifier in float64: normalise, full sort, votes exp(sim / T)."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    preds = []
    for q in test:
        sim = train @ q
        top = np.argsort(-sim)[:k]
        votes = np.zeros(K)
        for j in top:
            votes[y_train[j]] += np.exp(sim[j] / T)
        preds.append(int(np.argmax(votes)))
    return np.array(preds)


@pytest.mark.parametrize("k,T", [(20, 0.07), (5, 0.5), (1, 0.07)])
def test_knn_matches_reference(device, xp, rng, k, T):
    K, D = 4, 6
    centers = rng.standard_normal((K, D))
    y_train = rng.integers(0, K, 120)
    y_test = rng.integers(0, K, 40)
    train = centers[y_train] + 1.5 * rng.standard_normal((120, D))
    test = centers[y_test] + 1.5 * rng.standard_normal((40, D))
    acc, pred = knn_classifier(xp.asarray(train), xp.asarray(y_train), xp.asarray(test),
                               xp.asarray(y_test), k=k, T=T, batch_size=16)
    expected = _knn_reference(train, y_train, test, k, T, K)
    np.testing.assert_array_equal(pred, expected)
    assert acc == pytest.approx(float(np.mean(expected == y_test)))
    assert isinstance(pred, np.ndarray) and pred.dtype == np.int64


def test_exact_match_outvotes_many_far_neighbours(device, xp):
    # The query equals the only class-1 training feature; its 19 other neighbours
    # (class 0) have cosine 0.5. exp(1/0.07) = 1.6e6 > 19 exp(0.5/0.07) = 2.4e4: class 1.
    # With T = 1 the votes are nearly counts and the majority (class 0) wins instead.
    q = np.array([1.0, 0.0])
    far = np.array([0.5, np.sqrt(0.75)])  # cos(q, far) = 0.5
    train = np.vstack([q, np.repeat(far[None], 19, axis=0)])
    y_train = np.array([1] + [0] * 19)
    args = (xp.asarray(train), xp.asarray(y_train), xp.asarray(q[None]), xp.asarray([1]))
    assert knn_classifier(*args, k=20, T=0.07)[0] == 1.0
    assert knn_classifier(*args, k=20, T=1.0)[1].tolist() == [0]


def test_knn_scale_invariance_tensors_and_k_cap(device, xp, rng):
    train = rng.standard_normal((10, 3))
    y = rng.integers(0, 3, 10)
    test = rng.standard_normal((5, 3))
    yt = rng.integers(0, 3, 5)
    _, p1 = knn_classifier(train, y, test, yt, k=50)  # k is capped at 10
    scaled = train * rng.uniform(0.1, 10, (10, 1))  # cosine ignores the norms
    _, p2 = knn_classifier(mt.tensor(xp.asarray(scaled)), y, mt.tensor(xp.asarray(test)), yt,
                           k=50, num_classes=3)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(p1, _knn_reference(train, y, test, 10, 0.07, 3))


def test_knn_rejects_bad_shapes():
    with pytest.raises(ValueError, match="knn_classifier"):
        knn_classifier(np.zeros((4, 3)), np.zeros(4, int), np.zeros((2, 5)), np.zeros(2, int))
    with pytest.raises(ValueError, match="labels"):
        knn_classifier(np.ones((4, 3)), np.zeros(3, int), np.ones((2, 3)), np.zeros(2, int))
    with pytest.raises(TypeError, match="integers"):
        knn_classifier(np.ones((4, 3)), np.zeros(4), np.ones((2, 3)), np.zeros(2, int))
