"""Random state dicts in the real checkpoints' torch layouts, and plain-NumPy float64 forwards
written from those layouts (independently of minitransformer), for the loader tests.

Layouts: timm models/vision_transformer.py (VisionTransformer, Block, Attention, Mlp);
facebookresearch/dinov2 dinov2/models/vision_transformer.py (DinoVisionTransformer:
``register_tokens`` inserted after CLS after the positions are added, ``mask_token``);
facebookresearch/dino vision_transformer.py (DINOHead, weight-normed ``last_layer``);
openai/CLIP clip/model.py and mlfoundations/open_clip src/open_clip/transformer.py
(``visual.conv1``, ``resblocks.{i}.attn.in_proj_weight``, ``ln_pre``, ``ln_post``, ``proj``,
``text_projection``); HF transformers models/bert/modeling_bert.py (BertForPreTraining).
A torch Linear weight is (out, in), applied as ``x @ W.T + b``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf


# ---------------------------------------------------------------------------- math
def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x):
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def quick_gelu(x):
    return x / (1.0 + np.exp(-1.702 * x))


def softmax(s):
    s = s - s.max(-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(-1, keepdims=True)


def linear(x, sd, name):
    y = x @ sd[name + ".weight"].T
    return y + sd[name + ".bias"] if name + ".bias" in sd else y


def attention(x, w_qkv, b_qkv, w_o, b_o, heads, allowed=None):
    """torch packing: rows [W_Q; W_K; W_V] of (3D, D), heads contiguous. ``allowed``
    broadcastable to (B, H, T, T), True = may attend. Returns (out, probs)."""
    B, T, D = x.shape
    hd = D // heads
    qkv = x @ w_qkv.T + (0 if b_qkv is None else b_qkv)  # (B, T, 3D)
    qkv = qkv.reshape(B, T, 3, heads, hd).transpose(2, 0, 3, 1, 4)  # (3, B, H, T, hd)
    q, k, v = qkv
    s = q @ k.transpose(0, 1, 3, 2) * hd ** -0.5  # (B, H, T, T)
    if allowed is not None:
        s = np.where(allowed, s, -np.inf)
    p = softmax(s)
    o = (p @ v).transpose(0, 2, 1, 3).reshape(B, T, D)  # (B, T, D)
    return o @ w_o.T + b_o, p


def conv_patches(img, kernel, bias):
    """A stride-p Conv2d, written as a sum over each window. img (B, C, H, W) ->
    (B, gh*gw, D) in raster order."""
    B, C, H, W = img.shape
    D, _, p, _ = kernel.shape
    gh, gw = H // p, W // p
    win = img.reshape(B, C, gh, p, gw, p)  # (B, C, gh, p, gw, p)
    y = np.einsum("bcipjq,dcpq->bijd", win, kernel)  # (B, gh, gw, D)
    if bias is not None:
        y = y + bias
    return y.reshape(B, gh * gw, D)


# ---------------------------------------------------------------------------- ViT
def vit_state_dict(rng, D=16, depth=2, p=4, grid=3, C=3, mlp=2, heads_classes=0,
                   layer_scale=False, registers=0, reg_name="register_tokens",
                   mask_token=False, no_embed_class=False, qkv_bias=True, pre_norm=False):
    """A random timm / DINO / DINOv2 ViT state dict (torch layout, float64)."""
    r = lambda *s: rng.standard_normal(s) * 0.3  # noqa: E731
    N = grid * grid
    sd = {"cls_token": r(1, 1, D), "pos_embed": r(1, N if no_embed_class else N + 1, D),
          "patch_embed.proj.weight": r(D, C, p, p), "patch_embed.proj.bias": r(D),
          "norm.weight": 1 + r(D), "norm.bias": r(D)}
    if registers:
        sd[reg_name] = r(1, registers, D)
    if mask_token:
        sd["mask_token"] = r(1, D)
    if pre_norm:
        sd["norm_pre.weight"], sd["norm_pre.bias"] = 1 + r(D), r(D)
    for i in range(depth):
        b = f"blocks.{i}."
        sd.update({b + "norm1.weight": 1 + r(D), b + "norm1.bias": r(D),
                   b + "attn.qkv.weight": r(3 * D, D),
                   b + "attn.proj.weight": r(D, D), b + "attn.proj.bias": r(D),
                   b + "norm2.weight": 1 + r(D), b + "norm2.bias": r(D),
                   b + "mlp.fc1.weight": r(mlp * D, D), b + "mlp.fc1.bias": r(mlp * D),
                   b + "mlp.fc2.weight": r(D, mlp * D), b + "mlp.fc2.bias": r(D)})
        if qkv_bias:
            sd[b + "attn.qkv.bias"] = r(3 * D)
        if layer_scale:
            sd[b + "ls1.gamma"], sd[b + "ls2.gamma"] = 1 + r(D), 1 + r(D)
    if heads_classes:
        sd["head.weight"], sd["head.bias"] = r(heads_classes, D), r(heads_classes)
    return sd


def vit_forward(sd, img, heads, eps=1e-6, reg_name="register_tokens"):
    """timm ``forward_features`` / DINOv2 ``forward_features`` at the native grid.
    Returns (cls (B, D), regs (B, R, D), patches (B, N, D), last attention (B, H, T, T))."""
    B = img.shape[0]
    x = conv_patches(img, sd["patch_embed.proj.weight"], sd.get("patch_embed.proj.bias"))
    cls = np.broadcast_to(sd["cls_token"], (B, 1, x.shape[2]))
    pos = sd["pos_embed"]
    if pos.shape[1] == x.shape[1]:  # timm no_embed_class: positions on the patches only
        x = np.concatenate([cls, x + pos], axis=1)
    else:
        x = np.concatenate([cls, x], axis=1) + pos
    R = 0
    if reg_name in sd:  # registers after CLS, after the positions (no position of their own)
        regs = np.broadcast_to(sd[reg_name], (B,) + sd[reg_name].shape[1:])
        R = regs.shape[1]
        x = np.concatenate([x[:, :1], regs, x[:, 1:]], axis=1)
    if "norm_pre.weight" in sd:
        x = layer_norm(x, sd["norm_pre.weight"], sd["norm_pre.bias"], eps)
    i, probs = 0, None
    while f"blocks.{i}.norm1.weight" in sd:
        b = f"blocks.{i}."
        h = layer_norm(x, sd[b + "norm1.weight"], sd[b + "norm1.bias"], eps)
        a, probs = attention(h, sd[b + "attn.qkv.weight"], sd.get(b + "attn.qkv.bias"),
                             sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"], heads)
        x = x + a * sd.get(b + "ls1.gamma", 1.0)
        h = layer_norm(x, sd[b + "norm2.weight"], sd[b + "norm2.bias"], eps)
        m = linear(gelu(linear(h, sd, b + "mlp.fc1")), sd, b + "mlp.fc2")
        x = x + m * sd.get(b + "ls2.gamma", 1.0)
        i += 1
    y = layer_norm(x, sd["norm.weight"], sd["norm.bias"], eps)
    return y[:, 0], y[:, 1:1 + R], y[:, 1 + R:], probs


def dino_head_state_dict(rng, D, hidden=12, bottleneck=6, K=10, g_shape="column"):
    r = lambda *s: rng.standard_normal(s) * 0.3  # noqa: E731
    g = 1 + np.abs(r(K, 1)) if g_shape == "column" else 1 + np.abs(r(K))
    return {"mlp.0.weight": r(hidden, D), "mlp.0.bias": r(hidden),
            "mlp.2.weight": r(hidden, hidden), "mlp.2.bias": r(hidden),
            "mlp.4.weight": r(bottleneck, hidden), "mlp.4.bias": r(bottleneck),
            "last_layer.weight_g": g, "last_layer.weight_v": r(K, bottleneck)}


def dino_head_forward(sd, x):
    """DINO's DINOHead: MLP (GELU), L2-normalise, weight_norm(Linear, dim=0):
    W = g * v / ||v||_row, logits = z @ W.T."""
    h = gelu(linear(x, sd, "mlp.0"))
    h = gelu(linear(h, sd, "mlp.2"))
    h = linear(h, sd, "mlp.4")
    z = h / np.maximum(np.linalg.norm(h, axis=-1, keepdims=True), 1e-12)
    v = sd["last_layer.weight_v"]
    W = sd["last_layer.weight_g"].reshape(-1, 1) * v / np.linalg.norm(v, axis=1, keepdims=True)
    return z @ W.T


# ---------------------------------------------------------------------------- CLIP
def clip_state_dict(rng, W=16, Wt=16, E=8, depth=2, p=4, grid=2, V=20, T=7, C=3):
    """A random OpenAI-layout CLIP state dict (torch layout, float64)."""
    r = lambda *s: rng.standard_normal(s) * 0.3  # noqa: E731

    def blocks(prefix, w):
        out = {}
        for i in range(depth):
            b = f"{prefix}.resblocks.{i}."
            out.update({b + "ln_1.weight": 1 + r(w), b + "ln_1.bias": r(w),
                        b + "attn.in_proj_weight": r(3 * w, w), b + "attn.in_proj_bias": r(3 * w),
                        b + "attn.out_proj.weight": r(w, w), b + "attn.out_proj.bias": r(w),
                        b + "ln_2.weight": 1 + r(w), b + "ln_2.bias": r(w),
                        b + "mlp.c_fc.weight": r(4 * w, w), b + "mlp.c_fc.bias": r(4 * w),
                        b + "mlp.c_proj.weight": r(w, 4 * w), b + "mlp.c_proj.bias": r(w)})
        return out

    sd = {"visual.conv1.weight": r(W, C, p, p), "visual.class_embedding": r(W),
          "visual.positional_embedding": r(grid * grid + 1, W),
          "visual.ln_pre.weight": 1 + r(W), "visual.ln_pre.bias": r(W),
          "visual.ln_post.weight": 1 + r(W), "visual.ln_post.bias": r(W),
          "visual.proj": r(W, E), "token_embedding.weight": r(V, Wt),
          "positional_embedding": r(T, Wt), "ln_final.weight": 1 + r(Wt),
          "ln_final.bias": r(Wt), "text_projection": r(Wt, E),
          "logit_scale": np.array(np.log(1 / 0.07))}
    sd.update(blocks("visual.transformer", W))
    sd.update(blocks("transformer", Wt))
    return sd


def _clip_blocks(sd, prefix, x, heads, act, allowed=None):
    i = 0
    while f"{prefix}.resblocks.{i}.ln_1.weight" in sd:
        b = f"{prefix}.resblocks.{i}."
        h = layer_norm(x, sd[b + "ln_1.weight"], sd[b + "ln_1.bias"], 1e-5)
        a, _ = attention(h, sd[b + "attn.in_proj_weight"], sd[b + "attn.in_proj_bias"],
                         sd[b + "attn.out_proj.weight"], sd[b + "attn.out_proj.bias"], heads,
                         allowed)
        x = x + a
        h = layer_norm(x, sd[b + "ln_2.weight"], sd[b + "ln_2.bias"], 1e-5)
        x = x + linear(act(linear(h, sd, b + "mlp.c_fc")), sd, b + "mlp.c_proj")
        i += 1
    return x


def clip_encode_image(sd, img, heads, act=quick_gelu):
    B = img.shape[0]
    x = conv_patches(img, sd["visual.conv1.weight"], None)  # no bias in CLIP
    cls = np.broadcast_to(sd["visual.class_embedding"], (B, 1, x.shape[2]))
    x = np.concatenate([cls, x], axis=1) + sd["visual.positional_embedding"]
    x = layer_norm(x, sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"], 1e-5)
    x = _clip_blocks(sd, "visual.transformer", x, heads, act)
    x = layer_norm(x, sd["visual.ln_post.weight"], sd["visual.ln_post.bias"], 1e-5)
    return x[:, 0] @ sd["visual.proj"]


def clip_encode_text(sd, ids, heads, act=quick_gelu):
    B, T = ids.shape
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"][:T]
    causal = np.tril(np.ones((T, T), dtype=bool))  # query t sees keys <= t
    x = _clip_blocks(sd, "transformer", x, heads, act, causal)
    x = layer_norm(x, sd["ln_final.weight"], sd["ln_final.bias"], 1e-5)
    return x[np.arange(B), ids.argmax(-1)] @ sd["text_projection"]  # EOT = the largest id


# ---------------------------------------------------------------------------- BERT
def bert_state_dict(rng, D=16, depth=2, V=30, P=12, types=2, inter=24):
    """A random HF BertForPreTraining state dict (torch layout, float64), as save_pretrained
    writes it with safetensors (the tied decoder weight and bias are not saved)."""
    r = lambda *s: rng.standard_normal(s) * 0.3  # noqa: E731
    e = "bert.embeddings."
    sd = {e + "word_embeddings.weight": r(V, D), e + "position_embeddings.weight": r(P, D),
          e + "token_type_embeddings.weight": r(types, D), e + "LayerNorm.weight": 1 + r(D),
          e + "LayerNorm.bias": r(D), "bert.pooler.dense.weight": r(D, D),
          "bert.pooler.dense.bias": r(D),
          "cls.predictions.transform.dense.weight": r(D, D),
          "cls.predictions.transform.dense.bias": r(D),
          "cls.predictions.transform.LayerNorm.weight": 1 + r(D),
          "cls.predictions.transform.LayerNorm.bias": r(D), "cls.predictions.bias": r(V),
          "cls.seq_relationship.weight": r(2, D), "cls.seq_relationship.bias": r(2)}
    for i in range(depth):
        b = f"bert.encoder.layer.{i}."
        for n in ("query", "key", "value"):
            sd[b + f"attention.self.{n}.weight"], sd[b + f"attention.self.{n}.bias"] = (
                r(D, D), r(D))
        sd.update({b + "attention.output.dense.weight": r(D, D),
                   b + "attention.output.dense.bias": r(D),
                   b + "attention.output.LayerNorm.weight": 1 + r(D),
                   b + "attention.output.LayerNorm.bias": r(D),
                   b + "intermediate.dense.weight": r(inter, D),
                   b + "intermediate.dense.bias": r(inter),
                   b + "output.dense.weight": r(D, inter), b + "output.dense.bias": r(D),
                   b + "output.LayerNorm.weight": 1 + r(D), b + "output.LayerNorm.bias": r(D)})
    return sd


def bert_forward(sd, ids, heads, mask=None, types=None, eps=1e-12):
    """HF BertModel (last_hidden_state, pooler_output) and BertForMaskedLM logits.
    ``mask`` (B, T) True = real token: padded keys get no weight, padded queries still run."""
    B, T = ids.shape
    D = sd["bert.embeddings.word_embeddings.weight"].shape[1]
    hd = D // heads
    types = np.zeros_like(ids) if types is None else types
    e = "bert.embeddings."
    x = (sd[e + "word_embeddings.weight"][ids] + sd[e + "position_embeddings.weight"][:T]
         + sd[e + "token_type_embeddings.weight"][types])
    x = layer_norm(x, sd[e + "LayerNorm.weight"], sd[e + "LayerNorm.bias"], eps)
    allowed = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, T) keys
    i = 0
    while f"bert.encoder.layer.{i}.output.dense.weight" in sd:
        b = f"bert.encoder.layer.{i}."

        def split(t):
            return t.reshape(B, T, heads, hd).transpose(0, 2, 1, 3)  # (B, H, T, hd)

        q = split(linear(x, sd, b + "attention.self.query"))
        k = split(linear(x, sd, b + "attention.self.key"))
        v = split(linear(x, sd, b + "attention.self.value"))
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
        if allowed is not None:
            s = np.where(allowed, s, -np.inf)
        ctx = (softmax(s) @ v).transpose(0, 2, 1, 3).reshape(B, T, D)
        a = layer_norm(linear(ctx, sd, b + "attention.output.dense") + x,
                       sd[b + "attention.output.LayerNorm.weight"],
                       sd[b + "attention.output.LayerNorm.bias"], eps)
        h = gelu(linear(a, sd, b + "intermediate.dense"))
        x = layer_norm(linear(h, sd, b + "output.dense") + a, sd[b + "output.LayerNorm.weight"],
                       sd[b + "output.LayerNorm.bias"], eps)
        i += 1
    pooled = np.tanh(linear(x[:, 0], sd, "bert.pooler.dense"))
    t = gelu(linear(x, sd, "cls.predictions.transform.dense"))
    t = layer_norm(t, sd["cls.predictions.transform.LayerNorm.weight"],
                   sd["cls.predictions.transform.LayerNorm.bias"], eps)
    logits = t @ sd[e + "word_embeddings.weight"].T + sd["cls.predictions.bias"]
    return x, pooled, logits
