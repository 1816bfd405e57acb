"""The self-supervised objectives, one function per seed equation plus the real-system parts.

=========  ==============================================================================
seed       functions
=========  ==============================================================================
(4) MLM    ``mask_tokens`` (BERT 80/10/10), ``mlm_loss``
(6) CLIP   ``clip_loss``, ``clip_logits``, ``init_logit_scale``, ``clamp_logit_scale``
(7) DINO   ``dino_loss``, ``TeacherCentering``, ``sinkhorn_knopp``, ``MultiCropWrapper``
(8) MIM    ``mim_token_loss`` (BEiT), ``mim_pixel_loss`` (MAE), ``ibot_patch_loss`` (iBOT),
           ``patchify`` / ``unpatchify``, ``kmeans_codebook`` / ``PatchCodebook``
(9) DINOv2 ``koleo_loss``, ``dinov2_loss``
masks      ``random_patch_mask`` (MAE), ``block_patch_mask`` (BEiT/DINOv2),
           ``dinov2_collate_masks``
logging    ``teacher_entropy``, ``kl_to_uniform``, ``feature_std``
=========  ==============================================================================
"""

from .clip import clamp_logit_scale, clip_logits, clip_loss, init_logit_scale
from .diagnostics import feature_std, kl_to_uniform, teacher_entropy
from .dino import MultiCropWrapper, TeacherCentering, dino_loss, sinkhorn_knopp
from .dinov2 import dinov2_loss, koleo_loss
from .masking import block_patch_mask, dinov2_collate_masks, mask_tokens, random_patch_mask
from .mim import (
    PatchCodebook,
    ibot_patch_loss,
    kmeans_codebook,
    mim_pixel_loss,
    mim_token_loss,
    patchify,
    unpatchify,
)
from .mlm import mlm_loss

__all__ = [
    "MultiCropWrapper", "PatchCodebook", "TeacherCentering", "block_patch_mask",
    "clamp_logit_scale", "clip_logits", "clip_loss", "dino_loss", "dinov2_collate_masks",
    "dinov2_loss",
    "feature_std", "ibot_patch_loss", "init_logit_scale", "kl_to_uniform", "kmeans_codebook",
    "koleo_loss", "mask_tokens", "mim_pixel_loss", "mim_token_loss", "mlm_loss",
    "random_patch_mask", "sinkhorn_knopp", "patchify", "teacher_entropy", "unpatchify",
]
