"""``BackboneWithHead``: a backbone and a head applied after it, ``head(backbone(x))``.

What a DINO training checkpoint holds (facebookresearch/dino main_dino.py: the teacher is
``MultiCropWrapper(backbone, DINOHead)``, saved with keys ``backbone.*`` and ``head.*``); the
module names are the same, so such a state dict loads by name.
"""

from __future__ import annotations

from typing import Any

from ..autograd import Tensor
from ..nn import Module

__all__ = ["BackboneWithHead"]


class BackboneWithHead(Module):
    """$y = \\mathrm{head}(\\mathrm{backbone}(x))$.

    With a ``VisionTransformer`` without classifier as ``backbone`` (its forward is the
    final-normed CLS feature, DINO's backbone output) and a ``DINOHead`` as ``head`` this is
    DINO's student / teacher for one resolution (``MultiCropWrapper`` also batches crops of
    equal size; call it once per resolution). The backbone's own entry points
    (``forward_features``, ``get_last_selfattention``) stay reachable as
    ``model.backbone.<method>``.

    Shapes: x (B, C, H, W) -> backbone (B, D) -> head (B, K).
    """

    def __init__(self, backbone: Module, head: Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: Any) -> Tensor:
        return self.head(self.backbone(x))  # (B, D) -> (B, K)
