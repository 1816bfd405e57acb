"""Map timm / DINO / DINOv2 ViT state dicts (torch layout, as NumPy arrays) onto ours.

Our names are timm's (design §3), so the conversion is about orientation, not names:

- a torch ``Linear`` weight is stored (out, in) and applied as ``x W^T``; ours is (in, out)
  and applied as ``x W``, so every 2-D ``*.weight`` is transposed;
- ``patch_embed.proj.weight`` is a Conv2d kernel (D, C, p, p) (timm layers/patch_embed.py,
  PatchEmbed); a stride-p convolution is the Linear ``patches @ W.reshape(D, -1).T`` on
  patches flattened in (channel, row, col) order (each output is the sum over c, i, j of
  W[d, c, i, j] x[c, i, j]), which is how our ``nn.PatchEmbed`` flattens them, so it becomes
  ``W.reshape(D, C*p*p).T``;
- DINO's / DINOv2's projection head (``head.*`` in a training checkpoint; facebookresearch/dino
  vision_transformer.py, DINOHead) ends in ``last_layer = weight_norm(nn.Linear(bottleneck,
  out_dim, bias=False))``, saved as ``last_layer.weight_v`` (out, bottleneck) and
  ``last_layer.weight_g`` (out, 1); torch applies ``x @ (g * v / ||v||_row).T``. Our
  ``models.WeightNormLinear`` holds the transposes, ``weight_v`` (bottleneck, out) and
  ``weight_g`` (1, out), normalised per column, so both are transposed (a 1-D (out,) g is
  reshaped to (1, out)). The names torch >= 2.1's ``parametrizations.weight_norm`` saves,
  ``*.parametrizations.weight.original0`` (g) and ``.original1`` (v), map to ``*.weight_g``
  and ``*.weight_v`` first. The head's MLP Linears are ordinary 2-D ``*.weight``;
- DINOv2's ``mask_token`` (only used by iBOT training) is dropped unless the target has one,
  as timm's ``_convert_dinov2``; training checkpoints' ``module.`` / ``backbone.`` prefixes
  are stripped, and DINOv2's chunked ``blocks.{chunk}.{i}.`` become ``blocks.{i}.``;
- registers: DINOv2's ``register_tokens`` (1, R, D) keep their name; timm's ``reg_token``
  (1, R, D) is renamed ``register_tokens``. timm's register models are built with
  ``no_embed_class=True`` (timm models/vision_transformer.py, ``_convert_dinov2`` and
  ``_pos_embed``): their ``pos_embed`` (1, N, D) covers the patches only and the CLS token gets
  no position. Ours always has a CLS row, so a ``pos_embed`` whose token count is a perfect
  square N = g^2 (never the 1 + g^2 of a table with a CLS row) gets a zero CLS row prepended:
  CLS + 0 is CLS, and resampling touches only the grid rows, so the forward is unchanged at
  every resolution. timm's ``norm_pre`` (CLIP-style ``pre_norm``) keeps its name.

Per key, torch layout -> ours:

=================================  ==========================================================
checkpoint key (shape)             ours (shape)
=================================  ==========================================================
``cls_token`` (1, 1, D)            ``cls_token`` unchanged
``pos_embed`` (1, 1+N, D)          ``pos_embed`` unchanged; (1, N, D): zero CLS row prepended
``register_tokens`` / ``reg_token``  ``register_tokens`` (1, R, D)
``mask_token`` (1, D)              ``mask_token`` if the model has one, else dropped
``patch_embed.proj.weight``        (D, C, p, p) -> (C*p*p, D); ``.bias`` (D) unchanged
``norm_pre.*`` (D)                 ``norm_pre.*`` unchanged
``blocks.{i}.norm{1,2}.*`` (D)     unchanged
``blocks.{i}.attn.qkv.weight``     (3D, D) -> (D, 3D); ``.bias`` (3D) unchanged
``blocks.{i}.attn.proj.weight``    (D, D) transposed; ``.bias`` unchanged
``blocks.{i}.ls{1,2}.gamma`` (D)   unchanged
``blocks.{i}.mlp.fc1.weight``      (hD, D) -> (D, hD); ``fc2.weight`` (D, hD) -> (hD, D)
``norm.*`` (D)                     unchanged
``head.weight`` (K, D)             (D, K) (a timm classifier); ``.bias`` unchanged
``head.mlp.{j}.weight``            transposed (DINO head, training checkpoints)
``head.last_layer.weight_v``       (K, bottleneck) -> (bottleneck, K)
``head.last_layer.weight_g``       (K, 1) or (K,) -> (1, K)
=================================  ==========================================================

Not supported yet (raise with a message): DINOv2-g's SwiGLU (``mlp.w12`` / ``mlp.w3``).
Keys we do not know pass through unchanged, so ``Module.load_state_dict(strict=True)`` names
them. Loading a ``.pth`` needs torch (zip + pickle); timm also publishes ``.safetensors``,
which ``safetensors.numpy.load_file`` reads into the dict this function takes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..autograd import Tensor
from ..backend import to_numpy

__all__ = ["convert_timm_vit_state_dict"]

_CHUNKED_BLOCK = re.compile(r"(^|\.)blocks\.\d+\.(\d+)\.")
# torch >= 2.1 parametrizations.weight_norm: original0 is the gain g, original1 the direction v
_PARAMETRIZED_WN = re.compile(r"\.parametrizations\.weight\.(original[01])$")
_PARAMETRIZED_NAMES = {"original0": ".weight_g", "original1": ".weight_v"}


def convert_timm_vit_state_dict(sd: dict[str, Any], target_keys: Iterable[str] | None = None,
                                strip_prefixes: tuple[str, ...] = ("module.", "backbone.")
                                ) -> dict[str, np.ndarray]:
    """Convert a timm/DINO/DINOv2 ViT state dict (name -> NumPy array, torch layout) to our
    ``VisionTransformer`` layout.

    Args:
        sd: the torch-layout state dict: NumPy or CuPy arrays, or Tensors (device arrays
            are copied to the host with ``backend.to_numpy``; the result is NumPy).
        target_keys: the keys of the model it will load into (``model.state_dict().keys()``);
            decides whether ``mask_token`` is kept. None drops it.
        strip_prefixes: leading prefixes removed from every key (training checkpoints).

    Shapes: Linear ``(out, in) -> (in, out)``; ``patch_embed.proj.weight``
    ``(D, C, p, p) -> (C*p*p, D)``; weight-norm ``weight_v`` ``(out, in) -> (in, out)`` and
    ``weight_g`` ``(out, 1)`` or ``(out,)`` ``-> (1, out)``; everything else unchanged.

    Raises ValueError naming the key and shape for a ``weight_v`` that is not 2-D, a
    ``weight_g`` that is not (out, 1) / (out,), or a g and v pair whose ``out`` differ.
    """
    targets = set(target_keys) if target_keys is not None else set()
    out: dict[str, np.ndarray] = {}
    for key, value in sd.items():
        name = key
        changed = True
        while changed:
            changed = False
            for prefix in strip_prefixes:
                if name.startswith(prefix):
                    name, changed = name[len(prefix):], True
        name = _CHUNKED_BLOCK.sub(r"\1blocks.\2.", name)  # blocks.{chunk}.{i}. -> blocks.{i}.
        name = _PARAMETRIZED_WN.sub(lambda m: _PARAMETRIZED_NAMES[m.group(1)], name)
        if ".mlp.w12." in name or ".mlp.w3." in name:
            raise ValueError(f"convert_timm_vit_state_dict: {key} is DINOv2-g's SwiGLU MLP, "
                             "which minitransformer does not implement")
        if name == "mask_token" and name not in targets:
            continue
        if name == "reg_token":  # timm's name for DINOv2's registers
            name = "register_tokens"
        w = to_numpy(value.data if isinstance(value, Tensor) else value)
        if name == "patch_embed.proj.weight":
            if w.ndim != 4:
                raise ValueError(f"convert_timm_vit_state_dict: {key} should be a (D, C, p, p) "
                                 f"conv kernel, got shape {w.shape}")
            D = w.shape[0]
            w = w.reshape(D, -1).T  # (D, C, p, p) -> (D, C*p*p) -> (C*p*p, D)
        elif name.endswith(".weight") and w.ndim == 2:
            w = w.T  # torch Linear (out, in) -> ours (in, out)
        elif name.endswith(".weight_v"):
            if w.ndim != 2:
                raise ValueError(f"convert_timm_vit_state_dict: {key} should be a weight-norm "
                                 f"direction (out, in), got shape {w.shape}")
            w = w.T  # torch (out, in), one norm per row -> ours (in, out), one per column
        elif name.endswith(".weight_g"):
            if not (w.ndim == 1 or (w.ndim == 2 and w.shape[1] == 1)):
                raise ValueError(f"convert_timm_vit_state_dict: {key} should be a weight-norm "
                                 f"gain (out, 1) or (out,), got shape {w.shape}")
            w = w.reshape(1, -1)  # torch (out, 1) -> ours (1, out)
        if name in out:  # e.g. "module.x" and "x" in one dict
            raise ValueError(f"convert_timm_vit_state_dict: two keys map to {name!r} after "
                             "stripping prefixes")
        out[name] = np.array(w, order="C")  # a contiguous copy (keeps 0-d shapes)
    pos = out.get("pos_embed")
    if pos is not None and "cls_token" in out and pos.ndim == 3:
        n = pos.shape[1]
        if math.isqrt(n) ** 2 == n:  # timm no_embed_class: no CLS row; give CLS a zero one
            zero = np.zeros((1, 1, pos.shape[2]), dtype=pos.dtype)
            out["pos_embed"] = np.concatenate([zero, pos], axis=1)  # (1, N, D) -> (1, 1+N, D)
    for name, g in out.items():
        if name.endswith(".weight_g"):
            v = out.get(name[:-1] + "v")
            if v is not None and v.shape[1] != g.shape[1]:
                raise ValueError(
                    f"convert_timm_vit_state_dict: {name} has {g.shape[1]} outputs but "
                    f"{name[:-1]}v has {v.shape[1]} (torch shapes (out, 1) and (out, in))")
    return out
