"""Wrong answers to the DINOv2 exercises (notebook 09) fail their checks."""

from __future__ import annotations

import numpy as np

from minitransformer import exercises

from .helpers import assert_wrong_answer_fails, parametrize_wrong

EPS = 1e-8


def _unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), EPS)


def _nearest(x_hat):
    dots = x_hat @ x_hat.T
    np.fill_diagonal(dots, -np.inf)
    return dots.argmax(axis=1)


# koleo_loss --------------------------------------------------------------------------------
def koleo_self_not_excluded(x):  # every point is its own nearest neighbour
    x_hat = _unit(x)
    nn = (x_hat @ x_hat.T).argmax(axis=1)
    return -np.log(np.linalg.norm(x_hat - x_hat[nn] + EPS, axis=1) + EPS).mean()


def koleo_not_normalised(x):
    dist = np.linalg.norm(x[:, None] - x[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    return -np.log(dist.min(axis=1) + EPS).mean()


def koleo_without_minus_sign(x):
    x_hat = _unit(x)
    return np.log(np.linalg.norm(x_hat - x_hat[_nearest(x_hat)] + EPS, axis=1) + EPS).mean()


def koleo_farthest_neighbour(x):
    x_hat = _unit(x)
    dots = x_hat @ x_hat.T
    np.fill_diagonal(dots, np.inf)
    far = dots.argmin(axis=1)
    return -np.log(np.linalg.norm(x_hat - x_hat[far] + EPS, axis=1) + EPS).mean()


def koleo_without_epsilons(x):  # a duplicated row gives -log 0 = inf
    x_hat = _unit(x)
    with np.errstate(divide="ignore"):
        return -np.log(np.linalg.norm(x_hat - x_hat[_nearest(x_hat)], axis=1)).mean()


# ibot_patch_loss ---------------------------------------------------------------------------
def _patch_ce(s, t, tau):
    z = s / tau
    z = z - z.max(axis=-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return -(t * log_p).sum(axis=-1)  # (B, N)


def ibot_mean_over_all_masked_patches(s, t, m, tau):  # pools the batch's masked patches
    return _patch_ce(s, t, tau)[m].mean()


def ibot_mean_over_masked_images_only(s, t, m, tau):
    ce = _patch_ce(s, t, tau)
    per_image = (ce * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1)
    return per_image[m.any(axis=1)].mean()


def ibot_every_patch(s, t, m, tau):  # the mask is ignored
    return _patch_ce(s, t, tau).mean(axis=1).mean()


def ibot_without_student_temperature(s, t, m, tau):
    ce = _patch_ce(s, t, 1.0)
    return ((ce * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1)).mean()


def ibot_unstable_softmax(s, t, m, tau):  # exp(3000) overflows
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        e = np.exp(s / tau)
        ce = -(t * np.log(e / e.sum(axis=-1, keepdims=True))).sum(axis=-1)
        return ((ce * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1)).mean()


# sinkhorn_knopp ----------------------------------------------------------------------------
def _sk(g, temp, n_iter, columns_first=False, times_b=True):
    z = g / temp
    Q = np.exp(z - z.max()).T  # (K, B)
    K, B = Q.shape
    Q /= Q.sum()
    for _ in range(n_iter):
        if columns_first:
            Q /= Q.sum(axis=0, keepdims=True) * B
            Q /= Q.sum(axis=1, keepdims=True) * K
        else:
            Q /= Q.sum(axis=1, keepdims=True) * K
            Q /= Q.sum(axis=0, keepdims=True) * B
    return (Q * B if times_b else Q).T


def sinkhorn_columns_first(g, temp, n_iter=3):
    return _sk(g, temp, n_iter, columns_first=True)


def sinkhorn_without_times_b(g, temp, n_iter=3):
    return _sk(g, temp, n_iter, times_b=False)


def sinkhorn_transposed(g, temp, n_iter=3):
    return _sk(g, temp, n_iter).T


def sinkhorn_plain_softmax(g, temp, n_iter=3):  # no equipartition at all
    z = g / temp
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sinkhorn_overflows(g, temp, n_iter=3):  # DINOv2's exp(g / tau) without a shift
    with np.errstate(over="ignore", invalid="ignore"):
        Q = np.exp(g / temp).T
        K, B = Q.shape
        Q /= Q.sum()
        for _ in range(n_iter):
            Q /= Q.sum(axis=1, keepdims=True) * K
            Q /= Q.sum(axis=0, keepdims=True) * B
    return (Q * B).T


# dinov2_total_loss -------------------------------------------------------------------------
def _koleo(h):
    return exercises.solution("koleo_loss")(h)


def total_koleo_on_concatenated_crops(dino, ibot, crops, w_dino=1.0, w_ibot=1.0, w_koleo=0.1):
    return w_dino * dino + w_ibot * ibot + w_koleo * _koleo(np.concatenate(crops))


def total_koleo_averaged_over_crops(dino, ibot, crops, w_dino=1.0, w_ibot=1.0, w_koleo=0.1):
    return w_dino * dino + w_ibot * ibot + w_koleo * np.mean([_koleo(h) for h in crops])


def total_koleo_unweighted(dino, ibot, crops, w_dino=1.0, w_ibot=1.0, w_koleo=0.1):
    return w_dino * dino + w_ibot * ibot + sum(_koleo(h) for h in crops)


def total_weights_ignored(dino, ibot, crops, w_dino=1.0, w_ibot=1.0, w_koleo=0.1):
    return dino + ibot + 0.1 * sum(_koleo(h) for h in crops)


WRONG_ANSWERS = {
    "koleo_loss": [koleo_self_not_excluded, koleo_not_normalised, koleo_without_minus_sign,
                   koleo_farthest_neighbour, koleo_without_epsilons],
    "ibot_patch_loss": [ibot_mean_over_all_masked_patches, ibot_mean_over_masked_images_only,
                        ibot_every_patch, ibot_without_student_temperature,
                        ibot_unstable_softmax],
    "sinkhorn_knopp": [sinkhorn_columns_first, sinkhorn_without_times_b, sinkhorn_transposed,
                       sinkhorn_plain_softmax, sinkhorn_overflows],
    "dinov2_total_loss": [total_koleo_on_concatenated_crops, total_koleo_averaged_over_crops,
                          total_koleo_unweighted, total_weights_ignored],
}


@parametrize_wrong(WRONG_ANSWERS)
def test_wrong_answer_fails(name, wrong):
    assert_wrong_answer_fails(name, wrong)


def test_koleo_without_epsilons_fails_on_the_duplicate():
    message = assert_wrong_answer_fails("koleo_loss", koleo_without_epsilons)
    assert "rows 1 and 3 are duplicates" in message
    assert "got inf" in message


def test_ibot_averaged_over_masked_images_fails_where_an_image_is_unmasked():
    message = assert_wrong_answer_fails("ibot_patch_loss", ibot_mean_over_masked_images_only)
    assert "two of them unmasked" in message


def test_ibot_overflow_is_named_as_nan():
    message = assert_wrong_answer_fails("ibot_patch_loss", ibot_unstable_softmax)
    assert "extreme logits" in message
    assert "NaN" in message


def test_sinkhorn_overflow_is_named_as_nan():
    message = assert_wrong_answer_fails("sinkhorn_knopp", sinkhorn_overflows)
    assert "overflows" in message
    assert "NaN" in message


def test_sinkhorn_without_the_factor_b_is_named_as_a_scale():
    message = assert_wrong_answer_fails("sinkhorn_knopp", sinkhorn_without_times_b)
    assert "times the expected one" in message


def test_the_sinkhorn_solution_equipartitions():
    g = np.random.default_rng(0).standard_normal((32, 8))
    q = exercises.solution("sinkhorn_knopp")(g, 0.5, n_iter=200)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-12)  # each sample fully assigned
    np.testing.assert_allclose(q.sum(axis=0), 32 / 8, rtol=1e-6)  # prototypes used equally
