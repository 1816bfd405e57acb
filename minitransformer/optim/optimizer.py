"""``Optimizer``: parameter groups, per-parameter state, and a checkpointable state dict.

The PyTorch shape users know: ``opt.param_groups`` is a list of dicts, each with ``"params"``
(a list of Tensors) and its hyper-parameters (``"lr"``, ``"weight_decay"``, ...). Two
multipliers are read on every step, as DINOv2's ``lr_multiplier`` / ``wd_multiplier``:

    effective lr = group["lr"] * group["lr_mult"]
    effective wd = group["weight_decay"] * group["wd_mult"]

so a training loop can write the scheduled base values into every group (``set_lr``,
``set_weight_decay``) while layer-wise lr decay and "no decay on biases" stay in the
multipliers. Updates are applied in place to the raw arrays (``p.data``), on the parameter's
own device and in its own dtype. A parameter whose ``grad`` is None is skipped entirely (its
state is not touched): DINO's ``cancel_gradients_last_layer`` relies on this.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from .. import backend
from ..autograd import Tensor

__all__ = ["Optimizer"]


class Optimizer:
    """Base class: holds ``param_groups`` and ``state``; subclasses implement ``_update``.

    Args:
        params: an iterable of Tensors, or of dicts ``{"params": [...], **hyper-parameters}``
            (keys missing from a group are filled from ``defaults``).
        defaults: the optimiser's hyper-parameters (``lr``, ``weight_decay``, ...).

    ``state[p]`` is a dict of raw arrays (same shape, dtype and device as ``p``) and Python
    scalars, created lazily on the first step that sees a gradient for ``p``.
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]):
        self.defaults = dict(defaults)
        self.defaults.setdefault("lr_mult", 1.0)
        self.defaults.setdefault("wd_mult", 1.0)
        if hasattr(params, "named_parameters"):
            raise TypeError(f"{type(self).__name__}: pass model.parameters() or "
                            "param_groups(model, weight_decay), not the Module itself")
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[Tensor, dict[str, Any]] = {}
        for g in groups:
            self.add_param_group(g)

    # ------------------------------------------------------------------ groups
    def add_param_group(self, group: dict[str, Any]) -> None:
        """Append a group, filling its missing hyper-parameters from ``defaults``."""
        name = type(self).__name__
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{name}: a parameter group is a dict with a 'params' key, got "
                            f"{type(group).__name__}")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{name}: params must be Tensors, got {type(p).__name__} at "
                                f"index {i} of group {len(self.param_groups)}")
            if p.dtype.kind != "f":
                raise TypeError(f"{name}: can only optimise floating tensors, got {p.dtype}")
            if id(p) in seen:
                label = p.name or f"shape {tuple(p.shape)}"
                raise ValueError(f"{name}: parameter ({label}) appears in more than one group")
            seen.add(id(p))
        new = {**self.defaults, **group, "params": params}
        if new.get("lr") is None:
            raise ValueError(f"{name}: group {len(self.param_groups)} has no learning rate")
        self.param_groups.append(new)

    def set_lr(self, lr: float) -> None:
        """Write the (scheduled) base learning rate into every group; ``lr_mult`` still applies."""
        for g in self.param_groups:
            g["lr"] = float(lr)

    def set_weight_decay(self, weight_decay: float) -> None:
        """Write the (scheduled) base weight decay into every group; ``wd_mult`` still applies,
        so groups built with ``wd_mult=0`` (biases, norms, tokens) stay undecayed."""
        for g in self.param_groups:
            g["weight_decay"] = float(weight_decay)

    # ------------------------------------------------------------------ stepping
    def zero_grad(self) -> None:
        """Drop every gradient (``p.grad = None``), as torch's ``set_to_none=True``."""
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient, in place."""
        for g in self.param_groups:
            lr = float(g["lr"]) * float(g["lr_mult"])
            wd = float(g["weight_decay"]) * float(g["wd_mult"])
            for p in g["params"]:
                if p.grad is None:  # frozen this step (e.g. DINO's last layer in epoch 0)
                    continue
                if tuple(p.grad.shape) != tuple(p.shape):
                    raise ValueError(f"{type(self).__name__}.step: grad shape "
                                     f"{tuple(p.grad.shape)} != param shape {tuple(p.shape)}")
                state = self.state.setdefault(p, {})
                self._update(p, p.grad, state, g, lr, wd)

    def _update(self, p: Tensor, grad: Any, state: dict[str, Any], group: dict[str, Any],
                lr: float, wd: float) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ state dict
    def state_dict(self) -> dict[str, Any]:
        """``{"state": {index: {name: NumPy array | scalar}}, "param_groups": [...]}``.

        Parameters are numbered in group order (as torch); each group keeps its
        hyper-parameters (JSON-able scalars and lists) and ``"params"``: the list of indices.
        Arrays are NumPy copies from any device; nothing here needs pickle.
        """
        index: dict[int, int] = {}
        groups = []
        for g in self.param_groups:
            ids = []
            for p in g["params"]:
                index[id(p)] = len(index)
                ids.append(index[id(p)])
            hyper = {k: (list(v) if isinstance(v, tuple) else v)
                     for k, v in g.items() if k != "params"}
            groups.append({**hyper, "params": ids})
        state = {}
        for g in self.param_groups:
            for p in g["params"]:
                if p in self.state:
                    state[index[id(p)]] = {
                        k: (np.array(backend.to_numpy(v), copy=True) if _is_array(v) else v)
                        for k, v in self.state[p].items()
                    }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyper-parameters and per-parameter state saved by ``state_dict``.

        The groups must have the same sizes as when saved. State arrays are copied onto each
        parameter's device and dtype. Index keys may be ints or strings (JSON turns them
        into strings).
        """
        name = type(self).__name__
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: {len(saved)} saved groups, optimiser has "
                             f"{len(self.param_groups)}")
        params: list[Tensor] = []
        for i, (s, g) in enumerate(zip(saved, self.param_groups)):
            if len(s["params"]) != len(g["params"]):
                raise ValueError(f"{name}.load_state_dict: group {i} saved with "
                                 f"{len(s['params'])} params, optimiser has {len(g['params'])}")
            params.extend(g["params"])
        for s, g in zip(saved, self.param_groups):
            for k, v in s.items():
                if k != "params":  # JSON turned tuples (betas) into lists
                    g[k] = tuple(v) if isinstance(self.defaults.get(k), tuple) else v
        self.state = {}
        for key, st in state_dict["state"].items():
            i = int(key)
            if not 0 <= i < len(params):
                raise ValueError(f"{name}.load_state_dict: state for parameter {i}, but the "
                                 f"optimiser has {len(params)}")
            p = params[i]
            restored = {}
            for k, v in st.items():
                if _is_array(v):
                    if tuple(np.shape(v)) != tuple(p.shape):
                        raise ValueError(f"{name}.load_state_dict: state {k!r} of parameter {i} "
                                         f"has shape {tuple(np.shape(v))}, param {tuple(p.shape)}")
                    v = backend.to_device(backend.to_numpy(v), p.device).astype(p.dtype, copy=True)
                restored[k] = v
            self.state[p] = restored

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}("]
        for i, g in enumerate(self.param_groups):
            hyper = ", ".join(f"{k}={v}" for k, v in g.items() if k not in ("params", "names"))
            lines.append(f"  group {i}: {len(g['params'])} params, {hyper}")
        return "\n".join(lines) + "\n)"


def _is_array(a: Any) -> bool:
    return isinstance(a, np.ndarray) or type(a).__module__.startswith("cupy")


def _check_non_negative(fn: str, **values: float) -> None:
    for k, v in values.items():
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{fn}: {k} must be a finite number >= 0, got {v!r}")
