"""Map OpenAI CLIP / open_clip state dicts (torch layout, as NumPy arrays) onto ``models.CLIP``.

The layout is OpenAI's (openai/CLIP clip/model.py), which open_clip keeps "for checkpoint
compatibility" (mlfoundations/open_clip src/open_clip/transformer.py: ``VisionTransformer``,
``TextTransformer``, ``ResidualAttentionBlock``; src/open_clip/model.py: ``CLIP``). Torch
``nn.MultiheadAttention`` packs Q, K, V along dim 0 of ``in_proj_weight`` (3W, W), rows
[W_Q; W_K; W_V], heads contiguous inside each: the same packing as our fused ``qkv`` (timm's
``_convert_openai_clip`` renames ``in_proj_`` to ``qkv.`` with no reshuffle), so only the
orientation changes. ``{i}`` is the block index; ``{t}`` stands for ``visual.transformer`` on
the image side (ours ``visual.blocks``) and ``transformer`` on the text side (ours
``text.blocks``).

=========================================  ================================  =====================
checkpoint key (shape)                     ours (shape)                      transform
=========================================  ================================  =====================
``visual.conv1.weight`` (W, C, p, p)       ``visual.patch_embed.proj.weight``  conv -> (C*p*p, W)
``visual.conv1.bias`` (W) if any           ``visual.patch_embed.proj.bias``  copy
``visual.class_embedding`` (W)             ``visual.cls_token`` (1, 1, W)    reshape
``visual.positional_embedding`` (1+N, W)   ``visual.pos_embed`` (1, 1+N, W)  add a batch axis
``visual.ln_pre.{weight,bias}``            ``visual.norm_pre.*``             copy
``{t}.resblocks.{i}.ln_1.*``               ``blocks.{i}.norm1.*``            copy
``{t}.resblocks.{i}.attn.in_proj_weight``  ``blocks.{i}.attn.qkv.weight``    (3W, W) -> (W, 3W)
``{t}.resblocks.{i}.attn.in_proj_bias``    ``blocks.{i}.attn.qkv.bias``      copy
``{t}.resblocks.{i}.attn.out_proj.weight`` ``blocks.{i}.attn.proj.weight``   (W, W) transposed
``{t}.resblocks.{i}.attn.out_proj.bias``   ``blocks.{i}.attn.proj.bias``     copy
``{t}.resblocks.{i}.ls_1.gamma`` if any    ``blocks.{i}.ls1.gamma``          copy
``{t}.resblocks.{i}.ln_2.*``               ``blocks.{i}.norm2.*``            copy
``{t}.resblocks.{i}.mlp.c_fc.weight``      ``blocks.{i}.mlp.fc1.weight``     (4W, W) -> (W, 4W)
``{t}.resblocks.{i}.mlp.c_fc.bias``        ``blocks.{i}.mlp.fc1.bias``       copy
``{t}.resblocks.{i}.mlp.c_proj.weight``    ``blocks.{i}.mlp.fc2.weight``     (W, 4W) -> (4W, W)
``{t}.resblocks.{i}.mlp.c_proj.bias``      ``blocks.{i}.mlp.fc2.bias``       copy
``{t}.resblocks.{i}.ls_2.gamma`` if any    ``blocks.{i}.ls2.gamma``          copy
``visual.ln_post.*``                       ``visual.norm.*``                 copy
``visual.proj`` (W, E)                     ``visual_proj`` (W, E)            copy (applied x @ P)
``token_embedding.weight`` (V, Wt)         ``text.token_embed.weight``       copy
``positional_embedding`` (T, Wt)           ``text.pos_embed`` (1, T, Wt)     add a batch axis
``ln_final.*``                             ``text.norm.*``                   copy
``text_projection`` (Wt, E)                ``text_proj`` (Wt, E)             copy (applied x @ P)
``logit_scale`` ()                         ``logit_scale`` ()                copy
``attn_mask`` (T, T)                       dropped                           checked causal
``input_resolution``, ``context_length``,  dropped                           checked vs shapes
``vocab_size`` (scalars)
=========================================  ================================  =====================

``input_resolution``, ``context_length`` and ``vocab_size`` are scalars OpenAI's released
checkpoints carry beside the weights (openai/CLIP clip/model.py ``build_model`` deletes them
before loading); ``load_pretrained`` checks them against the image size, context length and
vocabulary read from the shapes, then drops them.

``attn_mask`` is open_clip's text causal mask buffer (``build_causal_mask``: -inf strictly
above the diagonal, 0 elsewhere; non-persistent in recent open_clip, so usually absent). It
is dropped after checking that it is exactly that mask, which ``TextTransformer(causal=True)``
builds itself; any other mask is an error. Everything else not in the table (open_clip's
attentional pooler, ``text_projection`` as a Linear, SigLIP's ``logit_bias``, timm-trunk
towers ``visual.trunk.*``, ...) is reported as unknown by name.

The CLIP tower activation cannot be read from the weights: OpenAI's models use QuickGELU
(``x * sigmoid(1.702 x)``), open_clip's LAION models mostly GELU (the ``*-quickgelu`` configs
set QuickGELU); ``load_pretrained`` asks for ``act=``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .keymap import Converted, KeyMap

__all__ = ["CLIP_KEYMAP", "OPENAI_METADATA", "convert_openai_clip_state_dict"]

OPENAI_METADATA = ("input_resolution", "context_length", "vocab_size")


def _block_rows(src: str, dst: str) -> list[tuple[str, str, str]]:
    s, d = src + ".resblocks.{i}.", dst + ".blocks.{i}."
    return [
        (s + "ln_1.weight", d + "norm1.weight", "copy"),
        (s + "ln_1.bias", d + "norm1.bias", "copy"),
        (s + "attn.in_proj_weight", d + "attn.qkv.weight", "linear"),
        (s + "attn.in_proj_bias", d + "attn.qkv.bias", "copy"),
        (s + "attn.out_proj.weight", d + "attn.proj.weight", "linear"),
        (s + "attn.out_proj.bias", d + "attn.proj.bias", "copy"),
        (s + "ls_1.gamma", d + "ls1.gamma", "copy"),
        (s + "ln_2.weight", d + "norm2.weight", "copy"),
        (s + "ln_2.bias", d + "norm2.bias", "copy"),
        (s + "mlp.c_fc.weight", d + "mlp.fc1.weight", "linear"),
        (s + "mlp.c_fc.bias", d + "mlp.fc1.bias", "copy"),
        (s + "mlp.c_proj.weight", d + "mlp.fc2.weight", "linear"),
        (s + "mlp.c_proj.bias", d + "mlp.fc2.bias", "copy"),
        (s + "ls_2.gamma", d + "ls2.gamma", "copy"),
    ]


CLIP_KEYMAP = KeyMap([
    ("visual.conv1.weight", "visual.patch_embed.proj.weight", "conv"),
    ("visual.conv1.bias", "visual.patch_embed.proj.bias", "copy"),
    ("visual.class_embedding", "visual.cls_token", "token"),
    ("visual.positional_embedding", "visual.pos_embed", "table"),
    ("visual.ln_pre.weight", "visual.norm_pre.weight", "copy"),
    ("visual.ln_pre.bias", "visual.norm_pre.bias", "copy"),
    *_block_rows("visual.transformer", "visual"),
    ("visual.ln_post.weight", "visual.norm.weight", "copy"),
    ("visual.ln_post.bias", "visual.norm.bias", "copy"),
    ("visual.proj", "visual_proj", "copy"),
    ("token_embedding.weight", "text.token_embed.weight", "copy"),
    ("positional_embedding", "text.pos_embed", "table"),
    *_block_rows("transformer", "text"),
    ("ln_final.weight", "text.norm.weight", "copy"),
    ("ln_final.bias", "text.norm.bias", "copy"),
    ("text_projection", "text_proj", "copy"),
    ("logit_scale", "logit_scale", "copy"),
])


def _check_causal_mask(key: str, m: np.ndarray) -> None:
    """open_clip's ``build_causal_mask``: 0 on and below the diagonal, -inf above."""
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"convert_openai_clip_state_dict: {key} should be a square (T, T) "
                         f"causal mask, got shape {m.shape}")
    above = np.triu(np.ones(m.shape, dtype=bool), k=1)
    if not (np.all(np.isneginf(m[above])) and np.all(m[~above] == 0)):
        raise ValueError(
            f"convert_openai_clip_state_dict: {key} is not the causal mask (-inf strictly "
            "above the diagonal, 0 elsewhere) that the text tower builds itself; a checkpoint "
            "with another text mask is not supported")


def convert_openai_clip_state_dict(sd: dict[str, Any]) -> Converted:
    """Convert an OpenAI / open_clip CLIP state dict (name -> NumPy array, torch layout) to
    ``models.CLIP``'s names and orientations (the table in this module's docstring).

    Returns a ``Converted``: ``arrays`` in our layout, ``unknown`` checkpoint keys (no place
    in the model), ``dropped`` (``attn_mask`` after checking it is causal). Raises ValueError
    naming the key for a patch kernel, Linear weight or table of the wrong rank, or an
    ``attn_mask`` that is not the causal mask (``load_pretrained`` re-raises it as
    ``PretrainedLoadError`` naming the family)."""
    sd = {k: np.asarray(v) for k, v in sd.items()}
    mask = sd.pop("attn_mask", None)
    meta = {k: sd.pop(k) for k in OPENAI_METADATA if k in sd}
    out = CLIP_KEYMAP.convert(sd)
    for k in meta:
        out.dropped[k] = "OpenAI's build_model metadata (a scalar), checked against the shapes"
    if mask is not None:
        _check_causal_mask("attn_mask", mask)
        out.dropped["attn_mask"] = "the text causal mask, checked; rebuilt by the text tower"
    return out
