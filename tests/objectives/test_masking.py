"""Masks: BERT token masking, MAE random patches, BEiT/DINOv2 block masks and collate rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer.objectives import (
    block_patch_mask,
    dinov2_collate_masks,
    mask_tokens,
    random_patch_mask,
)

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIAL = (PAD, CLS, SEP)


def _corpus(rng, B=400, T=128, V=1000):
    ids = rng.integers(4, V, size=(B, T))
    ids[:, 0] = CLS
    ids[:, -1] = SEP
    ids[: B // 4, -20:-1] = PAD  # some padded rows
    return ids


# ------------------------------------------------------------------------------ mask_tokens
def test_mask_tokens_fractions(device, rng):
    """BERT's masking (Devlin et al. 2019, sec. 3.1), drawn per token as
    huggingface/transformers src/transformers/data/data_collator.py
    (DataCollatorForLanguageModeling.torch_mask_tokens): ~15% of non-special tokens; of those
    ~80/10/10; -100 elsewhere."""
    V = 1000
    ids_host = _corpus(rng, V=V)
    ids = mt.backend.to_device(ids_host, device)
    inputs, labels = mask_tokens(ids, V, MASK, np.random.default_rng(1), special_ids=SPECIAL)
    assert mt.backend.device_of(inputs) == mt.backend.as_device(device)
    inputs, labels = mt.to_numpy(inputs), mt.to_numpy(labels)
    special = np.isin(ids_host, SPECIAL)
    selected = labels != -100

    assert not (selected & special).any(), "special tokens were selected"
    assert (inputs[special] == ids_host[special]).all(), "special tokens were changed"
    assert (labels[selected] == ids_host[selected]).all(), "labels must be the original ids"
    assert (inputs[~selected] == ids_host[~selected]).all(), "unselected tokens changed"

    frac = selected.sum() / (~special).sum()
    assert abs(frac - 0.15) < 0.01
    n = selected.sum()
    to_mask = (inputs[selected] == MASK).sum() / n
    unchanged = (inputs[selected] == ids_host[selected]).sum() / n
    randomised = 1 - to_mask - unchanged
    assert abs(to_mask - 0.8) < 0.02
    assert abs(unchanged - 0.1) < 0.02
    assert abs(randomised - 0.1) < 0.02
    # random replacements are ordinary tokens, never special ones nor [MASK]
    rand_pos = selected & (inputs != MASK) & (inputs != ids_host)
    assert rand_pos.any()
    assert not np.isin(inputs[rand_pos], SPECIAL + (MASK,)).any()


def test_mask_tokens_tensor_in_tensor_out_and_determinism(rng):
    ids = _corpus(rng, B=8, T=16)
    a_in, a_lab = mask_tokens(mt.tensor(ids), 1000, MASK, np.random.default_rng(5),
                              special_ids=SPECIAL)
    b_in, b_lab = mask_tokens(ids, 1000, MASK, np.random.default_rng(5), special_ids=SPECIAL)
    assert isinstance(a_in, mt.Tensor) and isinstance(a_lab, mt.Tensor)
    assert a_lab.dtype == np.int64 and a_in.dtype == ids.dtype
    np.testing.assert_array_equal(a_in.numpy(), b_in)
    np.testing.assert_array_equal(a_lab.numpy(), b_lab)
    c_in, _ = mask_tokens(ids, 1000, MASK, np.random.default_rng(5), special_ids=SPECIAL)
    np.testing.assert_array_equal(b_in, c_in)


def test_mask_tokens_does_not_modify_input(rng):
    ids = _corpus(rng, B=4, T=32)
    before = ids.copy()
    mask_tokens(ids, 1000, MASK, rng, prob=1.0, special_ids=SPECIAL)
    np.testing.assert_array_equal(ids, before)


def test_mask_tokens_all_mask_branch(rng):
    ids = rng.integers(4, 50, size=(6, 10))
    inputs, labels = mask_tokens(ids, 50, MASK, rng, prob=1.0, mask_replace_prob=1.0,
                                 random_replace_prob=0.0)
    assert (inputs == MASK).all() and (labels == ids).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(vocab_size=4, special_ids=(0, 1, 2)), "no ordinary token"),
        (dict(vocab_size=3, special_ids=(0, 1)), "mask_id"),
        (dict(vocab_size=100, prob=1.5), "prob"),
        (dict(vocab_size=100, mask_replace_prob=0.9, random_replace_prob=0.2), "<= 1"),
        (dict(vocab_size=100, special_ids=(100,)), "outside"),
        (dict(vocab_size=10), r"ids must lie in \[0, 10\)"),
    ],
)
def test_mask_tokens_bad_input(kwargs, match):
    ids = np.array([[1, 2, 3, 50]])
    with pytest.raises(ValueError, match=match):
        mask_tokens(ids, mask_id=MASK, rng=np.random.default_rng(0), **kwargs)


def test_mask_tokens_float_ids_rejected():
    with pytest.raises(TypeError, match="integers"):
        mask_tokens(np.zeros((2, 3)), 10, MASK, np.random.default_rng(0))


# ------------------------------------------------------------------------ random_patch_mask
@given(B=st.integers(1, 4), N=st.integers(1, 64), ratio=st.sampled_from([0.0, 0.25, 0.5, 0.75,
                                                                         0.9]),
       seed=st.integers(0, 2**16))
def test_random_patch_mask_counts_and_restore(device, B, N, ratio, seed):
    """facebookresearch/mae models_mae.py (MaskedAutoencoderViT.random_masking: len_keep =
    int(L * (1 - mask_ratio))): exactly int(N (1 - r)) patches kept per row; ids_restore
    undoes the shuffle."""
    rng = np.random.default_rng(seed)
    mask, ids_keep, ids_restore = random_patch_mask(B, N, ratio, rng, device=device,
                                                    return_indices=True)
    mask, ids_keep, ids_restore = (mt.to_numpy(a) for a in (mask, ids_keep, ids_restore))
    len_keep = int(N * (1 - ratio))
    assert mask.shape == (B, N) and mask.dtype == np.bool_
    assert ids_keep.shape == (B, len_keep)
    np.testing.assert_array_equal(mask.sum(1), N - len_keep)
    for b in range(B):
        assert not mask[b, ids_keep[b]].any(), "a kept patch is marked masked"
        # recover the full shuffle: kept ids first, then the masked ones in their order
        masked_ids = np.setdiff1d(np.arange(N), ids_keep[b])
        assert len(masked_ids) == N - len_keep
        # ids_restore is a permutation and inverts the shuffle
        assert sorted(ids_restore[b].tolist()) == list(range(N))
    x = np.random.default_rng(1).standard_normal((B, N))
    # gather with the shuffle, unshuffle with ids_restore -> the original order
    ids_shuffle = np.argsort(ids_restore, axis=1)
    shuffled = np.take_along_axis(x, ids_shuffle, axis=1)
    np.testing.assert_array_equal(np.take_along_axis(shuffled, ids_restore, axis=1), x)
    np.testing.assert_array_equal(ids_shuffle[:, :len_keep], ids_keep)


def test_random_patch_mask_mae_numbers(rng):
    mask = random_patch_mask(8, 196, 0.75, rng)
    np.testing.assert_array_equal(mask.sum(1), 196 - 49)
    # MAE's own truncation: int(10 * (1 - 0.9)) == 0 in floating point
    assert random_patch_mask(1, 10, 0.9, rng).sum() == 10


def test_random_patch_mask_bad_input(rng):
    with pytest.raises(ValueError, match="ratio"):
        random_patch_mask(2, 4, 1.0, rng)
    with pytest.raises(ValueError, match="positive"):
        random_patch_mask(0, 4, 0.5, rng)


# ------------------------------------------------------------------------- block_patch_mask
def _aspect_possible(h, w, lo, hi):
    """Some aspect r in [lo, hi] rounds to (h, w): sqrt(a r) in [h-.5, h+.5] and
    sqrt(a / r) in [w-.5, w+.5] give r = sqrt(a r)/sqrt(a/r) in [(h-.5)/(w+.5),
    (h+.5)/(w-.5)]."""
    r_lo = (h - 0.5) / (w + 0.5)
    r_hi = (h + 0.5) / (w - 0.5) if w > 0.5 else math.inf
    return r_lo <= hi + 1e-12 and r_hi >= lo - 1e-12


@given(H=st.integers(3, 16), W=st.integers(3, 16), frac=st.floats(0, 1),
       min_patches=st.sampled_from([1, 4, 16]), seed=st.integers(0, 2**16))
def test_block_patch_mask_budget_and_blocks(H, W, frac, min_patches, seed):
    """The block-wise generator of BEiT (microsoft/unilm beit/masking_generator.py) and
    DINOv2 (facebookresearch/dinov2 data/masking.py, MaskingGenerator): never over the target;
    every block a rectangle with a (rounded) aspect in [0.3, 1/0.3], strictly smaller than the
    grid, adding new patches."""
    N = H * W
    target = int(frac * N)
    mask, blocks = block_patch_mask((H, W), target, np.random.default_rng(seed),
                                    min_num_patches=min_patches, return_blocks=True)
    assert mask.shape == (H, W) and mask.dtype == np.bool_
    assert mask.sum() <= target
    union = np.zeros((H, W), dtype=bool)
    for top, left, h, w in blocks:
        assert 0 <= top and top + h <= H and 0 <= left and left + w <= W
        assert h < H and w < W and h >= 1 and w >= 1
        assert _aspect_possible(h, w, 0.3, 1 / 0.3), (h, w)
        new = ~union[top:top + h, left:left + w]
        assert new.any(), "an accepted block must add patches"
        union[top:top + h, left:left + w] = True
    np.testing.assert_array_equal(mask, union)
    if target == 0:
        assert not mask.any() and blocks == []


def test_block_patch_mask_beit_setting_mostly_reaches_target():
    """BEiT: 75 of 196 patches, blocks of >= 16: the generator usually hits the target."""
    rng = np.random.default_rng(0)
    counts = [block_patch_mask(14, 75, rng, min_num_patches=16).sum() for _ in range(50)]
    assert max(counts) <= 75
    assert np.mean(np.array(counts) == 75) > 0.5


def test_block_patch_mask_device(device):
    m = block_patch_mask(8, 20, np.random.default_rng(0), device=device)
    assert mt.backend.device_of(m) == mt.backend.as_device(device)
    assert int(m.sum()) <= 20


def test_block_patch_mask_bad_input(rng):
    with pytest.raises(ValueError, match="num_masked"):
        block_patch_mask(4, 17, rng)
    with pytest.raises(ValueError, match="min_aspect"):
        block_patch_mask(4, 3, rng, min_aspect=0.0)


# --------------------------------------------------------------------- dinov2_collate_masks
@pytest.mark.parametrize("n_images", [2, 7, 16])
def test_dinov2_collate_masks(device, n_images):
    """facebookresearch/dinov2 data/collate.py (collate_data_and_cast, mask_probability 0.5,
    mask_ratio_tuple (0.1, 0.5)): int(0.5 B) non-empty masks; masks_weight (1 / masked
    patches of the image, at each of them) sums to that number; ratios stratified in
    [0.1, 0.5] (each mask under its stratum's upper bound)."""
    rng = np.random.default_rng(n_images)
    grid = 16
    N = grid * grid
    masks, weight = dinov2_collate_masks(n_images, grid, rng, device=device)
    masks, weight = mt.to_numpy(masks), mt.to_numpy(weight)
    n_masked = int(n_images * 0.5)
    counts = masks.sum(1)
    assert masks.shape == (n_images, N)
    assert (counts > 0).sum() == n_masked
    assert weight.shape == (counts.sum(),)
    np.testing.assert_allclose(weight.sum(), n_masked, rtol=1e-12)
    expected_w = np.repeat(1.0 / np.maximum(counts, 1), counts)  # row-major True order
    np.testing.assert_allclose(weight, expected_w, rtol=1e-12)
    probs = np.linspace(0.1, 0.5, n_masked + 1)
    upper = np.sort([int(N * probs[i + 1]) for i in range(n_masked)])
    assert (np.sort(counts[counts > 0]) <= upper).all()
    assert counts.max() <= 0.5 * N


def test_dinov2_collate_masks_bad_input(rng):
    with pytest.raises(ValueError, match="ratio"):
        dinov2_collate_masks(4, 8, rng, ratio_min_max=(0.5, 0.1))
    with pytest.raises(ValueError, match="n_images"):
        dinov2_collate_masks(0, 8, rng)
