"""Masked language modelling (seed eq. 4): the BERT loss over the masked positions."""

from __future__ import annotations

from typing import Any

from .. import functional as F
from ..autograd import Tensor
from ._utils import as_tensor, raw

__all__ = ["mlm_loss"]


def mlm_loss(logits: Any, labels: Any) -> Tensor:
    """$L = -\\frac{1}{|M|} \\sum_{i \\in M} \\log \\mathrm{softmax}(z_i)_{x_i}$, M = the
    positions whose label is not -100.

    The seed writes a sum over M; every reference takes the mean: HF's torch cross-entropy
    with ``ignore_index=-100``, and Google's ``get_masked_lm_output``
    (``sum(w * nll) / (sum(w) + 1e-5)``). Labels come from ``mask_tokens``. Logits at
    unlabelled positions do not change the loss. With no labelled position the loss is 0.

    Shapes: logits (..., V), labels (...) int with -100 where not predicted -> ().
    """
    z = as_tensor(logits, "logits", "mlm_loss")
    y = raw(labels)
    if tuple(y.shape) != tuple(z.shape[:-1]):
        raise ValueError(
            f"mlm_loss: logits {tuple(z.shape)} need labels of shape {tuple(z.shape[:-1])}, "
            f"got {tuple(y.shape)}"
        )
    return F.cross_entropy(z, y, ignore_index=-100)
