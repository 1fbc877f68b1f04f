"""LeNet-5

Paper: `Gradient-Based Learning Applied to Document Recognition` - LeCun, Bottou, Bengio, Haffner,
Proc. IEEE 86(11), 1998 (surveyed in seeds 001_0f58f971053e01d7.txt and 004_9c4af62090aa3adb.txt).

Layers as in section II.B of the paper: C1 6@5x5, S2 2x2 subsampling, C3 16@5x5, S4, C5 120@5x5 (a
convolution, so forward_features returns a (B, 120, 1, 1) map at 32x32), F6 84, output; tanh
activations. Simplifications, as in most modern re-implementations: C3 connects to all six S2 maps
(not the paper's Table I connection scheme), S2/S4 are plain 2x2 average pools (no trainable
coefficient and bias), tanh is unscaled (not 1.7159 tanh(2a/3)), and the output layer is a Linear
classifier instead of Euclidean RBF units. Weights use LeCun normal init (std 1 / sqrt(fan_in)): the
paper's uniform +-2.4 / fan_in assumes its scaled tanh and trainable subsampling and, without them,
leaves the C5 output near zero (std ~5e-4 at init) so that training barely starts.

global_pool='' (timm's "no pooling") leaves out F6 and the classifier, which take a pooled vector:
forward_head then returns the C5 map (B, 120, H, W), as num_classes=0 with global_pool='' does for timm's
families.

Parameters: 61,706 at 10 classes, 145,856 at 1000 classes.
"""
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn

from timm.layers import SelectAdaptivePool2d, get_device_dtype
from timm.models import build_model_with_cfg, checkpoint, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices  # timm exports it from this module only

from zoo._errors import ZooError

from ._common import NO_POOLING, check_min_size, forward_layer_taps, intermediate_format, reject_unsupported

__all__ = ['LeNet5']

_MIN_SIZE = (32, 32)  # C5 (5x5, valid) needs a 5x5 S4 map, i.e. a 32x32 input
_POOL_TYPES = ('avg', 'max', NO_POOLING)

torch.fx.wrap('check_min_size')  # one call in a graph from plain torch.fx.symbolic_trace


def _check_head(num_classes: int, global_pool: str) -> None:
    if global_pool not in _POOL_TYPES:
        raise ZooError(f"LeNet-5 global_pool must be one of {_POOL_TYPES}, got {global_pool!r}.")
    if global_pool == NO_POOLING and num_classes > 0:
        raise ZooError(f"LeNet-5 with global_pool='' (no pooling) returns the C5 map without F6 and the "
                       f"classifier, so it needs num_classes=0, got num_classes={num_classes}.")


def _global_pool(global_pool: str) -> SelectAdaptivePool2d:
    return SelectAdaptivePool2d(pool_type=global_pool, flatten=global_pool != NO_POOLING)  # (B, C, H, W) -> (B, C)


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) with the timm model interface."""

    def __init__(
            self,
            num_classes: int = 1000,
            in_chans: int = 1,
            drop_rate: float = 0.,
            global_pool: str = 'avg',
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
            **kwargs: Any,
    ) -> None:
        """
        Args:
            num_classes: Number of output classes; 0 leaves the classifier out (pre-logits output).
            in_chans: Number of input channels.
            drop_rate: Dropout before the classifier (the paper has none).
            global_pool: 'avg' or 'max' pooling of the C5 map before F6 (a no-op at 32x32, where C5 is 1x1);
                '' (with num_classes=0) for the unpooled C5 map.
            device: Where to create the parameters.
            dtype: In which dtype to create the parameters.
            **kwargs: Options of other timm models (drop_path_rate, ...), accepted only as no-ops (None, 0).
        """
        super().__init__()
        reject_unsupported('LeNet-5', kwargs)
        _check_head(num_classes, global_pool)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.min_size: Tuple[int, int] = _MIN_SIZE

        self.features = nn.Sequential(OrderedDict([
            ('c1', nn.Conv2d(in_chans, 6, kernel_size=5)),  # (B, C, 32, 32) -> (B, 6, 28, 28)
            ('act1', nn.Tanh()),
            ('s2', nn.AvgPool2d(2)),  # -> (B, 6, 14, 14)
            ('c3', nn.Conv2d(6, 16, kernel_size=5)),  # -> (B, 16, 10, 10)
            ('act3', nn.Tanh()),
            ('s4', nn.AvgPool2d(2)),  # -> (B, 16, 5, 5)
            ('c5', nn.Conv2d(16, 120, kernel_size=5)),  # -> (B, 120, 1, 1)
            ('act5', nn.Tanh()),
        ]))
        self.stage_starts = [i for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)]
        self.num_features = 120
        self.head_hidden_size = 84
        self.feature_info = [
            dict(num_chs=6, reduction=1, module='features.act1'),
            dict(num_chs=16, reduction=2, module='features.act3'),
            dict(num_chs=120, reduction=4, module='features.act5'),
        ]
        layer_names = list(self.features._modules)
        self.feature_ends = [layer_names.index(info['module'].split('.')[-1]) for info in self.feature_info]

        self.global_pool = _global_pool(global_pool)
        self.f6 = nn.Linear(self.num_features, self.head_hidden_size)
        self.head_act = nn.Tanh()
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def _init_weights(self) -> None:
        # LeCun normal, std 1 / sqrt(fan_in) (LeCun et al., Efficient BackProp, 1998)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode='fan_in', nonlinearity='linear')
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^features\.c1', blocks=[(r'^features\.c3', (0,)), (r'^features\.c5', (1,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        _check_head(num_classes, self.global_pool.pool_type if global_pool is None else global_pool)
        if global_pool is not None:
            self.global_pool = _global_pool(global_pool)
        self.num_classes = num_classes
        dd = get_device_dtype(self)
        self.fc = nn.Linear(self.head_hidden_size, num_classes, **dd) if num_classes > 0 else nn.Identity()

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """timm's feature extraction: the C1, C3 and C5 maps after tanh (feature_info), and forward_features' output.

        Args:
            x: Input images (B, C, H, W).
            indices: Feature levels to return: None all, n the last n, or a list of indices.
            norm: Unused (no final norm layer).
            stop_early: Stop after the last requested level (the first output is then that level's map).
            output_fmt: 'NCHW' or 'NHWC' layout of the intermediate maps.
            intermediates_only: Return the list of maps only.
        """
        x = check_min_size('LeNet-5', x, self.min_size)
        fmt = intermediate_format('LeNet-5', output_fmt)
        checkpoint_starts = self.stage_starts if self.grad_checkpointing else None
        x, intermediates = forward_layer_taps(
            list(self.features), x, self.feature_ends, indices, stop_early, fmt, checkpoint_starts)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Remove the layers after the last of `indices` (and the head); returns the kept indices."""
        take_indices, max_index = feature_take_indices(len(self.feature_ends), indices)
        self.features = self.features[:self.feature_ends[max_index] + 1]
        self.stage_starts = [s for s in self.stage_starts if s < len(self.features)]
        prune_end = max_index < len(self.feature_ends) - 1
        if prune_end:
            self.num_features = self.feature_info[max_index]['num_chs']
        if prune_head or prune_end:
            # F6 takes C5's 120 channels: it goes with the classifier, the features end unpooled
            self.f6 = nn.Identity()
            self.head_hidden_size = self.num_features
            self.reset_classifier(0, NO_POOLING)
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = check_min_size('LeNet-5', x, self.min_size)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            # one checkpoint per stage (a convolution and the layers up to the next one)
            for start, end in zip(self.stage_starts, self.stage_starts[1:] + [len(self.features)]):
                x = checkpoint(self.features[start:end], x)
            return x
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)  # (B, 120, H, W) -> (B, 120)
        if self.global_pool.is_identity():
            return x  # no pooling: the C5 map, (B, 120, H, W)
        x = self.head_act(self.f6(x))  # -> (B, 84)
        x = self.head_drop(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return self.forward_head(x)


def _create_lenet(variant: str, pretrained: bool = False, **kwargs: Any) -> LeNet5:
    return build_model_with_cfg(
        LeNet5,
        variant,
        pretrained,
        feature_cfg=dict(feature_cls='getter', flatten_sequential=True, out_indices=(0, 1, 2)),
        **kwargs,
    )


default_cfgs = generate_default_cfgs({
    'lenet5': {
        'num_classes': 1000,
        'input_size': (1, 32, 32),
        'min_input_size': (1, *_MIN_SIZE),
        'pool_size': (1, 1),
        'crop_pct': 1.0,
        'interpolation': 'bilinear',
        'mean': (0.5,),
        'std': (0.5,),
        'first_conv': 'features.c1',
        'classifier': 'fc',
        'license': 'apache-2.0',
        'paper_name': 'LeCun, Bottou, Bengio, Haffner. Gradient-Based Learning Applied to Document '
                      'Recognition. Proceedings of the IEEE 86(11):2278-2324, 1998',
        'paper_ids': 'doi:10.1109/5.726791',
    },
})


@register_model
def lenet5(pretrained: bool = False, **kwargs: Any) -> LeNet5:
    """LeNet-5 (LeCun et al. 1998), 32x32 single-channel input."""
    return _create_lenet('lenet5', pretrained, **kwargs)
