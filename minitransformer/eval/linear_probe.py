"""Linear probe: multinomial logistic regression on frozen features, trained with our own
autograd and AdamW (full batch, zero init: deterministic, no random numbers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import backend
from .. import functional as F
from ..autograd import Tensor, no_grad
from ..optim import AdamW
from ._arrays import float_array, int_labels, raw

__all__ = ["LinearClassifier", "linear_probe", "train_linear_classifier"]


@dataclass
class LinearClassifier:
    """$z = \\frac{x - \\mu}{\\sigma} W + b$; ``predict`` returns $\\arg\\max_c z_c$.

    Shapes: weight (D, K), bias (K,), mean and std (D,), all raw arrays on one device.
    """

    weight: Any
    bias: Any
    mean: Any
    std: Any

    def logits(self, x: Any) -> Any:
        """Shapes: x (n, D) -> (n, K)."""
        xp = backend.get_array_module(self.weight)
        a = float_array(x, xp).astype(self.weight.dtype, copy=False)
        return ((a - self.mean) / self.std) @ self.weight + self.bias

    def predict(self, x: Any) -> Any:
        """Shapes: x (n, D) -> (n,) class indices, on the classifier's device."""
        return self.logits(x).argmax(axis=-1)


def train_linear_classifier(x: Any, y: Any, num_classes: int | None = None, steps: int = 300,
                            lr: float = 0.05, weight_decay: float = 1e-4,
                            standardize: bool = True) -> LinearClassifier:
    """Minimise the mean cross-entropy of $z = \\hat x W + b$ over the whole training set
    with AdamW (decay on W only), from $W = 0, b = 0$.

    Features are standardised with the training mean and standard deviation (constant
    features keep std 1), which makes one learning rate work across feature scales. Full
    batch and zero init make it deterministic; the loss is convex, so the start does not
    matter. Shapes: x (n, D), y (n,) integers in [0, K).
    """
    xp = backend.get_array_module(getattr(x, "data", x))
    a = float_array(x, xp)
    if a.ndim != 2:
        raise ValueError(f"train_linear_classifier: x must be (n, D), got shape {a.shape}")
    n, D = a.shape
    t = int_labels(y, xp, "train_linear_classifier", n)
    K = num_classes if num_classes is not None else int(t.max()) + 1
    if standardize:
        mean = a.mean(axis=0)
        std = a.std(axis=0)
        std = xp.where(std > 1e-8, std, 1.0).astype(a.dtype)
    else:
        mean, std = xp.zeros(D, a.dtype), xp.ones(D, a.dtype)
    xs = Tensor((a - mean) / std)  # (n, D)
    W = Tensor(xp.zeros((D, K), a.dtype), requires_grad=True)
    b = Tensor(xp.zeros(K, a.dtype), requires_grad=True)
    opt = AdamW([{"params": [W]}, {"params": [b], "weight_decay": 0.0}], lr=lr,
                weight_decay=weight_decay)
    for _ in range(steps):
        loss = F.cross_entropy(F.linear(xs, W, b), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return LinearClassifier(W.data, b.data, mean, std)


def linear_probe(train_x: Any, train_y: Any, test_x: Any, test_y: Any,
                 num_classes: int | None = None, steps: int = 300, lr: float = 0.05,
                 weight_decay: float = 1e-4, return_predictions: bool = False
                 ) -> float | tuple[float, np.ndarray]:
    """Test accuracy of a logistic-regression probe trained on frozen features (the linear
    evaluation of DINO ``eval_linear.py``, here full-batch AdamW instead of SGD epochs).

    Shapes: train_x (n, D), train_y (n,), test_x (m, D), test_y (m,).
    Returns the accuracy, or (accuracy, NumPy predictions (m,)) with ``return_predictions``.
    """
    if num_classes is None:
        num_classes = int(max(raw(train_y).max(), raw(test_y).max())) + 1
    clf = train_linear_classifier(train_x, train_y, num_classes, steps, lr, weight_decay)
    xp = backend.get_array_module(clf.weight)
    with no_grad():
        pred = clf.predict(test_x)
    t = int_labels(test_y, xp, "linear_probe", pred.shape[0])
    accuracy = float((pred == t).mean())
    if return_predictions:
        return accuracy, backend.to_numpy(pred).astype(np.int64)
    return accuracy
