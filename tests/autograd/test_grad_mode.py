"""Grad modes (no_grad, enable_grad, set_grad_enabled) and debug mode (NaN/inf hunting)."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import Function


# ---------------------------------------------------------------------------- grad modes
def test_no_grad_builds_no_graph(device, xp):
    x = mt.tensor(xp.ones(3), requires_grad=True)
    with mt.no_grad():
        assert not mt.is_grad_enabled()
        y = (x * 2.0).exp()
    assert mt.is_grad_enabled()
    assert not y.requires_grad and y.creator is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_no_grad_frees_what_forward_saved(device, xp):
    x = mt.tensor(xp.ones(3), requires_grad=True)
    node = mt.functional.elementwise.Exp()
    with mt.no_grad():
        node(x)
    assert node.saved is None and node.inputs is None


def test_enable_grad_inside_no_grad(device, xp):
    x = mt.tensor(xp.ones(3), requires_grad=True)
    with mt.no_grad():
        with mt.enable_grad():
            y = x * 2.0
        z = x * 2.0
    assert y.requires_grad and y.creator is not None
    assert not z.requires_grad
    y.sum().backward()
    np.testing.assert_array_equal(mt.to_numpy(x.grad), np.full(3, 2.0))


def test_modes_nest_and_restore_after_an_exception():
    with mt.no_grad():
        with mt.no_grad():
            pass
        assert not mt.is_grad_enabled()
    assert mt.is_grad_enabled()
    with pytest.raises(KeyError):
        with mt.no_grad():
            raise KeyError("boom")
    assert mt.is_grad_enabled()


def test_no_grad_as_a_decorator_even_recursive():
    @mt.no_grad()
    def depth(n):
        assert not mt.is_grad_enabled()
        return 0 if n == 0 else 1 + depth(n - 1)

    assert depth(3) == 3
    assert mt.is_grad_enabled()


def test_set_grad_enabled_as_a_call_and_as_a_block():
    with mt.set_grad_enabled(False):
        assert not mt.is_grad_enabled()
    assert mt.is_grad_enabled()
    try:
        mt.set_grad_enabled(False)  # a plain call switches at once, as in PyTorch
        assert not mt.is_grad_enabled()
    finally:
        mt.set_grad_enabled(True)
    assert mt.is_grad_enabled()


# ---------------------------------------------------------------------------- debug mode
class _NaNForward(Function):
    def forward(self, x):
        return x * np.nan

    def backward(self, gy):
        return gy


class _NaNBackward(Function):
    def forward(self, x):
        return x * 1.0

    def backward(self, gy):
        return gy * np.nan


def test_debug_mode_names_the_op_that_made_a_nan_in_forward(device, xp):
    x = mt.tensor(xp.ones(3), requires_grad=True)
    with mt.debug_mode():
        h = x * 2.0
        with pytest.raises(FloatingPointError,
                           match=r"_NaNForward\.forward.*3 NaN.*from finite inputs"):
            _NaNForward()(h)
    assert not mt.is_debug_mode()
    _NaNForward()(h)  # outside debug mode NaN propagates silently


def test_debug_mode_names_the_op_that_made_a_nan_in_backward(device, xp):
    x = mt.tensor(xp.ones(3), requires_grad=True)
    with mt.debug_mode():
        y = (_NaNBackward()(x * 2.0) * 3.0).sum()
        with pytest.raises(FloatingPointError, match=r"_NaNBackward\.backward.*gradient"):
            y.backward()
    assert x.grad is None  # a failed backward changes no .grad


def test_debug_mode_catches_a_library_op(device, xp):
    # log(-1) is NaN: the message names Log, not a later op that merely propagates it
    x = mt.tensor(xp.asarray([1.0, -1.0]), requires_grad=True)
    with mt.detect_anomaly(), np.errstate(invalid="ignore"):
        with pytest.raises(FloatingPointError, match=r"Log\.forward.*1 NaN"):
            (x * 1.0).log().exp()
    # sqrt'(0) = inf: finite forward, non-finite backward
    z = mt.tensor(xp.zeros(2), requires_grad=True)
    with mt.debug_mode(), np.errstate(divide="ignore"):
        y = z.sqrt().sum()
        with pytest.raises(FloatingPointError, match=r"Sqrt\.backward.*inf"):
            y.backward()
