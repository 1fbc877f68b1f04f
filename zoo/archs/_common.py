"""Checks every native architecture shares: options it cannot honour, and inputs below its minimum size."""
from __future__ import annotations

from typing import Any

import torch

from .._errors import ZooError


def reject_unsupported(name: str, kwargs: dict[str, Any]) -> None:
    """timm passes options of other families (drop_path_rate, ...); accept them only as no-ops (None, 0, False)."""
    unsupported = {k: v for k, v in kwargs.items() if v is not None and v is not False and v != 0}
    if unsupported:
        raise ZooError(f"{name} does not support {unsupported}; leave these options out for this model.")


def check_min_size(name: str, x: torch.Tensor, min_size: tuple[int, int]) -> None:
    """A clear error instead of a shape crash deep inside a convolution."""
    if x.shape[-2] < min_size[0] or x.shape[-1] < min_size[1]:
        raise ZooError(f"{name} needs inputs of at least {min_size[0]}x{min_size[1]} pixels, got "
                       f"{x.shape[-2]}x{x.shape[-1]}; resize the images to at least that size.")
