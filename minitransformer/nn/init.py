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
    """$t_i \\sim \\mathcal{N}(\\mu, \\sigma^2)$ conditioned on $a \\le t_i \\le b$, with the
    cut-offs ``a, b`` in units of the **value** (absolute), as torch's
    ``nn.init.trunc_normal_`` and timm's ``trunc_normal_`` take them.

    Why absolute: timm, DINO and DINOv2 initialise ``pos_embed``, ``cls_token`` (DINO) and
    every Linear with ``trunc_normal_(std=.02)`` and the default ``a=-2, b=2``, i.e. cut at
    ±100 std: in practice an untruncated $\\mathcal{N}(0, 0.02^2)$, and this function gives
    the same distribution (a cut at ±2 *std* would make those weights about 12% smaller:
    the std of a standard normal truncated to [-2, 2] is 0.880). For a cut at ±2 std (TF's
    ``truncated_normal``, timm's ``trunc_normal_tf_``) pass ``a=-2*std, b=2*std`` (with
    ``mean`` added).

    Draws $\\mu + \\sigma z$ with $z \\sim \\mathcal{N}(0, 1)$ and redraws the values outside
    [a, b] (rejection sampling). The interval must hold a fair share of the mass,
    $\\Phi((b-\\mu)/\\sigma) - \\Phi((a-\\mu)/\\sigma) \\ge 10^{-3}$, else a ValueError.
    Shapes: any.
    """
    if not a < b:
        raise ValueError(f"trunc_normal_: need a < b, got a={a}, b={b}")
    if not std > 0:
        raise ValueError(f"trunc_normal_: std must be > 0, got {std}")

    def cdf(x: float) -> float:  # standard normal CDF
        return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))

    mass = cdf((b - mean) / std) - cdf((a - mean) / std)
    if mass < 1e-3:
        raise ValueError(
            f"trunc_normal_: [a, b] = [{a}, {b}] holds only {mass:.2e} of N({mean}, {std}^2); "
            "the cut-offs are absolute values, not multiples of std"
        )
    gen = _rng(rng)
    x = mean + std * gen.standard_normal(t.shape)
    xp = backend.get_array_module(x)
    bad = (x < a) | (x > b)
    while bool(bad.any()):
        x = xp.where(bad, mean + std * gen.standard_normal(t.shape), x)
        bad = (x < a) | (x > b)
    return _fill(t, x)


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
