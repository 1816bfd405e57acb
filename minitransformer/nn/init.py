"""Parameter initialisers. Each fills a Tensor in place and returns it (torch's ``nn.init`` shape).

Randomness is explicit: every initialiser that draws takes an ``rng``. The default is the CPU
generator ``backend.default_rng("cpu")`` (seeded by ``mt.manual_seed``): values are drawn on the
host in float64, then cast and moved to the tensor's device, so one seed gives the same weights
on the CPU and on a GPU. A device generator (``cupy.random.Generator``) may be passed instead.
"""

from __future__ import annotations

import math
from typing import Any

from .. import backend
from ..autograd import Tensor

__all__ = ["constant_", "normal_", "ones_", "trunc_normal_", "xavier_uniform_", "zeros_"]


def _rng(rng: Any) -> Any:
    return rng if rng is not None else backend.default_rng("cpu")


def _fill(t: Tensor, values: Any) -> Tensor:
    """Write ``values`` (any device, float64) into ``t`` with t's dtype and device."""
    t.data = backend.to_device(values, t.device).astype(t.dtype)
    t.grad = None
    return t


def zeros_(t: Tensor) -> Tensor:
    """$t \\leftarrow 0$. Shapes: any."""
    t.data = backend.get_array_module(t.data).zeros_like(t.data)
    t.grad = None
    return t


def ones_(t: Tensor) -> Tensor:
    """$t \\leftarrow 1$. Shapes: any."""
    t.data = backend.get_array_module(t.data).ones_like(t.data)
    t.grad = None
    return t


def constant_(t: Tensor, value: float) -> Tensor:
    """$t \\leftarrow c$ (LayerScale's ``gamma = init_values``). Shapes: any."""
    t.data = backend.get_array_module(t.data).full_like(t.data, value)
    t.grad = None
    return t


def normal_(t: Tensor, std: float = 1.0, mean: float = 0.0, rng: Any = None) -> Tensor:
    """$t_i \\sim \\mathcal{N}(\\mu, \\sigma^2)$ (timm/DINOv2 ``cls_token``: std 1e-6).
    Shapes: any."""
    return _fill(t, mean + std * _rng(rng).standard_normal(t.shape))


def trunc_normal_(t: Tensor, std: float = 1.0, mean: float = 0.0, a: float = -2.0,
                  b: float = 2.0, rng: Any = None) -> Tensor:
    """$t_i \\sim \\mathcal{N}(\\mu, \\sigma^2)$ conditioned on
    $a\\sigma \\le t_i - \\mu \\le b\\sigma$.

    The cut-offs ``a, b`` are in units of ``std`` (±2 std, as TF's ``truncated_normal`` used by
    BERT and timm's ``trunc_normal_tf_``). timm's plain ``trunc_normal_(std=.02)`` cuts at the
    *absolute* values ±2, i.e. at ±100 std, which is an untruncated normal in practice; ±2 std
    is what the name promises. Out-of-range draws are redrawn (rejection sampling; each draw is
    accepted with probability 0.954, so a few rounds suffice). Shapes: any.
    """
    if not a < b:
        raise ValueError(f"trunc_normal_: need a < b, got a={a}, b={b}")
    gen = _rng(rng)
    z = gen.standard_normal(t.shape)
    xp = backend.get_array_module(z)
    bad = (z < a) | (z > b)
    while bool(bad.any()):
        z = xp.where(bad, gen.standard_normal(t.shape), z)
        bad = (z < a) | (z > b)
    return _fill(t, mean + std * z)


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight stored (in, out), as ``y = x @ W`` uses it."""
    if len(shape) < 2:
        raise ValueError(f"xavier_uniform_: needs a weight with >= 2 axes, got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[0] * receptive, shape[1] * receptive


def xavier_uniform_(t: Tensor, gain: float = 1.0, rng: Any = None) -> Tensor:
    """$t_i \\sim U(-g\\sqrt{6/(n_{in}+n_{out})}, +g\\sqrt{6/(n_{in}+n_{out})})$ (Glorot & Bengio;
    torch MHA ``in_proj_weight``, MAE's patch embedding). Symmetric in (in, out), so the
    orientation of the weight does not matter. Shapes: (in, out, ...)."""
    fan_in, fan_out = _fans(tuple(t.shape))
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return _fill(t, _rng(rng).uniform(-bound, bound, t.shape))
