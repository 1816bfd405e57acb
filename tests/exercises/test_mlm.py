"""Wrong answers to the MLM exercises (notebook 05) fail their checks, with the right message."""

from __future__ import annotations

import numpy as np

from minitransformer import exercises

from .helpers import assert_wrong_answer_fails, parametrize_wrong

SOLUTION_LOG_SOFTMAX = exercises.solution("stable_log_softmax")
SOLUTION_MASKING = exercises.solution("bert_masking")


# --- stable_log_softmax ---------------------------------------------------------------------
def log_softmax_naive(z):
    """log(exp(z) / sum exp(z)): overflows to inf / inf = NaN on large logits."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        e = np.exp(z)
        return np.log(e / e.sum(axis=-1, keepdims=True))


def log_softmax_wrong_axis(z):
    m = z.max(axis=0, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=0, keepdims=True))


def log_softmax_forgot_logsumexp(z):
    return z - z.max(axis=-1, keepdims=True)


# --- mlm_loss -------------------------------------------------------------------------------
def _nll(logits, labels):
    predicted = labels != -100
    log_p = SOLUTION_LOG_SOFTMAX(logits[predicted])
    y = labels[predicted]
    return -log_p[np.arange(len(y)), y]


def mlm_loss_sum(logits, labels):
    """The seed's sum over M instead of BERT's mean."""
    return float(_nll(logits, labels).sum())


def mlm_loss_over_all_positions(logits, labels):
    """Divides by every position, predicted or not."""
    return float(_nll(logits, labels).sum() / labels.size)


def mlm_loss_unstable(logits, labels):
    predicted = labels != -100
    z, y = logits[predicted], labels[predicted]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        p = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
        return float(-np.log(p[np.arange(len(y)), y]).mean())


def mlm_loss_label_minus_100_as_last_class(logits, labels):
    """Keeps the -100 positions: numpy reads label -100 as a column from the end."""
    V = logits.shape[-1]
    z, y = logits.reshape(-1, V), labels.reshape(-1) % V
    return float(-SOLUTION_LOG_SOFTMAX(z)[np.arange(len(y)), y].mean())


# --- bert_masking ---------------------------------------------------------------------------
def masking_all_to_mask(ids, vocab_size, mask_id, special_ids, rng):
    """Every selected token becomes [MASK]: no random, no unchanged."""
    selected = (rng.random(ids.shape) < 0.15) & ~np.isin(ids, special_ids)
    inputs = np.where(selected, mask_id, ids)
    return inputs, np.where(selected, ids, -100)


def masking_random_at_point_one(ids, vocab_size, mask_id, special_ids, rng):
    """The random branch drawn at 0.1 among the 20% not masked: 2% random, 18% unchanged."""
    selected = (rng.random(ids.shape) < 0.15) & ~np.isin(ids, special_ids)
    to_mask = selected & (rng.random(ids.shape) < 0.8)
    to_random = selected & ~to_mask & (rng.random(ids.shape) < 0.1)
    inputs = np.where(to_mask, mask_id, ids)
    ordinary = np.setdiff1d(np.arange(vocab_size), special_ids)
    inputs[to_random] = rng.choice(ordinary, size=int(to_random.sum()))
    return inputs, np.where(selected, ids, -100)


def masking_labels_of_corrupted_inputs(ids, vocab_size, mask_id, special_ids, rng):
    """Labels copied from the corrupted inputs instead of the original ids."""
    inputs, labels = SOLUTION_MASKING(ids, vocab_size, mask_id, special_ids, rng)
    return inputs, np.where(labels != -100, inputs, -100)


def masking_selects_special_tokens(ids, vocab_size, mask_id, special_ids, rng):
    """Selects among every token, [CLS] and [PAD] included."""
    selected = rng.random(ids.shape) < 0.15
    to_mask = selected & (rng.random(ids.shape) < 0.8)
    to_random = selected & ~to_mask & (rng.random(ids.shape) < 0.5)
    inputs = np.where(to_mask, mask_id, ids)
    ordinary = np.setdiff1d(np.arange(vocab_size), special_ids)
    inputs[to_random] = rng.choice(ordinary, size=int(to_random.sum()))
    return inputs, np.where(selected, ids, -100)


def masking_labels_only_at_mask(ids, vocab_size, mask_id, special_ids, rng):
    """Only the [MASK] positions are predicted: the random and unchanged 20% lose their
    labels."""
    inputs, _ = SOLUTION_MASKING(ids, vocab_size, mask_id, special_ids, rng)
    return inputs, np.where(inputs == mask_id, ids, -100)


def masking_random_from_whole_vocabulary(ids, vocab_size, mask_id, special_ids, rng):
    """Random replacements drawn from every id, special ones included."""
    selected = (rng.random(ids.shape) < 0.15) & ~np.isin(ids, special_ids)
    to_mask = selected & (rng.random(ids.shape) < 0.8)
    to_random = selected & ~to_mask & (rng.random(ids.shape) < 0.5)
    inputs = np.where(to_mask, mask_id, ids)
    inputs[to_random] = rng.integers(0, vocab_size, size=int(to_random.sum()))
    return inputs, np.where(selected, ids, -100)


def masking_next_id_instead_of_random(ids, vocab_size, mask_id, special_ids, rng):
    """The "random" token is the next ordinary id: the right rate, but not uniform."""
    selected = (rng.random(ids.shape) < 0.15) & ~np.isin(ids, special_ids)
    to_mask = selected & (rng.random(ids.shape) < 0.8)
    to_random = selected & ~to_mask & (rng.random(ids.shape) < 0.5)
    inputs = np.where(to_mask, mask_id, ids)
    n_special = len(special_ids)
    shifted = (ids - n_special + 1) % (vocab_size - n_special) + n_special
    inputs[to_random] = shifted[to_random]
    return inputs, np.where(selected, ids, -100)


def masking_same_positions_in_every_row(ids, vocab_size, mask_id, special_ids, rng):
    """One draw per position (column), shared by all rows."""
    columns = rng.random(ids.shape[1]) < 0.15
    selected = columns[None, :] & ~np.isin(ids, special_ids)
    to_mask = selected & (rng.random(ids.shape) < 0.8)
    to_random = selected & ~to_mask & (rng.random(ids.shape) < 0.5)
    inputs = np.where(to_mask, mask_id, ids)
    ordinary = np.setdiff1d(np.arange(vocab_size), special_ids)
    inputs[to_random] = rng.choice(ordinary, size=int(to_random.sum()))
    return inputs, np.where(selected, ids, -100)


# --- unigram_accuracy -----------------------------------------------------------------------
def unigram_counts_special_tokens(train_ids, labels, special_ids):
    """[PAD] (or [CLS]) wins the count: the baseline guesses a token never predicted."""
    guess = np.bincount(train_ids.reshape(-1)).argmax()
    return float((labels[labels != -100] == guess).mean())


def unigram_from_the_labels(train_ids, labels, special_ids):
    """The most frequent word of the held-out labels: a baseline that peeks at the answers."""
    target = labels[labels != -100]
    return float((target == np.bincount(target).argmax()).mean())


def unigram_over_all_positions(train_ids, labels, special_ids):
    """Scores every position, the -100 ones as misses."""
    counts = np.bincount(train_ids.reshape(-1))
    counts[list(special_ids)] = 0
    return float((labels == counts.argmax()).mean())


WRONG_ANSWERS = {
    "stable_log_softmax": [log_softmax_naive, log_softmax_wrong_axis,
                           log_softmax_forgot_logsumexp],
    "mlm_loss": [mlm_loss_sum, mlm_loss_over_all_positions, mlm_loss_unstable,
                 mlm_loss_label_minus_100_as_last_class],
    "bert_masking": [masking_all_to_mask, masking_random_at_point_one,
                     masking_labels_of_corrupted_inputs, masking_selects_special_tokens,
                     masking_labels_only_at_mask, masking_random_from_whole_vocabulary,
                     masking_next_id_instead_of_random, masking_same_positions_in_every_row],
    "unigram_accuracy": [unigram_counts_special_tokens, unigram_from_the_labels,
                         unigram_over_all_positions],
}


@parametrize_wrong(WRONG_ANSWERS)
def test_wrong_answer_fails(name, wrong):
    assert_wrong_answer_fails(name, wrong)


def test_an_overflowing_log_softmax_is_caught_on_the_extreme_case():
    message = assert_wrong_answer_fails("stable_log_softmax", log_softmax_naive)
    assert "extreme logits" in message and "NaN" in message


def test_masking_messages_name_the_broken_property():
    cases = {
        masking_all_to_mask: "[MASK] / selected",
        masking_random_at_point_one: "random token / selected",
        masking_labels_of_corrupted_inputs: "ORIGINAL token",
        masking_selects_special_tokens: "never be selected",
        masking_random_from_whole_vocabulary: "ordinary token",
        masking_next_id_instead_of_random: "uniformly",
        masking_same_positions_in_every_row: "same probability",
    }
    for wrong, phrase in cases.items():
        assert phrase in assert_wrong_answer_fails("bert_masking", wrong), wrong.__name__


def test_masking_accepts_an_answer_with_another_random_stream():
    """The check tests properties, not one particular sequence of draws: a correct masking
    that draws in another order (the replacement first, then the selection) passes."""

    def other_order(ids, vocab_size, mask_id, special_ids, rng):
        u_kind = rng.random(ids.shape)  # [MASK] below 0.8, random below 0.9, else unchanged
        selected = (rng.random(ids.shape) < 0.15) & ~np.isin(ids, special_ids)
        inputs = ids.copy()
        inputs[selected & (u_kind < 0.8)] = mask_id
        to_random = selected & (u_kind >= 0.8) & (u_kind < 0.9)
        ordinary = np.setdiff1d(np.arange(vocab_size), special_ids)
        inputs[to_random] = ordinary[rng.integers(0, len(ordinary), int(to_random.sum()))]
        return inputs, np.where(selected, ids, -100)

    assert exercises.check("bert_masking", other_order) is True


def test_the_library_masking_passes_the_check():
    from minitransformer.objectives import mask_tokens

    def library(ids, vocab_size, mask_id, special_ids, rng):
        return mask_tokens(ids, vocab_size, mask_id, rng, special_ids=special_ids)

    assert exercises.check("bert_masking", library) is True
