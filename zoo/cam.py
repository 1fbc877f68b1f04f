"""Grad-CAM target layers for every zoo model, chosen from the model's structure, not per request."""
from __future__ import annotations

from torch import nn

__all__ = ["cam_target_layers"]


def cam_target_layers(model: nn.Module) -> list[nn.Module]:
    """The layer(s) whose activations and gradients Grad-CAM should use: the module that produces the
    last feature map (timm's `feature_info[-1]`), or a variant's attention output."""
    if getattr(model, "attention", None) is not None and hasattr(model, "zoo_backbone"):
        return [model.attention]
    backbone = getattr(model, "zoo_backbone", model)
    info = getattr(backbone, "feature_info", None)
    if info:
        last = info[-1] if isinstance(info, list) else info.get_dicts()[-1]
        return [backbone.get_submodule(last["module"])]
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no convolution for Grad-CAM to use")
    return [convs[-1]]
