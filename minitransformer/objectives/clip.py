"""CLIP's contrastive loss (seed eq. 6) with a learned temperature, as open_clip trains it."""

from __future__ import annotations

import math
from typing import Any

from .. import backend, distributed
from .. import functional as F
from ..autograd import Tensor, no_grad
from ._utils import as_tensor, is_array

__all__ = ["clamp_logit_scale", "clip_logits", "clip_loss", "init_logit_scale"]

LOGIT_SCALE_MAX = math.log(100.0)  # 4.6052: tau >= 0.01, "as in the original paper"


def init_logit_scale(temperature: float = 0.07) -> float:
    """$\\log(1/\\tau)$, the initial value of CLIP's learned ``logit_scale`` (tau = 0.07 gives
    2.659260, ``exp`` = 14.2857), as open_clip's and OpenAI's ``model.py``. Initialising it to
    1 instead hurts training (huggingface/transformers#13430)."""
    if temperature <= 0:
        raise ValueError(f"init_logit_scale: temperature must be positive, got {temperature}")
    return math.log(1.0 / temperature)


def clip_loss(image_features: Any, text_features: Any, logit_scale: Any, *,
              gather_with_grad: bool = True, local_loss: bool = False) -> Tensor:
    """The symmetric InfoNCE loss of CLIP (open_clip ``loss.py: ClipLoss``).

    $\\hat I = I / \\lVert I \\rVert$, $\\hat T = T / \\lVert T \\rVert$,
    $Z = e^{s} \\hat I \\hat T^\\top$ (B, B), and with labels ``arange(B)`` (pair i matches
    pair i): $L = \\tfrac12 [\\mathrm{CE}(Z, y) + \\mathrm{CE}(Z^\\top, y)]$, each a mean over
    rows. The seed's $\\cos(I, T) / \\tau$ is $Z$ with $s = \\log(1/\\tau)$ learned.

    ``logit_scale`` is the log inverse temperature $s$ (a Tensor to learn it, or a float);
    clamp it with ``clamp_logit_scale`` after each optimiser step, never here. The negatives
    are the other pairs of the batch (open_clip gathers them across GPUs); with B = 1 the loss
    is trivially 0 (openai/CLIP#83), and equal features give log B.

    **Over several ranks** (``distributed``, W > 1, each rank holding B of the N = W B pairs),
    the features of every rank are gathered, so each image is contrasted with all N texts, as
    open_clip's ``gather_features`` + ``ClipLoss`` (``src/open_clip/loss.py``). Let
    $L_g$ be the loss above on the global batch, and let the data-parallel step *average*
    the ranks' parameter gradients (as DDP does). The two options of open_clip:

    - ``gather_with_grad=True, local_loss=False`` (the default here): every rank computes the
      (N, N) logits and returns $L_g$ itself; the gather's backward sums every rank's
      gradient, so the averaged gradient is exactly $\\nabla L_g$: **N ranks train as one
      process on the global batch.** Cost: gathering 2 N E values, and the N x N logits on
      every rank (W times the work of one process's share).
    - ``gather_with_grad=True, local_loss=True``: rank r computes only its B rows against
      the N columns (labels offset by its first global index), returning $L_r$ with
      $\\frac1W \\sum_r L_r = L_g$; the averaged gradient is again exactly $\\nabla L_g$
      (with equal shards). Cheaper: B x N logits per rank (the choice for large W); the
      logged per-rank loss is $L_r$, so average it over ranks to report $L_g$.
    - ``gather_with_grad=False, local_loss=False`` (open_clip's default): the other ranks'
      features are constants and only this rank's slice carries a gradient. The value is
      $L_g$; the averaged gradient is $\\nabla L_g / W$ for everything upstream of the
      features (the towers) but the full $\\partial L_g / \\partial s$ for ``logit_scale``:
      SGD then trains the towers W times slower; Adam, invariant to a constant scale, nearly
      does not notice (its eps aside).
    - ``gather_with_grad=False, local_loss=True``: all gathered features are constants (even
      this rank's positives among the columns); gradient flows only through this rank's
      rows. The averaged gradient is that of $L_g$ with the *columns detached*
      ($Z = e^s \\hat I\\,\\mathrm{sg}(\\hat T)^\\top$ and
      $e^s \\hat T\\,\\mathrm{sg}(\\hat I)^\\top$):
      it loses the gradient that pushes the other pairs' negatives away. The cheapest.

    In a single process (or inside ``distributed.rank_local()``) nothing is gathered and the
    options change nothing. Every rank must call it (it communicates).

    Shapes: image_features (B, E), text_features (B, E), logit_scale () or (1,) -> ().
    """
    logits_per_image, logits_per_text, labels = clip_logits(
        image_features, text_features, logit_scale, gather_with_grad=gather_with_grad,
        local_loss=local_loss, fn="clip_loss")
    return 0.5 * (F.cross_entropy(logits_per_image, labels)
                  + F.cross_entropy(logits_per_text, labels))


def clip_logits(image_features: Any, text_features: Any, logit_scale: Any, *,
                gather_with_grad: bool = True, local_loss: bool = False,
                fn: str = "clip_logits") -> tuple[Tensor, Tensor, Any]:
    """The logits and labels of ``clip_loss`` (see it for the math and the options):
    ``(logits_per_image, logits_per_text, labels)``, open_clip's ``ClipLoss.get_logits`` and
    ``get_ground_truth``. One process: (B, B), its transpose, ``arange(B)``. Over W ranks:
    (N, N), its transpose, ``arange(N)``; with ``local_loss``, this rank's (B, N) rows of
    each and ``offset + arange(B)``. Every rank must call it (it communicates)."""
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
    xp = backend.get_array_module(img.data)
    if not distributed.is_distributed():
        logits_per_image = scale * (i_hat @ t_hat.T)  # (B, B): row i = image i vs every text
        return logits_per_image, logits_per_image.T, xp.arange(B)
    counts = distributed.gather_counts(B)  # every rank's B_r
    offset = sum(counts[: distributed.rank()])  # this rank's first index in the global batch
    all_i = _gather(i_hat, gather_with_grad, keep_local=not local_loss, offset=offset)  # (N, E)
    all_t = _gather(t_hat, gather_with_grad, keep_local=not local_loss, offset=offset)  # (N, E)
    if local_loss:
        logits_per_image = scale * (i_hat @ all_t.T)  # (B, N): this rank's images vs all texts
        logits_per_text = scale * (t_hat @ all_i.T)  # (B, N): this rank's texts vs all images
        labels = xp.arange(B) + offset  # pair i of this rank is global pair offset + i
    else:
        logits_per_image = scale * (all_i @ all_t.T)  # (N, N)
        logits_per_text = logits_per_image.T
        labels = xp.arange(sum(counts))
    return logits_per_image, logits_per_text, labels


def _gather(x: Tensor, with_grad: bool, keep_local: bool, offset: int) -> Tensor:
    """open_clip's ``gather_features`` for one tower: every rank's rows, in rank order.
    With grad: the differentiable all-gather. Without: constants, except (``keep_local``)
    this rank's own rows, put back as the live Tensor. Shapes: (B, E) -> (N, E)."""
    if with_grad:
        return distributed.all_gather(x)
    every = distributed.all_gather(x.data)  # (N, E), no gradient
    if not keep_local:
        return Tensor(every)
    B = x.shape[0]
    parts = [Tensor(every[:offset]), x, Tensor(every[offset + B:])]
    return F.concat([p for p in parts if p.shape[0] > 0], axis=0)


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
