"""Numerical gradient checking, the test every differentiable op must pass.

For f: inputs -> output and a *random* upstream gradient ``gy``, the engine's
``dL/dx`` with ``L = sum(gy * f(x))`` is compared with central differences

    dL/dx_i ≈ (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)

in float64. A random ``gy`` matters: with ``gy = 1`` (i.e. checking ``sum(f(x))``) the
gradient of softmax or layer-norm is identically zero, so a wrong backward passes.

Small inputs are checked element by element. For large inputs a *directional* check
compares ``<grad, v>`` with ``(L(x + eps v) - L(x - eps v)) / (2 eps)`` for a few random
directions ``v``, which costs two evaluations per direction instead of two per element.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import backend
from .grad_mode import set_grad_enabled
from .tensor import Tensor

__all__ = ["GradcheckError", "gradcheck"]


class GradcheckError(AssertionError):
    """The analytic and numerical gradients disagree; the message says where and by how much."""


def _outputs(fn: Callable[..., Any], inputs: Sequence[Tensor]) -> list[Tensor]:
    out = fn(*inputs)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    return [o for o in outs if isinstance(o, Tensor)]


def _loss(fn: Callable[..., Any], inputs: Sequence[Tensor], gys: Sequence[Any]) -> float:
    with set_grad_enabled(False):
        outs = _outputs(fn, inputs)
    return float(sum(float((o.data * g).sum()) for o, g in zip(outs, gys)))


def gradcheck(
    fn: Callable[..., Any],
    inputs: Sequence[Any],
    gy: Any = None,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    *,
    seed: int = 0,
    max_elements: int = 4096,
    n_directions: int = 8,
) -> bool:
    """Check ``fn``'s backward against central differences; raise ``GradcheckError`` if not.

    Args:
        fn: takes the inputs (Tensors) and returns a Tensor or a tuple of Tensors.
        inputs: Tensors (or arrays); those with ``requires_grad`` are checked. All floating
            inputs must be float64.
        gy: upstream gradient(s), one per output; default: random normal (seeded by ``seed``).
        eps, rtol, atol: step and tolerances; a gradient passes when
            ``|analytic - numeric| <= atol + rtol * |numeric|`` element-wise.
        max_elements: inputs larger than this are checked along ``n_directions`` random
            directions instead of element by element.

    Returns True on success, so ``assert gradcheck(...)`` reads naturally.
    """
    inputs = [x if isinstance(x, Tensor) else Tensor(x) for x in inputs]
    for i, x in enumerate(inputs):
        if x.dtype.kind == "f" and x.dtype != np.float64:
            raise TypeError(f"gradcheck needs float64 inputs; input #{i} is {x.dtype}")
    checked = [i for i, x in enumerate(inputs) if x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True")

    rng = np.random.default_rng(seed)
    outs = _outputs(fn, inputs)
    if gy is None:
        gys = [backend.to_device(rng.standard_normal(o.shape), o.device) for o in outs]
    else:
        gys = list(gy) if isinstance(gy, (tuple, list)) else [gy]
        gys = [g.data if isinstance(g, Tensor) else g for g in gys]

    # analytic: backprop sum_k <gy_k, out_k> in one pass
    for x in inputs:
        x.grad = None
    outs = [o for o in _outputs(fn, inputs)]
    total = None
    for o, g in zip(outs, gys):
        if not o.requires_grad:
            continue
        term = (o * Tensor(g)).sum()
        total = term if total is None else total + term
    if total is None:
        raise GradcheckError("gradcheck: no output depends on an input that requires grad")
    total.backward()

    for i in checked:
        x = inputs[i]
        analytic = x.grad if x.grad is not None else backend.get_array_module(x.data).zeros_like(
            x.data)
        analytic = backend.to_numpy(analytic)
        original = x.data.copy()
        xp = backend.get_array_module(x.data)

        def loss_at(delta: Any, x: Tensor = x, original: Any = original) -> float:
            x.data = original + delta
            try:
                return _loss(fn, inputs, gys)
            finally:
                x.data = original

        if x.size <= max_elements:
            numeric = np.zeros(x.shape, dtype=np.float64)
            flat = numeric.reshape(-1)
            for k in range(x.size):
                e = np.zeros(x.size)
                e[k] = eps
                e = backend.to_device(e.reshape(x.shape), x.device)
                flat[k] = (loss_at(e) - loss_at(-e)) / (2 * eps)
            err = np.abs(analytic - numeric)
            bound = atol + rtol * np.abs(numeric)
            if not np.all(err <= bound):
                k = int(np.argmax(err - bound))
                idx = np.unravel_index(k, x.shape)
                raise GradcheckError(
                    f"gradcheck failed for input #{i} (shape {x.shape}): worst element {idx}: "
                    f"analytic {analytic[idx]:.10g} vs numeric {numeric[idx]:.10g} "
                    f"(|diff| {err[idx]:.3g} > atol {atol:g} + rtol {rtol:g} * |numeric|); "
                    f"{int((err > bound).sum())} of {x.size} elements differ.\n"
                    f"analytic:\n{np.array2string(analytic, precision=6)}\n"
                    f"numeric:\n{np.array2string(numeric, precision=6)}"
                )
        else:
            for d in range(n_directions):
                v = rng.standard_normal(x.shape)
                v /= np.linalg.norm(v)
                dv = backend.to_device(v * eps, x.device)
                numeric_dir = (loss_at(dv) - loss_at(-dv)) / (2 * eps)
                analytic_dir = float((analytic * v).sum())
                if not abs(analytic_dir - numeric_dir) <= atol + rtol * abs(numeric_dir):
                    raise GradcheckError(
                        f"gradcheck failed for input #{i} (shape {x.shape}) along random "
                        f"direction {d}: analytic <grad, v> = {analytic_dir:.10g} vs numeric "
                        f"{numeric_dir:.10g} (|diff| {abs(analytic_dir - numeric_dir):.3g})"
                    )
        del xp
    return True
