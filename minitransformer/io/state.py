"""Split nested state (an optimiser's ``state_dict``, a teacher's centre, ...) into the two
halves of a checkpoint: named arrays for safetensors, and a JSON skeleton for the sidecar."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import backend

__all__ = ["flatten_state", "unflatten_state"]

_ARRAY = "__array__"  # skeleton marker: {"__array__": "<name in the tensors dict>"}


def _is_array(a: Any) -> bool:
    return isinstance(a, np.ndarray) or type(a).__module__.startswith("cupy")


def flatten_state(tree: Any, prefix: str) -> tuple[dict[str, np.ndarray], Any]:
    """Replace every array in a nested dict/list by ``{"__array__": name}`` and collect the
    arrays under dotted names starting with ``prefix``.

    ``flatten_state(opt.state_dict(), "optimizer")`` gives
    ``({"optimizer.state.0.exp_avg": array, ...}, {"state": {"0": {"step": 3, "exp_avg":
    {"__array__": "optimizer.state.0.exp_avg"}, ...}}, "param_groups": [...]})``.
    Dict keys become strings and tuples become lists (JSON has no others).

    Shapes: arrays pass through unchanged (copied to the host as NumPy).
    """
    arrays: dict[str, np.ndarray] = {}

    def walk(node: Any, name: str) -> Any:
        if _is_array(node):
            arrays[name] = np.array(backend.to_numpy(node), copy=True)
            return {_ARRAY: name}
        if isinstance(node, dict):
            if _ARRAY in node:
                raise ValueError(f"flatten_state: key {_ARRAY!r} is reserved (at {name})")
            return {str(k): walk(v, f"{name}.{k}") for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return [walk(v, f"{name}.{i}") for i, v in enumerate(node)]
        return node

    skeleton = walk(tree, prefix)
    return arrays, skeleton


def unflatten_state(skeleton: Any, arrays: dict[str, Any]) -> Any:
    """Inverse of ``flatten_state``: put the named arrays back where the skeleton marks them.

    Shapes: arrays pass through unchanged. A marker naming an absent array is a KeyError
    that names it."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {_ARRAY}:
                name = node[_ARRAY]
                if name not in arrays:
                    raise KeyError(f"unflatten_state: array {name!r} is not in the checkpoint")
                return arrays[name]
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(skeleton)
