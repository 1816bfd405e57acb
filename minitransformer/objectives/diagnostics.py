"""Collapse diagnostics for self-distillation: numbers a training loop can log.

DINO collapses in two ways (dino#32, dinov2#272, dinov2#407):
- *uniform*: the teacher says "every prototype equally" — teacher entropy near $\\log K$ and
  the loss stuck at $\\log K$ (8.3178 for K = 4096);
- *one-hot*: every image goes to the same prototype — the mean teacher distribution is far
  from uniform (``kl_to_uniform`` near $\\log K$) and the features stop varying across the
  batch (``feature_std`` near 0).
A healthy run has a low per-image entropy *and* a mean distribution close to uniform.

All take Tensors, arrays or lists of per-crop chunks and return a float64 scalar on their
device, without reading it on the host: a NumPy float64 (a Python float) on the CPU, a 0-d
CuPy array on a GPU, so that a training loop can log them every step and read them together
once per logging interval (``float(x)`` reads one).

**Over W ranks** (``minitransformer.distributed``, when ``is_distributed()``) each rank passes
its shard and every rank gets the value of the *global* batch, as one process computes it on
the whole batch: all three are statistics of the batch, and the mean of the shards' values is
not the global value (the KL of the mean distribution and the spread are not means over
samples). The sums they need are all-reduced on the device (no host read): the entropy sum
and the row count; the column sums of the distributions and the count, as DINO's center
(``TeacherCentering.update``); for the spread, the column sums and count, then the sums of
squared deviations from the global mean (two passes, as ``x.std``). So every rank must call
them, in the same order. In one process the code is the plain single-batch one, unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import backend, distributed
from ._utils import raw

__all__ = ["feature_std", "kl_to_uniform", "teacher_entropy"]


def _rows(x: Any, fn: str) -> Any:
    """(n, K) rows from a Tensor, an array or a list of chunks."""
    if isinstance(x, (list, tuple)):
        chunks = [raw(c) for c in x]
        if not chunks:
            raise ValueError(f"{fn}: empty list")
        xp = backend.get_array_module(*chunks)
        a = xp.concatenate([c.reshape(-1, c.shape[-1]) for c in chunks], axis=0)
    else:
        a = raw(x)
        if a.ndim < 1:
            raise ValueError(f"{fn}: needs (..., K) input, got a scalar")
        a = a.reshape(-1, a.shape[-1])
    if a.shape[0] == 0:
        raise ValueError(f"{fn}: no rows")
    return a.astype(np.float64)


def _entropy(p: Any) -> Any:
    """$-\\sum_k p_k \\log p_k$ per row, with 0 log 0 = 0."""
    xp = backend.get_array_module(p)
    logp = xp.log(xp.where(p > 0, p, 1.0))
    return -(p * logp).sum(-1)


def _global_sums(sums: Any, n: int) -> tuple[Any, Any]:
    """Over W ranks: (the sums of every rank added, the global row count), from this rank's
    ``sums`` (m,) and its ``n`` rows; one device all-reduce of m + 1 values."""
    xp = backend.get_array_module(sums)
    local = xp.concatenate([sums, xp.full((1,), n, dtype=sums.dtype)])  # (m + 1,)
    total = distributed.all_reduce(local, check=False)  # (m + 1,): sums, row count
    return total[:-1], total[-1]


def teacher_entropy(probs: Any) -> Any:
    """$\\frac1n \\sum_i H(t_i)$, $H(t) = -\\sum_k t_k \\log t_k$ (nats): the mean entropy of
    the teacher's per-image distributions. $\\log K$ means uniform collapse (or sharpening too
    weak to matter); 0 means one-hot outputs. Over W ranks: the mean over the rows of every
    rank ($\\sum_r \\sum_{i \\in r} H(t_i) / \\sum_r n_r$).
    Shapes: (..., K) -> () float64, on the device."""
    p = _rows(probs, "teacher_entropy")
    if distributed.is_distributed():
        total, n = _global_sums(_entropy(p).sum(0, keepdims=True), p.shape[0])  # (1,), ()
        return total[0] / n
    return _entropy(p).mean()


def kl_to_uniform(probs: Any) -> Any:
    """$\\mathrm{KL}(\\bar t \\| U) = \\log K - H(\\bar t)$, $\\bar t = \\frac1n \\sum_i t_i$:
    how unevenly the batch uses the prototypes. 0 when every prototype is used equally on
    average; $\\log K$ when every image picks the same one (one-hot collapse). Over W ranks
    $\\bar t$ is the mean over the rows of every rank (the global batch).
    Shapes: (..., K) -> () float64, on the device."""
    p = _rows(probs, "kl_to_uniform")
    K = p.shape[-1]
    if distributed.is_distributed():
        total, n = _global_sums(p.sum(0), p.shape[0])  # (K,), ()
        mean = total / n  # (K,): the global batch's mean distribution
    else:
        mean = p.mean(0)  # (K,)
    return math.log(K) - _entropy(mean)


def feature_std(features: Any, normalize: bool = False) -> Any:
    """$\\frac1D \\sum_d \\mathrm{std}_i(x_{id})$: the spread of the features across the batch,
    per dimension (population std), averaged over dimensions. Near 0 means every image
    maps to the same point (collapse). With ``normalize`` the rows are L2-normalised first
    (SimSiam's diagnostic): then about $1/\\sqrt D$ for well-spread features. Over W ranks
    the std is over the rows of every rank: the global mean $\\mu_d$ from all-reduced column
    sums and count, then $\\sqrt{\\sum_r \\sum_{i \\in r} (x_{id} - \\mu_d)^2 / n}$ from
    all-reduced sums of squared deviations (two device all-reduces; no cancellation).
    Shapes: (..., D) -> () float64, on the device."""
    x = _rows(features, "feature_std")
    xp = backend.get_array_module(x)
    if normalize:
        x = x / xp.maximum(xp.sqrt((x * x).sum(-1, keepdims=True)), 1e-12)
    if distributed.is_distributed():
        total, n = _global_sums(x.sum(0), x.shape[0])  # (D,), ()
        dev = x - total / n  # (n_r, D): deviations from the global mean
        squares = distributed.all_reduce((dev * dev).sum(0), check=False)  # (D,)
        return xp.sqrt(squares / n).mean()
    return x.std(axis=0).mean()
