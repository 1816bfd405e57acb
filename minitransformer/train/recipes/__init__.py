"""The recipes, by name: ``make_recipe("dino", preset="cpu", device="cpu")``.

=============  ==========================================================  ====================
recipe         what it trains                                              headline metric
=============  ==========================================================  ====================
supervised     ViT classifier on the digits                                test accuracy
mlm            BERT-style encoder on CPython's pydoc text                  masked-token accuracy
mim            ViT with a mask token, MAE pixel or BEiT token targets      probe accuracy
clip           image and text towers on shapes + captions                  zero-shot accuracy
dino           student/teacher ViT, multi-crop self-distillation           k-NN acc., attn IoU
dinov2         DINO + iBOT masked-patch loss + KoLeo on shapes             patch-seg mIoU
=============  ==========================================================  ====================
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import PRESET_NAMES, BaseConfig, BaseRecipe

__all__ = ["PRESET_NAMES", "RECIPES", "BaseConfig", "BaseRecipe", "make_recipe",
           "recipe_class", "recipe_from_config"]

# name -> "module:Class"; imported on first use so that one recipe's imports never slow
# down (or break) another's.
RECIPES: dict[str, str] = {
    "supervised": "supervised:SupervisedRecipe",
    "mlm": "mlm:MLMRecipe",
    "mim": "mim:MIMRecipe",
    "clip": "clip:CLIPRecipe",
    "dino": "dino:DINORecipe",
    "dinov2": "dinov2:DINOv2Recipe",
}


def recipe_class(name: str) -> type[BaseRecipe]:
    """The recipe class registered under ``name``."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    module, cls = RECIPES[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def make_recipe(name: str, preset: str = "cpu", device: str | None = None,
                seed: int | None = None, **overrides: Any) -> BaseRecipe:
    """Build recipe ``name`` from ``preset`` (tiny | cpu | gpu) with settings overridden.

    ``seed`` is the ``seed`` setting (``make_recipe(n, seed=3)`` is ``make_recipe(n,
    **{"seed": 3})``). Every setting is checked before any data or weight is made
    (``BaseRecipe.make_config``): an unknown preset or setting, a wrong type or a value outside
    its range raises ``ValueError`` naming the setting, the value and what is allowed."""
    return recipe_class(name)(preset=preset, device=device, seed=seed, **overrides)


def recipe_from_config(name: str, config: dict[str, Any], device: str | None = None,
                       **overrides: Any) -> BaseRecipe:
    """Rebuild a run from the ``config`` saved in its checkpoint (``BaseRecipe.config()``)."""
    cfg = dict(config)
    preset = cfg.pop("preset", "cpu")
    cfg.update(overrides)
    return make_recipe(name, preset=preset, device=device, **cfg)
