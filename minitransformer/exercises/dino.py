"""Exercises of notebook 08 (DINO): the teacher's centred and sharpened probabilities, the
center's EMA, the multi-crop loss (seed eq. 7 over the crop pairs), the teacher's EMA of the
student's weights and its cosine momentum schedule.

The sources: DINO, Caron et al. 2021, sec. 3.1 and Algorithm 1; facebookresearch/dino
``main_dino.py`` (``DINOLoss.forward``, ``DINOLoss.update_center``, the teacher update in
``train_one_epoch``) and ``utils.py`` (``cosine_scheduler``).

Each reference solution is plain NumPy, as a learner would write it; ``expected`` computes the
same thing with the library (``TeacherCentering``, ``dino_loss``, ``ema_update``,
``teacher_momentum_schedule``) in float64.
"""

from __future__ import annotations

import copy

import numpy as np

from ..autograd import tensor
from ..nn import Module, Parameter
from ..objectives import TeacherCentering, dino_loss
from ..optim.ema import ema_update
from ..optim.schedules import teacher_momentum_schedule
from ._core import Case, Mismatch, compare, exercise

NOTEBOOK = "08_dino"


# --------------------------------------------------------------------------------------------
# 1. The teacher's probabilities: centring and sharpening
# --------------------------------------------------------------------------------------------
def _teacher_probs_cases(rng: np.random.Generator) -> list[Case]:
    def center(K):
        return 0.1 * rng.standard_normal((1, K))

    return [
        Case("a batch of 4, K = 8 prototypes, tau_t = 0.04",
             (rng.standard_normal((4, 8)), center(8), 0.04)),
        Case("a batch of one, the first step (center still 0)",
             (rng.standard_normal((1, 16)), np.zeros((1, 16)), 0.04)),
        Case("both global crops stacked (2, B, K): the prototypes are the last axis",
             (rng.standard_normal((2, 3, 8)), center(8), 0.07)),
        Case("large logits, tau_t = 0.02 (exp overflows unless the row max is subtracted)",
             (20 * rng.standard_normal((3, 32)), center(32), 0.02)),
        Case("a center far from 0 that shifts whole columns (K = 256)",
             (rng.standard_normal((5, 256)), 3 * center(256) + 1.0, 0.04)),
    ]


def _library_teacher_probs(teacher_logits, center, temp):
    centering = TeacherCentering(center.shape[-1], dtype=np.float64)
    centering.register_buffer("center", np.asarray(center, dtype=np.float64))  # (1, K)
    return centering.probs(teacher_logits, temp).numpy()


@exercise(
    "dino_teacher_probs",
    title="the teacher's centred, sharpened probabilities softmax((g_t - c) / tau_t)",
    signature="dino_teacher_probs(teacher_logits, center, temp) -> array; teacher_logits "
              "(..., K), center (1, K), temp a float -> (..., K), each row summing to 1",
    equation="DINO sec. 3.1 (centering and sharpening), the teacher's p_T of eq. 7",
    library="TeacherCentering.probs",
    notebook=NOTEBOOK,
    hint="subtract the center first and then divide by the teacher temperature: "
         "(g_t - c) / tau_t, not g_t / tau_t - c; take the softmax over the last axis (the "
         "K prototypes) after subtracting each row's max, so a small tau_t cannot overflow exp",
    cases=_teacher_probs_cases,
    expected=_library_teacher_probs,
)
def dino_teacher_probs(teacher_logits, center, temp):
    z = (teacher_logits - center) / temp  # (..., K): centred, then sharpened
    z = z - z.max(axis=-1, keepdims=True)  # exp cannot overflow
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)  # each row sums to 1 over the K prototypes


# --------------------------------------------------------------------------------------------
# 2. The center's EMA
# --------------------------------------------------------------------------------------------
def _center_cases(rng: np.random.Generator) -> list[Case]:
    def logits(n_g, B, K):
        return rng.standard_normal((n_g, B, K)) + rng.standard_normal(K)  # a shared offset

    return [
        Case("2 global crops of a batch of 6, K = 8, m = 0.9",
             (0.1 * rng.standard_normal((1, 8)), logits(2, 6, 8), 0.9)),
        Case("the first step: the center starts at 0",
             (np.zeros((1, 16)), logits(2, 4, 16), 0.9)),
        Case("a batch of one (2 crops of one image)",
             (rng.standard_normal((1, 5)), logits(2, 1, 5), 0.9)),
        Case("a single global crop, m = 0.5", (rng.standard_normal((1, 8)), logits(1, 7, 8),
                                               0.5)),
        Case("m = 0: the center becomes the batch mean",
             (rng.standard_normal((1, 4)), logits(2, 3, 4), 0.0)),
    ]


def _library_center_update(center, teacher_logits, momentum):
    centering = TeacherCentering(center.shape[-1], momentum=momentum, dtype=np.float64)
    centering.register_buffer("center", np.asarray(center, dtype=np.float64))  # (1, K)
    centering.update(list(teacher_logits))  # one (B, K) chunk per global crop
    return np.asarray(centering.center)


@exercise(
    "dino_center_update",
    title="the center's EMA c <- m c + (1 - m) mean(g_t) over every row of both global crops",
    signature="dino_center_update(center, teacher_logits, momentum) -> array; center (1, K), "
              "teacher_logits (n_g, B, K) the raw teacher outputs, momentum m -> (1, K)",
    equation="DINO sec. 3.1, the center update (Algorithm 1: "
             "C = m*C + (1-m)*cat([t1, t2]).mean(dim=0))",
    library="TeacherCentering.update",
    notebook=NOTEBOOK,
    hint="average the raw teacher outputs over every row of every global crop (all axes but "
         "the last, keeping the (1, K) shape), then keep m of the old center and add (1 - m) "
         "of that mean: the momentum weighs the OLD center",
    cases=_center_cases,
    expected=_library_center_update,
)
def dino_center_update(center, teacher_logits, momentum):
    K = teacher_logits.shape[-1]
    rows = teacher_logits.reshape(-1, K)  # (n_g B, K): both crops' rows together
    batch_center = rows.mean(axis=0, keepdims=True)  # (1, K), one value per prototype
    return momentum * center + (1 - momentum) * batch_center


# --------------------------------------------------------------------------------------------
# 3. The loss over the crop pairs (seed eq. 7, multi-crop)
# --------------------------------------------------------------------------------------------
def _loss_cases(rng: np.random.Generator) -> list[Case]:
    def crops(n_c, n_g, B, K, scale=1.0):
        students = [scale * rng.standard_normal((B, K)) for _ in range(n_c)]
        teachers = [dino_teacher_probs(rng.standard_normal((B, K)), np.zeros((1, K)), 0.04)
                    for _ in range(n_g)]
        return students, teachers

    return [
        Case("2 global + 4 local crops, a batch of 5, K = 16", crops(6, 2, 5, 16)),
        Case("2 global crops only: 2 terms", crops(2, 2, 3, 8)),
        Case("one teacher view, two student crops, a batch of one: only the (0, 1) term",
             crops(2, 1, 1, 8)),
        Case("DINO's 2 + 8 crops: 18 terms, K = 64", crops(10, 2, 4, 64)),
        Case("large student logits (the log-softmax must not overflow)",
             crops(4, 2, 3, 16, scale=100.0)),
        Case("student_temp = 0.2", crops(3, 2, 4, 8), {"student_temp": 0.2}),
    ]


def _library_dino_loss(student_logits, teacher_probs, student_temp=0.1):
    loss = dino_loss([tensor(s) for s in student_logits], [tensor(t) for t in teacher_probs],
                     student_temp=student_temp)
    return loss.item()


@exercise(
    "dino_multicrop_loss",
    title="DINO's loss: -sum_k t_q log softmax(s_v / tau_s) averaged over the pairs v != q",
    signature="dino_multicrop_loss(student_logits, teacher_probs, student_temp=0.1) -> float; "
              "student_logits a list of n_c (B, K) arrays (globals first), teacher_probs a "
              "list of n_g (B, K) arrays",
    equation="eq. 7 summed over the multi-crop pairs (DINO sec. 3.1; main_dino.py DINOLoss)",
    library="objectives.dino_loss",
    notebook=NOTEBOOK,
    hint="skip the pairs where the student crop v is the very view q the teacher saw "
         "(v == q); divide the student's logits (not the teacher's) by student_temp and use a "
         "stable log-softmax; average each term over the batch, then over the "
         "n_g (n_c - 1) pairs",
    cases=_loss_cases,
    expected=_library_dino_loss,
)
def dino_multicrop_loss(student_logits, teacher_probs, student_temp=0.1):
    terms = []
    for q, t in enumerate(teacher_probs):  # the teacher saw the global crops only
        for v, s in enumerate(student_logits):  # the student saw every crop
            if v == q:
                continue  # the same view: no term
            z = s / student_temp  # (B, K)
            log_p = z - z.max(axis=-1, keepdims=True)
            log_p = log_p - np.log(np.exp(log_p).sum(axis=-1, keepdims=True))  # log-softmax
            terms.append(-(t * log_p).sum(axis=-1).mean())  # cross-entropy, batch mean
    return float(np.mean(terms))  # over the n_g (n_c - 1) pairs


# --------------------------------------------------------------------------------------------
# 4. The teacher: an EMA of the student's weights
# --------------------------------------------------------------------------------------------
def _params(rng: np.random.Generator, names: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    return {name: rng.standard_normal(shape) for name, shape in names.items()}


_SHAPES = {"cls_token": (1, 1, 8), "patch_embed.proj.weight": (12, 8),
           "patch_embed.proj.bias": (8,), "head.last_layer.weight_v": (8, 16)}


def _ema_cases(rng: np.random.Generator) -> list[Case]:
    student = _params(rng, _SHAPES)
    reordered = dict(reversed(list(student.items())))  # the same names in another order
    return [
        Case("four ViT parameters, m = 0.996", (_params(rng, _SHAPES), student, 0.996)),
        Case("m = 0.9 (a quick teacher)", (_params(rng, _SHAPES), student, 0.9)),
        Case("the student's parameters listed in another order: pair them by name",
             (_params(rng, _SHAPES), reordered, 0.99)),
        Case("m = 1: the teacher does not move", (_params(rng, _SHAPES), student, 1.0)),
        Case("m = 0: the teacher becomes the student", (_params(rng, {"w": (3, 2)}),
                                                        _params(rng, {"w": (3, 2)}), 0.0)),
    ]


def _module_of(params: dict[str, np.ndarray]) -> Module:
    """A Module whose named parameters are ``params`` (float64 copies)."""
    m = Module()
    for name, value in params.items():
        setattr(m, name, Parameter(np.array(value, dtype=np.float64)))
    return m


def _library_ema(teacher, student, momentum):
    t, s = _module_of(teacher), _module_of(student)
    ema_update(t, s, momentum)
    return {name: p.numpy() for name, p in t.named_parameters()}


def _verify_ema(fn, rng: np.random.Generator) -> None:
    """Compare ``fn`` with ``ema_update`` on every case, parameter by parameter (the answer
    is a dict, so the comparison walks its names)."""
    cases = _ema_cases(rng)
    for i, case in enumerate(cases):
        where = f"case {i + 1} of {len(cases)}, {case.describe()}"
        want = _library_ema(*copy.deepcopy(case.args))
        try:
            got = fn(*copy.deepcopy(case.args))
        except NotImplementedError:
            raise
        except Exception as e:
            raise Mismatch(f"{where}\nyour function raised {type(e).__name__}: {e}") from None
        if not isinstance(got, dict):
            raise Mismatch(f"{where}\nexpected a dict name -> array (the new teacher), got "
                           f"{type(got).__name__}")
        if set(got) != set(want):
            raise Mismatch(f"{where}\nexpected the names {sorted(want)}, got {sorted(got)}")
        for name in want:
            try:
                compare(want[name], got[name], 1e-6, 1e-8, where=f"teacher[{name!r}]")
            except Mismatch as e:
                raise Mismatch(f"{where}\n{e}") from None


@exercise(
    "dino_ema_teacher",
    title="the teacher's EMA of the student theta_t <- m theta_t + (1 - m) theta_s",
    signature="dino_ema_teacher(teacher, student, momentum) -> dict; teacher and student map "
              "each parameter name to an array, momentum m -> the new teacher (a dict)",
    equation="DINO sec. 3.1, the teacher update (Algorithm 1: "
             "gt.params = l*gt.params + (1-l)*gs.params)",
    library="optim.ema_update",
    notebook=NOTEBOOK,
    hint="pair the parameters by name (student[name]), not by position; the momentum m weighs "
         "the TEACHER's old value and (1 - m) the student's: m = 1 leaves the teacher as it was",
    verify=_verify_ema,
)
def dino_ema_teacher(teacher, student, momentum):
    return {name: momentum * theta_t + (1 - momentum) * student[name]
            for name, theta_t in teacher.items()}


# --------------------------------------------------------------------------------------------
# 5. The teacher's momentum: a cosine from 0.996 to 1
# --------------------------------------------------------------------------------------------
@exercise(
    "dino_momentum_schedule",
    title="the teacher's momentum per iteration, a cosine m_i = final + (base - final)"
          "(1 + cos(pi i / n)) / 2",
    signature="dino_momentum_schedule(total_iters, base=0.996, final=1.0) -> array "
              "(total_iters,), i = 0 .. total_iters - 1",
    equation="DINO sec. 3.1 (cosine schedule from 0.996 to 1); dino utils.py cosine_scheduler",
    library="optim.teacher_momentum_schedule",
    notebook=NOTEBOOK,
    hint="use i / n with n = total_iters (np.arange(n) / n): the last value stays just short "
         "of final, as DINO's cosine_scheduler; the schedule starts at base (cos 0 = 1)",
    cases=lambda rng: [
        Case("10 iterations, DINO's 0.996 -> 1", (10, 0.996, 1.0)),
        Case("a single iteration", (1, 0.996, 1.0)),
        Case("1,000 iterations, 0.99 -> 1 (the recipe's)", (1000, 0.99, 1.0)),
        Case("5 iterations, 0.9 -> 0.95", (5, 0.9, 0.95)),
    ],
    expected=lambda total_iters, base=0.996, final=1.0: teacher_momentum_schedule(
        total_iters, base, final),
)
def dino_momentum_schedule(total_iters, base=0.996, final=1.0):
    i = np.arange(total_iters)  # (total_iters,)
    return final + 0.5 * (base - final) * (1 + np.cos(np.pi * i / total_iters))
