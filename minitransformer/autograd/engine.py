"""Reverse-mode differentiation: walk the graph from the output back to the leaves.

For a node ``y = f(x_1, ..., x_n)`` the chain rule gives ``gx_i = (dy/dx_i)^T gy``; the node's
``backward`` computes that product, and a tensor used by several nodes receives the *sum* of
their contributions, so a node may run only after every node that consumes its outputs.

Order: every Function gets an increasing sequence number when it is recorded, and an op is
always recorded after the ops that made its inputs. So running nodes from the highest
number down is a topological order (consumers before producers). The engine keeps the nodes
waiting to run in a heap keyed by that number: the walk is iterative (a chain of 100,000 ops
needs no recursion), visits only nodes that receive a gradient, and is deterministic.

Gradient ownership: an array computed by one backward may be handed to several consumers
(``Add`` returns ``gy`` for both inputs), so the engine never adds in place into an array it
did not create, and the first gradient written to a leaf is a copy. No two tensors ever
share a gradient array.

All or nothing: leaf gradients are summed in a table during the walk and written to
``leaf.grad`` at the end, so a backward that fails midway (a freed graph, a NaN in debug
mode, a bad op) leaves every ``.grad`` as it was.
"""

from __future__ import annotations

import heapq
from typing import Any

from .. import backend
from .grad_mode import _State, set_grad_enabled

__all__ = ["backward"]

_FREED_MESSAGE = (
    "Trying to backward through the graph a second time (through {op}): its saved arrays were "
    "freed after the first backward. Call backward(retain_graph=True) the first time if you "
    "need to backpropagate twice."
)


def _initial_gradient(tensor: Any, gy: Any) -> Any:
    """The seed of backward: ``gy`` as an array of the tensor's shape, dtype and device."""
    from .tensor import Tensor

    xp = backend.get_array_module(tensor.data)
    if gy is None:
        if tensor.data.size != 1:
            raise ValueError(
                f"backward() without gy needs a scalar (one-element) tensor, got shape "
                f"{tuple(tensor.shape)}; pass gy of that shape, e.g. y.backward(mt.ones_like(y))"
            )
        return xp.ones_like(tensor.data)
    if isinstance(gy, Tensor):
        gy = gy.data
    gy = xp.asarray(backend.to_device(gy, tensor.device), dtype=tensor.dtype)
    if gy.shape != tensor.shape:
        raise ValueError(
            f"backward(): gy has shape {tuple(gy.shape)} but the tensor has shape "
            f"{tuple(tensor.shape)}"
        )
    return gy


def backward(tensor: Any, gy: Any = None, retain_graph: bool = False) -> None:
    """Accumulate ``(d tensor / d leaf)^T gy`` into ``leaf.grad`` for every leaf that requires
    a gradient. ``gy`` defaults to 1 for a one-element tensor."""
    if not tensor.requires_grad:
        raise RuntimeError(
            "backward() on a tensor that does not require grad: no input of the graph has "
            "requires_grad=True, or it was computed under no_grad()"
        )
    gy = _initial_gradient(tensor, gy)
    root = tensor.creator
    if root is None:  # backward on a leaf: d leaf / d leaf = identity
        tensor._accumulate_grad(gy)
        return
    if root.inputs is None:
        raise RuntimeError(_FREED_MESSAGE.format(op=root.name))

    # grads[node]: one slot per output of node, the sum of the gradients received so far.
    grads: dict[Any, list[Any]] = {root: [None] * root.n_outputs}
    grads[root][tensor.output_index] = gy
    # Nodes waiting to run, latest-recorded first (heapq is a min-heap, hence -seq; seq is
    # unique, so two entries never compare their nodes).
    waiting = [(-root.seq, root)]
    leaf_grads: dict[Any, Any] = {}  # leaf Tensor -> its gradient from this pass
    retained: list[tuple[Any, Any]] = []  # (non-leaf Tensor with retain_grad(), its gradient)
    debug = _State.debug
    with set_grad_enabled(False):  # backward is first-order: build no graph
        while waiting:
            node = heapq.heappop(waiting)[1]
            gys = grads.pop(node)
            if node.n_outputs > 1:
                for i, g in enumerate(gys):
                    if g is None:  # an output nobody used: its gradient is zero
                        xp = backend.get_array_module(*[g for g in gys if g is not None])
                        shape, dtype = node.out_meta[i]
                        gys[i] = xp.zeros(shape, dtype=dtype)
            if node.retained:
                for i, ref in node.retained.items():
                    t = ref()  # a weak reference: the tensor may be gone already
                    if t is not None:
                        retained.append((t, gys[i]))

            gxs = node.backward(*gys)
            if not isinstance(gxs, (tuple, list)):
                gxs = (gxs,)
            inputs = node.inputs
            if len(gxs) != len(inputs):
                raise RuntimeError(
                    f"{node.name}.backward returned {len(gxs)} gradients for "
                    f"{len(inputs)} inputs"
                )
            if debug:
                node._check_finite(gxs, [*gys, *[t.data for t in inputs]], "backward")

            for x, gx, needed in zip(inputs, gxs, node.needs_input_grad):
                if gx is None or not needed:
                    continue
                data = x.data  # read once: .shape/.dtype on the Tensor are properties
                if gx.shape != data.shape:
                    raise ValueError(
                        f"{node.name}.backward returned a gradient of shape {tuple(gx.shape)} "
                        f"for an input of shape {tuple(data.shape)}"
                    )
                # `is not` first: equal dtypes are nearly always the same object, and the
                # full comparison costs ~0.1 µs per edge
                if gx.dtype is not data.dtype and gx.dtype != data.dtype:
                    gx = gx.astype(data.dtype)
                parent = x.creator
                if parent is None:  # a leaf: sum here, write to .grad at the end
                    old = leaf_grads.get(x)
                    # never in place: gx and old may be shared with another consumer
                    leaf_grads[x] = gx if old is None else old + gx
                    continue
                slots = grads.get(parent)
                if slots is None:  # parent's first gradient: it joins the waiting nodes
                    if parent.inputs is None:
                        raise RuntimeError(_FREED_MESSAGE.format(op=parent.name))
                    slots = grads[parent] = [None] * parent.n_outputs
                    heapq.heappush(waiting, (-parent.seq, parent))
                j = x.output_index
                # never in place: gx (or slots[j]) may be shared with another consumer
                slots[j] = gx if slots[j] is None else slots[j] + gx
            if not retain_graph:
                node.release()

    for t, g in retained:
        t._accumulate_grad(g)
    for leaf, g in leaf_grads.items():
        leaf._accumulate_grad(g)  # copies on first write (see Tensor._accumulate_grad)
