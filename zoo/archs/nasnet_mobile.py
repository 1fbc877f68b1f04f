"""NASNet-A Mobile (4 @ 1056)

Paper: `Learning Transferable Architectures for Scalable Image Recognition` - Zoph, Vasudevan, Shlens,
Le, CVPR 2018, https://arxiv.org/abs/1707.07012 (a backbone in seed 002_dacd70395d15e47e.txt).

The mobile configuration of the paper's Table 2 (as in Keras NASNetMobile and Cadene's
pretrainedmodels nasnetamobile): stem of 32 filters, 4 normal cells per stage, filter multiplier 2,
1056 penultimate filters (44 filters in the first stage). The cells are timm's NASNet-A cells
(timm.models.nasnet, written for NASNet-A Large), which take their channel counts as arguments; only
the wiring and widths differ from the large model. 'same' (TensorFlow) padding, as in the reference
implementation; dropout 0.5 before the classifier as in the TF-slim mobile configuration.

Parameters at 1000 classes: 5,289,978, exactly the trainable count of Keras NASNetMobile; with the
36,738 BatchNorm running statistics 5,326,716, the Keras total.
"""
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from timm.layers import ClassifierHead, ConvNormAct, Format, get_device_dtype, nchw_to
from timm.models import build_model_with_cfg, checkpoint, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices  # timm exports it from this module only
# the NASNet-A cells, reused as they are: every width is a constructor argument
from timm.models.nasnet import CellStem0, CellStem1, FirstCell, NormalCell, ReductionCell0, ReductionCell1

from zoo._errors import ZooError

from ._common import NO_POOLING, check_min_size, intermediate_format, reject_unsupported

__all__ = ['NASNetAMobile']

_MIN_SIZE = (3, 3)  # the 3x3 valid stem conv; the 'same'-padded cells run down to 1x1

torch.fx.wrap('check_min_size')  # one call in a graph from plain torch.fx.symbolic_trace


class NASNetAMobile(nn.Module):
    """NASNet-A Mobile (N @ penultimate_filters, default 4 @ 1056) with the timm model interface."""

    def __init__(
            self,
            num_classes: int = 1000,
            in_chans: int = 3,
            stem_size: int = 32,
            num_features: int = 1056,
            channel_multiplier: int = 2,
            drop_rate: float = 0.5,
            global_pool: str = 'avg',
            pad_type: str = 'same',
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
            **kwargs: Any,
    ) -> None:
        """
        Args:
            num_classes: Number of output classes; 0 leaves the classifier out (pre-logits output).
            in_chans: Number of input channels.
            stem_size: Filters of the 3x3/2 stem convolution.
            num_features: Penultimate filters (channels of the last cell's output).
            channel_multiplier: Filter multiplier between stages.
            drop_rate: Dropout before the classifier.
            global_pool: Global pooling type of the head (timm pool types).
            pad_type: Cell padding, 'same' for TensorFlow-style padding.
            device: Where to create the parameters.
            dtype: In which dtype to create the parameters.
            **kwargs: Options of other timm models (drop_path_rate, ...), accepted only as no-ops (None, 0).
        """
        super().__init__()
        reject_unsupported('NASNet-A Mobile', kwargs)
        if num_features % 24:
            raise ZooError(f"NASNet-A num_features must be a multiple of 24, got {num_features}.")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.num_features = self.head_hidden_size = num_features
        self.grad_checkpointing = False
        self.min_size: Tuple[int, int] = _MIN_SIZE
        f = num_features // 24  # filters of the first stage's cells (44)

        # shapes at 224 px
        self.conv0 = ConvNormAct(
            in_chans, stem_size, kernel_size=3, stride=2, padding=0, apply_act=False,
            norm_layer=nn.BatchNorm2d, norm_kwargs=dict(eps=0.001, momentum=0.1),
        )  # -> (B, 32, 111, 111)
        self.cell_stem_0 = CellStem0(stem_size, num_channels=f // channel_multiplier ** 2, pad_type=pad_type)
        # -> (B, 4f / m^2 = 44, 56, 56)
        self.cell_stem_1 = CellStem1(stem_size, num_channels=f // channel_multiplier, pad_type=pad_type)
        # -> (B, 2f = 88, 28, 28)

        # stage 1 at 28x28: (B, 6f = 264, 28, 28)
        self.cell_0 = FirstCell(f, f // 2, 2 * f, f, pad_type=pad_type)
        self.cell_1 = NormalCell(2 * f, f, 6 * f, f, pad_type=pad_type)
        self.cell_2 = NormalCell(6 * f, f, 6 * f, f, pad_type=pad_type)
        self.cell_3 = NormalCell(6 * f, f, 6 * f, f, pad_type=pad_type)
        # stage 2 at 14x14: (B, 12f = 528, 14, 14)
        self.reduction_cell_0 = ReductionCell0(6 * f, 2 * f, 6 * f, 2 * f, pad_type=pad_type)
        self.cell_6 = FirstCell(6 * f, f, 8 * f, 2 * f, pad_type=pad_type)
        self.cell_7 = NormalCell(8 * f, 2 * f, 12 * f, 2 * f, pad_type=pad_type)
        self.cell_8 = NormalCell(12 * f, 2 * f, 12 * f, 2 * f, pad_type=pad_type)
        self.cell_9 = NormalCell(12 * f, 2 * f, 12 * f, 2 * f, pad_type=pad_type)
        # stage 3 at 7x7: (B, 24f = 1056, 7, 7)
        self.reduction_cell_1 = ReductionCell1(12 * f, 4 * f, 12 * f, 4 * f, pad_type=pad_type)
        self.cell_12 = FirstCell(12 * f, 2 * f, 16 * f, 4 * f, pad_type=pad_type)
        self.cell_13 = NormalCell(16 * f, 4 * f, 24 * f, 4 * f, pad_type=pad_type)
        self.cell_14 = NormalCell(24 * f, 4 * f, 24 * f, 4 * f, pad_type=pad_type)
        self.cell_15 = NormalCell(24 * f, 4 * f, 24 * f, 4 * f, pad_type=pad_type)
        self.act = nn.ReLU(inplace=True)
        # cell names in forward order; Cadene's/TF numbering (no cells 4, 5, 10, 11 in the mobile model)
        self.cell_names = (
            [f'cell_{i}' for i in range(4)] + ['reduction_cell_0'] + [f'cell_{i}' for i in range(6, 10)]
            + ['reduction_cell_1'] + [f'cell_{i}' for i in range(12, 16)]
        )
        # a cell's output is tapped where the next cell applies its ReLU to it, as in timm's NASNet-A Large
        self.feature_info = [
            dict(num_chs=stem_size, reduction=2, module='conv0'),
            dict(num_chs=4 * (f // channel_multiplier ** 2), reduction=4, module='cell_stem_1.conv_1x1.act'),
            dict(num_chs=6 * f, reduction=8, module='reduction_cell_0.conv_1x1.act'),
            dict(num_chs=12 * f, reduction=16, module='reduction_cell_1.conv_1x1.act'),
            dict(num_chs=24 * f, reduction=32, module='act'),
        ]
        # stem and cells in forward order, and the layer whose output each feature_info level taps
        self.layer_names = ['conv0', 'cell_stem_0', 'cell_stem_1'] + self.cell_names
        self.feature_ends = [self.layer_names.index(n) for n in ('conv0', 'cell_stem_0', 'cell_3', 'cell_9', 'cell_15')]
        self.head = ClassifierHead(num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        if coarse:
            return dict(stem=r'^conv0\.|^cell_stem_[01]\.', blocks=[
                (r'^cell_[0-3]\.', (0,)),
                (r'^(?:reduction_cell_0|cell_[6-9])\.', (1,)),
                (r'^(?:reduction_cell_1|cell_1[2-5])\.', (2,)),
            ])
        # one group per cell; the reduction cells take the free slots 4 and 10 of the numbering
        return dict(stem=r'^conv0\.|^cell_stem_[01]\.', blocks=[
            (r'^cell_(\d+)\.', None),
            (r'^reduction_cell_0\.', (4,)),
            (r'^reduction_cell_1\.', (10,)),
        ])

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

    def _forward_taps(
            self,
            x: torch.Tensor,
            take_indices: List[int],
            num_layers: int,
            fmt: Format,
    ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Run the first `num_layers` of layer_names; return the last tapped map and the levels in take_indices."""
        use_checkpoint = self.grad_checkpointing and not torch.jit.is_scripting()
        intermediates = []
        x_prev = x
        for i, name in enumerate(self.layer_names[:num_layers]):
            layer = getattr(self, name)
            if i < 2:  # conv0, cell_stem_0
                x_prev, x = x, layer(x)
            elif i == 2:  # cell_stem_1(x_conv0, x_stem_0)
                x_prev, x = x, layer(x_prev, x)
            else:
                # mobile wiring (TF-slim skip_reduction_layer_input=0): the cell after a reduction cell takes
                # the reduction cell's input as its previous input; NASNet-A Large skips it
                x_prev, x = x, checkpoint(layer, x, x_prev) if use_checkpoint else layer(x, x_prev)
            if i in self.feature_ends:
                level = self.feature_ends.index(i)
                if level == len(self.feature_ends) - 1:
                    x = self.act(x)
                # a cell's output is tapped where the next cell applies its ReLU to it (feature_info)
                tap = x if level == 0 or level == len(self.feature_ends) - 1 else F.relu(x)
                if level in take_indices:
                    intermediates.append(nchw_to(tap, fmt))
                if i == num_layers - 1:
                    x = tap
        return x, intermediates

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """timm's feature extraction: the stem conv output, the ReLU-activated outputs of cell_stem_0, cell_3 and
        cell_9 and the final features (feature_info), and forward_features' output.

        Args:
            x: Input images (B, C, H, W).
            indices: Feature levels to return: None all, n the last n, or a list of indices.
            norm: Unused (no final norm layer).
            stop_early: Stop after the last requested level (the first output is then that level's map).
            output_fmt: 'NCHW' or 'NHWC' layout of the intermediate maps.
            intermediates_only: Return the list of maps only.
        """
        x = check_min_size('NASNet-A Mobile', x, self.min_size)
        fmt = intermediate_format('NASNet-A Mobile', output_fmt)
        take_indices, max_index = feature_take_indices(len(self.feature_ends), indices)
        num_layers = self.feature_ends[max_index] + 1 if stop_early else len(self.layer_names)
        x, intermediates = self._forward_taps(x, take_indices, num_layers, fmt)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Remove the cells after the last of `indices` (and the classifier); returns the kept indices."""
        take_indices, max_index = feature_take_indices(len(self.feature_ends), indices)
        num_layers = self.feature_ends[max_index] + 1
        for name in self.layer_names[num_layers:]:
            setattr(self, name, None)  # cells take two inputs: no Identity can stand in for them
        self.layer_names = self.layer_names[:num_layers]
        prune_end = max_index < len(self.feature_ends) - 1
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
            self.head.reset(0, in_features=self.num_features)
        if prune_head or prune_end:
            self.reset_classifier(0, NO_POOLING)
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = check_min_size('NASNet-A Mobile', x, self.min_size)
        if not torch.jit.is_scripting():
            return self._forward_taps(x, [], len(self.layer_names), Format.NCHW)[0]
        # TorchScript cannot look the cells up by name: the same wiring (see _forward_taps), written out
        x_conv0 = self.conv0(x)
        x_stem_0 = self.cell_stem_0(x_conv0)
        x_prev, x = x_stem_0, self.cell_stem_1(x_conv0, x_stem_0)
        x_prev, x = x, self.cell_0(x, x_prev)
        x_prev, x = x, self.cell_1(x, x_prev)
        x_prev, x = x, self.cell_2(x, x_prev)
        x_prev, x = x, self.cell_3(x, x_prev)
        x_prev, x = x, self.reduction_cell_0(x, x_prev)
        x_prev, x = x, self.cell_6(x, x_prev)
        x_prev, x = x, self.cell_7(x, x_prev)
        x_prev, x = x, self.cell_8(x, x_prev)
        x_prev, x = x, self.cell_9(x, x_prev)
        x_prev, x = x, self.reduction_cell_1(x, x_prev)
        x_prev, x = x, self.cell_12(x, x_prev)
        x_prev, x = x, self.cell_13(x, x_prev)
        x_prev, x = x, self.cell_14(x, x_prev)
        x = self.cell_15(x, x_prev)
        return self.act(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # (B, 1056, H, W) -> (B, 1056) -> (B, num_classes)
        return self.head(x, pre_logits=True) if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return self.forward_head(x)


def _create_nasnet_mobile(variant: str, pretrained: bool = False, **kwargs: Any) -> NASNetAMobile:
    return build_model_with_cfg(
        NASNetAMobile,
        variant,
        pretrained,
        # no_rewrite for feature_cls='hook': the cells take two inputs, no sequential rewrite
        feature_cfg=dict(feature_cls='getter', no_rewrite=True),
        **kwargs,
    )


default_cfgs = generate_default_cfgs({
    'nasnet_mobile': {
        'num_classes': 1000,
        'input_size': (3, 224, 224),
        'min_input_size': (3, *_MIN_SIZE),
        'pool_size': (7, 7),
        'crop_pct': 0.875,
        'interpolation': 'bicubic',
        'mean': (0.5, 0.5, 0.5),
        'std': (0.5, 0.5, 0.5),
        'first_conv': 'conv0.conv',
        'classifier': 'head.fc',
        'license': 'apache-2.0',
        'paper_name': 'Zoph, Vasudevan, Shlens, Le. Learning Transferable Architectures for Scalable '
                      'Image Recognition. CVPR 2018',
        'paper_ids': 'arXiv:1707.07012',
    },
})


@register_model
def nasnet_mobile(pretrained: bool = False, **kwargs: Any) -> NASNetAMobile:
    """NASNet-A Mobile (4 @ 1056), 224 px."""
    return _create_nasnet_mobile('nasnet_mobile', pretrained, **kwargs)
