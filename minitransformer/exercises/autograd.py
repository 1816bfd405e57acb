"""Exercises of notebook 00 (autograd): the chain rule, ``sum_to``, and the backward of
matmul and softmax, written by hand.

Each reference solution is plain NumPy, as a learner would write it; ``expected`` computes
the same gradients with the library's engine (``Tensor.backward`` on float64 tensors) or the
library op named in ``library``, so a check compares the learner with what the engine does.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..autograd import tensor
from ._core import Case, exercise


# --------------------------------------------------------------------------------------------
# The chain rule on a small graph: a tanh neuron and its squared error
# --------------------------------------------------------------------------------------------
def _neuron_cases(rng: np.random.Generator) -> list[Case]:
    def draw(B, D, scale=1.0):
        return (scale * rng.standard_normal((B, D)), rng.standard_normal(D),
                np.array(rng.standard_normal()), 0.5 * rng.standard_normal(B))

    x, w, b, _ = draw(3, 4)
    on_target = np.tanh(x @ w + b)  # y == t exactly: every gradient is 0
    return [
        Case("a batch of 4 examples, 3 inputs", draw(4, 3)),
        Case("the notebook's neuron: one example, one input",
             (np.array([[1.5]]), np.array([0.8]), np.array(-0.3), np.array([0.2]))),
        Case("a batch of one, 5 inputs", draw(1, 5)),
        Case("a saturated tanh (inputs x 10, so 1 - y^2 is tiny)", draw(6, 2, scale=10.0)),
        Case("outputs equal to the targets (all gradients 0)", (x, w, b, on_target)),
    ]


def _library_neuron(x, w, b, t):
    xt, wt, bt = (tensor(a, requires_grad=True) for a in (x, w, b))  # float64 stays float64
    y = (xt @ wt + bt).tanh()  # (B,)
    loss = ((y - tensor(t)) ** 2).sum()
    loss.backward()
    return xt.grad, wt.grad, bt.grad


@exercise(
    "neuron_grads",
    title="the gradients of L = sum_i (tanh(x_i . w + b) - t_i)^2 by the chain rule",
    signature="neuron_grads(x, w, b, t) -> (gx, gw, gb); x (B, D), w (D,), b a 0-d array, "
              "t (B,) -> gx (B, D), gw (D,), gb a 0-d array",
    equation="the chain rule dL/dw = dL/dy * dy/dz * dz/dw (notebook 00, section 1)",
    library="Tensor.backward",
    notebook="00_autograd",
    hint="go right to left: g_y = 2 (y - t), g_z = g_y (1 - y^2) (the derivative of tanh is "
         "1 - tanh^2), then gx = g_z[:, None] * w, and gw, gb SUM g_z x_i and g_z over the "
         "batch, because w and b are used by every example",
    cases=_neuron_cases,
    expected=_library_neuron,
)
def neuron_grads(x, w, b, t):
    z = x @ w + b  # (B,)
    y = np.tanh(z)  # (B,)
    g_y = 2 * (y - t)  # dL/dy, (B,)
    g_z = g_y * (1 - y**2)  # dL/dz = dL/dy * dy/dz, (B,)
    gx = g_z[:, None] * w  # dz/dx = w, (B, D)
    gw = g_z @ x  # sum_i g_z[i] x[i], (D,): w is shared by the batch
    gb = g_z.sum()  # sum_i g_z[i], a 0-d value: b is shared too
    return gx, gw, np.asarray(gb)


# --------------------------------------------------------------------------------------------
# sum_to: undo broadcasting in the backward pass
# --------------------------------------------------------------------------------------------
def _sum_to_cases(rng: np.random.Generator) -> list[Case]:
    def g(*shape):
        return rng.standard_normal(shape)

    return [
        Case("a bias (D,) added to (B, D)", (g(4, 3), (3,))),
        Case("two leading axes: (B, T, D) to (D,)", (g(2, 5, 3), (3,))),
        Case("a size-1 axis kept: (B, T, D) to (B, 1, D)", (g(2, 5, 3), (2, 1, 3))),
        Case("both kinds: (B, T, D) to (T, 1)", (g(2, 5, 3), (5, 1))),
        Case("to a scalar: shape ()", (g(3, 4), ())),
        Case("nothing to sum: the same shape", (g(2, 3), (2, 3))),
    ]


@exercise(
    "sum_to",
    title="sum_to(g, shape): the gradient of a broadcast input, summed back to its shape",
    signature="sum_to(g, shape) -> array of shape `shape`; g (...), shape broadcastable to "
              "g.shape",
    equation="y_ij = x_ij + b_j  =>  dL/db_j = sum_i g_ij (notebook 00, section 4)",
    library="F.sum_to",
    notebook="00_autograd",
    hint="two kinds of axes to sum: the leading axes that broadcasting added (g has more "
         "dimensions than shape), and the axes where shape has size 1 but g does not; sum the "
         "second kind with keepdims=True so the size-1 axes stay",
    cases=_sum_to_cases,
    expected=lambda g, shape: F.sum_to(tensor(g), shape).numpy(),
)
def sum_to(g, shape):
    lead = g.ndim - len(shape)  # axes broadcasting added in front
    g = g.sum(axis=tuple(range(lead)))  # now g.ndim == len(shape)
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=stretched, keepdims=True)  # size-1 axes stay, as in `shape`


# --------------------------------------------------------------------------------------------
# The backward of matmul
# --------------------------------------------------------------------------------------------
def _matmul_cases(rng: np.random.Generator) -> list[Case]:
    def xwg(x_shape, w_shape):
        gy_shape = x_shape[:-1] + w_shape[-1:]
        return (rng.standard_normal(x_shape), rng.standard_normal(w_shape),
                rng.standard_normal(gy_shape))

    return [
        Case("a (3, 4) @ (4, 2) product", xwg((3, 4), (4, 2))),
        Case("a square weight (D, D)", xwg((4, 6), (6, 6))),
        Case("a batch (B, T, D) @ (D, M): w is shared by the batch", xwg((2, 5, 3), (3, 4))),
        Case("a single row", xwg((1, 5), (5, 3))),
        Case("a batch of one, a single token, square weight", xwg((1, 1, 4), (4, 4))),
    ]


def _library_matmul_backward(x, w, gy):
    xt, wt = tensor(x, requires_grad=True), tensor(w, requires_grad=True)
    (xt @ wt).backward(gy)
    return xt.grad, wt.grad


@exercise(
    "matmul_backward",
    title="the backward of y = x @ w: gx = gy w^T and gw = x^T gy (summed over the batch)",
    signature="matmul_backward(x, w, gy) -> (gx, gw); x (..., N, K), w (K, M), "
              "gy (..., N, M) -> gx (..., N, K), gw (K, M)",
    equation="y = x w  =>  gx = gy w^T,  gw = x^T gy",
    library="the backward of F.matmul (Tensor.backward)",
    notebook="00_autograd",
    hint="let the shapes guide you: gx must be (..., N, K), so gy (..., N, M) @ w.T (M, K); "
         "gw must be (K, M), so x^T gy, and with a batch axis every example adds its x^T gy "
         "(w is used by all of them: sum over the batch, as sum_to would)",
    cases=_matmul_cases,
    expected=_library_matmul_backward,
)
def matmul_backward(x, w, gy):
    K, M = w.shape
    gx = gy @ w.T  # (..., N, M) @ (M, K) -> (..., N, K)
    gw = x.reshape(-1, K).T @ gy.reshape(-1, M)  # (K, B*N) @ (B*N, M): sums over the batch
    return gx, gw


# --------------------------------------------------------------------------------------------
# The backward of softmax
# --------------------------------------------------------------------------------------------
def _softmax_backward_cases(rng: np.random.Generator) -> list[Case]:
    x = rng.standard_normal((4, 6))
    return [
        Case("rows of 5 logits", (rng.standard_normal((3, 5)), rng.standard_normal((3, 5)))),
        Case("a batch of rows (2, 4, 6)",
             (rng.standard_normal((2, 4, 6)), rng.standard_normal((2, 4, 6)))),
        Case("a single class (K = 1): softmax is constant, the gradient 0",
             (rng.standard_normal((3, 1)), rng.standard_normal((3, 1)))),
        Case("extreme logits (x 50): nearly one-hot rows",
             (50 * rng.standard_normal((3, 7)), rng.standard_normal((3, 7)))),
        Case("gy constant along each row (what .sum() sends): the gradient is 0",
             (x, np.repeat(rng.standard_normal((4, 1)), 6, axis=1))),
    ]


def _library_softmax_backward(x, gy):
    xt = tensor(x, requires_grad=True)
    F.softmax(xt, axis=-1).backward(gy)
    return xt.grad


@exercise(
    "softmax_backward",
    title="the backward of softmax: gx = y * (gy - sum(gy * y))",
    signature="softmax_backward(x, gy) -> gx; x (..., K) logits, gy (..., K) the upstream "
              "gradient of y = softmax(x) over the last axis -> gx (..., K)",
    equation="dy_i/dx_j = y_i (delta_ij - y_j)  =>  gx = y * (gy - <gy, y>) per row",
    library="the backward of F.softmax (Tensor.backward)",
    notebook="00_autograd",
    hint="compute y = softmax(x) (subtract the row max), then subtract from gy its "
         "y-weighted row sum <gy, y> (not its mean), over the last axis with keepdims=True, "
         "and multiply by y",
    cases=_softmax_backward_cases,
    expected=_library_softmax_backward,
)
def softmax_backward(x, gy):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    y = e / e.sum(axis=-1, keepdims=True)  # (..., K)
    return y * (gy - (gy * y).sum(axis=-1, keepdims=True))  # (..., K)
