"""``CLIP``: the dual encoder of seed eq. 6 (Radford et al.; open_clip's ``CLIP`` model).

    I = normalize(ViT(images)[CLS] @ visual_proj)        (B, E)
    T = normalize(TextTransformer(tokens)[EOT] @ text_proj)   (B, E)
    loss = clip_loss(I, T, logit_scale)                  (objectives.clip_loss)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import functional as F
from ..autograd import Tensor, tensor, zeros
from ..nn import Module, Parameter, init
from .config import TextConfig, ViTConfig
from .text import TextTransformer
from .vit import VisionTransformer

__all__ = ["CLIP"]


class CLIP(Module):
    """Image and text towers projected into one embedding space, with a learned temperature.

    - ``visual``: a ``VisionTransformer`` without a classification head; its final-normed CLS
      feature is projected by ``visual_proj`` (D_v, E) — open_clip/OpenAI ``visual.proj``.
    - ``text``: a causal ``TextTransformer`` pooled at the end-of-text token (``pool="eot"``:
      the largest id, OpenAI's ``text.argmax(-1)``, or ``eot_id``), projected by ``text_proj``
      (D_t, E) — open_clip/OpenAI ``text_projection``. Both projections have no bias and are
      applied as ``x @ P`` (the (in, out) layout of the checkpoints: no transpose on load).
    - ``logit_scale``: a scalar Parameter, $\\log(1/\\tau)$ initialised to $\\log(1/0.07)$;
      clamp it after each optimiser step with ``objectives.clamp_logit_scale``.

    Init as open_clip: projections ``normal(0, width^-0.5)``. The towers initialise
    themselves (see their classes). OpenAI's / open_clip's vision tower has ``ln_pre`` (a
    LayerNorm on the tokens before the blocks) and no patch bias: ``ViTConfig(pre_norm=True,
    patch_bias=False, eps=1e-5)``; its MLP uses QuickGELU (``act="quick_gelu"``) in OpenAI's
    weights. ``io.load_pretrained(..., family="open_clip", act=...)`` builds such a model from
    an OpenAI-layout checkpoint (``io.convert_clip`` lists what each key becomes).

    Shapes: images (B, C, H, W), tokens (B, T) -> features (B, E) each, logit_scale ().
    """

    def __init__(self, vision_cfg: ViTConfig, text_cfg: TextConfig, embed_dim: int,
                 init_temperature: float = 0.07, rng: Any = None):
        super().__init__()
        if vision_cfg.num_classes != 0:
            raise ValueError(
                f"CLIP: the image tower must have no classification head (num_classes=0), got "
                f"num_classes={vision_cfg.num_classes}"
            )
        if not text_cfg.causal or text_cfg.pool != "eot":
            raise ValueError(
                "CLIP: the text tower must be causal with end-of-text pooling "
                f"(TextConfig(causal=True, pool='eot')), got causal={text_cfg.causal}, "
                f"pool={text_cfg.pool!r}"
            )
        if embed_dim < 1:
            raise ValueError(f"CLIP: embed_dim must be positive, got {embed_dim}")
        if init_temperature <= 0:
            raise ValueError(f"CLIP: init_temperature must be positive, got {init_temperature}")
        self.embed_dim = embed_dim
        self.visual = VisionTransformer(vision_cfg)
        self.text = TextTransformer(text_cfg)
        self.visual_proj = Parameter(zeros(vision_cfg.dim, embed_dim))
        init.normal_(self.visual_proj, std=vision_cfg.dim ** -0.5, rng=rng)
        self.text_proj = Parameter(zeros(text_cfg.dim, embed_dim))
        init.normal_(self.text_proj, std=text_cfg.dim ** -0.5, rng=rng)
        self.logit_scale = Parameter(tensor(np.array(math.log(1.0 / init_temperature)),
                                            dtype=self.visual_proj.dtype,
                                            device=self.visual_proj.device))

    def encode_image(self, images: Any, normalize: bool = False) -> Tensor:
        """$I = \\mathrm{ViT}(x)_{CLS} P_v$. Shapes: (B, C, H, W) -> (B, E)."""
        cls = self.visual.forward_features(images)["x_norm_clstoken"]  # (B, D_v)
        feats = cls @ self.visual_proj  # (B, E)
        return F.normalize(feats, axis=-1) if normalize else feats

    def encode_text(self, tokens: Any, normalize: bool = False, attention_mask: Any = None
                    ) -> Tensor:
        """$T = \\mathrm{Text}(t)_{EOT} P_t$. Shapes: (B, T) -> (B, E)."""
        pooled = self.text(tokens, attention_mask)  # (B, D_t)
        feats = pooled @ self.text_proj  # (B, E)
        return F.normalize(feats, axis=-1) if normalize else feats

    def forward(self, images: Any, tokens: Any, attention_mask: Any = None
                ) -> tuple[Tensor, Tensor, Parameter]:
        """``(normalize(I), normalize(T), logit_scale)``: ready for ``clip_loss``. Unlike
        open_clip (which returns ``logit_scale.exp()``), the *log* scale is returned, the form
        ``clip_loss`` takes. Shapes: -> (B, E), (B, E), ()."""
        B_img = images.shape[0]
        B_txt = np.shape(tokens.data if isinstance(tokens, Tensor) else tokens)[0]
        if B_img != B_txt:
            raise ValueError(
                f"CLIP: {B_img} images but {B_txt} token sequences; the towers need the same "
                "batch (pair i = image i and text i)"
            )
        img = self.encode_image(images, normalize=True)
        txt = self.encode_text(tokens, normalize=True, attention_mask=attention_mask)
        return img, txt, self.logit_scale

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}"

