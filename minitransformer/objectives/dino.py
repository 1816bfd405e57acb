"""DINO (seed eq. 7): the multi-crop self-distillation loss, the teacher's centring and
sharpening, Sinkhorn-Knopp, and the multi-crop wrapper.

DINO v1 (``dino/main_dino.py: DINOLoss``) keeps the center inside the loss and updates it in
``forward``. Here, as DINOv2 splits it, the loss is a pure function and the center lives in
its own object with an explicit ``update``: compute the teacher probabilities with the
current center, the loss, then ``update`` with the raw teacher outputs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import backend, distributed
from .. import functional as F
from ..autograd import Tensor
from ..nn import Module
from ._utils import as_list, as_tensor, check_temp, is_array, raw, shape_str

__all__ = ["MultiCropWrapper", "TeacherCentering", "dino_loss", "sinkhorn_knopp"]


def dino_loss(student_logits_per_crop: Any, teacher_probs_per_global: Any,
              student_temp: float = 0.1) -> Tensor:
    """$L = \\frac{1}{n_g (n_c - 1)} \\sum_{q < n_g} \\sum_{v \\ne q} \\frac{1}{B} \\sum_b
    -\\sum_k t_{q,bk} \\log \\mathrm{softmax}(s_{v,b} / \\tau_s)_k$.

    DINO's ``DINOLoss.forward``: the student's logits of every crop v (globals first, then the
    locals) are divided by $\\tau_s = 0.1$; the teacher saw only the $n_g$ global crops and
    gives centred, sharpened probabilities $t_q$ (``TeacherCentering.probs`` or
    ``sinkhorn_knopp``). Pairs where the student sees the very view the teacher saw
    (v == q) are skipped; the sum is averaged over the remaining $n_g (n_c - 1)$ terms,
    $2 n_c - 2$ = 18 for 2 globals and 8 locals. The seed's $-\\sum p_T \\log p_S$ is one term.
    The teacher's probabilities are data: no gradient reaches the teacher.

    Because the loss is linear in the targets, crop v is scored once against
    $\\sum_{q \\ne v} t_q$ instead of once per teacher view (the same sum).

    Shapes: student_logits_per_crop: n_c Tensors (B, K); teacher_probs_per_global: n_g
    (B, K) arrays or Tensors, n_g <= n_c -> ().
    """
    fn = "dino_loss"
    tau = check_temp(student_temp, "student_temp", fn)
    students = [as_tensor(s, "student logits", fn)
                for s in as_list(student_logits_per_crop, "student_logits_per_crop", fn)]
    teachers = [raw(t) for t in as_list(teacher_probs_per_global, "teacher_probs_per_global", fn)]
    n_c, n_g = len(students), len(teachers)
    if n_g > n_c:
        raise ValueError(
            f"{fn}: {n_g} teacher (global) crops but only {n_c} student crops; the student "
            "crops must start with the same global views the teacher saw"
        )
    if n_c < 2:
        raise ValueError(
            f"{fn}: needs at least 2 crops (got {n_c}): the same-view pair is skipped, so one "
            "crop leaves no term"
        )
    shape = tuple(students[0].shape)
    if len(shape) != 2 or any(tuple(x.shape) != shape for x in students + teachers):
        raise ValueError(
            f"{fn}: every crop must be (B, K) of one shape; student crops [{shape_str(students)}]"
            f", teacher crops [{shape_str(teachers)}]"
        )
    dev = students[0].device
    dtype = students[0].dtype
    teachers = [backend.to_device(t, dev).astype(dtype) for t in teachers]
    t_all = sum(teachers[1:], teachers[0])  # (B, K): sum over every teacher view
    n_terms = n_g * (n_c - 1)
    total = None
    for v, s in enumerate(students):
        target = t_all - teachers[v] if v < n_g else t_all  # sum_{q != v} t_q, (B, K)
        term = F.soft_cross_entropy(s / tau, target).mean()  # mean over the batch
        total = term if total is None else total + term
    return total / n_terms


class TeacherCentering(Module):
    """DINO's teacher centring and sharpening, with its EMA center as explicit state.

    ``probs``: $t = \\mathrm{softmax}((g_t - c) / \\tau_t)$ (no gradient); ``update``:
    $c \\leftarrow m c + (1 - m) \\frac{1}{n} \\sum_i g_{t,i}$ over every row of the *raw*
    teacher output (both global crops), momentum m = 0.9, c starting at 0 (DINO
    ``DINOLoss.update_center``). Call ``update`` after the loss, so a step uses the center of
    the previous step. The center is a per-prototype vector (dino#101); centring alone
    collapses to uniform, sharpening alone to one prototype (dino#32): the pair balances.

    The center is a buffer: ``state_dict()`` saves it as ``center`` (DINO checkpoints keep it
    under ``dino_loss``). It follows the device *and the floating dtype* of the teacher outputs
    it is given: with float64 teacher outputs the center, the probabilities and the update are
    float64 (a float32 center is widened on first use), so a float64 run is float64 end to end;
    with float32 outputs they are float32. ``load_state_dict`` keeps a saved center's floating
    dtype (a float64 center is not rounded through the constructor's default dtype).

    Shapes: center (1, K); probs: (..., K) -> (..., K); lists of chunks map to lists.
    """

    def __init__(self, out_dim: int, momentum: float = 0.9, *, device: Any = None,
                 dtype: Any = None):
        super().__init__()
        if out_dim < 1:
            raise ValueError(f"TeacherCentering: out_dim must be positive, got {out_dim}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"TeacherCentering: momentum must be in [0, 1], got {momentum}")
        self.out_dim = int(out_dim)
        self.momentum = float(momentum)
        dev = backend.as_device(device)
        dt = np.dtype(dtype) if dtype is not None else backend.get_default_dtype()
        self.register_buffer("center", dev.xp.zeros((1, out_dim), dtype=dt))

    def _check(self, t: Any, fn: str) -> None:
        if t.ndim < 1 or t.shape[-1] != self.out_dim:
            raise ValueError(
                f"TeacherCentering.{fn}: teacher output must be (..., {self.out_dim}), got "
                f"{tuple(t.shape)}"
            )

    def _follow(self, t: Any, fn: str) -> None:
        """Keep the center on the device and in the floating dtype of the teacher outputs."""
        if not np.issubdtype(np.dtype(t.dtype), np.floating):
            raise TypeError(
                f"TeacherCentering.{fn}: teacher outputs must be floating point, got dtype "
                f"{np.dtype(t.dtype)}"
            )
        dev = backend.device_of(t)
        if backend.device_of(self.center) != dev:
            self.register_buffer("center", backend.to_device(self.center, dev))
        if self.center.dtype != t.dtype:
            self.register_buffer("center", self.center.astype(t.dtype))

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> dict[str, list]:
        """``Module.load_state_dict``, keeping a saved ``center``'s floating dtype (float64
        stays float64 whatever dtype this object was built with); on this object's device."""
        result = super().load_state_dict(state, strict=strict)
        saved = state.get("center")
        if saved is not None:
            value = saved.data if isinstance(saved, Tensor) else saved
            dt = np.dtype(value.dtype)
            if np.issubdtype(dt, np.floating) and dt != self.center.dtype:
                host = backend.to_numpy(value).astype(dt, copy=True)
                self.register_buffer("center",
                                     backend.to_device(host, backend.device_of(self.center)))
        return result

    def probs(self, teacher_logits: Any, temp: float) -> Any:
        """$\\mathrm{softmax}((g_t - c) / \\tau_t)$ along the last axis, outside the graph.

        Shapes: (..., K) -> Tensor (..., K); a list of chunks -> a list of Tensors."""
        tau = check_temp(temp, "temp", "TeacherCentering.probs")
        if isinstance(teacher_logits, (list, tuple)):
            return [self.probs(t, tau) for t in teacher_logits]
        t = raw(teacher_logits)
        self._check(t, "probs")
        self._follow(t, "probs")
        xp = backend.get_array_module(t)
        z = (t - self.center) / tau  # (..., K) centred, sharpened
        z = z - z.max(-1, keepdims=True)  # stable softmax
        e = xp.exp(z)
        return Tensor(e / e.sum(-1, keepdims=True))

    def update(self, teacher_logits: Any) -> None:
        """$c \\leftarrow m c + (1-m)\\,\\mathrm{mean}_{rows}(g_t)$, from the raw teacher outputs
        (a Tensor, an array, or a list of per-crop chunks). Shapes: (..., K).

        Over several ranks (``distributed``) the mean is over the rows of *every* rank: the
        row sums and the row count are all-reduced (one all-reduce of K + 1 numbers), as DINO's
        ``DINOLoss.update_center`` (``dino/main_dino.py``: ``dist.all_reduce(batch_center)``,
        then ``/ (len(teacher_output) * world_size)``); counting the rows instead of
        multiplying by W also allows unequal shards. So every rank keeps the same center, the
        one a single process computes on the global batch. Every rank must call it.
        DINOv2's iBOT center (``ibot_patch_loss.py: reduce_center_update``) averages the
        ranks' *means* over their masked patches instead; counting the rows gives the mean
        over all masked patches of the global batch, the single-process value (the same when
        the ranks mask equally many patches)."""
        if isinstance(teacher_logits, (list, tuple)):
            chunks = [raw(t) for t in teacher_logits]
            for c in chunks:
                self._check(c, "update")
            xp = backend.get_array_module(*chunks)
            t = xp.concatenate([c.reshape(-1, self.out_dim) for c in chunks], axis=0)
        else:
            t = raw(teacher_logits)
            self._check(t, "update")
        self._follow(t, "update")
        rows = t.reshape(-1, self.out_dim)  # (n, K)
        xp = backend.get_array_module(rows)
        if distributed.is_distributed():
            local = xp.concatenate([rows.sum(0), xp.full((1,), rows.shape[0], dtype=rows.dtype)])
            total = distributed.all_reduce(local, check=False)  # (K + 1,): sums, row count
            batch_center = (total[:-1] / total[-1]).reshape(1, self.out_dim)  # (1, K)
        else:
            batch_center = rows.mean(0, keepdims=True)  # (1, K), t's dtype
        m = self.momentum
        self.register_buffer("center", self.center * m + batch_center * (1 - m))

    def extra_repr(self) -> str:
        return f"out_dim={self.out_dim}, momentum={self.momentum}"


def sinkhorn_knopp(teacher_logits: Any, temp: float, n_iter: int = 3) -> Any:
    """DINOv2's Sinkhorn-Knopp teacher (``dino_clstoken_loss.py: sinkhorn_knopp_teacher``).

    $Q = \\exp(g_t / \\tau_t)^\\top$ (K, B), $Q \\leftarrow Q / \\sum Q$; ``n_iter`` times: every
    prototype row is scaled to sum 1/K, then every sample column to 1/B; return $(B Q)^\\top$,
    whose rows sum to 1 for n_iter >= 1 (each sample's soft assignment) while the prototypes
    are used about equally (column sums of the result near B/K). An equipartition constraint
    in place of centring; no state. One change, exact in real arithmetic: the normalisations run on
    $\\log Q$ (each division by a sum is a subtraction of a logsumexp), so large logits or
    small temperatures neither overflow nor underflow (DINOv2's float32 ``exp(t / T)``
    overflows once $t / T > 88$). Three iterations do not converge, so the result depends on
    per-sample shifts of the logits (only the limit is invariant); a global shift changes
    nothing.

    Over several ranks (``distributed``) the batch is the global one, split across ranks as
    DINOv2 does it (``sinkhorn_knopp_teacher`` in ``dinov2/loss/dino_clstoken_loss.py`` and
    ``ibot_patch_loss.py``): $B = \\sum_r B_r$ (all-reduced, as DINOv2's
    ``n_masked_patches_tensor``, so unequal shards such as masked-patch counts work), and
    the sums over samples (the total and each prototype row's sum) become sums over every
    rank's columns; the per-sample column sums stay local. Here a sum over samples is a
    logsumexp over samples: each rank's logsumexp is all-gathered and combined (a
    logsumexp over ranks), 1 + n_iter all-gathers of 1 and K numbers. The result on each
    rank is its rows of the single-process result on the concatenated global batch. Every
    rank must call it.

    Shapes: (B, K) -> Tensor (B, K), outside the graph; a list of chunks is treated as one
    batch (their rows concatenated, as DINOv2 does with the two global crops) and returned as
    a list of chunks.
    """
    fn = "sinkhorn_knopp"
    tau = check_temp(temp, "temp", fn)
    if n_iter < 0:
        raise ValueError(f"{fn}: n_iter must be >= 0, got {n_iter}")
    if isinstance(teacher_logits, (list, tuple)):
        chunks = [raw(t) for t in as_list(teacher_logits, "teacher_logits", fn)]
        xp = backend.get_array_module(*chunks)
        sizes = [c.shape[0] for c in chunks]
        out = sinkhorn_knopp(xp.concatenate(chunks, axis=0), tau, n_iter)
        return list(F.split(out, np.cumsum(sizes)[:-1].tolist(), axis=0))
    t = raw(teacher_logits)
    if t.ndim != 2:
        raise ValueError(f"{fn}: teacher_logits must be (B, K), got {tuple(t.shape)}")
    if t.dtype.kind != "f":
        t = t.astype(backend.get_default_dtype())
    xp = backend.get_array_module(t)
    K = t.shape[1]
    B = sum(distributed.gather_counts(t.shape[0]))  # the global number of samples
    # In log space: log Q (K, B); dividing by a sum is subtracting its logsumexp.
    log_q = (t / tau).T  # (K, B_r): this rank's columns
    log_q = log_q - _global_logsumexp(log_q, axis=None)  # Q /= sum(Q) over every rank
    for _ in range(n_iter):
        log_q = log_q - _global_logsumexp(log_q, axis=1) - math.log(K)  # prototype rows -> 1/K
        log_q = log_q - _logsumexp(log_q, axis=0) - math.log(B)  # sample columns -> 1/B
    return Tensor(xp.exp(log_q + math.log(B)).T)  # (B_r, K), rows sum to 1


def _global_logsumexp(a: Any, axis: int | None) -> Any:
    """``_logsumexp`` over the samples of every rank: axis 1 (or all) of each rank's (K, B_r)
    block. Each rank's logsumexp is all-gathered, then combined by a logsumexp over ranks
    (exact; stable). A rank with no samples contributes -inf. Shapes: keeps dims."""
    if not distributed.is_distributed():
        return _logsumexp(a, axis)
    xp = backend.get_array_module(a)
    if a.shape[1] == 0:
        local = xp.full((1, a.shape[0] if axis == 1 else 1), -xp.inf, dtype=a.dtype)
    else:
        local = _logsumexp(a, axis).reshape(1, -1)  # (1, K) or (1, 1)
    every = distributed.all_gather(local)  # (W, K) or (W, 1)
    return _logsumexp(every, axis=0).reshape(-1, 1) if axis == 1 else _logsumexp(every, None)


def _logsumexp(a: Any, axis: int | None) -> Any:
    """$\\log \\sum e^{a}$ along ``axis`` (all of it for None), keeping dims, no overflow."""
    xp = backend.get_array_module(a)
    m = a.max(axis=axis, keepdims=True)
    return m + xp.log(xp.exp(a - m).sum(axis=axis, keepdims=True))


class MultiCropWrapper(Module):
    """DINO's ``utils.MultiCropWrapper``: the backbone once per resolution, the head once.

    Consecutive crops of the same size are concatenated and go through the backbone in one
    call (globals, then locals: two calls for DINO's 2 x 224 + 8 x 96); the CLS features of
    all crops are concatenated and the head runs once; the result is split back per crop, in
    the input order ``[g1, g2, l1, ...]`` that ``dino_loss`` expects. The backbone's
    ``forward_features(x)["x_norm_clstoken"]`` is used when it has one (a
    ``VisionTransformer``), else ``backbone(x)`` (a tuple's first element).

    Parameter names ``backbone.*`` and ``head.*`` match DINO's checkpoints.

    Shapes: crops: a list of (B, C, H_v, W_v) -> a list of (B, K) head outputs; with
    ``return_backbone=True`` also the list of (B, D) backbone features (KoLeo's input).
    """

    def __init__(self, backbone: Module, head: Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def _features(self, x: Tensor) -> Tensor:
        if hasattr(self.backbone, "forward_features"):
            out = self.backbone.forward_features(x)
        else:
            out = self.backbone(x)
        if isinstance(out, dict):
            out = out["x_norm_clstoken"]
        elif isinstance(out, tuple):
            out = out[0]
        return out

    def forward(self, crops: Any, return_backbone: bool = False) -> Any:
        if isinstance(crops, Tensor) or is_array(crops):
            crops = [crops]
        crops = [as_tensor(c, "crop", "MultiCropWrapper") for c in list(crops)]
        if not crops:
            raise ValueError("MultiCropWrapper: no crops given")
        sizes = [c.shape[0] for c in crops]
        feats = []
        start = 0
        while start < len(crops):
            end = start
            while end < len(crops) and tuple(crops[end].shape[1:]) == tuple(crops[start].shape[1:]):
                end += 1
            group = crops[start:end]
            x = group[0] if len(group) == 1 else F.concat(group, axis=0)  # (n B, C, H, W)
            feats.append(self._features(x))
            start = end
        f = feats[0] if len(feats) == 1 else F.concat(feats, axis=0)  # (n_c B, D)
        logits = self.head(f)  # (n_c B, K)
        cuts = np.cumsum(sizes)[:-1].tolist()
        out = list(F.split(logits, cuts, axis=0)) if cuts else [logits]
        if return_backbone:
            return out, (list(F.split(f, cuts, axis=0)) if cuts else [f])
        return out
