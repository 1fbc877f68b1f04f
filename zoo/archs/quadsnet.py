"""QuadSNet

Paper: `Improved Medical Image Classification Accuracy on Heterogeneous and Imbalanced Data using
Multiple Streams Network` - M. Ali, R. Ali, N. Hussain (seed 000_02ca16e809fb32d3.txt).

Four parallel streams of four blocks each (section II, Fig. 1): CS1 conventional 3x3, CS2
conventional 5x5, SS1 depthwise-separable 3x3, SS2 depthwise-separable 5x5 (Keras SeparableConv2D:
depthwise kxk without bias, then pointwise 1x1 with bias). A block is convolution ('same' padding) ->
BatchNorm (Keras momentum 0.99, epsilon 1e-4, i.e. torch momentum 0.01) -> ReLU -> 2x2 max pool ->
dropout 0.3 (section II.B). The stream outputs are concatenated as in eq. 1, global-average-pooled,
dropped out (0.3) and classified. Weights use the Keras defaults the paper trained with (Glorot
uniform kernels, zero biases); the paper trains from scratch. With the Keras BatchNorm momentum the
running statistics move 1 % per step, so evaluation needs a few hundred training steps to be meaningful.

The paper does not give the stream widths. Every stream here uses the same per-block widths,
(96, 128, 256, 384), so F_total has 4 x 384 = 1536 channels. With 2 classes and 3 input channels this
gives 5,201,192 trainable parameters, -0.66 % from the paper's Table II figure of 5,235,944. At 1000
classes: 6,735,118.

Layout: block i of the four streams forms stage i (`stages.i.cs1`, `.cs2`, `.ss1`, `.ss2`). A stage
takes the concatenation [F_CS1; F_CS2; F_SS1; F_SS2] of the previous stage (the image for stage 0),
gives each stream its own slice, and concatenates the four block outputs again, so the streams stay
independent and stage 3 returns F_total = [F_cs; F_ss] of eq. 1.
"""
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn

from timm.layers import ClassifierHead, SeparableConv2d, get_device_dtype
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices  # timm exports it from this module only

from zoo._errors import ZooError

from ._common import NO_POOLING, check_min_size, forward_layer_taps, intermediate_format, reject_unsupported

__all__ = ['QuadSNet']

_MIN_SIZE = (16, 16)  # four 2x2 max pools

torch.fx.wrap('check_min_size')  # one call in a graph from plain torch.fx.symbolic_trace


class QuadSBlock(nn.Module):
    """One stream block: conv -> BatchNorm -> ReLU -> 2x2 max pool -> dropout."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, separable: bool, drop_rate: float) -> None:
        super().__init__()
        if separable:
            self.conv = SeparableConv2d(in_chs, out_chs, kernel_size, padding='same', bias=True)
        else:
            self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, padding='same')
        self.bn = nn.BatchNorm2d(out_chs, eps=1e-4, momentum=0.01)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, in_chs, H, W) -> (B, out_chs, H // 2, W // 2)
        return self.drop(self.pool(self.act(self.bn(self.conv(x)))))


class QuadSStage(nn.Module):
    """Block i of the four streams, on the concatenated stream features of block i - 1."""

    def __init__(self, in_chs: int, out_chs: int, split_input: bool, drop_rate: float) -> None:
        """
        Args:
            in_chs: Input channels of each stream's block.
            out_chs: Output channels of each stream's block.
            split_input: Whether the input is the concatenation of the four streams (False: the image).
            drop_rate: Dropout at the end of each block.
        """
        super().__init__()
        self.in_chs = in_chs
        self.split_input = split_input
        self.cs1 = QuadSBlock(in_chs, out_chs, 3, separable=False, drop_rate=drop_rate)
        self.cs2 = QuadSBlock(in_chs, out_chs, 5, separable=False, drop_rate=drop_rate)
        self.ss1 = QuadSBlock(in_chs, out_chs, 3, separable=True, drop_rate=drop_rate)
        self.ss2 = QuadSBlock(in_chs, out_chs, 5, separable=True, drop_rate=drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, 4 * in_chs or in_chans, H, W) -> (B, 4 * out_chs, H // 2, W // 2); the four streams written out
        # (no loop over the blocks or the split) so TorchScript and torch.fx take the stage as it is
        if self.split_input:
            c = self.in_chs
            x_cs1, x_cs2, x_ss1, x_ss2 = x[:, :c], x[:, c:2 * c], x[:, 2 * c:3 * c], x[:, 3 * c:]
        else:
            x_cs1 = x_cs2 = x_ss1 = x_ss2 = x
        outputs = [self.cs1(x_cs1), self.cs2(x_cs2), self.ss1(x_ss1), self.ss2(x_ss2)]
        return torch.cat(outputs, dim=1)  # seed 000_02ca16e809fb32d3.txt, section II.A, eq. 1


class QuadSNet(nn.Module):
    """QuadSNet: quad-stream conventional + separable CNN (Ali et al.) with the timm model interface."""

    def __init__(
            self,
            num_classes: int = 1000,
            in_chans: int = 3,
            widths: Tuple[int, int, int, int] = (96, 128, 256, 384),
            drop_rate: float = 0.3,
            block_drop_rate: float = 0.3,
            global_pool: str = 'avg',
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
            **kwargs: Any,
    ) -> None:
        """
        Args:
            num_classes: Number of output classes; 0 leaves the classifier out (pre-logits output).
            in_chans: Number of input channels.
            widths: Output channels of blocks 1-4, the same in every stream.
            drop_rate: Dropout after the global average pool (0.3 in the paper).
            block_drop_rate: Dropout at the end of every block (0.3 in the paper).
            global_pool: Global pooling type of the head (timm pool types; the paper averages).
            device: Where to create the parameters.
            dtype: In which dtype to create the parameters.
            **kwargs: Options of other timm models (drop_path_rate, ...), accepted only as no-ops (None, 0).
        """
        super().__init__()
        reject_unsupported('QuadSNet', kwargs)
        if len(widths) != 4:
            raise ZooError(f"QuadSNet has four blocks per stream; widths must have 4 entries, got {widths!r}.")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.min_size: Tuple[int, int] = _MIN_SIZE

        stages = []
        self.feature_info = []
        in_chs = in_chans
        for i, out_chs in enumerate(widths):
            stages.append(QuadSStage(in_chs, out_chs, split_input=i > 0, drop_rate=block_drop_rate))
            self.feature_info.append(dict(num_chs=4 * out_chs, reduction=2 ** (i + 1), module=f'stages.{i}'))
            in_chs = out_chs
        # (B, C, 224, 224) -> (B, 4 * 96, 112, 112) -> ... -> (B, 4 * 384, 14, 14)
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = 4 * widths[-1]
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self._init_weights()
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def _init_weights(self) -> None:
        # Keras defaults (the paper's framework): glorot_uniform kernels, zero biases
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        # stage i = block i of all four streams; block 0 (the layers that see the image) is the stem
        return dict(stem=r'^stages\.0\.', blocks=r'^stages\.(\d+)\.')

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

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """timm's feature extraction: the concatenated four-stream output of each stage (feature_info), and
        forward_features' output.

        Args:
            x: Input images (B, C, H, W).
            indices: Stages to return: None all, n the last n, or a list of indices.
            norm: Unused (no final norm layer).
            stop_early: Stop after the last requested stage (the first output is then that stage's map).
            output_fmt: 'NCHW' or 'NHWC' layout of the intermediate maps.
            intermediates_only: Return the list of maps only.
        """
        x = check_min_size('QuadSNet', x, self.min_size)
        fmt = intermediate_format('QuadSNet', output_fmt)
        stage_indices = list(range(len(self.stages)))
        x, intermediates = forward_layer_taps(
            list(self.stages), x, stage_indices, indices, stop_early, fmt,
            stage_indices if self.grad_checkpointing else None)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Remove the stages after the last of `indices` (and the classifier); returns the kept indices."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        self.stages = self.stages[:max_index + 1]
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
            self.head.reset(0, in_features=self.num_features)
        if prune_head or prune_end:
            self.reset_classifier(0, NO_POOLING)
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = check_min_size('QuadSNet', x, self.min_size)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)  # F_total, (B, 4 * widths[-1], H / 16, W / 16)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # (B, 1536, H, W) -> (B, 1536) -> (B, num_classes)
        return self.head(x, pre_logits=True) if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return self.forward_head(x)


def _create_quadsnet(variant: str, pretrained: bool = False, **kwargs: Any) -> QuadSNet:
    return build_model_with_cfg(
        QuadSNet,
        variant,
        pretrained,
        feature_cfg=dict(feature_cls='getter', flatten_sequential=True, out_indices=(0, 1, 2, 3)),
        **kwargs,
    )


default_cfgs = generate_default_cfgs({
    'quadsnet': {
        'num_classes': 1000,
        'input_size': (3, 224, 224),
        'min_input_size': (3, *_MIN_SIZE),
        'pool_size': (14, 14),
        'crop_pct': 1.0,
        'interpolation': 'bilinear',
        'mean': (0.5, 0.5, 0.5),
        'std': (0.5, 0.5, 0.5),
        # the four streams each see the image first
        'first_conv': ('stages.0.cs1.conv', 'stages.0.cs2.conv', 'stages.0.ss1.conv.conv_dw',
                       'stages.0.ss2.conv.conv_dw'),
        'classifier': 'head.fc',
        'license': 'apache-2.0',
        'paper_name': 'Ali, Ali, Hussain. Improved Medical Image Classification Accuracy on Heterogeneous '
                      'and Imbalanced Data using Multiple Streams Network',
    },
})


@register_model
def quadsnet(pretrained: bool = False, **kwargs: Any) -> QuadSNet:
    """QuadSNet (Ali et al.): four conventional / separable 3x3 / 5x5 streams, trained from scratch."""
    return _create_quadsnet('quadsnet', pretrained, **kwargs)
