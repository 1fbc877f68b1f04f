"""Grad-CAM heatmaps of a prediction: which regions of the input raised the score of a class, drawn over the
model's view of the image.

Where the backend's head has a closed-form gradient (zoo.onnx_cam: a linear or mlp head on the pooled last feature
map, checked when the ONNX file was verified), the map is computed with numpy from the ONNX pass's own feature map:
no PyTorch model is built. Elsewhere pytorch-grad-cam runs on the PyTorch model (built on the first heatmap), and
the heatmap's source says why (`heatmap`)."""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from .model_cache import LoadedModel
from .onnx_cam import cam_mask
from .prediction import Prediction, model_view

__all__ = ["CAM_DISPLAY_SIZE", "CAM_IMAGE_WEIGHT", "Heatmap", "cam_overlay", "grad_cam", "heatmap", "onnx_cam_ready"]

CAM_DISPLAY_SIZE = 224  # heatmaps of small inputs (LeNet's 32 px) are upscaled to at least this for display
CAM_IMAGE_WEIGHT = 0.55  # the image's share of the overlay (pytorch-grad-cam's show_cam_on_image; the page's too)


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


@dataclass(frozen=True)
class Heatmap:
    """A Grad-CAM map and where it came from."""

    mask: np.ndarray          # (H, W) in [0, 1] at the model's input size
    source: str               # "onnx": closed form on ONNX Runtime's feature map; "torch": pytorch-grad-cam
    reason: str | None        # why "torch" (None for "onnx")
    layer: str                # the layer whose map it weighs

    @property
    def source_note(self) -> str:
        """The source in one string, e.g. for an API record: "onnx" or "torch (<reason>)"."""
        return self.source if self.reason is None else f"{self.source} ({self.reason})"


def onnx_cam_ready(loaded: LoadedModel, prediction: Prediction) -> bool:
    """Whether `heatmap` computes this prediction's map from the ONNX pass (no PyTorch model needed)."""
    return prediction.feature_map is not None and loaded.backend.cam_head is not None


def heatmap(loaded: LoadedModel, prediction: Prediction, class_index: int | None = None) -> Heatmap:
    """Grad-CAM for `class_index` (default: the top class): the closed form on the ONNX feature map where the
    backend has one, else pytorch-grad-cam on the PyTorch model (built on its first heatmap)."""
    index = prediction.class_index if class_index is None else int(class_index)
    backend = loaded.backend
    if onnx_cam_ready(loaded, prediction):
        feature_map = prediction.feature_map[0]  # (1, D, h, w) -> (D, h, w)
        # what the head read: the graph's `features` output of the same pass (the map's mean)
        pooled = (prediction.features[0].numpy() if prediction.features is not None
                  else feature_map.mean(axis=(1, 2)))
        gradient = backend.cam_head.gradient(pooled, index)
        mask = cam_mask(feature_map, gradient, tuple(prediction.input.shape[-2:]))
        return Heatmap(mask, "onnx", None, backend.cam_layer)
    reason = backend.cam_reason or "the ONNX pass gave no feature map"
    return Heatmap(grad_cam(loaded, prediction, index), "torch", reason, loaded.cam_layer)


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

    overlay = show_cam_on_image(model_view(loaded, prediction.input), mask, use_rgb=True,
                                image_weight=CAM_IMAGE_WEIGHT)
    height, width = overlay.shape[:2]
    scale = math.ceil(display_size / max(height, width))
    if scale > 1:
        overlay = np.asarray(Image.fromarray(overlay).resize((width * scale, height * scale), Image.BILINEAR))
    return overlay
