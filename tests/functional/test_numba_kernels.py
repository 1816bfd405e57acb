"""The compiled CPU kernels (``functional/numba_kernels.py``) against plain-NumPy float64 math:
their hand-made pieces (the float32 exp, the max through integer bit patterns, the bitcast),
the softmax, layer norm and GELU kernels on both dtypes, NaN and inf handling, and the switch
that chooses them (``use_numba``, ``MINITRANSFORMER_NUMBA``, a missing Numba).

The ops' own tests run the kernels too (the ``fused`` fixture), and ``test_blocks.py`` runs
them on several threads; here each piece is checked on its own, over wide values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minitransformer as mt
from minitransformer import functional as F
from minitransformer.functional import fusion
from tests.functional.helpers import leaf

numba = pytest.importorskip("numba", reason="the compiled kernels need Numba")
K = pytest.importorskip("minitransformer.functional.numba_kernels")

FLOAT32_EPS = float(np.finfo(np.float32).eps)  # 2^-23, the spacing of floats in [1, 2)


# Small jitted drivers: the helpers run only inside compiled code.
@numba.njit
def _exp_rows(x, m, y):  # y = e^{x - m} row by row, through exp_nonpositive
    totals = np.empty(x.shape[0], x.dtype)
    for i in range(x.shape[0]):
        totals[i] = K.exp_and_sum(x, m[i], y, i)
    return totals


@numba.njit
def _row_maxes(x):
    bits = K.int_view(x)
    out = np.empty(x.shape[0], x.dtype)
    for i in range(x.shape[0]):
        out[i] = K.row_max(bits, i)
    return out


@numba.njit
def _floats_from_bits(bits, out):
    for j in range(bits.shape[0]):
        out[j] = K.float_from_bits(bits[j])


def _rows(dtype, elements, max_rows=6, max_width=40):
    return hnp.arrays(dtype, st.tuples(st.integers(1, max_rows), st.integers(1, max_width)),
                      elements=elements)


# ------------------------------------------------------------------------- the pieces
@given(t=_rows(np.float32, st.floats(-120, 0, width=32)))
def test_float32_exp_is_within_3_eps_of_float64_exp(t):
    # Measured over 5 million t in [-87.3, 0]: at most 2.5 eps relative (2.97e-7); NumPy's
    # own float32 exp reaches 1.7 eps there.
    y = np.empty_like(t)
    totals = _exp_rows(t, np.zeros(t.shape[0], np.float32), y)
    exact = np.exp(t.astype(np.float64))
    normal = exact >= np.finfo(np.float32).tiny  # results float32 can hold to full precision
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[normal], exact[normal], rtol=3 * FLOAT32_EPS, atol=0)
    assert np.all(y[~normal] <= np.finfo(np.float32).tiny)  # underflow: 0 (or nearly)
    assert np.all(y >= 0)
    np.testing.assert_allclose(totals, y.astype(np.float64).sum(axis=1), rtol=1e-6, atol=0)


def test_float32_exp_of_the_extremes():
    t = np.array([[0.0, -0.0, -88.0, -87.3, -1000.0, -np.inf, np.nan, -1e-30]], np.float32)
    y = np.empty_like(t)
    _exp_rows(t, np.zeros(1, np.float32), y)
    assert y[0, 0] == 1.0 and y[0, 1] == 1.0 and y[0, 7] == 1.0
    assert y[0, 2] == 0.0 and y[0, 4] == 0.0 and y[0, 5] == 0.0  # below e^-88: exactly 0
    np.testing.assert_allclose(y[0, 3], np.exp(np.float64(t[0, 3])), rtol=3 * FLOAT32_EPS)
    assert np.isnan(y[0, 6])  # a NaN is not clamped away


@given(t=_rows(np.float64, st.floats(-800, 0)))
def test_float64_exp_is_the_library_exp(t):
    y = np.empty_like(t)
    _exp_rows(t, np.zeros(t.shape[0]), y)
    np.testing.assert_allclose(y, np.exp(t), rtol=1e-15, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(data=st.data())
def test_row_max_through_the_bit_patterns_is_the_max(dtype, data):
    width = 32 if dtype == np.float32 else 64
    x = data.draw(_rows(dtype, st.floats(allow_nan=False, width=width)))
    if data.draw(st.booleans()):  # rows of negatives only, where the smallest pattern wins
        x = -np.abs(x)
    np.testing.assert_array_equal(_row_maxes(x), x.max(axis=1))


def test_row_max_of_signed_zeros_infinities_and_nan():
    x = np.array([[-0.0, -1.0], [0.0, -0.0], [-np.inf, -np.inf], [np.inf, 1.0],
                  [np.nan, 1.0]], np.float32)
    m = _row_maxes(x)
    assert m[0] == 0.0 and m[1] == 0.0  # -0.0 or 0.0: both are the max
    assert m[2] == -np.inf and m[3] == np.inf
    assert np.isnan(m[4])  # a NaN wins (its pattern is above +inf's)


@pytest.mark.parametrize("int_t, float_t", [(np.int32, np.float32), (np.int64, np.float64)])
@given(seed=st.integers(0, 2**32 - 1))
def test_float_from_bits_is_numpys_view(int_t, float_t, seed):
    bits = np.random.default_rng(seed).integers(np.iinfo(int_t).min, np.iinfo(int_t).max,
                                                size=16, dtype=int_t, endpoint=True)
    got = np.empty(bits.shape, float_t)
    _floats_from_bits(bits, got)
    np.testing.assert_array_equal(got.view(int_t), bits)  # bit for bit, NaN payloads too


# ------------------------------------------------------------------------- the kernels
def _softmax64(x):
    x = x.astype(np.float64)
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 2e-6), (np.float64, 1e-14)])
@given(data=st.data())
def test_softmax_kernels_match_float64_numpy(dtype, rtol, data):
    x = data.draw(_rows(dtype, st.floats(-50, 50, width=32)))
    gy = data.draw(hnp.arrays(dtype, x.shape, elements=st.floats(-3, 3, width=32)))
    y, gx = np.empty_like(x), np.empty_like(x)
    lse, y_alone = np.empty(x.shape[0], dtype), np.empty_like(x)
    K.softmax_forward(x, y, lse)
    K.softmax_forward(x, y_alone, None)
    np.testing.assert_array_equal(y_alone, y)  # asking for the logsumexp changes no bit of y
    K.softmax_backward(gy, y, gx)
    p = _softmax64(x)
    g = p * (gy - (gy * p).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(y, p, rtol=rtol, atol=rtol * 1e-3)
    x64 = x.astype(np.float64)
    m = x64.max(axis=1)
    lse64 = m + np.log(np.exp(x64 - m[:, None]).sum(axis=1))
    np.testing.assert_allclose(lse, lse64, rtol=rtol, atol=rtol)
    # gx sums D products of gy: its error scales with |gy| (plus the smallest normal float,
    # for a subnormal gy whose exact gradient float32 cannot hold)
    tiny = float(np.finfo(dtype).tiny)
    np.testing.assert_allclose(gx, g, rtol=rtol * 10, atol=rtol * 10 * np.abs(gy).max() + tiny)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_kernel_on_rows_numpy_finds_hard(dtype):
    big = np.finfo(dtype).max
    x = np.array([[-1000.0, 1.0, -np.inf], [big, -big, 0.0], [-np.inf, -np.inf, -np.inf],
                  [np.nan, 0.0, 1.0], [np.inf, 0.0, 1.0]], dtype)
    y = np.empty_like(x)
    K.softmax_forward(x, y, None)
    np.testing.assert_array_equal(y[0], [0.0, 1.0, 0.0])  # exact: e^-1001 and e^-inf are 0
    np.testing.assert_array_equal(y[1], [1.0, 0.0, 0.0])  # no overflow at the largest float
    with np.errstate(invalid="ignore"):
        expected_nan = np.isnan(_softmax64(x[2:]))  # NumPy: NaN rows for these three
    np.testing.assert_array_equal(np.isnan(y[2:]), expected_nan)


def test_softmax_kernel_works_in_place():
    x = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    expected = _softmax64(x)
    K.softmax_forward(x, x, None)
    np.testing.assert_allclose(x, expected, rtol=2e-6)


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 2e-5), (np.float64, 1e-12)])
@given(data=st.data())
def test_layer_norm_kernels_match_float64_numpy(dtype, rtol, data):
    n, d = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 40))
    seed = data.draw(st.integers(0, 2**16))
    eps = data.draw(st.sampled_from([1e-6, 1e-5, 0.1]))
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, d)) * 4 + rng.uniform(-10, 10)).astype(dtype)
    w, b = rng.standard_normal(d).astype(dtype), rng.standard_normal(d).astype(dtype)
    gy = rng.standard_normal((n, d)).astype(dtype)
    y, mean, rstd = np.empty_like(x), np.empty(n, dtype), np.empty(n, dtype)
    K.layer_norm_forward(x, w, b, eps, y, mean, rstd)
    gx, gw, gb = np.empty_like(x), np.zeros(d, dtype), np.zeros(d, dtype)
    K.layer_norm_backward(gy, x, mean, rstd, w, gx, gw, gb)

    x64, w64, gy64 = x.astype(np.float64), w.astype(np.float64), gy.astype(np.float64)
    mu = x64.mean(axis=1, keepdims=True)
    r = 1.0 / np.sqrt(((x64 - mu) ** 2).mean(axis=1, keepdims=True) + eps)
    xhat = (x64 - mu) * r
    g = gy64 * w64
    gx64 = r * (g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).mean(axis=1, keepdims=True))
    scale = np.sqrt(d) * float(np.abs(r).max())  # gradients grow with r and sum over d terms
    np.testing.assert_allclose(y, xhat * w64 + b, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(mean, mu[:, 0], rtol=rtol, atol=rtol * 10)
    np.testing.assert_allclose(rstd, r[:, 0], rtol=rtol)
    np.testing.assert_allclose(gx, gx64, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(gw, (gy64 * xhat).sum(axis=0), rtol=rtol, atol=rtol * n)
    np.testing.assert_allclose(gb, gy64.sum(axis=0), rtol=rtol, atol=rtol * n)


def test_layer_norm_backward_adds_to_the_parameter_gradients():
    rng = np.random.default_rng(1)
    x, gy = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    w, b = rng.standard_normal(5), rng.standard_normal(5)
    y, mean, rstd = np.empty_like(x), np.empty(3), np.empty(3)
    K.layer_norm_forward(x, w, b, 1e-5, y, mean, rstd)
    gx = np.empty_like(x)
    gw, gb = np.full(5, 10.0), np.full(5, -1.0)  # a previous block's share
    K.layer_norm_backward(gy, x, mean, rstd, w, gx, gw, gb)
    xhat = (x - mean[:, None]) * rstd[:, None]
    np.testing.assert_allclose(gw, 10.0 + (gy * xhat).sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(gb, -1.0 + gy.sum(axis=0), rtol=1e-12)


def _gelu64(x, approximate):
    from scipy.special import erf

    x = x.astype(np.float64)
    if approximate == "none":
        cdf = 0.5 * (1 + erf(x / np.sqrt(2)))
        return x * cdf, cdf + x * np.exp(-x * x / 2) / np.sqrt(2 * np.pi)
    c, a = np.sqrt(2 / np.pi), 0.044715
    t = np.tanh(c * (x + a * x**3))
    return 0.5 * x * (1 + t), 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * a * x * x)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-6), (np.float64, 1e-14)])
@given(x=hnp.arrays(np.float64, st.integers(1, 64), elements=st.floats(-12, 12)))
def test_gelu_kernels_match_float64_numpy(approximate, dtype, tol, x):
    # float32: A&S 7.1.26 (error <= 3.5e-7 in Phi) and the float32 exp, on inputs rounded to
    # float32; the tolerance scales with |x|, which multiplies Phi's error in y = x Phi(x).
    x = x.astype(dtype)
    kernel = K.gelu_erf_forward if approximate == "none" else K.gelu_tanh_forward
    y, slope, y_alone = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    kernel(x, y, slope)
    kernel(x, y_alone, None)  # under no_grad: the output only, bit for bit the same
    y64, slope64 = _gelu64(x, approximate)
    scale = 1 + np.abs(x.astype(np.float64))
    assert np.all(np.abs(y - y64) <= tol * scale)
    assert np.all(np.abs(slope - slope64) <= tol * scale)
    np.testing.assert_array_equal(y_alone, y)


def test_gelu_constants_are_the_numpy_paths():
    from minitransformer.functional import activation as A

    assert (K._SQRT_HALF, K._INV_SQRT_2PI, K._TANH_C, K._TANH_A, K._AS_P) == (
        A._SQRT_HALF, A._INV_SQRT_2PI, A._TANH_C, A._TANH_A, A._AS_P)
    assert (K._AS_A1, K._AS_A2, K._AS_A3, K._AS_A4, K._AS_A5) == A._AS_A


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_kernels_at_the_extremes(approximate):
    x = np.array([0.0, -0.0, 40.0, -40.0, np.inf, np.nan, 1e-30, -1e-30], np.float32)
    kernel = K.gelu_erf_forward if approximate == "none" else K.gelu_tanh_forward
    y, slope = np.empty_like(x), np.empty_like(x)
    kernel(x, y, slope)
    np.testing.assert_array_equal(y[:4], [0.0, 0.0, 40.0, 0.0])
    np.testing.assert_array_equal(slope[:4], [0.5, 0.5, 1.0, 0.0])
    assert y[4] == np.inf and np.isnan(y[5]) and np.isnan(slope[5])
    assert abs(y[6] - 0.5e-30) <= 1e-37 and abs(y[7] + 0.5e-30) <= 1e-37


# ------------------------------------------------------------------ the switch around them
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_fused_ops_give_the_same_results_with_and_without_numba(dtype):
    # softmax, layer norm, both GELUs, and the cross-entropies (their softmax and logsumexp)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 11, 16)).astype(dtype)
    w, b, gy = rng.standard_normal(16), rng.standard_normal(16), rng.standard_normal(x.shape)
    results = {}
    for numba_on in (True, False):
        with F.use_numba(numba_on):
            xs = [leaf(a.astype(dtype), "cpu") for a in (x, w, b)]
            s = F.softmax(xs[0], axis=-1)
            ln = F.layer_norm(xs[0], xs[1], xs[2])
            g1, g2 = F.gelu(xs[0]), F.gelu(xs[0], approximate="tanh")
            target = np.arange(33).reshape(3, 11) % 16
            ce = F.cross_entropy(xs[0], target, reduction="none")
            soft = F.soft_cross_entropy(xs[0], F.softmax(leaf(gy.astype(dtype), "cpu", False)))
            outs = [s, ln, g1, g2, ce, soft]
            total = None
            for k, o in enumerate(outs):  # a different random upstream gradient for each
                g = gy[..., 0] if o.ndim == 2 else gy  # the losses' (3, 11) outputs
                term = (o * leaf((g * (k + 1)).astype(dtype), "cpu", False)).sum()
                total = term if total is None else total + term
            total.backward()
            results[numba_on] = [o.numpy() for o in outs] + [t.grad for t in xs]
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for a, b_ in zip(results[True], results[False]):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b_, rtol=rtol, atol=rtol)


def test_numba_kernels_for_picks_float_numpy_arrays_only():
    assert F.numba_kernels_for(np.zeros((2, 3), np.float32)) is K
    assert F.numba_kernels_for(np.zeros((2, 3), np.float64)) is K
    assert F.numba_kernels_for(np.zeros((2, 3), np.float16)) is None
    assert F.numba_kernels_for(np.zeros((2, 3), np.int64)) is None
    with F.use_numba(False):
        assert F.numba_kernels_for(np.zeros((2, 3), np.float32)) is None
    assert F.numba_kernels_for(np.zeros((2, 3), np.float32)) is K


def test_float16_ops_still_run_without_the_kernels():
    x = mt.tensor(np.linspace(-2, 2, 12, dtype=np.float16).reshape(3, 4), requires_grad=True)
    y = F.softmax(x, axis=-1)
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.numpy().sum(axis=-1), 1.0, rtol=1e-3)


@pytest.mark.parametrize("value, allowed", [("", True), ("1", True), ("0", False),
                                            ("false", False), ("No", False), (" OFF ", False)])
def test_the_environment_variable_switches_numba_off(monkeypatch, value, allowed):
    monkeypatch.setenv("MINITRANSFORMER_NUMBA", value)
    assert fusion.numba_allowed_by_environment() is allowed


def test_use_numba_without_numba_names_the_extra(monkeypatch):
    monkeypatch.setattr(fusion._Fusion, "kernels", None)
    monkeypatch.setattr(fusion._Fusion, "missing", "ModuleNotFoundError: No module named 'numba'")
    with pytest.raises(ImportError, match=r"No module named 'numba'.*minitransformer\[fast\]"):
        with F.use_numba(True):
            pass
    assert F.numba_kernels_for(np.zeros(3, np.float32)) is None  # the ops fall back quietly
    with F.use_numba(False):  # switching them off needs no Numba
        pass
