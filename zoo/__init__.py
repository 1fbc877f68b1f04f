"""A model zoo for transfer learning on medical images, on top of timm.

Every architecture the seed papers survey, usable from scratch, as a frozen feature extractor, or
fine-tuned, with weights in the Hugging Face Hub layout that stock timm loads. Importing `zoo` registers
the natively implemented architectures (LeNet-5, AlexNet, ZFNet, GoogLeNet, NASNet-A Mobile, QuadSNet)
and the head variants with timm's registry.
"""
from . import archs  # noqa: F401  (registers native models with timm)
from .archs import variant as _variant  # noqa: F401  (registers zoo_variant)
from ._builder import create_model, resolve_data_config
from ._errors import ZooError
from ._hub import check_hub_reachable, clean_cache, load_pretrained, save_pretrained
from ._registry import ArchInfo, get_architecture, list_architectures
from .archs.metadata import MetadataSchema
from .archs.variant import HEADS
from .backends import BACKENDS, load_backend
from .cam import cam_target_layers
from .modes import (MODE_ORDER, MODES, TransferMode, apply_mode, backbone_stages, count_params, get_mode,
                    head_parameters, param_groups)
from .offline_weights import offline_imagenet_weights
from .onnx_export import export_onnx
from .weight_init import INIT_SCHEMES, init_weights
from .zoo_config import ZOO_FORMAT_VERSION, ZooConfig

__all__ = [
    "ArchInfo", "BACKENDS", "HEADS", "INIT_SCHEMES", "MODES", "MODE_ORDER", "MetadataSchema", "TransferMode",
    "ZOO_FORMAT_VERSION", "ZooConfig", "ZooError", "apply_mode", "backbone_stages", "cam_target_layers",
    "check_hub_reachable", "clean_cache", "count_params", "create_model", "export_onnx", "get_architecture", "get_mode",
    "head_parameters", "init_weights", "list_architectures", "load_backend", "load_pretrained",
    "offline_imagenet_weights", "param_groups", "resolve_data_config", "save_pretrained",
]
