"""Exercises of notebook 07 (CLIP): seed eq. 6 as CLIP trains it.

CLIP, Radford et al. 2021, sec. 2.3 and Figure 3 (the numpy-like pseudocode of the loss);
mlfoundations/open_clip ``src/open_clip/loss.py`` (``ClipLoss``). Each reference solution is
plain NumPy, as a learner would write it; ``expected`` computes the same thing with the
library (float64 tensors): ``F.normalize``, ``objectives.clip_loss``, ``eval.zero_shot_*``.
"""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..autograd import tensor
from ..eval import zero_shot_accuracy
from ..eval import zero_shot_class_embeddings as library_class_embeddings
from ..objectives import clip_loss as library_clip_loss
from ..objectives import init_logit_scale
from ._core import Case, exercise

LOG_100 = math.log(100.0)  # open_clip's clamp: the largest logit_scale, tau = 0.01


# --------------------------------------------------------------------------------------------
# L2 normalisation
# --------------------------------------------------------------------------------------------
def _normalize_cases(rng: np.random.Generator) -> list[Case]:
    with_zero = rng.standard_normal((4, 6))
    with_zero[2] = 0.0  # a zero vector: its norm is 0
    return [
        Case("4 features of width 8", (rng.standard_normal((4, 8)),)),
        Case("a batch of 2 x 3 features of width 5 (normalise the last axis only)",
             (rng.standard_normal((2, 3, 5)),)),
        Case("rows of very different lengths (1e-3 to 1e3)",
             (rng.standard_normal((3, 4)) * np.array([[1e-3], [1.0], [1e3]]),)),
        Case("a single feature vector", (rng.standard_normal((1, 16)),)),
        Case("row 2 is all zeros", (with_zero,)),
    ]


@exercise(
    "l2_normalize",
    title="L2 normalisation x / max(||x||, 1e-12) along the last axis",
    signature="l2_normalize(x) -> array; x (..., E) -> (..., E), each row of unit length",
    equation="the normalised features I / ||I||, T / ||T|| of eq. 6's cosine",
    library="F.normalize",
    notebook="07_clip",
    hint="divide each row by its Euclidean length sqrt(sum x^2) over the LAST axis "
         "(keepdims=True so it broadcasts), and never by less than 1e-12, so a zero row "
         "stays zero instead of 0 / 0 = NaN",
    cases=_normalize_cases,
    expected=lambda x: F.normalize(tensor(x), axis=-1).numpy(),
)
def l2_normalize(x):
    norm = np.sqrt((x ** 2).sum(axis=-1, keepdims=True))  # (..., 1)
    return x / np.maximum(norm, 1e-12)


# --------------------------------------------------------------------------------------------
# The logits: e^s times the cosines
# --------------------------------------------------------------------------------------------
def _features(rng: np.random.Generator, B: int, E: int, noise: float = 1.0):
    img = rng.standard_normal((B, E))
    return img, img + noise * rng.standard_normal((B, E))  # text: aligned, but noisy


def _logits_cases(rng: np.random.Generator) -> list[Case]:
    img, txt = _features(rng, 6, 16)
    return [
        Case("3 images against 5 texts (as in zero-shot), logit_scale = ln 100",
             (rng.standard_normal((3, 8)), rng.standard_normal((5, 8)), LOG_100)),
        Case("6 pairs of width 16, logit_scale = ln(1/0.07) (CLIP's init)",
             (img, txt, init_logit_scale())),
        Case("logit_scale = 0 (tau = 1)",
             (rng.standard_normal((4, 8)), rng.standard_normal((4, 8)), 0.0)),
        Case("one image, one text", (rng.standard_normal((1, 4)), rng.standard_normal((1, 4)),
                                     1.5)),
        Case("unnormalised features (rows scaled by 0.01 to 100), logit_scale = 2",
             (rng.standard_normal((4, 8)) * np.array([[0.01], [1.0], [10.0], [100.0]]),
              rng.standard_normal((4, 8)) * 50.0, 2.0)),
    ]


def _library_logits(image_features, text_features, logit_scale):
    i_hat = F.normalize(tensor(image_features), axis=-1)  # (B_i, E)
    t_hat = F.normalize(tensor(text_features), axis=-1)  # (B_t, E)
    return (F.exp(tensor(np.array(logit_scale))) * (i_hat @ t_hat.T)).numpy()  # (B_i, B_t)


@exercise(
    "clip_logits",
    title="CLIP's logits e^s * normalize(I) @ normalize(T)^T",
    signature="clip_logits(image_features, text_features, logit_scale) -> array; "
              "image_features (B_i, E), text_features (B_t, E), logit_scale a float s = "
              "log(1/tau) -> (B_i, B_t), row i = image i against every text",
    equation="eq. 6's cos(I_i, T_j) / tau, with 1/tau = e^s learned",
    library="objectives.clip_loss's logits_per_image (F.normalize, then e^s times the cosines)",
    notebook="07_clip",
    hint="logit_scale is the LOG of the inverse temperature, as the library and open_clip "
         "store it: multiply the cosines by exp(logit_scale), not by logit_scale. Normalise "
         "both sets of features first, then images @ texts.T (images on the rows)",
    cases=_logits_cases,
    expected=_library_logits,
)
def clip_logits(image_features, text_features, logit_scale):
    i_hat = image_features / np.linalg.norm(image_features, axis=-1, keepdims=True)  # (B_i, E)
    t_hat = text_features / np.linalg.norm(text_features, axis=-1, keepdims=True)  # (B_t, E)
    return np.exp(logit_scale) * (i_hat @ t_hat.T)  # (B_i, B_t) cosines / tau


# --------------------------------------------------------------------------------------------
# The symmetric loss
# --------------------------------------------------------------------------------------------
def _loss_cases(rng: np.random.Generator) -> list[Case]:
    img, txt = _features(rng, 8, 16)
    hard_img, hard_txt = _features(rng, 6, 8, noise=2.0)
    return [
        Case("8 noisy pairs of width 16, logit_scale = ln(1/0.07) (CLIP's init)",
             (img, txt, init_logit_scale())),
        Case("a batch of one (nothing to contrast: the loss is 0)",
             (rng.standard_normal((1, 8)), rng.standard_normal((1, 8)), init_logit_scale())),
        Case("large scale: logit_scale = ln 100 (the clamp), 6 hard pairs",
             (hard_img, hard_txt, LOG_100)),
        Case("logit_scale = 0 (tau = 1), rows of different lengths",
             (rng.standard_normal((5, 4)) * np.array([[0.1], [1.0], [3.0], [10.0], [30.0]]),
              rng.standard_normal((5, 4)), 0.0)),
        Case("two pairs, logit_scale = 3", (*_features(rng, 2, 3), 3.0)),
    ]


@exercise(
    "clip_loss",
    title="CLIP's symmetric loss (CE(Z, arange B) + CE(Z^T, arange B)) / 2, "
          "Z = e^s normalize(I) normalize(T)^T",
    signature="clip_loss(image_features, text_features, logit_scale) -> float; "
              "image_features (B, E), text_features (B, E), pair i matches pair i; "
              "logit_scale a float s = log(1/tau)",
    equation="eq. 6, made symmetric and averaged as CLIP trains it",
    library="objectives.clip_loss",
    notebook="07_clip",
    hint="the image->text term is a cross-entropy over each ROW of the (B, B) logits (the "
         "right text of image i is column i), the text->image term one over each COLUMN; "
         "each is a MEAN over the batch (not eq. 6's sum), and the loss is their average. "
         "Scale the cosines by exp(logit_scale)",
    cases=_loss_cases,
    expected=lambda i, t, s: float(library_clip_loss(tensor(i), tensor(t), s).item()),
)
def clip_loss(image_features, text_features, logit_scale):
    i_hat = image_features / np.linalg.norm(image_features, axis=-1, keepdims=True)  # (B, E)
    t_hat = text_features / np.linalg.norm(text_features, axis=-1, keepdims=True)  # (B, E)
    z = np.exp(logit_scale) * (i_hat @ t_hat.T)  # (B, B): row i = image i vs every text

    def log_softmax_rows(a):
        a = a - a.max(axis=1, keepdims=True)
        return a - np.log(np.exp(a).sum(axis=1, keepdims=True))

    diagonal = np.arange(len(z))  # the labels: pair i matches pair i
    image_to_text = -log_softmax_rows(z)[diagonal, diagonal].mean()
    text_to_image = -log_softmax_rows(z.T)[diagonal, diagonal].mean()
    return (image_to_text + text_to_image) / 2


# --------------------------------------------------------------------------------------------
# Zero-shot classification
# --------------------------------------------------------------------------------------------
def _ensemble_cases(rng: np.random.Generator) -> list[Case]:
    def prompts(M, E, K):
        labels = np.concatenate([np.arange(K), rng.integers(0, K, M - K)])  # every class
        lengths = rng.uniform(0.1, 10.0, (M, 1))  # captions of very different norms
        return rng.standard_normal((M, E)) * lengths, rng.permutation(labels), K

    return [
        Case("12 prompts of width 8 for 3 classes", prompts(12, 8, 3)),
        Case("240 prompts of width 16 for 8 classes (the shapes' colours)",
             prompts(240, 16, 8)),
        Case("one prompt per class (no ensembling: each is just normalised)",
             (rng.standard_normal((4, 6)) * 5.0, np.array([2, 0, 3, 1]), 4)),
        Case("two classes of very unequal sizes (1 and 9 prompts)",
             (rng.standard_normal((10, 5)), np.array([1] + [0] * 9), 2)),
    ]


@exercise(
    "zero_shot_class_embeddings",
    title="prompt ensembling: t_c = normalize(mean of normalize(t_i) over class c's prompts)",
    signature="zero_shot_class_embeddings(text_features, labels, K) -> array; "
              "text_features (M, E) of M prompts, labels (M,) in [0, K) -> (K, E)",
    equation="CLIP sec. 3.1.4, prompt ensembling (the mean of the normalised embeddings)",
    library="eval.zero_shot_class_embeddings",
    notebook="07_clip",
    hint="normalise each prompt's embedding BEFORE averaging (otherwise the longest caption "
         "dominates), average the rows of each class (row c of the result is class c), and "
         "normalise the mean again",
    cases=_ensemble_cases,
    expected=lambda t, y, K: library_class_embeddings(t, y, K),
)
def zero_shot_class_embeddings(text_features, labels, K):
    t_hat = text_features / np.linalg.norm(text_features, axis=-1, keepdims=True)  # (M, E)
    means = np.stack([t_hat[labels == c].mean(axis=0) for c in range(K)])  # (K, E)
    return means / np.linalg.norm(means, axis=-1, keepdims=True)


def _predict_cases(rng: np.random.Generator) -> list[Case]:
    def uneven(K, E):  # class embeddings of very different norms: the dot product is not
        return rng.standard_normal((K, E)) * rng.uniform(0.05, 20.0, (K, 1))  # the cosine

    return [
        Case("10 images, 3 classes of width 8", (rng.standard_normal((10, 8)), uneven(3, 8))),
        Case("one image, 8 classes", (rng.standard_normal((1, 16)), uneven(8, 16))),
        Case("50 images, 8 classes whose embeddings have very different lengths",
             (rng.standard_normal((50, 16)), uneven(8, 16))),
        Case("4 images, 6 classes (more classes than images)",
             (rng.standard_normal((4, 5)) * 100.0, uneven(6, 5))),
    ]


def _library_predictions(image_features, class_text_features):
    dummy_labels = np.zeros(len(image_features), dtype=np.int64)  # only the predictions count
    _, pred = zero_shot_accuracy(image_features, class_text_features, dummy_labels,
                                 return_predictions=True)
    return pred


@exercise(
    "zero_shot_predict",
    title="zero-shot prediction argmax_c cos(I, T_c)",
    signature="zero_shot_predict(image_features, class_text_features) -> int array; "
              "image_features (B, E), class_text_features (K, E) -> (B,) class indices",
    equation="CLIP's zero-shot classifier (sec. 3.1.2): the class whose text is most "
             "similar to the image",
    library="eval.zero_shot_accuracy(..., return_predictions=True)",
    notebook="07_clip",
    hint="compare COSINES, not raw dot products: normalise the class embeddings (a long class "
         "vector would win every image otherwise); then take the argmax over the classes, "
         "the last axis of the (B, K) similarities, one class per image",
    cases=_predict_cases,
    expected=_library_predictions,
)
def zero_shot_predict(image_features, class_text_features):
    i_hat = image_features / np.linalg.norm(image_features, axis=-1, keepdims=True)  # (B, E)
    c_hat = class_text_features / np.linalg.norm(class_text_features, axis=-1,
                                                 keepdims=True)  # (K, E)
    return (i_hat @ c_hat.T).argmax(axis=1)  # (B,) over the (B, K) cosines
