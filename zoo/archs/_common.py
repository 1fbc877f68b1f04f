"""What every native architecture shares: options it cannot honour, inputs below its minimum size, and
timm's intermediate-feature API for models that are a chain of layers."""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import Format, nchw_to, register_notrace_function
from timm.models import checkpoint
from timm.models._features import feature_take_indices  # timm exports it from this module only

from .._errors import ZooError

# the layouts forward_intermediates can return; timm's CNN families only offer NCHW, NHWC is one permute
INTERMEDIATE_FORMATS = ('NCHW', 'NHWC')
# the value of timm's global_pool that switches pooling off
NO_POOLING = ''
# keras.layers.BatchNormalization's default epsilon: the layers of models whose weights come from Keras use it
KERAS_BN_EPS = 1e-3


def reject_unsupported(name: str, kwargs: dict[str, Any]) -> None:
    """timm passes options of other families (drop_path_rate, ...); accept them only as no-ops (None, 0, False)."""
    unsupported = {k: v for k, v in kwargs.items() if v is not None and v is not False and v != 0}
    if unsupported:
        raise ZooError(f"{name} does not support {unsupported}; leave these options out for this model.")


# a leaf for torch.fx: timm's tracer (and torchvision's feature extractor given timm's lists) keeps it as
# one call, so a traced model checks its input too; the family modules also torch.fx.wrap it for plain
# torch.fx.symbolic_trace
@register_notrace_function
def check_min_size(name: str, x: torch.Tensor, min_size: Tuple[int, int]) -> torch.Tensor:
    """A clear error instead of a shape crash deep inside a convolution.

    Returns `x`: the caller continues with the result, so that a traced graph keeps the check (dead-code
    elimination, as in torchvision's feature extractor, drops a call whose result nothing uses).
    """
    if x.shape[-2] < min_size[0] or x.shape[-1] < min_size[1]:
        raise ZooError(f"{name} needs inputs of at least {min_size[0]}x{min_size[1]} pixels, got "
                       f"{x.shape[-2]}x{x.shape[-1]}; resize the images to at least that size.")
    return x


def intermediate_format(name: str, output_fmt: Union[str, Format]) -> Format:
    """timm's `output_fmt` of forward_intermediates, checked."""
    if output_fmt not in INTERMEDIATE_FORMATS:
        raise ZooError(f"{name} returns intermediate features as one of {INTERMEDIATE_FORMATS}, got "
                       f"output_fmt={output_fmt!r}.")
    return Format(output_fmt)


def forward_layer_taps(
        layers: Sequence[nn.Module],
        x: torch.Tensor,
        feature_ends: Sequence[int],
        indices: Optional[Union[int, List[int]]],
        stop_early: bool,
        output_fmt: Format,
        checkpoint_starts: Optional[Sequence[int]] = None,
) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """timm's forward_intermediates for a chain of single-input layers (as timm's VGG does it).

    Runs `layers` in order and returns the last output with the outputs of layers `feature_ends[i]` for the
    feature indices `indices` selects (timm's `feature_take_indices`: None all, n the last n, or a list).
    With `stop_early` the run ends at the last selected tap. With `checkpoint_starts` (the layers where
    the model's gradient-checkpointed pieces begin) each piece runs under gradient checkpointing, split
    after every tap so its output can be taken.
    """
    take_indices, max_index = feature_take_indices(len(feature_ends), indices)
    taken = {feature_ends[i] for i in take_indices}
    end = feature_ends[max_index] + 1 if stop_early else len(layers)
    bounds = {0, end} | {e + 1 for e in feature_ends if e + 1 < end}
    if checkpoint_starts is not None:
        bounds |= {s for s in checkpoint_starts if s < end}
    starts = sorted(bounds)
    intermediates = []
    for start, stop in zip(starts[:-1], starts[1:]):
        if checkpoint_starts is not None and not torch.jit.is_scripting():
            x = checkpoint(nn.Sequential(*layers[start:stop]), x)
        else:
            for layer in layers[start:stop]:
                x = layer(x)
        if stop - 1 in taken:
            intermediates.append(nchw_to(x, output_fmt))
    return x, intermediates
