"""Shape and indexing ops: values move, never change, so the forward reference is an explicit
element-by-element placement and the backward must route each gradient back (accumulating
where an index repeats)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minitransformer import functional as F
from minitransformer.backend import as_device
from minitransformer.testing import gradcheck
from tests.functional.helpers import assert_close, leaf
from tests.strategies import generic_arrays, noncontiguous, shapes


@given(data=st.data())
def test_reshape_and_flatten(device, data):
    shape = data.draw(shapes(min_dims=1, max_dims=3))
    x = data.draw(generic_arrays(shape))
    flat = [x[idx] for idx in np.ndindex(*shape)]  # C order, by hand
    new_shape = (-1,) if len(shape) == 1 else (shape[0], -1)
    y = F.reshape(leaf(x, device), new_shape)
    assert_close(y.reshape(-1), flat)
    assert_close(F.flatten(leaf(x, device)), flat)
    assert gradcheck(lambda t: F.reshape(t, new_shape), [leaf(x, device)])


@given(data=st.data())
def test_transpose_moves_element_ijk_to_the_permuted_index(device, data):
    shape = data.draw(shapes(min_dims=1, max_dims=3))
    perm = data.draw(st.permutations(range(len(shape))))
    x = data.draw(generic_arrays(shape))
    expected = np.empty([shape[p] for p in perm])
    for idx in np.ndindex(*shape):
        expected[tuple(idx[p] for p in perm)] = x[idx]
    assert_close(F.transpose(leaf(x, device), perm), expected)
    assert gradcheck(lambda t: F.transpose(t, perm), [leaf(x, device)])


def test_transpose_default_swapaxes_and_T(device):
    x = np.arange(24.0).reshape(2, 3, 4)
    assert_close(F.transpose(leaf(x, device)), x.transpose(2, 1, 0))
    assert_close(leaf(x, device).T, x.transpose(2, 1, 0))
    expected = np.empty((2, 4, 3))
    for i, j, k in np.ndindex(2, 3, 4):
        expected[i, k, j] = x[i, j, k]
    assert_close(F.swapaxes(leaf(x, device), -1, -2), expected)
    assert gradcheck(lambda t: F.swapaxes(t, 0, 2), [leaf(x, device)])
    with pytest.raises(ValueError, match="transpose: axes"):
        F.transpose(leaf(x, device), (0, 0, 1))


@given(data=st.data())
def test_broadcast_to_and_expand(device, data):
    shape = data.draw(shapes(min_dims=1, max_dims=2, max_side=3))
    x = data.draw(generic_arrays(shape))
    target = (2,) + tuple(3 if n == 1 else n for n in shape)
    expected = np.empty(target)
    for idx in np.ndindex(*target):
        expected[idx] = x[tuple(0 if n == 1 else k for k, n in zip(idx[1:], shape))]
    assert_close(F.broadcast_to(leaf(x, device), target), expected)
    assert_close(F.expand(leaf(x, device), target), expected)
    assert gradcheck(lambda t: F.broadcast_to(t, target), [leaf(x, device)])


def test_broadcast_to_a_wrong_shape_names_both_shapes(device):
    with pytest.raises(ValueError, match=r"broadcast_to: shape \(2, 3\) cannot broadcast to "
                                         r"\(5, 7\)"):
        F.broadcast_to(leaf(np.zeros((2, 3)), device), (5, 7))


def test_squeeze_and_unsqueeze(device):
    x = np.arange(6.0).reshape(2, 1, 3, 1)
    t = leaf(x, device)
    assert F.squeeze(t).shape == (2, 3)
    assert F.squeeze(t, 1).shape == (2, 3, 1)
    assert F.squeeze(t, (1, -1)).shape == (2, 3)
    assert F.unsqueeze(t, 0).shape == (1, 2, 1, 3, 1)
    assert F.unsqueeze(t, -1).shape == (2, 1, 3, 1, 1)
    assert_close(F.squeeze(t).reshape(-1), np.arange(6.0))
    assert gradcheck(lambda t: F.unsqueeze(F.squeeze(t), 1), [leaf(x, device)])
    with pytest.raises(ValueError, match="squeeze: axis 0"):
        F.squeeze(t, 0)


@given(data=st.data())
def test_concat_stack_split_round_trip(device, data):
    shape = data.draw(shapes(min_dims=1, max_dims=3, max_side=3))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    parts = [data.draw(generic_arrays(shape)) for _ in range(3)]
    leaves = [leaf(p, device) for p in parts]
    cat = F.concat(leaves, axis=axis)
    n = shape[axis]
    for i, p in enumerate(parts):  # each part sits in its own slab along axis
        sl = [slice(None)] * len(shape)
        sl[axis] = slice(i * n, (i + 1) * n)
        assert_close(cat[tuple(sl)], p)
    stacked = F.stack(leaves, axis=0)
    for i, p in enumerate(parts):
        assert_close(stacked[i], p)
    back = F.split(cat, 3, axis=axis)
    for b, p in zip(back, parts):
        assert_close(b, p)
    assert gradcheck(lambda a, b, c: F.concat([a, b, c], axis=axis), leaves)
    assert gradcheck(lambda a, b, c: F.stack([a, b, c], axis=-1), leaves)
    assert gradcheck(lambda t: F.split(t, 3, axis=axis), [leaf(np.concatenate(parts, axis),
                                                               device)])


def test_split_at_indices_and_using_only_some_outputs(device):
    x = leaf(np.arange(10.0), device)
    a, b, c = F.split(x, [2, 5])
    assert_close(a, [0.0, 1.0])
    assert_close(b, [2.0, 3.0, 4.0])
    assert_close(c, np.arange(5.0, 10.0))
    (b * 2.0).sum().backward()  # a and c unused: their gradient is zero
    assert_close(x.grad, [0, 0, 2, 2, 2, 0, 0, 0, 0, 0])


def test_shape_errors_name_the_op_and_shapes(device):
    x = leaf(np.zeros((2, 3)), device)
    with pytest.raises(ValueError, match=r"reshape: cannot reshape .* \(2, 3\) .* \(4, 2\)"):
        F.reshape(x, (4, 2))
    with pytest.raises(ValueError, match=r"concat: shapes \[\(2, 3\), \(2, 4\)\]"):
        F.concat([x, leaf(np.zeros((2, 4)), device)], axis=0)
    with pytest.raises(ValueError, match="split: axis 1 of length 3"):
        F.split(x, 2, axis=1)
    with pytest.raises(ValueError, match="stack: all shapes must be equal"):
        F.stack([x, leaf(np.zeros((3, 2)), device)])


# ---------------------------------------------------------------------------- getitem
@pytest.mark.parametrize("index", [
    (0,),
    (slice(1, None), 2),
    (Ellipsis, slice(None, None, -2)),
    (None, slice(0, 2)),
    (-1, slice(None), slice(1, 3)),
])
def test_getitem_basic(device, index):
    x = np.random.default_rng(0).standard_normal((3, 4, 5))
    assert_close(leaf(x, device)[index], x[index])
    assert gradcheck(lambda t: t[index], [leaf(x, device)])


def test_getitem_integer_array_accumulates_repeated_indices(device):
    x = leaf(np.array([10.0, 20.0, 30.0, 40.0]), device)
    idx = np.array([2, 0, 2, 2, 3])
    y = x[idx]
    assert_close(y, [30.0, 10.0, 30.0, 30.0, 40.0])
    y.backward(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    # element 2 was picked three times: its gradient is 1 + 3 + 4
    assert_close(x.grad, [2.0, 0.0, 8.0, 5.0])


def test_getitem_row_gather_with_duplicates_like_an_embedding(device):
    rng = np.random.default_rng(1)
    table = rng.standard_normal((5, 3))
    ids = np.array([[1, 4], [1, 1]])
    expected = np.stack([np.stack([table[i] for i in row]) for row in ids])
    assert_close(leaf(table, device)[ids], expected)
    assert gradcheck(lambda t: t[ids], [leaf(table, device)])


def test_getitem_pairs_of_index_arrays(device):
    x = np.arange(12.0).reshape(3, 4)
    rows, cols = np.array([0, 2, 0]), np.array([1, 3, 1])
    t = leaf(x, device)
    assert_close(t[rows, cols], [1.0, 11.0, 1.0])
    t[rows, cols].backward(np.array([1.0, 1.0, 1.0]))
    expected = np.zeros((3, 4))
    expected[0, 1], expected[2, 3] = 2.0, 1.0
    assert_close(t.grad, expected)


def test_getitem_boolean_mask(device):
    x = np.arange(6.0).reshape(2, 3)
    mask = np.array([[True, False, True], [False, True, False]])
    xp = as_device(device).xp
    t = leaf(x, device)
    y = t[xp.asarray(mask)]
    assert_close(y, [0.0, 2.0, 4.0])
    y.backward(np.array([1.0, 2.0, 3.0]))
    assert_close(t.grad, [[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]])
    assert gradcheck(lambda t: t[xp.asarray(mask)], [leaf(x, device)])


def test_getitem_index_tensor_and_list(device):
    x = leaf(np.arange(5.0), device)
    assert_close(x[[4, 0]], [4.0, 0.0])
    assert_close(x[leaf(np.array([1, 1]), device, requires_grad=False)], [1.0, 1.0])


def test_getitem_out_of_range_names_the_shape(device):
    with pytest.raises(IndexError, match=r"getitem: .*\(tensor shape \(3,\)\)"):
        leaf(np.zeros(3), device)[5]


@pytest.mark.parametrize("index, axis, values", [
    (np.array([0, 5]), 0, r"\[0, 5\], outside \[-3, 2\]"),
    ((slice(None), np.array([1, -5])), 1, r"\[-5, 1\], outside \[-4, 3\]"),
    ((Ellipsis, np.array([4])), 1, r"\[4, 4\], outside \[-4, 3\]"),
    ((None, np.array([0]), np.array([3, 4])), 1, r"\[3, 4\], outside \[-4, 3\]"),
])
def test_getitem_integer_array_out_of_range_raises_on_every_device(device, index, axis, values):
    """CuPy wraps an out-of-range index array around silently; the op checks it itself, so
    both devices raise the same error naming the axis, the values and the allowed range."""
    with pytest.raises(IndexError, match=rf"axis {axis} has values in {values}"):
        leaf(np.zeros((3, 4)), device)[index]


def test_getitem_negative_and_boundary_indices_are_in_range(device):
    x = np.arange(12.0).reshape(3, 4)
    rows, cols = np.array([2, -3]), np.array([3, -4])
    assert_close(leaf(x, device)[rows, cols], x[rows, cols])


@given(data=st.data())
def test_getitem_of_noncontiguous_input(device, data):
    x = data.draw(noncontiguous(data.draw(shapes(min_dims=2, min_side=2))))
    idx = np.array([0, 1, 0])
    assert_close(leaf(x, device)[idx], x[[0, 1, 0]])
    assert gradcheck(lambda t: t[idx], [leaf(x, device)])


# ---------------------------------------------------------------------------- dtype, device
def test_astype_casts_and_casts_the_gradient_back(device):
    x = leaf(np.array([1.0, 2.5]), device)
    y = F.astype(x, np.float32)
    assert y.dtype == np.float32
    (y * 2.0).sum().backward()
    assert x.grad.dtype == np.float64
    assert_close(x.grad, [2.0, 2.0])


def test_to_device_same_device_round_trip(device):
    x = leaf(np.array([1.0, 2.0]), device)
    y = F.to_device(x, device)
    (y * 3.0).sum().backward()
    assert_close(x.grad, [3.0, 3.0])
