"""A forward pre-hook that turns a wrong-channel or too-small input into a ZooError instead of a crash in torch."""
from __future__ import annotations

from torch import nn

from ._errors import ZooError
from .zoo_config import ZooConfig

__all__ = ["guard_input_size"]


def guard_input_size(model: nn.Module) -> None:
    """Make a too-small or wrong-channel input a clear ZooError instead of a crash deep inside torch.

    The limits come from ``model.pretrained_cfg`` (``min_input_size``, ``input_size``).
    """
    model.register_forward_pre_hook(_check_input)


def _check_input(model: nn.Module, args) -> None:
    x = args[0] if args else None
    if not hasattr(x, "shape") or x.dim() != 4:
        raise ZooError(f"{_name(model)} takes a (batch, channels, height, width) tensor, "
                       f"got {type(x).__name__} of shape {tuple(getattr(x, 'shape', ()))}.")
    c, h, w = model.pretrained_cfg["min_input_size"]
    if x.shape[1] != c:
        raise ZooError(f"{_name(model)} was built for {c}-channel input, got {x.shape[1]} channels; convert "
                       f"the image (zoo.images.to_model_mode) or create it with in_chans={x.shape[1]}.")
    if x.shape[2] < h or x.shape[3] < w:
        raise ZooError(f"{_name(model)} needs input of at least {h}x{w} pixels, got "
                       f"{x.shape[2]}x{x.shape[3]}; resize the image (its default is "
                       f"{model.pretrained_cfg['input_size'][1]}x{model.pretrained_cfg['input_size'][2]}).")


def _name(model: nn.Module) -> str:
    return ZooConfig.from_model(model).architecture or type(model).__name__
