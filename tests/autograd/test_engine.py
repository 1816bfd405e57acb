"""The backward walk: graph shapes (diamonds, reuse, long chains), gradient accumulation and
ownership, freeing the graph, multi-output nodes and the errors the engine raises.

Expected gradients are written from calculus in plain NumPy float64, independent of the
library's ops.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer import Function
from minitransformer import functional as F
from minitransformer.testing import gradcheck


def leaf(xp, a, requires_grad=True):
    return mt.tensor(xp.asarray(a), requires_grad=requires_grad)


def host(a):
    return mt.to_numpy(a)


# ---------------------------------------------------------------------------- graph shapes
def test_diamond_graph(device, xp, rng):
    # x -> a = 2x, b = x^2 -> y = a * b = 2 x^3  =>  dy/dx = 6 x^2
    x0 = rng.standard_normal((3, 4))
    gy = rng.standard_normal((3, 4))
    x = leaf(xp, x0)
    a = x * 2.0
    b = x * x
    y = a * b
    y.backward(xp.asarray(gy))
    np.testing.assert_allclose(host(y.data), 2 * x0**3, rtol=1e-12)
    np.testing.assert_allclose(host(x.grad), gy * 6 * x0**2, rtol=1e-12)


def test_nested_diamonds_match_calculus_and_gradcheck(device, xp, rng):
    # u = e^x; v = u x; w = u + v = e^x (1 + x)  =>  dw/dx = e^x (2 + x)
    x0 = rng.standard_normal(5)
    gy = rng.standard_normal(5)
    x = leaf(xp, x0)
    u = x.exp()
    w = u + u * x
    w.backward(xp.asarray(gy))
    np.testing.assert_allclose(host(x.grad), gy * np.exp(x0) * (2 + x0), rtol=1e-12)
    assert gradcheck(lambda t: (lambda e: e + e * t)(t.exp()), [leaf(xp, x0)])


def test_tensor_reused_many_times(device, xp, rng):
    # y = sum_k c_k x  (x used 50 times)  =>  dy/dx = sum_k c_k
    x0 = rng.standard_normal((2, 3))
    cs = rng.standard_normal(50)
    gy = rng.standard_normal((2, 3))
    x = leaf(xp, x0)
    y = x * float(cs[0])
    for c in cs[1:]:
        y = y + x * float(c)
    y.backward(xp.asarray(gy))
    np.testing.assert_allclose(host(x.grad), gy * cs.sum(), rtol=1e-12)


def test_power_by_repeated_product(device, xp, rng):
    # y = x^n as x * x * ... * x  =>  dy/dx = n x^(n-1)
    n = 7
    x0 = rng.uniform(0.5, 1.5, size=4)
    x = leaf(xp, x0)
    y = x
    for _ in range(n - 1):
        y = y * x
    y.sum().backward()
    np.testing.assert_allclose(host(x.grad), n * x0 ** (n - 1), rtol=1e-12)


def test_long_chain_has_no_recursion_limit():
    # 100,000 ops: a recursive walk would hit Python's recursion limit (~1000)
    n = 100_000
    x = mt.tensor(np.ones(2), requires_grad=True)
    c = mt.tensor(np.full(2, 0.5))
    y = x
    for _ in range(n):
        y = y + c
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, np.ones(2))
    np.testing.assert_array_equal(y.data, np.full(2, 1 + 0.5 * n))


def test_backward_order_is_deterministic(device, xp, rng):
    x0 = rng.standard_normal((4, 3))

    def grads():
        x = leaf(xp, x0)
        h = (x * 3.0).tanh()
        y = (h * x + h.exp() * x - x * x).sum()
        y.backward()
        return host(x.grad)

    np.testing.assert_array_equal(grads(), grads())  # bitwise: same order, same sums


class _Counted(Function):
    """y = x, counting how often backward runs."""

    calls = 0

    def forward(self, x):
        return x * 1.0

    def backward(self, gy):
        _Counted.calls += 1
        return gy


def test_every_node_runs_backward_once_after_all_its_consumers(device, xp):
    # x -> h -> (a, b, c) -> y: h must wait for all three consumers, even with retain_graph
    x = mt.tensor(xp.ones(3), requires_grad=True)
    h = _Counted()(x)
    a, b, c = _Counted()(h), _Counted()(h), _Counted()(h)
    y = _Counted()(a + b * 2.0 + _Counted()(c))
    _Counted.calls = 0
    y.sum().backward(retain_graph=True)
    assert _Counted.calls == 6
    np.testing.assert_array_equal(host(x.grad), np.full(3, 4.0))


# ---------------------------------------------------------------------------- accumulation
def test_gradients_accumulate_across_backward_calls(device, xp, rng):
    x0, g1, g2 = rng.standard_normal((3, 2, 3))
    x = leaf(xp, x0)
    (x * 3.0).backward(xp.asarray(g1))
    (x * 5.0).backward(xp.asarray(g2))
    np.testing.assert_allclose(host(x.grad), 3 * g1 + 5 * g2, rtol=1e-12)
    x.zero_grad()
    assert x.grad is None


def test_backward_on_a_leaf_copies_gy(device, xp, rng):
    gy = xp.asarray(rng.standard_normal(3))
    x = leaf(xp, rng.standard_normal(3))
    x.backward(gy)
    assert x.grad is not gy
    x.grad += 1
    np.testing.assert_array_equal(host(x.grad), host(gy) + 1)


def test_only_leaves_that_require_grad_get_gradients(device, xp, rng):
    x = leaf(xp, rng.standard_normal(3))
    c = leaf(xp, rng.standard_normal(3), requires_grad=False)
    h = x * c
    (h * h).sum().backward()
    assert c.grad is None
    assert h.grad is None  # a non-leaf keeps no gradient unless asked (retain_grad)
    np.testing.assert_allclose(host(x.grad), 2 * host(x.data) * host(c.data) ** 2, rtol=1e-12)


def test_retain_grad_on_a_non_leaf(device, xp, rng):
    x0 = rng.standard_normal(4)
    x = leaf(xp, x0)
    h = (x * 2.0).retain_grad()
    (h * h).sum().backward()
    np.testing.assert_allclose(host(h.grad), 2 * (2 * x0), rtol=1e-12)  # d h^2/dh = 2h
    np.testing.assert_allclose(host(x.grad), 8 * x0, rtol=1e-12)


# ---------------------------------------------------------------------------- ownership
def _assert_independent(a, b):
    """Two gradient arrays are different objects and mutating one leaves the other alone."""
    assert a is not b
    before = host(b).copy()
    a += 1.0  # in place, as a gradient-clipping or scaling step would do
    np.testing.assert_array_equal(host(b), before)


def test_add_of_a_tensor_to_itself_does_not_alias(device, xp, rng):
    # y = x + x: Add hands the same gy to both inputs; x.grad must be 2 gy, not gy shared
    gy = xp.asarray(rng.standard_normal(3))
    gy_before = host(gy).copy()
    x = leaf(xp, rng.standard_normal(3))
    (x + x).backward(gy)
    np.testing.assert_allclose(host(x.grad), 2 * gy_before)
    np.testing.assert_array_equal(host(gy), gy_before)  # the caller's gy is untouched
    _assert_independent(x.grad, gy)


def test_two_leaves_fed_the_same_gradient_do_not_share_it(device, xp, rng):
    a = leaf(xp, rng.standard_normal(3))
    b = leaf(xp, rng.standard_normal(3))
    (a + b).backward(xp.asarray(rng.standard_normal(3)))
    np.testing.assert_array_equal(host(a.grad), host(b.grad))
    _assert_independent(a.grad, b.grad)


def test_broadcast_gradient_views_become_owned_writable_arrays(device, xp, rng):
    # sum's backward returns a read-only broadcast view; leaves must get their own arrays
    a = leaf(xp, rng.standard_normal((2, 3)))
    b = leaf(xp, rng.standard_normal((2, 3)))
    (a + b).sum().backward()
    _assert_independent(a.grad, b.grad)
    np.testing.assert_array_equal(host(b.grad), np.ones((2, 3)))


def test_retained_non_leaf_and_leaf_do_not_share(device, xp, rng):
    x = leaf(xp, rng.standard_normal(3))
    h = (x + 0.0).retain_grad()  # Add passes gy through unchanged to both h and x
    (h + 0.0).backward(xp.asarray(rng.standard_normal(3)))
    _assert_independent(h.grad, x.grad)


# ---------------------------------------------------------------------------- graph lifetime
def test_second_backward_through_freed_graph_raises(device, xp, rng):
    x = leaf(xp, rng.standard_normal(3))
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        y.backward()


def test_backward_frees_saved_arrays_and_inputs(device, xp, rng):
    x = leaf(xp, rng.standard_normal(3))
    h = x.exp()
    node = h.creator
    assert node.saved is not None and node.inputs is not None
    h.sum().backward()
    assert node.saved is None and node.inputs is None and node.freed


def test_retain_graph_allows_a_second_backward(device, xp, rng):
    x0 = rng.standard_normal(3)
    x = leaf(xp, x0)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    assert y.creator.inputs is not None
    y.backward()
    np.testing.assert_allclose(host(x.grad), 2 * (2 * x0), rtol=1e-12)


def test_failed_backward_leaves_grads_untouched(device, xp, rng):
    # z reaches a node freed by an earlier backward: the error comes before any .grad changes
    x = leaf(xp, rng.standard_normal(3))
    w = leaf(xp, rng.standard_normal(3))
    h = x * x
    h.sum().backward()
    grad_x = host(x.grad).copy()
    z = (h * w).sum()
    with pytest.raises(RuntimeError, match="second time"):
        z.backward()
    assert w.grad is None
    np.testing.assert_array_equal(host(x.grad), grad_x)


# ---------------------------------------------------------------------------- multi-output
def test_split_with_only_one_output_used(device, xp, rng):
    x0 = rng.standard_normal((6, 2))
    w0 = rng.standard_normal((2, 2))
    x = leaf(xp, x0)
    parts = F.split(x, 3, axis=0)
    (parts[1] * mt.tensor(xp.asarray(w0))).sum().backward()
    expected = np.zeros((6, 2))
    expected[2:4] = w0
    np.testing.assert_allclose(host(x.grad), expected)


class _TwoOutputs(Function):
    """(x + 1, 2 x): a two-output node, to test the engine without the library's ops."""

    def forward(self, x):
        return x + 1.0, 2.0 * x

    def backward(self, g0, g1):
        return g0 + 2.0 * g1


def test_unused_output_of_a_multi_output_function_gets_zero_gradient(device, xp, rng):
    x0, g = rng.standard_normal((2, 3))
    x = leaf(xp, x0)
    first, second = _TwoOutputs()(x)
    assert first.output_index == 0 and second.output_index == 1
    second.backward(xp.asarray(g))
    np.testing.assert_allclose(host(x.grad), 2.0 * g)
    x.zero_grad()
    first, second = _TwoOutputs()(x)
    (first * 3.0 + second).backward(xp.asarray(g))
    np.testing.assert_allclose(host(x.grad), 3 * g + 2 * g)


# ---------------------------------------------------------------------------- errors
def test_backward_on_non_scalar_without_gy_raises(device, xp, rng):
    y = leaf(xp, rng.standard_normal((2, 3))) * 2.0
    with pytest.raises(ValueError, match=r"scalar.*\(2, 3\)"):
        y.backward()


def test_backward_with_gy_of_the_wrong_shape_raises(device, xp, rng):
    y = leaf(xp, rng.standard_normal((2, 3))) * 2.0
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(2, 3\)"):
        y.backward(xp.ones((3, 2)))


def test_backward_without_grad_raises(device, xp, rng):
    y = leaf(xp, rng.standard_normal(3), requires_grad=False) * 2.0
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_backward_accepts_a_tensor_gy(device, xp, rng):
    x = leaf(xp, rng.standard_normal(3))
    gy = mt.tensor(xp.asarray(rng.standard_normal(3)))
    (x * 2.0).backward(gy)
    np.testing.assert_allclose(host(x.grad), 2 * host(gy.data))


def test_int_tensor_cannot_require_grad(device):
    with pytest.raises(TypeError, match="floating"):
        mt.tensor([1, 2, 3], requires_grad=True, device=device)
    with pytest.raises(TypeError, match="floating"):
        mt.tensor([1, 2, 3], device=device).requires_grad_()


def test_shape_mismatch_errors_name_the_op_and_shapes(device, xp):
    a = mt.tensor(xp.ones((2, 3)), requires_grad=True)
    b = mt.tensor(xp.ones(4))
    with pytest.raises(ValueError, match=r"add.*\(2, 3\).*\(4,\)"):
        a + b
    with pytest.raises(ValueError, match=r"mul.*\(2, 3\).*\(4,\)"):
        a * b
    with pytest.raises(ValueError, match=r"matmul.*\(2, 3\).*\(4, 5\)"):
        a @ mt.tensor(xp.ones((4, 5)))


class _WrongShapeBackward(Function):
    def forward(self, x):
        return x * 1.0

    def backward(self, gy):
        return gy[:1]  # a bug: the gradient lost its shape


class _WrongCountBackward(Function):
    def forward(self, x):
        return x * 1.0

    def backward(self, gy):
        return gy, gy


def test_engine_checks_the_gradients_an_op_returns(device, xp):
    x = mt.tensor(xp.ones((3, 2)), requires_grad=True)
    with pytest.raises(ValueError, match=r"_WrongShapeBackward.*\(1, 2\).*\(3, 2\)"):
        _WrongShapeBackward()(x).sum().backward()
    with pytest.raises(RuntimeError, match="_WrongCountBackward.*2 gradients for 1 inputs"):
        _WrongCountBackward()(x).sum().backward()


@pytest.mark.gpu
def test_mixing_devices_is_an_error():
    if not mt.cuda_available():
        pytest.skip("no CUDA GPU (or CuPy) available")
    a = mt.tensor(np.ones(3), device="cpu")
    b = mt.tensor(np.ones(3), device="cuda")
    with pytest.raises(ValueError, match=r"Add.*different devices.*cpu.*cuda"):
        a + b


# ---------------------------------------------------------------------------- dtypes
def test_float32_in_float32_grads(device, xp, rng):
    x = mt.tensor(xp.asarray(rng.standard_normal((2, 3)), dtype=xp.float32), requires_grad=True)
    w = mt.tensor(xp.asarray(rng.standard_normal(3), dtype=xp.float32), requires_grad=True)
    y = ((x * w + 0.5) * 2.0).exp().mean()
    assert y.dtype == np.float32
    y.backward()
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float32


def test_float64_is_kept(device, xp, rng):
    x = mt.tensor(xp.asarray(rng.standard_normal(3)), requires_grad=True)
    assert x.dtype == np.float64
    y = (x * 0.5).sum()
    assert y.dtype == np.float64
    y.backward()
    assert x.grad.dtype == np.float64


class _Float64Backward(Function):
    def forward(self, x):
        return x * 1.0

    def backward(self, gy):
        return gy.astype("float64")  # an op that upcasts its gradient


def test_gradients_are_cast_to_the_input_dtype(device, xp):
    x = mt.tensor(xp.ones(3, dtype=xp.float32), requires_grad=True)
    (_Float64Backward()(x) * 2.0).sum().backward()
    assert x.grad.dtype == np.float32


# ---------------------------------------------------------------------------- random graphs
# Random DAGs: each step applies an op to one or two earlier nodes (so nodes get reused and
# diamonds form); the output sums a random subset. NumPy float64 computes the same values
# alongside, independently of the library.
_GRAPH_OPS = {
    "add": (lambda a, b: a + b, lambda a, b: a + b),
    "mul": (lambda a, b: a * b, lambda a, b: a * b),
    "sub": (lambda a, b: a - b, lambda a, b: a - b),
    "tanh": (lambda a, b: a.tanh(), lambda a, b: np.tanh(a)),
    "exp_half": (lambda a, b: (a * 0.5).exp(), lambda a, b: np.exp(a * 0.5)),
}


@st.composite
def _graphs(draw):
    n_leaves = draw(st.integers(1, 3))
    steps = []
    for k in range(draw(st.integers(1, 8))):
        available = n_leaves + k
        steps.append((draw(st.sampled_from(sorted(_GRAPH_OPS))),
                      draw(st.integers(0, available - 1)), draw(st.integers(0, available - 1))))
    outputs = draw(st.lists(st.integers(0, n_leaves + len(steps) - 1), min_size=1, max_size=4))
    return n_leaves, steps, outputs


def _run_graph(nodes, steps, outputs, which):
    nodes = list(nodes)
    for op, i, j in steps:
        nodes.append(_GRAPH_OPS[op][which](nodes[i], nodes[j]))
    total = nodes[outputs[0]]
    for k in outputs[1:]:
        total = total + nodes[k]
    return total


@given(graph=_graphs(), seed=st.integers(0, 2**16))
def test_random_graphs_match_numpy_and_gradcheck(graph, seed):
    n_leaves, steps, outputs = graph
    rng = np.random.default_rng(seed)
    leaves = [rng.uniform(-1, 1, size=(2, 3)) for _ in range(n_leaves)]
    expected = _run_graph(leaves, steps, outputs, which=1)
    tensors = [mt.tensor(a, requires_grad=True) for a in leaves]
    got = _run_graph(tensors, steps, outputs, which=0)
    if not isinstance(got, mt.Tensor):  # the output is a single leaf
        got = got * 1.0
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda *xs: _run_graph(xs, steps, outputs, which=0) * 1.0, tensors,
                     allow_unused=True)  # a random graph may leave an input unused
