"""DINOv2 (seed eq. 9): KoLeo, the DINO-term normalisation, and the total loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer.objectives import dino_loss, dinov2_loss, ibot_patch_loss, koleo_loss

from . import reference as ref


# ------------------------------------------------------------------------------------ KoLeo
@given(B=st.integers(2, 7), D=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_koleo_matches_dinov2(device, B, D, seed):
    x = np.random.default_rng(seed).standard_normal((B, D)) * 2
    got = koleo_loss(mt.tensor(x, device=device)).item()
    np.testing.assert_allclose(got, ref.koleo(x), rtol=1e-10)


def test_koleo_gradcheck(device, rng):
    x = mt.tensor(rng.standard_normal((5, 3)), device=device, requires_grad=True)
    assert mt.testing.gradcheck(koleo_loss, [x])


@pytest.mark.parametrize("n, expected", [(2, -0.693147), (3, -0.549306), (4, -0.490415),
                                         (8, -0.413339)])
def test_koleo_regular_simplex_bound(device, n, expected):
    """KoLeo (facebookresearch/dinov2 loss/koleo_loss.py, KoLeoLoss: -mean log of the
    distance to the nearest neighbour) on the n vertices of a regular simplex: unit vectors
    with pairwise cosine -1/(n-1), so every nearest distance is sqrt(2 + 2/(n-1)) =
    sqrt(2n/(n-1)) and the loss is -1/2 log(2n/(n-1))."""
    x = np.eye(n) - 1.0 / n  # n vertices of a regular simplex (centred basis vectors)
    q, _ = np.linalg.qr(np.random.default_rng(n).standard_normal((n, n)))
    x = 3.0 * x @ q  # rotated and scaled: KoLeo normalises and only sees angles
    got = koleo_loss(mt.tensor(x, device=device)).item()
    np.testing.assert_allclose(got, -0.5 * math.log(2 * n / (n - 1)), atol=1e-7)
    assert round(got, 6) == expected


@given(n=st.integers(2, 6), seed=st.integers(0, 2**16))
def test_koleo_simplex_is_the_minimum(n, seed):
    """Any other n points on the sphere (n <= d + 1) score at least the simplex bound."""
    x = np.random.default_rng(seed).standard_normal((n, n))
    assert koleo_loss(mt.tensor(x)).item() >= -0.5 * math.log(2 * n / (n - 1)) - 1e-9


def test_koleo_orthonormal_and_duplicates(device):
    """Orthonormal basis: -1/2 ln 2. A duplicated row: a large finite value, not inf."""
    np.testing.assert_allclose(koleo_loss(mt.tensor(np.eye(6), device=device)).item(),
                               -0.5 * math.log(2), atol=1e-7)
    D = 4
    x = np.eye(D)
    x[1] = x[0]  # rows 0 and 1 coincide
    got = koleo_loss(mt.tensor(x, device=device)).item()
    assert np.isfinite(got)
    dup = -math.log(1e-8 * math.sqrt(D) + 1e-8)  # each of the two duplicated points
    expected = (2 * dup + 2 * -math.log(math.sqrt(2) + 0.0)) / D
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_koleo_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        koleo_loss(mt.tensor(np.ones((1, 3))))
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        koleo_loss(mt.tensor(np.ones(3)))


# ------------------------------------------------------------------ DINOv2's DINO normalisation
@given(n_l=st.integers(0, 4), B=st.integers(1, 3), K=st.integers(2, 5),
       seed=st.integers(0, 2**16))
def test_dino_term_equals_dinov2_local_plus_global(n_l, B, K, seed):
    """facebookresearch/dinov2 train/ssl_meta_arch.py (forward_backward: dino_local_crops_loss
    + dino_global_crops_loss with reversed teacher chunks and loss_scales 2, over 2 + 2 n_l
    terms) equals the DINO v1 average over the cross-view pairs (facebookresearch/dino
    main_dino.py, DINOLoss)."""
    rng = np.random.default_rng(seed)
    students = [rng.standard_normal((B, K)) for _ in range(2 + n_l)]
    teachers = [ref.softmax(rng.standard_normal((B, K)) * 2) for _ in range(2)]
    got = dino_loss([mt.tensor(s) for s in students], teachers).item()
    np.testing.assert_allclose(got, ref.dinov2_dino_term(students, teachers, 0.1), rtol=1e-12)


# ------------------------------------------------------------------------------- dinov2_loss
def _dinov2_case(rng, B=3, N=4, K=5, D=3, n_l=2):
    s_cls = [rng.standard_normal((B, K)) for _ in range(2 + n_l)]
    t_cls = [ref.softmax(rng.standard_normal((B, K)) * 2) for _ in range(2)]
    s_patch = rng.standard_normal((2 * B, N, K))
    t_patch = ref.softmax(rng.standard_normal((2 * B, N, K)) * 2)
    masks = rng.random((2 * B, N)) < 0.5
    masks[:B] = False  # DINOv2: half the global crops unmasked
    masks[B, 0] = True
    h = [rng.standard_normal((B, D)) for _ in range(2)]
    return s_cls, t_cls, s_patch, t_patch, masks, h


@pytest.mark.parametrize("w", [(1.0, 1.0, 0.1), (0.5, 2.0, 0.0), (0.0, 1.0, 1.0)])
def test_dinov2_loss_is_the_weighted_sum(device, rng, w):
    s_cls, t_cls, s_patch, t_patch, masks, h = _dinov2_case(rng)
    dev = [mt.tensor(x, device=device) for x in s_cls]
    total, parts = dinov2_loss(dev, t_cls, mt.tensor(s_patch, device=device), t_patch, masks,
                               [mt.tensor(x, device=device) for x in h],
                               w_dino=w[0], w_ibot=w[1], w_koleo=w[2])
    dino = ref.dino_loss(s_cls, t_cls, 0.1)
    ibot = ref.ibot_loss(s_patch, t_patch, masks, 0.1)
    koleo = ref.koleo(h[0]) + ref.koleo(h[1])  # per global crop, summed
    expected = w[0] * dino + w[1] * ibot + w[2] * koleo
    np.testing.assert_allclose(total.item(), expected, rtol=1e-10)
    assert set(parts) == {"dino", "ibot", "koleo"}
    for name, value, weight in (("dino", dino, w[0]), ("ibot", ibot, w[1]),
                                ("koleo", koleo, w[2])):
        np.testing.assert_allclose(parts[name].item(), value if weight else 0.0, rtol=1e-10)


def test_dinov2_loss_lists_and_gradcheck(device, rng):
    s_cls, t_cls, s_patch, t_patch, masks, h = _dinov2_case(rng, B=2, N=3, K=3, D=2, n_l=1)
    B = 2
    a = [mt.tensor(x, device=device, requires_grad=True) for x in s_cls]
    p = mt.tensor(s_patch, device=device, requires_grad=True)
    g = [mt.tensor(x, device=device, requires_grad=True) for x in h]

    def total(*xs):
        return dinov2_loss(list(xs[:3]), t_cls, xs[3], t_patch, masks, list(xs[4:]))[0]

    assert mt.testing.gradcheck(total, a + [p] + g)
    # per-crop lists for the patch inputs give the same value
    t_list, _ = dinov2_loss(a, t_cls, [p[:B], p[B:]], [t_patch[:B], t_patch[B:]],
                            [masks[:B], masks[B:]], g)
    np.testing.assert_allclose(t_list.item(), total(*(a + [p] + g)).item(), rtol=1e-13)
    np.testing.assert_allclose(
        dinov2_loss(a, t_cls, p, t_patch, masks, g, w_dino=0, w_koleo=0)[0].item(),
        ibot_patch_loss(p, t_patch, masks).item(), rtol=1e-13)


def test_dinov2_loss_bad_input(rng):
    s_cls, t_cls, s_patch, t_patch, masks, h = _dinov2_case(rng)
    s = [mt.tensor(x) for x in s_cls]
    hs = [mt.tensor(x) for x in h]
    with pytest.raises(ValueError, match="global crop"):
        dinov2_loss(s, t_cls, mt.tensor(s_patch), t_patch, masks, hs[:1])
    with pytest.raises(ValueError, match="first axis"):
        dinov2_loss(s, t_cls, mt.tensor(s_patch[:4]), t_patch[:4], masks[:4], hs)
    with pytest.raises(ValueError, match="mask must have shape"):
        dinov2_loss(s, t_cls, mt.tensor(s_patch), t_patch, masks[:, :2], hs)
    with pytest.raises(ValueError, match="entries"):
        dinov2_loss(s, t_cls, [mt.tensor(s_patch)], t_patch, masks, hs)
    with pytest.raises(ValueError, match="temperature"):
        dinov2_loss(s, t_cls, mt.tensor(s_patch), t_patch, masks, hs, student_temp=-1.0)
