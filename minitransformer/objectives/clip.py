"""CLIP's contrastive loss (seed eq. 6) with a learned temperature, as open_clip trains it."""

from __future__ import annotations

import math
from typing import Any

from .. import backend
from .. import functional as F
from ..autograd import Tensor, no_grad
from ._utils import as_tensor, is_array

__all__ = ["clamp_logit_scale", "clip_loss", "init_logit_scale"]

LOGIT_SCALE_MAX = math.log(100.0)  # 4.6052: tau >= 0.01, "as in the original paper"


def init_logit_scale(temperature: float = 0.07) -> float:
    """$\\log(1/\\tau)$, the initial value of CLIP's learned ``logit_scale`` (tau = 0.07 gives
    2.659260, ``exp`` = 14.2857), as open_clip's and OpenAI's ``model.py``. Initialising it to
    1 instead hurts training (huggingface/transformers#13430)."""
    if temperature <= 0:
        raise ValueError(f"init_logit_scale: temperature must be positive, got {temperature}")
    return math.log(1.0 / temperature)


def clip_loss(image_features: Any, text_features: Any, logit_scale: Any) -> Tensor:
    """The symmetric InfoNCE loss of CLIP (open_clip ``loss.py: ClipLoss``).

    $\\hat I = I / \\lVert I \\rVert$, $\\hat T = T / \\lVert T \\rVert$,
    $Z = e^{s} \\hat I \\hat T^\\top$ (B, B), and with labels ``arange(B)`` (pair i matches
    pair i): $L = \\tfrac12 [\\mathrm{CE}(Z, y) + \\mathrm{CE}(Z^\\top, y)]$, each a mean over
    rows. The seed's $\\cos(I, T) / \\tau$ is $Z$ with $s = \\log(1/\\tau)$ learned.

    ``logit_scale`` is the log inverse temperature $s$ (a Tensor to learn it, or a float);
    clamp it with ``clamp_logit_scale`` after each optimiser step, never here. The negatives
    are the other pairs of the batch (open_clip gathers them across GPUs); with B = 1 the loss
    is trivially 0 (openai/CLIP#83), and equal features give log B.

    Shapes: image_features (B, E), text_features (B, E), logit_scale () or (1,) -> ().
    """
    fn = "clip_loss"
    img = as_tensor(image_features, "image_features", fn)
    txt = as_tensor(text_features, "text_features", fn)
    if img.ndim != 2 or txt.ndim != 2:
        raise ValueError(
            f"{fn}: features must be (B, E); got image {tuple(img.shape)}, text {tuple(txt.shape)}"
        )
    if img.shape[0] != txt.shape[0]:
        raise ValueError(
            f"{fn}: the towers disagree on the batch size: image {tuple(img.shape)} vs text "
            f"{tuple(txt.shape)}; pair i of one must match pair i of the other"
        )
    if img.shape[1] != txt.shape[1]:
        raise ValueError(
            f"{fn}: the embedding widths differ: image {tuple(img.shape)} vs text "
            f"{tuple(txt.shape)}; project both to the same embed_dim"
        )
    B = img.shape[0]
    if isinstance(logit_scale, Tensor):
        if logit_scale.size != 1:
            raise ValueError(f"{fn}: logit_scale must be a scalar, got {tuple(logit_scale.shape)}")
        scale = F.exp(logit_scale.reshape(()))  # e^s = 1/tau
    else:
        scale = math.exp(float(logit_scale))
    i_hat = F.normalize(img, axis=-1)  # (B, E)
    t_hat = F.normalize(txt, axis=-1)  # (B, E)
    logits_per_image = scale * (i_hat @ t_hat.T)  # (B, B): row i = image i vs every text
    labels = backend.get_array_module(img.data).arange(B)
    return 0.5 * (F.cross_entropy(logits_per_image, labels)
                  + F.cross_entropy(logits_per_image.T, labels))


def clamp_logit_scale(logit_scale: Tensor, max_value: float = LOGIT_SCALE_MAX,
                      min_value: float = 0.0) -> Tensor:
    """Clamp the learned ``logit_scale`` in place to [min_value, max_value] = [0, ln 100].

    open_clip does ``logit_scale.clamp_(0, math.log(100))`` under ``no_grad`` after every
    optimiser step (``image_text_task.py: clamp_logit_scale``), which keeps
    $\\tau = e^{-s} \\in [0.01, 1]$. OpenAI's released code is inference-only and has no clamp
    (openai/CLIP#46). Returns the same Parameter.
    """
    if not isinstance(logit_scale, Tensor):
        raise TypeError(
            "clamp_logit_scale: expected the logit_scale Parameter, got "
            f"{type(logit_scale).__name__}"
        )
    if min_value > max_value:
        raise ValueError(f"clamp_logit_scale: min_value {min_value} > max_value {max_value}")
    with no_grad():
        data = logit_scale.data
        xp = backend.get_array_module(data)
        if is_array(data):
            xp.clip(data, min_value, max_value, out=data)  # in place
        else:  # a NumPy scalar left by `p.data = p.data - lr * g` on a 0-d array
            logit_scale.data = xp.asarray(xp.clip(data, min_value, max_value), dtype=data.dtype)
    return logit_scale
