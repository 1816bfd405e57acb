"""Heads on top of the encoders: DINO's projection head, BERT's MLM head, MIM heads and a
plain projection.

Parameter names follow the reference checkpoints (DINO ``head.mlp.{0,2,4}``,
``head.last_layer.weight_{g,v}``); as everywhere in this package, a linear weight is stored
(in, out), the transpose of torch's layout.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import backend, distributed
from .. import functional as F
from ..autograd import Tensor, zeros
from ..nn import ACTIVATIONS, LayerNorm, Linear, Module, Parameter, Sequential, activation, init

__all__ = [
    "BatchNorm1d", "DINOHead", "MIMPixelHead", "MIMTokenHead", "MLMHead", "ProjectionHead",
    "WeightNormLinear", "cancel_last_layer_gradients", "convert_sync_batchnorm",
]


class Activation(Module):
    """An activation as a parameter-free layer, so it can sit in a ``Sequential`` (DINO's
    ``nn.GELU()`` in ``head.mlp``). Shapes: any."""

    def __init__(self, name: str = "gelu"):
        super().__init__()
        if name not in ACTIVATIONS:
            raise ValueError(f"Activation: unknown name {name!r}; expected one of {ACTIVATIONS}")
        self.name = name

    def forward(self, x: Any) -> Tensor:
        return activation(x, self.name)

    def extra_repr(self) -> str:
        return repr(self.name)


class BatchNorm1d(Module):
    """$y = \\frac{x - \\mu_B}{\\sqrt{\\sigma_B^2 + \\epsilon}} \\gamma + \\beta$ per feature, as
    torch ``nn.BatchNorm1d`` (DINO's ``DINOHead(use_bn=True)``).

    Training: the statistics of the batch (biased variance), differentiated through; the
    running averages move by ``momentum`` (torch's 0.1) toward the batch mean and the
    *unbiased* batch variance. Eval: the running averages. Statistics are taken over every
    axis but the last (features last, unlike torch's (N, C, L)).

    ``sync=True`` is torch's ``nn.SyncBatchNorm``: over several ranks (``distributed``) the
    training statistics are those of the *global* batch, $\\mu = \\sum_r \\sum_i x_{ri} / n$,
    $\\sigma^2 = \\sum_r \\sum_i (x_{ri} - \\mu)^2 / n$ with $n = \\sum_r n_r$ (three
    all-reduces: the counts, the sums, the squared deviations; the running variance uses
    the global unbiased $n / (n - 1)$), and the backward goes through the all-reduces (each
    one's backward all-reduces its upstream gradient), so rank r's input gradient is that of
    the sum of every rank's loss: torch's ``SyncBatchNorm`` backward, whose
    ``sum_dy``/``sum_dy_xmu`` are all-reduced. Averaged over ranks as data parallelism
    does, the gradients are those of one process on the global batch. DINO converts its
    heads with ``nn.SyncBatchNorm.convert_sync_batchnorm`` (``dino/main_dino.py``);
    ``convert_sync_batchnorm`` here does the same. In a single process (or inside
    ``distributed.rank_local()``, or in eval mode) ``sync`` changes nothing; in training
    every rank must call it (it communicates).

    Parameters ``weight`` (C,), ``bias`` (C,); buffers ``running_mean``, ``running_var``,
    ``num_batches_tracked`` (torch's names). Shapes: x (..., C) -> (..., C).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 sync: bool = False):
        super().__init__()
        C = num_features
        self.num_features, self.eps, self.momentum = C, eps, momentum
        self.sync = bool(sync)
        self.weight = Parameter(zeros(C))
        init.ones_(self.weight)
        self.bias = Parameter(zeros(C))
        xp = self.weight.device.xp
        self.register_buffer("running_mean", xp.zeros(C, dtype=self.weight.dtype))
        self.register_buffer("running_var", xp.ones(C, dtype=self.weight.dtype))
        self.register_buffer("num_batches_tracked", xp.zeros((), dtype=np.int64))

    def forward(self, x: Any) -> Tensor:
        C = self.num_features
        if x.shape[-1] != C:
            raise ValueError(f"BatchNorm1d: expected (..., {C}) input, got {tuple(x.shape)}")
        axes = tuple(range(x.ndim - 1))  # every axis but the features
        n = math.prod(x.shape[:-1])
        if not self.training:
            xp = backend.get_array_module(self.running_var)
            scale = 1.0 / xp.sqrt(self.running_var + self.eps)  # (C,)
            return (x - self.running_mean) * scale * self.weight + self.bias
        if self.sync and distributed.is_distributed():
            return self._sync_forward(x, axes, n)
        if n < 2:
            raise ValueError(
                f"BatchNorm1d: needs more than 1 value per feature in training, got input of "
                f"shape {tuple(x.shape)}"
            )
        mu = x.mean(axis=axes, keepdims=True)  # (1.., C)
        xc = x - mu
        var = (xc * xc).mean(axis=axes, keepdims=True)  # biased, for normalising
        y = xc / F.sqrt(var + self.eps) * self.weight + self.bias
        self._track(mu.data, var.data, n)
        return y

    def _sync_forward(self, x: Any, axes: tuple[int, ...], n_local: int) -> Tensor:
        """Training with the global batch's statistics (``sync``, W > 1). Shapes as forward."""
        # shapes agree on every rank by construction (the check above): no shape exchange
        n = int(distributed.all_reduce(np.asarray([n_local], dtype=np.int64), check=False)[0])
        if n < 2:
            raise ValueError(
                f"BatchNorm1d: needs more than 1 value per feature in training, got {n} over "
                f"all ranks (this rank's input {tuple(x.shape)})"
            )
        keep = (1,) * len(axes) + (self.num_features,)
        total = distributed.all_reduce(x.sum(axis=axes), check=False)  # (C,)
        mu = total.reshape(keep) / n  # (1.., C), the global mean
        xc = x - mu
        squares = distributed.all_reduce((xc * xc).sum(axis=axes), check=False)  # (C,)
        var = squares.reshape(keep) / n  # (1.., C), the global biased variance
        y = xc / F.sqrt(var + self.eps) * self.weight + self.bias
        self._track(mu.data, var.data, n)
        return y

    def _track(self, mu: Any, var: Any, n: int) -> None:
        """Move the running averages toward the batch mean and unbiased variance."""
        C = self.num_features
        m = self.momentum
        dt = self.running_mean.dtype
        batch_mean = mu.reshape(C).astype(dt)
        batch_var = (var.reshape(C) * (n / (n - 1))).astype(dt)  # unbiased, for running
        xp = backend.get_array_module(self.running_mean)
        self.register_buffer("running_mean", (1 - m) * self.running_mean + m * batch_mean)
        self.register_buffer("running_var", (1 - m) * self.running_var + m * batch_var)
        self.register_buffer("num_batches_tracked", xp.asarray(self.num_batches_tracked + 1))

    def extra_repr(self) -> str:
        sync = ", sync=True" if self.sync else ""
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}{sync}"


def convert_sync_batchnorm(model: Module) -> Module:
    """Make every ``BatchNorm1d`` in ``model`` synchronised (``sync=True``), as torch's
    ``nn.SyncBatchNorm.convert_sync_batchnorm`` (DINO applies it to student and teacher when
    they have BatchNorm). In place; returns ``model``. Parameters and buffers are unchanged."""
    for module in model.modules():
        if isinstance(module, BatchNorm1d):
            module.sync = True
    return model


class WeightNormLinear(Module):
    """A bias-free linear layer with weight normalisation, $W_{:,k} = g_k\\, v_{:,k} /
    \\lVert v_{:,k} \\rVert$ (torch ``weight_norm(Linear)``, dim 0: one norm per output).

    Parameters ``weight_g`` (1, out) and ``weight_v`` (in, out): the transposes of torch's
    (out, 1) and (out, in). With g = 1 every output unit's weight has unit norm whatever v
    becomes. Init: v as torch's default Linear init, $U(\\pm 1/\\sqrt{in})$; g = 1.

    Shapes: x (..., in) -> (..., out).
    """

    def __init__(self, in_features: int, out_features: int, rng: Any = None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight_g = Parameter(zeros(1, out_features))
        init.ones_(self.weight_g)
        self.weight_v = Parameter(zeros(in_features, out_features))
        bound = 1.0 / math.sqrt(in_features)
        gen = rng if rng is not None else backend.default_rng("cpu")
        v = gen.uniform(-bound, bound, (in_features, out_features))
        self.weight_v.data = backend.to_device(v, self.weight_v.device).astype(self.weight_v.dtype)

    def weight(self) -> Tensor:
        """The effective weight $g \\odot v / \\lVert v \\rVert_{col}$. Shapes: (in, out)."""
        norm = F.sqrt((self.weight_v * self.weight_v).sum(axis=0, keepdims=True))  # (1, out)
        return self.weight_v * (self.weight_g / norm)

    def forward(self, x: Any) -> Tensor:
        return x @ self.weight()

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}"


class DINOHead(Module):
    """DINO's projection head (``vision_transformer.py: DINOHead``), also DINOv2's.

    $h = \\mathrm{MLP}(x)$ (``nlayers`` Linear layers, GELU between, optional BatchNorm),
    $z = h / \\lVert h \\rVert$ (the L2-normalised bottleneck), logits $= z W$ with the
    weight-normalised prototypes ``last_layer``. With ``norm_last_layer`` (DINO's default, and
    the teacher's) ``weight_g`` is frozen at 1, so every logit is a cosine in [-1, 1] and
    $/\\tau_s = 0.1$ spans [-10, 10]. DINOv2's head trains g (``norm_last_layer=False``).

    ``use_bn``: BatchNorm after each hidden Linear, as DINO's ``use_bn`` flag; synchronised
    over ranks (``BatchNorm1d(sync=True)``), as DINO's ``convert_sync_batchnorm``. Off in DINO's
    recipe, but on small data (PyTorch reference runs on sklearn digits with K = 256, made
    for this project; docs/dino.md) DINO collapses to the uniform solution without it and
    reaches 90% k-NN with it.

    Names as DINO: ``mlp.0``, ``mlp.2``, ``mlp.4`` (``mlp.0``, ``mlp.3``, ``mlp.6`` with BN,
    BN at ``mlp.1``, ``mlp.4``); ``mlp`` is one Linear when ``nlayers == 1``;
    ``last_layer.weight_g``, ``last_layer.weight_v``. Init: Linear ``trunc_normal(0.02)``, zero
    bias (DINO ``_init_weights``).

    Shapes: x (..., in_dim) -> (..., out_dim).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256, nlayers: int = 3, norm_last_layer: bool = True,
                 use_bn: bool = False, act: str = "gelu"):
        super().__init__()
        nlayers = max(nlayers, 1)
        self.norm_last_layer = norm_last_layer
        if nlayers == 1:
            self.mlp = Linear(in_dim, bottleneck_dim)
        else:
            layers: list[Module] = [Linear(in_dim, hidden_dim)]
            if use_bn:
                layers.append(BatchNorm1d(hidden_dim, sync=True))
            layers.append(Activation(act))
            for _ in range(nlayers - 2):
                layers.append(Linear(hidden_dim, hidden_dim))
                if use_bn:
                    layers.append(BatchNorm1d(hidden_dim, sync=True))
                layers.append(Activation(act))
            layers.append(Linear(hidden_dim, bottleneck_dim))
            self.mlp = Sequential(*layers)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad = False

    def forward(self, x: Any) -> Tensor:
        h = self.mlp(x)  # (..., bottleneck)
        z = F.normalize(h, axis=-1)  # on the unit sphere
        return self.last_layer(z)  # (..., out_dim): cosines to the prototypes, times g


def cancel_last_layer_gradients(model: Module) -> None:
    """DINO's ``utils.cancel_gradients_last_layer``: drop the gradient of every parameter
    whose name contains ``last_layer`` (call it between backward and the optimiser step during
    the first ``freeze_last_layer`` epochs; the optimiser then skips them)."""
    for name, p in model.named_parameters():
        if "last_layer" in name:
            p.grad = None


class MLMHead(Module):
    """BERT's masked-LM head (``run_pretraining.py: get_masked_lm_output``):
    $z = \\mathrm{LN}(\\mathrm{act}(h W_d + b_d)) E^\\top + b$, the output tied to the input
    token embedding E (V, D) with an output-only bias.

    ``embedding_weight`` is the encoder's ``token_embed.weight`` Parameter; it is *shared*,
    not registered here (the encoder owns, saves and moves it). Parameters: ``dense`` (D, D),
    ``norm`` (BERT's LayerNorm, eps 1e-12), ``bias`` (V,). ``act``: BERT's GELU ("gelu_tanh" is
    Google's original; HF uses the erf form, the default here).

    Shapes: h (..., D) -> logits (..., V).
    """

    def __init__(self, dim: int, vocab_size: int, embedding_weight: Tensor, eps: float = 1e-12,
                 act: str = "gelu"):
        super().__init__()
        if tuple(embedding_weight.shape) != (vocab_size, dim):
            raise ValueError(
                f"MLMHead: embedding_weight must be (vocab_size, dim) = {(vocab_size, dim)}, got "
                f"{tuple(embedding_weight.shape)}"
            )
        if act not in ACTIVATIONS:
            raise ValueError(f"MLMHead: unknown act {act!r}; expected one of {ACTIVATIONS}")
        self.act = act
        self.dense = Linear(dim, dim)
        self.norm = LayerNorm(dim, eps=eps)
        self.bias = Parameter(zeros(vocab_size))
        object.__setattr__(self, "embedding_weight", embedding_weight)  # tied, not owned

    def forward(self, h: Any) -> Tensor:
        x = self.norm(activation(self.dense(h), self.act))  # (..., D)
        return x @ self.embedding_weight.T + self.bias  # (..., V)


class ProjectionHead(Linear):
    """A linear projection $y = x W (+ b)$, bias-free by default: CLIP's ``proj`` /
    ``text_projection`` into the joint embedding, or (``bias=True``) a linear probe on frozen
    features. Parameters ``weight`` (in, out) [``bias`` (out,)].

    Shapes: x (..., in_dim) -> (..., out_dim).
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = False):
        super().__init__(in_dim, out_dim, bias=bias)


class MIMPixelHead(Module):
    """Predicts each patch's pixels from its token: MAE's ``decoder_pred`` (Linear(D, p*p*C)),
    the same per patch as SimMIM's 1x1 conv + PixelShuffle. Outputs are in ``patchify``'s
    (i, j, channel) order, the target layout of ``mim_pixel_loss``.

    Parameters ``proj`` (D, p*p*C). Shapes: x (B, N, D) -> (B, N, p*p*C).
    """

    def __init__(self, dim: int, patch_size: int, in_chans: int = 3):
        super().__init__()
        self.patch_size, self.in_chans = patch_size, in_chans
        self.proj = Linear(dim, patch_size * patch_size * in_chans)

    def forward(self, x: Any) -> Tensor:
        return self.proj(x)


class MIMTokenHead(Module):
    """BEiT's ``lm_head``: logits over K discrete visual tokens for each patch (the targets of
    ``mim_token_loss``, e.g. from ``kmeans_codebook``).

    Parameters ``lm_head`` (D, K). Shapes: x (B, N, D) -> (B, N, K).
    """

    def __init__(self, dim: int, num_tokens: int):
        super().__init__()
        self.lm_head = Linear(dim, num_tokens)

    def forward(self, x: Any) -> Tensor:
        return self.lm_head(x)
