"""The strict CuPy stand-in itself (tests/cupy_standin.py): it refuses what CuPy refuses,
counts device-to-host transfers, and catches a host/device mix injected into an op."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import backend
from minitransformer import functional as F
from tests import cupy_standin as cp

IMPLICIT = r"^Implicit conversion to a NumPy array is not allowed\. Please use `\.get\(\)` to " \
           r"construct a NumPy array explicitly\.$"


@pytest.fixture
def on_standin(cupy_standin):
    """The backend uses the stand-in for "cuda" during the test (``tests/conftest.py``)."""
    return cupy_standin


# ------------------------------------------------------------------ refusals, as CuPy's
@pytest.mark.parametrize("convert", [np.asarray, np.array, lambda a: np.array([a, a]),
                                     lambda a: np.exp(a).__array__()])
def test_implicit_conversion_to_numpy_raises_cupys_type_error(convert):
    a = cp.asarray(np.arange(3.0))
    with pytest.raises(TypeError, match=IMPLICIT):
        convert(a)


def test_get_and_asnumpy_are_the_ways_to_the_host():
    host = np.arange(6.0).reshape(2, 3)
    a = cp.asarray(host)
    assert type(a).__module__ == "cupy" and backend._is_cupy_array(a)
    got = a.get()
    assert type(got) is np.ndarray and got is not host
    np.testing.assert_array_equal(got, host)
    np.testing.assert_array_equal(cp.asnumpy(a * 2), host * 2)


@pytest.mark.parametrize("op", [
    lambda d, h: d + h, lambda d, h: h + d, lambda d, h: d * h, lambda d, h: h @ d.T,
    lambda d, h: cp.maximum(d, h), lambda d, h: cp.concatenate([d, h]),
    lambda d, h: cp.where(d > 0, h, d), lambda d, h: cp.exp(h), lambda d, h: cp.sum(h),
    lambda d, h: np.add(d, h), lambda d, h: cp.copyto(d, h),
    lambda d, h: cp.cupyx.scatter_add(d, np.array([0]), h[:1]),
], ids=["d+h", "h+d", "d*h", "h@d", "maximum", "concatenate", "where", "exp", "sum",
        "np.add", "copyto", "scatter_add"])
def test_numpy_operands_are_refused(op):
    d, h = cp.asarray(np.ones(3)), np.ones(3)
    with pytest.raises(TypeError, match=r"Unsupported type <class 'numpy\.ndarray'>"):
        op(d, h)


def test_scalars_indices_and_host_data_in_constructors_are_accepted():
    d = cp.asarray(np.arange(4.0))
    got = (d + 1.0) * np.float32(2) - True
    np.testing.assert_array_equal(got.get(), (np.arange(4.0) + 1) * 2 - 1)
    np.testing.assert_array_equal(d[np.array([3, 0])].get(), [3.0, 0.0])  # CuPy copies it
    d[np.array([1])] = np.array([9.0])
    assert d.get()[1] == 9.0
    np.testing.assert_array_equal(cp.array([cp.asarray(1.0), 2.0]).get(), [1.0, 2.0])


def test_numpy_scalars_on_the_left_are_scalars_as_in_cupy():
    """``np.float64(1) < d`` reaches the device array's ``__array_ufunc__`` with a 0-d NumPy
    array, which CuPy reads as a scalar for comparisons (numpy/numpy#12142); arithmetic keeps
    the scalar. A 0-d NumPy *array* given to another ufunc is refused, as by CuPy."""
    d = cp.arange(3.0)
    np.testing.assert_array_equal((np.float64(1) < d).get(), [False, False, True])
    np.testing.assert_array_equal((np.float32(2) * d).get(), [0.0, 2.0, 4.0])
    with pytest.raises(TypeError, match=r"Unsupported type <class 'numpy\.ndarray'>"):
        np.add(np.zeros(()), d)


def test_operators_defer_to_operands_that_opt_out_of_ufuncs():
    """As CuPy's: ``device_array + tensor`` gives the Tensor's ``__radd__`` its turn."""

    class OptOut:
        __array_ufunc__ = None

        def __radd__(self, other):
            return "reflected"

    assert cp.asarray(np.ones(2)) + OptOut() == "reflected"


def test_reductions_and_indexing_give_device_scalars_not_numpy_scalars():
    d = cp.asarray(np.arange(4.0))
    for got in (d.sum(), cp.max(d), d[1], cp.linalg.norm(d)):
        assert isinstance(got, cp.ndarray) and got.ndim == 0


def test_out_and_in_place_operators_keep_the_device_array():
    d = cp.asarray(np.ones(3))
    out = cp.zeros(3)
    assert cp.add(d, d, out=out) is out
    d += 1.0
    np.testing.assert_array_equal(out.get() + d.get(), [4.0, 4.0, 4.0])


def test_random_has_only_what_cupy_random_has():
    g = cp.random.default_rng(0)
    assert isinstance(g.standard_normal((2, 3), dtype=np.float32), cp.ndarray)
    assert g.integers(0, 5, size=4).dtype == np.int64
    for missing in ("permutation", "choice", "shuffle", "permuted", "normal"):
        with pytest.raises(AttributeError, match=missing):
            getattr(g, missing)


# ------------------------------------------------------------------ the transfer counter
@pytest.mark.parametrize(("read", "kind"), [
    (lambda a: a.get(), "get"), (lambda a: cp.asnumpy(a), "get"), (lambda a: a.item(), "item"),
    (lambda a: float(a), "float"), (lambda a: int(a), "int"), (lambda a: bool(a), "bool"),
    (lambda a: a.tolist(), "tolist"), (lambda a: repr(a), "print"), (lambda a: str(a), "print"),
    (lambda a: f"{a:.3f}", "print"), (lambda a: [0, 1, 2][a], "index"),
])
def test_each_device_to_host_transfer_is_counted(read, kind):
    a = cp.asarray(np.asarray(1))
    cp.reset_transfers()
    read(a)
    assert cp.transfers() == 1 and cp.transfer_counts() == {kind: 1}
    cp.reset_transfers()
    assert cp.transfers() == 0 and cp.transfer_counts() == {}


def test_device_work_is_not_counted():
    cp.reset_transfers()
    a = cp.asarray(np.arange(12.0).reshape(3, 4))  # host to device: one copy, no read
    b = (cp.exp(a) @ a.T).sum(axis=0) / 3.0
    b = cp.where(b > 1, 0.0, b)  # the masked dense form of b[b > 1] = 0.0
    b = cp.where(b > 0.5, b * 2, 1.5) + cp.zeros(3) + cp.arange(3)
    assert b.shape == (3,) and cp.transfers() == 0
    assert cp.transfers("to_device") == 1 and cp.transfer_counts("to_device") == {"asarray": 1}


@pytest.mark.parametrize(("copy", "kind"), [
    (lambda d: cp.asarray(np.ones(3)), "asarray"), (lambda d: cp.asarray(0.5), "asarray"),
    (lambda d: cp.array([1.0, 2.0]), "array"), (lambda d: cp.array([d[0], 2.0]), "array"),
    (lambda d: d.set(np.zeros(3)), "set"), (lambda d: d[np.array([0, 2])], "index"),
    (lambda d: d[[0, 2]], "index"), (lambda d: d.__setitem__((slice(None),), np.ones(3)),
                                     "setitem"),
], ids=["asarray", "asarray-scalar", "array-list", "array-mixed", "set", "numpy-index",
        "list-index", "setitem"])
def test_each_host_to_device_copy_is_counted(copy, kind):
    d = cp.zeros(3)
    cp.reset_transfers()
    copy(d)
    assert cp.transfer_counts("to_device") == {kind: 1} and cp.transfers() == 0


def test_scalar_operands_and_device_arrays_are_not_copies():
    d = cp.arange(4.0)
    cp.reset_transfers()
    _ = (d * 2.0 + 1, d ** np.float64(2), cp.maximum(d, 0.5), cp.where(d > 1, d, 0.0),
         cp.array([d, d]), cp.asarray(d), cp.asarray(d, dtype=np.float32), d[1:3],
         d[cp.arange(2)], cp.count_nonzero(d > 1), (d > 1).sum())
    d[1:3] = 0.0
    d[...] = cp.maximum(d, 1.0)
    assert cp.transfers("to_device") == 0 and cp.transfers() == 0


# what each data-dependent shape costs on CuPy (cupy/_core/_routines_indexing.pyx,
# _prepare_mask_indexing_single and _ndarray_argwhere; cupy/_manipulation/add_remove.py,
# _unique_1d; cupy/_statistics/histogram.py, bincount): reads to the host, copies to the device
_SIZE_FROM_DATA = {
    "mask-read": (lambda d, m, i: d[m], 1, 0),
    "mask-read-2d-beside-an-index": (lambda d, m, i: d.reshape(2, 3)[m[:2], 1:], 1, 0),
    "mask-assign-scalar": (lambda d, m, i: d.__setitem__(m, 0.0), 1, 1),
    "mask-assign-device": (lambda d, m, i: d.__setitem__(m, d[m] * 2), 2, 0),
    "mask-assign-nothing-true": (lambda d, m, i: d.__setitem__(d > 1e30, 0.0), 1, 0),
    "nonzero": (lambda d, m, i: cp.nonzero(m), 1, 0),
    "nonzero-method": (lambda d, m, i: m.nonzero(), 1, 0),
    "flatnonzero": (lambda d, m, i: cp.flatnonzero(d), 1, 0),
    "argwhere": (lambda d, m, i: cp.argwhere(m), 1, 0),
    "where-one-argument": (lambda d, m, i: cp.where(m), 1, 0),
    "unique": (lambda d, m, i: cp.unique(i), 1, 0),
    "unique-index-counts": (lambda d, m, i: cp.unique(i, return_index=True,
                                                      return_counts=True), 3, 0),
    "compress": (lambda d, m, i: cp.compress(m, d), 1, 0),
    "compress-method": (lambda d, m, i: d.compress(m), 1, 0),
    "extract": (lambda d, m, i: cp.extract(m, d), 1, 0),
    "bincount": (lambda d, m, i: cp.bincount(i), 2, 0),
    "bincount-minlength": (lambda d, m, i: cp.bincount(i, minlength=9), 2, 0),
    "empty-mask": (lambda d, m, i: d[:0][m[:0]], 0, 0),
    "empty-nonzero": (lambda d, m, i: cp.nonzero(m[:0]), 0, 0),
}


@pytest.mark.parametrize(("op", "reads", "copies"), list(_SIZE_FROM_DATA.values()),
                         ids=list(_SIZE_FROM_DATA))
def test_data_dependent_shapes_are_counted_as_reads(op, reads, copies):
    """CuPy reads a count back to the host to allocate these results: a wait for the GPU
    like ``.item()``, counted as ``"size_from_data"`` by every counter."""
    d = cp.arange(6.0)
    m, i = d > 2.5, cp.asarray(np.array([3, 1, 3, 0, 7, 1]))
    with cp.counting() as c:
        op(d, m, i)
    assert c.to_host == reads and c.kinds("to_host") == ({"size_from_data": reads} if reads
                                                         else {}), c.kinds()
    assert c.to_device == copies, c.kinds()


def test_device_repeats_are_refused_as_by_cupy():
    d = cp.arange(3.0)
    np.testing.assert_array_equal(cp.repeat(d, [1, 0, 2]).get(), [0.0, 2.0, 2.0])
    for repeat in (lambda r: cp.repeat(d, r), lambda r: d.repeat(r)):
        with pytest.raises(ValueError, match="cannot be specified as `repeats`"):
            repeat(cp.asarray(np.array([1, 0, 2])))


# ------------------------------------------------------------------ lists, as CuPy takes them
@pytest.mark.parametrize("op", [
    lambda x: cp.maximum([0.0, 1.0, 2.0], x), lambda x: cp.add(x, [1.0, 1.0, 1.0]),
    lambda x: cp.where(x > 0, [1.0, 2.0, 3.0], x), lambda x: cp.where([True, False, True], x, x),
    lambda x: cp.matmul(x, [1.0, 2.0, 3.0]), lambda x: cp.clip(x, [0.0] * 3, 1.0),
    lambda x: cp.exp([1.0]), lambda x: x + [1.0, 1.0, 1.0], lambda x: [1.0, 1.0, 1.0] * x,
    lambda x: x < [1.0, 1.0, 1.0],
], ids=["maximum", "add", "where-x", "where-condition", "matmul", "clip", "exp", "d+list",
        "list*d", "d<list"])
def test_lists_are_refused_as_ufunc_operands(op):
    """CuPy's ufuncs take arrays and scalars only (``_preprocess_args`` in
    cupy/_core/_kernel.pyx makes anything else a CScalar, which refuses it)."""
    with pytest.raises(TypeError, match=r"Unsupported type <class 'list'>|NotImplemented"):
        op(cp.arange(3.0))


@pytest.mark.parametrize(("op", "message"), [
    (lambda x: cp.concatenate([x, [1.0]]), "Only cupy arrays can be concatenated"),
    (lambda x: cp.stack([x, 1.0]), "Only cupy arrays can be concatenated"),
    (lambda x: cp.sum([x, x]), r"Unsupported type <class 'list'>"),
    (lambda x: cp.mean((x, x)), r"Unsupported type <class 'tuple'>"),
    (lambda x: cp.linalg.norm([1.0, 2.0]), r"Unsupported type <class 'list'>"),
], ids=["concatenate", "stack", "sum", "mean", "linalg.norm"])
def test_lists_are_refused_as_arrays(op, message):
    """``cupy.concatenate`` checks every entry is a cupy.ndarray; ``cupy.sum(a)`` calls
    ``a.sum`` (a list has none)."""
    with pytest.raises(TypeError, match=message):
        op(cp.arange(3.0))


def test_sequences_cupy_takes_are_accepted():
    """Shapes, axes, pad widths, sequences of device arrays and host data in constructors
    and indices stay accepted."""
    x = cp.arange(6.0).reshape(2, 3)
    assert cp.transpose(x, (1, 0)).shape == (3, 2) and cp.reshape(x, [3, 2]).shape == (3, 2)
    assert cp.sum(x, axis=(0, 1)).get() == 15.0 and cp.pad(x, [(1, 1), (0, 0)]).shape == (4, 3)
    assert cp.concatenate((x, x)).shape == (4, 3) and cp.stack([x, x]).shape == (2, 2, 3)
    assert float(cp.einsum("ij,ij->", x, x)) == 55.0
    assert cp.array([[1.0, 2.0]]).shape == (1, 2) and x[[1, 0], [0, 0]].shape == (2,)


def test_a_comparison_reads_a_0d_numpy_array_as_a_scalar_as_cupy_does():
    """CuPy's ``ndarray.__richcmp__`` turns a 0-d NumPy ``other`` into ``other.item()``, and
    its ``__array_ufunc__`` does the same for NumPy's comparison ufuncs (numpy/numpy#12142),
    so both are accepted (cupy/_core/core.pyx); CuPy's own ``cupy.less`` and the arithmetic
    operators refuse the NumPy array, as does a comparison with an n-d one."""
    x = cp.arange(3.0)
    np.testing.assert_array_equal((x < np.array(1.0)).get(), [True, False, False])
    np.testing.assert_array_equal(np.less(x, np.array(1.0)).get(), [True, False, False])
    np.testing.assert_array_equal((np.array(1.0) < x).get(), [False, False, True])
    for op in (lambda: cp.less(x, np.array(1.0)), lambda: x + np.array(1.0),
               lambda: x < np.array([1.0, 1.0, 1.0])):
        with pytest.raises(TypeError, match=r"Unsupported type <class 'numpy\.ndarray'>"):
            op()


def test_counting_counts_a_block_in_both_directions_and_nests():
    d = cp.asarray(np.arange(3.0))
    with cp.counting() as outer:
        float(d[0])
        with cp.counting() as inner:
            cp.asarray(np.ones(2))
            assert inner.to_device == 1 and inner.to_host == 0  # live inside the block
        d.get()
    float(d[1])  # after the block: not counted by it
    assert (outer.to_host, outer.to_device) == (2, 1) and (inner.to_host, inner.to_device) == (0, 1)
    assert outer.kinds() == {"to_host": {"float": 1, "get": 1}, "to_device": {"asarray": 1}}
    assert outer.kinds("to_device") == {"asarray": 1}
    with pytest.raises(ValueError, match="direction must be one of"):
        cp.transfers("up")


# ------------------------------------------------------------------ scalar promotion
@pytest.fixture(params=["13", "14"])
def promotion(request):
    previous = cp.set_promotion(request.param)
    yield request.param
    cp.set_promotion(previous)


# (array dtype, scalar, op, dtype under CuPy 13, dtype under CuPy 14 = NumPy 2), from CuPy's
# kernel dispatch (cupy/_core/_kernel.pyx: v13 _min_scalar_type, v14 weak scalars)
_PROMOTION_CASES = [
    ("float32", 2.0, "mul", "float32", "float32"),
    ("float32", 2, "add", "float32", "float32"),
    ("float32", True, "add", "float32", "float32"),
    ("float32", np.float64(0.5), "mul", "float32", "float64"),
    ("float32", 1e300, "mul", "float64", "float32"),
    ("float16", 1e5, "add", "float32", "float16"),
    ("float64", np.float32(0.5), "mul", "float64", "float64"),
    ("int8", 1000, "add", "int16", None),  # NumPy 2: OverflowError
    ("int32", np.int64(1), "add", "int32", "int64"),
    ("uint8", 1, "add", "uint8", "uint8"),
    ("int8", 1, "add", "int8", "int8"),
    ("int32", 0.5, "mul", "float64", "float64"),
    ("int8", np.float32(0.5), "mul", "float32", "float32"),
    ("bool", 1, "add", "int64", "int64"),
    ("float32", 1j, "add", "complex128", "complex64"),
    ("float32", 0.0, "where", "float32", "float32"),
    ("float32", np.float64(0.0), "where", "float32", "float64"),
    ("float32", np.float64(1.0), "maximum", "float32", "float64"),
    ("int8", 1000, "less", "bool", "bool"),
]


@pytest.mark.parametrize(("dtype", "scalar", "op", "want13", "want14"), _PROMOTION_CASES,
                         ids=[f"{c[0]}-{c[2]}-{type(c[1]).__name__}({c[1]})"
                              for c in _PROMOTION_CASES])
def test_scalar_promotion_follows_the_imitated_cupy(promotion, dtype, scalar, op, want13,
                                                    want14):
    d = cp.ones(3, dtype=dtype)
    calls = {"mul": lambda: d * scalar, "add": lambda: scalar + d,
             "where": lambda: cp.where(d > 0, d, scalar), "maximum": lambda: cp.maximum(d, scalar),
             "less": lambda: d < scalar}
    want = want13 if promotion == "13" else want14
    if want is None:
        with pytest.raises(OverflowError):
            calls[op]()
        return
    with np.errstate(over="ignore"):
        got = calls[op]()
    assert got.dtype == np.dtype(want)
    if promotion == "14":  # NumPy 2's own rule, the CPU's
        with np.errstate(over="ignore"):
            assert got.dtype == {"mul": lambda a: a * scalar, "add": lambda a: scalar + a,
                                 "where": lambda a: np.where(a > 0, a, scalar),
                                 "maximum": lambda a: np.maximum(a, scalar),
                                 "less": lambda a: a < scalar}[op](np.ones(3, dtype=dtype)).dtype


def test_zero_dim_device_arrays_are_strong_in_both_cupy_versions(promotion):
    """Unlike NumPy 1 (value-based for 0-d arrays), CuPy promotes a 0-d array by its dtype."""
    d = cp.ones(3, dtype=np.float32)
    assert (d * cp.asarray(0.5)).dtype == np.float64
    assert (cp.ones(2, dtype=np.int8) + cp.asarray(1)).dtype == np.int64


def test_set_promotion_refuses_unknown_versions():
    with pytest.raises(ValueError, match="one of"):
        cp.set_promotion("12")
    assert cp.get_promotion() in cp.PROMOTIONS


def test_a_training_step_on_the_standin_reads_the_loss_once(on_standin):
    """A whole forward and backward pass stays on the device until the loss is read."""
    x = mt.tensor(np.random.default_rng(0).standard_normal((4, 8)), device="cuda",
                  requires_grad=True)
    loss = F.gelu(x).sum()
    loss.backward()
    assert x.grad is not None and backend._is_cupy_array(loss.data)
    n_before_read = cp.transfers()
    float(loss.item())
    assert cp.transfers() == n_before_read + 1


# ------------------------------------------------------------------ fault injection
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "composed"])
def test_an_injected_host_device_mix_makes_an_op_fail(on_standin, monkeypatch, fused):
    """Break ``backend.erf`` so that it hands back a host copy of its result (the classic GPU
    bug: one step of an op done on the host): the float64 GELU that uses it passes on the CPU
    but fails on the stand-in, which refuses the NumPy operand the next step meets."""
    data = np.linspace(-2.0, 2.0, 8)
    real_erf = backend.erf

    def leaky_erf(a):
        return backend.to_numpy(real_erf(a))  # the injected fault

    with F.use_fused(fused):
        want = F.gelu(mt.tensor(data, device="cuda")).data.get()  # unbroken: runs
        monkeypatch.setattr(backend, "erf", leaky_erf)
        got_cpu = F.gelu(mt.tensor(data)).data  # NumPy does not see the mix
        np.testing.assert_allclose(got_cpu, want, rtol=1e-12)
        # fused: the stand-in refuses the NumPy operand; composed: the host array becomes a
        # CPU tensor and the library's own device check refuses the mix
        refusal = (r"Unsupported type <class 'numpy\.ndarray'>" if fused
                   else r"Mul: inputs are on different devices \(cuda, cpu\)")
        with pytest.raises((TypeError, ValueError), match=refusal):
            F.gelu(mt.tensor(data, device="cuda"))


def test_an_injected_numpy_call_on_a_device_array_fails(on_standin):
    """The other half of a host/device mix: NumPy called on a device array."""
    x = mt.tensor(np.ones(3), device="cuda")
    with pytest.raises(TypeError, match=IMPLICIT):
        np.asarray(x.data)


# ------------------------------------------------------------------ whole models
def _vit_step(rng):
    from minitransformer import models

    vit = models.VisionTransformer(models.ViTConfig.preset("vit-nano", num_classes=10))
    vit = vit.to("cuda")
    imgs = mt.tensor(rng.standard_normal((4, 3, 32, 32)).astype(np.float32), device="cuda")
    labels = mt.tensor(rng.integers(0, 10, 4), device="cuda")

    def step():
        loss = F.cross_entropy(vit(imgs), labels)
        loss.backward()
        return loss

    return step


def _text_step(rng):
    """The text encoder's tokens, logits tied to the embedding (an MLM-like loss), a scalar
    term with Python numbers."""
    from minitransformer import models

    text = models.TextTransformer(models.TextConfig.preset("text-nano")).to("cuda")
    ids = mt.tensor(rng.integers(0, 128, (4, 16)), device="cuda")

    def step():
        tokens = text.forward_tokens(ids)  # (B, T, D)
        logits = tokens @ text.token_embed.weight.T  # (B, T, V)
        loss = F.cross_entropy(logits, ids) * 0.5 + (tokens * tokens).mean() * 1e-3 + 1.0
        loss.backward()
        return loss

    return step


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "composed"])
@pytest.mark.parametrize("model", ["vit", "text"])
def test_a_training_step_makes_no_transfer_with_data_checks_off(on_standin, model, fused):
    """Issue 14: forward + backward of a tiny ViT and of the text model, with the data checks
    switched off as a training loop does after validating its data, neither reads the device
    (0 device-to-host) nor copies a number to it (0 host-to-device). With the checks on, each
    checking op reads once: the cross-entropy's targets, the embedding's ids. (The same steps
    before issue 14's changes to the ops, there being no setting: fused ViT 1 read and 0
    copies, text 4 reads and 3 copies; composed ViT 3 reads and 14 copies, text 6 reads and 17
    copies.)"""
    rng = np.random.default_rng(0)
    step = (_vit_step if model == "vit" else _text_step)(rng)
    with F.use_fused(fused):
        step()  # the first step made the cached vectors of ones
        with F.use_data_checks(False), on_standin.counting() as off:
            loss = step()
        with on_standin.counting() as on:
            step()
    assert (off.to_host, off.to_device) == (0, 0), off.kinds()
    assert on.to_device == 0 and on.to_host == (1 if model == "vit" else 2), on.kinds()
    assert np.isfinite(float(loss.item()))
