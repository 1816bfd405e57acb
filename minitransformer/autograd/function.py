"""``Function``: one node of the computation graph, forward and backward on raw arrays.

An op is a small subclass::

    class Exp(Function):
        def forward(self, x):
            y = xp_of(x).exp(x)
            self.save_for_backward(y)      # d exp(x)/dx = exp(x): keep the output, not x
            return y

        def backward(self, gy):
            (y,) = self.saved
            return gy * y

and a lowercase wrapper ``exp(x) = Exp()(x)`` for users. ``forward`` takes and returns raw
NumPy/CuPy arrays (a tuple for several outputs); ``backward`` takes one upstream gradient per
output and returns one gradient per input (``None`` where an input needs none). Backward is
first-order and must not modify ``gy`` in place: the engine may hand the same array to
several consumers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import backend
from .grad_mode import _State
from .tensor import Tensor, as_tensor

__all__ = ["Function"]


def _describe(xs: tuple[Any, ...]) -> str:
    return ", ".join(f"{type(x).__module__.split('.')[0]}{tuple(x.shape)} {x.dtype}" for x in xs)


class Function:
    """Base class of every differentiable op. See the module docstring."""

    # Filled in by __call__ when the graph is recorded:
    inputs: tuple[Any, ...] | None = None  # the input Tensors
    needs_input_grad: tuple[bool, ...] = ()
    saved: tuple[Any, ...] | None = None  # what backward needs, chosen by the op
    out_meta: tuple[tuple[tuple[int, ...], Any], ...] = ()  # (shape, dtype) of each output
    retained: dict[int, Any] | None = None  # output index -> weakref of a retain_grad() Tensor
    freed: bool = False

    # ---- to be implemented by ops ----
    def forward(self, *xs: Any) -> Any:
        raise NotImplementedError

    def backward(self, *gys: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no backward")

    # ---- helpers for ops ----
    def save_for_backward(self, *arrays: Any) -> None:
        """Keep exactly what backward needs (inputs, outputs or intermediates)."""
        self.saved = arrays

    @property
    def name(self) -> str:
        return type(self).__name__

    # ---- the graph ----
    def __call__(self, *inputs: Any) -> Any:
        tensors = inputs
        for t in inputs:
            if type(t) is not Tensor:  # convert scalars/arrays (rare): like the first Tensor
                ref = next((t for t in inputs if isinstance(t, Tensor)), None)
                tensors = tuple(t if isinstance(t, Tensor) else as_tensor(t, like=ref)
                                for t in inputs)
                break
        xs = tuple([t.data for t in tensors])
        kind = type(xs[0]) if xs else None
        for x in xs:
            if type(x) is not kind:
                devs = [str(backend.device_of(x)) for x in xs]
                raise ValueError(
                    f"{self.name}: inputs are on different devices ({', '.join(devs)}); "
                    "move them with .to(device) first"
                )

        ys = self.forward(*xs)
        multi = type(ys) is tuple
        if not multi:
            ys = (ys,)
        if any(isinstance(y, np.generic) for y in ys):  # NumPy reductions return scalars
            ys = tuple(np.asarray(y) if isinstance(y, np.generic) else y for y in ys)
        if _State.debug:
            self._check_finite(ys, xs, "forward")

        requires_grad = False
        if _State.grad_enabled:
            for t in tensors:
                if t.requires_grad:
                    requires_grad = True
                    break
        outputs = tuple([Tensor._from_op(y, requires_grad) for y in ys])
        if requires_grad:
            self.inputs = tensors
            self.needs_input_grad = tuple([t.requires_grad for t in tensors])
            self.out_meta = tuple([(y.shape, y.dtype) for y in ys])
            for i, out in enumerate(outputs):
                out.creator = self
                out.output_index = i
        else:
            self.saved = None  # nothing will call backward: free what forward kept
        return outputs if multi else outputs[0]

    def release(self) -> None:
        """Drop the inputs and saved arrays once backward has run (unless retain_graph)."""
        self.inputs = None
        self.saved = None
        self.freed = True

    def _check_finite(self, arrays: tuple[Any, ...], inputs: tuple[Any, ...], stage: str) -> None:
        for i, a in enumerate(arrays):
            if a is None or not np.issubdtype(a.dtype, np.inexact):
                continue
            xp = backend.get_array_module(a)
            if not bool(xp.isfinite(a).all()):
                n_nan = int(xp.isnan(a).sum())
                n_inf = int(xp.isinf(a).sum())
                what = "output" if stage == "forward" else "input gradient"
                raise FloatingPointError(
                    f"debug mode: {self.name}.{stage} produced a non-finite {what} #{i} "
                    f"(shape {tuple(a.shape)}: {n_nan} NaN, {n_inf} inf); "
                    f"its inputs were [{_describe(tuple(x for x in inputs if x is not None))}]"
                )

    def __repr__(self) -> str:
        return f"<{self.name}>"
