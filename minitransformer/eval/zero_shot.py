"""CLIP zero-shot classification: the class whose text embedding is most cosine-similar."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import backend
from ._arrays import float_array, int_labels, l2_normalize

__all__ = ["zero_shot_accuracy", "zero_shot_class_embeddings"]


def zero_shot_class_embeddings(text_features: Any, text_labels: Any,
                               num_classes: int | None = None) -> Any:
    """Prompt ensembling (CLIP): each class's embedding is the mean of the L2-normalised
    embeddings of its captions, renormalised, $t_c = \\mathrm{norm}(\\frac{1}{n_c}
    \\sum_{i: y_i = c} \\mathrm{norm}(t_i))$.

    Shapes: text_features (M, D), text_labels (M,) in [0, K) -> (K, D) on the same device.
    A class with no caption is an error (it could never be predicted).
    """
    xp = backend.get_array_module(getattr(text_features, "data", text_features))
    t = float_array(text_features, xp)
    if t.ndim != 2:
        raise ValueError(f"zero_shot_class_embeddings: text_features must be (M, D), got "
                         f"{t.shape}")
    y = int_labels(text_labels, xp, "zero_shot_class_embeddings", t.shape[0])
    K = num_classes if num_classes is not None else int(y.max()) + 1
    onehot = (y[:, None] == xp.arange(K)).astype(t.dtype)  # (M, K)
    counts = onehot.sum(axis=0)  # (K,)
    if bool((counts == 0).any()):
        empty = backend.to_numpy(xp.nonzero(counts == 0)[0]).tolist()
        raise ValueError(f"zero_shot_class_embeddings: classes {empty} have no caption")
    return l2_normalize(onehot.T @ l2_normalize(t) / counts[:, None])  # (K, D)


def zero_shot_accuracy(image_features: Any, class_text_features: Any, labels: Any,
                       return_predictions: bool = False) -> float | tuple[float, np.ndarray]:
    """$\\hat y = \\arg\\max_c \\cos(I, T_c)$, the fraction equal to ``labels`` (CLIP's
    zero-shot classifier; the temperature does not change an argmax).

    Shapes: image_features (B, D), class_text_features (K, D), labels (B,).
    Returns the accuracy, or (accuracy, NumPy predictions (B,)) with ``return_predictions``.
    """
    xp = backend.get_array_module(getattr(image_features, "data", image_features),
                                  getattr(class_text_features, "data", class_text_features))
    img = float_array(image_features, xp)
    txt = float_array(class_text_features, xp)
    if img.ndim != 2 or txt.ndim != 2 or img.shape[1] != txt.shape[1]:
        raise ValueError(f"zero_shot_accuracy: features must be (B, D) and (K, D), got "
                         f"{img.shape} and {txt.shape}")
    y = int_labels(labels, xp, "zero_shot_accuracy", img.shape[0])
    pred = (l2_normalize(img) @ l2_normalize(txt).T).argmax(axis=1)  # (B,) over (B, K) cosines
    accuracy = float((pred == y).mean())
    if return_predictions:
        return accuracy, backend.to_numpy(pred).astype(np.int64)
    return accuracy
