"""Generate the reference fixtures of the real libraries (issue 12), by hand; CI never runs this.

CI has no PyTorch. To test that ``minitransformer.io.load_pretrained`` reproduces the real
models, this script builds TINY random-init models with each family's own library, in float64,
and writes, under ``tests/fixtures/interop/<name>/``:

- ``model.safetensors``: the state dict in the library's own torch layout and key names, as the
  library saves it (HF: ``save_pretrained``, which also writes ``config.json``; the others:
  ``safetensors.torch.save_file(model.state_dict())``);
- ``io.npz``: the fixed inputs and the reference outputs, float64;
- ``meta.json``: the family, constructor arguments, library versions, repository commits, what
  each npz array is (shape, dtype, how it was computed) and every file of the fixture;
- ``tokenizer.json`` (``hf-bert``, ``open_clip``): a tiny HF ``tokenizers`` tokenizer (WordPiece,
  BPE) whose vocabulary size is the model's; its vocabulary is learnt here from a few sentences,
  deterministically (``tokenizers``' own trainers are not reproducible), and ``tokenizers``
  does the encoding.

Fixtures (``<name>``: family, what it is):

- ``timm-vit``: ``timm.models.vision_transformer.VisionTransformer`` (img 32, patch 8, dim 32,
  depth 2, heads 2, 5 classes, ``dynamic_img_size=True``) at 32x32, 48x40 and 24x24.
- ``dino``: DINO v1 ``vision_transformer.vit_small``'s settings at dim 32 (qkv bias, LayerNorm
  eps 1e-6) + ``DINOHead(32, 64, use_bn=False, hidden_dim=48, bottleneck_dim=16)``, saved as
  the ``teacher`` entry of a DINO training checkpoint (``utils.MultiCropWrapper``: keys
  ``backbone.*``, ``head.*``; the head's last layer under ``torch.nn.utils.weight_norm``, as
  DINO's code calls it: ``head.last_layer.weight_g`` / ``weight_v``), at 32x32 and 48x40.
- ``dino-bn``: the same with ``use_bn=True`` (BatchNorm1d in eval mode, with random running
  statistics), at 32x32 only (it differs from ``dino`` in the head only). DINO's
  ``main_dino.py`` wraps a teacher that has batch norms in ``DistributedDataParallel`` (for
  SyncBatchNorm), so its checkpoint's teacher keys start with ``module.``; DDP needs a process
  group, so the script adds that prefix to the keys itself.
- ``dinov2``: ``DinoVisionTransformer`` (patch 8, img 32, dim 32, depth 2, heads 2, layer scale,
  ``MemEffAttention`` blocks, ``block_chunks=0`` as the hub models; patch 8 rather than the
  real 14 keeps the fixture small) without registers (its defaults: ``interpolate_offset=0.1``,
  ``interpolate_antialias=False``) at 32x32, 48x40 and 24x24, plus a forward with a patch mask
  (mask token).
- ``dinov2-reg``: the same with ``num_register_tokens=4, interpolate_antialias=True,
  interpolate_offset=0.0`` (as its hub ``dinov2_vit*14_reg``).
- ``open_clip``: ``open_clip.CLIP`` (embed 24; image 32, patch 8, width 32, 2 layers, 2 heads;
  text context 16, vocab = the tokenizer's, width 32, 2 heads, 2 layers; ``quick_gelu=True``:
  OpenAI layout) with a byte-pair tokenizer whose end-of-text id is the largest id, as CLIP's.
- ``hf-bert``: ``transformers.BertForPreTraining`` (hidden 32, 2 layers, 2 heads, intermediate
  64, 24 positions, 2 token types, vocab = the WordPiece tokenizer's) with ``save_pretrained``.

All ViT-style towers use an MLP ratio of 2 (hidden 64, as the BERT fixture's intermediate size)
rather than the real 4: it halves the MLP weights (the fixtures stay under 3 MB) and makes the
loader infer the ratio from the shapes instead of assuming 4.

Every model is made with a fixed torch seed, converted with ``.double()``, put in eval mode; then
the parameters are re-drawn so that a wrong mapping cannot pass by accident: every Linear/Conv
weight ~ N(0, 1/fan_in) (signals of order 1 through the blocks, attention far from uniform), and
every parameter that its library initialises to a constant or to almost zero (LayerNorm weights
and biases, biases, layer-scale gammas, the CLS/register/mask tokens, ``logit_scale``,
``weight_g``, BatchNorm statistics) gets random values (``perturb_``).

Two libraries cast the position table to float32 before resampling it at another input size:
timm's ``resample_abs_pos_embed`` (``posemb = posemb.float()``) and DINOv2's
``DinoVisionTransformer.interpolate_pos_encoding`` (``pos_embed = self.pos_embed.float()``).
A float64 reference at a second size needs that cast removed, so the script re-defines each of
these two functions from its own source with only that line changed (``_patch_source``; it
fails if the line is not found exactly once). ``meta.json`` says so and records how far the
unpatched (float32) output is from the float64 one.

After writing, each fixture is checked: a fresh model (another seed) loads ``model.safetensors``
strictly (HF: ``from_pretrained`` with no missing or unexpected key) and reproduces one reference
output (``reload_check_max_abs_error`` in ``meta.json``).

Attention probabilities: DINO v1 has ``get_last_selfattention``. timm's ``Attention`` is run on
its non-fused path (``fused_attn = False``) and the probabilities are read by a forward hook on
the last block's ``attn.attn_drop`` (identity in eval). DINOv2 has no such method (its attention
is ``scaled_dot_product_attention``): they are computed as ``softmax(q k^T * scale)`` from the
last block's ``norm1`` output (a forward hook) with that block's ``attn.qkv``.

Install and run (from the repository root)::

    pip install -e ".[interop]"          # torch, torchvision, timm, open_clip_torch,
                                         # transformers, safetensors, tokenizers
    git clone https://github.com/facebookresearch/dino /tmp/dino
    git clone https://github.com/facebookresearch/dinov2 /tmp/dinov2
    XFORMERS_DISABLED=1 python -m tests.interop.make_fixtures \\
        --dino-repo /tmp/dino --dinov2-repo /tmp/dinov2

Only the model code of the two repositories is imported (nothing of theirs is copied here);
their commits come from ``git rev-parse HEAD`` in each folder, or ``--dino-commit`` /
``--dinov2-commit`` for an exported tree. ``--only NAME ...`` regenerates some fixtures. The
output is reproducible: a second run writes the same bytes (the npz members carry a fixed
timestamp).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np

# xFormers would replace DINOv2's attention by its own kernels (float32/16 only).
os.environ.setdefault("XFORMERS_DISABLED", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "interop"
SEED = 0
ALL = ("timm-vit", "dino", "dino-bn", "dinov2", "dinov2-reg", "open_clip", "hf-bert")

# Parameters (by name fragment) that are tokens: re-drawn as N(0, 0.5^2) whatever their init.
_TOKENS = ("cls_token", "register_tokens", "reg_token", "mask_token", "class_embedding")


# --------------------------------------------------------------------------------- helpers
def versions() -> dict:
    out = {"python": sys.version.split()[0], "numpy": np.__version__}
    for name in ("torch", "torchvision", "timm", "open_clip", "transformers", "safetensors",
                 "tokenizers"):
        try:
            mod = importlib.import_module(name)
            out[name] = getattr(mod, "__version__", "unknown")
        except ImportError:
            out[name] = None
    return out


def repo_commit(path: Path, given: str | None) -> str:
    if given:
        return given
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError) as err:
        raise SystemExit(f"{path} is not a git checkout: pass its commit with --*-commit") from err


def _patch_source(func, old: str, new: str):
    """Re-define ``func`` from its own source with the line ``old`` replaced by ``new``."""
    src = textwrap.dedent(inspect.getsource(func))
    if src.count(old) != 1:
        raise RuntimeError(f"{func.__qualname__}: expected the line {old!r} exactly once")
    namespace: dict = {}
    exec(compile(src.replace(old, new), inspect.getsourcefile(func), "exec"),  # noqa: S102
         func.__globals__, namespace)
    return namespace[func.__name__]


def perturb_(model: nn.Module, gen: torch.Generator) -> list[str]:
    """Re-draw the parameters (see the module docstring); returns the names given random values
    in place of a constant, near-zero or token init."""
    changed = []
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied parameters come once
            flat = p.detach().flatten()

            def randn(*shape, _p=p):
                return torch.randn(tuple(shape), generator=gen, dtype=torch.float64).to(_p.dtype)

            leaf = name.rsplit(".", 1)[-1]
            if any(t in name for t in _TOKENS):
                p.copy_(0.5 * randn(*p.shape))
                changed.append(name)
            elif bool((flat == flat[0]).all()) or float(flat.abs().max()) < 1e-4:
                if leaf == "logit_scale":
                    p.copy_(flat[0] + 0.3 * randn(*p.shape))
                elif abs(float(flat[0]) - 1.0) < 1e-12 or leaf in ("gamma", "weight_g"):
                    p.copy_(1.0 + 0.3 * randn(*p.shape))   # norm weights, gains, layer scale
                else:
                    p.copy_(0.2 * randn(*p.shape))          # biases
                changed.append(name)
            elif p.ndim >= 2 and leaf in ("weight", "in_proj_weight", "weight_v") \
                    and "embedding" not in name:
                fan_in = p[0].numel()
                p.copy_(randn(*p.shape) / fan_in ** 0.5)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.3 * torch.randn(b.shape, generator=gen, dtype=torch.float64))
                changed.append(name)
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen, dtype=torch.float64))
                changed.append(name)
    return changed


def images(rng: np.random.Generator, batch: int, h: int, w: int) -> np.ndarray:
    return rng.standard_normal((batch, 3, h, w))


def t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def n(x: torch.Tensor) -> np.ndarray:
    return x.detach().to(torch.float64).cpu().numpy().copy()


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An uncompressed .npz with a fixed timestamp on every member (byte-reproducible)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[key], order="C"), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0)),
                        buf.getvalue())


def save_state_dict(path: Path, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file
    # clone: tied or viewed tensors share storage, which save_file refuses
    save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(path))


def write_fixture(name: str, family: str, meta: dict, arrays: dict[str, np.ndarray],
                  descriptions: dict[str, str], extra_files: list[str]) -> None:
    folder = OUT / name
    missing = set(arrays) ^ set(descriptions)
    if missing:
        raise RuntimeError(f"{name}: arrays without a description or the reverse: {missing}")
    for key, a in arrays.items():
        if a.dtype.kind == "f" and a.dtype != np.float64:
            raise RuntimeError(f"{name}: array {key} is {a.dtype}, not float64")
    save_npz(folder / "io.npz", arrays)
    meta = dict(meta)
    meta.update({
        "name": name, "family": family, "seed": SEED, "dtype": "float64",
        "versions": versions(),
        "generator": "tests/interop/make_fixtures.py",
        "files": sorted(["model.safetensors", "io.npz", "meta.json", *extra_files]),
        "arrays": {k: {"shape": list(arrays[k].shape), "dtype": str(arrays[k].dtype),
                       "what": descriptions[k]} for k in sorted(arrays)},
    })
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    for f in meta["files"]:
        if not (folder / f).is_file():
            raise RuntimeError(f"{name}: {f} listed in meta.json but not written")
    print(f"{name}: {sum((folder / f).stat().st_size for f in meta['files']) / 1e3:.0f} kB")


def fresh(name: str) -> Path:
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        f.unlink()
    return folder


def reload_check(path: Path, build, prefix: str, run, expected: np.ndarray) -> float:
    """Load the written safetensors strictly into a fresh model (other seed) and compare one
    output with the reference: the file holds exactly the weights that made the outputs."""
    from safetensors.torch import load_file
    torch.manual_seed(SEED + 7)
    fresh_model = build().double().eval()
    state = {k.removeprefix(prefix): v for k, v in load_file(str(path)).items()}
    fresh_model.load_state_dict(state, strict=True)
    with torch.no_grad():
        err = float(np.abs(n(run(fresh_model)) - expected).max())
    if err > 1e-14:
        raise RuntimeError(f"{path}: reloaded model differs from the reference by {err}")
    return err


def attention_from_qkv(x_norm: torch.Tensor, attn: nn.Module, heads: int) -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim)) from a block's norm1 output (B, T, D) -> (B, heads, T, T),
    with the block's ``attn.qkv``; checked: proj(probs @ v) equals the library's ``attn(x)``."""
    b, tokens, d = x_norm.shape
    # (B, T, 3D) -> (B, T, 3, heads, hd) -> (3, B, heads, T, hd)
    q, k, v = attn.qkv(x_norm).reshape(b, tokens, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    probs = torch.softmax((q * (d // heads) ** -0.5) @ k.transpose(-2, -1), dim=-1)
    # (B, heads, T, hd) -> (B, T, heads, hd) -> (B, T, D)
    mixed = attn.proj((probs @ v).transpose(1, 2).reshape(b, tokens, d))
    err = float((mixed - attn(x_norm)).abs().max())
    if err > 1e-12:
        raise RuntimeError(f"attention probabilities do not reproduce attn(x): {err}")
    return probs


# --------------------------------------------------------------------------------- timm
def make_timm() -> None:
    import timm.layers.pos_embed
    import timm.models.vision_transformer as tvit

    folder = fresh("timm-vit")
    kwargs = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5,
                  mlp_ratio=2.0, dynamic_img_size=True)
    torch.manual_seed(SEED)
    model = tvit.VisionTransformer(**kwargs).double().eval()
    changed = perturb_(model, torch.Generator().manual_seed(SEED + 1))
    for blk in model.blocks:
        blk.attn.fused_attn = False
    save_state_dict(folder / "model.safetensors", model.state_dict())

    original = tvit.resample_abs_pos_embed
    patched = _patch_source(timm.layers.pos_embed.resample_abs_pos_embed,
                            "posemb = posemb.float()", "posemb = posemb")
    probs = {}
    hook = model.blocks[-1].attn.attn_drop.register_forward_hook(
        lambda m, i, o: probs.__setitem__("p", o))
    rng = np.random.default_rng(SEED)
    arrays, desc, cast_err = {}, {}, {}
    for h, w in ((32, 32), (48, 40), (24, 24)):
        s = f"{h}x{w}"
        x = images(rng, 2, h, w)
        tvit.resample_abs_pos_embed = patched
        with torch.no_grad():
            feats = model.forward_features(t(x))
            logits = model.forward_head(feats)
        attn = n(probs["p"])  # read now: the unpatched forward below overwrites the hook's copy
        tvit.resample_abs_pos_embed = original
        with torch.no_grad():
            cast_err[s] = float((model.forward_features(t(x)) - feats).abs().max())
        arrays.update({f"x_{s}": x, f"features_{s}": n(feats), f"logits_{s}": n(logits),
                       f"attn_{s}": attn})
        desc.update({
            f"x_{s}": f"input images (B, 3, {h}, {w})",
            f"features_{s}": "model.forward_features(x): (B, 1 + N, D) tokens after the final "
                             "norm, CLS first",
            f"logits_{s}": "model.forward_head(features) == model(x): (B, 5)",
            f"attn_{s}": "last block's attention probabilities (B, heads, 1 + N, 1 + N): "
                         "forward hook on blocks[-1].attn.attn_drop, non-fused path",
        })
    hook.remove()

    def build_timm():
        m = tvit.VisionTransformer(**kwargs)
        for blk in m.blocks:
            blk.attn.fused_attn = False
        return m
    reload_err = reload_check(folder / "model.safetensors", build_timm, "",
                              lambda m: m.forward_features(t(arrays["x_32x32"])),
                              arrays["features_32x32"])
    write_fixture("timm-vit", "timm-vit", {
        "reload_check_max_abs_error": reload_err,
        "constructor": "timm.models.vision_transformer.VisionTransformer",
        "kwargs": kwargs,
        "defaults_that_matter": {"qkv_bias": True, "norm_eps": 1e-6, "class_token": True,
                                 "global_pool": "token", "act": "GELU (erf)"},
        "perturbed": changed,
        "resampling": "timm.layers.resample_abs_pos_embed(size=grid, bicubic, antialias=True), "
                      "with its float32 cast removed (see patched)",
        "patched": {"timm.layers.pos_embed.resample_abs_pos_embed":
                    "line 'posemb = posemb.float()' removed so that the position table is "
                    "resampled in float64 (timm casts it to float32 and back)",
                    "float32_cast_max_abs_error_on_features": cast_err},
    }, arrays, desc, [])


# --------------------------------------------------------------------------------- dino v1
def make_dino(dino_repo: Path, commit: str, use_bn: bool) -> None:
    sys.path.insert(0, str(dino_repo))
    try:
        import utils as dino_utils
        import vision_transformer as dvit
    finally:
        sys.path.remove(str(dino_repo))
    from functools import partial

    name = "dino-bn" if use_bn else "dino"
    folder = fresh(name)
    vit_kwargs = dict(img_size=[32], patch_size=8, embed_dim=32, depth=2, num_heads=2,
                      mlp_ratio=2, qkv_bias=True)
    head_kwargs = dict(in_dim=32, out_dim=64, use_bn=use_bn, hidden_dim=48, bottleneck_dim=16)
    torch.manual_seed(SEED)
    backbone = dvit.VisionTransformer(norm_layer=partial(nn.LayerNorm, eps=1e-6), **vit_kwargs)
    head = dvit.DINOHead(**head_kwargs)
    teacher = dino_utils.MultiCropWrapper(backbone, head).double().eval()
    changed = perturb_(teacher, torch.Generator().manual_seed(SEED + 1))
    state = teacher.state_dict()
    prefix = "module." if use_bn else ""
    save_state_dict(folder / "model.safetensors", {prefix + k: v for k, v in state.items()})

    rng = np.random.default_rng(SEED)
    arrays, desc = {}, {}
    # dino-bn differs from dino in the head only: one input size is enough there.
    for h, w in ((32, 32),) if use_bn else ((32, 32), (48, 40)):
        s = f"{h}x{w}"
        x = images(rng, 2, h, w)
        with torch.no_grad():
            cls = backbone(t(x))
            attn = backbone.get_last_selfattention(t(x))
            inter = torch.stack(backbone.get_intermediate_layers(t(x), n=2))
            out = head(cls)
            whole = teacher(t(x))
        assert torch.equal(whole, out)
        arrays.update({f"x_{s}": x, f"cls_{s}": n(cls), f"attn_{s}": n(attn),
                       f"intermediate_{s}": n(inter), f"head_{s}": n(out)})
        desc.update({
            f"x_{s}": f"input images (B, 3, {h}, {w})",
            f"cls_{s}": "backbone(x): the CLS token after the final norm (B, D)",
            f"attn_{s}": "backbone.get_last_selfattention(x): (B, heads, 1 + N, 1 + N)",
            f"intermediate_{s}": "torch.stack(backbone.get_intermediate_layers(x, n=2)): "
                                 "(2, B, 1 + N, D), outputs of the last 2 blocks, each after "
                                 "the final norm",
            f"head_{s}": "head(backbone(x)) == MultiCropWrapper(backbone, head)(x): (B, 64)",
        })
    wn = {k: list(v.shape) for k, v in state.items() if "last_layer" in k}
    reload_err = reload_check(
        folder / "model.safetensors",
        lambda: dino_utils.MultiCropWrapper(
            dvit.VisionTransformer(norm_layer=partial(nn.LayerNorm, eps=1e-6), **vit_kwargs),
            dvit.DINOHead(**head_kwargs)),
        prefix, lambda m: m(t(arrays["x_32x32"])), arrays["head_32x32"])
    write_fixture(name, "dino", {
        "reload_check_max_abs_error": reload_err,
        "constructor": "dino vision_transformer.VisionTransformer(norm_layer=partial("
                       "nn.LayerNorm, eps=1e-6), **kwargs) (vit_small's settings) and "
                       "vision_transformer.DINOHead(**head_kwargs), wrapped in "
                       "utils.MultiCropWrapper as main_dino.py's teacher",
        "kwargs": vit_kwargs, "head_kwargs": head_kwargs,
        "head_defaults": {"nlayers": 3, "norm_last_layer": True, "act": "GELU (erf)",
                          "batchnorm_eps": 1e-5 if use_bn else None},
        "repos": {"facebookresearch/dino": commit},
        "checkpoint_layout": (
            "the 'teacher' entry of main_dino.py's checkpoint: MultiCropWrapper keys "
            "backbone.* and head.*" + (
                "; with batch norms main_dino.py wraps the teacher in DistributedDataParallel, "
                "so every key starts with 'module.' (added here: DDP needs a process group)"
                if use_bn else "")),
        "weight_norm": (
            "DINOHead calls torch.nn.utils.weight_norm (the old hook API, still in torch "
            f"{torch.__version__}); the state dict holds head.last_layer.weight_g (out, 1) and "
            "weight_v (out, bottleneck); weight = g * v / ||v|| row-wise: " + json.dumps(wn)),
        "perturbed": changed,
        "resampling": "interpolate_pos_encoding: bicubic by scale_factor ((h0 + 0.1) / M, "
                      "(w0 + 0.1) / M), no antialias, float64 throughout (nothing patched)",
    }, arrays, desc, [])


# --------------------------------------------------------------------------------- dinov2
def make_dinov2(dinov2_repo: Path, commit: str, registers: bool) -> None:
    sys.path.insert(0, str(dinov2_repo))
    try:
        from dinov2.layers import MemEffAttention
        from dinov2.layers import NestedTensorBlock as Block
        from dinov2.models import vision_transformer as v2
    finally:
        sys.path.remove(str(dinov2_repo))
    from functools import partial

    name = "dinov2-reg" if registers else "dinov2"
    folder = fresh(name)
    kwargs = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2,
                  init_values=1e-5, block_chunks=0, ffn_layer="mlp")
    if registers:
        kwargs.update(num_register_tokens=4, interpolate_antialias=True, interpolate_offset=0.0)
    torch.manual_seed(SEED)
    model = v2.DinoVisionTransformer(block_fn=partial(Block, attn_class=MemEffAttention),
                                     **kwargs).double().eval()
    changed = perturb_(model, torch.Generator().manual_seed(SEED + 1))
    save_state_dict(folder / "model.safetensors", model.state_dict())

    cls_ = v2.DinoVisionTransformer
    original = cls_.interpolate_pos_encoding
    patched = _patch_source(original, "pos_embed = self.pos_embed.float()",
                            "pos_embed = self.pos_embed")
    captured = {}
    hook = model.blocks[-1].norm1.register_forward_hook(
        lambda m, i, o: captured.__setitem__("x", o))
    rng = np.random.default_rng(SEED)
    arrays, desc, cast_err = {}, {}, {}
    keys = ("x_norm_clstoken", "x_norm_regtokens", "x_norm_patchtokens")
    for h, w in ((32, 32), (48, 40), (24, 24)):
        s = f"{h}x{w}"
        x = images(rng, 2, h, w)
        cls_.interpolate_pos_encoding = patched
        with torch.no_grad():
            out = model.forward_features(t(x))
            attn = attention_from_qkv(captured["x"], model.blocks[-1].attn, 2)
        cls_.interpolate_pos_encoding = original
        with torch.no_grad():
            ref32 = model.forward_features(t(x))
        cast_err[s] = max(float((ref32[k] - out[k]).abs().max()) for k in keys if out[k].numel())
        arrays[f"x_{s}"] = x
        desc[f"x_{s}"] = f"input images (B, 3, {h}, {w})"
        for k in keys:
            arrays[f"{k}_{s}"] = n(out[k])
            desc[f"{k}_{s}"] = f"model.forward_features(x)['{k}']"
        arrays[f"attn_{s}"] = n(attn)
        desc[f"attn_{s}"] = ("last block's attention probabilities (B, heads, T, T) over CLS, "
                             "registers, patches: softmax(q k^T * head_dim^-0.5) from "
                             "blocks[-1].norm1's output (forward hook) with blocks[-1].attn.qkv")
    hook.remove()
    # The mask token: masks (B, N) True = replaced by mask_token before the position table.
    x = arrays["x_32x32"]
    masks = np.zeros((2, 16), dtype=bool)
    masks[0, [0, 5, 6, 15]] = True
    masks[1, [3, 9]] = True
    with torch.no_grad():
        out = model.forward_features(t(x), masks=torch.from_numpy(masks))
    arrays["masks"] = masks
    desc["masks"] = "bool (B, N) patch mask for x_32x32, True = replaced by mask_token"
    for k in keys:
        arrays[f"{k}_masked"] = n(out[k])
        desc[f"{k}_masked"] = f"model.forward_features(x_32x32, masks=masks)['{k}']"
    reload_err = reload_check(
        folder / "model.safetensors",
        lambda: v2.DinoVisionTransformer(block_fn=partial(Block, attn_class=MemEffAttention),
                                         **kwargs),
        "", lambda m: m.forward_features(t(arrays["x_32x32"]))["x_norm_patchtokens"],
        arrays["x_norm_patchtokens_32x32"])
    write_fixture(name, "dinov2", {
        "reload_check_max_abs_error": reload_err,
        "constructor": "dinov2.models.vision_transformer.DinoVisionTransformer(block_fn="
                       "partial(NestedTensorBlock, attn_class=MemEffAttention), **kwargs) "
                       "(vit_small's block; the hub's block_chunks=0)",
        "kwargs": kwargs,
        "defaults_that_matter": {"qkv_bias": True, "norm_eps": 1e-6, "act": "GELU (erf)",
                                 "interpolate_offset": kwargs.get("interpolate_offset", 0.1),
                                 "interpolate_antialias":
                                     kwargs.get("interpolate_antialias", False),
                                 "token_order": "CLS, registers, patches; the position table "
                                                "covers CLS and patches only"},
        "repos": {"facebookresearch/dinov2": commit},
        "perturbed": changed,
        "resampling": ("bicubic by size (h0, w0) with antialias, no offset" if registers else
                       "bicubic by scale_factor ((h0 + 0.1) / M, (w0 + 0.1) / M), no antialias"),
        "patched": {"dinov2.models.vision_transformer.DinoVisionTransformer."
                    "interpolate_pos_encoding":
                    "line 'pos_embed = self.pos_embed.float()' replaced by 'pos_embed = "
                    "self.pos_embed' so that the position table is resampled in float64 "
                    "(DINOv2 casts it to float32, then back to the input dtype)",
                    "float32_cast_max_abs_error_on_features": cast_err,
                    "env": "XFORMERS_DISABLED=1 (no xFormers kernels)"},
    }, arrays, desc, [])


# --------------------------------------------------------------------------------- tokenizers
CAPTIONS = [
    "a photo of a cat", "a photo of a dog", "a red flower in the garden",
    "two people walk on the beach", "a small boat on the sea at sunset",
    "a china temple with a roof", "a bird sits on a tree", "the city at night",
    "a plate of food on the table", "a horse runs in the field",
]

SENTENCES = [
    "the cat sat on the mat", "the dog ran in the park", "a bird sings in the tree",
    "she reads a book at home", "he plays the piano every day", "the sun rises in the east",
    "we walk to the river", "they eat bread and cheese", "the children play in the garden",
    "my friend lives in a small town", "the train arrives at noon", "rain falls on the roof",
    "a quick brown fox jumps over the lazy dog", "birds fly south in winter",
]


def _words(corpus: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in corpus:
        for w in line.lower().split():
            counts[w] = counts.get(w, 0) + 1
    return counts


def _bpe_merges(corpus: list[str], size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-pair merges learnt from ``corpus`` until the vocabulary has ``size`` entries.

    HF ``tokenizers``' own trainers are not reproducible (the initial alphabet and the ties come
    out of hash maps: two runs gave different merges and vocabularies), so the vocabulary is
    learnt here, deterministically (the most frequent pair, ties broken alphabetically), and
    handed to ``tokenizers.models.BPE``, which does all the encoding."""
    words = {tuple(w[:-1]) + (w[-1] + "</w>",): c for w, c in _words(corpus).items()}
    vocab = sorted({sym for w in words for sym in w})
    merges = []
    while len(vocab) < size:
        pairs: dict[tuple[str, str], int] = {}
        for w, c in words.items():
            for pair in zip(w[:-1], w[1:]):
                pairs[pair] = pairs.get(pair, 0) + c
        if not pairs:
            raise RuntimeError(f"the corpus gives only {len(vocab)} BPE tokens, not {size}")
        best = min(pairs, key=lambda pr: (-pairs[pr], pr))
        merges.append(best)
        vocab.append(best[0] + best[1])
        merged = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if w[i:i + 2] == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] = c
        words = merged
    return {tok: i for i, tok in enumerate(vocab)}, merges


def clip_tokenizer(vocab_size: int):
    """A byte-pair tokenizer in CLIP's style: lower-case, words end with '</w>', the ids of
    <|startoftext|> and <|endoftext|> are the two largest (CLIP: 49406, 49407)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab, merges = _bpe_merges(CAPTIONS, vocab_size - 2)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    sot, eot = "<|startoftext|>", "<|endoftext|>"
    tok.add_special_tokens([sot, eot])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{sot} $A {eot}", special_tokens=[(sot, tok.token_to_id(sot)),
                                                  (eot, tok.token_to_id(eot))])
    return tok


def bert_tokenizer(vocab_size: int):
    """A WordPiece tokenizer as bert-base-uncased's (BertNormalizer lower-case, BertPreTokenizer,
    '[CLS] A [SEP] B [SEP]' with token types), ids 0-4: [PAD] [UNK] [CLS] [SEP] [MASK].

    The vocabulary (deterministic, see ``_bpe_merges``): the special tokens, the characters,
    their '##' continuations, then whole words by frequency (ties alphabetically); HF
    ``tokenizers.models.WordPiece`` does the encoding (greedy longest match)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    counts = _words(SENTENCES)
    chars = sorted({ch for w in counts for ch in w})
    tokens = special + chars + ["##" + ch for ch in chars]
    tokens += sorted((w for w in counts if w not in tokens), key=lambda w: (-counts[w], w))
    if len(tokens) < vocab_size:
        raise RuntimeError(f"the sentences give only {len(tokens)} WordPiece tokens")
    tok = Tokenizer(models.WordPiece(vocab={t: i for i, t in enumerate(tokens[:vocab_size])},
                                     unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens(special)  # matched whole in the text, before the normalizer
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return tok


# --------------------------------------------------------------------------------- open_clip
def make_open_clip() -> None:
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    folder = fresh("open_clip")
    tok = clip_tokenizer(100)
    vocab = tok.get_vocab_size()
    tok.save(str(folder / "tokenizer.json"))
    vision = dict(image_size=32, patch_size=8, width=32, head_width=16, layers=2, mlp_ratio=2.0)
    text = dict(context_length=16, vocab_size=vocab, width=32, heads=2, layers=2, mlp_ratio=2.0)
    torch.manual_seed(SEED)
    model = open_clip.CLIP(embed_dim=24, vision_cfg=CLIPVisionCfg(**vision),
                           text_cfg=CLIPTextCfg(**text), quick_gelu=True).double().eval()
    changed = perturb_(model, torch.Generator().manual_seed(SEED + 1))
    save_state_dict(folder / "model.safetensors", model.state_dict())

    rng = np.random.default_rng(SEED)
    x = images(rng, 2, 32, 32)
    captions = ["a photo of a cat", "a red flower in the garden",
                "two people walk on the beach at sunset with a dog and a small boat"]
    ids = np.zeros((3, 16), dtype=np.int64)
    for i, c in enumerate(captions):
        row = tok.encode(c).ids
        if len(row) > 16:  # truncate as open_clip's tokenizer: keep the EOT last
            row = row[:15] + [row[-1]]
        ids[i, :len(row)] = row
    with torch.no_grad():
        img = model.encode_image(t(x))
        txt = model.encode_text(torch.from_numpy(ids))
        li, lt = model.get_logits(t(x), torch.from_numpy(ids))
    try:
        with torch.no_grad():
            model.encode_image(t(images(rng, 2, 48, 40)))
        second = "open_clip resampled the position table (unexpected)"
    except Exception as err:  # noqa: BLE001
        second = (f"not supported: open_clip's VisionTransformer adds its fixed position table "
                  f"(no resampling in forward); at 48x40 it raises {type(err).__name__}: "
                  f"{str(err).splitlines()[0][:160]}")
    arrays = {"x": x, "text": ids, "image_features": n(img), "text_features": n(txt),
              "logit_scale": n(model.logit_scale), "logits_per_image": n(li)}
    desc = {
        "x": "input images (B, 3, 32, 32)",
        "text": "int64 token ids (3, 16) from tokenizer.json: <|startoftext|> ... <|endoftext|> "
                "(the largest id, so argmax pooling finds it), padded with 0; row 2 is "
                "truncated to 16 keeping the end-of-text id last",
        "image_features": "model.encode_image(x) (B, 24), not normalised",
        "text_features": "model.encode_text(text) (3, 24), not normalised",
        "logit_scale": "model.logit_scale (the log of the scale: a parameter of shape ())",
        "logits_per_image": "model.get_logits(x, text)[0] = exp(logit_scale) * normalised "
                            "image_features @ normalised text_features.T (B, 3)",
    }
    keys = sorted(model.state_dict())
    reload_err = reload_check(
        folder / "model.safetensors",
        lambda: open_clip.CLIP(embed_dim=24, vision_cfg=CLIPVisionCfg(**vision),
                               text_cfg=CLIPTextCfg(**text), quick_gelu=True),
        "", lambda m: torch.cat([m.encode_image(t(x)), m.encode_text(torch.from_numpy(ids))]),
        np.concatenate([arrays["image_features"], arrays["text_features"]]))
    write_fixture("open_clip", "open_clip", {
        "reload_check_max_abs_error": reload_err,
        "constructor": "open_clip.CLIP(embed_dim=24, vision_cfg=CLIPVisionCfg(**vision), "
                       "text_cfg=CLIPTextCfg(**text), quick_gelu=True)",
        "embed_dim": 24, "vision": vision, "text": text, "quick_gelu": True,
        "layout": "OpenAI: visual.conv1, visual.class_embedding, visual.positional_embedding, "
                  "visual.ln_pre, visual.transformer.resblocks.N.attn.in_proj_weight, ..., "
                  "visual.ln_post, visual.proj, token_embedding, positional_embedding, "
                  "transformer.resblocks.N.*, ln_final, text_projection, logit_scale",
        "state_dict_keys": keys,
        "tokenizer": {"file": "tokenizer.json", "vocab_size": vocab,
                      "sot_id": tok.token_to_id("<|startoftext|>"),
                      "eot_id": tok.token_to_id("<|endoftext|>"), "pad_id": 0,
                      "captions": captions,
                      "what": "HF tokenizers BPE model (tokens end with '</w>', lower-case) "
                              "with merges learnt by the generator from a few captions; "
                              "characters it never saw are dropped"},
        "second_size": second,
        "perturbed": changed,
    }, arrays, desc, ["tokenizer.json"])


# --------------------------------------------------------------------------------- hf bert
def make_bert() -> None:
    from transformers import BertConfig, BertForMaskedLM, BertForPreTraining

    folder = fresh("hf-bert")
    tok = bert_tokenizer(100)
    vocab = tok.get_vocab_size()
    tok.save(str(folder / "tokenizer.json"))
    cfg = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=24, type_vocab_size=2,
               pad_token_id=tok.token_to_id("[PAD]"))
    torch.manual_seed(SEED)
    config = BertConfig(**cfg, attn_implementation="eager")
    model = BertForPreTraining(config).double().eval()
    changed = perturb_(model, torch.Generator().manual_seed(SEED + 1))
    tied = model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    model.save_pretrained(str(folder), safe_serialization=True)

    pairs = [("the cat sat on the [MASK]", "a bird sings in the tree"),
             ("he plays the piano", "we walk to the [MASK]"),
             ("rain falls on the roof", None)]
    encs = [tok.encode(a, b) if b else tok.encode(a) for a, b in pairs]
    T = max(len(e.ids) for e in encs)
    ids = np.zeros((3, T), dtype=np.int64)
    types = np.zeros((3, T), dtype=np.int64)
    mask = np.zeros((3, T), dtype=np.int64)
    for i, e in enumerate(encs):
        ids[i, :len(e.ids)] = e.ids
        types[i, :len(e.ids)] = e.type_ids
        mask[i, :len(e.ids)] = 1
    a = dict(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
             token_type_ids=torch.from_numpy(types))
    with torch.no_grad():
        base = model.bert(**a)
        pre = model(**a)
        mlm = BertForMaskedLM.from_pretrained(str(folder), dtype=torch.float64,
                                              attn_implementation="eager").eval()
        mlm_logits = mlm(**a).logits
    same = float((mlm_logits - pre.prediction_logits).abs().max())
    if same > 1e-13:
        raise RuntimeError(f"BertForMaskedLM and prediction_logits differ by {same}")
    arrays = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask,
              "last_hidden_state": n(base.last_hidden_state),
              "pooler_output": n(base.pooler_output),
              "mlm_logits": n(mlm_logits),
              "nsp_logits": n(pre.seq_relationship_logits)}
    desc = {
        "input_ids": f"int64 (3, {T}) from tokenizer.json: [CLS] A [SEP] (B [SEP]), with "
                     "[MASK] tokens, padded with [PAD] = 0",
        "token_type_ids": "int64 (3, T): 0 for A and its [CLS]/[SEP], 1 for B and its [SEP]",
        "attention_mask": "int64 (3, T): 1 = real token, 0 = padding (HF's convention)",
        "last_hidden_state": "BertModel (model.bert)(...).last_hidden_state (3, T, 32), "
                             "padded positions included",
        "pooler_output": "model.bert(...).pooler_output: tanh(W h_[CLS] + b) (3, 32)",
        "mlm_logits": "BertForMaskedLM.from_pretrained(folder)(...).logits (3, T, vocab); "
                      "the same as BertForPreTraining's prediction_logits up to rounding "
                      f"(max |diff| = {same:.1e}; the same transform head and tied decoder)",
        "nsp_logits": "BertForPreTraining(...).seq_relationship_logits (3, 2)",
    }
    torch.manual_seed(SEED + 7)
    again, info = BertForPreTraining.from_pretrained(
        str(folder), dtype=torch.float64, attn_implementation="eager", output_loading_info=True)
    if any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")):
        raise RuntimeError(f"save_pretrained/from_pretrained round trip: {info}")
    with torch.no_grad():
        reload_err = float(np.abs(n(again.eval().bert(**a).last_hidden_state)
                                  - arrays["last_hidden_state"]).max())
    if reload_err > 1e-14:
        raise RuntimeError(f"hf-bert: reloaded model differs by {reload_err}")
    from safetensors import safe_open
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        saved = sorted(f.keys())
    write_fixture("hf-bert", "hf-bert", {
        "reload_check_max_abs_error": reload_err,
        "constructor": "transformers.BertForPreTraining(BertConfig(**config, "
                       "attn_implementation='eager'))",
        "config": cfg,
        "defaults_that_matter": {"hidden_act": "gelu (erf)", "layer_norm_eps": 1e-12,
                                 "position_embedding_type": "absolute"},
        "saved_keys": saved,
        "tied": {"decoder_weight_is_word_embeddings": bool(tied),
                 "note": "cls.predictions.decoder.weight is bert.embeddings."
                         "word_embeddings.weight (and decoder.bias is cls.predictions.bias); "
                         "see saved_keys for what save_pretrained wrote"},
        "tokenizer": {"file": "tokenizer.json", "vocab_size": vocab,
                      "special": {s: tok.token_to_id(s) for s in
                                  ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")},
                      "pairs": [list(p) for p in pairs],
                      "what": "HF tokenizers WordPiece model with a vocabulary made by the "
                              "generator from a few sentences (characters, ## continuations, "
                              "whole words by frequency)"},
        "perturbed": changed,
    }, arrays, desc, ["config.json", "tokenizer.json"])


# --------------------------------------------------------------------------------- main
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dino-repo", type=Path, help="a checkout of facebookresearch/dino")
    p.add_argument("--dinov2-repo", type=Path, help="a checkout of facebookresearch/dinov2")
    p.add_argument("--dino-commit", help="its commit, if the folder is not a git checkout")
    p.add_argument("--dinov2-commit", help="its commit, if the folder is not a git checkout")
    p.add_argument("--only", nargs="+", choices=ALL, default=list(ALL))
    args = p.parse_args(argv)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    if {"dino", "dino-bn"} & set(args.only) and not args.dino_repo:
        p.error("--dino-repo is needed for dino and dino-bn")
    if {"dinov2", "dinov2-reg"} & set(args.only) and not args.dinov2_repo:
        p.error("--dinov2-repo is needed for dinov2 and dinov2-reg")
    for name in args.only:
        if name == "timm-vit":
            make_timm()
        elif name in ("dino", "dino-bn"):
            make_dino(args.dino_repo.resolve(),
                      repo_commit(args.dino_repo, args.dino_commit), name == "dino-bn")
        elif name in ("dinov2", "dinov2-reg"):
            make_dinov2(args.dinov2_repo.resolve(),
                        repo_commit(args.dinov2_repo, args.dinov2_commit), name == "dinov2-reg")
        elif name == "open_clip":
            make_open_clip()
        elif name == "hf-bert":
            make_bert()


if __name__ == "__main__":
    main()
