"""GoogLeNet (Inception v1)

Paper: `Going Deeper with Convolutions` - Szegedy et al., CVPR 2015, https://arxiv.org/abs/1409.4842
(surveyed in seeds 001_0f58f971053e01d7.txt and 004_9c4af62090aa3adb.txt).

The network of the paper's Table 1 and Fig. 3: conv 7x7/2, max pool, LRN, conv 1x1, conv 3x3, LRN,
max pool, inception 3a-3b, max pool, 4a-4e, max pool, 5a-5b, global average pool, dropout 0.4, linear.
Convolutions have biases and ReLU, no batch norm (as in 2014). Max pools use ceil mode and LRN uses
n=5, alpha=1e-4, beta=0.75 as in the Caffe reference model (bvlc_googlenet). The inception modules use
real 5x5 convolutions (torchvision's GoogLeNet uses 3x3 there). The paper gives no initialisation;
He (fan-in) normal init is used so the 22-layer, norm-free network trains from scratch.

Auxiliary classifiers (aux_logits=True) follow section 5: average pool to 4x4, 1x1 conv 128 + ReLU,
FC 1024 + ReLU, dropout 0.7, linear. The pool is adaptive (the paper's 5x5/3 gives the same 4x4 grid at
224 px) so smaller inputs work. In training mode the model then returns
(logits, aux_logits_4d, aux_logits_4a); a trainer adds the two auxiliary losses with weight 0.3, as the
paper does: loss = ce(logits) + 0.3 * (ce(aux_logits_4d) + ce(aux_logits_4a)). In eval mode, or with
aux_logits=False, forward returns the logits only.

Parameters at 1000 classes: 6,998,552 (aux_logits=False); 13,378,280 with the auxiliary classifiers.
"""
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, get_device_dtype
from timm.models import build_model_with_cfg, checkpoint, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices  # timm exports it from this module only

from ..weight_init import init_weights
from ._common import NO_POOLING, check_min_size, forward_layer_taps, intermediate_format, reject_unsupported

__all__ = ['GoogLeNet']

_MIN_SIZE = (31, 31)  # smallest input whose 3x3 ceil-mode pools all get >= 3 px, measured

# Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj
_INCEPTION_CFGS: Dict[str, Tuple[int, int, int, int, int, int]] = {
    '3a': (64, 96, 128, 16, 32, 32),
    '3b': (128, 128, 192, 32, 96, 64),
    '4a': (192, 96, 208, 16, 48, 64),
    '4b': (160, 112, 224, 24, 64, 64),
    '4c': (128, 128, 256, 24, 64, 64),
    '4d': (112, 144, 288, 32, 64, 64),
    '4e': (256, 160, 320, 32, 128, 128),
    '5a': (256, 160, 320, 32, 128, 128),
    '5b': (384, 192, 384, 48, 128, 128),
}

torch.fx.wrap('check_min_size')  # one call in a graph from plain torch.fx.symbolic_trace


class ConvAct(nn.Sequential):
    """Convolution with bias followed by ReLU."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__(OrderedDict([
            ('conv', nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2)),
            ('act', nn.ReLU(inplace=True)),
        ]))


class Inception(nn.Module):
    """Inception module with dimension reductions (paper Fig. 2b)."""

    def __init__(
            self,
            in_chs: int,
            ch1x1: int,
            ch3x3red: int,
            ch3x3: int,
            ch5x5red: int,
            ch5x5: int,
            pool_proj: int,
    ) -> None:
        super().__init__()
        self.branch1 = ConvAct(in_chs, ch1x1, 1)
        self.branch2 = nn.Sequential(ConvAct(in_chs, ch3x3red, 1), ConvAct(ch3x3red, ch3x3, 3))
        self.branch3 = nn.Sequential(ConvAct(in_chs, ch5x5red, 1), ConvAct(ch5x5red, ch5x5, 5))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), ConvAct(in_chs, pool_proj, 1))
        self.out_chs = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, out_chs, H, W)
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class AuxHead(nn.Module):
    """Auxiliary classifier on an intermediate inception output (paper section 5)."""

    def __init__(self, in_chs: int, num_classes: int, drop_rate: float = 0.7) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.conv = ConvAct(in_chs, 128, 1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(1024, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int) -> None:
        """Replace the auxiliary classifier's last layer for `num_classes` (0: no classifier)."""
        dd = get_device_dtype(self)
        self.fc = nn.Linear(1024, num_classes, **dd) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.pool(x))  # (B, C, H, W) -> (B, 128, 4, 4)
        x = self.drop(self.act(self.fc1(x.flatten(1))))  # -> (B, 1024)
        return self.fc(x)


class GoogLeNet(nn.Module):
    """GoogLeNet / Inception v1 (Szegedy et al. 2014) with the timm model interface."""

    def __init__(
            self,
            num_classes: int = 1000,
            in_chans: int = 3,
            drop_rate: float = 0.4,
            global_pool: str = 'avg',
            aux_logits: bool = False,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
            **kwargs: Any,
    ) -> None:
        """
        Args:
            num_classes: Number of output classes; 0 leaves the classifiers out (pre-logits output).
            in_chans: Number of input channels.
            drop_rate: Dropout before the classifier (0.4 in the paper).
            global_pool: Global pooling type of the head (timm pool types: 'avg', 'max', ...).
            aux_logits: Add the two auxiliary classifiers (on 4a and 4d), used in training mode only.
            device: Where to create the parameters.
            dtype: In which dtype to create the parameters.
            **kwargs: Options of other timm models (drop_path_rate, ...), accepted only as no-ops (None, 0).
        """
        super().__init__()
        reject_unsupported('GoogLeNet', kwargs)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.aux_logits = aux_logits
        self.grad_checkpointing = False
        self.min_size: Tuple[int, int] = _MIN_SIZE

        # shapes at 224 px
        self.stem = nn.Sequential(OrderedDict([
            ('conv1', ConvAct(in_chans, 64, 7, stride=2)),  # -> (B, 64, 112, 112)
            ('pool1', nn.MaxPool2d(3, stride=2, ceil_mode=True)),  # -> (B, 64, 56, 56)
            ('norm1', nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.)),
            ('conv2_reduce', ConvAct(64, 64, 1)),
            ('conv2', ConvAct(64, 192, 3)),  # -> (B, 192, 56, 56)
            ('norm2', nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.)),
            ('pool2', nn.MaxPool2d(3, stride=2, ceil_mode=True)),  # -> (B, 192, 28, 28)
        ]))
        blocks = []
        in_chs = 192
        for name, block_cfg in _INCEPTION_CFGS.items():
            if name in ('4a', '5a'):
                blocks.append((f'pool{name[0]}', nn.MaxPool2d(3, stride=2, ceil_mode=True)))
            block = Inception(in_chs, *block_cfg)
            blocks.append((f'inception{name}', block))
            in_chs = block.out_chs
        # 3a-3b (B, 480, 28, 28) -> pool4, 4a-4e (B, 832, 14, 14) -> pool5, 5a-5b (B, 1024, 7, 7)
        self.blocks = nn.Sequential(OrderedDict(blocks))
        self.num_features = self.head_hidden_size = in_chs
        self.feature_info = [
            dict(num_chs=64, reduction=2, module='stem.conv1'),
            dict(num_chs=192, reduction=4, module='stem.conv2'),
            dict(num_chs=480, reduction=8, module='blocks.inception3b'),
            dict(num_chs=832, reduction=16, module='blocks.inception4e'),
            dict(num_chs=1024, reduction=32, module='blocks.inception5b'),
        ]
        # forward_intermediates runs stem and blocks as one chain of layers; the taps index into it
        layer_names = [f'stem.{n}' for n in self.stem._modules] + [f'blocks.{n}' for n in self.blocks._modules]
        self.feature_ends = [layer_names.index(info['module']) for info in self.feature_info]
        self.aux_4a_index = list(self.blocks._modules).index('inception4a')
        self.aux_4d_index = list(self.blocks._modules).index('inception4d')

        if aux_logits:
            self.aux_4a = AuxHead(self.blocks.inception4a.out_chs, num_classes)
            self.aux_4d = AuxHead(self.blocks.inception4d.out_chs, num_classes)
        else:
            self.aux_4a = self.aux_4d = None
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self._init_weights()
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def _init_weights(self) -> None:
        init_weights(self, 'he_normal')  # He normal (fan_in, ReLU gain), zero biases: zoo.weight_init's scheme

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        if coarse:
            # stages 3, 4 and 5 (the auxiliary heads belong to the head group)
            return dict(stem=r'^stem\.', blocks=[(r'^blocks\.inception(\d)', None)])
        names = list(_INCEPTION_CFGS)
        return dict(stem=r'^stem\.', blocks=[(rf'^blocks\.inception{n}\.', (i,)) for i, n in enumerate(names)])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        dd = get_device_dtype(self)
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool, **dd)
        if self.aux_logits:
            self.aux_4a.reset(num_classes)
            self.aux_4d.reset(num_classes)

    def _forward_blocks(
            self,
            x: torch.Tensor,
            with_aux: bool,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        x = check_min_size('GoogLeNet', x, self.min_size)
        x = self.stem(x)
        aux_4a: Optional[torch.Tensor] = None
        aux_4d: Optional[torch.Tensor] = None
        for i, block in enumerate(self.blocks):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(block, x)
            else:
                x = block(x)
            # `is not None` checks, not `self.aux_logits`, so TorchScript skips the calls when there are no aux heads
            if with_aux and self.aux_4a is not None and i == self.aux_4a_index:
                aux_4a = self.aux_4a(x)
            if with_aux and self.aux_4d is not None and i == self.aux_4d_index:
                aux_4d = self.aux_4d(x)
        return x, aux_4d, aux_4a

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """timm's feature extraction: conv1, conv2, inception 3b, 4e and 5b outputs (feature_info), and
        forward_features' output (the auxiliary classifiers do not run).

        Args:
            x: Input images (B, C, H, W).
            indices: Feature levels to return: None all, n the last n, or a list of indices.
            norm: Unused (no final norm layer).
            stop_early: Stop after the last requested level (the first output is then that level's map).
            output_fmt: 'NCHW' or 'NHWC' layout of the intermediate maps.
            intermediates_only: Return the list of maps only.
        """
        x = check_min_size('GoogLeNet', x, self.min_size)
        fmt = intermediate_format('GoogLeNet', output_fmt)
        num_stem = len(self.stem)
        # checkpointed as forward_features does: each block on its own
        checkpoint_starts = range(num_stem, num_stem + len(self.blocks)) if self.grad_checkpointing else None
        x, intermediates = forward_layer_taps(
            [*self.stem, *self.blocks], x, self.feature_ends, indices, stop_early, fmt, checkpoint_starts)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Remove the layers after the last of `indices` (and the classifiers); returns the kept indices."""
        take_indices, max_index = feature_take_indices(len(self.feature_ends), indices)
        end = self.feature_ends[max_index] + 1
        num_stem = len(self.stem)
        self.stem = self.stem[:end]
        self.blocks = self.blocks[:max(end - num_stem, 0)]
        prune_end = max_index < len(self.feature_ends) - 1
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
            self.head.reset(0, in_features=self.num_features)
        if prune_head or prune_end:
            self.aux_logits = False
            self.aux_4a = self.aux_4d = None
            self.reset_classifier(0, NO_POOLING)
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_blocks(x, with_aux=False)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # (B, 1024, H, W) -> (B, 1024) -> (B, num_classes)
        return self.head(x, pre_logits=True) if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        if self.aux_logits and self.training:
            x, aux_4d, aux_4a = self._forward_blocks(x, with_aux=True)
            assert aux_4d is not None and aux_4a is not None  # for TorchScript's types
            return self.forward_head(x), aux_4d, aux_4a
        x = self.forward_features(x)
        return self.forward_head(x)


def _create_googlenet(variant: str, pretrained: bool = False, **kwargs: Any) -> GoogLeNet:
    return build_model_with_cfg(
        GoogLeNet,
        variant,
        pretrained,
        feature_cfg=dict(feature_cls='getter', flatten_sequential=True),
        **kwargs,
    )


default_cfgs = generate_default_cfgs({
    'googlenet': {
        'num_classes': 1000,
        'input_size': (3, 224, 224),
        'min_input_size': (3, *_MIN_SIZE),
        'pool_size': (7, 7),
        'crop_pct': 0.875,
        'interpolation': 'bilinear',
        'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.conv1.conv',
        'classifier': 'head.fc',
        'license': 'apache-2.0',
        'paper_name': 'Szegedy et al. Going Deeper with Convolutions. CVPR 2015',
        'paper_ids': 'arXiv:1409.4842',
    },
})


@register_model
def googlenet(pretrained: bool = False, **kwargs: Any) -> GoogLeNet:
    """GoogLeNet / Inception v1 (Szegedy et al. 2014); aux_logits=True adds the auxiliary classifiers."""
    return _create_googlenet('googlenet', pretrained, **kwargs)
