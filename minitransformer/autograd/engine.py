"""Reverse-mode differentiation: walk the graph from the output back to the leaves.

The walk is iterative (a graph of 100,000 ops needs no recursion) and deterministic: nodes
are visited in reverse topological order, computed by a depth-first search that follows each
node's inputs in order. Every node runs once, after all the nodes that consume its outputs.

Gradient ownership: an array computed by one backward may be handed to several consumers
(``Add`` returns ``gy`` for both inputs), so the engine never adds in place into an array it
did not create, and the first gradient written to a leaf is a copy. No two tensors ever
share a gradient array.
"""

from __future__ import annotations

from typing import Any

from .. import backend
from .grad_mode import _State, set_grad_enabled

__all__ = ["backward"]


def _topological_order(root: Any) -> list[Any]:
    """Function nodes reachable from ``root``, each before the nodes that produce its inputs."""
    order: list[Any] = []
    visited = {id(root)}
    stack = [(root, 0)]
    while stack:
        node, i = stack.pop()
        inputs = node.inputs
        if inputs is None:  # freed: reported by the caller
            order.append(node)
            continue
        # Advance to the next input whose creator we have not seen yet.
        while i < len(inputs):
            parent = inputs[i].creator
            i += 1
            if parent is not None and id(parent) not in visited:
                visited.add(id(parent))
                stack.append((node, i))
                stack.append((parent, 0))
                break
        else:
            order.append(node)  # post-order: all of its inputs' creators are already listed
    order.reverse()
    return order


def backward(tensor: Any, gy: Any = None, retain_graph: bool = False) -> None:
    """Accumulate d(tensor)/d(leaf) · gy into ``leaf.grad`` for every leaf that requires it."""
    from .tensor import Tensor

    if not tensor.requires_grad:
        raise RuntimeError(
            "backward() on a tensor that does not require grad: no input of the graph has "
            "requires_grad=True, or it was computed under no_grad()"
        )
    xp = backend.get_array_module(tensor.data)
    if gy is None:
        if tensor.data.size != 1:
            raise RuntimeError(
                f"backward() without a gradient needs a scalar output, got shape "
                f"{tuple(tensor.shape)}; pass gy with that shape (e.g. mt.ones_like(y).data)"
            )
        gy = xp.ones_like(tensor.data)
    else:
        if isinstance(gy, Tensor):
            gy = gy.data
        gy = xp.asarray(gy, dtype=tensor.dtype)
        if gy.shape != tensor.shape:
            raise ValueError(
                f"backward(): gy has shape {tuple(gy.shape)} but the tensor has shape "
                f"{tuple(tensor.shape)}"
            )

    root = tensor.creator
    if root is None:  # backward on a leaf: d leaf / d leaf = identity
        tensor._accumulate_grad(gy)
        return
    if root.freed:
        raise RuntimeError(_FREED_MESSAGE.format(op=root.name))

    # grads[id(node)] holds one slot per output of node
    grads: dict[int, list[Any]] = {id(root): [None] * len(root.out_meta)}
    grads[id(root)][tensor.output_index] = gy
    with set_grad_enabled(False):  # backward is first-order: build no graph
        for node in _topological_order(root):
            gys = grads.pop(id(node), None)
            if gys is None:
                continue
            if node.freed:
                raise RuntimeError(_FREED_MESSAGE.format(op=node.name))
            for i, g in enumerate(gys):
                if g is None:  # an output nobody used: its gradient is zero
                    shape, dtype = node.out_meta[i]
                    gys[i] = xp.zeros(shape, dtype=dtype)
            if node.retained:
                for i, ref in node.retained.items():
                    t = ref()
                    if t is not None:
                        t._accumulate_grad(gys[i])

            gxs = node.backward(*gys)
            if not isinstance(gxs, tuple):
                gxs = (gxs,)
            if len(gxs) != len(node.inputs):
                raise RuntimeError(
                    f"{node.name}.backward returned {len(gxs)} gradients for "
                    f"{len(node.inputs)} inputs"
                )
            if _State.debug:
                node._check_finite(gxs, tuple(t.data for t in node.inputs), "backward")

            for x, gx, needed in zip(node.inputs, gxs, node.needs_input_grad):
                if not needed or gx is None:
                    continue
                if gx.shape != x.shape:
                    raise RuntimeError(
                        f"{node.name}.backward returned a gradient of shape {tuple(gx.shape)} "
                        f"for an input of shape {tuple(x.shape)}"
                    )
                if gx.dtype != x.dtype:
                    gx = gx.astype(x.dtype)
                parent = x.creator
                if parent is None:
                    x._accumulate_grad(gx)
                else:
                    slots = grads.get(id(parent))
                    if slots is None:
                        slots = grads[id(parent)] = [None] * len(parent.out_meta)
                    j = x.output_index
                    # never in place: gx (or slots[j]) may be shared with another consumer
                    slots[j] = gx if slots[j] is None else slots[j] + gx
            if not retain_graph:
                node.release()


_FREED_MESSAGE = (
    "Trying to backward through the graph a second time (through {op}): its saved arrays were "
    "freed after the first backward. Call backward(retain_graph=True) the first time if you "
    "need to backpropagate twice."
)
