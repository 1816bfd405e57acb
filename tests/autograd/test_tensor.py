"""Tensor: construction and dtype rules, attributes, operators and methods, constructors.

Operator results are compared with plain NumPy float64; gradients of the operators are
checked with gradcheck and a random upstream gradient.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import minitransformer as mt
from minitransformer.testing import gradcheck
from tests import cupy_standin


def host(a):
    return mt.to_numpy(a)


# ---------------------------------------------------------------------------- construction
def test_python_floats_become_float32_and_arrays_keep_their_dtype(device, xp):
    assert mt.tensor([1.0, 2.0], device=device).dtype == np.float32
    assert mt.tensor(xp.ones(2), device=device).dtype == np.float64
    assert mt.tensor(np.float64(1.5)).dtype == np.float64
    assert mt.tensor([1, 2], device=device).dtype.kind == "i"
    assert mt.tensor([1.0, 2.0], dtype=np.float64, device=device).dtype == np.float64


def test_default_dtype_can_be_changed():
    previous = mt.get_default_dtype()
    try:
        mt.set_default_dtype(np.float64)
        assert mt.tensor([1.0]).dtype == np.float64
        assert mt.zeros(2).dtype == np.float64
    finally:
        mt.set_default_dtype(previous)
    assert mt.tensor([1.0]).dtype == np.float32
    with pytest.raises(TypeError, match="floating"):
        mt.set_default_dtype(np.int32)


def test_tensor_owns_a_copy_of_an_array(device, xp):
    a = xp.ones(3)
    t = mt.tensor(a)
    a[0] = 5.0
    assert float(t.data[0]) == 1.0
    assert mt.Tensor(a).data is a  # the class itself wraps without copying


def test_attributes(device, xp):
    t = mt.tensor(xp.zeros((2, 3)), requires_grad=True)
    assert t.shape == (2, 3) and t.ndim == 2 and t.size == 6 and len(t) == 2
    assert t.dtype == np.float64 and t.device == device and t.device == mt.Device(device)
    assert t.requires_grad and t.is_leaf and t.grad is None and t.creator is None
    y = t * 2.0
    assert not y.is_leaf and y.creator is y.grad_fn and y.creator.name == "Mul"


def test_tensor_rejects_non_arrays():
    with pytest.raises(TypeError, match="mt.tensor"):
        mt.Tensor([1.0, 2.0])


# A device array as strict as CuPy's (no implicit host conversion), from the test suite's
# CuPy stand-in: the backend recognises it as a device array by its module name.
_StrictDeviceArray = cupy_standin.asarray


@pytest.mark.parametrize(("data", "shown"), [
    (["a", "b"], "<U1 (str)"),
    ([None, None], "object (Python objects or None)"),
    ([1.0, None], "object (Python objects or None)"),
    (None, "object (Python objects or None)"),
    ([b"x"], "|S1 (bytes)"),
    (np.array(["ab"]), "<U2 (str)"),
    (np.array([1.0], dtype=object), "object (Python objects or None)"),
    (np.array(["2026-01-01"], dtype="datetime64[D]"), "datetime64[D] (datetime64)"),
])
def test_non_numeric_data_is_refused_when_the_tensor_is_made(data, shown):
    """Issue 13 item 8: ``mt.tensor(["a", "b"])`` was accepted and failed later in an op."""
    msg = r"tensor: a Tensor holds numbers \(bool, int, float\), got dtype " + re.escape(shown)
    with pytest.raises(TypeError, match="^" + msg + "$"):
        mt.tensor(data)
    if isinstance(data, np.ndarray):
        with pytest.raises(TypeError, match="^Tensor: a Tensor holds numbers"):
            mt.Tensor(data)


def test_non_numeric_dtype_or_operand_is_refused():
    with pytest.raises(TypeError, match="got dtype <U3 \\(str\\)"):
        mt.tensor([1.0], dtype="U3")
    with pytest.raises(TypeError, match="got dtype <U1 \\(str\\)"):
        mt.tensor(["1"], dtype=np.float32)  # refused, not parsed
    x = mt.tensor([1.0, 2.0])
    for bad in (None, "a", b"a"):
        with pytest.raises(TypeError, match="operand must be a Tensor, an array or a number"):
            x + bad
        with pytest.raises(TypeError, match="operand must be a Tensor, an array or a number"):
            bad * x


def test_ragged_lists_are_a_clear_value_error():
    with pytest.raises(ValueError, match="^tensor: cannot make a rectangular array"):
        mt.tensor([[1.0, 2.0], [3.0]])


def test_a_list_of_device_scalars_is_stacked(device, xp):
    """Issue 13 item 9: ``mt.tensor([loss_a, loss_b])`` of 0-d device arrays (CuPy refuses
    ``np.asarray`` on them). On the GPU with real CuPy arrays, everywhere with a stand-in."""
    got = mt.tensor([xp.asarray(1.5), xp.asarray(2.5)], device=device)
    assert got.dtype == np.float32 and got.device.type == device
    np.testing.assert_array_equal(host(got.data), [1.5, 2.5])
    got = mt.tensor([[xp.asarray(1.0), 2.0], [mt.tensor(3.0, device=device), 4.0]],
                    dtype=np.float64, device=device)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(host(got.data), [[1.0, 2.0], [3.0, 4.0]])


def test_a_list_of_strict_device_arrays_is_read_through_the_backend():
    a, b = _StrictDeviceArray(1.5), _StrictDeviceArray([2.5])
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray([a, a])  # the stand-in is as strict as CuPy
    got = mt.tensor([a, _StrictDeviceArray(2.5)])
    assert got.dtype == np.float32 and got.device.type == "cpu"
    np.testing.assert_array_equal(got.data, [1.5, 2.5])
    got = mt.tensor([[a, 3.0], [2.0, _StrictDeviceArray(4)]])
    np.testing.assert_array_equal(got.data, [[1.5, 3.0], [2.0, 4.0]])
    assert got.dtype == np.float32
    got = mt.tensor([b, _StrictDeviceArray([3.5])], dtype=np.float64)  # 1-d device arrays
    assert got.shape == (2, 1) and got.dtype == np.float64
    np.testing.assert_array_equal(got.data, [[2.5], [3.5]])


def test_numpy_item_tolist(device, xp):
    t = mt.tensor(xp.asarray([[1.5, 2.0]]))
    n = t.numpy()
    assert isinstance(n, np.ndarray)
    n[0, 0] = 9.0
    assert float(t.data[0, 0]) == 1.5  # numpy() is a copy
    assert t.tolist() == [[1.5, 2.0]]
    assert mt.tensor(xp.asarray([3.0])).item() == 3.0
    with pytest.raises(ValueError, match=r"one element.*\(1, 2\)"):
        t.item()


def test_detach_shares_data_and_leaves_the_graph(device, xp):
    x = mt.tensor(xp.ones(3), requires_grad=True)
    y = x * 2.0
    d = y.detach()
    assert d.data is y.data and not d.requires_grad and d.creator is None


def test_requires_grad_flag_on_leaves_only(device, xp):
    x = mt.tensor(xp.ones(2))
    assert x.requires_grad_() is x and x.requires_grad
    with pytest.raises(RuntimeError, match="leaf"):
        (x * 2.0).requires_grad_(False)


def test_to_and_astype_are_differentiable(device, xp, rng):
    x = mt.tensor(xp.asarray(rng.standard_normal(3), dtype=xp.float32), requires_grad=True)
    assert x.to(device) is x
    y = x.to(dtype=np.float64)
    assert y.dtype == np.float64
    (y * 3.0).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(host(x.grad), np.full(3, 3.0))
    assert x.astype(np.float64).dtype == np.float64
    assert x.cpu().device == "cpu"


def test_repr_shows_data_and_graph(device, xp):
    x = mt.tensor(xp.asarray([1.0, 2.0]), requires_grad=True)
    assert "requires_grad=True" in repr(x) and "float64" in repr(x)
    assert "grad_fn=<Mul>" in repr(x * 2.0)


# ---------------------------------------------------------------------------- operators
BINARY = {
    "add": (lambda a, b: a + b, lambda a, b: a + b),
    "sub": (lambda a, b: a - b, lambda a, b: a - b),
    "mul": (lambda a, b: a * b, lambda a, b: a * b),
    "div": (lambda a, b: a / b, lambda a, b: a / b),
    "matmul": (lambda a, b: a @ b.T, lambda a, b: a @ b.T),
}


@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary_operators(op, device, xp, rng):
    a0 = rng.standard_normal((3, 4))
    b0 = rng.uniform(0.5, 2.0, size=(3, 4))
    fn, ref = BINARY[op]
    a, b = (mt.tensor(xp.asarray(v), requires_grad=True) for v in (a0, b0))
    np.testing.assert_allclose(host(fn(a, b).data), ref(a0, b0), rtol=1e-12)
    assert gradcheck(fn, [a, b])


def test_operators_with_scalars_and_arrays_on_either_side(device, xp, rng):
    x0 = rng.uniform(0.5, 2.0, size=(2, 3))
    x = mt.tensor(xp.asarray(x0), requires_grad=True)
    cases = [
        (2.0 + x, 2.0 + x0), (x + 2.0, x0 + 2.0), (2.0 - x, 2.0 - x0), (x - 2.0, x0 - 2.0),
        (3.0 * x, 3.0 * x0), (2.0 / x, 2.0 / x0), (x / 2.0, x0 / 2.0), (-x, -x0),
        (x**2, x0**2), (2.0**x, 2.0**x0), (abs(-x), x0), (xp.asarray(x0) + x, 2 * x0),
    ]
    for got, expected in cases:
        assert isinstance(got, mt.Tensor)
        np.testing.assert_allclose(host(got.data), expected, rtol=1e-12)
    assert gradcheck(lambda t: 2.0 / t - t**3 + 2.0**t, [x])


def test_python_scalars_keep_float32(device, xp):
    x = mt.tensor(xp.ones(3, dtype=xp.float32), requires_grad=True)
    for y in (x * 0.5, 0.5 + x, x / 3.0, x**2, 1.0 - x):
        assert y.dtype == np.float32
    for y in (x * np.float64(0.5), np.float64(2.0) - x):  # NumPy scalars too (Tensor docstring)
        assert y.dtype == np.float32


# The one dtype rule (Tensor's docstring): mixing float32 and float64 tensors follows NumPy's
# promotion in every op, and each input's gradient keeps that input's dtype.
MIXED_OPS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,  # b > 1 (below)
    "pow": lambda a, b: a ** b,  # a > 1 (below)
    "maximum": lambda a, b: mt.functional.maximum(a, b),
    "where": lambda a, b: mt.functional.where(a.data > 0, a, b),
    "matmul": lambda a, b: a @ b,
    "linear": lambda a, b: mt.functional.linear(a, b),
}


@pytest.mark.parametrize("order", ["f32-f64", "f64-f32"])
@pytest.mark.parametrize("name", list(MIXED_OPS))
def test_mixing_float32_and_float64_follows_numpy_promotion(name, order, device, xp, rng):
    fn = MIXED_OPS[name]
    dtypes = (np.float32, np.float64) if order == "f32-f64" else (np.float64, np.float32)
    square = name in ("matmul", "linear")
    shapes = ((2, 3), (3, 3)) if square else ((2, 3), (2, 3))
    raw = [rng.standard_normal(s) for s in shapes]
    if name in ("div", "pow"):  # a positive base, a divisor away from 0
        raw[name == "div"] = np.abs(raw[name == "div"]) + 1.0
    raw = [r.astype(dt) for r, dt in zip(raw, dtypes)]
    a, b = (mt.tensor(xp.asarray(r), requires_grad=True) for r in raw)
    y = fn(a, b)
    assert y.dtype == np.result_type(*dtypes) == np.float64, name
    # the values are the float64 computation of the inputs as given
    a64, b64 = (mt.tensor(xp.asarray(r.astype(np.float64))) for r in raw)
    np.testing.assert_allclose(host(y.data), host(fn(a64, b64).data), rtol=1e-12, atol=1e-12)
    y.sum().backward()
    assert a.grad.dtype == dtypes[0] and b.grad.dtype == dtypes[1], name


@pytest.mark.parametrize("dtypes", [(np.float64, np.float32, np.float32),
                                    (np.float32, np.float64, np.float32),
                                    (np.float32, np.float32, np.float64)])
def test_linear_with_bias_follows_the_same_promotion(dtypes, device, xp, rng):
    x, w, b = (mt.tensor(xp.asarray(rng.standard_normal(s).astype(dt)), requires_grad=True)
               for s, dt in zip(((2, 3), (3, 4), (4,)), dtypes))
    y = mt.functional.linear(x, w, b)
    assert y.dtype == np.result_type(*dtypes) == np.float64
    y.sum().backward()
    assert (x.grad.dtype, w.grad.dtype, b.grad.dtype) == dtypes


@pytest.mark.parametrize("fused", [False, True])
def test_layer_norm_follows_the_same_promotion(fused, device, xp, rng):
    F = mt.functional
    x = mt.tensor(xp.asarray(rng.standard_normal((2, 4)).astype(np.float32)), requires_grad=True)
    w, b = (mt.tensor(xp.asarray(rng.standard_normal(4)), requires_grad=True) for _ in range(2))
    with F.use_fused(fused):
        y = F.layer_norm(x, w, b)
    assert y.dtype == np.float64
    y.sum().backward()
    assert (x.grad.dtype, w.grad.dtype, b.grad.dtype) == (np.float32, np.float64, np.float64)


METHODS = {
    "sum": (lambda t: t.sum(axis=1), lambda a: a.sum(axis=1)),
    "sum_keepdims": (lambda t: t.sum(axis=0, keepdims=True), lambda a: a.sum(0, keepdims=True)),
    "mean": (lambda t: t.mean(axis=(0, 2)), lambda a: a.mean(axis=(0, 2))),
    "var": (lambda t: t.var(axis=-1), lambda a: a.var(axis=-1)),
    "max": (lambda t: t.max(axis=1), lambda a: a.max(axis=1)),
    "min": (lambda t: t.min(), lambda a: a.min()),
    "exp": (lambda t: t.exp(), np.exp),
    "log": (lambda t: t.log(), np.log),
    "sqrt": (lambda t: t.sqrt(), np.sqrt),
    "tanh": (lambda t: t.tanh(), np.tanh),
    "reshape": (lambda t: t.reshape(6, 4), lambda a: a.reshape(6, 4)),
    "reshape_tuple": (lambda t: t.reshape((4, -1)), lambda a: a.reshape(4, -1)),
    "transpose": (lambda t: t.transpose(2, 0, 1), lambda a: a.transpose(2, 0, 1)),
    "T": (lambda t: t.T, lambda a: a.T),
    "swapaxes": (lambda t: t.swapaxes(0, 2), lambda a: a.swapaxes(0, 2)),
    "getitem_basic": (lambda t: t[1:, ::2, -1], lambda a: a[1:, ::2, -1]),
    "getitem_int_array": (lambda t: t[[0, 1, 0]], lambda a: a[[0, 1, 0]]),
    "unsqueeze_squeeze": (lambda t: t.unsqueeze(1).squeeze(1), lambda a: a),
    "broadcast_to": (lambda t: t[:, :1].broadcast_to((2, 5, 4)),
                     lambda a: np.broadcast_to(a[:, :1], (2, 5, 4))),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_methods_match_numpy(name, device, xp, rng):
    x0 = rng.uniform(0.5, 2.0, size=(2, 3, 4))
    fn, ref = METHODS[name]
    x = mt.tensor(xp.asarray(x0), requires_grad=True)
    np.testing.assert_allclose(host(fn(x).data), ref(x0), rtol=1e-12)
    assert gradcheck(fn, [x])


def test_comparisons_give_boolean_tensors_outside_the_graph(device, xp):
    x = mt.tensor(xp.asarray([1.0, 2.0, 3.0]), requires_grad=True)
    for mask, expected in ((x < 2.0, [1, 0, 0]), (x <= 2.0, [1, 1, 0]),
                           (x > 2.0, [0, 0, 1]), (x >= 2.0, [0, 1, 1])):
        assert mask.dtype == bool and not mask.requires_grad and mask.creator is None
        np.testing.assert_array_equal(host(mask.data), np.array(expected, dtype=bool))
    assert int(x.argmax().item()) == 2


def test_equality_is_identity_so_tensors_can_be_keys(device, xp):
    a = mt.tensor(xp.ones(2))
    b = mt.tensor(xp.ones(2))
    assert a == a and a != b
    assert len({a, b}) == 2 and {a: 1}[a] == 1


# ---------------------------------------------------------------------------- constructors
def test_zeros_ones_like(device, xp):
    z = mt.zeros(2, 3, device=device)
    o = mt.ones((2, 3), device=device, dtype=np.float64, requires_grad=True)
    assert z.shape == (2, 3) and z.dtype == np.float32 and z.device == device
    assert float(z.data.sum()) == 0.0 and float(o.data.sum()) == 6.0 and o.requires_grad
    assert mt.zeros_like(o).dtype == np.float64 and mt.ones_like(z).shape == (2, 3)


def test_randn_uses_the_given_rng_or_the_seeded_default(device):
    a = mt.randn(3, 4, rng=np.random.default_rng(1), device=device)
    b = mt.randn(3, 4, rng=np.random.default_rng(1), device=device)
    assert a.shape == (3, 4) and a.dtype == np.float32 and a.device == device
    np.testing.assert_array_equal(host(a.data), host(b.data))
    mt.manual_seed(7)
    c = mt.randn(5, device=device)
    mt.manual_seed(7)
    d = mt.randn(5, device=device)
    np.testing.assert_array_equal(host(c.data), host(d.data))
    assert not np.array_equal(host(c.data), host(mt.randn(5, device=device).data))


@pytest.mark.gpu
def test_moving_between_devices_is_differentiable(rng):
    if not mt.cuda_available():
        pytest.skip("no CUDA GPU (or CuPy) available")
    x = mt.tensor(rng.standard_normal(3), requires_grad=True)
    y = x.to("gpu")  # "gpu" is an alias of "cuda"
    assert y.device == "cuda" and y.to("cpu").device == "cpu"
    (y * 2.0).sum().backward()
    assert isinstance(x.grad, np.ndarray)
    np.testing.assert_array_equal(x.grad, np.full(3, 2.0))
