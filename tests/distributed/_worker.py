"""One rank of the MPI equivalence tests: ``mpiexec -n 2 python tests/distributed/_worker.py
OUT_DIR CASE [CASE ...]`` (launched by ``test_mpi.py``).

Every rank builds the same float64 *global* batch from a fixed seed, keeps its shard, runs
the cross-rank code, and computes the single-process value on the global batch itself inside
``distributed.rank_local()`` (where the collectives are the identity). It writes
``OUT_DIR/rank{r}.json``: per case, named numbers (maximum differences, values) that the
test checks, or the error that the case raised. Nothing is asserted here, so one failing
case cannot leave the other rank waiting in a collective; the test judges the numbers.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import minitransformer as mt  # noqa: E402
from minitransformer import distributed as dist  # noqa: E402
from minitransformer import functional as F  # noqa: E402
from minitransformer.autograd import Tensor, no_grad  # noqa: E402
from minitransformer.models.heads import DINOHead  # noqa: E402
from minitransformer.objectives import (  # noqa: E402
    TeacherCentering,
    dinov2_loss,
    ibot_patch_loss,
    koleo_loss,
    sinkhorn_knopp,
)
from minitransformer.objectives.clip import clip_logits, clip_loss  # noqa: E402

R, W = dist.rank(), dist.world_size()


def maxdiff(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def reldiff(a, b) -> float:
    """max |a - b| / max(1, max |b|): for gradients, whose scale varies."""
    scale = max(1.0, float(np.max(np.abs(np.asarray(b)))) if np.asarray(b).size else 1.0)
    return maxdiff(a, b) / scale


def shard(x: np.ndarray, counts: list[int]) -> np.ndarray:
    """This rank's rows of a global batch split into consecutive shards of ``counts`` rows."""
    start = sum(counts[:R])
    return x[start:start + counts[R]]


def dist_gradcheck(f, x_local: np.ndarray, gy_local: np.ndarray, eps: float = 1e-6) -> float:
    """The gradient of $\\sum_r \\langle g_r, f(x)_r \\rangle$ with respect to this rank's x:
    the engine's backward against central differences in which one element of one rank is
    moved at a time while every rank evaluates (so the collectives run in step). Returns this
    rank's largest error relative to max(1, |gradient|)."""
    xt = Tensor(x_local.copy(), requires_grad=True)
    (f(xt) * Tensor(gy_local)).sum().backward()
    analytic = xt.grad
    sizes = dist.gather_counts(x_local.size)
    numeric = np.zeros_like(x_local)
    for p in range(W):
        for i in range(sizes[p]):
            vals = []
            for sign in (1.0, -1.0):
                x = x_local.copy()
                if R == p:
                    x.flat[i] += sign * eps
                with no_grad():
                    local = float((f(Tensor(x)).data * gy_local).sum())
                vals.append(float(dist.all_reduce(np.array([local]))[0]))
            if R == p:
                numeric.flat[i] = (vals[0] - vals[1]) / (2 * eps)
    return float(np.max(np.abs(analytic - numeric) / np.maximum(1.0, np.abs(numeric))))


# ---------------------------------------------------------------------------------- cases
def case_world() -> dict:
    return {"rank": R, "world_size": W, "is_distributed": dist.is_distributed()}


def case_collectives() -> dict:
    out: dict = {}
    x = np.arange(6, dtype=np.float64).reshape(2, 3) + 10.0 * R  # rank r: base + 10 r
    every = [np.arange(6, dtype=np.float64).reshape(2, 3) + 10.0 * r for r in range(W)]
    out["all_reduce_sum"] = maxdiff(dist.all_reduce(x), sum(every))
    out["all_reduce_mean"] = maxdiff(dist.all_reduce(x, "mean"), sum(every) / W)
    out["input_unchanged"] = maxdiff(x, every[R])
    # unequal first axes: rank r gives r + 1 rows
    rows = [np.full((r + 1, 2), float(r)) for r in range(W)]
    out["all_gather_uneven"] = maxdiff(dist.all_gather(rows[R]), np.concatenate(rows))
    out["broadcast"] = maxdiff(dist.broadcast(x if R == W - 1 else None, root=W - 1),
                               every[W - 1])
    try:
        dist.all_reduce(np.ones(2 + R))
        out["mismatch_error"] = ""
    except ValueError as e:
        out["mismatch_error"] = str(e)
    try:
        dist.all_gather(np.ones((2, 2 + R)))
        out["gather_mismatch_error"] = ""
    except ValueError as e:
        out["gather_mismatch_error"] = str(e)
    dist.barrier()
    with dist.rank_local():
        out["rank_local_sum"] = maxdiff(dist.all_reduce(x), x)
    rng = np.random.default_rng(100 + R)
    xs = rng.standard_normal((R + 2, 3))
    out["gradcheck_all_gather"] = dist_gradcheck(
        lambda t: dist.all_gather(t) * 1.5, xs, rng.standard_normal((sum(range(2, W + 2)), 3)))
    out["gradcheck_all_reduce"] = dist_gradcheck(
        lambda t: F.tanh(dist.all_reduce(t * t)), xs[:2], rng.standard_normal((2, 3)))
    out["gradcheck_all_reduce_mean"] = dist_gradcheck(
        lambda t: dist.all_reduce(t, "mean") ** 2, xs[:2], rng.standard_normal((2, 3)))
    return out


def case_dino_center() -> dict:
    rng = np.random.default_rng(0)
    B, K = 4 * W, 7
    counts = [4] * W
    steps = [[rng.standard_normal((B, K)) * 3 + 1 for _ in range(2)] for _ in range(2)]
    dist_c, ref_c, local_c = (TeacherCentering(K) for _ in range(3))
    for crops in steps:  # two global crops per step
        dist_c.update([shard(c, counts) for c in crops])
        with dist.rank_local():
            ref_c.update(crops)
            local_c.update([shard(c, counts) for c in crops])
    return {"center": maxdiff(dist_c.center, ref_c.center),
            "center_dtype": str(dist_c.center.dtype),
            "local_only_differs": maxdiff(local_c.center, ref_c.center)}


def _clip_setup():
    rng = np.random.default_rng(1)
    N, D_img, D_txt, E = 3 * W, 5, 4, 3
    counts = [3] * W
    x_img, x_txt = rng.standard_normal((N, D_img)), rng.standard_normal((N, D_txt))
    w_img, w_txt = rng.standard_normal((D_img, E)), rng.standard_normal((D_txt, E))
    return counts, x_img, x_txt, w_img, w_txt, 0.7


def _clip_grads(x_img, x_txt, w_img, w_txt, s0, loss_fn):
    """(loss, grads of w_img, w_txt, logit_scale) of loss_fn on two linear 'towers'."""
    wi = Tensor(w_img.copy(), requires_grad=True)
    wt = Tensor(w_txt.copy(), requires_grad=True)
    s = Tensor(np.array(s0), requires_grad=True)
    loss = loss_fn(Tensor(x_img) @ wi, Tensor(x_txt) @ wt, s)
    loss.backward()
    return float(loss.data), [wi.grad, wt.grad, np.asarray(s.grad)]


def _clip_detached_columns(img, txt, s):
    """The global loss with the columns (the other side's features) detached."""
    i_hat, t_hat = F.normalize(img, axis=-1), F.normalize(txt, axis=-1)
    scale = F.exp(s)
    per_image = scale * (i_hat @ Tensor(t_hat.data).T)
    per_text = scale * (t_hat @ Tensor(i_hat.data).T)
    labels = np.arange(img.shape[0])
    return 0.5 * (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels))


def case_clip() -> dict:
    counts, x_img, x_txt, w_img, w_txt, s0 = _clip_setup()
    out: dict = {}
    with dist.rank_local():
        ref_loss, ref_grads = _clip_grads(x_img, x_txt, w_img, w_txt, s0, clip_loss)
        _, sg_grads = _clip_grads(x_img, x_txt, w_img, w_txt, s0, _clip_detached_columns)
        ref_lpi, ref_lpt, _ = clip_logits(Tensor(x_img @ w_img), Tensor(x_txt @ w_txt), s0)
    # the loss of one rank's shard alone (no gathering): what the gathering changes
    with dist.rank_local():
        local_loss_value = float(clip_loss(shard(x_img, counts) @ w_img,
                                           shard(x_txt, counts) @ w_txt, s0).data)
    out["local_only_loss_differs"] = abs(local_loss_value - ref_loss)
    off = sum(counts[:R])
    rows = slice(off, off + counts[R])
    for gwg in (True, False):
        for local in (False, True):
            key = f"gwg={int(gwg)},local={int(local)}"

            def loss_fn(img, txt, s, gwg=gwg, local=local):
                return clip_loss(img, txt, s, gather_with_grad=gwg, local_loss=local)

            loss, grads = _clip_grads(shard(x_img, counts), shard(x_txt, counts), w_img, w_txt,
                                      s0, loss_fn)
            avg = [dist.all_reduce(g, "mean") for g in grads]  # data parallelism's average
            lpi, lpt, labels = clip_logits(Tensor(shard(x_img, counts) @ w_img),
                                           Tensor(shard(x_txt, counts) @ w_txt), s0,
                                           gather_with_grad=gwg, local_loss=local)
            want_lpi = ref_lpi.data[rows] if local else ref_lpi.data
            want_lpt = ref_lpt.data[rows] if local else ref_lpt.data
            want_labels = np.arange(off, off + counts[R]) if local else np.arange(sum(counts))
            out[key] = {
                "logits_per_image": maxdiff(lpi.data, want_lpi),
                "logits_per_text": maxdiff(lpt.data, want_lpt),
                "labels": maxdiff(labels, want_labels),
                "loss_vs_global": abs(loss - ref_loss),
                "mean_loss_vs_global": abs(float(dist.all_reduce(np.array([loss]), "mean")[0])
                                           - ref_loss),
                # averaged gradients against the global loss's (towers, then logit_scale)
                "towers_vs_global": max(reldiff(a, g) for a, g in zip(avg[:2], ref_grads[:2])),
                "towers_vs_global_over_W": max(reldiff(a, g / W)
                                               for a, g in zip(avg[:2], ref_grads[:2])),
                "towers_vs_detached_columns": max(reldiff(a, g)
                                                  for a, g in zip(avg[:2], sg_grads[:2])),
                "scale_vs_global": reldiff(avg[2], ref_grads[2]),
            }
    return out


def case_syncbn() -> dict:
    rng = np.random.default_rng(2)
    mt.manual_seed(0)
    head = DINOHead(4, 6, hidden_dim=5, bottleneck_dim=3, nlayers=3, use_bn=True).to(
        dtype=np.float64)
    mt.manual_seed(0)
    ref = DINOHead(4, 6, hidden_dim=5, bottleneck_dim=3, nlayers=3, use_bn=True).to(
        dtype=np.float64)
    ref.load_state_dict(head.state_dict())
    counts = [3, 2] + [3] * (W - 2)  # unequal shards
    x, gy = rng.standard_normal((sum(counts), 4)), rng.standard_normal((sum(counts), 6))
    xt = Tensor(shard(x, counts).copy(), requires_grad=True)
    y = head(xt)
    (y * Tensor(shard(gy, counts))).sum().backward()  # this rank's part of sum(gy * y)
    with dist.rank_local():
        xr = Tensor(x.copy(), requires_grad=True)
        yr = ref(xr)
        (yr * Tensor(gy)).sum().backward()
        local = DINOHead(4, 6, hidden_dim=5, bottleneck_dim=3, nlayers=3, use_bn=True).to(
            dtype=np.float64)
        local.load_state_dict(ref.state_dict())
        y_local = local(Tensor(shard(x, counts)))
    rows = slice(sum(counts[:R]), sum(counts[:R + 1]))
    grads = {n: dist.all_reduce(p.grad) for n, p in head.named_parameters() if p.grad is not None}
    ref_grads = {n: p.grad for n, p in ref.named_parameters() if p.grad is not None}
    bufs, ref_bufs = dict(head.named_buffers()), dict(ref.named_buffers())
    bn = head.mlp[1]
    xs = rng.standard_normal((counts[R], 5))
    gys = rng.standard_normal((counts[R], 5))
    return {
        "output": maxdiff(y.data, yr.data[rows]),
        "input_grad": maxdiff(xt.grad, xr.grad[rows]),
        "param_grads_summed": max(reldiff(grads[n], ref_grads[n]) for n in ref_grads),
        "same_param_names": sorted(grads) == sorted(ref_grads),
        "buffers": max(maxdiff(bufs[n], ref_bufs[n]) for n in ref_bufs
                       if "running" in n),
        "local_stats_differ": maxdiff(y_local.data, yr.data[rows]),
        "gradcheck_bn": dist_gradcheck(lambda t: bn(t), xs, gys),
        "sync_flag": bool(bn.sync),
    }


def case_sinkhorn() -> dict:
    rng = np.random.default_rng(3)
    K = 5
    counts = [4, 2] + [3] * (W - 2)  # unequal: as masked-patch counts are
    t = rng.standard_normal((sum(counts), K)) * 2
    with dist.rank_local():
        ref = sinkhorn_knopp(t, 0.5).data
        local_only = sinkhorn_knopp(shard(t, counts), 0.5).data
    got = sinkhorn_knopp(shard(t, counts), 0.5).data
    rows = slice(sum(counts[:R]), sum(counts[:R + 1]))
    # the list-of-chunks path (two global crops, each sharded)
    crops = [rng.standard_normal((2 * W, K)), rng.standard_normal((2 * W, K))]
    with dist.rank_local():
        ref_chunks = sinkhorn_knopp(crops, 0.1)
    got_chunks = sinkhorn_knopp([c[2 * R:2 * R + 2] for c in crops], 0.1)
    return {
        "output": maxdiff(got, ref[rows]),
        "local_only_differs": maxdiff(local_only, ref[rows]),
        "rows_sum_to_one": maxdiff(got.sum(1), np.ones(counts[R])),
        "chunks": max(maxdiff(g.data, r.data[2 * R:2 * R + 2])
                      for g, r in zip(got_chunks, ref_chunks)),
    }


def case_dinov2() -> dict:
    rng = np.random.default_rng(4)
    n_g, N, K, D = 2, 4, 6, 3
    counts = [3, 2] + [2] * (W - 2)  # images per global crop on each rank: unequal
    Bg = sum(counts)
    s_cls = [rng.standard_normal((Bg, K)) for _ in range(3)]
    t_cls = [rng.dirichlet(np.ones(K), Bg) for _ in range(n_g)]
    s_patch = [rng.standard_normal((Bg, N, K)) for _ in range(n_g)]
    t_patch = [rng.dirichlet(np.ones(K), (Bg, N)) for _ in range(n_g)]
    masks = [rng.random((Bg, N)) < 0.5 for _ in range(n_g)]
    feats = [rng.standard_normal((Bg, D)) for _ in range(n_g)]

    def run(sel):
        return dinov2_loss([Tensor(sel(s)) for s in s_cls], [sel(t) for t in t_cls],
                           [Tensor(sel(s)) for s in s_patch], [sel(t) for t in t_patch],
                           [sel(m) for m in masks], [Tensor(sel(f)) for f in feats])

    _, parts = run(lambda a: shard(a, counts))
    mean = {k: float(dist.all_reduce(np.array([float(v.data)]), "mean")[0])
            for k, v in parts.items()}
    with dist.rank_local():
        ibot_global = float(ibot_patch_loss(np.concatenate(s_patch), np.concatenate(t_patch),
                                            np.concatenate(masks)).data)
        ibot_local = float(ibot_patch_loss(
            np.concatenate([shard(s, counts) for s in s_patch]),
            np.concatenate([shard(t, counts) for t in t_patch]),
            np.concatenate([shard(m, counts) for m in masks])).data)
        koleo_shard = sum(float(koleo_loss(shard(f, counts)).data) for f in feats)
        koleo_global = sum(float(koleo_loss(f).data) for f in feats)
    koleo_shards_mean = float(dist.all_reduce(np.array([koleo_shard]), "mean")[0])
    # iBOT center over the masked patches of every rank (stand-ins for teacher patch logits)
    c = TeacherCentering(K)
    c.update(np.concatenate([shard(p, counts)[shard(m, counts)] for p, m in zip(s_patch, masks)]))
    with dist.rank_local():
        ref_c = TeacherCentering(K)
        ref_c.update(np.concatenate([p[m] for p, m in zip(s_patch, masks)]))
    return {
        "ibot_mean_vs_global": abs(mean["ibot"] - ibot_global),
        "ibot_local_vs_global": abs(ibot_local - ibot_global),
        "koleo_is_per_rank": abs(float(parts["koleo"].data) - koleo_shard),
        "koleo_mean_vs_shards": abs(mean["koleo"] - koleo_shards_mean),
        "koleo_global_differs": abs(koleo_shards_mean - koleo_global),
        "ibot_center": maxdiff(c.center, ref_c.center),
    }


def case_random_shards() -> dict:
    """Random sizes, temperatures and *unequal* shards (the same draws on every rank): the
    Sinkhorn rows, the DINO center, and CLIP with gather_with_grad (every rank computing the
    global loss) against one process on the global batch. The worst case over the draws."""
    rng = np.random.default_rng(6)
    worst = {"sinkhorn": 0.0, "center": 0.0, "clip_logits": 0.0, "clip_loss": 0.0,
             "clip_grads": 0.0}
    for _ in range(8):
        counts = [int(c) for c in rng.integers(1, 6, size=W)]
        K, E = int(rng.integers(2, 7)), int(rng.integers(1, 5))
        temp, s0 = float(rng.uniform(0.05, 2.0)), float(rng.uniform(0.0, 4.6))
        t = rng.standard_normal((sum(counts), K)) * 3
        n_iter = int(rng.integers(0, 5))
        with dist.rank_local():
            ref = sinkhorn_knopp(t, temp, n_iter).data
            ref_c = TeacherCentering(K)
            ref_c.update(t)
        rows = slice(sum(counts[:R]), sum(counts[:R + 1]))
        worst["sinkhorn"] = max(worst["sinkhorn"],
                                maxdiff(sinkhorn_knopp(shard(t, counts), temp, n_iter).data,
                                        ref[rows]))
        c = TeacherCentering(K)
        c.update(shard(t, counts))
        worst["center"] = max(worst["center"], maxdiff(c.center, ref_c.center))
        img, txt = rng.standard_normal((sum(counts), E)), rng.standard_normal((sum(counts), E))
        w = rng.standard_normal((E, E))
        with dist.rank_local():
            ref_loss, ref_grads = _clip_grads(img, txt, w, w.T.copy(), s0, clip_loss)
            ref_lpi = clip_logits(Tensor(img @ w), Tensor(txt @ w.T), s0)[0].data
        loss, grads = _clip_grads(shard(img, counts), shard(txt, counts), w, w.T.copy(), s0,
                                  clip_loss)
        lpi = clip_logits(Tensor(shard(img, counts) @ w), Tensor(shard(txt, counts) @ w.T),
                          s0)[0].data
        avg = [dist.all_reduce(g, "mean") for g in grads]
        worst["clip_logits"] = max(worst["clip_logits"], maxdiff(lpi, ref_lpi))
        worst["clip_loss"] = max(worst["clip_loss"], abs(loss - ref_loss))
        worst["clip_grads"] = max(worst["clip_grads"],
                                  max(reldiff(a, g) for a, g in zip(avg, ref_grads)))
    return worst


def case_data_parallel() -> dict:
    """average_gradients (buckets, None everywhere, None somewhere) and broadcast_tensors."""
    rng = np.random.default_rng(7)
    shapes = [(3, 4), (4,), (), (2, 2, 2), (5,)]
    every = [[rng.standard_normal(sh) for sh in shapes] for _ in range(W)]  # rank r's grads
    params = [Tensor(rng.standard_normal(sh) + R, requires_grad=True) for sh in shapes]
    for p, g in zip(params, every[R]):
        p.grad = g.copy()
    params[3].grad = None  # None on every rank: stays None
    params[4].grad = params[4].grad.astype(np.float32)  # another dtype: its own bucket
    n_buckets = dist.average_gradients(params, bucket_elements=13)
    want = [sum(e[i] for e in every) / W for i in range(len(shapes))]
    worst = max(maxdiff(params[i].grad, want[i]) for i in (0, 1, 2))
    out = {"n_buckets": n_buckets, "mean": worst,
           "float32": maxdiff(params[4].grad, want[4].astype(np.float32)),
           "float32_dtype": str(params[4].grad.dtype),
           "none_stays_none": params[3].grad is None,
           "shapes_kept": [tuple(p.grad.shape) for p in params if p.grad is not None]
           == [shapes[i] for i in (0, 1, 2, 4)]}
    for p in params:
        p.grad = None if p is params[3] or R == 0 else np.ones(p.shape)
    try:
        dist.average_gradients(params)
        out["partial_error"] = ""
    except ValueError as e:
        out["partial_error"] = str(e)
    before = [p.data for p in params]
    root_before = dist.broadcast(params[0].data, root=0)
    out["broadcast_differed_before"] = R == 0 or maxdiff(params[0].data, root_before) > 0.5
    dist.broadcast_tensors(params, root=0)
    root_values = [dist.broadcast(p.data, root=0) for p in params]
    out["broadcast_same_objects"] = all(p.data is b for p, b in zip(params, before))
    out["broadcast"] = max(maxdiff(p.data, v) for p, v in zip(params, root_values))
    return out


def case_device() -> dict:
    """CuPy arrays (the CuPy stand-in in CI, a GPU where there is one) through the same
    collectives: staged through the host unless MPI is CUDA-aware; results stay on the
    device."""
    if not mt.cuda_available():
        return {"skipped": "no CuPy device (nor the stand-in)"}
    dev = "cuda"
    rng = np.random.default_rng(5)
    every = [rng.standard_normal((r + 2, 3)) for r in range(W)]
    x = mt.backend.to_device(every[R], dev)
    kind = type(x)
    red = dist.all_reduce(x[:2])
    gat = dist.all_gather(x)
    bro = dist.broadcast(x if R == 0 else mt.backend.to_device(np.zeros(1), dev))
    xt = mt.tensor(every[R], device=dev, requires_grad=True)
    y = dist.all_gather(xt)
    (y * y).sum().backward()  # d/dx_r of sum_r' sum(y^2) = W * 2 x_r
    counts, x_img, x_txt, w_img, w_txt, s0 = _clip_setup()
    loss = clip_loss(mt.tensor(shard(x_img, counts) @ w_img, device=dev),
                     mt.tensor(shard(x_txt, counts) @ w_txt, device=dev), s0)
    with dist.rank_local():
        ref = float(clip_loss(x_img @ w_img, x_txt @ w_txt, s0).data)
    p = mt.tensor(np.zeros((2, 3)), device=dev, requires_grad=True)
    p.grad = mt.backend.to_device(every[R][:2], dev)
    dist.average_gradients([p])
    return {
        "types": [type(a) is kind for a in (red, gat, bro, y.data, xt.grad, p.grad)],
        "average_gradients": maxdiff(mt.backend.to_numpy(p.grad), sum(e[:2] for e in every) / W),
        "cuda_aware": dist.cuda_aware(),
        "all_reduce": maxdiff(mt.backend.to_numpy(red), sum(e[:2] for e in every)),
        "all_gather": maxdiff(mt.backend.to_numpy(gat), np.concatenate(every)),
        "broadcast": maxdiff(mt.backend.to_numpy(bro), every[0]),
        "all_gather_grad": maxdiff(mt.backend.to_numpy(xt.grad), 2 * W * every[R]),
        "clip_loss": abs(loss.item() - ref),
    }


CASES = {name[5:]: fn for name, fn in globals().items() if name.startswith("case_")}


def main() -> None:
    out_dir = Path(sys.argv[1])
    if sys.argv[2:] == ["uncaught"]:  # rank 1 fails outside any collective; rank 0 waits
        if R == 1:
            raise RuntimeError("uncaught on rank 1")
        dist.barrier()
        return
    mt.set_default_dtype(np.float64)
    results: dict = {}
    for name in sys.argv[2:]:
        start = time.perf_counter()
        try:
            results[name] = CASES[name]()
        except Exception:  # reported, judged by the test
            results[name] = {"error": traceback.format_exc()}
        results[name]["seconds"] = time.perf_counter() - start
    (out_dir / f"rank{R}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
