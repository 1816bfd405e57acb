"""Small trained checkpoints shipped with the package: one model per method, each with its
model card (what made it, and its headline metric beside the same model at random init).

    from minitransformer import pretrained
    pretrained.names()                      # ["supervised-digits", "clip-shapes", ...]
    card = pretrained.card("dino-shapes")   # reads the card only, no weights
    vit = pretrained.load("dino-shapes")    # the DINO teacher's ViT, eval mode, vit.card
    r = pretrained.recipe("clip-shapes")    # the recipe (data, tokenizer, prompts), trained
    r.evaluate()                            # the metrics of the card, recomputed

=================  ===========  ===========================================  ==================
name               recipe       ``load`` returns                             headline metric
=================  ===========  ===========================================  ==================
supervised-digits  supervised   ``VisionTransformer`` with its 10-class head test_acc
clip-shapes        clip         ``models.CLIP`` (both towers, logit scale)   zero_shot_shape
dino-shapes        dino         the teacher's ``VisionTransformer`` backbone attn_iou_best_head
dinov2-shapes      dinov2       the teacher's ``VisionTransformer`` backbone patch_seg_miou
mae-shapes         mim          the recipe's ``MIMModel`` (backbone + head)  test_loss
=================  ===========  ===========================================  ==================

mae-shapes' headline is its masked-pixel loss on test images, the objective it was trained on
(lower is better): at this size its mean-pooled features are no better than random init for a
linear probe of the shape (0.364 against 0.382 on the card), so the card does not claim they are.

Each checkpoint is a pair in ``checkpoints/``, written by ``bench/make_pretrained.py`` (which
also remakes them) in the format of ``io.save_checkpoint``:

- ``<name>.safetensors``: only the parameters and buffers of the module ``load`` returns,
  float32 as trained (no optimiser state, no student, no DINO head or centers: DINO is
  evaluated on its teacher's backbone, Caron et al. 2021, sec. 3.1 and appendix);
- ``<name>.json``: the sidecar with the file's SHA-256 and size, and the card as metadata:
  recipe, preset, seed, every setting, the commands, the commit, the date, the metrics
  trained and at random init (the same seed), train time, library versions.

``load`` checks the file against its card (size, SHA-256), parses it and loads it strictly;
any failure is an error naming the file, what is wrong and how to remake it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import io
from ..nn import Module, StateDictError
from . import _models

__all__ = ["CHECKPOINTS", "Card", "Checkpoint", "card", "checkpoint_dir", "load", "names",
           "recipe"]


@dataclass(frozen=True)
class Checkpoint:
    """What a shipped checkpoint is: the run it comes from (``bench/outcomes.py``'s outcome
    name), its recipe, the module of the recipe it holds (an attribute path) and the
    metric it is judged by."""

    outcome: str
    recipe: str
    module: str
    metric: str
    description: str


CHECKPOINTS: dict[str, Checkpoint] = {
    "supervised-digits": Checkpoint(
        "supervised", "supervised", "model", "test_acc",
        "ViT classifier (10-class head) trained with labels on scikit-learn's 8x8 digits"),
    "clip-shapes": Checkpoint(
        "clip", "clip", "model", "zero_shot_shape",
        "CLIP image and text towers trained on the procedural shapes and their captions"),
    "dino-shapes": Checkpoint(
        "dino-shapes", "dino", "teacher.backbone", "attn_iou_best_head",
        "DINO's teacher ViT backbone, self-distilled on the procedural shapes"),
    "dinov2-shapes": Checkpoint(
        "dinov2", "dinov2", "teacher.backbone", "patch_seg_miou",
        "DINOv2's teacher ViT backbone (DINO + iBOT + KoLeo) on the procedural shapes"),
    "mae-shapes": Checkpoint(
        "mim", "mim", "model", "test_loss",
        "ViT with a mask token and a pixel head trained with MAE's masked-pixel loss on the "
        "procedural shapes"),
}


def checkpoint_dir() -> Path:
    """The folder of the shipped files: ``minitransformer/pretrained/checkpoints``."""
    return Path(__file__).resolve().parent / "checkpoints"


def names() -> list[str]:
    """The names of the shipped checkpoints, in the order of the table above."""
    return list(CHECKPOINTS)


@dataclass(frozen=True)
class Card:
    """A checkpoint's model card (``<name>.json``), read without the weights.

    ``value`` is ``metrics[metric]`` after training and ``baseline`` the same metric of the
    same model at random init (same seed, same data); ``metrics`` and ``baselines`` hold every
    metric of the recipe's ``evaluate()``. ``command`` is the training command and
    ``export_command`` the one that wrote the pair; ``settings`` with ``preset`` rebuild the
    recipe: ``make_recipe(recipe, preset=preset, **settings)``.
    """

    name: str
    description: str
    recipe: str
    preset: str
    seed: int
    settings: dict[str, Any]
    module: str  # the attribute path of the shipped module in the recipe ("teacher.backbone")
    model: dict[str, Any]  # its architecture (``_models.describe``)
    metric: str
    value: float
    baseline: float
    metrics: dict[str, float]
    baselines: dict[str, float]
    bars: list[dict[str, Any]]  # bench/outcomes.py's bars: {"bar": text, "passed": bool}
    steps: int
    train_seconds: float
    train_cpu_seconds: float | None
    command: str
    export_command: str
    commit: str
    date: str  # when training finished (UTC, ISO 8601)
    exported: str  # when the pair was written (UTC, ISO 8601)
    versions: dict[str, str]
    sha256: str  # of ``file``, from the sidecar
    num_bytes: int
    file: Path = field(compare=False)  # the ``.safetensors`` file
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # unknown card fields

    @property
    def lower_is_better(self) -> bool:
        """True for a loss (mae-shapes' masked-pixel test loss), False for an accuracy/IoU."""
        return "loss" in self.metric

    def __str__(self) -> str:
        cpu = ("" if self.train_cpu_seconds is None
               else f" ({self.train_cpu_seconds:.0f} s CPU)")
        lower = ", lower is better" if self.lower_is_better else ""
        return (f"{self.name}: {self.metric} {self.value:.3f} (random init {self.baseline:.3f}"
                f"{lower});"
                f" {self.recipe} recipe, preset {self.preset}, seed {self.seed}, {self.steps} "
                f"steps in {self.train_seconds:.0f} s wall{cpu}, commit {self.commit[:7]}")


_CARD_FIELDS = {f.name for f in dataclasses.fields(Card)} - {"file", "extra", "sha256",
                                                             "num_bytes"}


def _check_name(name: str) -> Checkpoint:
    if name not in CHECKPOINTS:
        raise ValueError(f"pretrained: unknown checkpoint {name!r}; known: {', '.join(names())}")
    return CHECKPOINTS[name]


def _remake(name: str) -> str:
    return (f"remake it with `python bench/make_pretrained.py {name}` from a source checkout "
            "(or reinstall the package to get the shipped file back)")


def _paths(name: str, directory: str | Path | None) -> tuple[Path, Path]:
    d = Path(directory) if directory is not None else checkpoint_dir()
    weights = d / f"{name}.safetensors"
    return weights, io.sidecar_path(weights)


def card(name: str, *, directory: str | Path | None = None) -> Card:
    """The model card of checkpoint ``name`` (reads ``<name>.json`` only).

    ``directory`` replaces the shipped folder (``checkpoint_dir()``), e.g. for files remade
    elsewhere. Raises FileNotFoundError when the card is missing and ``io.CheckpointError``
    when it is not a valid card.
    """
    _check_name(name)
    weights, side = _paths(name, directory)
    if not side.exists():
        raise FileNotFoundError(f"pretrained.card({name!r}): the model card {side} is missing; "
                                + _remake(name))
    try:
        record = json.loads(side.read_text(encoding="utf-8"))
        meta = dict(record["metadata"])
        missing = sorted(_CARD_FIELDS - set(meta))
        if missing:
            raise KeyError(f"fields {missing}")
        known = {k: meta.pop(k) for k in _CARD_FIELDS}
        return Card(**known, sha256=str(record["sha256"]), num_bytes=int(record["num_bytes"]),
                    file=weights, extra=meta)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise io.CheckpointError(f"pretrained.card({name!r}): {side} is not a valid model card "
                                 f"({type(e).__name__}: {e}); " + _remake(name)) from e


def _read_arrays(c: Card) -> dict[str, Any]:
    """The checkpoint's arrays, after checking the file's size and SHA-256 against the card;
    every failure names the file and the way to remake it."""
    try:
        arrays, _ = io.load_checkpoint(c.file)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"pretrained.load({c.name!r}): the weights file {c.file} is "
                                f"missing ({e}); " + _remake(c.name)) from e
    except io.CheckpointError as e:
        raise io.CheckpointError(f"pretrained.load({c.name!r}): {e}; " + _remake(c.name)) from e
    return arrays


def _load_into(module: Module, arrays: dict[str, Any], c: Card) -> None:
    """``module.load_state_dict(arrays, strict=True)``; a mismatch is a CheckpointError
    naming the file, the module and the keys."""
    try:
        module.load_state_dict(arrays, strict=True)
    except StateDictError as e:
        raise io.CheckpointError(
            f"pretrained.load({c.name!r}): the arrays in {c.file} do not match the "
            f"{type(module).__name__} its card describes ({c.module} of the {c.recipe} recipe)"
            f":\n{e}\n" + _remake(c.name)) from e


def load(name: str, device: Any = None, *, directory: str | Path | None = None) -> Module:
    """The trained model of checkpoint ``name``, in eval mode on ``device`` (default the
    CPU), with its card as ``.card``.

    supervised-digits: ``VisionTransformer`` (logits (B, 10) for images (B, 1, 8, 8));
    clip-shapes: ``models.CLIP`` (images (B, 3, 32, 32), caption tokens (B, 10): use
    ``recipe(name).tokenizer``); dino-shapes / dinov2-shapes: the teacher's
    ``VisionTransformer`` (``forward_features``, ``get_last_selfattention`` on (B, 3, 32, 32));
    mae-shapes: the ``MIMModel`` (``backbone`` with a mask token, ``head`` to 4x4x3 pixels).

    Building the model draws its initial weights from the default generator (as any model
    construction does) before the checkpoint overwrites them. Raises FileNotFoundError for a
    missing file and ``io.CheckpointError`` for a file that is truncated, corrupt, differs
    from its card's SHA-256, or whose keys or shapes do not match the model.
    """
    c = card(name, directory=directory)
    arrays = _read_arrays(c)
    model = _models.build(c.model)
    _load_into(model, arrays, c)
    model.to(device if device is not None else "cpu")
    model.eval()
    model.card = c  # a plain attribute (neither a parameter nor a module)
    return model


def _submodule(obj: Any, path: str) -> Module:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def recipe(name: str, device: Any = None, trained: bool = True, *,
           directory: str | Path | None = None) -> Any:
    """The recipe of checkpoint ``name`` (``make_recipe(card.recipe, card.preset,
    **card.settings)``: the same data, seed and models), with the shipped weights loaded into
    its module ``card.module``, in eval mode; ``trained=False`` leaves it at random init
    (the card's ``baselines``). The card is ``recipe.card``.

    It gives the data (``recipe.data``, or ``train_set`` / ``test_set`` for CLIP), CLIP's
    ``tokenizer``, ``captions`` and ``prompt_tokens``, and ``recipe.evaluate()``, which
    recomputes the card's metrics. Only the shipped module is trained: for DINO and DINOv2
    the student, the heads and the centers stay at their initialisation, and no recipe has
    its optimiser state, so this is for evaluation and inspection, not to resume training.
    Building the recipe builds its data (seconds for the shapes).
    """
    from ..train import recipe_from_config

    c = card(name, directory=directory)
    arrays = _read_arrays(c) if trained else None
    r = recipe_from_config(c.recipe, {"preset": c.preset, **c.settings}, device=device)
    target = _submodule(r, c.module)
    if arrays is not None:
        _load_into(target, arrays, c)
    target.eval()
    r.card = c
    return r
