"""matmul (batched, broadcasting, 1-D operands) and linear: forward against an explicit
sum-over-k reference, gradcheck over Hypothesis-drawn shapes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minitransformer import functional as F
from minitransformer.testing import gradcheck
from tests.functional.helpers import assert_close, leaf
from tests.strategies import generic_arrays, matmul_shapes, noncontiguous, shapes


def _ref_matmul(a, b):
    """C[..., i, j] = sum_k A[..., i, k] B[..., k, j] by loops, with NumPy's rules for 1-D
    operands (promoted to a row / column, then the added axis dropped) and batch broadcasting."""
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    A = np.broadcast_to(a2, batch + a2.shape[-2:])
    B = np.broadcast_to(b2, batch + b2.shape[-2:])
    n, k, m = A.shape[-2], A.shape[-1], B.shape[-1]
    C = np.zeros(batch + (n, m))
    for bi in np.ndindex(*batch):
        for i in range(n):
            for j in range(m):
                C[bi + (i, j)] = sum(A[bi + (i, kk)] * B[bi + (kk, j)] for kk in range(k))
    if a.ndim == 1:
        C = C[..., 0, :]
    if b.ndim == 1:
        C = C[..., 0]
    return C


@given(data=st.data())
def test_matmul_broadcasting_and_1d_operands(device, data):
    sa, sb = data.draw(matmul_shapes())
    a, b = data.draw(generic_arrays(sa)), data.draw(generic_arrays(sb))
    y = F.matmul(leaf(a, device), leaf(b, device))
    assert_close(y, _ref_matmul(a, b))
    assert_close(leaf(a, device) @ leaf(b, device), _ref_matmul(a, b))
    assert gradcheck(F.matmul, [leaf(a, device), leaf(b, device)])


@pytest.mark.parametrize("sa, sb", [
    ((3,), (3,)),  # dot product -> scalar
    ((3,), (2, 3, 4)),  # vector @ batch of matrices
    ((2, 1, 4, 3), (3,)),  # batch of matrices @ vector
    ((2, 1, 2, 3), (5, 3, 2)),  # batch axes broadcast: (2, 1) with (5,) -> (2, 5)
])
def test_matmul_named_cases(device, sa, sb):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    assert_close(F.matmul(leaf(a, device), leaf(b, device)), _ref_matmul(a, b))
    assert gradcheck(F.matmul, [leaf(a, device), leaf(b, device)])


@given(data=st.data())
def test_matmul_of_noncontiguous_operands(device, data):
    n, k, m = (data.draw(st.integers(2, 3)) for _ in range(3))
    a = data.draw(noncontiguous((n, k)))
    b = data.draw(noncontiguous((k, m)))
    assert_close(F.matmul(leaf(a, device), leaf(b, device)), _ref_matmul(a, b))
    assert gradcheck(F.matmul, [leaf(a, device), leaf(b, device)])


def test_matmul_errors_name_the_shapes(device):
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(4, 5\) are not aligned"):
        F.matmul(leaf(np.zeros((2, 3)), device), leaf(np.zeros((4, 5)), device))
    with pytest.raises(ValueError, match=r"matmul: batch axes of shapes \(2, 2, 3\) and "
                                         r"\(3, 3, 4\)"):
        F.matmul(leaf(np.zeros((2, 2, 3)), device), leaf(np.zeros((3, 3, 4)), device))
    with pytest.raises(ValueError, match="matmul: operands must have at least one dimension"):
        F.matmul(leaf(np.zeros(()), device), leaf(np.zeros(3), device))


@pytest.mark.parametrize("bias", [True, False])
@given(data=st.data())
def test_linear_is_x_at_w_plus_b(device, bias, data):
    lead = data.draw(shapes(min_dims=0, max_dims=2, max_side=3))
    d_in, d_out = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    x = data.draw(generic_arrays(lead + (d_in,)))
    w = data.draw(generic_arrays((d_in, d_out)))
    b = data.draw(generic_arrays((d_out,)))
    expected = _ref_matmul(x, w) + (b if bias else 0.0)
    args = [leaf(x, device), leaf(w, device)] + ([leaf(b, device)] if bias else [])
    assert_close(F.linear(*args), expected)
    assert gradcheck(F.linear, args)


def test_linear_errors_name_the_shapes(device):
    x = leaf(np.zeros((2, 3)), device)
    with pytest.raises(ValueError, match=r"linear: input of shape \(2, 3\) does not match "
                                         r"weight of shape \(4, 5\)"):
        F.linear(x, leaf(np.zeros((4, 5)), device))
    with pytest.raises(ValueError, match=r"linear: bias of shape \(4,\)"):
        F.linear(x, leaf(np.zeros((3, 5)), device), leaf(np.zeros(4), device))


def test_linear_float32_gradients_stay_float32(device):
    rng = np.random.default_rng(0)
    x = leaf(rng.standard_normal((4, 3)).astype(np.float32), device)
    w = leaf(rng.standard_normal((3, 2)).astype(np.float32), device)
    b = leaf(np.zeros(2, np.float32), device)
    y = F.linear(x, w, b)
    y.backward(np.ones((4, 2), np.float32))
    assert y.dtype == np.float32
    assert x.grad.dtype == w.grad.dtype == b.grad.dtype == np.float32
