"""Preprocessing from the model's data config, and the augmentation presets.

Evaluation preprocessing is timm's own, built by zoo.eval_transform (resize, centre crop, to tensor,
normalise), so the weights see at test time and in the app what stock timm
would feed them. Training presets insert random geometry/photometry on the resized PIL image,
before the tensor conversion, so augmentation works at the model's resolution.
"""
from __future__ import annotations

from typing import Any, Callable

from torchvision import transforms as T

from zoo.eval_transform import eval_transform

from .config import AUGMENT_PRESETS

__all__ = ["eval_transform", "train_transform", "augmentation_steps", "AUGMENT_PRESETS"]


def augmentation_steps(preset: str, in_chans: int) -> list[Callable]:
    """The random PIL-image transforms of a preset (empty for 'none')."""
    if preset not in AUGMENT_PRESETS:
        raise ValueError(f"augmentation preset {preset!r} is not one of {list(AUGMENT_PRESETS)}")
    if preset == "none":
        return []
    fill = 0 if in_chans == 1 else (0,) * in_chans
    if preset == "medical-safe":
        # seed 000: no mirroring (a flipped chest X-ray moves the heart); small, plausible changes
        return [
            T.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1), fill=fill),
            T.ColorJitter(brightness=0.1, contrast=0.1),
        ]
    # seed 002_dacd70395d15e47e.txt, 3.1.1: rotation, width/height shift, zoom, h and v flips
    return [
        T.RandomAffine(degrees=20, translate=(0.1, 0.1), scale=(0.85, 1.15), fill=fill),
        T.RandomHorizontalFlip(),
        T.RandomVerticalFlip(),
    ]


def train_transform(data_config: dict[str, Any], preset: str, in_chans: int) -> T.Compose:
    """The evaluation transform with the preset's random steps inserted before tensor conversion."""
    base = eval_transform(data_config)
    extra = augmentation_steps(preset, in_chans)
    if not extra:
        return base
    steps = list(base.transforms)
    at = next((i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__), None)
    if at is None:
        raise RuntimeError(f"timm's eval transform has no ToTensor step to insert augmentation "
                           f"before: {base}")
    return T.Compose(steps[:at] + extra + steps[at:])
