"""DINO (seed eq. 7): the multi-crop loss, centring, Sinkhorn-Knopp, the multi-crop wrapper."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer import functional as F
from minitransformer import io as mt_io
from minitransformer import nn
from minitransformer.objectives import (
    MultiCropWrapper,
    TeacherCentering,
    dino_loss,
    sinkhorn_knopp,
)

from . import reference as ref


def _crops(rng, n_c, n_g, B, K):
    students = [rng.standard_normal((B, K)) for _ in range(n_c)]
    teachers = [ref.softmax(rng.standard_normal((B, K)) * 3) for _ in range(n_g)]
    return students, teachers


# --------------------------------------------------------------------------------- dino_loss
@given(n_g=st.integers(1, 2), n_l=st.integers(0, 3), B=st.integers(1, 4), K=st.integers(2, 6),
       temp=st.sampled_from([0.1, 0.3, 1.0]), seed=st.integers(0, 2**16))
def test_dino_loss_matches_dino_loop(device, n_g, n_l, B, K, temp, seed):
    n_c = n_g + n_l
    if n_c < 2:
        n_l, n_c = 1, n_g + 1
    students, teachers = _crops(np.random.default_rng(seed), n_c, n_g, B, K)
    got = dino_loss([mt.tensor(s, device=device) for s in students],
                    [mt.backend.to_device(t, device) for t in teachers], temp)
    np.testing.assert_allclose(got.item(), ref.dino_loss(students, teachers, temp), rtol=1e-12)


def test_dino_loss_one_global_one_local_is_hand_ce(device, rng):
    """facebookresearch/dino main_dino.py (DINOLoss.forward skips v == iq): ncrops = 2 leaves
    only (t0, s1): mean_b sum_k -t log softmax(s/0.1)."""
    students, teachers = _crops(rng, 2, 1, 3, 5)
    got = dino_loss([mt.tensor(s, device=device) for s in students], teachers).item()
    s1 = students[1] / 0.1
    lsm = s1 - s1.max(1, keepdims=True)
    lsm = lsm - np.log(np.exp(lsm).sum(1, keepdims=True))
    hand = np.mean([-(teachers[0][b] * lsm[b]).sum() for b in range(3)])
    np.testing.assert_allclose(got, hand, rtol=1e-12)


def test_dino_loss_term_count_is_2ncrops_minus_2(rng):
    """DINO, Caron et al. 2021, sec. 3.1 (facebookresearch/dino main_dino.py, DINOLoss): with
    2 globals + 8 locals the loss averages 2 * 10 - 2 = 18 terms: all 20 (teacher, student)
    pairs minus the two same-view ones."""
    B, K = 3, 4
    students, teachers = _crops(rng, 10, 2, B, K)

    def ce(q, v):
        return np.mean(-(teachers[q] * ref.log_softmax(students[v] / 0.1)).sum(-1))

    all_pairs = sum(ce(q, v) for q in range(2) for v in range(10))
    same_view = ce(0, 0) + ce(1, 1)
    got = dino_loss([mt.tensor(s) for s in students], teachers).item()
    np.testing.assert_allclose(got, (all_pairs - same_view) / 18, rtol=1e-12)
    assert not np.isclose(got, all_pairs / 20, rtol=1e-6)


def test_dino_loss_equals_entropy_when_distributions_coincide(device, rng):
    """dino#167: the cross-entropy of identical distributions is their entropy, not 0."""
    B, K, tau = 4, 7, 0.1
    t = ref.softmax(rng.standard_normal((B, K)) * 2)
    s = tau * np.log(t)  # softmax(s / tau) = t
    got = dino_loss([mt.tensor(s, device=device)] * 4, [t, t], tau).item()
    np.testing.assert_allclose(got, ref.entropy_rows(t).mean(), rtol=1e-12)


def test_dino_loss_uniform_collapse_is_log_k(device):
    """A constant teacher output after centring gives equal logits, so a uniform teacher;
    with a uniform student the loss is -sum_k (1/K) log(1/K) = log K (K = 4096: 8.317766, the
    plateau reported in facebookresearch/dinov2#407)."""
    K, B = 4096, 3
    centering = TeacherCentering(K, device=device, dtype=np.float64)
    teacher_out = np.full((B, K), 0.37)
    t = centering.probs(mt.tensor(teacher_out, device=device), 0.04)
    students = [mt.tensor(np.zeros((B, K)), device=device) for _ in range(4)]
    got = dino_loss(students, [t, t]).item()
    np.testing.assert_allclose(got, math.log(K), rtol=1e-12)
    assert round(got, 6) == 8.317766


def test_dino_loss_gradcheck_and_teacher_gets_no_gradient(device, rng):
    students, teachers = _crops(rng, 4, 2, 2, 3)
    s = [mt.tensor(x, device=device, requires_grad=True) for x in students]
    t = [mt.tensor(x, device=device, requires_grad=True) for x in teachers]
    assert mt.testing.gradcheck(lambda *ss: dino_loss(list(ss), t, 0.1), s)
    for x in s:
        x.grad = None
    dino_loss(s, t).backward()
    assert all(x.grad is not None for x in s)
    assert all(x.grad is None for x in t), "the teacher must never receive gradients"


def test_dino_loss_bad_input(rng):
    s = [mt.tensor(rng.standard_normal((2, 3))) for _ in range(3)]
    t = [ref.softmax(rng.standard_normal((2, 3))) for _ in range(2)]
    with pytest.raises(ValueError, match="teacher"):
        dino_loss(s[:1], t)  # more teacher crops than student crops
    with pytest.raises(ValueError, match="at least 2 crops"):
        dino_loss(s[:1], t[:1])
    with pytest.raises(ValueError, match="one shape"):
        dino_loss(s + [mt.tensor(np.zeros((3, 3)))], t)
    with pytest.raises(ValueError, match="one shape"):
        dino_loss(s, [t[0], np.zeros((2, 4))])
    with pytest.raises(ValueError, match="temperature"):
        dino_loss(s, t, student_temp=0.0)
    with pytest.raises(TypeError, match="list"):
        dino_loss(s[0], t)
    with pytest.raises(ValueError, match="empty"):
        dino_loss(s, [])


# ------------------------------------------------------------------------- TeacherCentering
def test_center_update_arithmetic(device, rng):
    """c <- 0.9 c + 0.1 mean (DINO, Caron et al. 2021, sec. 3.1; facebookresearch/dino
    main_dino.py, DINOLoss.update_center, called after the loss): from c = 0, c = 0.1 m1 after
    one step, 0.9 (0.1 m1) + 0.1 m2 = 0.09 m1 + 0.1 m2 after two; the step's probabilities use
    the center from before its update."""
    K = 5
    c = TeacherCentering(K, device=device, dtype=np.float64)
    assert c.center.shape == (1, K) and not mt.to_numpy(c.center).any()
    g1 = rng.standard_normal((2, 3, K))
    g2 = rng.standard_normal((4, K))
    m1, m2 = g1.reshape(-1, K).mean(0), g2.mean(0)

    p_before = c.probs(mt.tensor(g1[0], device=device), 0.04)  # center 0
    np.testing.assert_allclose(p_before.numpy(), ref.softmax(g1[0] / 0.04), rtol=1e-12)
    c.update([mt.tensor(g1[0], device=device), mt.backend.to_device(g1[1], device)])
    np.testing.assert_allclose(mt.to_numpy(c.center)[0], 0.1 * m1, rtol=1e-12)
    p = c.probs(mt.backend.to_device(g2, device), 0.07)
    np.testing.assert_allclose(p.numpy(), ref.softmax((g2 - 0.1 * m1) / 0.07), rtol=1e-12)
    assert not p.requires_grad
    c.update(mt.tensor(g2, device=device))
    np.testing.assert_allclose(mt.to_numpy(c.center)[0], 0.09 * m1 + 0.1 * m2, rtol=1e-12)
    assert "center" in c.state_dict()


def test_center_follows_float64_teacher_outputs(device, rng):
    """Built with the default dtype (float32), the center becomes float64 on float64 teacher
    outputs, as it follows their device; the probabilities and the update are float64 and
    the EMA is not rounded through float32 (1e-15, far below float32's 6e-8)."""
    assert mt.backend.get_default_dtype() == np.float32
    K = 6
    c = TeacherCentering(K, device=device)
    assert c.center.dtype == np.float32
    g = 1.0 + rng.standard_normal((3, K)) / 3.0  # values float32 cannot hold exactly
    p = c.probs(mt.tensor(g, device=device, dtype=np.float64), 0.04)
    assert p.dtype == np.float64 and c.center.dtype == np.float64
    c.update(mt.backend.to_device(g, device))
    assert c.center.dtype == np.float64
    np.testing.assert_allclose(mt.to_numpy(c.center)[0], 0.1 * g.mean(0), rtol=1e-15)
    p2 = c.probs([mt.backend.to_device(g, device)], 0.04)[0]
    assert p2.dtype == np.float64
    np.testing.assert_allclose(p2.numpy(), ref.softmax((g - 0.1 * g.mean(0)) / 0.04),
                               rtol=1e-12)
    # float32 outputs: it follows back to float32, as it follows the device
    p3 = c.probs(g.astype(np.float32), 0.04)
    assert p3.dtype == np.float32 and c.center.dtype == np.float32
    with pytest.raises(TypeError, match="floating point.*int64"):
        c.update(np.zeros((2, K), dtype=np.int64))


def test_float64_dino_loss_with_centering_matches_numpy_reference(device, rng):
    """Two DINO steps in float64 (2 global + 2 local crops, DINO main_dino.py DINOLoss):
    t_q = softmax((g_q - c) / tau_t), L = mean over pairs v != q of the batch mean of
    -sum_k t_q log softmax(s_v / tau_s), then c <- m c + (1 - m) mean(g). The loss and the
    center match a plain-NumPy float64 reference to 1e-9 relative at each step."""
    K, B, n_g, n_c, tau_t, tau_s, m = 7, 5, 2, 4, 0.04, 0.1, 0.9
    c = TeacherCentering(K, momentum=m, device=device)  # default dtype: float32 at first
    c_ref = np.zeros((1, K))
    for _ in range(2):
        g = [1.0 + rng.standard_normal((B, K)) for _ in range(n_g)]  # teacher, globals
        s = [rng.standard_normal((B, K)) for _ in range(n_c)]  # student, every crop
        # NumPy reference, float64 throughout
        t_ref = [np.exp((gq - c_ref) / tau_t) for gq in g]
        t_ref = [e / e.sum(-1, keepdims=True) for e in t_ref]
        terms = [np.mean(-np.sum(t_ref[q] * ref.log_softmax(s[v] / tau_s), axis=-1))
                 for q in range(n_g) for v in range(n_c) if v != q]
        want = np.mean(terms)
        c_ref = m * c_ref + (1 - m) * np.concatenate(g, axis=0).mean(0, keepdims=True)
        # ours
        t_probs = c.probs([mt.tensor(x, device=device, dtype=np.float64) for x in g], tau_t)
        assert all(t.dtype == np.float64 for t in t_probs)
        loss = dino_loss([mt.tensor(x, device=device, dtype=np.float64) for x in s], t_probs,
                         tau_s)
        c.update([mt.tensor(x, device=device, dtype=np.float64) for x in g])  # raw outputs
        assert loss.dtype == np.float64 and c.center.dtype == np.float64
        np.testing.assert_allclose(float(loss.item()), want, rtol=1e-9)
        np.testing.assert_allclose(mt.to_numpy(c.center), c_ref, rtol=1e-9)


def test_center_state_dict_round_trips_keeping_float64(device, rng, tmp_path):
    """A float64 center saved (state_dict, and a safetensors checkpoint as recipes write it)
    loads back bit-identical, even into an object built with the float32 default; a float32
    center still loads into a float32 one."""
    K = 4
    c = TeacherCentering(K, device=device)
    c.update(mt.backend.to_device(1.0 + rng.standard_normal((3, K)) / 3.0, device))
    saved = c.state_dict()
    assert list(saved) == ["center"] and saved["center"].dtype == np.float64
    fresh = TeacherCentering(K, device=device)
    fresh.load_state_dict(saved)
    assert fresh.center.dtype == np.float64
    assert mt.backend.device_of(fresh.center) == mt.backend.device_of(c.center)
    np.testing.assert_array_equal(mt.to_numpy(fresh.center), mt.to_numpy(c.center))
    path = tmp_path / "center.safetensors"
    mt_io.save_model(path, c)
    again = TeacherCentering(K, device=device)
    mt_io.load_model(path, again)
    assert again.center.dtype == np.float64
    np.testing.assert_array_equal(mt.to_numpy(again.center), mt.to_numpy(c.center))
    c32 = TeacherCentering(K, device=device)
    c32.update(mt.backend.to_device(rng.standard_normal((3, K)).astype(np.float32), device))
    back = TeacherCentering(K, device=device)
    back.load_state_dict(c32.state_dict())
    assert back.center.dtype == np.float32
    np.testing.assert_array_equal(mt.to_numpy(back.center), mt.to_numpy(c32.center))
    with pytest.raises(nn.StateDictError, match="shape"):
        back.load_state_dict({"center": np.zeros((1, K + 1))})


def test_center_probs_list_and_bad_input(rng):
    c = TeacherCentering(3)
    out = c.probs([rng.standard_normal((2, 3)), rng.standard_normal((2, 3))], 0.1)
    assert isinstance(out, list) and len(out) == 2
    np.testing.assert_allclose(out[0].numpy().sum(-1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        c.probs(np.zeros((2, 3)), 0.0)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        c.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="momentum"):
        TeacherCentering(3, momentum=1.5)


# ---------------------------------------------------------------------------- sinkhorn_knopp
def test_sinkhorn_rows_sum_to_one_columns_near_b_over_k(device):
    """facebookresearch/dinov2 loss/dino_clstoken_loss.py (sinkhorn_knopp_teacher, 3
    iterations) ends by making each sample's row sum to 1, while the prototype step drives
    each column toward B/K: rows sum to 1; column sums ~ B/K = 4.0 +- 0.1 (B=64, K=16) after
    3 iterations, for logits / temperature of unit scale."""
    t = np.random.default_rng(0).standard_normal((64, 16))
    q = sinkhorn_knopp(mt.tensor(t, device=device), 1.0).numpy()
    np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-12)
    assert np.abs(q.sum(0) - 4.0).max() < 0.1
    assert (q >= 0).all()


@given(B=st.integers(1, 8), K=st.integers(1, 8), temp=st.sampled_from([0.05, 0.1, 1.0]),
       n_iter=st.integers(0, 4), seed=st.integers(0, 2**16))
def test_sinkhorn_matches_dinov2(device, B, K, temp, n_iter, seed):
    t = np.random.default_rng(seed).uniform(-1, 1, (B, K))  # cosine logits of a DINO head
    got = sinkhorn_knopp(mt.backend.to_device(t, device), temp, n_iter).numpy()
    np.testing.assert_allclose(got, ref.sinkhorn(t, temp, n_iter), rtol=1e-9)


def test_sinkhorn_shift_invariance(rng):
    """A global shift of the logits changes nothing (exactly); a per-row shift changes nothing
    once the iterations converge (3 iterations only approach it)."""
    t = rng.standard_normal((32, 8))
    row = rng.standard_normal((32, 1))
    a = sinkhorn_knopp(t, 0.5).numpy()
    np.testing.assert_allclose(sinkhorn_knopp(t + 3.0, 0.5).numpy(), a, rtol=1e-12)
    a50 = sinkhorn_knopp(t, 0.5, n_iter=50).numpy()
    np.testing.assert_allclose(sinkhorn_knopp(t + row, 0.5, n_iter=50).numpy(), a50,
                               rtol=1e-10, atol=1e-14)
    # float32 logits / temperature past 88: DINOv2's plain exp overflows, the log form does not
    t32 = rng.uniform(-5, 5, (16, 8)).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        assert not np.isfinite(ref.sinkhorn(t32, 0.04, 3)).all()
    q32 = sinkhorn_knopp(t32, 0.04).numpy()
    assert q32.dtype == np.float32 and np.isfinite(q32).all()
    np.testing.assert_allclose(q32.sum(1), 1.0, rtol=1e-5)
    q64 = sinkhorn_knopp(t32.astype(np.float64), 0.04).numpy()
    np.testing.assert_allclose(q32, q64, rtol=1e-3, atol=1e-6)


def test_sinkhorn_list_and_bad_input(rng):
    chunks = [rng.standard_normal((3, 4)), rng.standard_normal((3, 4))]
    out = sinkhorn_knopp(chunks, 0.1)
    whole = sinkhorn_knopp(np.concatenate(chunks), 0.1).numpy()
    np.testing.assert_allclose(np.concatenate([o.numpy() for o in out]), whole, rtol=1e-13)
    with pytest.raises(ValueError, match="temperature"):
        sinkhorn_knopp(chunks[0], -0.1)
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        sinkhorn_knopp(np.zeros((2, 3, 4)), 0.1)


# ------------------------------------------------------------------------- MultiCropWrapper
class _PoolBackbone(nn.Module):
    """Mean over pixels, then a linear map: any resolution -> (B, D). Counts its calls."""

    def __init__(self, C, D):
        super().__init__()
        self.proj = nn.Linear(C, D)
        self.calls = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        return self.proj(x.mean(axis=(2, 3)))


def test_multicrop_wrapper_one_backbone_call_per_resolution(device, rng):
    backbone = _PoolBackbone(3, 5)
    head = nn.Linear(5, 7)
    model = MultiCropWrapper(backbone, head).to(device, np.float64)
    B = 2
    crops = [mt.tensor(rng.standard_normal((B, 3, 8, 8)), device=device) for _ in range(2)]
    crops += [mt.tensor(rng.standard_normal((B, 3, 4, 4)), device=device) for _ in range(3)]
    out, feats = model(crops, return_backbone=True)
    assert backbone.calls == [(2 * B, 3, 8, 8), (3 * B, 3, 4, 4)]
    assert len(out) == 5 and all(o.shape == (B, 7) for o in out)
    for c, o, f in zip(crops, out, feats):  # the same as running each crop alone
        f_alone = backbone(c)
        np.testing.assert_allclose(f.numpy(), f_alone.numpy(), rtol=1e-12)
        np.testing.assert_allclose(o.numpy(), head(f_alone).numpy(), rtol=1e-12)
    names = [n for n, _ in model.named_parameters()]
    assert names == ["backbone.proj.weight", "backbone.proj.bias", "head.weight", "head.bias"]
    # gradients flow back to both through the split
    loss = dino_loss(out, [F.softmax(o.detach(), axis=-1) for o in out[:2]])
    loss.backward()
    assert backbone.proj.weight.grad is not None and head.weight.grad is not None


def test_dino_training_step_end_to_end(device, rng):
    """One DINO step with the real parts: a ViT backbone through the multi-crop wrapper (two
    resolutions), DINOHead, centring + sharpening, the loss, an SGD step, the EMA teacher
    and the center update after the loss. The teacher receives no gradient."""
    from minitransformer.models import VisionTransformer, ViTConfig
    from minitransformer.models.heads import DINOHead
    from minitransformer.optim.ema import ema_update

    cfg = ViTConfig.preset("vit-nano", img_size=16, patch_size=4, depth=1)
    student = MultiCropWrapper(VisionTransformer(cfg), DINOHead(32, 16, 16, 8)).to(device)
    teacher = MultiCropWrapper(VisionTransformer(cfg), DINOHead(32, 16, 16, 8)).to(device)
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    centering = TeacherCentering(16, device=device)
    crops = [mt.tensor(rng.standard_normal((4, 3, 16, 16)).astype(np.float32), device=device)
             for _ in range(2)]
    crops += [mt.tensor(rng.standard_normal((4, 3, 8, 8)).astype(np.float32), device=device)
              for _ in range(3)]
    with mt.no_grad():
        t_out = teacher(crops[:2])
    t_probs = centering.probs(t_out, 0.04)
    loss = dino_loss(student(crops), t_probs)
    assert np.isfinite(loss.item())
    loss.backward()
    centering.update(t_out)
    np.testing.assert_allclose(
        mt.to_numpy(centering.center)[0],
        0.1 * np.concatenate([o.numpy() for o in t_out]).mean(0), rtol=1e-5, atol=1e-7)
    before = {k: v.copy() for k, v in teacher.state_dict().items()}
    for p in student.parameters():
        if p.grad is not None:
            p.data = p.data - 0.1 * p.grad
    ema_update(teacher, student, 0.9)
    assert all(p.grad is None for p in teacher.parameters())
    s, t = student.state_dict(), teacher.state_dict()
    k = "backbone.blocks.0.attn.qkv.weight"
    np.testing.assert_allclose(t[k], 0.9 * before[k] + 0.1 * s[k], rtol=1e-5, atol=1e-7)
