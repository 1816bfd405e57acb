"""``Linear`` (the affine map every projection uses) and ``Embedding`` (a lookup table)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from ..autograd import Tensor, zeros
from . import init
from .module import Module, Parameter

__all__ = ["Embedding", "Linear"]


class Linear(Module):
    """$y = x W + b$, with ``weight`` stored (in, out) as in the seed's $Q = X W_Q$.

    Orientation: torch and timm store ``nn.Linear.weight`` as (out, in) and compute
    $x W^T + b$; ours is the transpose, so a torch checkpoint's weight loads as ``w.T``.
    Init as timm's ``VisionTransformer._init_weights``: ``trunc_normal(std=0.02)`` weight, zero
    bias.

    Shapes: x (..., in) -> y (..., out); weight (in, out), bias (out,).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(zeros(in_features, out_features))
        init.trunc_normal_(self.weight, std=0.02)
        self.bias = Parameter(zeros(out_features)) if bias else None

    def forward(self, x: Any) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """$y_{b,t} = W[\\mathrm{ids}_{b,t}]$: row lookup; the gradient scatters back into W
    (repeated ids accumulate). Init ``normal(std=0.02)`` as CLIP's ``token_embedding``.

    Shapes: ids (...) integer -> y (..., dim); weight (num, dim).

    The ids are checked to lie in [0, num) (a ValueError naming the range found): on the host
    always, on a GPU (one device-to-host read per call) unless inside
    ``F.use_data_checks(False)``, which a training loop uses once its data is validated.
    """

    def __init__(self, num_embeddings: int, dim: int):
        super().__init__()
        self.num_embeddings, self.dim = num_embeddings, dim
        self.weight = Parameter(zeros(num_embeddings, dim))
        init.normal_(self.weight, std=0.02)

    def forward(self, ids: Any) -> Tensor:
        idx = ids.data if isinstance(ids, Tensor) else ids
        if not hasattr(idx, "dtype"):
            idx = np.asarray(idx)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"Embedding: ids must be integers, got dtype {idx.dtype}")
        if idx.size and F.check_values(idx):  # free on the host; one read on a GPU
            if bool(((idx < 0) | (idx >= self.num_embeddings)).any()):
                raise ValueError(
                    f"Embedding: ids must be in [0, {self.num_embeddings}), got values in "
                    f"[{int(idx.min())}, {int(idx.max())}]"
                )
        with F.use_data_checks(False):  # checked just above: getitem need not read them again
            return F.getitem(self.weight, idx)  # (..., dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.dim}"
