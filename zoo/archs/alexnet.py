"""AlexNet and ZFNet

Papers:
* `ImageNet Classification with Deep Convolutional Neural Networks` - Krizhevsky, Sutskever, Hinton,
  NeurIPS 2012 (AlexNet; surveyed in seeds 001_0f58f971053e01d7.txt and 004_9c4af62090aa3adb.txt)
* `Visualizing and Understanding Convolutional Networks` - Zeiler, Fergus, ECCV 2014,
  https://arxiv.org/abs/1311.2901 (ZFNet; seed 001_0f58f971053e01d7.txt)

Both are the single-tower form of the paper networks (the 2012 model split conv2/4/5 over two GPUs;
here every layer sees all channels, as in torchvision's AlexNet), with the papers' channel widths
96-256-384-384-256, local response normalisation (k=2, n=5, alpha=1e-4, beta=0.75), overlapping 3x3/2
max pooling and an FC 4096-4096 head with dropout 0.5 after each hidden layer (Caffe order).
* AlexNet: conv1 11x11/4, LRN then pool; conv2 5x5/1.
* ZFNet: conv1 7x7/2, pool then LRN; conv2 5x5/2; ceil-mode pooling, which gives the paper's Fig. 3
  sizes 110 -> 55 -> 26 -> 13 -> 6 at 224 px.
An adaptive pool to the paper's 6x6 grid feeds the first FC layer, so smaller inputs (down to
min_input_size) work, as in torchvision's AlexNet. Weights use He (fan-in) normal init with zero biases:
the papers' N(0, 0.01) init (AlexNet: biases 1 in conv2/4/5 and the hidden FC layers) was made for
their 90-epoch SGD schedules; in a 60-step Adam run (lr 1e-4) on scikit-learn's digits it reached 10 %
(AlexNet, 64 px) and 23 % (ZFNet, 48 px) accuracy, He init 84 % and 90 %.

global_pool='' (timm's "no pooling") leaves out the fully connected layers too, which take the pooled 6x6
grid: forward_head then returns the pool5 map (B, 256, H, W), as num_classes=0 with global_pool='' does
for timm's families.

Parameters at 1000 classes: AlexNet 62,378,344; ZFNet 62,357,608.
"""
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import SelectAdaptivePool2d, get_device_dtype
from timm.models import build_model_with_cfg, checkpoint, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices  # timm exports it from this module only

from zoo._errors import ZooError

from ..weight_init import init_weights
from ._common import NO_POOLING, check_min_size, forward_layer_taps, intermediate_format, reject_unsupported

__all__ = ['AlexNet']

_POOL_TYPES = ('avg', 'max', NO_POOLING)

torch.fx.wrap('check_min_size')  # one call in a graph from plain torch.fx.symbolic_trace

# conv1 and conv2 as (out_chs, kernel, stride, padding), the remaining layers are shared;
# min_size: the smallest input that forwards (measured).
cfgs: Dict[str, Dict[str, Any]] = {
    'alexnet': dict(
        name='AlexNet', conv1=(96, 11, 4, 2), conv2=(256, 5, 1, 2), norm_before_pool=True,
        ceil_mode=False, min_size=(63, 63),
    ),
    'zfnet': dict(
        name='ZFNet', conv1=(96, 7, 2, 1), conv2=(256, 5, 2, 0), norm_before_pool=False,
        ceil_mode=True, min_size=(47, 47),
    ),
}


def _check_head(name: str, num_classes: int, global_pool: str) -> None:
    if global_pool not in _POOL_TYPES:
        raise ZooError(f"{name} global_pool must be one of {_POOL_TYPES}, got {global_pool!r}.")
    if global_pool == NO_POOLING and num_classes > 0:
        raise ZooError(f"{name} with global_pool='' (no pooling) returns the pool5 map without the fully connected "
                       f"layers, so it needs num_classes=0, got num_classes={num_classes}.")


def _global_pool(global_pool: str) -> SelectAdaptivePool2d:
    # (B, 256, H, W) -> (B, 256 * 6 * 6), the grid the first FC layer takes
    return SelectAdaptivePool2d(output_size=6, pool_type=global_pool, flatten=global_pool != NO_POOLING)


class AlexNet(nn.Module):
    """AlexNet-style network (5 convolutions, 3 fully connected layers); `cfg` selects AlexNet or ZFNet."""

    def __init__(
            self,
            cfg: Dict[str, Any],
            num_classes: int = 1000,
            in_chans: int = 3,
            drop_rate: float = 0.5,
            global_pool: str = 'avg',
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
            **kwargs: Any,
    ) -> None:
        """
        Args:
            cfg: One of `cfgs` (conv1/conv2 geometry, LRN/pool order, pooling mode, minimum input size).
            num_classes: Number of output classes; 0 leaves the classifier out (pre-logits output).
            in_chans: Number of input channels.
            drop_rate: Dropout after each hidden FC layer (0.5 in both papers).
            global_pool: 'avg' or 'max' adaptive pooling to the 6x6 grid the first FC layer takes; '' (with
                num_classes=0) for the unpooled pool5 map.
            device: Where to create the parameters.
            dtype: In which dtype to create the parameters.
            **kwargs: Options of other timm models (drop_path_rate, ...), accepted only as no-ops (None, 0).
        """
        super().__init__()
        self.name = cfg['name']
        reject_unsupported(self.name, kwargs)
        _check_head(self.name, num_classes, global_pool)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.min_size: Tuple[int, int] = cfg['min_size']
        self.grad_checkpointing = False

        c1_chs, c1_k, c1_s, c1_p = cfg['conv1']
        c2_chs, c2_k, c2_s, c2_p = cfg['conv2']
        ceil_mode = cfg['ceil_mode']

        def lrn() -> nn.Module:
            # paper: a / (k + alpha * sum(a^2))^beta; torch divides alpha by n, so pass alpha * n
            return nn.LocalResponseNorm(size=5, alpha=5e-4, beta=0.75, k=2.)

        def pool() -> nn.Module:
            return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=ceil_mode)

        def norm_pool(i: int) -> List[Tuple[str, nn.Module]]:
            if cfg['norm_before_pool']:
                return [(f'norm{i}', lrn()), (f'pool{i}', pool())]
            return [(f'pool{i}', pool()), (f'norm{i}', lrn())]

        # shapes at 224 px for AlexNet (ZFNet: 110, 55, 26, 13, 13, 13, 6)
        self.features = nn.Sequential(OrderedDict([
            ('conv1', nn.Conv2d(in_chans, c1_chs, c1_k, stride=c1_s, padding=c1_p)),  # -> (B, 96, 55, 55)
            ('act1', nn.ReLU(inplace=True)),
            *norm_pool(1),  # -> (B, 96, 27, 27)
            ('conv2', nn.Conv2d(c1_chs, c2_chs, c2_k, stride=c2_s, padding=c2_p)),  # -> (B, 256, 27, 27)
            ('act2', nn.ReLU(inplace=True)),
            *norm_pool(2),  # -> (B, 256, 13, 13)
            ('conv3', nn.Conv2d(c2_chs, 384, 3, padding=1)),
            ('act3', nn.ReLU(inplace=True)),
            ('conv4', nn.Conv2d(384, 384, 3, padding=1)),
            ('act4', nn.ReLU(inplace=True)),
            ('conv5', nn.Conv2d(384, 256, 3, padding=1)),
            ('act5', nn.ReLU(inplace=True)),
            ('pool5', pool()),  # -> (B, 256, 6, 6)
        ]))
        self.stage_starts = [i for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)]
        self.num_features = 256
        self.head_hidden_size = 4096
        # taps before each max pool and the final map, like timm's VGG
        first_tap = 'norm1' if cfg['norm_before_pool'] else 'act1'
        second_tap = 'norm2' if cfg['norm_before_pool'] else 'act2'
        self.feature_info = [
            dict(num_chs=c1_chs, reduction=c1_s, module=f'features.{first_tap}'),
            dict(num_chs=c2_chs, reduction=2 * c1_s * c2_s, module=f'features.{second_tap}'),
            dict(num_chs=256, reduction=4 * c1_s * c2_s, module='features.act5'),
            dict(num_chs=256, reduction=8 * c1_s * c2_s, module='features.pool5'),
        ]
        layer_names = list(self.features._modules)
        self.feature_ends = [layer_names.index(info['module'].split('.')[-1]) for info in self.feature_info]

        self.global_pool = _global_pool(global_pool)
        self.fc1 = nn.Linear(256 * 6 * 6, self.head_hidden_size)
        self.act6 = nn.ReLU(inplace=True)
        self.drop6 = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(self.head_hidden_size, self.head_hidden_size)
        self.act7 = nn.ReLU(inplace=True)
        self.drop7 = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def _init_weights(self) -> None:
        init_weights(self, 'he_normal')  # He normal (fan_in, ReLU gain), zero biases: zoo.weight_init's scheme

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^features\.conv1\.', blocks=[(r'^features\.conv(\d+)\.', None)])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        _check_head(self.name, num_classes, self.global_pool.pool_type if global_pool is None else global_pool)
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
        """timm's feature extraction: the maps before pool1, pool2 and pool5 and the pool5 output (feature_info),
        and forward_features' output.

        Args:
            x: Input images (B, C, H, W).
            indices: Feature levels to return: None all, n the last n, or a list of indices.
            norm: Unused (no final norm layer).
            stop_early: Stop after the last requested level (the first output is then that level's map).
            output_fmt: 'NCHW' or 'NHWC' layout of the intermediate maps.
            intermediates_only: Return the list of maps only.
        """
        x = check_min_size(self.name, x, self.min_size)
        fmt = intermediate_format(self.name, output_fmt)
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
            # the hidden FC layers take the pooled pool5 grid: they go with the classifier, the features end unpooled
            self.fc1 = nn.Identity()
            self.fc2 = nn.Identity()
            self.head_hidden_size = self.num_features
            self.reset_classifier(0, NO_POOLING)
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = check_min_size(self.name, x, self.min_size)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            # one checkpoint per stage (a convolution and the layers up to the next one)
            for start, end in zip(self.stage_starts, self.stage_starts[1:] + [len(self.features)]):
                x = checkpoint(self.features[start:end], x)
            return x
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)  # (B, 256, H, W) -> (B, 256 * 6 * 6)
        if self.global_pool.is_identity():
            return x  # no pooling: the pool5 map, (B, 256, H, W)
        x = self.drop6(self.act6(self.fc1(x)))  # -> (B, 4096)
        x = self.drop7(self.act7(self.fc2(x)))  # -> (B, 4096)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return self.forward_head(x)


def _create_alexnet(variant: str, pretrained: bool = False, **kwargs: Any) -> AlexNet:
    return build_model_with_cfg(
        AlexNet,
        variant,
        pretrained,
        model_cfg=cfgs[variant],
        feature_cfg=dict(feature_cls='getter', flatten_sequential=True, out_indices=(0, 1, 2, 3)),
        **kwargs,
    )


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    return {
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (6, 6),
        'crop_pct': 0.875, 'interpolation': 'bilinear',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'features.conv1', 'classifier': 'fc', 'license': 'apache-2.0',
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'alexnet': _cfg(
        min_input_size=(3, *cfgs['alexnet']['min_size']),
        paper_name='Krizhevsky, Sutskever, Hinton. ImageNet Classification with Deep Convolutional '
                   'Neural Networks. NeurIPS 2012',
        paper_ids='doi:10.1145/3065386',
    ),
    'zfnet': _cfg(
        min_input_size=(3, *cfgs['zfnet']['min_size']),
        paper_name='Zeiler, Fergus. Visualizing and Understanding Convolutional Networks. ECCV 2014',
        paper_ids='arXiv:1311.2901',
    ),
})


@register_model
def alexnet(pretrained: bool = False, **kwargs: Any) -> AlexNet:
    """AlexNet (Krizhevsky et al. 2012), single tower, with LRN."""
    return _create_alexnet('alexnet', pretrained, **kwargs)


@register_model
def zfnet(pretrained: bool = False, **kwargs: Any) -> AlexNet:
    """ZFNet (Zeiler & Fergus 2013): AlexNet with a 7x7/2 first layer and a strided conv2."""
    return _create_alexnet('zfnet', pretrained, **kwargs)
