"""Exercises of notebook 04 (the Vision Transformer): cutting an image into patches, the
patch embedding of equation 5 with the CLS token and the positions, the same projection as a
stride-P convolution, and DINO's attention mask that keeps 60% of the attention mass.

Each reference solution is plain NumPy, as a learner would write it; ``expected`` computes
the same thing with the library module or function named in ``library``, in float64.
"""

from __future__ import annotations

import numpy as np

from ..autograd import tensor
from ..eval import attention_mass_mask as _library_mass_mask
from ..models import VisionTransformer, ViTConfig
from ..nn import PatchEmbed
from ._core import Case, exercise


# --------------------------------------------------------------------------------------------
# Patches
# --------------------------------------------------------------------------------------------
def _image_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case("2 RGB images 8x8, P = 4 (a 2x2 grid)", (rng.standard_normal((2, 3, 8, 8)), 4)),
        Case("a batch of one, one grey patch (1, 1, 4, 4), P = 4",
             (rng.standard_normal((1, 1, 4, 4)), 4)),
        Case("a wide image 8x12, P = 4 (2 rows of 3 patches)",
             (rng.standard_normal((2, 3, 8, 12)), 4)),
        Case("P = 1: every pixel is a patch", (rng.standard_normal((1, 2, 3, 3)), 1)),
        Case("a 32x32 RGB image, P = 8", (rng.standard_normal((1, 3, 32, 32)), 8)),
    ]


def _library_patches(images, P):
    """PatchEmbed with its projection set to the identity returns the flattened patches."""
    B, C, H, W = images.shape
    pe = PatchEmbed((H, W), P, C, C * P * P).to(dtype=np.float64)
    pe.load_state_dict({"proj.weight": np.eye(C * P * P), "proj.bias": np.zeros(C * P * P)})
    return pe(tensor(images)).numpy()  # (B, N, C*P*P)


@exercise(
    "image_to_patches",
    title="an image cut into P x P patches in raster order, each flattened (channel, row, col)",
    signature="image_to_patches(images, P) -> array; images (B, C, H, W) with H, W multiples "
              "of P -> (B, N, C*P*P), N = (H/P)(W/P)",
    equation="the input of eq. 5 (ViT, Dosovitskiy et al. 2021, sec. 3.1: x_p in "
             "R^(N x (P^2 C)))",
    library="nn.PatchEmbed (its reshape and transpose, with the projection set to the identity)",
    notebook="04_vision_transformer",
    hint="reshape to (B, C, H/P, P, W/P, P), move the two patch-grid axes in front of the "
         "channel with transpose(0, 2, 4, 1, 3, 5) -> (B, H/P, W/P, C, P, P), then reshape to "
         "(B, N, C*P*P); a plain reshape of the image mixes pixels of different patches, and "
         "(row, col, channel) is MAE's order, not this one",
    cases=_image_cases,
    expected=_library_patches,
)
def image_to_patches(images, P):
    B, C, H, W = images.shape
    gh, gw = H // P, W // P
    x = images.reshape(B, C, gh, P, gw, P)  # (B, C, gh, i, gw, j)
    x = x.transpose(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, i, j): patches in raster order
    return x.reshape(B, gh * gw, C * P * P)  # (B, N, C*P*P), each patch flattened (c, i, j)


# --------------------------------------------------------------------------------------------
# The tokens: eq. 5, CLS, positions
# --------------------------------------------------------------------------------------------
def _token_cases(rng: np.random.Generator) -> list[Case]:
    def case(B, C, S, P, D):
        N, K = (S // P) ** 2, C * P * P
        return (rng.standard_normal((B, C, S, S)), rng.standard_normal((K, D)) / np.sqrt(K),
                rng.standard_normal(D), rng.standard_normal((1, 1, D)),
                rng.standard_normal((1, N + 1, D)), P)

    return [
        Case("2 RGB images 8x8, P = 4, D = 6", case(2, 3, 8, 4, 6)),
        Case("a batch of one, a single patch (1, 3, 4, 4), P = 4, D = 5", case(1, 3, 4, 4, 5)),
        Case("3 grey images 12x12, P = 3, D = 8", case(3, 1, 12, 3, 8)),
        Case("D = C*P*P = 12 (W_E square: its transpose has the right shape too)",
             case(2, 3, 4, 2, 12)),
    ]


def _library_tokens(images, W_E, b_E, cls_token, pos_embed, P):
    B, C, S, _ = images.shape
    D = W_E.shape[1]
    cfg = ViTConfig(img_size=S, patch_size=P, in_chans=C, dim=D, depth=1, num_heads=1)
    vit = VisionTransformer(cfg).to(dtype=np.float64)
    vit.load_state_dict({"patch_embed.proj.weight": W_E, "patch_embed.proj.bias": b_E,
                         "cls_token": cls_token, "pos_embed": pos_embed}, strict=False)
    return vit.prepare_tokens(tensor(images)).numpy()  # (B, 1 + N, D)


@exercise(
    "vit_tokens",
    title="the ViT's input tokens [CLS; patches W_E + b_E] + positions",
    signature="vit_tokens(images, W_E, b_E, cls_token, pos_embed, P) -> array; images "
              "(B, C, H, W), W_E (C*P*P, D), b_E (D,), cls_token (1, 1, D), pos_embed "
              "(1, N+1, D) -> (B, N+1, D)",
    equation="eq. 5, X_patch = x W_E + b_E on each flattened patch x, then ViT's eq. 1: "
             "z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos (Dosovitskiy et al. 2021)",
    library="VisionTransformer.prepare_tokens",
    notebook="04_vision_transformer",
    hint="flatten the patches as in image_to_patches, project them with patches @ W_E + b_E "
         "(W_E is (C*P*P, D), as nn.Linear's weight), put the CLS token FIRST (repeat it for "
         "every image of the batch), then add pos_embed to all N + 1 tokens: slot 0 is CLS's "
         "own position",
    cases=_token_cases,
    expected=_library_tokens,
)
def vit_tokens(images, W_E, b_E, cls_token, pos_embed, P):
    B, C, H, W = images.shape
    gh, gw = H // P, W // P
    patches = images.reshape(B, C, gh, P, gw, P).transpose(0, 2, 4, 1, 3, 5)  # (B,gh,gw,C,P,P)
    patches = patches.reshape(B, gh * gw, C * P * P)  # (B, N, C*P*P)
    tokens = patches @ W_E + b_E  # (B, N, D): eq. 5 on every patch
    cls = np.broadcast_to(cls_token, (B, 1, W_E.shape[1]))  # (B, 1, D)
    return np.concatenate([cls, tokens], axis=1) + pos_embed  # (B, 1 + N, D)


# --------------------------------------------------------------------------------------------
# The same projection as a convolution
# --------------------------------------------------------------------------------------------
def _conv_cases(rng: np.random.Generator) -> list[Case]:
    def case(B, C, H, W, P, D):
        return (rng.standard_normal((B, C, H, W)), rng.standard_normal((D, C, P, P)),
                rng.standard_normal(D))

    return [
        Case("2 RGB images 8x8, P = 4, D = 5 filters", case(2, 3, 8, 8, 4, 5)),
        Case("a batch of one, a single patch (1, 2, 3, 3), P = 3, D = 4", case(1, 2, 3, 3, 3, 4)),
        Case("a wide image 6x9, P = 3, D = 7", case(2, 3, 6, 9, 3, 7)),
        Case("P = 1: a 1x1 convolution, D = 3", case(1, 4, 2, 3, 1, 3)),
    ]


def _library_conv(images, weight, bias):
    """PatchEmbed with proj.weight = the conv weight (D, C, P, P) flattened to (D, C*P*P) and
    transposed; its (B, N, D) tokens laid out as the conv's (B, D, H/P, W/P) output."""
    B, C, H, W = images.shape
    D, _, P, _ = weight.shape
    pe = PatchEmbed((H, W), P, C, D).to(dtype=np.float64)
    pe.load_state_dict({"proj.weight": weight.reshape(D, C * P * P).T, "proj.bias": bias})
    tokens = pe(tensor(images)).numpy()  # (B, N, D)
    return tokens.reshape(B, H // P, W // P, D).transpose(0, 3, 1, 2)  # (B, D, H/P, W/P)


@exercise(
    "patch_conv",
    title="the patch projection as a convolution with kernel P and stride P",
    signature="patch_conv(images, weight, bias) -> array; images (B, C, H, W), weight "
              "(D, C, P, P), bias (D,) -> (B, D, H/P, W/P)",
    equation="eq. 5 as timm / DINO compute it: Conv2d(C, D, kernel_size=P, stride=P), "
             "out[b, d, r, c] = bias[d] + sum_{ch, i, j} weight[d, ch, i, j] "
             "images[b, ch, r P + i, c P + j]",
    library="nn.PatchEmbed (a Linear on the (c, i, j)-flattened patches) with "
            "proj.weight = weight.reshape(D, C*P*P).T",
    notebook="04_vision_transformer",
    hint="the window of output (r, c) starts at pixel (r*P, c*P): stride P, so windows do not "
         "overlap and the output is (H/P, W/P); a deep-learning 'convolution' is a "
         "cross-correlation (the kernel is NOT flipped); sum over channels and both kernel "
         "axes, then add the bias of each filter",
    cases=_conv_cases,
    expected=_library_conv,
)
def patch_conv(images, weight, bias):
    B, C, H, W = images.shape
    D, _, P, _ = weight.shape
    out = np.zeros((B, D, H // P, W // P))
    for r in range(H // P):
        for c in range(W // P):
            window = images[:, :, r * P:(r + 1) * P, c * P:(c + 1) * P]  # (B, C, P, P)
            out[:, :, r, c] = np.einsum("bcij,dcij->bd", window, weight) + bias  # (B, D)
    return out


# --------------------------------------------------------------------------------------------
# DINO's attention mask: the top weights holding 60% of the mass
# --------------------------------------------------------------------------------------------
def _mass_cases(rng: np.random.Generator) -> list[Case]:
    peaked = rng.random(16) * 0.01
    peaked[5] = 5.0  # one patch holds ~97% of the mass
    return [
        Case("one map over 16 patches (a softmax), threshold 0.6",
             (np.exp(2 * rng.standard_normal(16)),), {"threshold": 0.6}),
        Case("maps of 2 images x 3 heads over 9 patches, not normalised, threshold 0.6",
             (rng.random((2, 3, 9)) * 4,), {"threshold": 0.6}),
        Case("a peaked map: one patch holds almost everything, threshold 0.6", (peaked,),
             {"threshold": 0.6}),
        Case("threshold 0.9 on 4 maps of 25 patches", (rng.random((4, 25)),),
             {"threshold": 0.9}),
        Case("threshold 1.0: every patch is kept", (rng.random((2, 8)),), {"threshold": 1.0}),
    ]


@exercise(
    "attention_mass_mask",
    title="DINO's attention mask: the largest weights that together hold `threshold` of the "
          "attention mass",
    signature="attention_mass_mask(attn, threshold) -> bool array; attn (..., N) >= 0 -> "
              "(..., N), True = kept",
    equation="DINO's thresholded attention maps (Caron et al. 2021, masks keeping 60% of the "
             "mass; facebookresearch/dino visualize_attention.py, --threshold)",
    library="eval.attention_mass_mask",
    notebook="04_vision_transformer",
    hint="normalise each map to sum 1 first, sort its weights in DECREASING order and keep a "
         "weight while the mass of the larger ones before it is still below the threshold "
         "(so the weight that crosses the threshold is kept too); then put the answer back in "
         "the original patch order (argsort of the sort order)",
    cases=_mass_cases,
    expected=lambda attn, threshold: _library_mass_mask(attn, threshold),
)
def attention_mass_mask(attn, threshold):
    a = attn / attn.sum(axis=-1, keepdims=True)  # (..., N): each map sums to 1
    order = np.argsort(-a, axis=-1)  # largest first
    sorted_a = np.take_along_axis(a, order, axis=-1)
    before = np.cumsum(sorted_a, axis=-1) - sorted_a  # mass of the larger weights
    keep_sorted = before < threshold
    keep = np.empty_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)  # back to patch order
    return keep
