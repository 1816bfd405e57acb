"""Wrong answers to the Vision Transformer exercises (notebook 04) fail their checks."""

from __future__ import annotations

import numpy as np

from minitransformer import exercises

from .helpers import assert_wrong_answer_fails, parametrize_wrong


# ------------------------------------------------------------------ image_to_patches
def patches_plain_reshape(images, P):
    B, C, H, W = images.shape
    return images.reshape(B, (H // P) * (W // P), C * P * P)  # pixels of several patches mixed


def patches_mae_order(images, P):
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // P, P, W // P, P).transpose(0, 2, 4, 3, 5, 1)  # (.., i, j, C)
    return x.reshape(B, -1, C * P * P)


def patches_column_major_grid(images, P):
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // P, P, W // P, P).transpose(0, 4, 2, 1, 3, 5)  # gw before gh
    return x.reshape(B, -1, C * P * P)


# ------------------------------------------------------------------ vit_tokens
def _patches(images, P):
    return exercises.solution("image_to_patches")(images, P)


def tokens_cls_without_position(images, W_E, b_E, cls_token, pos_embed, P):
    tokens = _patches(images, P) @ W_E + b_E + pos_embed[:, 1:]
    cls = np.broadcast_to(cls_token, (len(images), 1, W_E.shape[1]))
    return np.concatenate([cls, tokens], axis=1)  # CLS gets no position


def tokens_cls_last(images, W_E, b_E, cls_token, pos_embed, P):
    tokens = _patches(images, P) @ W_E + b_E
    cls = np.broadcast_to(cls_token, (len(images), 1, W_E.shape[1]))
    return np.concatenate([tokens, cls], axis=1) + pos_embed


def tokens_without_bias(images, W_E, b_E, cls_token, pos_embed, P):
    return exercises.solution("vit_tokens")(images, W_E, np.zeros_like(b_E), cls_token,
                                            pos_embed, P)


def tokens_transposed_weight(images, W_E, b_E, cls_token, pos_embed, P):
    # W_E read as (D, C*P*P), the paper's orientation: x @ W_E.T only fits when D = C*P*P
    return exercises.solution("vit_tokens")(images, W_E.T, b_E, cls_token, pos_embed, P)


# ------------------------------------------------------------------ patch_conv
def conv_flipped_kernel(images, weight, bias):
    return exercises.solution("patch_conv")(images, weight[:, :, ::-1, ::-1], bias)


def conv_stride_one(images, weight, bias):
    B, C, H, W = images.shape
    D, _, P, _ = weight.shape
    out = np.zeros((B, D, H - P + 1, W - P + 1))  # every window, overlapping
    for r in range(H - P + 1):
        for c in range(W - P + 1):
            window = images[:, :, r:r + P, c:c + P]
            out[:, :, r, c] = np.einsum("bcij,dcij->bd", window, weight) + bias
    return out


def conv_without_bias(images, weight, bias):
    return exercises.solution("patch_conv")(images, weight, np.zeros_like(bias))


def conv_as_linear_on_mae_patches(images, weight, bias):
    B, C, H, W = images.shape
    D, _, P, _ = weight.shape
    flat = patches_mae_order(images, P)  # (B, N, P*P*C), not the weight's (c, i, j) order
    out = flat @ weight.reshape(D, -1).T + bias  # (B, N, D)
    return out.reshape(B, H // P, W // P, D).transpose(0, 3, 1, 2)


# ------------------------------------------------------------------ attention_mass_mask
def mass_keeps_the_smallest(attn, threshold):
    a = attn / attn.sum(axis=-1, keepdims=True)
    order = np.argsort(a, axis=-1)  # ascending: the smallest weights first
    sorted_a = np.take_along_axis(a, order, axis=-1)
    keep_sorted = np.cumsum(sorted_a, axis=-1) - sorted_a < threshold
    keep = np.empty_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    return keep


def mass_without_normalising(attn, threshold):
    order = np.argsort(-attn, axis=-1)
    sorted_a = np.take_along_axis(attn, order, axis=-1)
    keep_sorted = np.cumsum(sorted_a, axis=-1) - sorted_a < threshold
    keep = np.empty_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    return keep


def mass_a_fraction_of_the_patches(attn, threshold):
    k = int(round(threshold * attn.shape[-1]))  # the top 60% of the patches, not of the mass
    rank = np.argsort(np.argsort(-attn, axis=-1), axis=-1)
    return rank < k


def mass_left_in_sorted_order(attn, threshold):
    a = attn / attn.sum(axis=-1, keepdims=True)
    sorted_a = -np.sort(-a, axis=-1)
    return np.cumsum(sorted_a, axis=-1) - sorted_a < threshold  # never unsorted


def mass_stops_before_crossing(attn, threshold):
    a = attn / attn.sum(axis=-1, keepdims=True)
    order = np.argsort(-a, axis=-1)
    sorted_a = np.take_along_axis(a, order, axis=-1)
    keep_sorted = np.cumsum(sorted_a, axis=-1) <= threshold  # drops the crossing weight
    keep = np.empty_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    return keep


WRONG_ANSWERS = {
    "image_to_patches": [patches_plain_reshape, patches_mae_order, patches_column_major_grid],
    "vit_tokens": [tokens_cls_without_position, tokens_cls_last, tokens_without_bias,
                   tokens_transposed_weight],
    "patch_conv": [conv_flipped_kernel, conv_stride_one, conv_without_bias,
                   conv_as_linear_on_mae_patches],
    "attention_mass_mask": [mass_keeps_the_smallest, mass_without_normalising,
                            mass_a_fraction_of_the_patches, mass_left_in_sorted_order,
                            mass_stops_before_crossing],
}


@parametrize_wrong(WRONG_ANSWERS)
def test_wrong_answer_fails(name, wrong):
    assert_wrong_answer_fails(name, wrong)


def test_a_column_major_grid_has_the_right_shape_and_wrong_values():
    message = assert_wrong_answer_fails("image_to_patches", patches_column_major_grid)
    assert "shape (2, 4, 48) is right" in message


def test_the_transposed_weight_is_reported_with_its_error():
    message = assert_wrong_answer_fails("vit_tokens", tokens_transposed_weight)
    assert "case 1 of 4" in message and "raised ValueError" in message


def test_stride_one_gives_the_wrong_shape():
    message = assert_wrong_answer_fails("patch_conv", conv_stride_one)
    assert "expected shape (2, 5, 2, 2), got shape (2, 5, 5, 5)" in message


def test_keeping_the_smallest_weights_is_caught_on_the_first_map():
    message = assert_wrong_answer_fails("attention_mass_mask", mass_keeps_the_smallest)
    assert "case 1 of 5" in message and "elements differ" in message
