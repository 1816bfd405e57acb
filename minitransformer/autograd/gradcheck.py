"""Numerical gradient checking, the test every differentiable op must pass.

For f: inputs -> outputs and *random* upstream gradients ``gy``, the engine's gradient of

    L(x) = sum_k <gy_k, f_k(x)>

is compared with central differences in float64:

    dL/dx_i ≈ (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)

A random ``gy`` matters: with ``gy = 1`` (i.e. checking ``sum(f(x))``) the gradient of softmax
is identically zero (its outputs always sum to 1), so a wrong backward that also returns
zero for a constant ``gy`` passes. DeZero's and many tutorials' checks fall into this trap.

Small inputs are checked element by element. For large inputs a *directional* check
compares ``<grad, v>`` with ``(L(x + eps v) - L(x - eps v)) / (2 eps)`` for a few random unit
directions ``v``: two evaluations per direction instead of two per element. The idea and
the failure report follow Chainer's ``gradient_check.check_backward``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import backend
from .grad_mode import no_grad
from .tensor import Tensor, _is_array

__all__ = ["GradcheckError", "gradcheck"]


class GradcheckError(AssertionError):
    """The analytic and numerical gradients disagree; the message says where and by how much."""


def _float_outputs(fn: Callable[..., Any], inputs: Sequence[Any]) -> list[Tensor]:
    out = fn(*inputs)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    return [o for o in outs if isinstance(o, Tensor) and o.dtype.kind == "f"]


def _loss(fn: Callable[..., Any], inputs: Sequence[Any], gys: Sequence[Any]) -> float:
    """L = sum_k <gy_k, f_k(inputs)>, without recording a graph."""
    with no_grad():
        outs = _float_outputs(fn, inputs)
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
    allow_unused: bool = False,
) -> bool:
    """Check ``fn``'s backward against central differences; raise ``GradcheckError`` if not.

    $\\frac{\\partial L}{\\partial x_i} \\approx \\frac{L(x + \\epsilon e_i) - L(x - \\epsilon
    e_i)}{2\\epsilon}$ with $L = \\sum_k \\langle gy_k, f_k(x) \\rangle$.

    Args:
        fn: takes the inputs and returns a Tensor or a tuple of Tensors (floating outputs
            are checked; integer outputs are ignored).
        inputs: Tensors, arrays or other arguments. Tensors with ``requires_grad`` are
            checked; they are copied first, so the caller's tensors and ``.grad`` are not
            touched. Floating tensors must be float64.
        gy: upstream gradient(s), one per floating output; default: standard normal, drawn
            from ``numpy.random.default_rng(seed)``. Never pass ones to a normalising op.
        eps, rtol, atol: step and tolerances; a gradient passes when
            ``|analytic - numeric| <= atol + rtol * |numeric|`` element-wise.
        max_elements: inputs with more elements are checked along ``n_directions`` random
            directions instead of element by element.
        allow_unused: by default an input that requires grad but receives no gradient is an
            error: it usually means ``fn`` ignores its arguments (say, a closure over module
            parameters), and then both gradients are zero and the check would pass vacuously.

    Returns True on success, so ``assert gradcheck(...)`` reads naturally.
    """
    args: list[Any] = []
    for i, x in enumerate(inputs):
        if _is_array(x):
            x = Tensor(x)
        if isinstance(x, Tensor):
            if x.dtype.kind == "f" and x.dtype != np.float64:
                raise TypeError(f"gradcheck needs float64 inputs; input #{i} is {x.dtype}")
            # Our own leaf, so perturbing it in place below cannot touch the caller's data or
            # .grad. order="K" keeps the memory layout: a transposed input stays transposed.
            x = Tensor(x.data.copy(order="K"), requires_grad=x.requires_grad)
        args.append(x)
    checked = [i for i, x in enumerate(args) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True")

    # ---- analytic: one backward per output, summed on the leaves
    rng = np.random.default_rng(seed)
    outs = _float_outputs(fn, args)
    if gy is None:
        gys = [backend.to_device(rng.standard_normal(o.shape), o.device) for o in outs]
    else:
        gys = list(gy) if isinstance(gy, (tuple, list)) else [gy]
        gys = [backend.to_device(g.data if isinstance(g, Tensor) else g, o.device)
               for g, o in zip(gys, outs)]
        if len(gys) != len(outs):
            raise ValueError(f"gradcheck: {len(gys)} upstream gradients for {len(outs)} outputs")
    if not any(o.requires_grad for o in outs):
        raise GradcheckError("gradcheck: no output depends on an input that requires grad")
    for o, g in zip(outs, gys):
        if o.requires_grad:
            o.backward(g, retain_graph=True)

    # ---- numeric, input by input
    for i in checked:
        x = args[i]
        xp = backend.get_array_module(x.data)
        if x.grad is None and not allow_unused:
            raise GradcheckError(
                f"gradcheck: input #{i} (shape {tuple(x.shape)}) requires grad but no gradient "
                "reached it: fn does not use this argument (gradcheck passes copies of the "
                "inputs, so fn must compute from its arguments). Pass allow_unused=True if "
                "that is intended."
            )
        analytic = backend.to_numpy(x.grad if x.grad is not None else xp.zeros_like(x.data))
        if x.size <= max_elements:
            _check_elementwise(fn, args, gys, i, analytic, eps, rtol, atol)
        else:
            _check_directions(fn, args, gys, i, analytic, eps, rtol, atol, rng, n_directions)
    return True


def _check_elementwise(fn: Callable[..., Any], args: list[Any], gys: list[Any], i: int,
                       analytic: np.ndarray, eps: float, rtol: float, atol: float) -> None:
    x = args[i]
    data = x.data  # our own copy (see gradcheck): perturbed in place, one element at a time
    numeric = np.zeros(x.shape, dtype=np.float64)
    for idx in np.ndindex(*x.shape):  # index tuples work whatever the strides
        original = float(data[idx])
        plus, minus = original + eps, original - eps
        data[idx] = plus
        loss_plus = _loss(fn, args, gys)
        data[idx] = minus
        loss_minus = _loss(fn, args, gys)
        data[idx] = original
        numeric[idx] = (loss_plus - loss_minus) / (plus - minus)  # the step actually taken

    err = np.abs(analytic - numeric)
    bound = atol + rtol * np.abs(numeric)
    if np.all(err <= bound):
        return
    worst = tuple(int(k) for k in np.unravel_index(int(np.argmax(err - bound)), x.shape))
    raise GradcheckError(
        f"gradcheck failed for input #{i} (shape {tuple(x.shape)}): "
        f"{int((err > bound).sum())} of {x.size} elements differ; worst element {worst}: "
        f"analytic {analytic[worst]:.10g} vs numeric {numeric[worst]:.10g} "
        f"(|diff| {err[worst]:.3g} > atol {atol:g} + rtol {rtol:g} * |numeric|).\n"
        f"analytic:\n{np.array2string(analytic, precision=6)}\n"
        f"numeric:\n{np.array2string(numeric, precision=6)}"
    )


def _check_directions(fn: Callable[..., Any], args: list[Any], gys: list[Any], i: int,
                      analytic: np.ndarray, eps: float, rtol: float, atol: float,
                      rng: np.random.Generator, n_directions: int) -> None:
    x = args[i]
    original = x.data
    results = []
    for _ in range(n_directions):
        v = rng.standard_normal(x.shape)
        v /= np.linalg.norm(v)  # a unit direction
        step = backend.to_device(v * eps, x.device)
        x.data = original + step
        loss_plus = _loss(fn, args, gys)
        x.data = original - step
        loss_minus = _loss(fn, args, gys)
        x.data = original
        numeric = (loss_plus - loss_minus) / (2 * eps)
        results.append((float((analytic * v).sum()), numeric))
    errors = [abs(a - n) - (atol + rtol * abs(n)) for a, n in results]
    d = int(np.argmax(errors))
    if errors[d] > 0:
        a, n = results[d]
        table = "\n".join(f"  direction {k}: analytic {a_:.10g} vs numeric {n_:.10g}"
                          for k, (a_, n_) in enumerate(results))
        raise GradcheckError(
            f"gradcheck failed for input #{i} (shape {tuple(x.shape)}, {x.size} elements, "
            f"checked along {n_directions} random unit directions v): worst is direction {d}: "
            f"analytic <grad, v> = {a:.10g} vs numeric {n:.10g} (|diff| {abs(a - n):.3g} > "
            f"atol {atol:g} + rtol {rtol:g} * |numeric|).\n{table}"
        )
