"""Matrix products: batched, broadcasting ``matmul`` and the affine map ``linear``."""

from __future__ import annotations

from typing import Any

from ..autograd import Function, Tensor
from ..backend import get_array_module
from .reduction import sum_to_shape

__all__ = ["linear", "matmul"]


def _matmul(a: Any, b: Any) -> Any:
    """``a @ b`` for raw arrays, with stacked-times-matrix products done as ONE 2-D GEMM.

    NumPy cannot hand a broadcast (stride-0) batch to BLAS, so ``(B, T, D) @ (D, E)`` falls
    back to a naive loop that is ~25x slower; ``(B*T, D) @ (D, E)`` is the same product."""
    if b.ndim == 2 and a.ndim > 2:
        return (a.reshape(-1, a.shape[-1]) @ b).reshape(a.shape[:-1] + (b.shape[-1],))
    return a @ b


class MatMul(Function):
    """``a @ b`` with NumPy semantics: 1-D operands are promoted, leading axes broadcast."""

    def forward(self, a: Any, b: Any) -> Any:
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("matmul: operands must have at least one dimension (use mul)")
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ValueError(
                f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} are not aligned "
                f"({a.shape[-1]} != {b.shape[-2 if b.ndim > 1 else 0]})"
            )
        self.save_for_backward(a, b)
        try:
            return a @ b
        except ValueError:  # the batch axes do not broadcast
            raise ValueError(
                f"matmul: batch axes of shapes {tuple(a.shape)} and {tuple(b.shape)} do not "
                "broadcast"
            ) from None

    def backward(self, gy: Any) -> Any:
        # y = a b  =>  ga = gy b^T,  gb = a^T gy, summed over broadcast batch axes
        a, b = self.saved
        xp = get_array_module(gy)
        a2 = a[None, :] if a.ndim == 1 else a  # (K,) -> (1, K)
        b2 = b[:, None] if b.ndim == 1 else b  # (K,) -> (K, 1)
        g2 = gy  # restore the axes the 1-D promotion dropped: b's column first, then a's row
        if b.ndim == 1:
            g2 = xp.expand_dims(g2, -1)  # (..., n) -> (..., n, 1); () -> (1,) for vec @ vec
        if a.ndim == 1:
            g2 = xp.expand_dims(g2, -2)  # (..., m) -> (..., 1, m)
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = _matmul(g2, xp.swapaxes(b2, -1, -2))
            ga = sum_to_shape(ga, a2.shape).reshape(a.shape)
        if self.needs_input_grad[1]:
            if b2.ndim == 2 and a2.ndim > 2:  # a shared matrix: one GEMM over all rows
                gb = a2.reshape(-1, a2.shape[-1]).T @ g2.reshape(-1, g2.shape[-1])
            else:
                gb = sum_to_shape(xp.swapaxes(a2, -1, -2) @ g2, b2.shape)
            gb = gb.reshape(b.shape)
        return ga, gb


def matmul(a: Any, b: Any) -> Tensor:
    """$Y = A B$, batched over leading axes with broadcasting.

    Shapes: (..., n, k) @ (..., k, m) -> (..., n, m)."""
    return MatMul()(a, b)


class Linear(Function):
    """$y = x W + b$ as one node: the projection used by every layer (fewer nodes, and the
    weight gradient is one GEMM over all leading axes at once)."""

    def forward(self, x: Any, weight: Any, bias: Any = None) -> Any:
        if weight.ndim != 2 or x.shape[-1] != weight.shape[0]:
            raise ValueError(
                f"linear: input of shape {tuple(x.shape)} does not match weight of shape "
                f"{tuple(weight.shape)} (expected weight (in={x.shape[-1]}, out))"
            )
        if bias is not None and bias.shape != (weight.shape[1],):
            raise ValueError(
                f"linear: bias of shape {tuple(bias.shape)} does not match weight "
                f"{tuple(weight.shape)} (expected ({weight.shape[1]},))"
            )
        self.save_for_backward(x, weight)
        y = _matmul(x, weight)
        if bias is not None:
            if bias.dtype == y.dtype:
                y += bias  # in place: no second (..., out) array
            else:
                y = y + bias  # NumPy's promotion, as every op (a float64 bias gives float64)
        return y

    def backward(self, gy: Any) -> Any:
        # gx = gy W^T ; gW = sum over rows of x^T gy ; gb = sum over rows of gy
        x, weight = self.saved
        need = self.needs_input_grad
        gx = _matmul(gy, weight.T) if need[0] else None
        gw = gb = None
        if need[1]:
            x2 = x.reshape(-1, x.shape[-1])  # (rows, in)
            gw = x2.T @ gy.reshape(-1, gy.shape[-1])  # (in, out)
        if len(need) > 2 and need[2]:
            gb = gy.reshape(-1, gy.shape[-1]).sum(axis=0)
        return (gx, gw, gb) if len(need) > 2 else (gx, gw)


def linear(x: Any, weight: Any, bias: Any = None) -> Tensor:
    """$y = x W + b$, with ``weight`` of shape (in, out) as in $Q = X W_Q$.

    Shapes: x (..., in), weight (in, out), bias (out,) -> (..., out)."""
    if bias is None:
        return Linear()(x, weight)
    return Linear()(x, weight, bias)
