"""CLIP's symmetric contrastive loss (seed eq. 6) and its learned temperature."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer import nn
from minitransformer.objectives import clamp_logit_scale, clip_loss, init_logit_scale

from . import reference as ref


@given(B=st.integers(1, 6), E=st.integers(1, 5), s=st.floats(0.0, 4.6),
       seed=st.integers(0, 2**16))
def test_clip_loss_matches_open_clip(device, B, E, s, seed):
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((B, E)) * 3
    txt = rng.standard_normal((B, E))
    got = clip_loss(mt.tensor(img, device=device), mt.tensor(txt, device=device),
                    mt.tensor(np.array(s), device=device))
    np.testing.assert_allclose(got.item(), ref.clip_loss(img, txt, s), rtol=1e-11, atol=1e-12)
    got_float = clip_loss(mt.tensor(img, device=device), mt.tensor(txt, device=device), s)
    np.testing.assert_allclose(got_float.item(), got.item(), rtol=1e-13)


def test_clip_loss_gradcheck(device, rng):
    img = mt.tensor(rng.standard_normal((4, 3)), device=device, requires_grad=True)
    txt = mt.tensor(rng.standard_normal((4, 3)), device=device, requires_grad=True)
    scale = mt.tensor(np.array(init_logit_scale()), device=device, requires_grad=True)
    assert mt.testing.gradcheck(clip_loss, [img, txt, scale])


def test_clip_loss_identical_features_is_log_b(device):
    """All logits equal -> each row's softmax is 1/B, so both cross-entropies (open_clip
    loss.py, ClipLoss) are log B (B = 8: 2.0794415)."""
    f = np.tile(np.random.default_rng(0).standard_normal((1, 5)), (8, 1))
    got = clip_loss(mt.tensor(f, device=device), mt.tensor(f, device=device),
                    init_logit_scale()).item()
    np.testing.assert_allclose(got, math.log(8), rtol=1e-12)
    assert round(got, 7) == 2.0794415


@pytest.mark.parametrize("s, expected", [(14.2857, 4.374e-6), (100.0, 0.0)])
def test_clip_loss_orthonormal_alignment(device, s, expected):
    """Perfect orthonormal pairs give logits s on the diagonal and 0 elsewhere, so each
    cross-entropy is -log(e^s / (e^s + B - 1)) = log(1 + (B-1) e^{-s}), s = exp(scale)."""
    B = 8
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((10, 10)))
    f = q[:B]  # orthonormal rows
    got = clip_loss(mt.tensor(f, device=device), mt.tensor(f, device=device),
                    math.log(s)).item()
    np.testing.assert_allclose(got, math.log1p((B - 1) * math.exp(-s)), rtol=1e-6, atol=1e-15)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-12)


@given(B=st.integers(2, 6), seed=st.integers(0, 2**16))
def test_clip_loss_symmetric_and_minimised_by_matching(B, seed):
    """Swapping the towers leaves the loss unchanged; the true pairing beats any other."""
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((B, 8))
    txt = img + 0.05 * rng.standard_normal((B, 8))  # pairs i <-> i are the closest
    s = init_logit_scale()
    a = clip_loss(mt.tensor(img), mt.tensor(txt), s).item()
    b = clip_loss(mt.tensor(txt), mt.tensor(img), s).item()
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    perm = rng.permutation(B)
    if (perm == np.arange(B)).all():
        perm = np.roll(perm, 1)
    c = clip_loss(mt.tensor(img), mt.tensor(txt[perm]), s).item()
    assert a < c


def test_init_and_clamp_logit_scale(device):
    """CLIP, Radford et al. 2021, sec. 2.5 (temperature initialised to 0.07, clipped so that
    the logits are scaled by at most 100); mlfoundations/open_clip model.py (logit_scale =
    log(1/0.07)) and image_text_task.py (clamp_logit_scale: clamp_(0, ln 100) after a step):
    init ln(1/0.07) = 2.659260; clamped to <= ln 100 = 4.605170 in place after a step, and to
    >= 0."""
    assert round(init_logit_scale(), 6) == 2.659260
    p = nn.Parameter(mt.tensor(np.array(5.0), device=device))
    data = p.data
    out = clamp_logit_scale(p)
    assert out is p and p.data is data  # in place
    assert round(p.item(), 6) == 4.605170
    p.data[...] = -1.0
    clamp_logit_scale(p)
    assert p.item() == 0.0
    p.data[...] = 3.0
    clamp_logit_scale(p)
    assert p.item() == 3.0
    q = nn.Parameter(mt.tensor(np.array([7.0]), device=device))
    clamp_logit_scale(q, max_value=2.0)
    assert q.numpy().tolist() == [2.0]


def test_clip_loss_bad_input():
    a = mt.tensor(np.ones((4, 3)))
    with pytest.raises(ValueError, match="batch size"):
        clip_loss(a, mt.tensor(np.ones((5, 3))), 1.0)
    with pytest.raises(ValueError, match="widths"):
        clip_loss(a, mt.tensor(np.ones((4, 2))), 1.0)
    with pytest.raises(ValueError, match=r"\(B, E\)"):
        clip_loss(mt.tensor(np.ones(4)), a, 1.0)
    with pytest.raises(ValueError, match="scalar"):
        clip_loss(a, a, mt.tensor(np.ones(2)))
    with pytest.raises(TypeError, match="Parameter"):
        clamp_logit_scale(3.0)
    with pytest.raises(ValueError, match="temperature"):
        init_logit_scale(0.0)
