"""Exercises of notebook 03 (the transformer encoder): layer norm, GELU, the seed's sinusoidal
positions, and the post-norm and pre-norm blocks.

Each reference solution is plain NumPy, as a learner would write it; ``expected`` computes
the same thing with the library op or module named in ``library``, in float64.
"""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..autograd import tensor
from ..nn import TransformerBlock, sinusoidal_position_encoding
from ._core import Case, exercise

_erf = np.vectorize(math.erf, otypes=[np.float64])  # NumPy has no erf; math.erf per element


# --------------------------------------------------------------------------------------------
# LayerNorm
# --------------------------------------------------------------------------------------------
def _layer_norm_cases(rng: np.random.Generator) -> list[Case]:
    def affine(D):
        return 1.0 + 0.5 * rng.standard_normal(D), 0.5 * rng.standard_normal(D)

    w, b = affine(8)
    flat = 3.0 + 1e-3 * rng.standard_normal((2, 4, 8))  # variance ~1e-6: eps matters
    flat[0, 0] = 3.0  # a constant token: variance exactly 0, the output is beta
    return [
        Case("a batch of 2, 5 tokens, D = 16", (rng.standard_normal((2, 5, 16)), *affine(16)),
             {"eps": 1e-5}),
        Case("a single vector (D = 6), eps = 1e-6", (rng.standard_normal(6), *affine(6)),
             {"eps": 1e-6}),
        Case("tokens with a large offset and scale (mean 50, std 10)",
             (50.0 + 10.0 * rng.standard_normal((3, 7, 32)), *affine(32)), {"eps": 1e-5}),
        Case("nearly constant tokens (variance ~1e-6, one exactly constant), eps = 1e-5",
             (flat, w, b), {"eps": 1e-5}),
    ]


def _library_layer_norm(x, weight, bias, eps):
    return F.layer_norm(tensor(x), tensor(weight), tensor(bias), eps=eps).numpy()


@exercise(
    "layer_norm",
    title="layer normalisation (x - mean) / sqrt(var + eps) * gamma + beta over the last axis",
    signature="layer_norm(x, weight, bias, eps) -> array; x (..., D), weight = gamma (D,), "
              "bias = beta (D,) -> (..., D)",
    equation="LN(x) = (x - mu) / sqrt(sigma^2 + eps) * gamma + beta (Ba et al. 2016, sec. 3)",
    library="F.layer_norm (nn.LayerNorm)",
    notebook="03_transformer_encoder",
    hint="mean and variance over the last axis only (keepdims=True), the variance biased "
         "(divide by D, np.var's default, not D - 1), eps added INSIDE the square root, then "
         "scale by weight and shift by bias",
    cases=_layer_norm_cases,
    expected=_library_layer_norm,
)
def layer_norm(x, weight, bias, eps):
    mu = x.mean(axis=-1, keepdims=True)  # (..., 1)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)  # (..., 1), biased: divide by D
    return (x - mu) / np.sqrt(var + eps) * weight + bias  # (..., D)


# --------------------------------------------------------------------------------------------
# GELU
# --------------------------------------------------------------------------------------------
def _gelu_cases(rng: np.random.Generator) -> list[Case]:
    grid = np.linspace(-6.0, 6.0, 49)
    return [
        Case("a (4, 8) matrix, the exact (erf) form", (rng.standard_normal((4, 8)),),
             {"approximate": "none"}),
        Case("49 points from -6 to 6, the exact form", (grid,), {"approximate": "none"}),
        Case("49 points from -6 to 6, the tanh form", (grid,), {"approximate": "tanh"}),
        Case("large inputs (|x| up to 30), both tails, the tanh form",
             (np.array([-30.0, -12.0, -1e-3, 0.0, 1e-3, 12.0, 30.0]),), {"approximate": "tanh"}),
        Case("a (2, 3, 5) batch, the exact form", (3 * rng.standard_normal((2, 3, 5)),),
             {"approximate": "none"}),
    ]


@exercise(
    "gelu",
    title="the GELU x Phi(x), exact (erf) and with the tanh approximation",
    signature="gelu(x, approximate='none') -> array of the shape of x; approximate is "
              "'none' (erf) or 'tanh'",
    equation="GELU(x) = x/2 (1 + erf(x / sqrt 2)), tanh form x/2 (1 + tanh(sqrt(2/pi) "
             "(x + 0.044715 x^3))) (Hendrycks & Gimpel 2016, sec. 2)",
    library="F.gelu",
    notebook="03_transformer_encoder",
    hint="the exact form divides x by sqrt(2) INSIDE erf (Phi is the standard normal CDF; "
         "math.erf or scipy.special.erf); the tanh form multiplies (x + 0.044715 x^3) by "
         "sqrt(2/pi); both multiply by x/2, and approximate='none' must not use the tanh form",
    cases=_gelu_cases,
    expected=lambda x, approximate="none": F.gelu(tensor(x), approximate=approximate).numpy(),
)
def gelu(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + _erf(x / np.sqrt(2)))  # x Phi(x)


# --------------------------------------------------------------------------------------------
# Sinusoidal positions
# --------------------------------------------------------------------------------------------
@exercise(
    "sinusoidal_positions",
    title="the seed's sinusoidal position table, sin and cos interleaved",
    signature="sinusoidal_positions(T, D) -> array (T, D); D even",
    equation="PE[t, 2i] = sin(t / 10000^(2i/D)), PE[t, 2i+1] = cos(t / 10000^(2i/D)) "
             "(Vaswani et al. 2017, sec. 3.5)",
    library="nn.sinusoidal_position_encoding",
    notebook="03_transformer_encoder",
    hint="positions t start at 0; the exponent is 2i/D with i = 0 .. D/2 - 1 the index of the "
         "PAIR (so np.arange(0, D, 2) / D); sin goes to the even channels 0, 2, 4, ... and cos "
         "to the odd ones (interleaved, not the first half sin and the second half cos)",
    cases=lambda rng: [
        Case("T = 10 positions, D = 16", (10, 16)),
        Case("a single position, D = 2", (1, 2)),
        Case("T = 50, D = 64", (50, 64)),
        Case("long and narrow: T = 200, D = 6", (200, 6)),
    ],
    expected=sinusoidal_position_encoding,
)
def sinusoidal_positions(T, D):
    t = np.arange(T)[:, None]  # (T, 1)
    freq = 1.0 / 10000 ** (np.arange(0, D, 2) / D)  # (D/2,): 1 / 10000^(2i/D)
    pe = np.zeros((T, D))
    pe[:, 0::2] = np.sin(t * freq)  # even channels
    pe[:, 1::2] = np.cos(t * freq)  # odd channels
    return pe


# --------------------------------------------------------------------------------------------
# The two blocks
# --------------------------------------------------------------------------------------------
def multi_head_attention(x, p, num_heads):
    """Equations 1-3 from a block's parameters (notebook 02): the fused ``attn.qkv`` projection
    with columns [W_Q | W_K | W_V], head h owning columns h*hd:(h+1)*hd of each, then
    ``attn.proj`` = W_O. Shapes: x (B, T, D) -> (B, T, D)."""
    B, T, D = x.shape
    hd = D // num_heads
    qkv = x @ p["attn.qkv.weight"] + p["attn.qkv.bias"]  # (B, T, 3D)
    qkv = qkv.reshape(B, T, 3, num_heads, hd).transpose(2, 0, 3, 1, 4)  # (3, B, H, T, hd)
    q, k, v = qkv
    scores = q @ k.swapaxes(-1, -2) / np.sqrt(hd)  # (B, H, T, T)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    heads = weights @ v  # (B, H, T, hd)
    concat = heads.transpose(0, 2, 1, 3).reshape(B, T, D)  # (B, T, H*hd)
    return concat @ p["attn.proj.weight"] + p["attn.proj.bias"]


def feed_forward(x, p):
    """The block's MLP: fc2(GELU(fc1(x))) with the exact GELU. Shapes: (B, T, D) -> (B, T, D)."""
    h = gelu(x @ p["mlp.fc1.weight"] + p["mlp.fc1.bias"])  # (B, T, hidden)
    return h @ p["mlp.fc2.weight"] + p["mlp.fc2.bias"]


def _block_cases(rng: np.random.Generator) -> list[Case]:
    def params(D, hidden):
        """A TransformerBlock's state_dict, every entry random (gamma != 1, beta != 0)."""
        shapes = {"norm1.weight": (D,), "norm1.bias": (D,), "attn.qkv.weight": (D, 3 * D),
                  "attn.qkv.bias": (3 * D,), "attn.proj.weight": (D, D), "attn.proj.bias": (D,),
                  "norm2.weight": (D,), "norm2.bias": (D,), "mlp.fc1.weight": (D, hidden),
                  "mlp.fc1.bias": (hidden,), "mlp.fc2.weight": (hidden, D),
                  "mlp.fc2.bias": (D,)}
        p = {k: rng.standard_normal(s) / np.sqrt(s[0] if len(s) == 2 else 4.0)
             for k, s in shapes.items()}
        p["norm1.weight"] += 1.0
        p["norm2.weight"] += 1.0
        return p

    return [
        Case("a batch of 2, 5 tokens, D = 16, 2 heads",
             (rng.standard_normal((2, 5, 16)), params(16, 64)), {"num_heads": 2, "eps": 1e-6}),
        Case("a batch of one, a single token, D = 8, 1 head",
             (rng.standard_normal((1, 1, 8)), params(8, 32)), {"num_heads": 1, "eps": 1e-6}),
        Case("7 tokens, D = 24, 4 heads, MLP hidden 2D, eps = 1e-5",
             (rng.standard_normal((3, 7, 24)), params(24, 48)), {"num_heads": 4, "eps": 1e-5}),
        Case("large inputs (std 5), D = 12, 3 heads",
             (5 * rng.standard_normal((2, 6, 12)), params(12, 48)), {"num_heads": 3, "eps": 1e-6}),
    ]


def _library_block(norm_first):
    def run(x, params, num_heads, eps):
        D = x.shape[-1]
        hidden = params["mlp.fc1.weight"].shape[1]
        block = TransformerBlock(D, num_heads, mlp_ratio=hidden / D, norm_first=norm_first,
                                 eps=eps).to(dtype=np.float64)
        block.load_state_dict(params)  # strict: the names must be the block's own
        block.eval()
        return block(tensor(x)).numpy()

    return run


_BLOCK_SIGNATURE = ("{name}(x, params, num_heads, eps) -> array; x (B, T, D), params: a "
                    "TransformerBlock's state_dict (name -> array: norm1.*, attn.qkv.*, "
                    "attn.proj.*, norm2.*, mlp.fc1.*, mlp.fc2.*) -> (B, T, D)")


@exercise(
    "post_norm_block",
    title="the seed's post-norm encoder block x = LN1(x + MHA(x)), x = LN2(x + FFN(x))",
    signature=_BLOCK_SIGNATURE.format(name="post_norm_block"),
    equation="the seed's block (sec. 3, steps 2-5); Vaswani et al. 2017, sec. 3.1: "
             "LayerNorm(x + Sublayer(x))",
    library="nn.TransformerBlock(norm_first=False)",
    notebook="03_transformer_encoder",
    hint="post-norm: the residual is added FIRST and the sum is normalised, "
         "x = LN1(x + MHA(x)), then x = LN2(x + FFN(x)) where the FFN reads the x that LN1 "
         "returned; norm1 goes with attention and norm2 with the FFN, both with the given eps; "
         "the FFN's GELU is the exact (erf) one",
    cases=_block_cases,
    expected=_library_block(norm_first=False),
)
def post_norm_block(x, params, num_heads, eps):
    p = params
    x = layer_norm(x + multi_head_attention(x, p, num_heads), p["norm1.weight"],
                   p["norm1.bias"], eps)
    return layer_norm(x + feed_forward(x, p), p["norm2.weight"], p["norm2.bias"], eps)


@exercise(
    "pre_norm_block",
    title="the pre-norm block of ViT and timm x = x + MHA(LN1(x)), x = x + FFN(LN2(x))",
    signature=_BLOCK_SIGNATURE.format(name="pre_norm_block"),
    equation="the pre-norm block (Xiong et al. 2020, fig. 1(b); ViT, Dosovitskiy et al. 2021, "
             "eq. 2-3)",
    library="nn.TransformerBlock(norm_first=True)",
    notebook="03_transformer_encoder",
    hint="pre-norm: normalise what ENTERS each branch and add the branch's output to the "
         "un-normalised x, x = x + MHA(LN1(x)), then x = x + FFN(LN2(x)); there is no "
         "LayerNorm on the block's output",
    cases=_block_cases,
    expected=_library_block(norm_first=True),
)
def pre_norm_block(x, params, num_heads, eps):
    p = params
    x = x + multi_head_attention(layer_norm(x, p["norm1.weight"], p["norm1.bias"], eps), p,
                                 num_heads)
    return x + feed_forward(layer_norm(x, p["norm2.weight"], p["norm2.bias"], eps), p)
