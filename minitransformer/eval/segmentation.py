"""Dense evaluation: a linear classifier on frozen patch features, scored by mIoU (the
linear-segmentation protocol DINOv2 reports, at patch resolution)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import backend
from ..autograd import no_grad
from ._arrays import raw
from .linear_probe import train_linear_classifier

__all__ = ["patch_segmentation_miou", "segmentation_iou"]


def segmentation_iou(pred: Any, target: Any, num_classes: int) -> np.ndarray:
    """Per-class IoU over the whole set, $\\frac{TP_c}{TP_c + FP_c + FN_c}$; NaN for a class
    absent from both prediction and target (it is left out of the mean).

    Shapes: pred, target (...) integers in [0, K), same shape -> (K,) NumPy float64.
    """
    p = backend.to_numpy(raw(pred)).reshape(-1).astype(np.int64)
    t = backend.to_numpy(raw(target)).reshape(-1).astype(np.int64)
    if p.shape != t.shape:
        raise ValueError(f"segmentation_iou: pred and target sizes differ ({p.size} vs "
                         f"{t.size})")
    K = num_classes
    confusion = np.bincount(t * K + p, minlength=K * K).reshape(K, K)  # rows target, cols pred
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp  # TP + FP + FN
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def _flatten(feats: Any, labels: Any, fn: str) -> tuple[Any, Any]:
    f, y = raw(feats), raw(labels)
    if f.ndim == 3:  # (B, N, D) -> (B*N, D)
        f = f.reshape(-1, f.shape[-1])
    y = y.reshape(-1)  # (B, N) -> (B*N,)
    if f.ndim != 2 or f.shape[0] != y.shape[0]:
        raise ValueError(f"{fn}: patch features (B, N, D) or (M, D) need labels (B, N) or (M,), "
                         f"got {raw(feats).shape} and {raw(labels).shape}")
    return f, y


def patch_segmentation_miou(train_patch_feats: Any, train_patch_labels: Any,
                            test_patch_feats: Any, test_patch_labels: Any, num_classes: int,
                            steps: int = 300, lr: float = 0.05, weight_decay: float = 1e-4,
                            max_train_patches: int | None = 16384, seed: int = 0) -> float:
    """mIoU of a linear patch classifier: fit $\\arg\\max_c (x_p W + b)_c$ on the training
    patches (``train_linear_classifier``), predict every test patch, average the per-class
    IoU over the classes present (``segmentation_iou``).

    Full-batch training costs O(M D K) per step, so at most ``max_train_patches`` training
    patches are used (a fixed random subset drawn with ``seed``; None = all of them). A
    linear classifier on D-dim features saturates long before 16k examples.

    Shapes: features (B, N, D) or (M, D); labels (B, N) or (M,) integers in [0, K).
    """
    fn = "patch_segmentation_miou"
    x_train, y_train = _flatten(train_patch_feats, train_patch_labels, fn)
    x_test, y_test = _flatten(test_patch_feats, test_patch_labels, fn)
    M = x_train.shape[0]
    if max_train_patches is not None and M > max_train_patches:
        pick = np.sort(np.random.default_rng(seed).choice(M, max_train_patches, replace=False))
        xp = backend.get_array_module(x_train)
        pick = xp.asarray(pick)
        x_train, y_train = x_train[pick], y_train[pick]
    clf = train_linear_classifier(x_train, y_train, num_classes, steps, lr, weight_decay)
    with no_grad():
        pred = clf.predict(x_test)
    return float(np.nanmean(segmentation_iou(pred, y_test, num_classes)))
