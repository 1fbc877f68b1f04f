"""The evaluation transform, built in one place: timm's own (resize, centre crop, to tensor, normalise) from a
model's resolved data config, so that training's evaluation, the app, the exports' checks and the CLI feed every
model exactly what stock timm would."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from timm.data import create_transform
from torchvision import transforms

__all__ = ["EVAL_TRANSFORM_KEYS", "eval_transform"]

# what timm's create_transform reads of a data config; run folders and backends carry other keys beside them
EVAL_TRANSFORM_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def eval_transform(data_config: Mapping[str, Any]) -> transforms.Compose:
    """timm's evaluation transform (PIL image -> normalised (C, H, W) tensor) for a resolved data config
    (``timm.data.resolve_model_data_config`` / ``zoo.resolve_data_config``); keys it does not read are ignored."""
    return create_transform(**{k: data_config[k] for k in EVAL_TRANSFORM_KEYS if k in data_config}, is_training=False)
