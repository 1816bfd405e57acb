"""Evaluation on frozen features: weighted k-NN, linear probe, CLIP zero-shot, attention-map
IoU (DINO) and patch-level linear segmentation mIoU (DINOv2)."""

from .attention_iou import (
    AttentionIoU,
    attention_iou,
    attention_mass_mask,
    patch_masks_from_pixels,
)
from .knn import knn_classifier
from .linear_probe import LinearClassifier, linear_probe, train_linear_classifier
from .segmentation import patch_segmentation_miou, segmentation_iou
from .zero_shot import zero_shot_accuracy, zero_shot_class_embeddings

__all__ = [
    "AttentionIoU", "LinearClassifier", "attention_iou", "attention_mass_mask",
    "knn_classifier", "linear_probe", "patch_masks_from_pixels", "patch_segmentation_miou",
    "segmentation_iou", "train_linear_classifier", "zero_shot_accuracy",
    "zero_shot_class_embeddings",
]
