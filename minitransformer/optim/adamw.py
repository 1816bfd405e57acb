"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter), as ``torch.optim.AdamW``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import backend
from ..autograd import Tensor
from .optimizer import Optimizer, _check_non_negative

__all__ = ["AdamW"]


class AdamW(Optimizer):
    """$\\theta \\leftarrow \\theta(1-\\eta\\lambda) - \\eta\\,
    \\frac{m_t/(1-\\beta_1^t)}{\\sqrt{v_t/(1-\\beta_2^t)}+\\epsilon}$, with
    $m_t = \\beta_1 m + (1-\\beta_1)g$ and $v_t = \\beta_2 v + (1-\\beta_2)g^2$.

    As torch.optim.AdamW: the decay multiplies the weights before the Adam step (it is not
    added to the gradient, so the moments never see it); ``t`` counts the steps *this
    parameter* has taken, so a parameter skipped (``grad`` None, e.g. DINO's frozen last
    layer) neither moves, nor decays, nor advances its bias correction. ``eps`` is added after
    the bias-corrected square root, as torch.

    Args:
        params_or_groups: Tensors, or groups ``{"params": [...], "lr": ..., "weight_decay": ...,
            "lr_mult": ..., "wd_mult": ...}`` (see ``param_groups``).
        lr: $\\eta$. betas: $(\\beta_1, \\beta_2)$. eps: $\\epsilon$. weight_decay: $\\lambda$.

    Shapes: ``exp_avg`` ($m$) and ``exp_avg_sq`` ($v$) have the shape, dtype and device of
    their parameter.
    """

    def __init__(self, params_or_groups: Iterable[Any], lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        _check_non_negative("AdamW", lr=lr, eps=eps, weight_decay=weight_decay)
        b1, b2 = betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"AdamW: betas must be in [0, 1), got {betas}")
        super().__init__(params_or_groups, {"lr": lr, "betas": (float(b1), float(b2)),
                                            "eps": eps, "weight_decay": weight_decay})

    def _update(self, p: Tensor, grad: Any, state: dict[str, Any], group: dict[str, Any],
                lr: float, wd: float) -> None:
        xp = backend.get_array_module(p.data)
        b1, b2 = group["betas"]
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        t = state["step"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        g = grad.astype(p.dtype, copy=False)
        if wd != 0:
            p.data *= 1.0 - lr * wd  # decoupled decay: theta <- theta (1 - lr wd)
        m *= b1
        m += (1.0 - b1) * g  # m_t = b1 m + (1 - b1) g
        v *= b2
        v += (1.0 - b2) * (g * g)  # v_t = b2 v + (1 - b2) g^2
        bias1 = 1.0 - b1**t
        bias2 = 1.0 - b2**t
        denom = xp.sqrt(v) / (bias2**0.5) + float(group["eps"])  # sqrt(v_hat) + eps
        p.data -= ((lr / bias1) * m / denom).astype(p.dtype, copy=False)
