"""``Function``: one node of the computation graph, forward and backward on raw arrays.

An op is a small subclass::

    class Exp(Function):
        def forward(self, x):
            y = get_array_module(x).exp(x)
            self.save_for_backward(y)      # d exp(x)/dx = exp(x): keep the output, not x
            return y

        def backward(self, gy):
            (y,) = self.saved
            return gy * y

and a lowercase wrapper ``exp(x) = Exp()(x)`` for users. ``forward`` takes and returns raw
NumPy/CuPy arrays (a tuple for several outputs); ``backward`` takes one upstream gradient per
output and returns one gradient per input (``None`` where an input needs none; check
``self.needs_input_grad`` to skip work). Backward is first-order and must not modify ``gy`` in
place: the engine may hand the same array to several consumers.

``Function.__call__`` runs once per op, so it is the engine's hot path: it is kept short and
does only what every op needs (wrap, check devices, forward, record the graph).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from .. import backend
from .grad_mode import _State
from .tensor import Tensor, as_tensor

__all__ = ["Function"]

# Recording order of graph nodes: an op is recorded after the ops that made its inputs, so
# the engine runs backward from the highest number down (see engine.py).
_sequence = itertools.count()


def _describe(xs: tuple[Any, ...] | list[Any]) -> str:
    return ", ".join(f"{type(x).__module__.split('.')[0]}{tuple(x.shape)} {x.dtype}" for x in xs)


def _wrap_inputs(inputs: tuple[Any, ...]) -> tuple[Tensor, ...]:
    """Python scalars and raw arrays among an op's inputs become constant Tensors; scalars take
    the dtype and device of the first Tensor, so ``x * 0.5`` stays float32 on x's device."""
    like = next((t for t in inputs if isinstance(t, Tensor)), None)
    return tuple([as_tensor(t, like=like) for t in inputs])


def _device_error(name: str, xs: list[Any]) -> None:
    """Raise if the arrays live on different devices (called only when their types differ)."""
    devices = [str(backend.device_of(x)) for x in xs]
    if len(set(devices)) > 1:
        raise ValueError(
            f"{name}: inputs are on different devices ({', '.join(devices)}); "
            "move them with .to(device) first"
        )


class Function:
    """Base class of every differentiable op. See the module docstring."""

    # Filled in by __call__ when the graph is recorded (class defaults keep __call__ short):
    inputs: tuple[Tensor, ...] | None = None  # the input Tensors
    needs_input_grad: tuple[bool, ...] = ()  # per input: does it want a gradient?
    saved: tuple[Any, ...] | None = None  # what backward needs, chosen by the op
    seq: int = -1  # recording order (see engine.py)
    n_outputs: int = 1
    out_meta: tuple[tuple[tuple[int, ...], Any], ...] = ()  # (shape, dtype) per output, if >1
    retained: dict[int, Any] | None = None  # output index -> weakref of a retain_grad() Tensor
    # False while forward runs if no graph will be recorded (no_grad, or no input wants a
    # gradient): forward may then skip work that only backward needs
    recording: bool = True

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
        # One plain loop gathers the arrays and the flags (a comprehension would cost a
        # function call each on Python < 3.12).
        xs, needs = [], []
        for t in inputs:
            if not isinstance(t, Tensor):  # a scalar or raw array among the inputs (rare)
                return self(*_wrap_inputs(inputs))
            xs.append(t.data)
            needs.append(t.requires_grad)
        if len(xs) > 1:
            kind = type(xs[0])
            for x in xs:
                if type(x) is not kind:  # cheap test first; the precise one only on a mismatch
                    _device_error(self.name, xs)

        record = _State.grad_enabled and True in needs
        if not record:
            self.recording = False
        ys = self.forward(*xs)
        multi = type(ys) is tuple
        if multi:
            ys = tuple([np.asarray(y) if isinstance(y, np.generic) else y for y in ys])
        elif isinstance(ys, np.generic):  # NumPy ops on 0-d arrays return scalars
            ys = np.asarray(ys)
        if _State.debug:
            self._check_finite(ys if multi else (ys,), xs, "forward")

        # Record the graph only if some input wants a gradient (and grad mode is on).
        creator = None
        if record:
            creator = self
            self.seq = next(_sequence)
            self.inputs = inputs
            self.needs_input_grad = tuple(needs)
            if multi:
                self.n_outputs = len(ys)
                self.out_meta = tuple([(y.shape, y.dtype) for y in ys])
        if creator is None:
            self.saved = None  # nothing will call backward: free what forward kept
        requires_grad = creator is not None
        if multi:
            return tuple([Tensor._from_op(y, requires_grad, creator, i)
                          for i, y in enumerate(ys)])
        return Tensor._from_op(ys, requires_grad, creator, 0)

    def release(self) -> None:
        """Drop the inputs and saved arrays once backward has run (unless retain_graph)."""
        self.inputs = None
        self.saved = None

    @property
    def freed(self) -> bool:
        """True once a recorded node has been released by backward."""
        return self.inputs is None and self.seq >= 0

    def _check_finite(self, arrays: Any, context: Any, stage: str) -> None:
        """Debug mode: raise FloatingPointError naming this op if an array is not finite.

        ``context``: what the op computed from (forward: its inputs; backward: the upstream
        gradients, then the inputs), described in the message."""
        for i, a in enumerate(arrays):
            if a is None or not np.issubdtype(a.dtype, np.inexact):
                continue
            xp = backend.get_array_module(a)
            if bool(xp.isfinite(a).all()):
                continue
            n_nan = int(xp.isnan(a).sum())
            n_inf = int(xp.isinf(a).sum())
            what = "output" if stage == "forward" else "gradient for input"
            given = [x for x in context if x is not None]
            finite_in = all(
                not np.issubdtype(x.dtype, np.inexact)
                or bool(backend.get_array_module(x).isfinite(x).all())
                for x in given
            )
            source = "inputs" if stage == "forward" else "upstream gradients and inputs"
            origin = f"from finite {source}" if finite_in else f"(its {source} were not all finite)"
            raise FloatingPointError(
                f"debug mode: {self.name}.{stage} produced a non-finite {what} #{i} "
                f"(shape {tuple(a.shape)}: {n_nan} NaN, {n_inf} inf) {origin}; "
                f"{source}: [{_describe(given)}]"
            )

    def __repr__(self) -> str:
        return f"<{self.name}>"
