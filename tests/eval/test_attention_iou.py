"""CLS-attention IoU (DINO's visualize_attention threshold) on hand-made maps."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
from minitransformer.eval import attention_iou, attention_mass_mask, patch_masks_from_pixels


def _np(a):
    return mt.to_numpy(a)


def test_mass_mask_keeps_top_patches_holding_the_mass(device, xp):
    # sorted ascending 0.1 0.2 0.3 0.4, cumsum 0.1 0.3 0.6 1.0 > 0.4 -> keep 0.3 and 0.4
    a = xp.asarray([[4.0, 1.0, 3.0, 2.0]])  # unnormalised: the rule renormalises first
    assert _np(attention_mass_mask(a, 0.6)).tolist() == [[True, False, True, False]]
    assert _np(attention_mass_mask(a, 0.85)).tolist() == [[True, False, True, True]]
    assert _np(attention_mass_mask(a, 0.3)).tolist() == [[True, False, False, False]]


def test_iou_per_head_best_head_and_head_averaged(device, xp):
    # One image, 6 patches, object = patches 0 and 1.
    mask = xp.asarray([[True, True, False, False, False, False]])
    attn = xp.asarray([[
        [0.5, 0.5, 0.0, 0.0, 0.0, 0.0],  # on the object: keeps {0, 1} -> IoU 1
        [0.0, 0.0, 0.0, 0.0, 0.5, 0.5],  # on background: keeps {4, 5} -> IoU 0
        [0.45, 0.0, 0.0, 0.0, 0.0, 0.55],  # cumsum 0.45 > 0.4: keeps {0, 5} -> IoU 1/3
    ]])
    res = attention_iou(attn, mask, threshold=0.6)
    np.testing.assert_allclose(res.per_head, [1.0, 0.0, 1 / 3], rtol=1e-12)
    assert res.best_head == 1.0 and res.best_head_index == 0
    assert res.mean_over_heads == pytest.approx(4 / 9)
    # Head mean: [0.317, 0.167, 0, 0, 0.167, 0.35]; sorted ascending the cumsum is 0.333 before
    # 0.317 and 0.65 after it, so it keeps {0, 5} -> IoU 1/3.
    assert res.heads_averaged == pytest.approx(1 / 3)


def test_iou_averages_over_images(device, xp):
    mask = xp.asarray([[True, False, False, False], [False, False, False, True]])
    attn = xp.asarray([[[1.0, 0.0, 0.0, 0.0]], [[1.0, 0.0, 0.0, 0.0]]])  # H = 1
    res = attention_iou(attn, mask)
    assert res.heads_averaged == pytest.approx(0.5)  # IoU 1 then 0
    np.testing.assert_allclose(res.per_head, [0.5])


def test_patch_masks_more_than_half(device, xp):
    m = np.zeros((1, 4, 4), dtype=bool)
    m[0, 0, 0] = m[0, 0, 1] = m[0, 1, 0] = True  # 3/4 of patch 0
    m[0, 0, 2] = m[0, 0, 3] = True  # 2/4 of patch 1: not more than half
    m[0, 2:, 2:] = True  # all of patch 3
    assert _np(patch_masks_from_pixels(xp.asarray(m), 2)).tolist() == [[True, False, False, True]]
    with pytest.raises(ValueError, match="multiples of 3"):
        patch_masks_from_pixels(m, 3)


def test_iou_rejects_bad_shapes():
    with pytest.raises(ValueError, match="attention_iou"):
        attention_iou(np.ones((2, 3, 4)), np.ones((2, 5), bool))
    with pytest.raises(ValueError, match="threshold"):
        attention_iou(np.ones((2, 3, 4)), np.ones((2, 4), bool), threshold=0.0)
