"""Stochastic gradient descent with momentum and coupled (L2) weight decay, as torch's SGD."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..autograd import Tensor
from .optimizer import Optimizer, _check_non_negative

__all__ = ["SGD"]


class SGD(Optimizer):
    """$g \\leftarrow \\nabla + \\lambda\\theta;\\ b \\leftarrow \\mu b + g;\\
    \\theta \\leftarrow \\theta - \\eta\\, b$ (torch.optim.SGD, dampening 0).

    The weight decay is *coupled* (added to the gradient, so momentum carries it), as in
    torch's SGD; use ``AdamW`` for decoupled decay. The momentum buffer starts as the first
    gradient (not zero), as torch. With ``nesterov=True`` the step uses $g + \\mu b$.

    Args:
        params: Tensors, or groups ``{"params": [...], "lr": ..., "lr_mult": ..., ...}``.
        lr: learning rate $\\eta$. momentum: $\\mu$. weight_decay: $\\lambda$.

    Shapes: each state buffer has the shape, dtype and device of its parameter.
    """

    def __init__(self, params: Iterable[Any], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        _check_non_negative("SGD", lr=lr, momentum=momentum, weight_decay=weight_decay)
        if nesterov and momentum <= 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "nesterov": nesterov})

    def _update(self, p: Tensor, grad: Any, state: dict[str, Any], group: dict[str, Any],
                lr: float, wd: float) -> None:
        g = grad + wd * p.data if wd != 0 else grad  # coupled L2: decay rides in the gradient
        mu = float(group["momentum"])
        if mu != 0:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = g.astype(p.dtype, copy=True)
            else:
                buf = state["momentum_buffer"]
                buf *= mu
                buf += g
            buf = state["momentum_buffer"]
            g = g + mu * buf if group["nesterov"] else buf
        p.data -= (lr * g).astype(p.dtype, copy=False)
