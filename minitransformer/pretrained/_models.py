"""A shipped model's architecture as JSON (in its card), and the model rebuilt from it.

``describe(module)`` writes the constructor arguments of the module a checkpoint holds;
``build(spec)`` makes that module again, with the same parameter names and shapes, without
building the recipe's data (``load`` must take well under a second). The weights it is built
with are overwritten by the checkpoint.

    {"class": "VisionTransformer", "vit": {ViTConfig fields}}
    {"class": "CLIP", "vision": {ViTConfig}, "text": {TextConfig}, "embed_dim": E}
    {"class": "MIMModel", "vit": {ViTConfig}, "head": {"class": "MIMPixelHead",
                                                       "dim": D, "patch_size": P, "in_chans": C}}
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..models import CLIP, MIMPixelHead, MIMTokenHead, TextConfig, VisionTransformer, ViTConfig
from ..nn import Module

__all__ = ["build", "describe"]

KINDS = ("VisionTransformer", "CLIP", "MIMModel")


def _mim_model_class() -> type:
    # The MIM recipe's model (backbone + per-patch head); imported on first use, so that
    # reading a card or loading a ViT never imports the training package.
    from ..train.recipes.mim import MIMModel

    return MIMModel


def describe(module: Module) -> dict[str, Any]:
    """The JSON-able constructor arguments of ``module`` (a ``VisionTransformer``, a ``CLIP``
    or the MIM recipe's ``MIMModel``), as ``build`` reads them."""
    if isinstance(module, VisionTransformer):
        return {"class": "VisionTransformer", "vit": dataclasses.asdict(module.cfg)}
    if isinstance(module, CLIP):
        return {"class": "CLIP", "vision": dataclasses.asdict(module.visual.cfg),
                "text": dataclasses.asdict(module.text.cfg), "embed_dim": int(module.embed_dim)}
    if isinstance(module, _mim_model_class()):
        head = module.head
        if isinstance(head, MIMPixelHead):
            h = {"class": "MIMPixelHead", "dim": int(module.backbone.cfg.dim),
                 "patch_size": int(head.patch_size), "in_chans": int(head.in_chans)}
        elif isinstance(head, MIMTokenHead):
            num_tokens = int(head.lm_head.weight.shape[1])  # Linear weight (in, out) = (D, K)
            h = {"class": "MIMTokenHead", "dim": int(module.backbone.cfg.dim),
                 "num_tokens": num_tokens}
        else:
            raise TypeError(f"describe: unknown MIM head {type(head).__name__}")
        return {"class": "MIMModel", "vit": dataclasses.asdict(module.backbone.cfg), "head": h}
    raise TypeError(f"describe: no architecture description for a {type(module).__name__}; "
                    f"known: {', '.join(KINDS)}")


def build(spec: dict[str, Any]) -> Module:
    """The module ``spec`` describes (``describe``'s output), freshly initialised."""
    kind = spec.get("class")
    if kind == "VisionTransformer":
        return VisionTransformer(ViTConfig(**spec["vit"]))
    if kind == "CLIP":
        return CLIP(ViTConfig(**spec["vision"]), TextConfig(**spec["text"]),
                    int(spec["embed_dim"]))
    if kind == "MIMModel":
        h = dict(spec["head"])
        head_kind = h.pop("class")
        heads = {"MIMPixelHead": MIMPixelHead, "MIMTokenHead": MIMTokenHead}
        if head_kind not in heads:
            raise ValueError(f"build: unknown MIM head {head_kind!r}; known: {sorted(heads)}")
        return _mim_model_class()(ViTConfig(**spec["vit"]), heads[head_kind](**h))
    raise ValueError(f"build: unknown model class {kind!r}; known: {', '.join(KINDS)}")
