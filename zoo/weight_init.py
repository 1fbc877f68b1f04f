"""Weight initialisation schemes for training from scratch.

The schemes are the ones seed 004_9c4af62090aa3adb.txt (section III.D) surveys. The seeds' experiments
use Keras, so the fixed-spread schemes use Keras' default spreads (normal/truncated stddev 0.05,
uniform +-0.05); the fan-based ones follow their papers (He 2015, Glorot 2010, LeCun 1998).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from ._errors import ZooError

__all__ = ["INIT_SCHEMES", "init_weights"]


def _lecun_normal(w: torch.Tensor) -> None:
    # LeCun normal: truncated normal with std sqrt(1 / fan_in), as Keras' LecunNormal.
    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(w)
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # correct for truncation at 2 std (Keras constant)
    nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)


INIT_SCHEMES: dict[str, Callable[[torch.Tensor], object]] = {
    "he_normal": lambda w: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu"),
    "he_uniform": lambda w: nn.init.kaiming_uniform_(w, mode="fan_in", nonlinearity="relu"),
    "xavier_normal": nn.init.xavier_normal_,
    "xavier_uniform": nn.init.xavier_uniform_,
    "lecun_normal": _lecun_normal,
    "lecun_uniform": lambda w: nn.init.kaiming_uniform_(w, mode="fan_in", nonlinearity="linear"),
    "orthogonal": nn.init.orthogonal_,
    "truncated_normal": lambda w: nn.init.trunc_normal_(w, std=0.05, a=-0.1, b=0.1),
    "random_normal": lambda w: nn.init.normal_(w, std=0.05),
    "random_uniform": lambda w: nn.init.uniform_(w, -0.05, 0.05),
    "zeros": nn.init.zeros_,
}

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)


def init_weights(modules: nn.Module | Iterable[nn.Module], scheme: str, bias: str | float = "zeros") -> int:
    """Re-initialise every conv and linear layer in `modules` with `scheme`; biases to zeros or a constant.

    Normalisation layers are reset to weight 1, bias 0. Returns the number of layers initialised.
    """
    if scheme not in INIT_SCHEMES:
        raise ZooError(f"Unknown init scheme {scheme!r}; choose one of {', '.join(INIT_SCHEMES)} "
                       "(or None for the architecture's own initialisation).")
    if not (bias == "zeros" or isinstance(bias, (int, float))):
        raise ZooError(f"bias init must be 'zeros' or a number (a constant), got {bias!r}.")
    init_fn = INIT_SCHEMES[scheme]
    roots = [modules] if isinstance(modules, nn.Module) else list(modules)
    count = 0
    with torch.no_grad():
        for root in roots:
            for m in root.modules():
                if isinstance(m, _WEIGHTED):
                    init_fn(m.weight)
                    if m.bias is not None:
                        nn.init.constant_(m.bias, 0.0 if bias == "zeros" else float(bias))
                    count += 1
                elif isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)):
                    if getattr(m, "weight", None) is not None:
                        nn.init.ones_(m.weight)
                        nn.init.zeros_(m.bias)
    return count
