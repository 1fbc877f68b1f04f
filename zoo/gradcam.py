"""Grad-CAM heatmaps of a prediction: which regions of the input raised the score of a class, drawn over the
model's view of the image. Grad-CAM needs gradients, so it runs on the PyTorch model whatever backend answered."""
from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image
from torch import nn

from .model_cache import LoadedModel
from .prediction import Prediction, model_view

__all__ = ["CAM_DISPLAY_SIZE", "cam_overlay", "grad_cam"]

CAM_DISPLAY_SIZE = 224  # heatmaps of small inputs (LeNet's 32 px) are upscaled to at least this for display


class _WithMetadata(nn.Module):
    """Binds a metadata tensor so that pytorch-grad-cam can call model(x) on a metadata-fusion model."""

    def __init__(self, model: nn.Module, metadata: torch.Tensor):
        super().__init__()
        self.model, self.metadata = model, metadata

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.metadata)


@contextmanager
def _no_weight_grads(model: nn.Module):
    """Grad-CAM needs gradients of activations only: skip the weights' (faster, nothing accumulates)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def grad_cam(loaded: LoadedModel, prediction: Prediction, class_index: int | None = None) -> np.ndarray:
    """Grad-CAM map (H, W) in [0, 1] at the model's input size, for `class_index` (default: the top class).

    The target layer comes from the zoo (zoo.cam_target_layers), so every architecture gets its last
    feature map, native ones included. Grad-CAM needs gradients, so it runs on the PyTorch model whatever
    backend answered (the first map builds it), on the input the prediction was made from.
    """
    from pytorch_grad_cam import GradCAM  # noqa: PLC0415
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: PLC0415

    index = prediction.class_index if class_index is None else int(class_index)
    target_layers, _ = loaded.cam_target()  # builds the PyTorch model on the first heatmap
    model = loaded.model
    target = model if prediction.metadata is None else _WithMetadata(model, prediction.metadata)
    with loaded.lock, _no_weight_grads(model), torch.enable_grad():
        # a normal tensor (the prediction's comes from inference mode) that requires grad: with frozen
        # weights, only such an input makes the target layer's output carry a gradient
        x = prediction.input.clone().requires_grad_(True)
        with GradCAM(model=target, target_layers=target_layers) as cam:
            mask = cam(input_tensor=x, targets=[ClassifierOutputTarget(index)])[0]  # (H, W)
    mask = np.nan_to_num(np.asarray(mask, dtype=np.float32), nan=0.0)
    return np.clip(mask, 0.0, 1.0)


def cam_overlay(loaded: LoadedModel, prediction: Prediction, mask: np.ndarray,
                display_size: int = CAM_DISPLAY_SIZE) -> np.ndarray:
    """The heatmap over the model's view of the image, (H', W', 3) uint8, at least `display_size` wide."""
    from pytorch_grad_cam.utils.image import show_cam_on_image  # noqa: PLC0415

    overlay = show_cam_on_image(model_view(loaded, prediction.input), mask, use_rgb=True, image_weight=0.55)
    height, width = overlay.shape[:2]
    scale = math.ceil(display_size / max(height, width))
    if scale > 1:
        overlay = np.asarray(Image.fromarray(overlay).resize((width * scale, height * scale), Image.BILINEAR))
    return overlay
