"""AdamW against hand-written NumPy updates (torch.optim.AdamW semantics)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer.optim import AdamW


def _param(xp, a):
    return mt.Tensor(xp.array(a, dtype=np.asarray(a).dtype), requires_grad=True)  # a copy


def _adamw_reference(p0, grads, lr, b1, b2, eps, wd):
    """Loshchilov & Hutter's AdamW as torch implements it, in float64, from the formulas."""
    p = np.array(p0, dtype=np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def test_adamw_several_steps_match_numpy(device, xp, rng):
    p0 = rng.standard_normal((4, 3))
    grads = [rng.standard_normal((4, 3)) for _ in range(6)]
    p = _param(xp, p0)
    opt = AdamW([p], lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)
    for g in grads:
        p.grad = xp.asarray(g)
        opt.step()
    expected = _adamw_reference(p0, grads, 0.01, 0.8, 0.95, 1e-6, 0.1)
    np.testing.assert_allclose(p.numpy(), expected, rtol=1e-12, atol=1e-14)
    assert opt.state[p]["step"] == 6


def test_adamw_first_step_is_a_sign_step_after_decay(device, xp):
    # Bias correction makes m_hat = g and v_hat = g^2 at t = 1, so the step is
    # lr * g / (|g| + eps) after the decoupled decay p <- p (1 - lr wd).
    p = _param(xp, np.array([2.0, -1.0]))
    opt = AdamW([p], lr=0.1, eps=0.0, weight_decay=0.5)
    p.grad = xp.asarray([3.0, -0.001])
    opt.step()
    np.testing.assert_allclose(p.numpy(), [2.0 * 0.95 - 0.1, -1.0 * 0.95 + 0.1], rtol=1e-14)


def test_adamw_decay_is_decoupled(device, xp):
    # With a zero gradient the Adam step is 0: only the decay moves the weights (coupled L2
    # would have fed wd * p into the moments and taken a full sign step instead).
    p = _param(xp, np.array([1.0, -3.0]))
    opt = AdamW([p], lr=0.1, weight_decay=0.2)
    for _ in range(3):
        p.grad = xp.zeros(2)
        opt.step()
    np.testing.assert_allclose(p.numpy(), np.array([1.0, -3.0]) * 0.98**3, rtol=1e-14)


def test_adamw_skips_param_with_grad_none(device, xp, rng):
    # DINO freezes the last layer by setting its grad to None: no move, no decay, and its own
    # step count (bias correction) does not advance.
    a = _param(xp, rng.standard_normal(3))
    frozen = _param(xp, rng.standard_normal(3))
    f0 = frozen.numpy()
    opt = AdamW([a, frozen], lr=0.1, weight_decay=0.5)
    for _ in range(3):
        a.grad = xp.ones(3)
        frozen.grad = None
        opt.step()
    np.testing.assert_array_equal(frozen.numpy(), f0)
    assert frozen not in opt.state
    g = rng.standard_normal(3)
    frozen.grad = xp.asarray(g)
    opt.step()
    np.testing.assert_allclose(frozen.numpy(), _adamw_reference(f0, [g], 0.1, 0.9, 0.999, 1e-8,
                                                                0.5), rtol=1e-12)


def test_adamw_float32_stays_float32_in_place(device, xp, rng):
    p = _param(xp, rng.standard_normal(8).astype(np.float32))
    before = p.data
    opt = AdamW([p], lr=1e-3)
    p.grad = xp.asarray(rng.standard_normal(8), dtype=np.float32)
    opt.step()
    assert p.data is before and p.dtype == np.float32
    assert p.device == mt.backend.as_device(device)
    assert opt.state[p]["exp_avg"].dtype == np.float32
    assert opt.state[p]["exp_avg_sq"].dtype == np.float32


def test_adamw_group_multipliers_and_schedules(device, xp):
    decayed, undecayed = _param(xp, np.ones(2)), _param(xp, np.ones(2))
    opt = AdamW([{"params": [decayed], "lr_mult": 0.5},
                 {"params": [undecayed], "weight_decay": 0.0, "wd_mult": 0.0}],
                lr=0.1, weight_decay=0.1)
    opt.set_weight_decay(0.4)  # a wd schedule writes every group; wd_mult keeps 0 at 0
    for p in (decayed, undecayed):
        p.grad = xp.zeros(2)
    opt.step()
    np.testing.assert_allclose(decayed.numpy(), 1 - 0.1 * 0.5 * 0.4, rtol=1e-14)
    np.testing.assert_array_equal(undecayed.numpy(), 1.0)


def test_adamw_state_dict_round_trip_continues_identically(device, xp, rng):
    p0 = [rng.standard_normal((2, 3)), rng.standard_normal(3)]
    grads = [[rng.standard_normal((2, 3)), rng.standard_normal(3)] for _ in range(5)]

    def make(values):
        ps = [_param(xp, v) for v in values]
        return ps, AdamW([{"params": [ps[0]]}, {"params": [ps[1]], "weight_decay": 0.0}],
                         lr=0.01, betas=(0.9, 0.99), weight_decay=0.05)

    ref, ref_opt = make(p0)
    for gs in grads:
        for p, g in zip(ref, gs):
            p.grad = xp.asarray(g)
        ref_opt.step()

    ps, opt = make(p0)
    for gs in grads[:3]:
        for p, g in zip(ps, gs):
            p.grad = xp.asarray(g)
        opt.step()
    sd = opt.state_dict()
    assert all(isinstance(v, np.ndarray) for st in sd["state"].values()
               for k, v in st.items() if k != "step")
    # JSON turns index keys into strings; load_state_dict accepts both.
    sd = {"state": {str(k): v for k, v in sd["state"].items()},
          "param_groups": sd["param_groups"]}
    resumed_ps, resumed = make([p.numpy() for p in ps])
    resumed.load_state_dict(sd)
    assert resumed.param_groups[0]["betas"] == (0.9, 0.99)
    for gs in grads[3:]:
        for p, g in zip(resumed_ps, gs):
            p.grad = xp.asarray(g)
        resumed.step()
    for a, b in zip(resumed_ps, ref):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_adamw_load_state_dict_rejects_mismatch(device, xp):
    a, b = _param(xp, np.ones(2)), _param(xp, np.ones(3))
    opt = AdamW([a], lr=0.1)
    a.grad = xp.ones(2)
    opt.step()
    with pytest.raises(ValueError, match="shape"):
        AdamW([b], lr=0.1).load_state_dict(opt.state_dict())
    with pytest.raises(ValueError, match="groups"):
        AdamW([{"params": [b]}, {"params": [_param(xp, np.ones(1))]}],
              lr=0.1).load_state_dict(opt.state_dict())


def test_adamw_rejects_bad_betas(device, xp):
    with pytest.raises(ValueError, match="betas"):
        AdamW([_param(xp, np.ones(1))], lr=0.1, betas=(0.9, 1.0))


@settings(max_examples=25)
@given(lr=st.floats(1e-4, 1.0), b1=st.floats(0.0, 0.99), b2=st.floats(0.5, 0.9999),
       eps=st.floats(1e-10, 1e-2), wd=st.floats(0.0, 0.5), steps=st.integers(1, 6),
       seed=st.integers(0, 2**16))
def test_adamw_matches_reference_for_any_hyperparameters(lr, b1, b2, eps, wd, steps, seed):
    r = np.random.default_rng(seed)
    p0 = r.standard_normal(5)
    grads = [r.standard_normal(5) * r.uniform(1e-3, 1e3) for _ in range(steps)]
    p = _param(np, p0)
    opt = AdamW([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    for g in grads:
        p.grad = g
        opt.step()
    expected = _adamw_reference(p0, grads, lr, b1, b2, eps, wd)
    np.testing.assert_allclose(p.numpy(), expected, rtol=1e-10, atol=1e-12)
