"""Masks for masked modelling: BERT tokens, MAE random patches, BEiT/DINOv2 block-wise patches.

Every function draws from an explicit ``rng`` (a NumPy Generator, or the device's own) and
returns raw arrays: masks are data, not part of the graph. Patch masks are boolean with
True = the patch is masked (hidden from the student / to be predicted).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import backend
from ..autograd import Tensor
from ._utils import scalar_randint, scalar_uniform, uniform

__all__ = ["block_patch_mask", "dinov2_collate_masks", "mask_tokens", "random_patch_mask"]

IGNORE_INDEX = -100  # the label of positions that are not predicted (torch / HF convention)


# --------------------------------------------------------------------------------------------
# BERT token masking (seed eq. 4)
# --------------------------------------------------------------------------------------------
def mask_tokens(
    ids: Any,
    vocab_size: int,
    mask_id: int,
    rng: Any,
    prob: float = 0.15,
    special_ids: Any = (),
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
) -> tuple[Any, Any]:
    """BERT masking, the per-token Bernoulli rule of HF ``DataCollatorForLanguageModeling``.

    $m_i \\sim \\mathrm{Bernoulli}(p)$ for every non-special token; of the selected tokens
    80% become ``[MASK]``, 10% a random token, 10% stay unchanged; $y_i = x_i$ where
    $m_i$, else $-100$. The seed's $M$ in $-\\sum_{i \\in M} \\log P(x_i | x_{\\setminus M})$
    is the set of positions with a label.

    As HF (``torch_mask_tokens``): ``replaced = Bernoulli(mask_replace_prob) & masked``; the
    random branch is drawn at ``random_replace_prob / (1 - mask_replace_prob)`` among the
    selected tokens not replaced. Google's ``create_pretraining_data.py`` instead picks an
    exact count ``min(20, max(1, round(0.15 len)))`` per sequence; the expected fractions
    are the same. One deliberate difference from HF: random replacements are drawn from the
    *non-special* ids only (HF draws from the whole vocabulary, so it can insert ``[CLS]`` or
    ``[PAD]``). ``mask_id`` always counts as special: it is never selected nor drawn.

    Args:
        ids: integer token ids (any shape, e.g. (B, T)): an array or a Tensor.
        vocab_size: V; ids must lie in [0, V).
        mask_id: the ``[MASK]`` id.
        rng: a NumPy Generator or the device's generator (None: the device default).
        prob: the selection probability (BERT: 0.15).
        special_ids: ids never selected ([CLS], [SEP], [PAD], ...).

    Returns ``(inputs, labels)`` of the shape of ``ids``, on its device, of the same kind
    (Tensors for a Tensor): ``inputs`` the corrupted ids, ``labels`` int64 with the
    original id at selected positions and -100 elsewhere.

    Shapes: ids (...) -> inputs (...), labels (...).
    """
    fn = "mask_tokens"
    was_tensor = isinstance(ids, Tensor)
    x = ids.data if was_tensor else ids
    if not hasattr(x, "dtype"):
        x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"{fn}: ids must hold integers, got dtype {x.dtype}")
    xp = backend.get_array_module(x)
    device = backend.device_of(x)
    for name, p in (("prob", prob), ("mask_replace_prob", mask_replace_prob),
                    ("random_replace_prob", random_replace_prob)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{fn}: {name} must be in [0, 1], got {p}")
    if mask_replace_prob + random_replace_prob > 1.0 + 1e-12:
        raise ValueError(
            f"{fn}: mask_replace_prob + random_replace_prob must be <= 1, got "
            f"{mask_replace_prob} + {random_replace_prob}"
        )
    if not 0 <= mask_id < vocab_size:
        raise ValueError(f"{fn}: mask_id {mask_id} is outside the vocabulary [0, {vocab_size})")
    special = {int(s) for s in special_ids} | {int(mask_id)}
    bad = [s for s in special if not 0 <= s < vocab_size]
    if bad:
        raise ValueError(f"{fn}: special ids {sorted(bad)} are outside [0, {vocab_size})")
    if vocab_size <= len(special):
        raise ValueError(
            f"{fn}: vocab_size {vocab_size} leaves no ordinary token: there are {len(special)} "
            f"special ids (including mask_id) {sorted(special)}"
        )
    if x.size and (int(x.min()) < 0 or int(x.max()) >= vocab_size):
        raise ValueError(
            f"{fn}: ids must lie in [0, {vocab_size}), got range [{int(x.min())}, {int(x.max())}]"
        )

    shape = tuple(x.shape)
    # Which tokens may be selected: every id outside the special set.
    candidate = xp.ones(shape, dtype=bool)
    for s in special:
        candidate &= x != s
    masked = (uniform(rng, shape, device) < prob) & candidate

    labels = xp.where(masked, x, IGNORE_INDEX).astype(np.int64)
    inputs = x.copy()
    replaced = (uniform(rng, shape, device) < mask_replace_prob) & masked
    inputs[replaced] = mask_id
    if mask_replace_prob < 1.0 and random_replace_prob > 0.0:
        # HF scales the random branch to the remaining (1 - mask_replace_prob) of the selected
        # tokens: 0.1 / 0.2 = 0.5 for BERT's 80/10/10.
        scaled = random_replace_prob / (1.0 - mask_replace_prob)
        randomised = (uniform(rng, shape, device) < scaled) & masked & ~replaced
        ordinary = np.array([i for i in range(vocab_size) if i not in special], dtype=x.dtype)
        pick = (uniform(rng, shape, device) * len(ordinary)).astype(np.int64)
        pick = xp.minimum(pick, len(ordinary) - 1)  # guards u * n rounding up to n
        words = xp.asarray(ordinary)[pick]  # (...): a random ordinary id per position
        inputs[randomised] = words[randomised]
    if was_tensor:
        return Tensor(inputs), Tensor(labels)
    return inputs, labels


# --------------------------------------------------------------------------------------------
# MAE: uniform random patch masking
# --------------------------------------------------------------------------------------------
def random_patch_mask(
    B: int, N: int, ratio: float, rng: Any, *, device: Any = None, return_indices: bool = False
) -> Any:
    """MAE's per-sample random masking (``models_mae.py: random_masking``).

    Draw noise $u \\sim U(0,1)^{B \\times N}$, ``ids_shuffle = argsort(u)``; the first
    ``len_keep = int(N * (1 - ratio))`` patches of the shuffle are kept, the rest masked.
    So exactly ``N - len_keep`` patches are masked in every row (75% in MAE). Exactly as MAE,
    ``len_keep`` truncates ``N * (1 - ratio)`` in floating point: ``int(10 * (1 - 0.9))`` is
    0, not 1, because ``1 - 0.9 = 0.0999...``.

    Returns the mask (B, N) bool (True = masked), and with ``return_indices`` also
    ``ids_keep`` (B, len_keep) — the patches the MAE encoder sees, in shuffled order — and
    ``ids_restore`` (B, N), which un-shuffles: ``full[b] = shuffled[b][ids_restore[b]]``.

    Shapes: -> mask (B, N)[, ids_keep (B, len_keep), ids_restore (B, N)].
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"random_patch_mask: ratio must be in [0, 1), got {ratio}")
    if B < 1 or N < 1:
        raise ValueError(f"random_patch_mask: B and N must be positive, got B={B}, N={N}")
    dev = backend.as_device(device) if device is not None else _rng_device(rng)
    xp = dev.xp
    len_keep = int(N * (1 - ratio))
    noise = uniform(rng, (B, N), dev)  # (B, N): small is keep, large is remove
    ids_shuffle = xp.argsort(noise, axis=1)  # (B, N)
    ids_restore = xp.argsort(ids_shuffle, axis=1)  # (B, N): the inverse permutation
    shuffled = xp.ones((B, N), dtype=bool)  # mask in shuffled order: keep the first len_keep
    shuffled[:, :len_keep] = False
    mask = xp.take_along_axis(shuffled, ids_restore, axis=1)  # (B, N) back in patch order
    if return_indices:
        return mask, ids_shuffle[:, :len_keep], ids_restore
    return mask


def _rng_device(rng: Any) -> backend.Device:
    """The device a generator draws on (None: the default device)."""
    if rng is None:
        return backend.get_default_device()
    return backend.as_device("cuda") if type(rng).__module__.startswith("cupy") else \
        backend.as_device("cpu")


# --------------------------------------------------------------------------------------------
# BEiT / DINOv2: block-wise patch masking
# --------------------------------------------------------------------------------------------
def _grid(grid: Any) -> tuple[int, int]:
    if isinstance(grid, (int, np.integer)):
        return int(grid), int(grid)
    H, W = (int(g) for g in grid)
    return H, W


def _add_block(mask: np.ndarray, max_mask_patches: float, min_num_patches: float,
               log_aspect: tuple[float, float], rng: Any, blocks: list | None) -> int:
    """One ``MaskingGenerator._mask`` call: up to 10 attempts to place one rectangle.

    Returns the number of newly masked patches (0 when every attempt failed)."""
    H, W = mask.shape
    delta = 0
    for _ in range(10):
        target_area = scalar_uniform(rng, min_num_patches, max_mask_patches)
        aspect = math.exp(scalar_uniform(rng, *log_aspect))
        h = int(round(math.sqrt(target_area * aspect)))
        w = int(round(math.sqrt(target_area / aspect)))
        # strict "<" as in BEiT/DINOv2: a block never spans the whole height or width
        if w < W and h < H:
            top = scalar_randint(rng, 0, H - h)
            left = scalar_randint(rng, 0, W - w)
            already = int(mask[top:top + h, left:left + w].sum())
            # accept only a block that adds something and stays within the budget
            if 0 < h * w - already <= max_mask_patches:
                mask[top:top + h, left:left + w] = True
                delta += h * w - already
                if blocks is not None:
                    blocks.append((top, left, h, w))
            if delta > 0:
                break
    return delta


def block_patch_mask(
    grid: Any,
    num_masked: int,
    rng: Any,
    min_num_patches: float = 4,
    min_aspect: float = 0.3,
    max_aspect: float | None = None,
    max_block_patches: float | None = None,
    *,
    device: Any = None,
    return_blocks: bool = False,
) -> Any:
    """The block-wise mask generator of BEiT and DINOv2 (``dinov2/data/masking.py``).

    Until ``num_masked`` patches are masked: draw a rectangle of area
    $a \\sim U(\\text{min\\_num\\_patches}, \\text{remaining})$ (remaining capped at
    ``max_block_patches``) and aspect $r = e^{U(\\log r_{min}, \\log r_{max})}$,
    $h = \\mathrm{round}\\sqrt{a r}$, $w = \\mathrm{round}\\sqrt{a / r}$, at a uniform random
    position; accept it only if it adds new patches and no more than the remaining budget;
    up to 10 attempts per block. Stop when the budget is met or a block adds nothing, so the
    mask never exceeds ``num_masked`` and may fall short of it. ``max_aspect`` defaults to
    ``1 / min_aspect``; ``max_block_patches`` defaults to ``num_masked`` (BEiT); DINOv2's
    collate uses half the patches (see ``dinov2_collate_masks``).

    Because h and w are rounded, a block's exact aspect h/w and area can sit slightly outside
    [min_aspect, max_aspect] and [min_num_patches, ...] (e.g. a 1x3 block from a = 4.4,
    r = 0.5): that is the reference behaviour, kept.

    Draws scalars one at a time (the reference uses Python's ``random``), so pass a NumPy
    Generator: masks are made on the host in the data pipeline. ``device`` moves the result.

    Returns the mask (H, W) bool, True = masked (``.reshape(-1)`` gives the raster (N,)
    order of the patch tokens); with ``return_blocks`` also the list of accepted rectangles
    ``(top, left, h, w)``.

    Shapes: -> (H, W).
    """
    H, W = _grid(grid)
    N = H * W
    if H < 1 or W < 1:
        raise ValueError(f"block_patch_mask: grid must be positive, got {grid}")
    if not 0 <= num_masked <= N:
        raise ValueError(f"block_patch_mask: num_masked must be in [0, {N}], got {num_masked}")
    if not 0 < min_aspect <= (max_aspect or 1 / min_aspect):
        raise ValueError(
            f"block_patch_mask: need 0 < min_aspect <= max_aspect, got {min_aspect}, {max_aspect}"
        )
    if rng is None:
        rng = backend.default_rng("cpu")
    max_aspect = max_aspect or 1 / min_aspect
    log_aspect = (math.log(min_aspect), math.log(max_aspect))
    cap = num_masked if max_block_patches is None else max_block_patches

    mask = np.zeros((H, W), dtype=bool)
    blocks: list | None = [] if return_blocks else None
    count = 0
    while count < num_masked:
        budget = min(num_masked - count, cap)
        delta = _add_block(mask, budget, min_num_patches, log_aspect, rng, blocks)
        if delta == 0:
            break
        count += delta
    out = backend.to_device(mask, device) if device is not None else mask
    return (out, blocks) if return_blocks else out


def dinov2_collate_masks(
    n_images: int,
    grid: Any,
    rng: Any,
    mask_probability: float = 0.5,
    ratio_min_max: tuple[float, float] = (0.1, 0.5),
    *,
    min_num_patches: float = 4,
    max_block_patches: float | None = None,
    device: Any = None,
) -> tuple[Any, Any]:
    """DINOv2's batch masking rule (``dinov2/data/collate.py: collate_data_and_cast``).

    Of the ``n_images`` global crops, ``n = int(n_images * mask_probability)`` get a block
    mask; their ratios are stratified: with ``probs = linspace(r_min, r_max, n + 1)``, image
    i gets ``block_patch_mask(int(N * U(probs[i], probs[i+1])))``. The others get no mask;
    then the list is shuffled. ``max_block_patches`` defaults to ``0.5 N`` as DINOv2's
    ``train.py`` builds the generator.

    Returns ``(masks, masks_weight)``: ``masks`` (n_images, N) bool, and ``masks_weight``
    (M,) with M = ``masks.sum()``: $1 / \\max(m_b, 1)$ for every masked patch of image b, in
    the row-major order of the True entries of ``masks`` (DINOv2's flat layout; it sums to
    the number of masked images). ``ibot_patch_loss`` derives the same weights from the mask.

    Shapes: -> masks (n_images, N), masks_weight (M,).
    """
    if n_images < 1:
        raise ValueError(f"dinov2_collate_masks: n_images must be >= 1, got {n_images}")
    if not 0.0 <= mask_probability <= 1.0:
        raise ValueError(
            f"dinov2_collate_masks: mask_probability must be in [0, 1], got {mask_probability}"
        )
    r_min, r_max = ratio_min_max
    if not 0.0 <= r_min <= r_max <= 1.0:
        raise ValueError(
            f"dinov2_collate_masks: need 0 <= ratio_min <= ratio_max <= 1, got {ratio_min_max}"
        )
    if rng is None:
        rng = backend.default_rng("cpu")
    H, W = _grid(grid)
    N = H * W
    cap = 0.5 * N if max_block_patches is None else max_block_patches
    n_masked = int(n_images * mask_probability)
    probs = np.linspace(r_min, r_max, n_masked + 1)
    masks = []
    for i in range(n_masked):
        target = int(N * scalar_uniform(rng, probs[i], probs[i + 1]))
        masks.append(block_patch_mask((H, W), target, rng, min_num_patches,
                                      max_block_patches=cap).reshape(N))
    masks += [np.zeros(N, dtype=bool) for _ in range(n_images - n_masked)]
    order = np.argsort(np.asarray(backend.to_numpy(rng.random(n_images))))  # random.shuffle
    collated = np.stack([masks[i] for i in order])  # (n_images, N)
    per_image = 1.0 / np.maximum(collated.sum(-1), 1.0)  # (n_images,)
    weight = np.broadcast_to(per_image[:, None], collated.shape)[collated]  # (M,)
    if device is not None:
        return backend.to_device(collated, device), backend.to_device(weight, device)
    return collated, weight
