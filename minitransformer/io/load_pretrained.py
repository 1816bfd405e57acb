"""``load_pretrained``: real pretrained checkpoints (DINOv2, DINO, timm ViT, OpenAI / open_clip
CLIP, HF BERT) as minitransformer models, with no PyTorch.

    model = load_pretrained("dinov2_vits14_reg4.safetensors")  # family from the keys
    model = load_pretrained("ViT-B-32/", family="open_clip", act="quick_gelu")
    model = load_pretrained("bert-base-uncased/")     # model.safetensors + config.json

Steps: read the source (safetensors, no pickle) -> detect the family from the keys -> infer the
configuration from the shapes (and ``config.json``) -> build the model -> convert the keys
(``torch_weights`` for ViTs, ``convert_clip``, ``convert_bert``: what each does to each key
is a table in its docstring) -> load strictly: a checkpoint key with no place in the model, a
parameter with no checkpoint key, or a shape that differs raises ``PretrainedLoadError``
naming them. The short list of keys knowingly dropped is documented per converter:

- ``mask_token`` (DINOv2) only when the model is built without one (``mask_token=False``);
- ``attn_mask`` (open_clip's text causal mask buffer), after checking it is causal, and the
  scalars ``input_resolution`` / ``context_length`` / ``vocab_size`` of OpenAI's released
  checkpoints, after checking them against the shapes;
- ``cls.seq_relationship.*`` (BERT's next-sentence head), ``embeddings.position_ids`` /
  ``token_type_ids`` (index buffers, checked), ``cls.predictions.decoder.*`` (tied, checked).

Per family (the layouts' source files: timm models/vision_transformer.py, facebookresearch/dino
vision_transformer.py, facebookresearch/dinov2 dinov2/models/vision_transformer.py,
mlfoundations/open_clip src/open_clip/transformer.py, HF transformers
models/bert/modeling_bert.py):

==============  =======================================  =====================================
family          returns                                  position resampling at another size
==============  =======================================  =====================================
``timm-vit``    ``VisionTransformer`` (+ ``head``)       by size, bicubic, antialias (timm's
                                                         ``resample_abs_pos_embed``,
                                                         ``dynamic_img_size``)
``dino``        ``VisionTransformer``; a training        by scale factor (g + 0.1) / g0,
                checkpoint (``backbone.*`` +             bicubic, no antialias (DINO
                ``head.*``): ``BackboneWithHead`` with   ``interpolate_pos_encoding``)
                a ``DINOHead``
``dinov2``      ``VisionTransformer`` (registers,        as DINO without registers; with
                layer scale, ``mask_token``)             registers by size with antialias
                                                         (hub ``*_reg``: offset 0, antialias)
``open_clip``   ``CLIP`` (``encode_image``,              none (open_clip runs at its size)
                ``encode_text``, ``logit_scale``)
``hf-bert``     ``BERT`` (``forward_tokens``,            --
                ``pooled`` with ``pooler.*``,
                ``mlm_logits`` with ``cls.predictions.*``)
==============  =======================================  =====================================

Inferred from the shapes: patch size (the kernel), image size (the position grid times the
patch), width, depth (block count), MLP ratio, qkv bias, layer scale, registers, a classifier
(``head.weight``), CLIP's embedding width, context length and vocabulary, BERT's sizes. Not in
the shapes: the head count (width / 64 in all these families, unless ``config.json`` or
``num_heads=`` says otherwise), LayerNorm eps (1e-6 for the ViT families, 1e-5 for CLIP,
``config.json``'s ``layer_norm_eps`` or 1e-12 for BERT) and, for CLIP, the activation, which
must be given unless an ``open_clip_config.json`` beside the weights says it (its
``model_cfg.quick_gelu``; it also gives the head counts): ``act="quick_gelu"`` for OpenAI's
weights, ``act="gelu"`` for most open_clip LAION models (the same for a CLIP image tower in
timm's layout, told by its ``norm_pre``; its eps is 1e-5). Every configuration field can be
overridden by keyword.

Files: ``open_clip_model.safetensors`` goes with ``open_clip_config.json``, any other weight
file (``model.safetensors``) with ``config.json``. A hub folder may hold both pairs (e.g.
timm/vit_base_patch32_clip_224.openai: timm's image tower beside open_clip's whole CLIP):
``family="open_clip"`` reads the open_clip pair, another family the other, no family raises
an error naming both files; a path to one of the files reads its own configuration.

Refused, with what to do instead: HF ``config.json`` with a ``model_type`` other than
``"bert"`` (RoBERTa & co. share BERT's key names, not its position ids); HF transformers'
``CLIPModel`` (``text_model.*`` / ``vision_model.*``: take the open_clip file of the model)
and ``Dinov2Model`` (``embeddings.patch_embeddings.*``: take DINOv2's own hub weights or
timm's); converter errors (an untied BERT decoder, a non-causal ``attn_mask``, a layer
without its key projection) come as ``PretrainedLoadError`` naming the family.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .. import backend
from ..autograd import Tensor
from ..models import (
    BERT,
    CLIP,
    BackboneWithHead,
    DINOHead,
    TextConfig,
    VisionTransformer,
    ViTConfig,
)
from ..nn import Module
from .convert_bert import POOLER, convert_hf_bert_state_dict
from .convert_clip import convert_openai_clip_state_dict
from .keymap import Converted
from .torch_weights import _CHUNKED_BLOCK, convert_timm_vit_state_dict

__all__ = ["FAMILIES", "PretrainedLoadError", "detect_family", "load_pretrained",
           "read_state_dict"]

FAMILIES = ("timm-vit", "dino", "dinov2", "open_clip", "hf-bert")
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".tar")
_WEIGHT_FILES = ("model.safetensors", "open_clip_model.safetensors")
# each weight file with its own configuration: a hub folder may hold both pairs (e.g.
# timm/vit_base_patch32_clip_224.openai: timm's image tower + config.json beside open_clip's
# whole CLIP + open_clip_config.json)
_OPEN_CLIP_WEIGHTS, _OPEN_CLIP_CONFIG = "open_clip_model.safetensors", "open_clip_config.json"
_HF_WEIGHTS, _HF_CONFIG, _HF_INDEX = ("model.safetensors", "config.json",
                                      "model.safetensors.index.json")

_CONVERT_SNIPPET = """\
    import torch
    from safetensors.torch import save_file
    sd = torch.load("{name}", map_location="cpu", weights_only=True)
    save_file({{k: v.contiguous() for k, v in sd.items()}}, "model.safetensors")
Two kinds of file need another first line:
- DINO's full training checkpoint (checkpoint.pth: student, teacher, optimizer, args) stores
  an argparse.Namespace under "args", which weights_only=True refuses. Only for a file you
  trust (weights_only=False unpickles, which can run any code the file holds):
    sd = torch.load("{name}", map_location="cpu", weights_only=False)["teacher"]
  (the released backbone-only files, e.g. dino_deitsmall16_pretrain.pth, load as above);
- OpenAI's original CLIP .pt (e.g. ViT-B-32.pt) is a TorchScript archive:
    sd = torch.jit.load("{name}", map_location="cpu").state_dict()
  then load it with act="quick_gelu".
A HF model folder: model.save_pretrained(folder) writes model.safetensors and config.json."""

_RESAMPLING = (
    "DINO v1 resamples the position grid by scale factor with a 0.1 offset and no antialias; "
    "timm resamples by size with antialias (dynamic_img_size); DINOv2 without registers as "
    "DINO, with registers as timm"
)


class PretrainedLoadError(ValueError):
    """A checkpoint that ``load_pretrained`` cannot read, recognise or load strictly."""


# ---------------------------------------------------------------------------- reading
def _torch_file_error(path: Path) -> PretrainedLoadError:
    return PretrainedLoadError(
        f"load_pretrained: {path} is a PyTorch pickle file ({path.suffix}); minitransformer "
        "reads safetensors only (no pickle, no torch). Convert it once where torch is "
        "installed:\n" + _CONVERT_SNIPPET.format(name=path.name))


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # bfloat16 has no NumPy dtype; a corrupt header
        raise PretrainedLoadError(
            f"load_pretrained: cannot read {path} as NumPy safetensors: {e} (bfloat16 weights: "
            "save them as float32 first)") from e


def _config_for(weights: Path) -> dict[str, Any] | None:
    """The configuration paired with a weight file, parsed, or None:
    ``open_clip_model.safetensors`` <-> ``open_clip_config.json``; any other weight file <->
    ``config.json`` beside it (or a lone ``open_clip_config.json``, when no
    ``open_clip_model.safetensors`` beside it claims that file)."""
    folder = weights.parent
    if weights.name == _OPEN_CLIP_WEIGHTS:
        names = [_OPEN_CLIP_CONFIG]
    else:
        names = [_HF_CONFIG]
        if not (folder / _OPEN_CLIP_WEIGHTS).is_file():
            names.append(_OPEN_CLIP_CONFIG)
    for name in names:
        if (folder / name).is_file():
            return json.loads((folder / name).read_text())
    return None


def read_state_dict(source: Any, family: str | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    """The checkpoint's arrays (torch layout) and its configuration (or None):
    ``config.json`` (HF) or ``open_clip_config.json`` (open_clip), parsed.

    ``source``: a ``.safetensors`` file (with its configuration beside it, if any:
    ``open_clip_model.safetensors`` reads ``open_clip_config.json``, another file
    ``config.json``); a folder holding ``model.safetensors`` (or the shards a
    ``model.safetensors.index.json`` lists) with ``config.json``, and/or open_clip's
    ``open_clip_model.safetensors`` with ``open_clip_config.json``; or a dict of arrays (NumPy,
    CuPy or Tensors; copied to NumPy). A folder holding both pairs is read as ``family``
    says: ``"open_clip"`` the open_clip pair, another family the other pair, None an error
    naming both files. A ``.pth`` / ``.pt`` / ``.bin`` file (or a folder holding only one)
    raises an error that shows how to convert it."""
    if isinstance(source, dict):
        out = {}
        for k, v in source.items():
            if not isinstance(k, str):
                raise PretrainedLoadError(f"load_pretrained: state-dict keys must be str, got "
                                          f"{k!r}")
            out[k] = np.asarray(backend.to_numpy(v.data if isinstance(v, Tensor) else v))
        return out, None
    if not isinstance(source, (str, os.PathLike)):
        raise PretrainedLoadError(
            "load_pretrained: source must be a .safetensors path, a model folder or a dict of "
            f"arrays, got {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise PretrainedLoadError(f"load_pretrained: {path} does not exist")
    if path.is_file():
        if path.suffix in _TORCH_SUFFIXES:
            raise _torch_file_error(path)
        if path.suffix != ".safetensors":
            raise PretrainedLoadError(f"load_pretrained: {path} is not a .safetensors file")
        return _load_safetensors(path), _config_for(path)  # its config beside it
    open_clip = (path / _OPEN_CLIP_WEIGHTS).is_file()
    hf = (path / _HF_WEIGHTS).is_file() or (path / _HF_INDEX).is_file()
    if open_clip and hf and family is None:
        raise PretrainedLoadError(
            f"load_pretrained: {path} holds two checkpoints: {_OPEN_CLIP_WEIGHTS} (with "
            f"{_OPEN_CLIP_CONFIG}: open_clip's whole CLIP) and {_HF_WEIGHTS} (with "
            f"{_HF_CONFIG}: e.g. timm's image tower or a HF model); pass family='open_clip' "
            f"for the first or the other's family for the second, or the path of the file "
            f"to load")
    if open_clip and (not hf or family == "open_clip"):
        return _load_safetensors(path / _OPEN_CLIP_WEIGHTS), _config_for(
            path / _OPEN_CLIP_WEIGHTS)
    if (path / _HF_WEIGHTS).is_file():
        return _load_safetensors(path / _HF_WEIGHTS), _config_for(path / _HF_WEIGHTS)
    index = path / _HF_INDEX
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        sd: dict[str, np.ndarray] = {}
        for shard in shards:
            sd.update(_load_safetensors(path / shard))
        return sd, _config_for(path / _HF_WEIGHTS)
    torch_files = sorted(p for p in path.iterdir() if p.suffix in _TORCH_SUFFIXES)
    if torch_files:
        raise _torch_file_error(torch_files[0])
    raise PretrainedLoadError(
        f"load_pretrained: {path} holds none of {', '.join(_WEIGHT_FILES)} "
        "(or model.safetensors.index.json)")


# ---------------------------------------------------------------------------- families
def _strip_module(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop DDP's ``module.`` prefix (DINO's student)."""
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _unsupported_layout(keys: set[str]) -> str | None:
    """What to download instead, for HF transformers layouts of models whose own (or timm's /
    open_clip's) layout is supported; None for other keys."""
    hf_clip = re.compile(r"^(text_model|vision_model)\.|(^|\.)embeddings\.(class_embedding|"
                         r"patch_embedding\.weight|token_embedding\.weight)|(^|\.)encoder\."
                         r"layers\.\d+\.self_attn\.")
    if any(hf_clip.search(k) for k in keys):
        return (
            "load_pretrained: the keys (text_model.*, vision_model.*; embeddings.class_embedding, "
            "encoder.layers.*.self_attn.*) are HF transformers' CLIPModel layout (or its "
            "CLIPTextModel / CLIPVisionModel), which is not supported. Download the open_clip "
            "file of the same model instead (open_clip_model.safetensors, e.g. from the hub repo "
            "timm/vit_base_patch32_clip_224.openai for OpenAI's ViT-B/32, or a laion/CLIP-* "
            "repo) and load it with family='open_clip' (and act='quick_gelu' for OpenAI's "
            "weights)")
    hf_vit = re.compile(r"^(\w+\.)?embeddings\.patch_embeddings\.|\.layer_scale[12]\.")
    if any(hf_vit.search(k) for k in keys):
        return (
            "load_pretrained: the keys (embeddings.patch_embeddings.*, encoder.layer.*, "
            "layer_scale1) are HF transformers' Dinov2Model / ViTModel layout, which is not "
            "supported. For DINOv2 download its own weights (facebookresearch/dinov2's hub "
            "files, e.g. dinov2_vits14_reg4_pretrain.pth, converted to safetensors) or timm's "
            "(model.safetensors of timm/vit_small_patch14_reg4_dinov2.lvd142m); for a ViT, "
            "timm's model.safetensors")
    return None


def _candidates(keys: set[str]) -> tuple[set[str], str]:
    """The families whose layout these keys fit, and what in the keys said so."""
    if any(k.startswith(("bert.", "embeddings.word_embeddings", "cls.predictions.")) for k in keys):
        return {"hf-bert"}, "HF BERT names (bert.embeddings.*, cls.predictions.*)"
    if any(k.startswith("visual.") for k in keys) or {"token_embedding.weight",
                                                       "text_projection"} <= keys:
        return {"open_clip"}, "CLIP names (visual.*, token_embedding, text_projection)"
    if any(k.startswith("backbone.") for k in keys) and any(k.startswith("head.") for k in keys):
        return {"dino"}, "a DINO training checkpoint (backbone.* and head.*)"
    if "patch_embed.proj.weight" not in keys and "backbone.patch_embed.proj.weight" not in keys:
        return set(), "none of the known layouts"
    keys = {k[len("backbone."):] if k.startswith("backbone.") else k for k in keys}
    if "register_tokens" in keys or "mask_token" in keys:
        return {"dinov2"}, "DINOv2 names (mask_token / register_tokens)"
    timm_only = sorted(k for k in keys if k in ("reg_token", "head.weight", "norm_pre.weight",
                                                 "fc_norm.weight"))
    if timm_only:
        return {"timm-vit"}, f"timm names ({', '.join(timm_only)})"
    if any(k.endswith(".ls1.gamma") for k in keys):
        return {"timm-vit", "dinov2"}, "a ViT with layer scale and no mask_token"
    return {"timm-vit", "dino"}, "a ViT backbone without a head"


def detect_family(keys: Any) -> str:
    """The family of a state dict's keys (a checkpoint's, torch layout).

    Raises ``PretrainedLoadError`` when the keys fit no family, or several that differ in
    what the keys cannot show (a DINO v1 backbone and a headless timm ViT have the same keys
    but resample positions differently), asking for ``family=``."""
    keys = set(keys)
    keys = set(_strip_module(dict.fromkeys(keys)))
    unsupported = _unsupported_layout(keys)
    if unsupported:
        raise PretrainedLoadError(unsupported)
    fits, why = _candidates(keys)
    if not fits:
        some = ", ".join(sorted(keys)[:6])
        raise PretrainedLoadError(
            f"load_pretrained: the keys ({some}, ...) match none of the families {FAMILIES}")
    if len(fits) > 1:
        raise PretrainedLoadError(
            f"load_pretrained: the keys are {why}, which fits {' and '.join(sorted(fits))} "
            f"alike; the families differ in what the keys cannot show: {_RESAMPLING}. Pass "
            f"family= one of {sorted(fits)}")
    return fits.pop()


# ---------------------------------------------------------------------------- configs
def _config(cls: type, fields: dict[str, Any], overrides: dict[str, Any], where: str) -> Any:
    """``cls(**fields, **overrides)``, with errors that name unknown override fields."""
    names = {f.name for f in dataclasses.fields(cls)}
    bad = sorted(set(overrides) - names)
    if bad:
        raise PretrainedLoadError(
            f"load_pretrained({where}): unknown override(s) {bad}; {cls.__name__} fields: "
            f"{sorted(names)}")
    missing_fields = {k: v for k, v in fields.items() if k not in names}
    if missing_fields:
        raise PretrainedLoadError(
            f"load_pretrained({where}): this {cls.__name__} has no field(s) "
            f"{sorted(missing_fields)}, needed for this checkpoint")
    try:
        return cls(**{**fields, **overrides})
    except (TypeError, ValueError) as e:
        raise PretrainedLoadError(f"load_pretrained({where}): {e}") from e


def _heads(dim: int, where: str, overrides: dict[str, Any], key: str = "num_heads") -> int:
    """Width / 64 (every family here uses 64-dim heads), unless overridden."""
    if key in overrides:
        return overrides.pop(key)
    if dim % 64:
        raise PretrainedLoadError(
            f"load_pretrained({where}): the head count is not in the weights; these families "
            f"use width / 64, but width {dim} is not a multiple of 64: pass {key}=")
    return dim // 64


def _depth(keys: Any, prefix: str) -> int:
    pat = re.compile("^" + re.escape(prefix) + r"(\d+)\.")
    idx = {int(m.group(1)) for k in keys if (m := pat.match(k))}
    if not idx:
        raise PretrainedLoadError(f"load_pretrained: no blocks ({prefix}<i>.*) in the checkpoint")
    if idx != set(range(len(idx))):
        raise PretrainedLoadError(
            f"load_pretrained: block indices {sorted(idx)} under {prefix} are not 0..{len(idx)-1}")
    return len(idx)


def _any_block(keys: Any, pattern: str) -> bool:
    """Whether ANY key fully matches ``pattern`` (a block's layout flag: qkv bias, layer
    scale). Read from every block, not block 0 alone, so that a key missing from one block is
    reported as missing there rather than as leftovers in all the others."""
    pat = re.compile(pattern)
    return any(pat.fullmatch(k) for k in keys)


def _first_block(keys: Any, prefix: str, suffix: str) -> int:
    """The lowest block index ``i`` with ``prefix + f"{i}." + suffix`` among the keys (0 when
    none has it: the error then names block 0's key)."""
    pat = re.compile(re.escape(prefix) + r"(\d+)\." + re.escape(suffix))
    idx = [int(m.group(1)) for k in keys if (m := pat.fullmatch(k))]
    return min(idx, default=0)


def _block_key(keys: Any, prefix: str, suffix: str) -> str:
    return f"{prefix}{_first_block(keys, prefix, suffix)}.{suffix}"


def _get(sd: dict[str, np.ndarray], key: str, ndim: int, where: str) -> np.ndarray:
    if key not in sd:
        raise PretrainedLoadError(f"load_pretrained({where}): the checkpoint has no {key}")
    w = sd[key]
    if w.ndim != ndim:
        raise PretrainedLoadError(
            f"load_pretrained({where}): {key} should have {ndim} dims, got shape {w.shape}")
    return w


def _grid(tokens: int, with_cls: bool, key: str, where: str) -> int:
    n = tokens - 1 if with_cls else tokens
    g = math.isqrt(max(n, 0))
    if g * g != n or g == 0:
        raise PretrainedLoadError(
            f"load_pretrained({where}): {key} holds {tokens} tokens, not "
            f"{'1 + ' if with_cls else ''}a square grid")
    return g


# ---------------------------------------------------------------------------- ViT families
def _vit_fields(sd: dict[str, np.ndarray], family: str, overrides: dict[str, Any]
                ) -> dict[str, Any]:
    """ViTConfig fields from a torch-layout ViT state dict (timm / DINO / DINOv2 names)."""
    kernel = _get(sd, "patch_embed.proj.weight", 4, family)  # (D, C, p, p)
    D, C, p = kernel.shape[0], kernel.shape[1], kernel.shape[2]
    pos = _get(sd, "pos_embed", 3, family)  # (1, 1+N, D), or (1, N, D) in timm no_embed_class
    n = pos.shape[1]
    g = _grid(n, with_cls=math.isqrt(n) ** 2 != n, key="pos_embed", where=family)
    depth = _depth(sd, "blocks.")
    swiglu = sorted(k for k in sd if re.fullmatch(r"blocks\.\d+\.mlp\.w(12|3)\.weight", k))
    if swiglu:
        raise PretrainedLoadError(
            f"load_pretrained({family}): {swiglu[0]} is DINOv2-g's SwiGLU MLP "
            "(w12, w3), which minitransformer does not implement (unsupported)")
    fc1 = _get(sd, f"blocks.{_first_block(sd, 'blocks.', 'mlp.fc1.weight')}.mlp.fc1.weight", 2,
               family)
    regs = sd.get("register_tokens", sd.get("reg_token"))
    fields: dict[str, Any] = dict(
        img_size=g * p, patch_size=p, in_chans=C, dim=D, depth=depth,
        num_heads=_heads(D, family, overrides), mlp_ratio=fc1.shape[0] / D,
        qkv_bias=_any_block(sd, r"blocks\.\d+\.attn\.qkv\.bias"), eps=1e-6, act="gelu",
        layer_scale=1.0 if _any_block(sd, r"blocks\.\d+\.ls[12]\.gamma") else None,
        patch_bias="patch_embed.proj.bias" in sd,
        num_classes=sd["head.weight"].shape[0] if "head.weight" in sd else 0,
    )
    if regs is not None:
        fields["num_register_tokens"] = regs.shape[1]
    if any(k.startswith("norm_pre.") for k in sd):  # a CLIP image tower, timm's pre_norm
        fields["pre_norm"] = True
        fields["eps"] = 1e-5  # timm's CLIP towers: torch's LayerNorm default, as OpenAI's
        if "act" not in overrides:
            raise PretrainedLoadError(
                f"load_pretrained({family}): norm_pre marks a CLIP image tower (timm's "
                "pre_norm), whose MLP activation is not in the weights: pass act='quick_gelu' "
                "for OpenAI's CLIP weights or act='gelu' for most LAION / open_clip ones")
    if family == "dinov2":
        fields["mask_token"] = "mask_token" in sd
    if family == "timm-vit" or (family == "dinov2" and regs is not None):
        fields.update(interpolate_offset=0.0, interpolate_antialias=True)
    else:  # DINO v1, DINOv2 without registers
        fields.update(interpolate_offset=0.1, interpolate_antialias=False)
    return fields


def _convert_vit(sd: dict[str, np.ndarray], model: Module) -> Converted:
    targets = list(model.state_dict())
    arrays = convert_timm_vit_state_dict(sd, target_keys=targets, strip_prefixes=())
    origin = {k: k for k in arrays}
    if "reg_token" in sd:
        origin["register_tokens"] = "reg_token"
    dropped = {}
    if "mask_token" in sd and "mask_token" not in arrays:
        dropped["mask_token"] = "DINOv2's iBOT mask token; the model is built without one"
    names = {"register_tokens": "register_tokens (or timm reg_token)"}
    return Converted(arrays, origin, [], dropped, lambda k: names.get(k, k))


def _build_vit(sd: dict[str, np.ndarray], family: str, overrides: dict[str, Any]
               ) -> tuple[Module, Converted]:
    # DINOv2 training checkpoints with block_chunks > 0: blocks.{chunk}.{i}. -> blocks.{i}.
    sd = {_CHUNKED_BLOCK.sub(r"\1blocks.\2.", k): v for k, v in sd.items()}
    cfg = _config(ViTConfig, _vit_fields(sd, family, overrides), overrides, family)
    model = VisionTransformer(cfg)
    return model, _convert_vit(sd, model)


def _dino_head(head: dict[str, np.ndarray]) -> tuple[DINOHead, int]:
    """A ``DINOHead`` shaped as a DINO checkpoint's ``head.*`` (facebookresearch/dino
    vision_transformer.py, DINOHead: ``mlp.{0,2,4}`` Linears, BN between with ``use_bn``,
    ``last_layer.weight_{g,v}``)."""
    if "mlp.weight" in head:  # nlayers == 1: mlp is one Linear
        linears = [head["mlp.weight"]]
        use_bn = False
    else:
        idx = sorted(int(k.split(".")[1]) for k in head
                     if re.match(r"^mlp\.\d+\.weight$", k) and head[k].ndim == 2)
        linears = [head[f"mlp.{j}.weight"] for j in idx]
        use_bn = any(k.endswith("running_mean") for k in head)
    v = head.get("last_layer.weight_v", head.get("last_layer.parametrizations.weight.original1"))
    if not linears or v is None:
        raise PretrainedLoadError(
            "load_pretrained(dino): head.* should hold DINO's head (mlp.*.weight and "
            "last_layer.weight_v); got " + ", ".join(sorted(head)[:8]))
    in_dim = linears[0].shape[1]  # torch (out, in)
    hidden = linears[0].shape[0] if len(linears) > 1 else 2048
    module = DINOHead(in_dim, v.shape[0], hidden_dim=hidden, bottleneck_dim=linears[-1].shape[0],
                      nlayers=len(linears), use_bn=use_bn)
    return module, in_dim


def _build_dino_training(sd: dict[str, np.ndarray], overrides: dict[str, Any]
                         ) -> tuple[Module, Converted]:
    bb = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    hd = {k[len("head."):]: v for k, v in sd.items() if k.startswith("head.")}
    others = [k for k in sd if not k.startswith(("backbone.", "head."))]
    backbone, conv = _build_vit(bb, "dino", overrides)
    head, in_dim = _dino_head(hd)
    if in_dim != backbone.cfg.dim:
        raise PretrainedLoadError(
            f"load_pretrained(dino): head.mlp's input width {in_dim} differs from the "
            f"backbone width {backbone.cfg.dim}")
    model = BackboneWithHead(backbone, head)
    head_arrays = convert_timm_vit_state_dict(hd, strip_prefixes=())
    arrays = {"backbone." + k: v for k, v in conv.arrays.items()}
    arrays.update({"head." + k: v for k, v in head_arrays.items()})
    origin = {"backbone." + k: "backbone." + v for k, v in conv.origin.items()}
    origin.update({"head." + k: "head." + k for k in head_arrays})
    dropped = {"backbone." + k: why for k, why in conv.dropped.items()}
    return model, Converted(arrays, origin, others, dropped, lambda k: k)


# ---------------------------------------------------------------------------- CLIP
def _open_clip_settings(config: dict[str, Any] | None, sd: dict[str, np.ndarray]
                        ) -> dict[str, Any]:
    """What an ``open_clip_config.json`` says that the weights cannot: the activation
    (``model_cfg.quick_gelu``, False by default as open_clip's ``CLIP``) and the head counts
    (open_clip's ``CLIPVisionCfg.head_width`` 64 and ``CLIPTextCfg.heads`` 8 by default,
    open_clip src/open_clip/model.py). Empty without such a file."""
    model_cfg = (config or {}).get("model_cfg")
    if not isinstance(model_cfg, dict):
        return {}
    vision, text = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    width = sd["visual.conv1.weight"].shape[0] if "visual.conv1.weight" in sd else None
    out = {"act": "quick_gelu" if model_cfg.get("quick_gelu", False) else "gelu",
           "text_num_heads": text.get("heads", 8)}
    if width is not None:
        out["vision_num_heads"] = width // vision.get("head_width", 64)
    return out


def _build_clip(sd: dict[str, np.ndarray], config: dict[str, Any] | None,
                overrides: dict[str, Any]) -> tuple[Module, Converted]:
    where = "open_clip"
    for k, v in _open_clip_settings(config, sd).items():
        if k not in overrides and not (k.endswith("num_heads") and "num_heads" in overrides):
            overrides[k] = v
    if "act" not in overrides:
        raise PretrainedLoadError(
            "load_pretrained(open_clip): the MLP activation is not in the weights (and no "
            "open_clip_config.json says it); pass act='quick_gelu' for OpenAI's CLIP weights "
            "(and open_clip's *-quickgelu models) or act='gelu' for most open_clip LAION models")
    if any(k.startswith("visual.trunk.") for k in sd):
        raise PretrainedLoadError(
            "load_pretrained(open_clip): visual.trunk.* is a timm image tower inside open_clip, "
            "which is not supported (only the OpenAI layout: visual.conv1, "
            "visual.transformer.resblocks.*)")
    shared = {k: overrides.pop(k) for k in list(overrides)
              if not k.startswith(("vision_", "text_"))}
    vis_over = {k[len("vision_"):]: overrides.pop(k) for k in list(overrides)
                if k.startswith("vision_")}
    txt_over = {k[len("text_"):]: overrides.pop(k) for k in list(overrides)}
    vfields_names = {f.name for f in dataclasses.fields(ViTConfig)}
    tfields_names = {f.name for f in dataclasses.fields(TextConfig)}
    unknown = sorted(k for k in shared if k not in vfields_names | tfields_names
                     and k != "embed_dim")
    if unknown:
        raise PretrainedLoadError(
            f"load_pretrained(open_clip): unknown override(s) {unknown}; fields of ViTConfig "
            "or TextConfig apply to both towers, vision_<field> / text_<field> to one")
    embed_dim = shared.pop("embed_dim", None)
    for k, v in shared.items():
        if k in vfields_names:
            vis_over.setdefault(k, v)
        if k in tfields_names:
            txt_over.setdefault(k, v)

    kernel = _get(sd, "visual.conv1.weight", 4, where)  # (W, C, p, p)
    W, C, p = kernel.shape[0], kernel.shape[1], kernel.shape[2]
    vpos = _get(sd, "visual.positional_embedding", 2, where)  # (1+N, W)
    g = _grid(vpos.shape[0], True, "visual.positional_embedding", where)
    vfc = _get(sd, _block_key(sd, "visual.transformer.resblocks.", "mlp.c_fc.weight"), 2, where)
    vfields = dict(
        img_size=g * p, patch_size=p, in_chans=C, dim=W,
        depth=_depth(sd, "visual.transformer.resblocks."),
        num_heads=_heads(W, where, vis_over), mlp_ratio=vfc.shape[0] / W,
        qkv_bias=_any_block(sd, r"visual\.transformer\.resblocks\.\d+\.attn\.in_proj_bias"),
        eps=1e-5, patch_bias="visual.conv1.bias" in sd,
        layer_scale=1.0 if _any_block(
            sd, r"visual\.transformer\.resblocks\.\d+\.ls_[12]\.gamma") else None,
    )
    if any(k.startswith("visual.ln_pre.") for k in sd):
        vfields["pre_norm"] = True
    tok = _get(sd, "token_embedding.weight", 2, where)  # (V, Wt)
    tpos = _get(sd, "positional_embedding", 2, where)  # (T, Wt)
    Wt = tok.shape[1]
    tfc = _get(sd, _block_key(sd, "transformer.resblocks.", "mlp.c_fc.weight"), 2, where)
    tfields = dict(
        vocab_size=tok.shape[0], context_length=tpos.shape[0], dim=Wt,
        depth=_depth(sd, "transformer.resblocks."), num_heads=_heads(Wt, where, txt_over),
        mlp_ratio=tfc.shape[0] / Wt, causal=True, pool="eot",
        qkv_bias=_any_block(sd, r"transformer\.resblocks\.\d+\.attn\.in_proj_bias"), eps=1e-5,
        layer_scale=1.0 if _any_block(sd, r"transformer\.resblocks\.\d+\.ls_[12]\.gamma")
        else None,
    )
    vcfg = _config(ViTConfig, vfields, vis_over, where)
    tcfg = _config(TextConfig, tfields, txt_over, where)
    if embed_dim is None:
        embed_dim = _get(sd, "visual.proj", 2, where).shape[1]  # (W, E)
    inferred = {"input_resolution": vcfg.img_size, "context_length": tcfg.context_length,
                "vocab_size": tcfg.vocab_size}
    clash = [f"{k}={int(np.asarray(sd[k]))} (weights: {v})" for k, v in inferred.items()
             if k in sd and int(np.asarray(sd[k])) != v]
    if clash:
        raise PretrainedLoadError(
            "load_pretrained(open_clip): the checkpoint's metadata disagrees with its weights: "
            + "; ".join(clash))
    try:
        model = CLIP(vcfg, tcfg, embed_dim)
    except ValueError as e:
        raise PretrainedLoadError(f"load_pretrained(open_clip): {e}") from e
    return model, convert_openai_clip_state_dict(sd)


# ---------------------------------------------------------------------------- BERT
_ROBERTA = (
    ": RoBERTa's positions start at padding_idx + 1 (real tokens get position ids "
    "padding_idx + 1, + 2, ..., padding gets padding_idx: HF modeling_roberta.py "
    "create_position_ids_from_input_ids), its "
    "position table is 2 rows longer, its token-type table has 1 row and its LayerNorm eps is "
    "1e-5: it would load as BERT and give wrong outputs")
_HF_ACTS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
            "relu": "relu", "quick_gelu": "quick_gelu"}


def _build_bert(sd: dict[str, np.ndarray], config: dict[str, Any] | None,
                overrides: dict[str, Any]) -> tuple[Module, Converted]:
    where = "hf-bert"
    cfg_json = dict(config or {})
    model_type = cfg_json.get("model_type", "bert")
    if model_type != "bert":
        raise PretrainedLoadError(
            f"load_pretrained(hf-bert): config.json says model_type={model_type!r}; only "
            "'bert' is supported. Other BERT-like models share the key names but not the "
            "math" + (_ROBERTA if model_type in ("roberta", "xlm-roberta", "camembert") else
                      ", so they would load and give wrong outputs"))
    conv = convert_hf_bert_state_dict(sd)
    a = conv.arrays
    if cfg_json.get("position_embedding_type", "absolute") != "absolute":
        raise PretrainedLoadError(
            f"load_pretrained(hf-bert): position_embedding_type="
            f"{cfg_json['position_embedding_type']!r} is not supported (only 'absolute')")
    words = a.get("encoder.token_embed.weight")
    if words is None:
        raise PretrainedLoadError("load_pretrained(hf-bert): the checkpoint has no "
                                  "bert.embeddings.word_embeddings.weight")
    V, D = words.shape
    P = _get(a, "encoder.pos_embed", 3, where).shape[1]
    types = a.get("encoder.type_embed.weight")
    fc1 = _get(a, _block_key(a, "encoder.blocks.", "mlp.fc1.weight"), 2, where)  # ours (D, I)
    depth = _depth(a, "encoder.blocks.")
    shapes = {"vocab_size": V, "hidden_size": D, "max_position_embeddings": P,
              "num_hidden_layers": depth, "intermediate_size": fc1.shape[1],
              "type_vocab_size": 0 if types is None else types.shape[0]}
    clash = [f"{k}={cfg_json[k]} (weights: {v})" for k, v in shapes.items()
             if k in cfg_json and cfg_json[k] != v]
    if clash:
        raise PretrainedLoadError(
            "load_pretrained(hf-bert): config.json disagrees with the weights: " + "; ".join(clash))
    if "num_heads" not in overrides and "num_attention_heads" in cfg_json:
        overrides["num_heads"] = cfg_json["num_attention_heads"]
    hidden_act = cfg_json.get("hidden_act", "gelu")
    if "act" not in overrides and hidden_act not in _HF_ACTS:
        raise PretrainedLoadError(
            f"load_pretrained(hf-bert): hidden_act={hidden_act!r} is not supported; known: "
            f"{sorted(_HF_ACTS)}")
    pooler = overrides.pop("pooler", any(k.startswith(POOLER + ".") for k in a))
    mlm_head = overrides.pop("mlm_head", any(k.startswith("mlm_head.") for k in a))
    fields = dict(
        vocab_size=V, context_length=P, dim=D, depth=depth, num_heads=_heads(D, where, overrides),
        mlp_ratio=fc1.shape[1] / D, causal=False, pool="cls",
        qkv_bias=_any_block(a, r"encoder\.blocks\.\d+\.attn\.qkv\.bias"), norm_first=False,
        eps=cfg_json.get("layer_norm_eps", 1e-12), act=_HF_ACTS.get(hidden_act, "gelu"),
        type_vocab_size=shapes["type_vocab_size"], embed_norm=True, final_norm=False,
    )
    cfg = _config(TextConfig, fields, overrides, where)
    return BERT(cfg, pooler=bool(pooler), mlm_head=bool(mlm_head)), conv


# ---------------------------------------------------------------------------- loading
def _strict_load(model: Module, conv: Converted, family: str) -> None:
    """Load ``conv.arrays`` into ``model``: every key used, every parameter set, every shape
    equal, else one error that names them all (checkpoint names where they differ)."""
    targets = model.state_dict()
    left = list(conv.unknown)
    for k in conv.arrays:  # a fused key (BERT's q, k, v -> qkv) names each checkpoint key
        if k not in targets:
            left.extend(conv.origin.get(k, k).split(", "))
    missing = [k for k in targets if k not in conv.arrays]
    shapes = [
        f"{conv.origin.get(k, k)} -> {k}: checkpoint {tuple(w.shape)} (in our layout) vs model "
        f"{tuple(targets[k].shape)}"
        for k, w in conv.arrays.items() if k in targets and w.shape != targets[k].shape
    ]
    if left or missing or shapes:
        lines = [f"load_pretrained({family}): the checkpoint does not fit the model strictly:"]
        if left:
            lines.append(f"  keys left over, no place in the model ({len(left)}): "
                         + ", ".join(left))
        if missing:
            named = []
            for k in missing:
                src = conv.source_of(k)
                named.append(k if src in (None, k) else f"{k} (checkpoint key {src})")
            lines.append(f"  keys missing from the checkpoint ({len(missing)}): "
                         + ", ".join(named))
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): " + "; ".join(shapes)
                         + " (an override such as num_heads= / mlp_ratio= may not fit)")
        raise PretrainedLoadError("\n".join(lines))
    model.load_state_dict(conv.arrays, strict=True)


def _build(sd: dict[str, np.ndarray], config: dict[str, Any] | None, family: str,
           overrides: dict[str, Any]) -> tuple[Module, Converted]:
    """The model for ``family`` and the checkpoint converted to its names."""
    if family == "open_clip":
        return _build_clip(sd, config, overrides)
    if family == "hf-bert":
        return _build_bert(sd, config, overrides)
    if family == "dino" and any(k.startswith("head.") for k in sd):
        return _build_dino_training(sd, overrides)
    if family in ("dino", "dinov2") and any(k.startswith("backbone.") for k in sd):
        sd = {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in sd.items()}
    return _build_vit(sd, family, overrides)


def load_pretrained(source: Any, family: str | None = None, *, dtype: Any = None,
                    device: Any = None, **overrides: Any) -> Module:
    """A pretrained checkpoint as a ready model (eval mode), loaded strictly.

    Args:
        source: a ``.safetensors`` file, a model folder (``model.safetensors`` or
            ``open_clip_model.safetensors``, each with its own configuration file; see the
            module docstring for a folder holding both), or a dict of arrays in the
            checkpoint's own torch layout. ``.pth`` / ``.bin`` files are refused
            with the snippet that converts them.
        family: ``"timm-vit"``, ``"dino"``, ``"dinov2"``, ``"open_clip"`` or ``"hf-bert"``;
            detected from the keys when None (an error asks for it when the keys fit two).
        dtype: the parameters' dtype; default the library default (``mt.set_default_dtype``).
        device: where the model goes ("cpu", "cuda"); default the default device.
        **overrides: any field of the configuration (``ViTConfig`` / ``TextConfig``), e.g.
            ``num_heads=6``; for CLIP ``act=`` is required (unless an
            ``open_clip_config.json`` says it), an unprefixed field applies to both towers and
            ``vision_<field>`` / ``text_<field>`` to one. For BERT, ``pooler=`` and
            ``mlm_head=`` override what the keys say (``pooler.*``, ``cls.predictions.*``:
            a plain ``BertModel`` checkpoint has no MLM head).

    Returns a ``VisionTransformer``, a ``BackboneWithHead`` (DINO training checkpoint), a
    ``CLIP`` or a ``BERT`` (see the module docstring), in eval mode.
    """
    if family is not None and family not in FAMILIES:
        raise PretrainedLoadError(
            f"load_pretrained: unknown family {family!r}; expected one of {FAMILIES}")
    sd, config = read_state_dict(source, family)
    sd = _strip_module(sd)
    unsupported = _unsupported_layout(set(sd))
    if unsupported:
        raise PretrainedLoadError(unsupported)
    fits, why = _candidates(set(sd))
    if family is None:
        family = detect_family(sd.keys())
    elif family not in fits:
        hint = f" (they fit {', '.join(sorted(fits))})" if fits else ""
        raise PretrainedLoadError(
            f"load_pretrained: family={family!r} does not match the checkpoint: its keys are "
            f"{why}{hint}")
    try:
        model, conv = _build(sd, config, family, dict(overrides))
    except PretrainedLoadError:
        raise
    except ValueError as e:  # a converter's or a model's check: the family says whose
        raise PretrainedLoadError(f"load_pretrained({family}): {e}") from e
    model.to(dtype=dtype or backend.get_default_dtype())
    _strict_load(model, conv, family)
    model.dropped_keys = dict(conv.dropped)  # what was knowingly left out, and why
    if device is not None:
        model.to(device=device)
    return model.eval()
