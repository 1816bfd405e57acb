"""Wrong answers to the DINO exercises (notebook 08) fail their checks."""

from __future__ import annotations

import numpy as np

from minitransformer import exercises

from .helpers import assert_wrong_answer_fails, parametrize_wrong


def _softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


# ------------------------------------------------------------------ dino_teacher_probs
def probs_without_center(teacher_logits, center, temp):
    return _softmax(teacher_logits / temp)


def probs_center_after_the_temperature(teacher_logits, center, temp):
    return _softmax(teacher_logits / temp - center)


def probs_over_the_batch_axis(teacher_logits, center, temp):
    return _softmax((teacher_logits - center) / temp, axis=0)


def probs_without_the_max(teacher_logits, center, temp):
    e = np.exp((teacher_logits - center) / temp)
    return e / e.sum(axis=-1, keepdims=True)


def probs_not_sharpened(teacher_logits, center, temp):
    return _softmax(teacher_logits - center)


# ------------------------------------------------------------------ dino_center_update
def center_momentum_swapped(center, teacher_logits, momentum):
    mean = teacher_logits.reshape(-1, teacher_logits.shape[-1]).mean(0, keepdims=True)
    return (1 - momentum) * center + momentum * mean


def center_mean_over_prototypes(center, teacher_logits, momentum):
    mean = teacher_logits.mean(axis=-1).mean()  # one number: the mean over K as well
    return momentum * center + (1 - momentum) * mean


def center_first_crop_only(center, teacher_logits, momentum):
    mean = teacher_logits[0].mean(axis=0, keepdims=True)
    return momentum * center + (1 - momentum) * mean


def center_without_keepdims(center, teacher_logits, momentum):
    mean = teacher_logits.reshape(-1, teacher_logits.shape[-1]).mean(0)  # (K,)
    return (momentum * center + (1 - momentum) * mean)[0]


# ------------------------------------------------------------------ dino_multicrop_loss
def _term(t, s, temp):
    return -(t * _log_softmax(s / temp)).sum(-1).mean()


def loss_with_same_view_pairs(student_logits, teacher_probs, student_temp=0.1):
    terms = [_term(t, s, student_temp) for t in teacher_probs for s in student_logits]
    return float(np.mean(terms))


def loss_without_student_temperature(student_logits, teacher_probs, student_temp=0.1):
    terms = [_term(t, s, 1.0) for q, t in enumerate(teacher_probs)
             for v, s in enumerate(student_logits) if v != q]
    return float(np.mean(terms))


def loss_summed_over_pairs(student_logits, teacher_probs, student_temp=0.1):
    terms = [_term(t, s, student_temp) for q, t in enumerate(teacher_probs)
             for v, s in enumerate(student_logits) if v != q]
    return float(np.sum(terms))


def loss_divided_by_all_pairs(student_logits, teacher_probs, student_temp=0.1):
    terms = [_term(t, s, student_temp) for q, t in enumerate(teacher_probs)
             for v, s in enumerate(student_logits) if v != q]
    return float(np.sum(terms) / (len(teacher_probs) * len(student_logits)))


def loss_with_an_unstable_log_softmax(student_logits, teacher_probs, student_temp=0.1):
    terms = []
    for q, t in enumerate(teacher_probs):
        for v, s in enumerate(student_logits):
            if v != q:
                e = np.exp(s / student_temp)
                terms.append(-(t * np.log(e / e.sum(-1, keepdims=True))).sum(-1).mean())
    return float(np.mean(terms))


# ------------------------------------------------------------------ dino_ema_teacher
def ema_momentum_swapped(teacher, student, momentum):
    return {n: (1 - momentum) * t + momentum * student[n] for n, t in teacher.items()}


def ema_paired_by_position(teacher, student, momentum):
    return {n: momentum * t + (1 - momentum) * s
            for (n, t), s in zip(teacher.items(), student.values())}


def ema_returns_the_student(teacher, student, momentum):
    return dict(student)


def ema_as_a_list(teacher, student, momentum):
    return [momentum * t + (1 - momentum) * student[n] for n, t in teacher.items()]


# ------------------------------------------------------------------ dino_momentum_schedule
def momentum_linear(total_iters, base=0.996, final=1.0):
    return base + (final - base) * np.arange(total_iters) / total_iters


def momentum_reaches_final(total_iters, base=0.996, final=1.0):
    i = np.arange(total_iters)
    n = max(total_iters - 1, 1)
    return final + 0.5 * (base - final) * (1 + np.cos(np.pi * i / n))


def momentum_reversed(total_iters, base=0.996, final=1.0):
    i = np.arange(total_iters)
    return base + 0.5 * (final - base) * (1 + np.cos(np.pi * i / total_iters))


WRONG_ANSWERS = {
    "dino_teacher_probs": [probs_without_center, probs_center_after_the_temperature,
                           probs_over_the_batch_axis, probs_without_the_max,
                           probs_not_sharpened],
    "dino_center_update": [center_momentum_swapped, center_mean_over_prototypes,
                           center_first_crop_only, center_without_keepdims],
    "dino_multicrop_loss": [loss_with_same_view_pairs, loss_without_student_temperature,
                            loss_summed_over_pairs, loss_divided_by_all_pairs,
                            loss_with_an_unstable_log_softmax],
    "dino_ema_teacher": [ema_momentum_swapped, ema_paired_by_position,
                         ema_returns_the_student, ema_as_a_list],
    "dino_momentum_schedule": [momentum_linear, momentum_reaches_final, momentum_reversed],
}


@parametrize_wrong(WRONG_ANSWERS)
def test_wrong_answer_fails(name, wrong):
    assert_wrong_answer_fails(name, wrong)


def test_an_overflowing_softmax_is_reported_as_nan():
    message = assert_wrong_answer_fails("dino_teacher_probs", probs_without_the_max)
    assert "large logits" in message and "NaN" in message


def test_a_center_of_the_wrong_shape_is_named():
    message = assert_wrong_answer_fails("dino_center_update", center_without_keepdims)
    assert "expected shape (1, 8), got shape (8,)" in message


def test_the_same_view_pair_fails_on_the_first_case():
    message = assert_wrong_answer_fails("dino_multicrop_loss", loss_with_same_view_pairs)
    assert "case 1 of 6" in message


def test_pairing_by_position_fails_on_the_reordered_case():
    message = assert_wrong_answer_fails("dino_ema_teacher", ema_paired_by_position)
    assert "another order" in message


def test_a_list_instead_of_a_dict_is_named():
    message = assert_wrong_answer_fails("dino_ema_teacher", ema_as_a_list)
    assert "expected a dict" in message


def test_the_ema_check_reports_the_learners_exception():
    def broken(teacher, student, momentum):
        return {n: t + student["no-such-name"] for n, t in teacher.items()}

    message = assert_wrong_answer_fails("dino_ema_teacher", broken)
    assert "raised KeyError" in message


def test_the_ema_check_reports_not_attempted(capsys):
    def todo(teacher, student, momentum):
        raise NotImplementedError

    assert exercises.check("dino_ema_teacher", todo) is False
    assert "not attempted yet" in capsys.readouterr().out
