"""What every rank runs in notebook 12 (distributed training from scratch).

``mpiexec -n W python _dist_demo.py OUT_DIR DEVICE CASE [CASE ...]``: each of the W processes
runs the cases (``collectives``, ``clip``, ``dino``, ``train``) on ``DEVICE`` ("cpu" or
"cuda") in float64 and writes ``OUT_DIR/rank{r}.json``: per case, the numbers the notebook
prints (or the error the case raised, so that one failing case cannot leave the other ranks
waiting in a collective). Nothing is printed.

Every rank builds the same *global* batch from a fixed seed and keeps its shard (rank r gets
rows ``r * B .. (r + 1) * B - 1``). Where a case compares with one process on the global
batch, every rank computes that reference itself inside ``distributed.rank_local()``, where
the collectives are the identity.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

import minitransformer as mt
from minitransformer import distributed as dist
from minitransformer import functional as F
from minitransformer.models import VisionTransformer, ViTConfig
from minitransformer.objectives import TeacherCentering, clip_loss, sinkhorn_knopp
from minitransformer.optim import AdamW

R, W = dist.rank(), dist.world_size()
TINY = os.environ.get("MINITRANSFORMER_TINY") == "1"
DEVICE = "cpu"  # set from the command line in main()


def on(x: np.ndarray):
    """A host array on the demo's device (a CuPy array for "cuda")."""
    return mt.backend.to_device(np.asarray(x), DEVICE)


def host(x) -> np.ndarray:
    """Any array or Tensor as a NumPy array."""
    return mt.to_numpy(x.data if isinstance(x, mt.Tensor) else x)


def maxdiff(a, b) -> float:
    return float(np.max(np.abs(host(a) - host(b))))


def shard(x: np.ndarray) -> np.ndarray:
    """This rank's rows of a global batch cut into W equal consecutive shards."""
    B = x.shape[0] // W
    return x[R * B:(R + 1) * B]


# ---------------------------------------------------------------------------------- cases
def case_collectives() -> dict:
    """Each collective on a small array that differs per rank, and what an all-reduce costs."""
    x = on(np.arange(4.0) + 10 * R)  # rank r holds [10r, 10r + 1, 10r + 2, 10r + 3]
    out = {
        "x": host(x).tolist(),
        "all_reduce_sum": host(dist.all_reduce(x)).tolist(),
        "all_reduce_mean": host(dist.all_reduce(x, "mean")).tolist(),
        "all_gather": host(dist.all_gather(x[:R + 1])).tolist(),  # rank r gives r + 1 values
        "broadcast_from_0": host(dist.broadcast(x, root=0)).tolist(),
        "result_type": type(dist.all_reduce(x)).__module__.split(".")[0],  # numpy or cupy
        "cuda_aware": dist.cuda_aware(),
    }
    # the cost of one all-reduce of n float64 values: the median of a few calls
    timing = {}
    for n in ([1, 1_000, 100_000] if TINY else [1, 1_000, 100_000, 1_000_000]):
        a = on(np.ones(n))
        secs = []
        for _ in range(5):
            dist.barrier()  # start together: otherwise a call also waits for the slower rank
            t0 = time.perf_counter()
            dist.all_reduce(a, check=False)
            secs.append(time.perf_counter() - t0)
        timing[str(n)] = float(np.median(secs))
    out["all_reduce_seconds"] = timing
    return out


def _clip_data():
    """A global batch of N = 4W (image, text) pairs through two linear 'towers'."""
    rng = np.random.default_rng(1)
    N, D_img, D_txt, E = 4 * W, 6, 5, 3
    return (rng.standard_normal((N, D_img)), rng.standard_normal((N, D_txt)),
            rng.standard_normal((D_img, E)), rng.standard_normal((D_txt, E)), 2.0)


def _clip_step(x_img, x_txt, w_img, w_txt, s0, **options):
    """The loss and the gradients of both towers' weights and of logit_scale."""
    wi = mt.tensor(on(w_img), requires_grad=True)
    wt = mt.tensor(on(w_txt), requires_grad=True)
    s = mt.tensor(on(np.array(s0)), requires_grad=True)
    loss = clip_loss(mt.tensor(on(x_img)) @ wi, mt.tensor(on(x_txt)) @ wt, s, **options)
    loss.backward()
    return loss.item(), [host(wi.grad), host(wt.grad), host(s.grad)]


def case_clip() -> dict:
    """CLIP's loss on this rank's shard: alone, gathered (open_clip's gather_with_grad), and
    the local_loss option, against one process on the global batch."""
    x_img, x_txt, w_img, w_txt, s0 = _clip_data()
    with dist.rank_local():  # one process: the global batch, and this rank's shard alone
        ref_loss, ref_grads = _clip_step(x_img, x_txt, w_img, w_txt, s0)
        alone_loss, _ = _clip_step(shard(x_img), shard(x_txt), w_img, w_txt, s0)
    loss, grads = _clip_step(shard(x_img), shard(x_txt), w_img, w_txt, s0)  # gathered
    avg = [dist.all_reduce(g, "mean") for g in grads]  # what data parallelism does next
    local, _ = _clip_step(shard(x_img), shard(x_txt), w_img, w_txt, s0, local_loss=True)
    return {
        "N": int(x_img.shape[0]), "B": int(x_img.shape[0] // W),
        "global_loss": ref_loss,
        "alone_loss": alone_loss,
        "alone_mean_over_ranks": float(dist.all_reduce(np.array([alone_loss]), "mean")[0]),
        "gathered_loss": loss,
        "gathered_grads_vs_global": max(maxdiff(a, g) for a, g in zip(avg, ref_grads)),
        "local_loss": local,
        "local_loss_mean_over_ranks": float(dist.all_reduce(np.array([local]), "mean")[0]),
    }


def case_dino() -> dict:
    """DINO's center from this rank's teacher outputs (all-reduced sums and row count), and
    DINOv2's Sinkhorn-Knopp on this rank's rows, against one process on the global batch."""
    rng = np.random.default_rng(2)
    B, K = 3 * W, 5
    # two steps of two global crops each; a per-rank shift makes the shards' means differ
    shift = np.repeat(np.arange(W), 3)[:, None] * 2.0  # (B, 1): rank r's rows + 2r
    steps = [[rng.standard_normal((B, K)) + shift for _ in range(2)] for _ in range(2)]
    dist_c, ref_c, alone_c = (TeacherCentering(K, device=DEVICE) for _ in range(3))
    for crops in steps:
        dist_c.update([on(shard(c)) for c in crops])
        with dist.rank_local():
            ref_c.update([on(c) for c in crops])
            alone_c.update([on(shard(c)) for c in crops])
    t = steps[-1][0]  # one crop's teacher logits (B, K)
    with dist.rank_local():
        sk_ref = host(sinkhorn_knopp(on(t), 0.5))[R * 3:(R + 1) * 3]  # this rank's rows
        sk_alone = host(sinkhorn_knopp(on(shard(t)), 0.5))
    sk = host(sinkhorn_knopp(on(shard(t)), 0.5))
    return {
        "center": host(dist_c.center).ravel().tolist(),
        "center_single_process": host(ref_c.center).ravel().tolist(),
        "center_alone": host(alone_c.center).ravel().tolist(),
        "center_vs_single_process": maxdiff(dist_c.center, ref_c.center),
        "center_alone_vs_single_process": maxdiff(alone_c.center, ref_c.center),
        "sinkhorn_vs_single_process": float(np.max(np.abs(sk - sk_ref))),
        "sinkhorn_alone_vs_single_process": float(np.max(np.abs(sk_alone - sk_ref))),
    }


def _tiny_vit(seed: int) -> VisionTransformer:
    mt.manual_seed(seed)
    cfg = ViTConfig(img_size=8, patch_size=4, in_chans=3, dim=16, depth=1, num_heads=2,
                    num_classes=3)
    return VisionTransformer(cfg).to(DEVICE, dtype=np.float64)


def _train(model, images, labels, steps, average=True) -> list[float]:
    """``steps`` AdamW steps on one fixed batch: the loss (a mean over the batch) of each."""
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    x, y = on(images), on(labels)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)  # logits (B, 3) -> the mean over this batch
        opt.zero_grad()
        loss.backward()
        if average:
            dist.average_gradients(model.parameters())  # g <- mean over ranks of g_r
        opt.step()
        losses.append(loss.item())
    return losses


def case_train() -> dict:
    """Data-parallel training of a tiny ViT classifier against one process on the global
    batch: the same initial weights (broadcast from rank 0), averaged gradients."""
    steps = 3 if TINY else 10
    rng = np.random.default_rng(3)
    images = rng.random((4 * W, 3, 8, 8))  # (B, C, H, W): the global batch
    labels = rng.integers(0, 3, 4 * W)
    model = _tiny_vit(seed=100 + R)  # every rank draws different weights...
    differed = maxdiff(model.head.weight, dist.broadcast(model.head.weight.data, root=0))
    dist.broadcast_tensors(model.parameters(), root=0)  # ...until rank 0's are broadcast
    losses = _train(model, shard(images), shard(labels), steps)
    mean_losses = host(dist.all_reduce(np.array(losses), "mean")).tolist()
    with dist.rank_local():  # one process, rank 0's initial weights, the global batch
        ref = _tiny_vit(seed=100)
        ref_losses = _train(ref, images, labels, steps)
    # the same run without averaging the gradients: each rank follows its own shard
    lone = _tiny_vit(seed=100)
    _train(lone, shard(images), shard(labels), steps, average=False)
    params, ref_params = dict(model.named_parameters()), dict(ref.named_parameters())
    lone_0 = [dist.broadcast(p.data, root=0) for p in lone.parameters()]  # rank 0's weights
    return {
        "steps": steps, "n_params": sum(p.size for p in model.parameters()),
        "init_differed_before_broadcast": differed,
        "shard_losses": losses,
        "mean_losses": mean_losses,
        "single_process_losses": ref_losses,
        "weights_vs_single_process": max(maxdiff(params[n], ref_params[n]) for n in params),
        "not_averaged_vs_rank0": max(maxdiff(p, q) for p, q in zip(lone.parameters(), lone_0)),
    }


CASES = {name[5:]: fn for name, fn in globals().items() if name.startswith("case_")}


def main() -> None:
    global DEVICE
    out_dir, DEVICE, names = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    mt.set_default_dtype(np.float64)
    results: dict = {"rank": R, "world_size": W}
    for name in names:
        start = time.perf_counter()
        try:
            results[name] = CASES[name]()
        except Exception:  # reported to the notebook, which raises it
            results[name] = {"error": traceback.format_exc()}
        results[name]["seconds"] = time.perf_counter() - start
    (out_dir / f"rank{R}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
