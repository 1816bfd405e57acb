"""Exercises of notebook 05 (masked language modelling): seed eq. 4 and BERT's masking.

- ``log_softmax``: the numerically stable log-softmax that every cross-entropy needs;
- ``mlm_loss``: eq. 4 as BERT computes it, the *mean* over the predicted positions;
- ``bert_masking``: BERT's 80/10/10 corruption (random, so checked by its statistics over
  many draws against ``objectives.mask_tokens``);
- ``unigram_accuracy``: the baseline a masked language model must beat.

Each reference solution is plain NumPy, as a learner would write it; ``expected`` computes
the same thing with the library (float64 tensors) where the library has the operation.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..autograd import tensor
from ..objectives import mask_tokens
from ..objectives import mlm_loss as library_mlm_loss
from ._core import Case, Mismatch, exercise

IGNORE = -100  # the label of a position that is not predicted (torch / HF convention)


# --------------------------------------------------------------------------------------------
# log-softmax
# --------------------------------------------------------------------------------------------
def _log_softmax_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case("a (3, 5) matrix of logits", (rng.standard_normal((3, 5)),)),
        Case("a batch (2, 4, 7): over the last axis only", (rng.standard_normal((2, 4, 7)),)),
        Case("a vocabulary of one word (V = 1)", (rng.standard_normal((4, 1)),)),
        Case("extreme logits (scale 1000): exp overflows unless the max is subtracted",
             (1000.0 * rng.standard_normal((3, 6)),)),
    ]


@exercise(
    "stable_log_softmax",
    title="the stable log-softmax z - max(z) - log sum exp(z - max(z))",
    signature="log_softmax(z) -> array; z (..., V) -> (..., V)",
    equation="eq. 4's log P(x_i | context) = log softmax(z_i)[x_i]",
    library="F.log_softmax",
    notebook="05_masked_language_modeling",
    hint="log softmax(z) = z - logsumexp(z) over the last axis; compute logsumexp as "
         "m + log(sum(exp(z - m))) with m = the row's max (keepdims=True), so that exp never "
         "overflows; log(exp(z) / sum(exp(z))) gives inf/inf = NaN on large logits",
    cases=_log_softmax_cases,
    expected=lambda z: F.log_softmax(tensor(z), axis=-1).numpy(),
)
def log_softmax(z):
    m = z.max(axis=-1, keepdims=True)  # (..., 1): the row's max
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))  # (..., V)


# --------------------------------------------------------------------------------------------
# the MLM loss (eq. 4, mean over the predicted positions)
# --------------------------------------------------------------------------------------------
def _labels(rng: np.random.Generator, shape: tuple, V: int, frac: float) -> np.ndarray:
    """Random targets in [0, V) at a fraction ``frac`` of the positions, -100 elsewhere
    (at least one predicted position)."""
    y = rng.integers(0, V, size=shape)
    keep = rng.random(shape) < frac
    keep.reshape(-1)[rng.integers(0, keep.size)] = True
    return np.where(keep, y, IGNORE).astype(np.int64)


def _mlm_loss_cases(rng: np.random.Generator) -> list[Case]:
    one = np.full((1, 5), IGNORE, dtype=np.int64)
    one[0, 3] = 2
    return [
        Case("a batch of 2 sequences of 6 tokens, V = 10, about a third predicted",
             (rng.standard_normal((2, 6, 10)), _labels(rng, (2, 6), 10, 0.35))),
        Case("a single predicted position", (rng.standard_normal((1, 5, 7)), one)),
        Case("every position predicted (no -100)",
             (rng.standard_normal((3, 4, 5)), rng.integers(0, 5, size=(3, 4)))),
        Case("extreme logits (scale 500)",
             (500.0 * rng.standard_normal((2, 8, 12)), _labels(rng, (2, 8), 12, 0.3))),
        Case("a (T, V) matrix without a batch axis",
             (rng.standard_normal((9, 4)), _labels(rng, (9,), 4, 0.4))),
    ]


@exercise(
    "mlm_loss",
    title="the MLM loss, the mean over the predicted positions of -log softmax(z_i)[x_i]",
    signature="mlm_loss(logits, labels) -> float; logits (..., V), labels (...) int, -100 "
              "where not predicted",
    equation="eq. 4 with BERT's mean over M",
    library="objectives.mlm_loss",
    notebook="05_masked_language_modeling",
    hint="select the positions whose label is not -100 (boolean indexing turns (..., V) "
         "into (M, V)), take a stable log-softmax of those rows, pick each row's label "
         "column, and average -log p over the M predicted positions only (a mean, not a "
         "sum; the -100 positions count neither in the numerator nor in the denominator)",
    cases=_mlm_loss_cases,
    expected=lambda logits, labels: library_mlm_loss(tensor(logits), labels).item(),
)
def mlm_loss(logits, labels):
    predicted = labels != -100  # (...) bool: the set M
    z = logits[predicted]  # (M, V)
    y = labels[predicted]  # (M,)
    m = z.max(axis=-1, keepdims=True)
    log_p = z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))  # (M, V)
    nll = -log_p[np.arange(len(y)), y]  # (M,): -log P(x_i | corrupted sequence)
    return float(nll.mean())


# --------------------------------------------------------------------------------------------
# BERT's 80/10/10 masking (random: checked by its statistics)
# --------------------------------------------------------------------------------------------
MASK_PROB, MASK_FRAC, RANDOM_FRAC = 0.15, 0.8, 0.1
_V, _MASK_ID, _SPECIAL = 20, 3, (0, 1, 2, 3, 4)  # [PAD], [UNK], [CLS], [MASK], [EOT]


def _masking_batch(rng: np.random.Generator, B: int = 4000, T: int = 24) -> np.ndarray:
    """(B, T) ids: [CLS] first, a [PAD] tail of random length, and ordinary tokens in
    between, one of which (id 5) is 60% of them (as "the" or "-" in real text)."""
    ordinary = np.arange(len(_SPECIAL) + 1, _V)
    ids = np.where(rng.random((B, T)) < 0.6, len(_SPECIAL), rng.choice(ordinary, size=(B, T)))
    ids[:, 0] = 2  # [CLS]
    lengths = rng.integers(T // 2, T + 1, size=B)
    ids[np.arange(T)[None, :] >= lengths[:, None]] = 0  # [PAD] after each row's length
    return ids.astype(np.int64)


def _as_numpy(x, what: str) -> np.ndarray:
    if hasattr(x, "data") and hasattr(x, "requires_grad"):  # a Tensor
        x = x.numpy()
    if type(x).__module__.startswith("cupy"):
        x = x.get()
    if not isinstance(x, np.ndarray):
        raise Mismatch(f"{what}: expected an array, got {type(x).__name__}")
    return x


def _fractions(ids: np.ndarray, inputs: np.ndarray, labels: np.ndarray) -> dict[str, tuple]:
    """The statistics of one masking: name -> (fraction, number of trials)."""
    special = np.isin(ids, _SPECIAL)
    sel = labels != IGNORE
    n_sel = max(int(sel.sum()), 1)
    x_in, x0 = inputs[sel], ids[sel]
    return {
        "selected / non-special tokens": (sel.sum() / (~special).sum(), int((~special).sum())),
        "[MASK] / selected": ((x_in == _MASK_ID).sum() / n_sel, n_sel),
        "random token / selected": (((x_in != _MASK_ID) & (x_in != x0)).sum() / n_sel, n_sel),
        "unchanged / selected": ((x_in == x0).sum() / n_sel, n_sel),
    }


def _verify_bert_masking(fn, rng: np.random.Generator) -> None:
    call = "bert_masking(ids, vocab_size=20, mask_id=3, special_ids=(0, 1, 2, 3, 4), rng)"
    ids = _masking_batch(rng)
    out = fn(ids.copy(), _V, _MASK_ID, _SPECIAL, rng)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise Mismatch(f"{call} on ids {ids.shape}: expected a pair (inputs, labels), got "
                       f"{type(out).__name__}")
    inputs, labels = (_as_numpy(o, w) for o, w in zip(out, ("inputs", "labels")))
    for name, a in (("inputs", inputs), ("labels", labels)):
        if a.shape != ids.shape:
            raise Mismatch(f"{call}: {name} has shape {a.shape}, expected the shape of ids "
                           f"{ids.shape}")
        if a.dtype.kind not in "iu":
            raise Mismatch(f"{call}: {name} must hold integers, got dtype {a.dtype}")
    sel = labels != IGNORE
    special = np.isin(ids, _SPECIAL)

    def first(bad: np.ndarray) -> str:
        b, t = (int(i) for i in np.argwhere(bad)[0])
        return (f"{int(bad.sum())} positions, the first at (row {b}, position {t}): id "
                f"{ids[b, t]}, your input {inputs[b, t]}, your label {labels[b, t]}")

    if (sel & (labels != ids)).any():
        raise Mismatch(f"{call}: a predicted position's label must be the ORIGINAL token "
                       f"(also where the input became [MASK] or a random token); wrong at "
                       f"{first(sel & (labels != ids))}")
    if (sel & special).any():
        raise Mismatch(f"{call}: special tokens ([CLS], [PAD], ...) must never be selected; "
                       f"selected at {first(sel & special)}")
    if (~sel & (inputs != ids)).any():
        raise Mismatch(f"{call}: a token that is not selected (label -100) must stay "
                       f"unchanged in the inputs; changed at {first(~sel & (inputs != ids))}")
    replaced = sel & (inputs != ids) & (inputs != _MASK_ID)
    if (replaced & np.isin(inputs, _SPECIAL)).any():
        raise Mismatch(f"{call}: a random replacement must be an ordinary token (ids 5..19), "
                       f"never a special one; got one at "
                       f"{first(replaced & np.isin(inputs, _SPECIAL))}")
    if (inputs < 0).any() or (inputs >= _V).any():
        raise Mismatch(f"{call}: inputs must lie in [0, 20), got range "
                       f"[{inputs.min()}, {inputs.max()}]")

    per_position = sel[:, 1:].sum(0) / (~special[:, 1:]).sum(0)  # (T-1,) after [CLS]
    worst = int(np.argmax(np.abs(per_position - MASK_PROB)))
    n_col = (~special[:, 1:]).sum(0)[worst]
    if abs(per_position[worst] - MASK_PROB) > 5.0 * np.sqrt(0.15 * 0.85 / n_col):
        raise Mismatch(f"{call}: every position must be selected with the same probability "
                       f"0.15, but position {worst + 1} is selected in "
                       f"{per_position[worst]:.3f} of the rows (draw one random number per "
                       "token, not per row or per column)")

    # the fractions over the whole batch, beside the library's on the same ids
    lib_in, lib_lab = mask_tokens(ids, _V, _MASK_ID, np.random.default_rng(1),
                                  prob=MASK_PROB, special_ids=_SPECIAL)
    mine, lib = _fractions(ids, inputs, labels), _fractions(ids, lib_in, lib_lab)
    for name, (f, n) in mine.items():
        g, _ = lib[name]
        tol = 5.0 * np.sqrt(2.0 * max(g * (1.0 - g), 1e-4) / n)  # two independent draws
        if abs(f - g) > tol:
            raise Mismatch(
                f"{call} over {ids.size:,} tokens: {name} is {f:.4f}, expected about {g:.4f} "
                f"(what objectives.mask_tokens gives on the same ids; BERT selects 15% of "
                f"the non-special tokens and of those makes 80% [MASK], 10% a random token, "
                f"10% unchanged; tolerance {tol:.4f})")
    words = inputs[replaced]
    n_ord = _V - len(_SPECIAL)
    share = np.bincount(words, minlength=_V)[len(_SPECIAL):] / max(len(words), 1)
    if len(words) and share.max() > 2.5 / n_ord:
        raise Mismatch(f"{call}: random replacements must be drawn uniformly from the "
                       f"{n_ord} ordinary ids, but id {int(share.argmax()) + len(_SPECIAL)} "
                       f"is {share.max():.3f} of them (fair share {1 / n_ord:.3f})")
    edge = np.array([[2, 0, 0, 0]])  # a row of special tokens only: nothing to predict
    e_in, e_lab = (_as_numpy(o, w) for o, w in zip(fn(edge.copy(), _V, _MASK_ID, _SPECIAL,
                                                      rng), ("inputs", "labels")))
    if (e_lab != IGNORE).any() or (e_in != edge).any():
        raise Mismatch(f"{call} on [[CLS, PAD, PAD, PAD]] (special tokens only): expected "
                       f"the inputs unchanged and every label -100, got inputs "
                       f"{e_in.tolist()}, labels {e_lab.tolist()}")


@exercise(
    "bert_masking",
    title="BERT's masking: 15% of the non-special tokens selected; of those 80% [MASK], "
          "10% a random ordinary token, 10% unchanged; labels -100 where not selected",
    signature="bert_masking(ids, vocab_size, mask_id, special_ids, rng) -> (inputs, labels);"
              " ids (B, T) int, inputs and labels (B, T) int",
    equation="eq. 4's set M, as BERT draws it (Devlin et al. 2019, sec. 3.1)",
    library="objectives.mask_tokens",
    notebook="05_masked_language_modeling",
    hint="draw one uniform number per token: selected = (u < 0.15) & not special. Among the "
         "selected, a second draw picks [MASK] with probability 0.8; among the selected NOT "
         "replaced by [MASK] (the remaining 20%), a third draw with probability 0.5 (not 0.1) "
         "picks a random ordinary id (rng.choice of the non-special ids). The label is the "
         "original id at every selected position (also the random and unchanged ones), -100 "
         "elsewhere. Copy ids before writing into them",
    verify=_verify_bert_masking,
)
def bert_masking(ids, vocab_size, mask_id, special_ids, rng):
    special = np.isin(ids, special_ids) | (ids == mask_id)
    selected = (rng.random(ids.shape) < 0.15) & ~special  # (B, T): the set M
    labels = np.where(selected, ids, -100)
    inputs = ids.copy()
    to_mask = selected & (rng.random(ids.shape) < 0.8)  # 80% of M
    to_random = selected & ~to_mask & (rng.random(ids.shape) < 0.5)  # half of the other 20%
    inputs[to_mask] = mask_id
    ordinary = np.setdiff1d(np.arange(vocab_size), list(special_ids) + [mask_id])
    inputs[to_random] = rng.choice(ordinary, size=int(to_random.sum()))
    return inputs, labels  # the last 10% of M stays unchanged (and is still predicted)


# --------------------------------------------------------------------------------------------
# the unigram baseline
# --------------------------------------------------------------------------------------------
def _unigram_cases(rng: np.random.Generator) -> list[Case]:
    special = (0, 1, 2, 3, 4)

    def corpus(n, T, V, common):
        ids = rng.integers(5, V, size=(n, T))
        ids[rng.random((n, T)) < 0.3] = common  # one frequent word
        ids[:, 0] = 2  # [CLS]
        ids[:, -T // 3:] = 0  # a long [PAD] tail: [PAD] is the most frequent id
        return ids

    def labels_of(ids, frac):  # the original id at a fraction of the ordinary tokens
        chosen = (rng.random(ids.shape) < frac) & ~np.isin(ids, special)
        return np.where(chosen, ids, IGNORE)

    train, test = corpus(40, 12, 30, 7), corpus(6, 12, 30, 7)
    single = np.full((1, 12), IGNORE)
    single[0, 4] = 7
    other = corpus(6, 12, 30, 11)  # the held-out text's most frequent word is 11, not 7
    return [
        Case("[PAD] is the most frequent id of the training text",
             (train, labels_of(test, 0.4), special)),
        Case("a single predicted position", (train, single, special)),
        Case("the held-out labels' most frequent word is not the training text's",
             (train, labels_of(other, 0.6), special)),
        Case("the training text as one flat stream of ids",
             (train.reshape(-1), labels_of(test, 0.3), special)),
    ]


def _unigram_expected(train_ids, labels, special_ids):
    """Counted with np.unique (the recipe counts with np.bincount): the same definition,
    computed another way."""
    words, counts = np.unique(train_ids[~np.isin(train_ids, special_ids)], return_counts=True)
    guess = words[np.argmax(counts)]  # np.unique sorts: ties go to the smallest id
    target = labels[labels != IGNORE]
    return float(np.mean(target == guess))


@exercise(
    "unigram_accuracy",
    title="the unigram baseline: always guess the training text's most frequent ordinary "
          "token, scored at the predicted positions",
    signature="unigram_accuracy(train_ids, labels, special_ids) -> float; train_ids any "
              "shape, labels (...) with -100 where not predicted",
    equation="the reference accuracy of eq. 4's predictions without context",
    library="MLMRecipe.evaluate (its unigram_acc)",
    notebook="05_masked_language_modeling",
    hint="count the ids of the TRAINING text (np.bincount), leave out the special ids "
         "([PAD], [CLS], ... would otherwise win), take the argmax (ties: the smallest id); "
         "then score only the positions whose label is not -100",
    cases=_unigram_cases,
    expected=_unigram_expected,
)
def unigram_accuracy(train_ids, labels, special_ids):
    counts = np.bincount(train_ids.reshape(-1))  # how often each id occurs
    counts[[s for s in special_ids if s < len(counts)]] = 0  # special tokens are never guessed
    guess = int(counts.argmax())  # the most frequent ordinary token
    predicted = labels != -100
    return float((labels[predicted] == guess).mean())
