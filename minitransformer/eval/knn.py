"""Weighted k-nearest-neighbour classification on frozen features, as DINO's ``eval_knn.py``."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import backend
from ._arrays import float_array, int_labels, l2_normalize

__all__ = ["knn_classifier"]


def knn_classifier(train_features: Any, train_labels: Any, test_features: Any, test_labels: Any,
                   k: int = 20, T: float = 0.07, num_classes: int | None = None,
                   batch_size: int = 1024) -> tuple[float, np.ndarray]:
    """Vote of the k most cosine-similar training features, each weighted $e^{s/T}$:
    $\\hat y = \\arg\\max_c \\sum_{j \\in \\text{top-}k} e^{s_j/T}[y_j = c]$ (DINO
    ``eval_knn.py:knn_classifier``, defaults k=20, T=0.07).

    Features are L2-normalised here (DINO normalises when extracting them), so $s_j$ is a
    cosine. The weights are computed as $e^{(s_j - \\max_j s_j)/T}$, which rescales each
    query's votes by one constant (the same argmax) and cannot overflow. ``k`` is capped at
    the number of training features; ties go to the lower class index.

    Shapes: train_features (M, D), train_labels (M,), test_features (Q, D), test_labels (Q,).
    Returns: (top-1 accuracy in [0, 1], predictions as a NumPy int64 array of shape (Q,)).
    """
    xp = backend.get_array_module(getattr(train_features, "data", train_features),
                                  getattr(test_features, "data", test_features))
    train = float_array(train_features, xp)
    test = float_array(test_features, xp)
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise ValueError(f"knn_classifier: features must be (M, D) and (Q, D), got "
                         f"{train.shape} and {test.shape}")
    if k < 1 or T <= 0:
        raise ValueError(f"knn_classifier: need k >= 1 and T > 0, got k={k}, T={T}")
    M, Q = train.shape[0], test.shape[0]
    y_train = int_labels(train_labels, xp, "knn_classifier", M)
    y_test = int_labels(test_labels, xp, "knn_classifier", Q)
    K = num_classes if num_classes is not None else int(max(y_train.max(), y_test.max())) + 1
    k = min(k, M)
    train, test = l2_normalize(train), l2_normalize(test)
    classes = xp.arange(K)
    preds = []
    for start in range(0, Q, batch_size):
        sim = test[start:start + batch_size] @ train.T  # (b, M) cosines
        top = xp.argpartition(-sim, k - 1, axis=1)[:, :k]  # (b, k) the k largest, any order
        top_sim = xp.take_along_axis(sim, top, axis=1)  # (b, k)
        weights = xp.exp((top_sim - top_sim.max(axis=1, keepdims=True)) / T)  # (b, k)
        onehot = y_train[top][:, :, None] == classes  # (b, k, K)
        votes = (onehot * weights[:, :, None]).sum(axis=1)  # (b, K)
        preds.append(votes.argmax(axis=1))
    pred = xp.concatenate(preds)
    accuracy = float((pred == y_test).mean())
    return accuracy, backend.to_numpy(pred).astype(np.int64)
