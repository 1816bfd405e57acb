"""MLM loss (seed eq. 4): mean cross-entropy over the labelled positions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer.objectives import mlm_loss

from .reference import masked_mean_ce


def _case(seed, B, T, V, p_label):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((B, T, V)) * 2
    labels = rng.integers(0, V, size=(B, T))
    labels[rng.random((B, T)) >= p_label] = -100
    return logits, labels


@given(B=st.integers(1, 3), T=st.integers(1, 6), V=st.integers(2, 9),
       p=st.sampled_from([0.0, 0.3, 1.0]), seed=st.integers(0, 2**16))
def test_mlm_loss_matches_reference(device, B, T, V, p, seed):
    logits, labels = _case(seed, B, T, V, p)
    got = mlm_loss(mt.tensor(logits, device=device), mt.backend.to_device(labels, device))
    np.testing.assert_allclose(got.item(), masked_mean_ce(logits, labels), rtol=1e-12,
                               atol=1e-12)


def test_mlm_loss_gradcheck(device):
    logits, labels = _case(0, 2, 5, 7, 0.5)
    z = mt.tensor(logits, device=device, requires_grad=True)
    y = mt.backend.to_device(labels, device)
    assert mt.testing.gradcheck(lambda z: mlm_loss(z, y), [z])


def test_mlm_loss_uniform_logits_is_log_v(device):
    """Uniform logits give p = 1/V for every label, so the mean of -log p is log V."""
    V = 50
    labels = np.full((2, 8), -100)
    labels[:, ::3] = 7
    got = mlm_loss(mt.tensor(np.zeros((2, 8, V)), device=device),
                   mt.backend.to_device(labels, device))
    np.testing.assert_allclose(got.item(), np.log(V), rtol=1e-12)


@given(seed=st.integers(0, 2**16))
def test_mlm_loss_ignores_unlabelled_logits(seed):
    logits, labels = _case(seed, 2, 6, 5, 0.5)
    other = logits.copy()
    unl = labels == -100
    other[unl] = np.random.default_rng(seed + 1).standard_normal((unl.sum(), 5)) * 50
    a = mlm_loss(mt.tensor(logits), labels).item()
    b = mlm_loss(mt.tensor(other), labels).item()
    assert a == b


def test_mlm_loss_bad_shapes():
    with pytest.raises(ValueError, match="mlm_loss"):
        mlm_loss(mt.tensor(np.zeros((2, 4, 5))), np.zeros((2, 5), dtype=np.int64))
