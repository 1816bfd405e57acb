"""Masked image modelling (seed eq. 8): BEiT tokens, MAE pixels, iBOT patches, codebook."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer.objectives import (
    ibot_patch_loss,
    kmeans_codebook,
    mim_pixel_loss,
    mim_token_loss,
    patchify,
    unpatchify,
)

from . import reference as ref


def _mask(rng, B, N, p=0.5, empty_rows=()):
    m = rng.random((B, N)) < p
    for b in empty_rows:
        m[b] = False
    return m


# ---------------------------------------------------------------------- patchify / unpatchify
@given(B=st.integers(1, 2), C=st.integers(1, 3), p=st.integers(1, 3), h=st.integers(1, 3),
       w=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_patchify_matches_mae_order(device, B, C, p, h, w, seed):
    imgs = np.random.default_rng(seed).standard_normal((B, C, h * p, w * p))
    got = patchify(mt.backend.to_device(imgs, device), p)
    np.testing.assert_array_equal(mt.to_numpy(got), ref.patchify(imgs, p))
    back = unpatchify(got, p, grid=(h, w))
    np.testing.assert_array_equal(mt.to_numpy(back), imgs)  # unpatchify(patchify(x)) == x


def test_patchify_tensor_roundtrip_and_gradcheck(device, rng):
    imgs = mt.tensor(rng.standard_normal((2, 3, 4, 4)), device=device, requires_grad=True)
    x = patchify(imgs, 2)
    assert isinstance(x, mt.Tensor) and x.shape == (2, 4, 12)
    np.testing.assert_array_equal(unpatchify(x, 2).numpy(), imgs.numpy())
    assert mt.testing.gradcheck(lambda a: patchify(a, 2), [imgs])
    assert mt.testing.gradcheck(lambda a: unpatchify(a, 2), [x.detach().requires_grad_()])


def test_patchify_bad_input():
    with pytest.raises(ValueError, match="divisible"):
        patchify(np.zeros((1, 3, 5, 4)), 2)
    with pytest.raises(ValueError, match="square"):
        unpatchify(np.zeros((1, 6, 12)), 2)


# ---------------------------------------------------------------------------- mim_token_loss
@given(B=st.integers(1, 3), N=st.integers(1, 6), K=st.integers(2, 8), seed=st.integers(0, 2**16))
def test_mim_token_loss_matches_reference(device, B, N, K, seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((B, N, K)) * 2
    ids = rng.integers(0, K, (B, N))
    mask = _mask(rng, B, N)
    got = mim_token_loss(mt.tensor(logits, device=device), ids, mask)
    labels = np.where(mask, ids, -100)  # BEiT: CE over x[bool_masked_pos]
    np.testing.assert_allclose(got.item(), ref.masked_mean_ce(logits, labels), rtol=1e-12,
                               atol=1e-12)


def test_mim_token_loss_gradcheck_and_unmasked_invariance(device, rng):
    """BEiT's loss is the cross-entropy over masked positions only (microsoft/unilm
    beit/engine_for_pretraining.py): changing the logits at unmasked positions changes
    nothing."""
    logits = rng.standard_normal((2, 5, 4))
    ids = rng.integers(0, 4, (2, 5))
    mask = _mask(rng, 2, 5)
    mask[0, 0] = True
    z = mt.tensor(logits, device=device, requires_grad=True)
    assert mt.testing.gradcheck(lambda z: mim_token_loss(z, ids, mask), [z])
    other = logits.copy()
    other[~mask] += 100 * rng.standard_normal(other[~mask].shape)
    assert mim_token_loss(mt.tensor(other, device=device), ids, mask).item() == \
        mim_token_loss(mt.tensor(logits, device=device), ids, mask).item()


@pytest.mark.parametrize("mask, err, match", [
    (np.zeros((2, 4), dtype=bool), ValueError, r"mask must have shape \(B, N\)"),
    (np.zeros((2, 5), dtype=np.int64), TypeError, "boolean"),
])
def test_mim_losses_bad_mask(mask, err, match):
    z = mt.tensor(np.zeros((2, 5, 3)))
    with pytest.raises(err, match=match):
        mim_token_loss(z, np.zeros((2, 5), dtype=np.int64), mask)
    with pytest.raises(err, match=match):
        mim_pixel_loss(z, np.zeros((2, 5, 3)), mask)
    with pytest.raises(err, match=match):
        ibot_patch_loss(z, np.full((2, 5, 3), 1 / 3), mask)


# ----------------------------------------------------------------------------- mim_pixel_loss
@given(B=st.integers(1, 3), N=st.integers(1, 5), P=st.integers(2, 6), norm=st.booleans(),
       seed=st.integers(0, 2**16))
def test_mim_pixel_loss_matches_mae(device, B, N, P, norm, seed):
    rng = np.random.default_rng(seed)
    pred = rng.standard_normal((B, N, P))
    target = rng.standard_normal((B, N, P)) * 3 + 1
    mask = _mask(rng, B, N)
    mask[0, 0] = True
    got = mim_pixel_loss(mt.tensor(pred, device=device), target, mask, norm_pix=norm)
    np.testing.assert_allclose(got.item(), ref.mae_loss(pred, target, mask, norm), rtol=1e-12)


def test_mim_pixel_loss_zero_prediction_sanity(device, rng):
    """MAE's norm_pix_loss (facebookresearch/mae models_mae.py, forward_loss) divides by
    sqrt(var + 1e-6) with torch's unbiased var. With pred = 0 the loss is the mean of
    (t - mean)^2 / (var + 1e-6) = biased var / (var + 1e-6) = (P-1)/P var / (var + 1e-6):
    ~0.99870 for 768-d patches of unbiased variance 1 (a biased var would give ~1)."""
    P = 16 * 16 * 3
    t = rng.standard_normal((2, 4, P))
    t = (t - t.mean(-1, keepdims=True)) / t.std(-1, ddof=1, keepdims=True)  # unbiased var 1
    mask = np.ones((2, 4), dtype=bool)
    got = mim_pixel_loss(mt.tensor(np.zeros((2, 4, P)), device=device), t, mask).item()
    expected = (P - 1) / P * 1.0 / (1.0 + 1e-6)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert round(got, 5) == 0.9987


def test_mim_pixel_loss_perfect_on_masked_is_zero(device, rng):
    """MAE's loss counts masked patches only (facebookresearch/mae models_mae.py,
    forward_loss: (loss * mask).sum() / mask.sum()): exactly 0 when pred == target on the
    masked patches, whatever the unmasked predictions; and gradcheck."""
    target = rng.standard_normal((2, 6, 4))
    mask = _mask(rng, 2, 6)
    mask[1, 2] = True
    pred = target.copy()
    pred[~mask] = 99.0
    got = mim_pixel_loss(mt.tensor(pred, device=device), target, mask, norm_pix=False)
    assert got.item() == 0.0
    y = mt.tensor(rng.standard_normal((2, 6, 4)), device=device, requires_grad=True)
    assert mt.testing.gradcheck(lambda y: mim_pixel_loss(y, target, mask), [y])


def test_mim_pixel_loss_no_masked_patch_is_zero(rng):
    y = mt.tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)
    loss = mim_pixel_loss(y, rng.standard_normal((2, 3, 4)), np.zeros((2, 3), dtype=bool))
    loss.backward()
    assert loss.item() == 0.0 and not y.grad.any()


def test_mim_pixel_loss_bad_shapes():
    with pytest.raises(ValueError, match="target"):
        mim_pixel_loss(mt.tensor(np.zeros((2, 3, 4))), np.zeros((2, 3, 5)),
                       np.ones((2, 3), dtype=bool))
    with pytest.raises(ValueError, match="P=1"):
        mim_pixel_loss(mt.tensor(np.zeros((2, 3, 1))), np.zeros((2, 3, 1)),
                       np.ones((2, 3), dtype=bool))


# ---------------------------------------------------------------------------- ibot_patch_loss
def _probs(rng, shape, sharp=1.0):
    return ref.softmax(rng.standard_normal(shape) * sharp)


@given(B=st.integers(1, 4), N=st.integers(1, 5), K=st.integers(2, 6),
       temp=st.sampled_from([0.1, 0.5, 1.0]), seed=st.integers(0, 2**16))
def test_ibot_patch_loss_matches_ibot(device, B, N, K, temp, seed):
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((B, N, K))
    t = _probs(rng, (B, N, K), 3)
    mask = _mask(rng, B, N, empty_rows=(0,))  # an unmasked image still counts in the mean
    got = ibot_patch_loss(mt.tensor(s, device=device), mt.tensor(t, device=device), mask, temp)
    np.testing.assert_allclose(got.item(), ref.ibot_loss(s, t, mask, temp), rtol=1e-12,
                               atol=1e-15)


def test_ibot_patch_loss_entropy_sanity_and_gradcheck(device, rng):
    """iBOT's patch loss (bytedance/ibot main_ibot.py, iBOTLoss; facebookresearch/dinov2
    loss/ibot_patch_loss.py, forward_masked): student logits = tau log(teacher) make the
    student's softmax equal the teacher, so each term is the teacher's entropy, averaged per
    image over masked patches, then over all images (the unmasked ones add 0)."""
    B, N, K, tau = 4, 6, 5, 0.1
    t = _probs(rng, (B, N, K), 2)
    mask = _mask(rng, B, N, empty_rows=(1, 3))
    mask[0, :2] = True
    s = tau * np.log(t)
    got = ibot_patch_loss(mt.tensor(s, device=device), t, mask, tau).item()
    H = ref.entropy_rows(t)  # (B, N)
    expected = sum(H[b][mask[b]].mean() for b in range(B) if mask[b].any()) / B
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    x = mt.tensor(rng.standard_normal((B, N, K)), device=device, requires_grad=True)
    assert mt.testing.gradcheck(lambda x: ibot_patch_loss(x, t, mask, tau), [x])


def test_ibot_patch_loss_teacher_gets_no_gradient(rng):
    t = mt.tensor(_probs(rng, (2, 3, 4)), requires_grad=True)
    s = mt.tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)
    ibot_patch_loss(s, t, np.ones((2, 3), dtype=bool)).backward()
    assert s.grad is not None and t.grad is None


def test_ibot_patch_loss_bad_input(rng):
    s = mt.tensor(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="temperature"):
        ibot_patch_loss(s, np.full((2, 3, 4), 0.25), np.ones((2, 3), dtype=bool), 0.0)
    with pytest.raises(ValueError, match="must match"):
        ibot_patch_loss(s, np.full((2, 3, 5), 0.2), np.ones((2, 3), dtype=bool))


# ------------------------------------------------------------------------------- k-means codes
def test_kmeans_codebook_recovers_clusters(device):
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0, 0, 0], [10, 10, 0, 0], [0, 0, 10, 10]])
    labels = rng.integers(0, 3, 300)
    x = centers[labels] + 0.1 * rng.standard_normal((300, 4))
    book = kmeans_codebook(mt.backend.to_device(x, device), 3, np.random.default_rng(1))
    ids = mt.to_numpy(book.encode(mt.backend.to_device(x, device)))
    assert ids.shape == (300,) and ids.dtype == np.int64
    # each true cluster maps to one code, distinct clusters to distinct codes
    mapping = {int(c): set(ids[labels == c].tolist()) for c in range(3)}
    assert all(len(v) == 1 for v in mapping.values())
    assert len({next(iter(v)) for v in mapping.values()}) == 3
    for c in range(3):
        code = next(iter(mapping[c]))
        np.testing.assert_allclose(mt.to_numpy(book.centroids)[code], x[labels == c].mean(0),
                                   atol=1e-12)
    # encode is the nearest centroid, per patch, on (B, N, P) input too
    patches = x[:12].reshape(3, 4, 4)
    enc = mt.to_numpy(book.encode(mt.backend.to_device(patches, device)))
    C = mt.to_numpy(book.centroids)
    d = ((patches[..., None, :] - C) ** 2).sum(-1)
    np.testing.assert_array_equal(enc, d.argmin(-1))
    np.testing.assert_array_equal(mt.to_numpy(book.decode(enc)), C[enc])


def test_kmeans_codebook_bad_input(rng):
    with pytest.raises(ValueError, match="K"):
        kmeans_codebook(rng.standard_normal((5, 3)), 6, rng)
    book = kmeans_codebook(rng.standard_normal((5, 3)), 2, rng)
    with pytest.raises(ValueError, match="patches"):
        book.encode(np.zeros((2, 4)))


# ---------------------------------------------------- masked dense == the former gathered form
def _pixel_loss_gathered(pred, target, mask, norm_pix):
    """The former mim_pixel_loss: the masked patches gathered with nonzero (a shape that
    depends on the mask), then their mean. Tensors in, a Tensor out."""
    t = target
    if norm_pix:
        t = (t - t.mean(-1, keepdims=True)) / (t.var(-1, ddof=1, keepdims=True) + 1e-6) ** 0.5
    idx = np.nonzero(mask)
    if idx[0].shape[0] == 0:
        return (pred * 0.0).sum()
    diff = pred[idx] - t[idx]  # (M, P)
    return (diff * diff).mean(axis=-1).mean()


def _ibot_loss_gathered(s, t, mask, tau):
    """The former ibot_patch_loss: the masked rows gathered with nonzero, weighted 1 / m_b."""
    idx = np.nonzero(mask)
    if idx[0].shape[0] == 0:
        return (s * 0.0).sum()
    weight = (1.0 / np.maximum(mask.sum(-1), 1))[idx[0]]  # (M,)
    ce = mt.functional.soft_cross_entropy(s[idx] / tau, t[idx])  # (M,)
    return (ce * weight).sum() / s.shape[0]


@given(B=st.integers(1, 4), N=st.integers(1, 6), P=st.integers(2, 5), norm=st.booleans(),
       seed=st.integers(0, 2**16))
def test_masked_dense_losses_equal_the_gathered_ones(B, N, P, norm, seed):
    """The masked-dense pixel and iBOT losses give the values and gradients of the former
    nonzero-gathered computations on the same float64 inputs (to 1e-12), empty masks and
    images without a masked patch included."""
    rng = np.random.default_rng(seed)
    mask = rng.random((B, N)) < 0.5
    pred = rng.standard_normal((B, N, P))
    target = rng.standard_normal((B, N, P)) * 2 + 1
    t_probs = ref.softmax(rng.standard_normal((B, N, P)) * 2)
    cases = [
        (lambda y: mim_pixel_loss(y, target, mask, norm_pix=norm),
         lambda y: _pixel_loss_gathered(y, target, mask, norm)),
        (lambda y: ibot_patch_loss(y, t_probs, mask, 0.1),
         lambda y: _ibot_loss_gathered(y, t_probs, mask, 0.1)),
    ]
    for new, old in cases:
        ys = [mt.tensor(pred, requires_grad=True) for _ in range(2)]
        a, b = new(ys[0]), old(ys[1])
        a.backward()
        b.backward()
        np.testing.assert_allclose(a.item(), b.item(), rtol=1e-12, atol=1e-15)
        gb = ys[1].grad if ys[1].grad is not None else np.zeros_like(pred)
        np.testing.assert_allclose(ys[0].grad, gb, rtol=1e-12, atol=1e-15)


def test_mim_losses_read_nothing_on_the_host(device, rng):
    """No shape depends on the mask: on the CuPy stand-in the pixel, token and iBOT losses
    and their backward make no device-to-host transfer."""
    cp = mt.backend.cupy()
    if device != "cuda" or not getattr(cp, "IS_STANDIN", False):
        pytest.skip("counted on the CuPy stand-in (pytest --cupy-standin)")
    B, N, P = 2, 5, 4
    mask = mt.backend.to_device(rng.random((B, N)) < 0.5, device)
    target = mt.backend.to_device(rng.standard_normal((B, N, P)), device)
    probs = mt.backend.to_device(_probs(rng, (B, N, P)), device)
    y = mt.tensor(rng.standard_normal((B, N, P)), device=device, requires_grad=True)
    cp.reset_transfers()
    loss = mim_pixel_loss(y, target, mask) + ibot_patch_loss(y, probs, mask)
    loss.backward()
    assert cp.transfers() == 0, cp.transfer_counts()
