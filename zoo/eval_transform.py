"""The evaluation transform, built in one place: timm's own (resize, centre crop, to tensor, normalise) from a
model's resolved data config, so that training's evaluation, the app, the exports' checks and the CLI feed every
model exactly what stock timm would.

One exception, for models imported from TensorFlow/Keras whose source resized with `tf.image.resize` (bilinear,
float, no antialiasing): their config.json's zoo block says ``"resize": "tf-bilinear"`` (timm's pretrained_cfg
cannot hold the key), zoo.resolve_data_config copies it into the data config, and the image is then squashed to the
input size with torch's bilinear (align_corners=False, antialias=False: TensorFlow's resize) on unrounded floats.
PIL's bilinear, timm's, rounds to 8 bits and smooths when shrinking.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import create_transform
from torchvision import transforms

__all__ = ["EVAL_TRANSFORM_KEYS", "RESIZE_KEY", "TF_BILINEAR", "eval_transform", "tf_bilinear_resize"]

# what timm's create_transform reads of a data config; run folders and backends carry other keys beside them
EVAL_TRANSFORM_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
RESIZE_KEY, TF_BILINEAR = "resize", "tf-bilinear"  # the zoo's one resize that is not timm's (see above)


def tf_bilinear_resize(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """An L or RGB image -> (C, H, W) float 0-255, as tf.image.resize(img, size) (bilinear, half-pixel centres, no
    antialiasing, no rounding): torch's bilinear with align_corners=False, antialias=False is that resize."""
    x = torch.from_numpy(np.asarray(image, dtype=np.float32))
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)  # (C, h, w)
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=False)[0]


class _TfBilinearToTensor:
    """PIL image -> (C, H, W) in [0, 1], resized as TensorFlow does (a class, not a lambda: data loaders pickle it)."""

    def __init__(self, size: tuple[int, int]):
        self.size = tuple(size)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return tf_bilinear_resize(image, self.size) / 255


def eval_transform(data_config: Mapping[str, Any]) -> transforms.Compose:
    """timm's evaluation transform (PIL image -> normalised (C, H, W) tensor) for a resolved data config
    (``timm.data.resolve_model_data_config`` / ``zoo.resolve_data_config``); keys it does not read are ignored."""
    if data_config.get(RESIZE_KEY) == TF_BILINEAR:
        return transforms.Compose([_TfBilinearToTensor(data_config["input_size"][1:]),
                                   transforms.Normalize(data_config["mean"], data_config["std"])])
    return create_transform(**{k: data_config[k] for k in EVAL_TRANSFORM_KEYS if k in data_config}, is_training=False)
