"""Fused Functions against their composed versions: the same forward and the same gradients on
random inputs (design §1.3), the ``use_fused`` seam itself, and the hygiene every hand-written
backward owes the engine (gy untouched, saved state reusable with retain_graph)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitransformer import functional as F
from minitransformer.functional.activation import Gelu, LogSoftmax, LogSumExp, Softmax
from minitransformer.functional.attention import ScaledDotProductAttention
from minitransformer.functional.losses import CrossEntropy, SoftCrossEntropy
from minitransformer.functional.normalization import LayerNorm
from tests.functional.helpers import host, leaf
from tests.strategies import generic_arrays, shapes

_MASK = np.array([[True, False, True], [False, False, False]])  # row 1 fully masked


def _targets(shape):
    K = shape[-1]
    t = (np.arange(int(np.prod(shape[:-1]))) * 7) % K
    t[::3] = -100  # some ignored rows
    return t.reshape(shape[:-1])


# name: (builder of the inputs from a drawn shape and array strategy, fn(*tensors), fused class)
CASES = {
    "softmax": (lambda s: [s], lambda x: F.softmax(x, axis=-1), Softmax),
    "softmax_axis0": (lambda s: [s], lambda x: F.softmax(x, axis=0), Softmax),
    "log_softmax": (lambda s: [s], lambda x: F.log_softmax(x, axis=-1), LogSoftmax),
    "logsumexp": (lambda s: [s], lambda x: F.logsumexp(x, axis=-1), LogSumExp),
    "logsumexp_keepdims": (lambda s: [s], lambda x: F.logsumexp(x, axis=0, keepdims=True),
                           LogSumExp),
    "gelu": (lambda s: [s], lambda x: F.gelu(x), Gelu),
    "gelu_tanh": (lambda s: [s], lambda x: F.gelu(x, "tanh"), Gelu),
    "layer_norm": (lambda s: [s, s[-1:], s[-1:]], lambda x, w, b: F.layer_norm(x, w, b),
                   LayerNorm),
    "cross_entropy_mean": (lambda s: [s], lambda x: F.cross_entropy(x, _targets(x.shape)),
                           CrossEntropy),
    "cross_entropy_sum": (lambda s: [s], lambda x: F.cross_entropy(x, _targets(x.shape),
                                                                   reduction="sum"),
                          CrossEntropy),
    "cross_entropy_none": (lambda s: [s], lambda x: F.cross_entropy(x, _targets(x.shape),
                                                                    reduction="none"),
                           CrossEntropy),
    "soft_cross_entropy": (lambda s: [s, s], lambda z, p: F.soft_cross_entropy(z, p.exp()),
                           SoftCrossEntropy),
    "attention": (lambda s: [(2, 2, 3), (2, 3, 3), (2, 3, 3)],
                  lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
                  ScaledDotProductAttention),
    "attention_masked": (lambda s: [(2, 2, 3), (2, 3, 3), (2, 3, 3)],
                         lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask=_MASK),
                         ScaledDotProductAttention),
}


def _outputs(out):
    return list(out) if isinstance(out, tuple) else [out]


def _run(fn, arrays, gys, device, fused):
    """Forward and backward with fusion on or off; returns (outputs, input gradients)."""
    with F.use_fused(fused):
        xs = [leaf(a, device) for a in arrays]
        outs = _outputs(fn(*xs))
        for o, g in zip(outs, gys):
            o.backward(g, retain_graph=True)
    return [host(o) for o in outs], [host(x.grad) for x in xs]


@pytest.mark.parametrize("name", list(CASES))
@settings(max_examples=10)  # 14 ops x 2 modes; the reference tests carry the breadth
@given(data=st.data())
def test_fused_and_composed_agree(device, name, data):
    build, fn, _ = CASES[name]
    shape = data.draw(shapes(min_dims=2, max_dims=3, max_side=4))
    arrays = [data.draw(generic_arrays(s, -3, 3)) for s in build(shape)]
    with F.use_fused(False):
        outs = _outputs(fn(*[leaf(a, device) for a in arrays]))
    gys = [np.random.default_rng(0).standard_normal(o.shape) for o in outs]
    y_fused, g_fused = _run(fn, arrays, gys, device, True)
    y_comp, g_comp = _run(fn, arrays, gys, device, False)
    for a, b in zip(y_fused, y_comp):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(g_fused, g_comp):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", list(CASES))
def test_fused_and_composed_agree_in_float32(device, name):
    build, fn, _ = CASES[name]
    rng = np.random.default_rng(1)
    arrays = [rng.uniform(-3, 3, size=s).astype(np.float32) for s in build((4, 5, 6))]
    with F.use_fused(False):
        outs = _outputs(fn(*[leaf(a, device) for a in arrays]))
    gys = [rng.standard_normal(o.shape).astype(np.float32) for o in outs]
    y_fused, g_fused = _run(fn, arrays, gys, device, True)
    y_comp, g_comp = _run(fn, arrays, gys, device, False)
    for a, b in zip(y_fused + g_fused, y_comp + g_comp):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_public_name_switches_with_the_seam(device, name):
    build, fn, cls = CASES[name]
    arrays = [np.random.default_rng(2).uniform(-1, 1, size=s) for s in build((3, 4))]
    y = _outputs(fn(*[leaf(a, device) for a in arrays]))[0]
    assert F.is_fused()
    assert type(y.creator) is cls
    with F.use_fused(False):
        assert not F.is_fused()
        y = _outputs(fn(*[leaf(a, device) for a in arrays]))[0]
        assert type(y.creator) is not cls
    assert F.is_fused()


def test_use_fused_restores_the_setting_after_an_error_and_nests():
    with pytest.raises(RuntimeError):
        with F.use_fused(False):
            raise RuntimeError("boom")
    assert F.is_fused()
    with F.use_fused(False):
        with F.use_fused(True):
            assert F.is_fused()
        assert not F.is_fused()
    assert F.is_fused()


@pytest.mark.parametrize("name", list(CASES))
def test_fused_backward_leaves_gy_untouched_and_can_run_twice(device, name):
    build, fn, _ = CASES[name]
    rng = np.random.default_rng(3)
    arrays = [rng.uniform(-2, 2, size=s) for s in build((3, 4))]
    xs = [leaf(a, device) for a in arrays]
    outs = _outputs(fn(*xs))
    gys = [leaf(rng.standard_normal(o.shape), device, requires_grad=False).data for o in outs]
    copies = [host(g) for g in gys]
    for o, g in zip(outs, gys):
        o.backward(g, retain_graph=True)
    first = [host(x.grad) for x in xs]
    for g, c in zip(gys, copies):
        np.testing.assert_array_equal(host(g), c)  # backward never writes into gy
    for o, g in zip(outs, gys):
        o.backward(g, retain_graph=True)
    for x, g1 in zip(xs, first):  # the saved state was not consumed: gradients double
        np.testing.assert_allclose(host(x.grad), 2 * g1, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", list(CASES))
def test_fused_backward_accepts_a_read_only_broadcast_gy(device, name):
    # sum()'s backward hands down a read-only broadcast view: fused backwards must only read it
    build, fn, _ = CASES[name]
    arrays = [np.random.default_rng(4).uniform(-2, 2, size=s) for s in build((3, 4))]
    grads = []
    for fused in (True, False):
        with F.use_fused(fused):
            xs = [leaf(a, device) for a in arrays]
            total = None
            for o in _outputs(fn(*xs)):
                if o.ndim == 0:
                    s = o * 3.0
                else:  # Sum(axis=0)'s backward broadcasts (w-weighted) gy back along axis 0
                    w = np.random.default_rng(5).standard_normal(o.shape[1:])
                    s = (o.sum(axis=0) * leaf(w, device, requires_grad=False)).sum()
                total = s if total is None else total + s
            total.backward()
            grads.append([host(x.grad) for x in xs])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
