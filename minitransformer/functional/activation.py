"""Activations and the softmax family.

Each composite is first written as a readable composition of primitives (``*_composed``:
the engine derives its gradient). The public function may use a fused Function with a
hand-written backward instead; ``tests/functional`` proves the two agree.
"""

from __future__ import annotations

import math
from typing import Any

from ..autograd import Tensor
from . import elementwise as E
from . import reduction as R
from . import shape as S

__all__ = [
    "gelu", "gelu_composed", "log_softmax", "log_softmax_composed", "logsumexp",
    "logsumexp_composed", "quick_gelu", "relu", "softmax", "softmax_composed",
]


def relu(x: Any) -> Tensor:
    """$\\mathrm{relu}(x) = \\max(x, 0)$ (gradient 0 at 0, as in PyTorch)."""
    xt = x if isinstance(x, Tensor) else Tensor(x)
    return E.where(xt.data > 0, xt, 0.0)


def gelu_composed(x: Any, approximate: str = "none") -> Tensor:
    """GELU written out.

    ``"none"``: $x \\Phi(x) = \\tfrac{x}{2}(1 + \\mathrm{erf}(x/\\sqrt2))$ (ViT, DINO, timm).
    ``"tanh"``: $\\tfrac{x}{2}(1 + \\tanh(\\sqrt{2/\\pi}(x + 0.044715 x^3)))$ (BERT)."""
    if approximate == "none":
        return 0.5 * x * (1.0 + E.erf(x * (1.0 / math.sqrt(2.0))))
    if approximate == "tanh":
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)
        return 0.5 * x * (1.0 + E.tanh(inner))
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def gelu(x: Any, approximate: str = "none") -> Tensor:
    """GELU, exact (erf) by default or with the tanh approximation. Shapes: any."""
    return gelu_composed(x, approximate)


def quick_gelu(x: Any) -> Tensor:
    """$x \\, \\sigma(1.702 x)$, the GELU approximation OpenAI CLIP trained with."""
    return x * E.sigmoid(1.702 * x)


def logsumexp_composed(x: Any, axis: int = -1, keepdims: bool = False) -> Tensor:
    """$\\log \\sum_i e^{x_i} = m + \\log \\sum_i e^{x_i - m}$ with $m = \\max_i x_i$ (no
    overflow). The shift m is a constant for the gradient, so it is detached."""
    xt = x if isinstance(x, Tensor) else Tensor(x)
    m = R.max(xt, axis=axis, keepdims=True).detach()
    out = E.log(R.sum(E.exp(xt - m), axis=axis, keepdims=True)) + m
    return out if keepdims else S.squeeze(out, axis)


def logsumexp(x: Any, axis: int = -1, keepdims: bool = False) -> Tensor:
    """$\\log \\sum_i e^{x_i}$ along ``axis``, computed stably."""
    return logsumexp_composed(x, axis, keepdims)


def softmax_composed(x: Any, axis: int = -1) -> Tensor:
    """$\\mathrm{softmax}(x)_i = e^{x_i - m} / \\sum_j e^{x_j - m}$ with $m = \\max_j x_j$."""
    xt = x if isinstance(x, Tensor) else Tensor(x)
    z = E.exp(xt - R.max(xt, axis=axis, keepdims=True).detach())
    return z / R.sum(z, axis=axis, keepdims=True)


def softmax(x: Any, axis: int = -1) -> Tensor:
    """$\\mathrm{softmax}(x)_i = e^{x_i} / \\sum_j e^{x_j}$ along ``axis``. Shapes: any."""
    return softmax_composed(x, axis)


def log_softmax_composed(x: Any, axis: int = -1) -> Tensor:
    """$\\log \\mathrm{softmax}(x)_i = x_i - \\mathrm{logsumexp}(x)$."""
    return x - logsumexp_composed(x, axis=axis, keepdims=True)


def log_softmax(x: Any, axis: int = -1) -> Tensor:
    """$x_i - \\log \\sum_j e^{x_j}$ along ``axis``, stable for large |x|. Shapes: any."""
    return log_softmax_composed(x, axis)
