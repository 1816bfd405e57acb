"""DINOv2 (Oquab et al. 2023, ``dinov2/train/ssl_meta_arch.py``): DINO on the CLS token, iBOT
on masked patch tokens, and KoLeo on the student's CLS features.

    L = w_dino DINO(CLS)  +  w_ibot iBOT(masked patches)  +  w_koleo sum_g KoLeo(h_g)
    iBOT = 1/(2B) sum_b 1/|M_b| sum_{i in M_b} -sum_k t_bik log softmax(s_bi / 0.1)_k

The student's global crops are block-masked (DINOv2's collate: half of the 2B global crops,
ratios stratified in [0.1, 0.5]); the teacher sees them unmasked. The patch targets come from
the teacher's head on the same view (same-view pairs, unlike the CLS loss), centred with their
own center (momentum 0.9, updated with the masked patches' outputs). One head for CLS and
patches (``ibot.separate_head: false``, the default). KoLeo (weight 0.1) spreads each global
crop's backbone CLS features over the sphere.

As DINOv2's ``forward_masked``, the head runs on the patches of the masked images only: the
unmasked images add 0 to the iBOT sum but still count in its 2B denominator, so the value is
``dinov2_loss``'s (a test checks it; exactly so without BatchNorm in the head: with the
small-data ``use_bn`` fix, the patch head's batch statistics are those of the masked images'
patches). Everything else (schedules, clipping, centering, EMA,
the small-data head fixes, collapse diagnostics) is the ``dino`` recipe's.

Headline metric: patch-level linear segmentation mIoU on the shapes (background + 3 shapes),
which DINOv2's patch loss targets; compare with ``dino`` at the same budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ... import functional as F
from ...autograd import no_grad
from ...models import VisionTransformer
from ...models.heads import cancel_last_layer_gradients
from ...nn import Module
from ...objectives import (
    TeacherCentering,
    dino_loss,
    dinov2_collate_masks,
    ibot_patch_loss,
    koleo_loss,
)
from ...optim.ema import ema_update
from .base import NON_NEGATIVE, UNIT, to_device
from .dino import SHAPES_CPU, SHAPES_GPU, SHAPES_TINY, DINOConfig, DINORecipe

__all__ = ["DINOv2Config", "DINOv2Model", "DINOv2Recipe"]


@dataclass
class DINOv2Config(DINOConfig):
    dataset: str = "shapes"
    patch_size: int = 4
    w_dino: float = 1.0
    w_ibot: float = 1.0
    w_koleo: float = 0.1
    mask_probability: float = 0.5  # fraction of the global crops that are masked
    mask_ratio_min: float = 0.1
    mask_ratio_max: float = 0.5
    norm_last_layer: bool = False  # DINOv2 trains weight_g
    clip_grad_per_param: float = 0.0  # DINOv2 clips a global norm instead:
    clip_grad: float = 3.0  # here one norm over the student (DINOv2: backbone, head each)

    RANGES: ClassVar[dict[str, Any]] = {
        "w_dino": NON_NEGATIVE, "w_ibot": NON_NEGATIVE, "w_koleo": NON_NEGATIVE,
        "mask_probability": UNIT, "mask_ratio_min": UNIT, "mask_ratio_max": UNIT,
    }

    def checks(self) -> list[str]:
        out = super().checks()
        if self.mask_ratio_min > self.mask_ratio_max:
            out.append(f"mask_ratio_min={self.mask_ratio_min} is above mask_ratio_max="
                       f"{self.mask_ratio_max}")
        return out


class DINOv2Model(Module):
    """Backbone (with a mask token) + head, DINOv2's ``backbone.*`` / ``dino_head.*`` names."""

    def __init__(self, backbone: VisionTransformer, head: Module):
        super().__init__()
        self.backbone = backbone
        self.dino_head = head


class DINOv2Recipe(DINORecipe):
    """DINO + iBOT + KoLeo on the shapes; ``evaluate`` adds patch-segmentation mIoU."""

    name = "dinov2"
    description = "DINOv2: DINO + iBOT masked patches + KoLeo (patch segmentation mIoU)"
    Config = DINOv2Config
    DISTRIBUTED_UNSUPPORTED = (
        "DINOv2's collate masks are drawn for the whole batch at once (which images are "
        "masked, and how much, depends on the batch), and the iBOT term is weighted by the "
        "masked images of the batch; it needs the global batch's masks on every rank, each "
        "rank's rows of them, and the iBOT weighting over the global batch (the objectives' "
        "cross-rank parts exist; the recipe does not use them yet)")
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # the budgets of dino's *-shapes presets: per seed the same data, initialisation and
        # settings, so that the two compare in pairs (bench/outcomes.py --seeds, issue 15)
        "tiny": dict(SHAPES_TINY),
        "cpu": dict(SHAPES_CPU),
        "gpu": dict(SHAPES_GPU),
        # `python -m minitransformer demo --recipe dinov2`: the CLS attention finds the
        # object (measured: IoU 0.15 at init, 0.32 best head after 160 steps, 0.51 at 240,
        # with BatchNorm in the head and no local crops, as here)
        "demo": dict(SHAPES_CPU, steps=240, batch_size=64, dim=64, lr=1e-3, augment="dino",
                     background=(0.0, 0.2), use_bn=True, n_local=0),
    }

    def build(self) -> None:
        super().build()
        self.ibot_center = TeacherCentering(self.cfg.out_dim, momentum=self.cfg.center_momentum)
        self.modules["ibot_center"] = self.ibot_center
        self.grid = self.data.img_size // self.cfg.patch_size
        # DINOv2's param groups: no decay on biases, norms, LayerScale gammas and tokens
        self.optimizer = self.make_optimizer(self.student)

    def make_network(self) -> Module:
        return DINOv2Model(VisionTransformer(self.vit_config(mask_token=True)), self.make_head())

    # ------------------------------------------------------------------ forward passes
    def student_forward(self, crops: list[Any], masks: Any, masked_rows: np.ndarray
                        ) -> tuple[list[Any], list[Any], Any]:
        """CLS logits of every crop, backbone CLS of each global crop, and patch logits of
        the masked global images. Shapes: crops [2 x (B, C, S, S), n_l x (B, C, s, s)],
        masks (2B, N) -> n_c x (B, K), 2 x (B, D), (m, N, K) with m = len(masked_rows)."""
        net = self.student
        B = crops[0].shape[0]
        g = F.concat(crops[:2], axis=0)  # (2B, C, S, S): both globals in one pass
        feats = net.backbone.forward_features(g, masks)
        cls_g = feats["x_norm_clstoken"]  # (2B, D)
        cls_parts = [cls_g]
        if len(crops) > 2:
            local = F.concat(crops[2:], axis=0)  # (n_l B, C, s, s)
            cls_parts.append(net.backbone.forward_features(local)["x_norm_clstoken"])
        cls_all = F.concat(cls_parts, axis=0) if len(cls_parts) > 1 else cls_g
        logits = net.dino_head(cls_all)  # (n_c B, K)
        cuts = [B * i for i in range(1, len(crops))]
        cls_logits = list(F.split(logits, cuts, axis=0))  # n_c x (B, K)
        backbone_cls = list(F.split(cls_g, [B], axis=0))  # 2 x (B, D)
        patches = feats["x_norm_patchtokens"][masked_rows]  # (m, N, D)
        patch_logits = net.dino_head(patches)  # (m, N, K)
        return cls_logits, backbone_cls, patch_logits

    def teacher_forward(self, crops: list[Any], masked_rows: np.ndarray
                        ) -> tuple[list[Any], Any, Any]:
        """Teacher CLS logits per global crop (2 x (B, K)), its backbone CLS (2B, D) and its
        patch logits on the masked images' unmasked views (m, N, K), without gradient."""
        net = self.teacher
        B = crops[0].shape[0]
        with no_grad():
            g = F.concat(crops[:2], axis=0)
            feats = net.backbone.forward_features(g)
            cls = feats["x_norm_clstoken"]  # (2B, D)
            logits = net.dino_head(cls)
            patch_logits = net.dino_head(feats["x_norm_patchtokens"][masked_rows])
        return list(F.split(logits, [B], axis=0)), cls, patch_logits

    # ------------------------------------------------------------------ one step
    def draw_masks(self, B: int) -> tuple[np.ndarray, np.ndarray]:
        """DINOv2's collate masks for the 2B global crops: (2B, N) bool and the indices of
        the masked rows."""
        c = self.cfg
        masks, _ = dinov2_collate_masks(2 * B, self.grid, self.step_rng(),
                                        mask_probability=c.mask_probability,
                                        ratio_min_max=(c.mask_ratio_min, c.mask_ratio_max))
        return masks, np.flatnonzero(masks.any(axis=1))

    def losses(self, crops: list[Any], masks: np.ndarray, masked_rows: np.ndarray, temp: float
               ) -> dict[str, Any]:
        """Every term of the DINOv2 loss for one batch (and what the updates need)."""
        c = self.cfg
        B = crops[0].shape[0]
        md = to_device(masks, self.device)
        rows = to_device(masked_rows, self.device)
        t_logits, t_cls, t_patch = self.teacher_forward(crops, rows)
        t_probs = self.center.probs(t_logits, temp)  # 2 x (B, K)
        s_logits, s_cls, s_patch = self.student_forward(crops, md, rows)
        dino = dino_loss(s_logits, t_probs, student_temp=c.student_temp)
        sub_host = masks[masked_rows]  # (m, N) masks of the masked images, on the host
        sub = to_device(sub_host, self.device)
        if len(masked_rows):
            t_patch_probs = self.ibot_center.probs(t_patch, temp)  # (m, N, K)
            # ibot_patch_loss averages over its m images; DINOv2 averages over all 2B
            ibot = ibot_patch_loss(s_patch, t_patch_probs, sub, c.student_temp) * (
                len(masked_rows) / (2 * B))
        else:
            ibot = (s_logits[0] * 0.0).sum()
        koleo = koleo_loss(s_cls[0]) + koleo_loss(s_cls[1])  # per global crop, summed
        total = c.w_dino * dino + c.w_ibot * ibot + c.w_koleo * koleo
        t_patch_masked = None
        if len(masked_rows):
            # the masked patches' teacher logits for the iBOT center: gathered at indices
            # computed on the host (as DINOv2's collate makes mask_indices_list), never with a
            # boolean mask on the device, whose result size a GPU would have to report
            m, N, K = t_patch.shape
            picked = to_device(np.flatnonzero(sub_host), self.device)  # (M,) into m*N
            t_patch_masked = t_patch.data.reshape(m * N, K)[picked]  # (M, K)
        return {"total": total, "dino": dino, "ibot": ibot, "koleo": koleo,
                "t_logits": t_logits, "t_probs": t_probs, "t_cls": t_cls,
                "t_patch_masked": t_patch_masked}

    def train_step(self, step: int) -> dict[str, Any]:
        # the only integer inputs are the masked-row indices, in range by construction
        # (np.flatnonzero of the masks' rows): the gathers need not check them on the device
        with F.use_data_checks(False):
            c = self.cfg
            self.student.train()
            self.teacher.train()
            crops = self.draw_views()
            masks, masked_rows = self.draw_masks(crops[0].shape[0])
            temp = self.at(self.teacher_temp, step)
            parts = self.losses(crops, masks, masked_rows, temp)

            def freeze_last_layer() -> None:
                if step < c.freeze_last_layer_steps:
                    cancel_last_layer_gradients(self.student)

            self.optimizer.set_weight_decay(self.wd_at(step))
            out = self.optimizer_step(parts["total"], step,
                                      per_param_clip=c.clip_grad_per_param,
                                      before_step=freeze_last_layer)
            # not gated on a finite loss (a host read): the loop stops at a NaN before any save
            self.center.update(parts["t_logits"])
            if parts["t_patch_masked"] is not None:
                self.ibot_center.update(parts["t_patch_masked"])  # (M, K) masked patches
            ema_update(self.teacher, self.student, self.at(self.momentum, step))
            for k in ("dino", "ibot", "koleo"):
                out[k] = parts[k].data  # device scalars, read when the loop logs
            t_cls = parts["t_cls"]
            out.update(self.diagnostics(parts["t_probs"], [t_cls], temp))
            return out
