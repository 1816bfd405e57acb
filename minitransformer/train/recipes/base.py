"""What every recipe shares: presets, an explicit random generator, schedules, the optimiser
step with its guards, and the checkpointable state.

A recipe is built from a preset (``tiny`` for CI, ``cpu`` for a run of minutes on two cores,
``gpu`` for a larger run) plus overrides::

    recipe = SupervisedRecipe(preset="cpu", device="cpu", seed=0, steps=500)

Every random draw of the data pipeline (batch indices, augmentations, masks) comes from
``self.rng``, one ``np.random.Generator`` whose state is saved in the checkpoint's JSON
sidecar, and models are initialised right after ``mt.manual_seed(seed)``; so a run is a
function of its config, and a resumed run reproduces the losses of an uninterrupted one.

Every setting is checked when the recipe is built, before any data or weight is allocated
(``BaseRecipe.make_config``): its type (``_coerce``), its range (each Config's ``RANGES``:
``batch_size >= 1``, ``steps >= 0``, ``lr > 0``, probabilities and momenta in [0, 1], ...) and
the rules that tie settings together (``checks()``: heads divide the width, the patch size
divides the image). Sizes have a stated upper limit (``LIMITS``: e.g. ``dim`` up to 4096,
``depth`` up to 64, generated images up to 200,000 per split), so ``dim=60000`` is refused with
the setting, its value and the allowed range instead of exhausting the memory.

**Data parallelism** (``mpiexec -n W``, ``minitransformer.distributed``): ``batch_size`` stays
the *global* batch. Every rank holds the same generator state and draws the same global
indices; rank r keeps the contiguous slice ``[r B/W, (r+1) B/W)`` of them
(``draw_shard``), so the data order is the one-process order. The augmentations and masks
of that slice are drawn by ``ShardedGenerator``: every draw whose first axis is the local
batch is drawn for the global batch from the shared generator and sliced, so sample i of the
global batch gets the same random numbers on whichever rank it lands (the views of one process,
whose results are unchanged: the wrapper is used only when W > 1). ``optimizer_step``
averages the gradients over ranks (``distributed.average_gradients``, bucketed) before
clipping, so every rank takes the same step; the loop broadcasts rank 0's modules first
(``broadcast_state``). Recipes whose loss over the global batch is not the mean of the
ranks' losses refuse W > 1 (``DISTRIBUTED_UNSUPPORTED``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ... import backend, distributed, io
from ...autograd import Tensor, no_grad
from ...nn import Module
from ...optim import AdamW, clip_grad_norm_, clip_grad_per_param_, param_groups
from ...optim.schedules import cosine_schedule

__all__ = ["LIMITS", "PRESET_NAMES", "BaseConfig", "BaseRecipe", "Choice", "DistributedProblem",
           "Pair", "Range", "ShardedGenerator", "batched", "check_divides", "check_heads",
           "check_ids", "config_limits", "to_device", "validate_config"]

PRESET_NAMES = ("tiny", "cpu", "gpu")

# The stated upper limits of the recipes' sizes, checked when a recipe is built (before any
# data or weight is allocated): generous for these datasets, and far below what would exhaust a
# machine's memory by mistake (``dim=60000`` would ask for tens of GiB).
LIMITS: dict[str, int] = {
    "steps": 10_000_000,  # optimiser steps
    "batch_size": 65_536,  # examples per step
    "dim": 4096,  # model widths (embedding, text tower, projection, head bottleneck)
    "depth": 64,  # transformer blocks
    "heads": 128,  # attention heads
    "hidden": 16_384,  # head MLP widths
    "prototypes": 65_536,  # DINO's K (the paper's 65,536)
    "examples": 200_000,  # generated images per split (12 KiB each at 32x32 RGB)
    "seq_len": 2048,  # tokens per sequence
    "vocab": 1_000_000,  # tokenizer vocabulary
    "crops": 32,  # DINO's local crops
    "seed": 2**32 - 1,  # NumPy and CuPy seeds
}


def _fmt(x: float | None) -> str:
    """A bound as a reader writes it: 10000000, 0.5."""
    if x is not None and float(x).is_integer():
        return str(int(x))
    return repr(x)


@dataclass(frozen=True)
class Range:
    """A number between ``lo`` and ``hi`` (None: unbounded; ``*_open``: the bound excluded).
    Floats must be finite; ``integer`` asks for an int."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        lo, hi = _fmt(self.lo), _fmt(self.hi)
        if self.lo is not None and self.hi is not None:
            return (f"{kind} in {'(' if self.lo_open else '['}{lo}, "
                    f"{hi}{')' if self.hi_open else ']'}")
        if self.lo is not None:
            return f"{kind} {'>' if self.lo_open else '>='} {lo}"
        if self.hi is not None:
            return f"{kind} {'<' if self.hi_open else '<='} {hi}"
        return kind

    def ok(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return False
        if self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)):
            return False
        return True

    def check(self, name: str, value: Any) -> str | None:
        return None if self.ok(value) else f"{name}={value!r} (allowed: {self.describe()})"


@dataclass(frozen=True)
class Pair:
    """Two numbers, each in ``each``; with ``ordered`` a (low, high) range: low <= high."""

    each: Range
    ordered: bool = True

    def describe(self) -> str:
        if self.ordered:
            return f"a pair [low, high] with low <= high, each {self.each.describe()}"
        return f"a pair of numbers, each {self.each.describe()}"

    def check(self, name: str, value: Any) -> str | None:
        good = (isinstance(value, (tuple, list)) and len(value) == 2
                and all(self.each.ok(v) for v in value)
                and (not self.ordered or value[0] <= value[1]))
        return None if good else f"{name}={value!r} (allowed: {self.describe()})"


@dataclass(frozen=True)
class Choice:
    """One of ``values``."""

    values: tuple[Any, ...]

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)

    def check(self, name: str, value: Any) -> str | None:
        if value in self.values:
            return None
        return f"unknown {name} {value!r} (allowed: {self.describe()})"


def _ints(lo: int, hi: int) -> Range:
    return Range(lo, hi, integer=True)


POSITIVE = Range(0, None, lo_open=True)  # a finite number > 0
NON_NEGATIVE = Range(0, None)  # a finite number >= 0
UNIT = Range(0, 1)  # probabilities, momenta, ratios
STEPS = _ints(0, LIMITS["steps"])
DIM = _ints(1, LIMITS["dim"])
DEPTH = _ints(1, LIMITS["depth"])
HEADS = _ints(1, LIMITS["heads"])
EXAMPLES = _ints(1, LIMITS["examples"])
MLP_RATIO = Range(0, 64, lo_open=True)
IMAGE_SIZES = {"digits": 8, "shapes": 32}  # the datasets' image sizes (pixels per side)
DATASETS = Choice(tuple(IMAGE_SIZES))


@dataclass
class BaseConfig:
    """Settings shared by every recipe (each recipe's config adds its own)."""

    steps: int = 100  # optimiser steps; also the horizon of every schedule
    batch_size: int = 64  # images or sequences per step
    lr: float = 1e-3  # peak learning rate (after warm-up)
    min_lr: float = 1e-6  # end of the cosine decay
    warmup_steps: int = 0  # linear warm-up from 0 (DINO: 10 epochs)
    weight_decay: float = 0.05  # AdamW decoupled decay on matrices (not biases, norms, tokens)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    clip_grad: float = 0.0  # global-norm clip (0 = off)
    seed: int = 0  # seeds the model init and the data generator
    fixed_batch: bool = False  # reuse one batch and one set of augmentations (overfit test)
    eval_size: int = 0  # examples used by evaluate (0 = all of the evaluation set)

    # The allowed values of each setting (a subclass's ``RANGES`` adds to its bases'; every
    # setting that is not a bool has one: a test checks it). ``checks()`` adds the rules that
    # tie settings together.
    RANGES: ClassVar[dict[str, Any]] = {
        "steps": STEPS,
        "batch_size": _ints(1, LIMITS["batch_size"]),
        "lr": POSITIVE,
        "min_lr": NON_NEGATIVE,
        "warmup_steps": STEPS,
        "weight_decay": NON_NEGATIVE,
        # each beta below 1: 1 would divide by zero in the bias correction
        "betas": Pair(Range(0, 1, hi_open=True), ordered=False),
        "clip_grad": NON_NEGATIVE,
        "seed": _ints(0, LIMITS["seed"]),
        "eval_size": _ints(0, LIMITS["examples"]),
    }

    def checks(self) -> list[str]:
        """Problems that involve several settings (each a phrase naming them and the values);
        recipes extend this."""
        return []


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
_ARTICLE = {int: "an"}


def config_limits(config_cls: type) -> dict[str, Any]:
    """Each setting's allowed values: the ``RANGES`` of ``config_cls`` and of its bases."""
    out: dict[str, Any] = {}
    for klass in reversed(config_cls.__mro__):
        out.update(klass.__dict__.get("RANGES", {}))
    return out


def validate_config(cfg: Any, owner: str = "") -> None:
    """Raise ``ValueError`` naming every setting of ``cfg`` outside its allowed values (the
    setting, the value and the range), and every broken rule between settings."""
    limits = config_limits(type(cfg))
    problems = []
    for f in dataclasses.fields(cfg):
        rule = limits.get(f.name)
        if rule is not None:
            problem = rule.check(f.name, getattr(cfg, f.name))
            if problem:
                problems.append(problem)
    if not problems:  # the rules between settings assume each one is in range
        problems = list(cfg.checks())
    if problems:
        prefix = f"{owner}: " if owner else ""
        raise ValueError(f"{prefix}invalid setting(s): " + "; ".join(problems))


def check_divides(name: str, value: int, size_name: str, size: int) -> list[str]:
    """``value`` must divide ``size`` (e.g. the patch size the image size)."""
    if size % value:
        return [f"{name}={value} does not divide {size_name}={size}"]
    return []


def check_heads(dim_name: str, dim: int, heads_name: str, heads: int) -> list[str]:
    if dim % heads:
        return [f"{heads_name}={heads} does not divide {dim_name}={dim} (each head gets "
                f"{dim_name} / {heads_name} channels)"]
    return []


def _coerce(owner: str, name: str, value: Any, default: Any) -> Any:
    """A setting's value in the type of its default: ``"False"`` from the command line is
    False (not a truthy string), ``3`` for a float is 3.0, a JSON list for a tuple a tuple.
    Anything that does not fit raises an error naming the setting, the value and the type."""
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is tuple:
        if isinstance(value, (list, tuple)):  # JSON (a checkpoint's config) has lists
            return tuple(value)
        article = "a"
        raise ValueError(f"{owner}: setting {name}={value!r} is not {article} tuple (default "
                         f"{default!r}; on the command line write a JSON list: "
                         f"{name}={json.dumps(list(default))})")
    elif kind is str:
        if isinstance(value, str):
            return value
    else:
        return value
    article = _ARTICLE.get(kind, "a")
    raise ValueError(f"{owner}: setting {name}={value!r} is not {article} {kind.__name__} "
                     f"(default {default!r})")


class BaseRecipe:
    """Base class of the recipes: subclasses set ``name``, ``Config``, ``PRESETS`` and write
    ``build`` (data, models, optimiser), ``train_step`` and ``evaluate``.

    ``modules`` maps a name to each Module whose parameters and buffers are part of the run's
    state (student, teacher, centers, ...); the optimiser's moments, the generator's state and
    ``extra_state()`` complete it.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = BaseConfig
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    description: ClassVar[str] = ""
    # None: the recipe trains over W > 1 ranks exactly as one process on the global batch;
    # else why it does not yet (the error a W > 1 launch gets).
    DISTRIBUTED_UNSUPPORTED: ClassVar[str | None] = None

    def __init__(self, preset: str = "cpu", device: str | None = None, seed: int | None = None,
                 **overrides: Any):
        self.cfg = self.make_config(preset, seed=seed, **overrides)  # validated: nothing built
        self.check_distributed()
        self.preset = preset
        self.device = backend.as_device(device if device is not None else "cpu")
        self.rng = np.random.default_rng(self.cfg.seed)
        self.modules: dict[str, Module] = {}
        self.optimizer: Any = None
        self._fixed: Any = None  # the batch reused with fixed_batch
        backend.manual_seed(self.cfg.seed)  # model init draws from the seeded default generator
        self.build()
        for m in self.modules.values():
            m.to(self.device)
        if distributed.is_distributed():
            self.prepare_distributed()
            n = self.train_examples()
            if n is not None:  # else checked at the first draw (draw_shard)
                self.check_distributed_batch(n)
        self.validate_data()

    def check_distributed(self) -> None:
        """Raise ``DistributedProblem`` with ``distributed_problem``'s message, if any."""
        problem = self.distributed_problem(self.cfg)
        if problem:
            raise DistributedProblem(problem)

    def train_examples(self) -> int | None:
        """How many training examples each step's batch is drawn from (``draw_shard``'s
        ``n``), so that a global batch the ranks cannot split is refused before any step:
        the image recipes' ``self.data.x_train`` by default; None when the recipe has no such
        set (then the first ``draw_shard`` checks). Recipes drawing from another set override
        it."""
        data = getattr(self, "data", None)
        x = getattr(data, "x_train", None)
        return None if x is None else len(x)

    def check_distributed_batch(self, n: int) -> None:
        """Over W > 1 ranks, raise ``DistributedProblem`` when the batch a step draws from
        ``n`` examples, $\\min(B, n)$ (``draw_indices`` draws without replacement), is not a
        multiple of W: ``batch_size`` larger than the data set passes the up-front check on
        ``batch_size % W`` but the step's global batch is then ``n``. Nothing in one process."""
        if not distributed.is_distributed():
            return
        w, b = distributed.world_size(), self.batch_size
        if min(b, n) % w == 0:
            return
        if b <= n:  # (distributed_problem refuses it first)
            raise DistributedProblem(self.distributed_problem(self.cfg) or
                                     f"{self.name}: batch_size={b} is not a multiple of {w}")
        fit = n // w * w
        raise DistributedProblem(
            f"{self.name}: batch_size={b} is larger than the {n} training examples, so every "
            f"step's global batch is all {n} of them, which {w} ranks cannot split into equal "
            f"shards; set batch_size to at most {n} and a multiple of {w}"
            f"{f' (e.g. batch_size={fit})' if fit else ''}")

    @classmethod
    def distributed_problem(cls, cfg: Any) -> str | None:
        """Over W > 1 ranks, why ``cfg`` cannot train: a recipe that cannot train as one
        process yet (``DISTRIBUTED_UNSUPPORTED``), or a global ``batch_size`` that W does not
        divide (equal shards: the mean of the ranks' mean losses is then the global mean).
        None when it can, and always in one process."""
        if not distributed.is_distributed():
            return None
        w = distributed.world_size()
        if cls.DISTRIBUTED_UNSUPPORTED:
            return (f"{cls.name}: data-parallel training over {w} ranks is not supported "
                    f"yet: {cls.DISTRIBUTED_UNSUPPORTED}")
        if cfg.batch_size % w:
            return (f"{cls.name}: batch_size={cfg.batch_size} (the global batch) must be a "
                    f"multiple of the number of ranks, {w}, so that every rank gets an equal "
                    f"shard (e.g. batch_size={(cfg.batch_size // w + 1) * w})")
        return None

    def prepare_distributed(self) -> None:
        """Called after ``build`` when W > 1, before the loop broadcasts rank 0's state:
        make the models' cross-sample parts global (DINO: synchronised BatchNorm). Nothing by
        default."""

    def broadcast_state(self) -> None:
        """Every module's parameters and buffers from rank 0 (torch DDP's broadcast when it
        wraps a model): the ranks start from one model even if their initialisations
        differed. One broadcast per array; nothing in a single process."""
        if not distributed.is_distributed():
            return
        for m in self.modules.values():
            state = m.state_dict()  # host copies, parameters then buffers
            m.load_state_dict({k: distributed.broadcast(v) for k, v in state.items()})

    @classmethod
    def make_config(cls, preset: str = "cpu", seed: int | None = None,
                    **overrides: Any) -> Any:
        """The validated settings ``preset`` + ``overrides`` give (``seed``, when not None, is
        the ``seed`` setting), without building anything: an unknown preset or setting, a value
        of the wrong type or outside its range raises ``ValueError`` naming the setting, the
        value and what is allowed."""
        owner = cls.name or cls.__name__
        if preset not in cls.PRESETS:
            raise ValueError(f"{owner}: unknown preset {preset!r}; known: "
                             f"{', '.join(cls.PRESETS)}")
        fields = {f.name for f in dataclasses.fields(cls.Config)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"{owner}: unknown settings {unknown}; the {cls.name} recipe has "
                             f"{', '.join(sorted(fields))}")
        values = {**cls.PRESETS[preset], **overrides}
        if seed is not None:
            values["seed"] = seed
        for f in dataclasses.fields(cls.Config):
            if f.name in values and f.default is not dataclasses.MISSING:
                values[f.name] = _coerce(owner, f.name, values[f.name], f.default)
        cfg = cls.Config(**values)
        validate_config(cfg, owner)
        return cfg

    # ------------------------------------------------------------------ to override
    def build(self) -> None:
        """Make the data, the models (into ``self.modules``) and ``self.optimizer``."""
        raise NotImplementedError

    def train_step(self, step: int) -> dict[str, Any]:
        """One optimiser step; returns its metrics ("loss" at least) as device scalars or
        Python floats, without reading the device (the loop reads them once per logging
        interval)."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        raise NotImplementedError

    def validate_data(self) -> None:
        """Check, once and on the host, every value the training steps feed to an op that
        would otherwise check it per call (class labels, token ids): issue 14's "validation
        once per dataset, not per call". The steps then run inside
        ``F.use_data_checks(False)``, so that on a GPU no op reads its inputs back to the
        host. Raises ``ValueError`` naming the data and the bad values. Values a recipe makes
        itself in range (MLM's random replacement tokens, k-means codes, DINOv2's masked-row
        indices) need no check. Nothing to check by default."""

    def extra_state(self) -> dict[str, Any]:
        """JSON-able state beyond modules, optimiser and generator (none by default)."""
        return {}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        """Restore ``extra_state``."""

    # ------------------------------------------------------------------ the loop's protocol
    @property
    def steps(self) -> int:
        return int(self.cfg.steps)

    @property
    def batch_size(self) -> int:
        return int(self.cfg.batch_size)

    def config(self) -> dict[str, Any]:
        """The settings that rebuild this run: ``make_recipe(name, **config())``."""
        return {"preset": self.preset, **dataclasses.asdict(self.cfg)}

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Arrays: every module's ``state_dict`` under ``{module}.{param}`` and the optimiser's
        moments under ``optimizer.*``; metadata: the generator state, the optimiser's skeleton
        (step counts, hyper-parameters) and ``extra_state()``."""
        arrays: dict[str, Any] = {}
        for name, m in self.modules.items():
            for k, v in m.state_dict().items():
                arrays[f"{name}.{k}"] = v
        opt_arrays, opt_skeleton = io.flatten_state(self.optimizer.state_dict(), "optimizer")
        arrays.update(opt_arrays)
        meta = {
            "rng": self.rng.bit_generator.state,  # PCG64 state: plain ints, JSON-able
            "optimizer": opt_skeleton,
            "extra": self.extra_state(),
            "fixed_indices": None if self._fixed is None else self._fixed.tolist(),
        }
        return arrays, meta

    def load_state(self, arrays: dict[str, Any], metadata: dict[str, Any]) -> None:
        """Restore what ``state`` returned (strictly: every module key must be present)."""
        for name, m in self.modules.items():
            prefix = name + "."
            m.load_state_dict({k[len(prefix):]: v for k, v in arrays.items()
                               if k.startswith(prefix)}, strict=True)
        self.optimizer.load_state_dict(io.unflatten_state(metadata["optimizer"], arrays))
        self.rng.bit_generator.state = metadata["rng"]
        self.load_extra_state(metadata.get("extra", {}))
        fixed = metadata.get("fixed_indices")
        self._fixed = None if fixed is None else np.asarray(fixed, dtype=np.int64)

    # ------------------------------------------------------------------ helpers
    def make_optimizer(self, model: Module | list[tuple[str, Any]],
                       no_decay: tuple[str, ...] | None = None, **group_kwargs: Any) -> AdamW:
        """AdamW over ``param_groups(model)``: no decay on biases, norms, 1-D parameters and
        tokens (``no_decay=()`` gives DINO v1's rule: 1-D only)."""
        kw = dict(weight_decay=self.cfg.weight_decay, **group_kwargs)
        if no_decay is not None:
            kw["no_decay"] = no_decay
        groups = param_groups(model, **kw)
        return AdamW(groups, lr=self.cfg.lr, betas=tuple(self.cfg.betas),
                     weight_decay=self.cfg.weight_decay)

    def lr_at(self, step: int) -> float:
        """Warm-up + cosine learning rate at ``step`` (DINO's ``cosine_scheduler``)."""
        return self._schedule("lr", self.cfg.lr, self.cfg.min_lr, self.cfg.warmup_steps, step)

    def _schedule(self, key: str, base: float, final: float, warmup: int, step: int) -> float:
        """``cosine_schedule(base, final, steps, warmup)[step]``, cached; past the horizon the
        last value is kept (a run extended with more steps than its schedule)."""
        cache = self.__dict__.setdefault("_schedules", {})
        ck = (key, base, final, warmup, self.steps)
        if ck not in cache:
            cache[ck] = cosine_schedule(base, final, max(self.steps, 1),
                                        min(warmup, max(self.steps, 1)))
        s = cache[ck]
        return float(s[min(step, len(s) - 1)])

    def optimizer_step(self, loss: Tensor, step: int, *, per_param_clip: float = 0.0,
                       before_step: Callable[[], None] | None = None,
                       params: Any = None) -> dict[str, Any]:
        """Backward and one AdamW step at the scheduled lr, without reading anything on the
        host: the loss is not checked here. The loop reads the losses once per logging
        interval and stops at the first non-finite one (``train.loop``); no checkpoint of
        that step or a later one is written, and the steps in between may update the model in
        memory (with NaN: the run is over).

        Clipping: ``per_param_clip`` rescales each gradient tensor on its own (DINO v1's
        ``clip_gradients``); else ``cfg.clip_grad`` clips the global norm (torch, DINOv2).
        ``before_step`` runs after clipping (e.g. DINO's cancel_gradients_last_layer).
        Returns ``{"loss", "lr", "grad_norm"}``: the loss and the norm before clipping are
        device scalars (0-d arrays, read by the loop), the lr a Python float.
        """
        lr = self.lr_at(step)
        out: dict[str, Any] = {"loss": loss.data, "lr": lr}
        self.optimizer.zero_grad()
        loss.backward()
        target = params if params is not None else [
            p for g in self.optimizer.param_groups for p in g["params"]]
        # data parallelism: the mean of the ranks' gradients (bucketed all-reduce), before
        # clipping, so every rank clips and steps identically; nothing in one process
        distributed.average_gradients(target)
        if per_param_clip > 0:
            clip_grad_per_param_(target, per_param_clip)
        elif self.cfg.clip_grad > 0:
            out["grad_norm"] = clip_grad_norm_(target, self.cfg.clip_grad)
        if before_step is not None:
            before_step()
        self.optimizer.set_lr(lr)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return out

    def draw_indices(self, n: int, k: int | None = None) -> np.ndarray:
        """``k`` (default ``batch_size``) distinct random indices into ``n`` examples, from
        ``self.rng``; the same batch every step with ``fixed_batch``."""
        k = self.batch_size if k is None else k
        if self.cfg.fixed_batch:
            if self._fixed is None:
                self._fixed = np.sort(self.rng.choice(n, size=min(k, n), replace=False))
            return self._fixed
        return self.rng.choice(n, size=min(k, n), replace=False)

    def step_rng(self) -> np.random.Generator:
        """The generator for this step's augmentations and masks: ``self.rng``, or with
        ``fixed_batch`` a fresh generator seeded the same way every step (same views)."""
        if self.cfg.fixed_batch:
            return np.random.default_rng(self.cfg.seed + 1)
        return self.rng

    def shard_slice(self, n: int) -> slice:
        """This rank's contiguous part of a global batch of ``n``: ``[r n/W, (r+1) n/W)``
        (everything in one process). ``n`` must be a multiple of W."""
        if not distributed.is_distributed():
            return slice(0, n)
        w, r = distributed.world_size(), distributed.rank()
        if n % w:
            raise ValueError(f"{self.name}: a global batch of {n} does not split into {w} "
                             f"equal shards (batch_size must be a multiple of the ranks)")
        b = n // w
        return slice(r * b, (r + 1) * b)

    def draw_shard(self, n: int, k: int | None = None
                   ) -> tuple[np.ndarray, np.random.Generator]:
        """This step's batch as this rank sees it: the indices of its shard of the global
        batch (``draw_indices``, the same draw on every rank) and the generator for the
        shard's augmentations (``step_rng``; over W > 1 ranks wrapped in ``ShardedGenerator``
        so the shard gets the random numbers of its rows of the global batch; a global batch
        the ranks cannot split, ``min(batch_size, n)``, raises ``DistributedProblem`` first,
        on every rank, for recipes whose ``train_examples`` did not say). In one process:
        ``(draw_indices(n, k), step_rng())``, the draws of before. Shapes: -> (B / W,)."""
        if not distributed.is_distributed():
            return self.draw_indices(n, k), self.step_rng()
        if k is None:
            self.check_distributed_batch(n)  # before drawing: the same error on every rank
        idx = self.draw_indices(n, k)  # (B,): the global batch, the same on every rank
        rng = self.step_rng()
        part = self.shard_slice(len(idx))
        return idx[part], ShardedGenerator(rng, len(idx), part)


class DistributedProblem(ValueError):
    """A run that cannot train over the W ranks it was launched on, as asked (an unsupported
    recipe, a global batch the ranks cannot split): every rank raises the same one, before
    any step; the command line prints it once (exit status 2)."""


class ShardedGenerator(np.random.Generator):
    """A rank's view of the generator of a global batch: the draws of one process, sliced.

    Every draw whose first axis is the shard's length ``b`` (``random``, ``uniform``,
    ``normal``, ``standard_normal``, ``integers`` with a ``size`` of ``(b, ...)``) is made
    for the global batch, ``(n, ...)``, from the shared generator, and rows ``part`` are
    returned: row i of a per-sample draw belongs to sample i of the global batch, on every
    rank and in one process (randomness keyed by the global sample index). Any other draw
    (no size, another first axis) is made as is, as one process makes it. The wrapped
    generator's state advances exactly as in one process (it shares its bit generator), so
    every rank stays in step. An op that draws per sample in a Python loop, or whose result
    for one image depends on the random numbers of the others, is not covered: its views
    differ from the one-process views (the recipe tests compare them). ``gaussian_blur`` is
    per image: it takes its kernel radius from the configured sigma range, not from the
    batch (tests/train/test_data_parallel.py, test_multicrop_blur_is_per_image).

    Shapes: a draw of (b, ...) -> (b, ...), drawn as (n, ...).
    """

    def __init__(self, rng: np.random.Generator, n: int, part: slice):
        super().__init__(rng.bit_generator)  # the same state: draws advance ``rng``
        self.n, self.part = int(n), part
        self.b = part.stop - part.start

    def _global(self, size: Any) -> tuple[Any, bool]:
        """(the size to draw, whether to slice it)."""
        if size is None:
            return None, False
        shape = (int(size),) if np.ndim(size) == 0 else tuple(int(v) for v in size)
        if shape and shape[0] == self.b and self.b != self.n:
            return (self.n,) + shape[1:], True
        return size, False

    def _draw(self, fn: Any, size: Any, *args: Any, **kw: Any) -> Any:
        size, cut = self._global(size)
        if cut and any(np.ndim(a) > 0 for a in args):
            raise ValueError("ShardedGenerator: per-sample distribution parameters (arrays) "
                             "are not supported; draw standard values and scale them")
        out = fn(*args, size=size, **kw)
        return out[self.part] if cut else out

    def random(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> Any:
        if out is not None:
            raise ValueError("ShardedGenerator.random: out= is not supported")
        return self._draw(super().random, size, dtype=dtype)

    def standard_normal(self, size: Any = None, dtype: Any = np.float64,
                        out: Any = None) -> Any:
        if out is not None:
            raise ValueError("ShardedGenerator.standard_normal: out= is not supported")
        return self._draw(super().standard_normal, size, dtype=dtype)

    def uniform(self, low: Any = 0.0, high: Any = 1.0, size: Any = None) -> Any:
        return self._draw(super().uniform, size, low, high)

    def normal(self, loc: Any = 0.0, scale: Any = 1.0, size: Any = None) -> Any:
        return self._draw(super().normal, size, loc, scale)

    def integers(self, low: Any, high: Any = None, size: Any = None, dtype: Any = np.int64,
                 endpoint: bool = False) -> Any:
        return self._draw(super().integers, size, low, high, dtype=dtype, endpoint=endpoint)


def check_ids(what: str, values: np.ndarray, n: int) -> None:
    """Every value of the host integer array ``values`` (labels, ids) in [0, n), else a
    ``ValueError`` naming ``what``, the range found and the range allowed."""
    v = np.asarray(values)
    if v.dtype.kind not in "iu":
        raise ValueError(f"{what}: expected integers, got dtype {v.dtype}")
    if v.size and (int(v.min()) < 0 or int(v.max()) >= n):
        raise ValueError(f"{what}: values must be in [0, {n}), got values in "
                         f"[{int(v.min())}, {int(v.max())}]")


def to_device(x: Any, device: Any) -> Any:
    """A host array on the recipe's device (no copy on the CPU)."""
    return backend.to_device(x, device)


def batched(fn: Callable[[Any], Any], x: np.ndarray, device: Any, batch: int = 256) -> Any:
    """``fn`` applied to ``x`` in chunks under ``no_grad`` and concatenated on the host:
    feature extraction for evaluation. ``fn`` returns a Tensor, an array, or a tuple/dict of
    them. Shapes: x (n, ...) -> (n, ...)."""
    parts: list[Any] = []
    with no_grad():
        for start in range(0, len(x), batch):
            y = fn(to_device(x[start:start + batch], device))
            parts.append(_host(y))
    if isinstance(parts[0], tuple):
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(parts[0])))
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


def _host(y: Any) -> Any:
    if isinstance(y, tuple):
        return tuple(_host(v) for v in y)
    if isinstance(y, dict):
        return {k: _host(v) for k, v in y.items()}
    return backend.to_numpy(y.data if isinstance(y, Tensor) else y)
