"""``Mlp``: the transformer's position-wise feed-forward network (timm / DINO ``Mlp``)."""

from __future__ import annotations

from typing import Any

from .. import functional as F
from ..autograd import Tensor
from .dropout import Dropout
from .linear import Linear
from .module import Module

__all__ = ["ACTIVATIONS", "Mlp", "activation"]

# Which system uses which: exact GELU in ViT/DINO/DINOv2/timm (nn.GELU in timm layers/mlp.py Mlp
# and dino vision_transformer.py Mlp), the tanh GELU in BERT (google-research/bert modeling.py,
# gelu), QuickGELU x*sigmoid(1.702x) in OpenAI CLIP (openai/CLIP clip/model.py, QuickGELU), ReLU
# in torch's TransformerEncoderLayer (torch/nn/modules/transformer.py, activation=F.relu).
ACTIVATIONS = ("gelu", "gelu_tanh", "quick_gelu", "relu")


def activation(x: Any, name: str) -> Tensor:
    """Apply the activation called ``name`` (one of ``ACTIVATIONS``). Shapes: any."""
    if name == "gelu":
        return F.gelu(x)
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if name == "quick_gelu":
        return F.quick_gelu(x)
    if name == "relu":
        return F.relu(x)
    raise ValueError(f"activation: unknown name {name!r}; expected one of {ACTIVATIONS}")


class Mlp(Module):
    """$y = \\mathrm{fc2}(\\mathrm{drop}(\\mathrm{act}(\\mathrm{fc1}(x))))$, then dropout, as timm
    ``Mlp`` (``drop1`` after the activation, ``drop2`` after ``fc2``).

    Shapes: x (..., dim) -> y (..., out_dim); fc1 (dim, hidden), fc2 (hidden, out_dim).
    """

    def __init__(self, dim: int, hidden: int, out_dim: int | None = None, act: str = "gelu",
                 drop: float = 0.0, bias: bool = True):
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"Mlp: unknown act {act!r}; expected one of {ACTIVATIONS}")
        self.act = act
        self.fc1 = Linear(dim, hidden, bias=bias)
        self.drop1 = Dropout(drop)
        self.fc2 = Linear(hidden, out_dim or dim, bias=bias)
        self.drop2 = Dropout(drop)

    def forward(self, x: Any) -> Tensor:
        h = self.drop1(activation(self.fc1(x), self.act))  # (..., hidden)
        return self.drop2(self.fc2(h))

    def extra_repr(self) -> str:
        return f"act={self.act!r}"
