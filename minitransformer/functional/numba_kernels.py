"""Single-pass CPU kernels for the fused softmax (with the attention's and the cross-entropies'),
layer norm and GELU, compiled by Numba.

Optional: ``pip install "minitransformer[fast]"`` installs Numba, and the fused ops then call
these kernels on float32/float64 NumPy arrays (``fusion.numba_kernels_for`` decides;
``F.use_numba(False)`` or ``MINITRANSFORMER_NUMBA=0`` switches them off). Without Numba the
same fused ops run as NumPy calls, and on the GPU as CuPy calls: the math is the same, and the
tests hold every version to one reference.

Why compile: NumPy makes one pass over its operands per call, so a softmax written as NumPy
calls (max, subtract, exp, sum, divide) is five passes over the activation, and NumPy's
float32 ``exp`` alone costs 1.3-2.4 ns per element on this project's CPUs. Here each row is
read once into the L1 cache, every step of the equation runs on it there, and the result is
written once. ``bench/ops.py`` times both against the speed of copying the same data.

The kernels take C-contiguous arrays (rows (N, D), or flat for the element-wise GELU) and
write into arrays the caller allocated. The fused Functions hand each thread one contiguous
span of rows (``blocks.thread_spans``); the kernels release the GIL (``nogil``).

Three details keep the loops vectorised (8 float32 lanes with AVX2):

* **fastmath, but not all of it.** ``reassoc`` lets LLVM split a row sum into 8 partial sums,
  ``contract`` fuses multiply-adds. The ``nnan``/``ninf`` flags are left off, so a NaN or inf
  in the input still reaches the output, where ``mt.debug_mode()`` names the op.
* **exp by hand.** LLVM turns ``math.exp`` into a call of the scalar C library function. The
  float32 ``exp`` here is Cephes' ``expf`` polynomial (``exp_nonpositive``), which LLVM
  vectorises; float64 (what the gradient checks run) keeps ``math.exp``.
* **max through the bit patterns.** LLVM does not vectorise a float max reduction without
  the no-NaN flag, so ``row_max`` takes the maximum of the floats read as integers.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

__all__ = [
    "exp_and_sum", "exp_nonpositive", "float_from_bits", "gelu_erf_forward", "gelu_tanh_forward",
    "int_view", "layer_norm_backward", "layer_norm_forward", "row_max", "softmax_backward",
    "softmax_forward",
]

_FASTMATH = {"reassoc", "contract", "arcp", "nsz"}  # not nnan / ninf: NaN and inf propagate
_JIT = {"fastmath": _FASTMATH, "nogil": True, "error_model": "numpy", "cache": True}
# Element-wise kernels need no reassociation to vectorise, and without it (or contraction)
# their output has the same bits whether or not they also compute the slope: LLVM fuses a
# multiply-add only where the product has no other use, and the slope adds uses.
_JIT_ELEMENTWISE = {**_JIT, "fastmath": False}

# Cephes expf: e^t = 2^k e^r with k = round(t / ln 2), r = t - k ln 2 in [-ln2/2, ln2/2], and
# e^r = 1 + r + r^2 P(r); ln 2 is split in two (hi has few bits, so k * hi is exact).
_F = np.float32
_LOG2E = _F(1.44269504088896341)
_LN2_HI, _LN2_LO = _F(0.693359375), _F(-2.12194440e-4)
_P0, _P1, _P2 = _F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3)
_P3, _P4, _P5 = _F(4.1665795894e-2), _F(1.6666665459e-1), _F(5.0000001201e-1)
_EXP_MIN = _F(-88.0)  # k = -127 from here down: 2^k and e^t are 0 (e^-88 = 6e-39 is subnormal)

# GELU constants, the same as functional/activation.py's for the NumPy calls (a test checks).
# They are not imported from there: Numba's on-disk cache is keyed on this file alone, so a
# constant changed elsewhere would leave stale compiled kernels.
_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TANH_C = math.sqrt(2.0 / math.pi)
_TANH_A = 0.044715
# Abramowitz & Stegun 7.1.26: erfc(z) = t (a1 + t (a2 + ... + t a5)) e^{-z^2}, t = 1/(1 + p z)
_AS_P = 0.3275911
_AS_A1, _AS_A2, _AS_A3 = 0.254829592, -0.284496736, 1.421413741
_AS_A4, _AS_A5 = -1.453152027, 1.061405429


# ------------------------------------------------------------------- scalar building blocks
@intrinsic
def float_from_bits(typingctx, bits):  # noqa: ANN001, ANN201
    """The float whose IEEE bit pattern is the integer ``bits`` (int32 -> float32, int64 ->
    float64): one LLVM ``bitcast``, free in a vector register. (NumPy's ``.view`` does this
    for arrays; Numba has no scalar form.)"""
    if bits == types.int32:
        signature, float_type = types.float32(types.int32), ir.FloatType()
    elif bits == types.int64:
        signature, float_type = types.float64(types.int64), ir.DoubleType()
    else:
        return None

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        return builder.bitcast(args[0], float_type)

    return signature, codegen


def exp_nonpositive(t):  # noqa: ANN001, ANN201 (typed by Numba through the overload)
    """$e^t$ for $t \\le 0$ (a NaN gives NaN). float32: Cephes' ``expf``, within 3 float32 eps
    of the exact value (measured: 2.5 eps at most; NumPy's float32 exp, 1.7), and exactly 0
    below $t = -88$. float64: ``math.exp``."""
    raise NotImplementedError("exp_nonpositive runs only inside Numba-compiled code")


@overload(exp_nonpositive, jit_options={"fastmath": _FASTMATH})
def _exp_nonpositive(t):
    if t != types.float32:
        return lambda t: math.exp(t)

    def impl(t):
        c = _EXP_MIN if t < _EXP_MIN else t  # a NaN stays NaN (NaN < anything is False)
        k = np.floor(c * _LOG2E + _F(0.5))  # nearest integer to t / ln 2, >= -127
        r = c - k * _LN2_HI - k * _LN2_LO
        p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
        # 2^k as a float: only the exponent field, k + 127, in bits 23-30 (k = -127 gives the
        # bits of 0.0). Made in float, exact for a small integer times 2^23, so the loop stays
        # 8 lanes of int32.
        two_k = float_from_bits(np.int32(k * _F(8388608.0) + _F(127 * 8388608.0)))
        return (p * r * r + r + _F(1.0)) * two_k  # e^r 2^k

    return impl


def int_view(a):  # noqa: ANN001, ANN201
    """The float array ``a`` read as integers of the same width (int32 for float32, int64 for
    float64): the same memory, no copy."""
    raise NotImplementedError("int_view runs only inside Numba-compiled code")


@overload(int_view)
def _int_view(a):
    int_t = np.int32 if a.dtype == types.float32 else np.int64
    return lambda a: a.view(int_t)


@numba.njit(**_JIT)
def row_max(x_bits, i):
    """max of row i of a float array, given its ``int_view``, as a float.

    IEEE floats compare like sign-magnitude integers. Read as two's-complement integers of
    the same width, the largest non-negative float has the largest bit pattern; and if every
    float is negative (sign bit set), the largest has the smallest magnitude, which is the
    smallest (most negative) pattern. Integer max and min reductions vectorise, where LLVM
    leaves a float max scalar without the no-NaN flag. A NaN either wins or is caught later
    (x - m is NaN), so the row comes out NaN either way, as with NumPy."""
    hi = x_bits[i, 0]
    lo = x_bits[i, 0]
    for j in range(1, x_bits.shape[1]):
        hi = max(hi, x_bits[i, j])
        lo = min(lo, x_bits[i, j])
    return float_from_bits(x_bits.dtype.type(hi if hi >= 0 else lo))


@numba.njit(**_JIT)
def exp_and_sum(x, m, y, i):
    """Row i: $y_j = e^{x_j - m}$ for $m \\ge \\max_j x_j$ (so every exponent is <= 0); returns
    $\\sum_j y_j$. y may be x."""
    total = y.dtype.type(0)
    for j in range(x.shape[1]):
        e = exp_nonpositive(x[i, j] - m)
        y[i, j] = e
        total += e
    return total


# ---------------------------------------------------------------------------------- softmax
@numba.njit(**_JIT)
def softmax_forward(x, y, lse):
    """y = softmax(x) row by row: $y = e^{x - m} / \\sum_j e^{x_j - m}$, $m = \\max_j x_j$,
    and, unless ``lse`` is None, the row's logsumexp $m + \\log \\sum_j e^{x_j - m}$ (what
    the cross-entropies need besides y). Shapes: x, y (N, D), C-contiguous, same dtype, y may
    be x; lse (N,)."""
    n, d = x.shape
    x_bits = int_view(x)  # the same memory read as integers, for row_max
    for i in range(n):
        m = row_max(x_bits, i)
        total = exp_and_sum(x, m, y, i)  # y = e^{x - m} <= 1
        inv = y.dtype.type(1) / total
        for j in range(d):
            y[i, j] *= inv
        if lse is not None:
            lse[i] = m + math.log(total)


@numba.njit(**_JIT)
def softmax_backward(gy, y, gx):
    """gx = y (gy - <gy, y>) row by row (the softmax's vector-Jacobian product).
    Shapes: gy, y, gx (N, D), C-contiguous; gx may be gy."""
    n, d = y.shape
    for i in range(n):
        dot = y.dtype.type(0)
        for j in range(d):
            dot += gy[i, j] * y[i, j]
        for j in range(d):
            gx[i, j] = y[i, j] * (gy[i, j] - dot)


# ------------------------------------------------------------------------------- layer norm
@numba.njit(**_JIT)
def layer_norm_forward(x, weight, bias, eps, y, mean, rstd):
    """Row by row: $\\mu = \\bar x$, $\\sigma^2 = \\overline{(x - \\mu)^2}$ (biased; two passes
    over the row in L1, no $E[x^2] - \\mu^2$ cancellation), $r = 1 / \\sqrt{\\sigma^2 +
    \\epsilon}$, $y = (x - \\mu)\\, r\\, \\gamma + \\beta$. Writes y, and mean and rstd for the
    backward. Shapes: x, y (N, D); weight, bias (D,); mean, rstd (N,)."""
    n, d = x.shape
    inv_d = x.dtype.type(1.0 / d)
    for i in range(n):
        total = x.dtype.type(0)
        for j in range(d):
            total += x[i, j]
        mu = total * inv_d
        sq = x.dtype.type(0)
        for j in range(d):
            c = x[i, j] - mu
            sq += c * c
        r = x.dtype.type(1.0 / math.sqrt(sq * inv_d + eps))
        for j in range(d):
            y[i, j] = (x[i, j] - mu) * r * weight[j] + bias[j]
        mean[i] = mu
        rstd[i] = r


@numba.njit(**_JIT)
def layer_norm_backward(gy, x, mean, rstd, weight, gx, gweight, gbias):
    """The layer norm's backward, row by row, with $\\hat x = (x - \\mu) r$ recomputed from the
    saved mean and rstd, and $g = g_y \\gamma$:
    $g_x = r\\,(g - \\bar g - \\hat x\\, \\overline{g \\hat x})$;
    gweight += $\\sum_{rows} g_y \\hat x$ and gbias += $\\sum_{rows} g_y$ (this span's share).
    Shapes: gy, x, gx (N, D); mean, rstd (N,); weight, gweight, gbias (D,)."""
    n, d = x.shape
    inv_d = x.dtype.type(1.0 / d)
    for i in range(n):
        mu, r = mean[i], rstd[i]
        g_mean = x.dtype.type(0)
        gxhat_mean = x.dtype.type(0)
        for j in range(d):
            xhat = (x[i, j] - mu) * r
            g = gy[i, j] * weight[j]
            g_mean += g
            gxhat_mean += g * xhat
            gweight[j] += gy[i, j] * xhat
            gbias[j] += gy[i, j]
        g_mean *= inv_d
        gxhat_mean *= inv_d
        for j in range(d):
            xhat = (x[i, j] - mu) * r
            gx[i, j] = r * (gy[i, j] * weight[j] - g_mean - xhat * gxhat_mean)


# ------------------------------------------------------------------------------------- GELU
def normal_cdf(x, gauss):  # noqa: ANN001, ANN201
    """$\\Phi(x)$, given $e^{-x^2/2}$ (``gauss``). float32: Abramowitz & Stegun 7.1.26 on
    $|x|/\\sqrt 2$ (the NumPy path's formula, ``activation.normal_cdf_and_gauss``: error at
    most 3.5e-7); float64: ``math.erf``."""
    raise NotImplementedError("normal_cdf runs only inside Numba-compiled code")


@overload(normal_cdf, jit_options={"fastmath": _FASTMATH})
def _normal_cdf(x, gauss):
    if x != types.float32:
        return lambda x, gauss: 0.5 * (1.0 + math.erf(x * _SQRT_HALF))

    p, half = _F(_AS_P * _SQRT_HALF), _F(0.5)
    a1, a2, a3, a4, a5 = (_F(a) for a in (_AS_A1, _AS_A2, _AS_A3, _AS_A4, _AS_A5))

    def impl(x, gauss):
        t = _F(1.0) / (_F(1.0) + p * abs(x))  # 1 / (1 + p |x| / sqrt 2)
        tail = half * t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5)))) * gauss  # Phi(-|x|)
        return half + math.copysign(half - tail, x)  # 1/2 + sign(x) (1/2 - Phi(-|x|))

    return impl


@numba.njit(**_JIT_ELEMENTWISE)
def gelu_erf_forward(x, y, dydx):
    """$y = x\\,\\Phi(x)$ and, unless ``dydx`` is None (no graph is recorded), the slope
    $y' = \\Phi(x) + x\\,\\varphi(x)$, element by element; one $e^{-x^2/2}$ serves both.
    Shapes: x, y, dydx flat (n,)."""
    for j in range(x.shape[0]):
        xj = x[j]
        gauss = exp_nonpositive(x.dtype.type(-0.5) * xj * xj)  # e^{-x^2/2}
        cdf = normal_cdf(xj, gauss)
        y[j] = xj * cdf
        if dydx is not None:
            dydx[j] = cdf + xj * gauss * x.dtype.type(_INV_SQRT_2PI)


@numba.njit(**_JIT_ELEMENTWISE)
def gelu_tanh_forward(x, y, dydx):
    """$y = \\tfrac x2 (1 + \\tanh u)$, $u = \\sqrt{2/\\pi}(x + 0.044715 x^3)$, and unless
    ``dydx`` is None the slope $\\tfrac12(1 + \\tanh u) + \\tfrac x2 (1 - \\tanh^2 u)\\,u'$.
    $\\tanh u = \\mathrm{sign}(u)\\,(1 - e^{-2|u|}) / (1 + e^{-2|u|})$ keeps the exponent <= 0.
    Shapes: x, y, dydx flat (n,)."""
    one, half = x.dtype.type(1), x.dtype.type(0.5)
    c, a = x.dtype.type(_TANH_C), x.dtype.type(_TANH_A)
    for j in range(x.shape[0]):
        xj = x[j]
        u = c * (xj + a * xj * xj * xj)
        e = exp_nonpositive(x.dtype.type(-2) * abs(u))
        t = math.copysign((one - e) / (one + e), u)  # tanh u
        h = half * (one + t)  # (1 + tanh u) / 2
        y[j] = xj * h
        if dydx is not None:
            du = c * (one + x.dtype.type(3) * a * xj * xj)  # du/dx
            dydx[j] = h + half * xj * (one - t * t) * du
