"""Plain-NumPy float64 references for the layer tests, written from the formulas (never by
calling the library), and a gradcheck helper for modules.

Weights are read from the modules with ``.numpy()``; orientations follow design §3:
``Linear.weight`` is (in, out), ``qkv.weight`` columns are [W_Q | W_K | W_V] with heads
contiguous inside each block.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from minitransformer.testing import gradcheck

_erf = np.vectorize(math.erf)


def gelu(x: np.ndarray) -> np.ndarray:
    """x Phi(x) with the exact erf."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def quick_gelu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-1.702 * x))


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


ACT = {"gelu": gelu, "gelu_tanh": gelu_tanh, "quick_gelu": quick_gelu, "relu": relu}


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def softmax_rows(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def params(module: Any) -> dict[str, np.ndarray]:
    """The module's parameters as float64 NumPy arrays by dotted name."""
    return {k: v.astype(np.float64) for k, v in module.state_dict().items()}


def full_mask(mask: np.ndarray | None, B: int, H: int, T: int) -> np.ndarray:
    if mask is None:
        return np.ones((B, H, T, T), dtype=bool)
    return np.broadcast_to(mask, (B, H, T, T))


def mha_eq3(x: np.ndarray, p: dict[str, np.ndarray], H: int, mask: np.ndarray | None = None,
            prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Seed equation 3 literally: for each head h, W_Q^h, W_K^h, W_V^h are column slices of
    qkv.weight; head_h = softmax(Q_h K_h^T / sqrt(hd)) V_h on its own; concat; times W_O + b.
    Returns (out (B, T, D), probs (B, H, T, T))."""
    B, T, D = x.shape
    hd = D // H
    W, b = p[prefix + "qkv.weight"], p.get(prefix + "qkv.bias", np.zeros(3 * D))
    m = full_mask(mask, B, H, T)
    heads, probs = [], np.zeros((B, H, T, T))
    for h in range(H):
        cols = slice(h * hd, (h + 1) * hd)
        Wq, Wk, Wv = W[:, :D][:, cols], W[:, D:2 * D][:, cols], W[:, 2 * D:][:, cols]
        bq, bk, bv = b[:D][cols], b[D:2 * D][cols], b[2 * D:][cols]
        Q, K, V = x @ Wq + bq, x @ Wk + bk, x @ Wv + bv  # eq (1), (B, T, hd)
        S = Q @ K.transpose(0, 2, 1) / math.sqrt(hd)  # (B, T, T)
        S = np.where(m[:, h], S, -np.inf)
        A = np.zeros_like(S)
        rows = m[:, h].any(axis=-1)  # queries with at least one allowed key
        A[rows] = softmax_rows(S[rows])
        probs[:, h] = A
        heads.append(A @ V)  # eq (2)
    concat = np.concatenate(heads, axis=-1)  # (B, T, D)
    return concat @ p[prefix + "proj.weight"] + p[prefix + "proj.bias"], probs


def mha_loops(x: np.ndarray, p: dict[str, np.ndarray], H: int,
              mask: np.ndarray | None = None) -> np.ndarray:
    """Multi-head attention with an explicit double loop over query i and key j positions:
    score_ij = q_i . k_j / sqrt(hd) for allowed j, a_ij = exp(score_ij - max) / sum, and
    out_i = sum_j a_ij v_j. A query with no allowed key outputs zeros."""
    B, T, D = x.shape
    hd = D // H
    qkv = x @ p["qkv.weight"] + p.get("qkv.bias", np.zeros(3 * D))  # (B, T, 3D)
    m = full_mask(mask, B, H, T)
    heads = np.zeros((B, T, D))
    for bi in range(B):
        for h in range(H):
            q = qkv[bi, :, h * hd:(h + 1) * hd]
            k = qkv[bi, :, D + h * hd:D + (h + 1) * hd]
            v = qkv[bi, :, 2 * D + h * hd:2 * D + (h + 1) * hd]
            for i in range(T):
                allowed = [j for j in range(T) if m[bi, h, i, j]]
                if not allowed:
                    continue
                scores = {j: float(q[i] @ k[j]) / math.sqrt(hd) for j in allowed}
                top = max(scores.values())
                z = sum(math.exp(s - top) for s in scores.values())
                for j in allowed:
                    heads[bi, i, h * hd:(h + 1) * hd] += math.exp(scores[j] - top) / z * v[j]
    return heads @ p["proj.weight"] + p["proj.bias"]


def mlp(x: np.ndarray, p: dict[str, np.ndarray], act: str, prefix: str = "") -> np.ndarray:
    h = ACT[act](x @ p[prefix + "fc1.weight"] + p[prefix + "fc1.bias"])
    return h @ p[prefix + "fc2.weight"] + p[prefix + "fc2.bias"]


def block(x: np.ndarray, p: dict[str, np.ndarray], H: int, norm_first: bool, eps: float,
          act: str, mask: np.ndarray | None = None, prefix: str = "") -> np.ndarray:
    """The encoder block written out. Pre-norm (timm Block):
        x = x + ls1 * attn(ln1(x));  x = x + ls2 * mlp(ln2(x))
    Post-norm (the seed, torch TransformerEncoderLayer(norm_first=False)):
        x = ln1(x + ls1 * attn(x));  x = ln2(x + ls2 * mlp(x))"""
    D = x.shape[-1]
    ls1 = p.get(prefix + "ls1.gamma", np.ones(D))
    ls2 = p.get(prefix + "ls2.gamma", np.ones(D))

    def ln(i: int, z: np.ndarray) -> np.ndarray:
        return layer_norm(z, p[f"{prefix}norm{i}.weight"], p[f"{prefix}norm{i}.bias"], eps)

    def attn(z: np.ndarray) -> np.ndarray:
        return mha_eq3(z, p, H, mask, prefix=prefix + "attn.")[0]

    if norm_first:
        x = x + ls1 * attn(ln(1, x))
        return x + ls2 * mlp(ln(2, x), p, act, prefix + "mlp.")
    x = ln(1, x + ls1 * attn(x))
    return ln(2, x + ls2 * mlp(x, p, act, prefix + "mlp."))


@contextlib.contextmanager
def swapped_parameters(module: Any, tensors: dict[str, Any]) -> Iterator[None]:
    """Temporarily make ``module`` compute with ``tensors`` (dotted name -> Tensor) in place of
    its parameters, so a function of those tensors can be gradchecked (gradcheck perturbs
    and differentiates the tensors it is given, which may be copies)."""
    saved = []
    try:
        for name, t in tensors.items():
            *path, attr = name.split(".")
            owner = module
            for part in path:
                owner = getattr(owner, part)
            saved.append((owner, attr, getattr(owner, attr)))
            object.__setattr__(owner, attr, t)
        yield
    finally:
        for owner, attr, p in reversed(saved):
            object.__setattr__(owner, attr, p)


def gradcheck_module(fn: Any, module: Any, inputs: list[Any], max_elements: int = 48,
                     **kwargs: Any) -> bool:
    """gradcheck ``fn(*inputs)`` w.r.t. the inputs that require grad AND every trainable
    parameter of ``module`` (inputs larger than ``max_elements`` along random directions).
    The parameters are passed to gradcheck as inputs and swapped into the module for each
    evaluation. float64 throughout."""
    named = [(k, p) for k, p in module.named_parameters() if p.requires_grad]
    n = len(inputs)

    def call(*args: Any) -> Any:
        with swapped_parameters(module, {k: t for (k, _), t in zip(named, args[n:])}):
            return fn(*args[:n])

    # allow_unused: a parameter the output does not use (the head, under forward_features)
    # has zero numeric gradient too; the swap above makes fn really depend on the rest.
    kwargs.setdefault("allow_unused", True)
    return gradcheck(call, list(inputs) + [p for _, p in named], max_elements=max_elements,
                     **kwargs)
