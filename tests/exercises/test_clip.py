"""Wrong answers to the CLIP exercises (notebook 07) fail their checks."""

from __future__ import annotations

import numpy as np

from .helpers import assert_wrong_answer_fails, parametrize_wrong


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _log_softmax_rows(a):
    a = a - a.max(axis=1, keepdims=True)
    return a - np.log(np.exp(a).sum(axis=1, keepdims=True))


# l2_normalize ------------------------------------------------------------------------------
def normalize_over_first_axis(x):
    return x / np.maximum(np.sqrt((x ** 2).sum(axis=0, keepdims=True)), 1e-12)


def normalize_without_sqrt(x):
    return x / np.maximum((x ** 2).sum(axis=-1, keepdims=True), 1e-12)


def normalize_without_eps(x):
    with np.errstate(invalid="ignore"):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)  # 0 / 0 on a zero row


def normalize_by_l1_norm(x):
    return x / np.maximum(np.abs(x).sum(axis=-1, keepdims=True), 1e-12)


# clip_logits -------------------------------------------------------------------------------
def logits_times_log_scale(i, t, s):
    return s * (_unit(i) @ _unit(t).T)  # s is log(1/tau): the scale is exp(s)


def logits_unnormalised(i, t, s):
    return np.exp(s) * (i @ t.T)


def logits_texts_on_rows(i, t, s):
    return np.exp(s) * (_unit(t) @ _unit(i).T)


def logits_divided_by_scale(i, t, s):
    return (_unit(i) @ _unit(t).T) / np.exp(s)


# clip_loss ---------------------------------------------------------------------------------
def _logits(i, t, s):
    return np.exp(s) * (_unit(i) @ _unit(t).T)


def loss_image_to_text_only(i, t, s):
    z = _logits(i, t, s)
    return -np.diag(_log_softmax_rows(z)).mean()


def loss_summed_over_the_batch(i, t, s):  # eq. 6 as written: a sum, not a mean
    z = _logits(i, t, s)
    return (-np.diag(_log_softmax_rows(z)).sum() - np.diag(_log_softmax_rows(z.T)).sum()) / 2


def loss_scale_not_exponentiated(i, t, s):
    z = s * (_unit(i) @ _unit(t).T)
    return (-np.diag(_log_softmax_rows(z)).mean() - np.diag(_log_softmax_rows(z.T)).mean()) / 2


def loss_features_not_normalised(i, t, s):
    z = np.exp(s) * (i @ t.T)
    return (-np.diag(_log_softmax_rows(z)).mean() - np.diag(_log_softmax_rows(z.T)).mean()) / 2


# zero_shot_class_embeddings -----------------------------------------------------------------
def ensemble_mean_not_renormalised(t, y, K):
    return np.stack([_unit(t)[y == c].mean(axis=0) for c in range(K)])


def ensemble_raw_mean(t, y, K):  # the longest caption dominates its class
    return _unit(np.stack([t[y == c].mean(axis=0) for c in range(K)]))


def ensemble_sum_over_all_prompts(t, y, K):  # forgot to group by class
    return np.repeat(_unit(_unit(t).sum(axis=0, keepdims=True)), K, axis=0)


# zero_shot_predict -------------------------------------------------------------------------
def predict_by_dot_product(i, c):
    return (i @ c.T).argmax(axis=1)


def predict_over_images(i, c):
    return (_unit(i) @ _unit(c).T).argmax(axis=0)


def predict_nearest_unnormalised(i, c):  # Euclidean distance between raw features
    return np.linalg.norm(i[:, None] - c[None], axis=-1).argmin(axis=1)


def predict_least_similar(i, c):
    return (_unit(i) @ _unit(c).T).argmin(axis=1)


WRONG_ANSWERS = {
    "l2_normalize": [normalize_over_first_axis, normalize_without_sqrt, normalize_without_eps,
                     normalize_by_l1_norm],
    "clip_logits": [logits_times_log_scale, logits_unnormalised, logits_texts_on_rows,
                    logits_divided_by_scale],
    "clip_loss": [loss_image_to_text_only, loss_summed_over_the_batch,
                  loss_scale_not_exponentiated, loss_features_not_normalised],
    "zero_shot_class_embeddings": [ensemble_mean_not_renormalised, ensemble_raw_mean,
                                   ensemble_sum_over_all_prompts],
    "zero_shot_predict": [predict_by_dot_product, predict_over_images,
                          predict_nearest_unnormalised, predict_least_similar],
}


@parametrize_wrong(WRONG_ANSWERS)
def test_wrong_answer_fails(name, wrong):
    assert_wrong_answer_fails(name, wrong)


def test_a_zero_row_without_eps_is_named_as_nan():
    message = assert_wrong_answer_fails("l2_normalize", normalize_without_eps)
    assert "row 2 is all zeros" in message
    assert "NaN" in message


def test_texts_on_the_rows_is_named_as_a_transpose():
    message = assert_wrong_answer_fails("clip_logits", logits_texts_on_rows)
    assert "expected shape (3, 5), got shape (5, 3)" in message
    assert "a transpose or a wrong axis" in message


def test_a_one_directional_loss_fails_on_the_first_batch():
    message = assert_wrong_answer_fails("clip_loss", loss_image_to_text_only)
    assert "case 1 of" in message


def test_predicting_over_images_is_a_shape_error():
    message = assert_wrong_answer_fails("zero_shot_predict", predict_over_images)
    assert "expected shape (10,), got shape (3,)" in message
