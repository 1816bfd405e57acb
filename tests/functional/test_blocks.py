"""Row blocks (``functional/blocks.py``): the fused softmax, layer norm, GELU and attention
run on cache-sized blocks of rows (or, with Numba's compiled kernels, one span of rows per
thread), shared among threads. The suite's other tests use arrays that fit in one block, so
here blocks are made a few rows small and three threads share them: results must equal the
composed ops and plain-NumPy float64 math, with either CPU code (``cpu_kernels``)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import erf

import minitransformer as mt
from minitransformer import backend
from minitransformer import functional as F
from minitransformer.functional import blocks
from minitransformer.functional.activation import normal_cdf_and_gauss
from tests.functional.helpers import host, leaf


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Blocks of 48 bytes (a row or a few), every block run handed to 3 threads."""
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 48)
    monkeypatch.setattr(blocks, "PARALLEL_BYTES", 1)
    before = backend.num_threads()
    backend.set_num_threads(3)
    yield
    backend.set_num_threads(before)


# ------------------------------------------------------------------ the block runner itself
@given(n_rows=st.integers(0, 200), row_bytes=st.integers(1, 100_000))
def test_row_blocks_cover_every_row_once_in_order(n_rows, row_bytes):
    spans = blocks.row_blocks(n_rows, row_bytes)
    covered = [r for lo, hi in spans for r in range(lo, hi)]
    assert covered == list(range(n_rows))
    for lo, hi in spans:  # whole rows, within the budget unless one row alone exceeds it
        assert hi - lo == 1 or (hi - lo) * row_bytes <= blocks.BLOCK_BYTES


@given(n_rows=st.integers(0, 200), total_bytes=st.integers(0, 10**7),
       threads=st.integers(1, 5))
def test_thread_spans_give_each_thread_one_contiguous_run(n_rows, total_bytes, threads):
    before = backend.num_threads()
    backend.set_num_threads(threads)
    try:
        spans = blocks.thread_spans(n_rows, total_bytes)
    finally:
        backend.set_num_threads(before)
    covered = [r for lo, hi in spans for r in range(lo, hi)]
    assert covered == list(range(n_rows))
    # as many threads as run_blocks would use: one per PARALLEL_BYTES of work, at most one a row
    assert len(spans) == min(threads, max(1, n_rows), max(1, total_bytes // blocks.PARALLEL_BYTES))
    sizes = [hi - lo for lo, hi in spans]
    assert max(sizes) - min(sizes) <= 1  # an even share each


def test_run_blocks_calls_each_block_once_across_threads(tiny_blocks):
    spans = blocks.row_blocks(30, 16)
    seen, threads = [], set()
    lock = threading.Lock()

    def kernel(i, lo, hi):
        with lock:
            seen.append((i, lo, hi))
            threads.add(threading.get_ident())

    blocks.run_blocks(kernel, spans, total_bytes=10**9)
    assert sorted(seen) == [(i, lo, hi) for i, (lo, hi) in enumerate(spans)]
    assert len(threads) > 1


def test_run_blocks_raises_a_workers_error_after_all_runs_finish(tiny_blocks):
    spans = blocks.row_blocks(30, 16)
    done = []

    def kernel(i, lo, hi):
        if i == len(spans) - 1:  # the last block belongs to a worker thread's run
            raise RuntimeError(f"block {i} failed")
        done.append(i)

    with pytest.raises(RuntimeError, match=f"block {len(spans) - 1} failed"):
        blocks.run_blocks(kernel, spans, total_bytes=10**9)
    assert sorted(done) == list(range(len(spans) - 1))


def test_num_threads_settings_and_their_errors(monkeypatch):
    before = backend.num_threads()
    try:
        backend.set_num_threads(2)
        assert backend.num_threads() == 2
        for bad in (0, -1, 1.5, True):
            with pytest.raises(ValueError, match="set_num_threads"):
                backend.set_num_threads(bad)
        monkeypatch.setenv("MINITRANSFORMER_NUM_THREADS", "four")
        with pytest.raises(ValueError, match="MINITRANSFORMER_NUM_THREADS='four'"):
            backend._threads_from_environment()
        monkeypatch.setenv("MINITRANSFORMER_NUM_THREADS", "0")
        with pytest.raises(ValueError, match="at least 1"):
            backend._threads_from_environment()
        monkeypatch.setenv("MINITRANSFORMER_NUM_THREADS", "3")
        assert backend._threads_from_environment() == 3
        monkeypatch.delenv("MINITRANSFORMER_NUM_THREADS")
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert backend._threads_from_environment() == 1
    finally:
        backend.set_num_threads(before)


# ------------------------------------------------------------------ the ops, many blocks
def _ln_ref(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _gelu_ref(x, approximate):
    if approximate == "none":
        return 0.5 * x * (1 + erf(x / np.sqrt(2)))
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _softmax_ref(x):
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


CASES = {
    "gelu": (lambda x, w, b: F.gelu(x), lambda x, w, b: _gelu_ref(x, "none")),
    "gelu_tanh": (lambda x, w, b: F.gelu(x, approximate="tanh"),
                  lambda x, w, b: _gelu_ref(x, "tanh")),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, w, b, 1e-6),
                   lambda x, w, b: _ln_ref(x, w, b, 1e-6)),
    "layer_norm_no_affine": (lambda x, w, b: F.layer_norm(x, None, None, 1e-6),
                             lambda x, w, b: _ln_ref(x, 1.0, 0.0, 1e-6)),
    "softmax": (lambda x, w, b: F.softmax(x, axis=-1), lambda x, w, b: _softmax_ref(x)),
}


@pytest.mark.parametrize("name", sorted(CASES))
@given(rows=st.integers(1, 40), width=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_blocked_ops_match_numpy_and_the_composed_gradients(tiny_blocks, cpu_kernels, device,
                                                            name, rows, width, seed):
    """Forward against float64 NumPy; input and parameter gradients (random upstream
    gradient) against the composed op, whose gradient the engine derives."""
    fn, ref = CASES[name]
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((rows, width)) * 3, rng.standard_normal(width),
          rng.standard_normal(width)]
    gy = rng.standard_normal((rows, width))
    grads = {}
    for fused in (True, False):
        x, w, b = (leaf(a, device) for a in xs)
        with F.use_fused(fused):
            y = fn(x, w, b)
        if fused:
            np.testing.assert_allclose(host(y), ref(*xs), rtol=1e-12, atol=1e-12)
        y.backward(mt.backend.to_device(gy, device))
        grads[fused] = [host(t.grad) if t.grad is not None else None for t in (x, w, b)]
    for g_fused, g_composed in zip(grads[True], grads[False]):
        if g_composed is None:
            assert g_fused is None
        else:
            np.testing.assert_allclose(g_fused, g_composed, rtol=1e-10, atol=1e-12)


@given(B=st.integers(1, 3), T=st.integers(1, 7), seed=st.integers(0, 2**16))
def test_blocked_attention_matches_composed(tiny_blocks, cpu_kernels, device, B, T, seed):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal((B, 2, T, 3)) for _ in range(3)]
    g_out = rng.standard_normal((B, 2, T, 3))
    results = {}
    for fused in (True, False):
        q, k, v = (leaf(a, device) for a in arrays)
        with F.use_fused(fused):
            out, probs = F.scaled_dot_product_attention(q, k, v)
        out.backward(mt.backend.to_device(g_out, device))
        results[fused] = [host(out), host(probs)] + [host(t.grad) for t in (q, k, v)]
    for a, b in zip(results[True], results[False]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@given(B=st.integers(1, 7), H=st.integers(1, 3), n=st.integers(1, 5), k=st.integers(1, 5),
       m=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_stacked_matmul_on_threads_equals_the_stacked_product(tiny_blocks, B, H, n, k, m,
                                                              seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((B, H, k, n)).swapaxes(-1, -2)  # a non-contiguous (B, H, n, k)
    b = rng.standard_normal((B, H, k, m))
    np.testing.assert_array_equal(blocks.stacked_matmul(a, b), a @ b)
    b1 = rng.standard_normal((1, H, k, m))  # broadcast leading axes: the plain product
    np.testing.assert_array_equal(blocks.stacked_matmul(a, b1), a @ b1)


# ------------------------------------------------------------------ the GELU's normal CDF
def test_normal_cdf_float32_is_within_its_documented_error():
    """Abramowitz & Stegun 7.1.26 in float32: <= 3.5e-7 from the float64 CDF on a dense grid
    (the formula alone: 7.5e-8; the rest is float32 rounding); float64 uses the exact erf."""
    x32 = np.linspace(-12, 12, 480_001).astype(np.float32)
    x = x32.astype(np.float64)  # the same values: the error is the function's, not x's rounding
    exact = 0.5 * (1 + erf(x / np.sqrt(2)))
    cdf32, gauss32 = normal_cdf_and_gauss(x32)
    assert cdf32.dtype == np.float32
    assert np.abs(cdf32 - exact).max() <= 3.5e-7
    # e^{-x^2/2} in float32: x^2 rounds, so small values carry a large relative error; what
    # the GELU needs is the absolute error, here within 2 float32 ulps of 1
    assert np.abs(gauss32 - np.exp(-x**2 / 2)).max() <= 2 * np.finfo(np.float32).eps
    cdf64, gauss64 = normal_cdf_and_gauss(x)
    np.testing.assert_allclose(cdf64, exact, rtol=1e-15, atol=1e-16)
    np.testing.assert_allclose(gauss64, np.exp(-x**2 / 2), rtol=1e-15)
    tails = normal_cdf_and_gauss(np.array([-np.inf, np.inf, 0.0], dtype=np.float32))[0]
    np.testing.assert_array_equal(tails, [0.0, 1.0, 0.5])


def test_gelu_saves_only_its_derivative_and_nothing_under_no_grad(device, rng):
    x = leaf(rng.standard_normal((4, 5)).astype(np.float32), device)
    y = F.gelu(x)
    assert len(y.creator.saved) == 1 and y.creator.saved[0].shape == (20,)
    with mt.no_grad():
        z = F.gelu(x)
    assert z.creator is None
    np.testing.assert_array_equal(host(z), host(y))
