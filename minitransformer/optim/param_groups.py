"""Parameter groups: which parameters get weight decay, and layer-wise learning-rate decay.

No weight decay on biases, norm gains, LayerScale ``gamma``, any 1-D parameter, and the
position / CLS / mask tokens and CLIP's ``logit_scale``: the union of open_clip's
``exclude_from_wd`` (``ndim <= 1`` plus ``no_weight_decay()``: positional and class
embeddings), timm's ``no_weight_decay`` set and DINOv2's ``wd_multiplier = 0`` for names with
"norm" / "gamma" / ".bias". DINO v1's ``get_params_groups`` *does* decay ``cls_token`` and
``pos_embed``; pass ``no_decay=()`` to get that rule (1-D parameters only).

Layer-wise lr decay follows DINOv2's ``get_vit_lr_decay_rate``: embeddings and tokens are
layer 0, ``blocks.{i}`` is layer ``i + 1``, everything after the blocks (final norm, heads) is
layer ``L + 1``, and ``lr_mult = decay ** (L + 1 - layer_id)``; ``patch_embed`` is further
scaled by ``patch_embed_lr_mult`` (0.2 in DINOv2).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..autograd import Tensor

__all__ = [
    "DEFAULT_NO_DECAY",
    "check_param_groups",
    "layer_decay_lr_mult",
    "layer_id",
    "param_groups",
]

# Substrings of parameter names that are never weight-decayed (besides every 1-D parameter).
DEFAULT_NO_DECAY: tuple[str, ...] = (
    "pos_embed", "cls_token", "mask_token", "logit_scale", "gamma", "norm",
)

# Parameters that sit before the first block (DINOv2 gives them layer_id 0).
_EMBEDDING_NAMES = ("pos_embed", "patch_embed", "mask_token", "cls_token", "register_tokens")


def _named_parameters(model: Any) -> list[tuple[str, Tensor]]:
    """(name, param) pairs of a Module, or of an iterable of such pairs."""
    pairs = list(model.named_parameters()) if hasattr(model, "named_parameters") else list(model)
    for item in pairs:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Tensor)):
            raise TypeError("param_groups: model must be a Module or an iterable of "
                            f"(name, Tensor) pairs, got an item {item!r}")
    return pairs


def layer_id(name: str, num_layers: int) -> int:
    """The depth of a parameter for lr decay: 0 for embeddings/tokens, ``i + 1`` inside
    ``blocks.{i}``, ``num_layers + 1`` for anything after the blocks (DINOv2
    ``get_vit_lr_decay_rate``). Names are matched by dotted segment, so a prefix such as
    ``backbone.`` or ``student.`` does not matter."""
    parts = name.split(".")
    if any(p in _EMBEDDING_NAMES for p in parts):
        return 0
    for i, p in enumerate(parts[:-1]):
        if p == "blocks" and parts[i + 1].isdigit():
            return int(parts[i + 1]) + 1
    return num_layers + 1


def layer_decay_lr_mult(name: str, num_layers: int, decay: float,
                        patch_embed_lr_mult: float = 1.0) -> float:
    """$m = \\text{decay}^{L + 1 - \\text{layer\\_id}}$, times ``patch_embed_lr_mult`` for the
    patch embedding (DINOv2: decay 0.9, patch_embed x0.2). Block ``i`` gets ``decay**(L - i)``;
    ``patch_embed`` gets ``decay**(L + 1) * patch_embed_lr_mult``; heads get 1."""
    mult = float(decay) ** (num_layers + 1 - layer_id(name, num_layers))
    if "patch_embed" in name.split("."):
        mult *= float(patch_embed_lr_mult)
    return mult


def _infer_num_layers(names: Iterable[str]) -> int:
    """1 + the largest ``blocks.{i}`` index among the names (0 when there are no blocks)."""
    depth = 0
    for name in names:
        parts = name.split(".")
        for i, p in enumerate(parts[:-1]):
            if p == "blocks" and parts[i + 1].isdigit():
                depth = max(depth, int(parts[i + 1]) + 1)
    return depth


def param_groups(model: Any, weight_decay: float,
                 no_decay: Iterable[str] = DEFAULT_NO_DECAY,
                 layer_decay: float | None = None, num_layers: int | None = None,
                 patch_embed_lr_mult: float = 1.0) -> list[dict[str, Any]]:
    """Split the trainable parameters of ``model`` into optimiser groups.

    A parameter is *not* decayed when ``p.ndim <= 1`` or its name contains one of the
    ``no_decay`` substrings; parameters with the same (decay, lr_mult) share a group. Each
    group is ``{"params", "names", "weight_decay", "wd_mult", "lr_mult"}``; an undecayed
    group has ``weight_decay = 0`` *and* ``wd_mult = 0``, so a schedule that writes a new
    base weight decay into every group (``Optimizer.set_weight_decay``) keeps it undecayed.

    Args:
        model: a Module, or an iterable of (name, Tensor) pairs (e.g. student backbone and
            head together). Parameters with ``requires_grad=False`` are left out.
        weight_decay: the base weight decay of the decayed groups.
        no_decay: name substrings excluded from decay (``()`` = DINO v1's rule).
        layer_decay: DINOv2 layer-wise lr decay rate (e.g. 0.9); None for no decay.
        num_layers: number of blocks L; inferred from the ``blocks.{i}`` names when None.
        patch_embed_lr_mult: extra lr multiplier of ``patch_embed`` (DINOv2: 0.2).

    Shapes: n/a (groups hold the parameters themselves). The result is checked to cover
    every trainable parameter exactly once (``check_param_groups``).
    """
    pairs = [(n, p) for n, p in _named_parameters(model) if p.requires_grad]
    no_decay = tuple(no_decay)
    if num_layers is None:
        num_layers = _infer_num_layers(n for n, _ in pairs)
    groups: dict[tuple[bool, float], dict[str, Any]] = {}
    for name, p in pairs:
        decays = not (p.ndim <= 1 or any(s in name for s in no_decay))
        if layer_decay is None:
            lr_mult = patch_embed_lr_mult if "patch_embed" in name.split(".") else 1.0
        else:
            lr_mult = layer_decay_lr_mult(name, num_layers, layer_decay, patch_embed_lr_mult)
        key = (decays, float(lr_mult))
        if key not in groups:
            groups[key] = {
                "params": [], "names": [],
                "weight_decay": float(weight_decay) if decays else 0.0,
                "wd_mult": 1.0 if decays else 0.0,
                "lr_mult": float(lr_mult),
            }
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    out = list(groups.values())
    check_param_groups(pairs, out)
    return out


def check_param_groups(model: Any, groups: list[dict[str, Any]]) -> None:
    """Raise ValueError unless ``groups`` hold every trainable parameter of ``model`` exactly
    once and nothing else; the message names the missing, duplicated and foreign parameters.

    ``model`` is a Module or an iterable of (name, Tensor) pairs; parameters with
    ``requires_grad=False`` need not be covered (and may not appear)."""
    pairs = [(n, p) for n, p in _named_parameters(model) if p.requires_grad]
    name_of = {id(p): n for n, p in pairs}
    count: dict[int, int] = {}
    foreign: list[str] = []
    for gi, g in enumerate(groups):
        for p in g["params"]:
            count[id(p)] = count.get(id(p), 0) + 1
            if id(p) not in name_of:
                foreign.append(f"group {gi}: {p.name or 'tensor'} of shape {tuple(p.shape)}")
    missing = [n for n, p in pairs if id(p) not in count]
    duplicated = [f"{n} (x{count[id(p)]})" for n, p in pairs if count.get(id(p), 0) > 1]
    if missing or duplicated or foreign:
        lines = ["check_param_groups: the groups must hold every trainable parameter once:"]
        if missing:
            lines.append(f"  missing ({len(missing)}): {', '.join(missing)}")
        if duplicated:
            lines.append(f"  duplicated ({len(duplicated)}): {', '.join(duplicated)}")
        if foreign:
            lines.append(f"  not trainable parameters of the model ({len(foreign)}): "
                         + "; ".join(foreign))
        raise ValueError("\n".join(lines))
