"""Hypothesis strategies shared by the test suite: shapes, broadcastable shape pairs, batched
matmul shapes, bounded float64 arrays, and non-contiguous arrays.

Sizes are small on purpose: ``gradcheck`` perturbs inputs element by element.

Two kinds of values:
- ``float_arrays``: Hypothesis draws every element (it shrinks to simple values such as 0 and
  repeats, good for forward tests against a reference).
- ``generic_arrays``: a Hypothesis-drawn seed feeds a NumPy generator, so the values are
  continuous and tie-free (no two equal entries, none exactly at 0): what a gradient check of
  max, relu or abs needs to stay away from kinks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

__all__ = [
    "broadcastable_pair",
    "float_arrays",
    "generic_arrays",
    "matmul_shapes",
    "noncontiguous",
    "shapes",
]


def shapes(min_dims: int = 1, max_dims: int = 3, min_side: int = 1, max_side: int = 4
           ) -> st.SearchStrategy[tuple[int, ...]]:
    """Array shapes, e.g. (), (3,), (2, 1, 4)."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side)


def broadcastable_pair(min_dims: int = 0, max_dims: int = 3, max_side: int = 3
                       ) -> st.SearchStrategy[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Two shapes that broadcast together (NumPy rules), e.g. ((2, 1, 3), (4, 1))."""
    return hnp.mutually_broadcastable_shapes(
        num_shapes=2, min_dims=min_dims, max_dims=max_dims, max_side=max_side
    ).map(lambda b: b.input_shapes)


@st.composite
def matmul_shapes(draw: Any, max_batch_dims: int = 2, max_side: int = 3,
                  allow_1d: bool = True) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shapes (a, b) valid for ``a @ b``: (..., n, k) @ (..., k, m) with batch axes that
    broadcast against each other, and (when ``allow_1d``) 1-D operands (k,) on either side."""
    n, k, m = (draw(st.integers(1, max_side)) for _ in range(3))
    batch_a, batch_b = draw(hnp.mutually_broadcastable_shapes(
        num_shapes=2, min_dims=0, max_dims=max_batch_dims, max_side=max_side
    ).map(lambda b: b.input_shapes))
    a_shape = batch_a + (n, k)
    b_shape = batch_b + (k, m)
    if allow_1d and draw(st.booleans()):
        a_shape = (k,)
    if allow_1d and draw(st.booleans()):
        b_shape = (k,)
    return a_shape, b_shape


def float_arrays(shape: tuple[int, ...], low: float = -3.0, high: float = 3.0
                 ) -> st.SearchStrategy[np.ndarray]:
    """float64 arrays of ``shape`` with every element in [low, high] (no NaN / inf)."""
    return hnp.arrays(np.float64, shape, elements=st.floats(
        low, high, allow_nan=False, allow_infinity=False, allow_subnormal=False))


def generic_arrays(shape: tuple[int, ...], low: float = -2.0, high: float = 2.0
                   ) -> st.SearchStrategy[np.ndarray]:
    """float64 arrays of ``shape``, uniform on [low, high] from a drawn seed: tie-free."""
    return st.integers(0, 2**32 - 1).map(
        lambda seed: np.random.default_rng(seed).uniform(low, high, size=shape))


@st.composite
def noncontiguous(draw: Any, shape: tuple[int, ...], low: float = -2.0, high: float = 2.0
                  ) -> np.ndarray:
    """A float64 array of ``shape`` that is a non-contiguous view: either the transpose of a
    reversed-shape array or every other element of a twice-as-long last axis."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if len(shape) >= 2 and draw(st.booleans()):
        base = rng.uniform(low, high, size=shape[::-1])
        view = base.T  # shape, Fortran order
    else:
        base = rng.uniform(low, high, size=shape[:-1] + (2 * shape[-1],)) if shape else None
        view = base[..., ::2] if base is not None else np.asarray(rng.uniform(low, high))
    assert view.shape == tuple(shape)
    return view
