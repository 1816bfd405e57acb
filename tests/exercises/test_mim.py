"""Wrong answers to the MIM exercises (notebook 06) fail their checks, with the right message;
the library's own functions pass the checks of the random exercises."""

from __future__ import annotations

import numpy as np

from minitransformer import exercises
from minitransformer.objectives import random_patch_mask

from .helpers import assert_wrong_answer_fails, parametrize_wrong

SOLUTION_UNPATCHIFY = exercises.solution("unpatchify")
SOLUTION_NORM_PIX = exercises.solution("norm_pix_target")


# --- unpatchify -----------------------------------------------------------------------------
def unpatchify_channel_first(x, p):
    """Reads each patch in nn.PatchEmbed's (channel, i, j) order instead of MAE's (i, j, c)."""
    B, N, D = x.shape
    C, h = D // (p * p), int(round(np.sqrt(N)))
    y = x.reshape(B, h, h, C, p, p)  # (B, row, col, C, i, j)
    return y.transpose(0, 3, 1, 4, 2, 5).reshape(B, C, h * p, h * p)


def unpatchify_reshape_only(x, p):
    """A reshape without the transpose: pixels of neighbouring patches get interleaved."""
    B, N, D = x.shape
    C, h = D // (p * p), int(round(np.sqrt(N)))
    return x.reshape(B, C, h * p, h * p)


def unpatchify_rows_and_columns_swapped(x, p):
    """Patch n placed at (column n // h, row n % h): the image comes out transposed."""
    return SOLUTION_UNPATCHIFY(x, p).swapaxes(-1, -2)


# --- mae_random_mask ------------------------------------------------------------------------
def mask_rounds_ratio_times_n_down(B, N, ratio, rng):
    """int(ratio * N) masked: one too few when ratio * N is not whole (36 instead of 37)."""
    k = int(ratio * N)
    order = np.argsort(rng.random((B, N)), axis=1)
    mask = np.zeros((B, N), dtype=bool)
    mask[np.arange(B)[:, None], order[:, :k]] = True
    return mask


def mask_bernoulli_per_patch(B, N, ratio, rng):
    """Each patch masked with probability ratio: the right rate, not the exact count."""
    return rng.random((B, N)) < ratio


def mask_first_patches(B, N, ratio, rng):
    """Always the same patches (the first k of the raster)."""
    mask = np.zeros((B, N), dtype=bool)
    mask[:, :N - int(N * (1 - ratio))] = True
    return mask


def mask_one_order_for_the_batch(B, N, ratio, rng):
    """One shuffle shared by every image of the batch."""
    order = rng.permutation(N)
    mask = np.zeros((B, N), dtype=bool)
    mask[:, order[:N - int(N * (1 - ratio))]] = True
    return mask


def mask_true_means_kept(B, N, ratio, rng):
    """Inverted: True marks the visible patches."""
    return ~exercises.solution("mae_random_mask")(B, N, ratio, rng)


def mask_random_shifted_block(B, N, ratio, rng):
    """A run of k neighbouring patches at a random start (wrapping around): every patch is
    masked equally often and the count is right, but the set is not random."""
    k = N - int(N * (1 - ratio))
    start = rng.integers(0, N, size=(B, 1))
    return ((np.arange(N)[None, :] - start) % N) < k


# --- norm_pix_target ------------------------------------------------------------------------
def norm_pix_biased_variance(patches):
    """np.var's default (ddof=0) instead of torch.var's unbiased variance."""
    mean = patches.mean(-1, keepdims=True)
    return (patches - mean) / np.sqrt(patches.var(-1, keepdims=True) + 1e-6)


def norm_pix_without_eps(patches):
    """No 1e-6: a constant patch gives 0 / 0 = NaN."""
    mean = patches.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (patches - mean) / patches.std(-1, ddof=1, keepdims=True)


def norm_pix_eps_outside_the_root(patches):
    mean = patches.mean(-1, keepdims=True)
    return (patches - mean) / (patches.std(-1, ddof=1, keepdims=True) + 1e-6)


def norm_pix_over_patches(patches):
    """Statistics over the patches of an image (axis -2) instead of the values of a patch."""
    mean = patches.mean(-2, keepdims=True)
    return (patches - mean) / np.sqrt(patches.var(-2, ddof=1, keepdims=True) + 1e-6)


# --- mae_loss -------------------------------------------------------------------------------
def mae_loss_over_all_patches(pred, target, mask):
    """Visible patches counted too."""
    return float(((pred - target) ** 2).mean())


def mae_loss_sum_over_values(pred, target, mask):
    """Sums the squared error over the P values of a patch instead of averaging."""
    per_patch = ((pred - target) ** 2).sum(-1)
    return float((per_patch * mask).sum() / mask.sum())


def mae_loss_mean_per_image(pred, target, mask):
    """A mean over each image's masked patches, then over images."""
    per_patch = ((pred - target) ** 2).mean(-1)
    return float(((per_patch * mask).sum(1) / mask.sum(1)).mean())


def mae_loss_visible_patches(pred, target, mask):
    """Scores the patches the encoder saw (True read as 'visible')."""
    per_patch = ((pred - target) ** 2).mean(-1)
    keep = ~mask
    return float((per_patch * keep).sum() / max(keep.sum(), 1))


# --- beit_token_loss ------------------------------------------------------------------------
def _log_p(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def token_loss_sum(logits, tokens, mask):
    """The seed's sum over M."""
    log_p = _log_p(logits[mask])
    return float(-log_p[np.arange(len(log_p)), tokens[mask]].sum())


def token_loss_every_patch(logits, tokens, mask):
    """Scores visible patches too."""
    log_p = _log_p(logits)
    return float(-np.take_along_axis(log_p, tokens[..., None], -1).mean())


def token_loss_unstable(logits, tokens, mask):
    z = logits[mask]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
        return float(-np.log(p[np.arange(len(z)), tokens[mask]]).mean())


WRONG_ANSWERS = {
    "unpatchify": [unpatchify_channel_first, unpatchify_reshape_only,
                   unpatchify_rows_and_columns_swapped],
    "mae_random_mask": [mask_rounds_ratio_times_n_down, mask_bernoulli_per_patch,
                        mask_first_patches, mask_one_order_for_the_batch, mask_true_means_kept,
                        mask_random_shifted_block],
    "norm_pix_target": [norm_pix_biased_variance, norm_pix_without_eps,
                        norm_pix_eps_outside_the_root, norm_pix_over_patches],
    "mae_loss": [mae_loss_over_all_patches, mae_loss_sum_over_values, mae_loss_mean_per_image,
                 mae_loss_visible_patches],
    "beit_token_loss": [token_loss_sum, token_loss_every_patch, token_loss_unstable],
}


@parametrize_wrong(WRONG_ANSWERS)
def test_wrong_answer_fails(name, wrong):
    assert_wrong_answer_fails(name, wrong)


def test_the_library_mask_passes_the_random_mask_check():
    def library(B, N, ratio, rng):
        return random_patch_mask(B, N, ratio, rng, device="cpu")

    assert exercises.check("mae_random_mask", library) is True


def test_random_mask_messages_name_the_broken_property():
    cases = {
        mask_rounds_ratio_times_n_down: "exactly",
        mask_first_patches: "same probability",
        mask_one_order_for_the_batch: "same probability",
        mask_random_shifted_block: "uniformly random set",
    }
    for wrong, phrase in cases.items():
        assert phrase in assert_wrong_answer_fails("mae_random_mask", wrong), wrong.__name__


def test_a_biased_variance_is_named_as_a_scale():
    message = assert_wrong_answer_fails("norm_pix_target", norm_pix_biased_variance)
    assert "times the expected one" in message


def test_a_missing_eps_fails_on_the_constant_patch():
    message = assert_wrong_answer_fails("norm_pix_target", norm_pix_without_eps)
    assert "constant patch" in message and "NaN" in message


def test_the_library_norm_pix_target_is_the_unbiased_formula():
    """The check reads the library's target off mim_pixel_loss's gradient: it equals the
    formula written out, with the unbiased variance."""
    from minitransformer.exercises import get

    x = np.random.default_rng(0).uniform(size=(2, 3, 12))
    by_hand = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, ddof=1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(get("norm_pix_target").expected(x), by_hand, rtol=1e-12,
                               atol=1e-12)
