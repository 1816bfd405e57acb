"""``Module`` and ``Parameter``: named, ordered containers of trainable tensors.

Attributes register themselves in assignment order (``__setattr__``): a Parameter goes into
``_parameters``, a Module into ``_modules``, and a buffer (a raw array that is state but not
trained, such as a frozen position table) into ``_buffers`` via ``register_buffer``. Names
are dotted paths, ``blocks.0.attn.qkv.weight``, matching the timm / DINOv2 checkpoint layout.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import backend
from ..autograd import Tensor

__all__ = ["Module", "ModuleList", "Parameter", "Sequential", "StateDictError"]


class Parameter(Tensor):
    """A leaf Tensor that a Module trains (``requires_grad=True`` unless frozen)."""

    __slots__ = ()

    def __init__(self, data: Any, requires_grad: bool = True, name: str | None = None):
        if isinstance(data, Tensor):
            data = data.data
        super().__init__(data, requires_grad=requires_grad, name=name)

    def __repr__(self) -> str:
        return f"Parameter(shape={tuple(self.shape)}, dtype={self.dtype}, device={self.device})"


class StateDictError(KeyError):
    """``load_state_dict`` found missing keys, unexpected keys or shape mismatches."""

    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0])


class Module:
    """Base class of every layer and model.

    Subclasses assign Parameters and sub-Modules in ``__init__`` and define ``forward``;
    calling the module calls ``forward``.
    """

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------------ registration
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"{type(self).__name__}: call super().__init__() before assigning attributes"
            )
        is_buffer = name in self._buffers
        for store in (self._parameters, self._modules, self._buffers):
            store.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif is_buffer and value is not None:
            self._buffers[name] = True  # reassigning a buffer keeps it registered (as torch)
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        for store in (self._parameters, self._modules, self._buffers):
            store.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name: str, array: Any) -> None:
        """State that is saved and moved with the module but not trained (a raw array)."""
        self.__setattr__(name, array)
        self._buffers[name] = True

    # ------------------------------------------------------------------ calling
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------------ traversal
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module and every sub-module, depth first, in registration order."""
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def children(self) -> Iterator[Module]:
        yield from self._modules.values()

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) for every parameter, each once, in registration order."""
        seen: set[int] = set()
        for mod_name, m in self.named_modules(prefix):
            for name, p in m._parameters.items():
                if id(p) in seen:  # tied weights appear under their first name
                    continue
                seen.add(id(p))
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self) -> Iterator[Parameter]:
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self) -> Iterator[tuple[str, Any]]:
        for mod_name, m in self.named_modules():
            for name in m._buffers:
                yield (f"{mod_name}.{name}" if mod_name else name), getattr(m, name)

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.parameters()))

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, flag: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad = flag
        return self

    # ------------------------------------------------------------------ device and dtype
    def to(self, device: Any = None, dtype: Any = None) -> Module:
        """Move every parameter and buffer (in place) to ``device`` and/or cast floating ones to
        ``dtype``. Gradients are dropped when the device or dtype changes."""
        dev = backend.as_device(device) if device is not None else None
        dt = np.dtype(dtype) if dtype is not None else None

        def convert(a: Any) -> Any:
            if dev is not None:
                a = backend.to_device(a, dev)
            if dt is not None and a.dtype.kind == "f":
                a = a.astype(dt)
            return a

        for m in self.modules():
            for p in m._parameters.values():
                new = convert(p.data)
                if new is not p.data:
                    p.data = new
                    p.grad = None
            for name in m._buffers:
                object.__setattr__(m, name, convert(getattr(m, name)))
        return self

    # ------------------------------------------------------------------ state
    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Dotted name -> NumPy array (copied from any device), parameters then buffers."""
        out: OrderedDict[str, np.ndarray] = OrderedDict()
        for name, p in self.named_parameters():
            out[name] = np.array(backend.to_numpy(p.data), copy=True)
        for name, b in self.named_buffers():
            out[name] = np.array(backend.to_numpy(b), copy=True)
        return out

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> dict[str, list]:
        """Copy arrays into the parameters and buffers of the same names.

        With ``strict=True`` a missing key, an unexpected key or a shape mismatch raises
        ``StateDictError`` listing all of them. Values are cast to each parameter's dtype
        and moved to its device. Returns ``{"missing": [...], "unexpected": [...]}``.
        """
        targets: dict[str, tuple[Module, str, bool]] = {}
        for mod_name, m in self.named_modules():
            for name in list(m._parameters) + list(m._buffers):
                full = f"{mod_name}.{name}" if mod_name else name
                targets.setdefault(full, (m, name, name in m._parameters))
        missing = [k for k in targets if k not in state]
        unexpected = [k for k in state if k not in targets]
        mismatched = []
        for k, v in state.items():
            if k in targets:
                m, name, _ = targets[k]
                have = getattr(m, name)
                if tuple(np.shape(v)) != tuple(have.shape):
                    mismatched.append(f"{k}: checkpoint {tuple(np.shape(v))} vs model "
                                      f"{tuple(have.shape)}")
        if mismatched or (strict and (missing or unexpected)):
            lines = [f"load_state_dict into {type(self).__name__} failed:"]
            if missing:
                lines.append(f"  missing keys ({len(missing)}): {', '.join(missing)}")
            if unexpected:
                lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
            if mismatched:
                lines.append(f"  shape mismatches ({len(mismatched)}): " + "; ".join(mismatched))
            raise StateDictError("\n".join(lines))
        for k, v in state.items():
            if k not in targets:
                continue
            m, name, is_param = targets[k]
            have = getattr(m, name)
            data = have.data if is_param else have
            value = v.data if isinstance(v, Tensor) else v
            new = backend.to_device(backend.to_numpy(value), backend.device_of(data))
            new = new.astype(data.dtype, copy=True)
            if is_param:
                have.data = new
                have.grad = None
            else:
                object.__setattr__(m, name, new)
        return {"missing": missing, "unexpected": unexpected}

    # ------------------------------------------------------------------ display
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not self._modules:
            return head + ")"
        lines = [head]
        for name, m in self._modules.items():
            body = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + "\n)"


class ModuleList(Module):
    """A list of modules registered as ``0``, ``1``, ... (``blocks.3.attn...``)."""

    def __init__(self, modules: Any = ()):
        super().__init__()
        self._n = 0
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> ModuleList:
        setattr(self, str(self._n), module)
        object.__setattr__(self, "_n", self._n + 1)
        return self

    def __getitem__(self, i: int) -> Module:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"ModuleList index {i} out of range for {n} modules")
        return self._modules[str(i % n)]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())


class Sequential(ModuleList):
    """Modules applied one after another; registered as ``0``, ``1``, ... like ModuleList."""

    def __init__(self, *modules: Module):
        super().__init__(modules)

    def forward(self, x: Any) -> Any:
        for m in self:
            x = m(x)
        return x
