"""Grad-CAM target layers for every zoo model, chosen from the model's structure, not per request."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["cam_target_layers"]


def cam_target_layers(model: nn.Module, input_size: tuple[int, int, int] | None = None,
                      min_size: int = 2) -> list[nn.Module]:
    """The layer(s) whose activations and gradients Grad-CAM should use: the module that produces the
    last feature map (timm's `feature_info[-1]`), or a variant's attention output.

    With `input_size` (C, H, W), a feature level whose map would be smaller than `min_size` pixels a side
    at that input is passed over for the last one that is large enough: a 1x1 map (LeNet-5's C5 at
    32 px) is one number and cannot show where the evidence lies.
    """
    if getattr(model, "attention", None) is not None and hasattr(model, "zoo_backbone"):
        return [model.attention]
    backbone = getattr(model, "zoo_backbone", model)
    info = getattr(backbone, "feature_info", None)
    if info:
        dicts = info if isinstance(info, list) else info.get_dicts()
        levels = [backbone.get_submodule(d["module"]) for d in dicts]
        if input_size is not None and len(levels) > 1:
            sizes = _map_sizes(backbone, levels, input_size)
            large = [m for m in levels if min(sizes.get(m, (0, 0))) >= min_size]
            if large:
                return [large[-1]]
        return [levels[-1]]
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no convolution for Grad-CAM to use")
    return [convs[-1]]


def _map_sizes(backbone: nn.Module, modules: list[nn.Module], input_size: tuple[int, int, int]) -> dict:
    """(H, W) of each module's output when the backbone's forward_features runs on one `input_size` input."""
    sizes: dict[nn.Module, tuple[int, int]] = {}

    def record(module: nn.Module, args, output) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            sizes[module] = tuple(output.shape[-2:])

    hooks = [m.register_forward_hook(record) for m in modules]
    was_training = backbone.training
    try:
        backbone.eval()
        with torch.no_grad():
            backbone.forward_features(torch.zeros(1, *input_size))
    finally:
        backbone.train(was_training)
        for h in hooks:
            h.remove()
    return sizes
