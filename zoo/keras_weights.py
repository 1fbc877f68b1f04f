"""Keras 3 `.keras` files read with zipfile + h5py (no TensorFlow, no Keras), converted to timm tensor names.

A `.keras` file is a zip of config.json (the layer graph), metadata.json and model.weights.h5. In the HDF5 file
a layer's variables sit under `layers/<auto name>/vars/<i>`, where the auto name is the snake-cased class name
made unique per container in layer order (conv2d, conv2d_1, ...), not the layer's own name; config.json gives
that order and the own names, so both are read and matched, and every array's shape is checked.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._errors import ZooError
from .assets import AssetPackage, asset_error

__all__ = ["KerasArchive", "read_keras_archive", "xception_backbone_state", "dense_head_state"]

# (Keras layer class) -> number of variables it stores, for the layers that have weights (Normalization: mean,
# variance, count)
_VARIABLES = {"Conv2D": 1, "SeparableConv2D": 2, "BatchNormalization": 4, "Dense": 2, "Normalization": 3}
# Xception (keras.applications): the residual 1x1 convolutions are unnamed (conv2d, conv2d_1, ...) and belong,
# in order, to timm's blocks with a skip path
_XCEPTION_SKIP_BLOCKS = (1, 2, 3, 12)
_XCEPTION_FIXED = {"block1_conv1": "conv1", "block1_conv1_bn": "bn1", "block1_conv2": "conv2",
                   "block1_conv2_bn": "bn2", "block14_sepconv1": "conv3", "block14_sepconv1_bn": "bn3",
                   "block14_sepconv2": "conv4", "block14_sepconv2_bn": "bn4"}
_XCEPTION_BLOCK = re.compile(r"^block(\d+)_sepconv(\d)(_bn)?$")


def _snake_case(name: str) -> str:
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


@dataclass
class KerasArchive:
    """The layers of a .keras model: {own name: (class name, [arrays])}, outer model and nested sub-models."""

    path: Path
    keras_version: str
    layers: dict[str, tuple[str, list[np.ndarray]]]
    submodels: dict[str, dict[str, tuple[str, list[np.ndarray]]]]
    layer_configs: dict[str, dict]


def _read_container(layer_list: list[dict], group, where: str, asset: AssetPackage) -> tuple[dict, dict, dict]:
    layers, submodels, configs, counters = {}, {}, {}, {}
    for layer in layer_list:
        cls, own = layer["class_name"], layer["config"]["name"]
        auto = _snake_case(cls)
        index = counters.get(auto, 0)
        counters[auto] = index + 1
        key = auto if index == 0 else f"{auto}_{index}"
        configs[own] = layer["config"]
        if cls in ("Functional", "Sequential"):
            if key not in group:
                raise asset_error(asset, f"{where}: sub-model {own!r} has no weights group {key!r}")
            inner, _, inner_configs = _read_container(layer["config"]["layers"], group[key]["layers"],
                                                      f"{where}/{own}", asset)
            submodels[own] = inner
            configs.update({f"{own}/{k}": v for k, v in inner_configs.items()})
            continue
        count = _VARIABLES.get(cls)
        if count is None:
            continue
        vars_group = group[key]["vars"] if key in group and "vars" in group[key] else None
        if vars_group is None or len(vars_group) != count:
            raise asset_error(asset, f"{where}: layer {own!r} ({cls}) should store {count} arrays under {key!r}, "
                                     f"found {0 if vars_group is None else len(vars_group)}")
        layers[own] = (cls, [np.asarray(vars_group[str(i)]) for i in range(count)])
    return layers, submodels, configs


def read_keras_archive(path: Path, asset: AssetPackage) -> KerasArchive:
    """Every weight array of a Keras 3 .keras file, by layer name; any unreadable part names the package."""
    import h5py  # noqa: PLC0415  (only the Keras imports need it)

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            metadata = json.loads(archive.read("metadata.json"))
            weights = archive.read("model.weights.h5")
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as e:
        raise asset_error(asset, f"{path.name} is not a readable .keras archive ({type(e).__name__}: {e})") from None
    try:
        with h5py.File(io.BytesIO(weights), "r") as h5:
            layers, submodels, configs = _read_container(config["config"]["layers"], h5["layers"], path.name, asset)
    except (OSError, KeyError, ValueError) as e:
        raise asset_error(asset, f"the HDF5 weights (model.weights.h5) in {path.name} are unreadable "
                                 f"({type(e).__name__}: {e})") from None
    return KerasArchive(path=path, keras_version=str(metadata.get("keras_version")), layers=layers,
                        submodels=submodels, layer_configs=configs)


def _xception_target(own: str, cls: str, skip_index: dict[str, int]) -> str:
    if own in _XCEPTION_FIXED:
        return _XCEPTION_FIXED[own]
    match = _XCEPTION_BLOCK.match(own)
    if match:
        keras_block, conv, bn = int(match[1]), int(match[2]), bool(match[3])
        # timm's Block.rep: [ReLU,] SeparableConv, BN, ReLU, SeparableConv, BN, ...; Keras block2 (timm block1)
        # starts without the ReLU
        first = 0 if keras_block == 2 else 1
        return f"block{keras_block - 1}.rep.{first + 3 * (conv - 1) + int(bn)}"
    if cls in ("Conv2D", "BatchNormalization") and own in skip_index:  # the residual path
        block = _XCEPTION_SKIP_BLOCKS[skip_index[own]]
        return f"block{block}.skip" if cls == "Conv2D" else f"block{block}.skipbn"
    raise ZooError(f"no timm counterpart for Keras Xception layer {own!r} ({cls})")


def _to_torch(cls: str, arrays: list[np.ndarray], prefix: str) -> dict[str, torch.Tensor]:
    t = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in arrays]
    if cls == "Conv2D":  # (kh, kw, in, out) -> (out, in, kh, kw)
        return {f"{prefix}.weight": t[0].permute(3, 2, 0, 1)}
    if cls == "SeparableConv2D":  # depthwise (kh, kw, in, 1) -> (in, 1, kh, kw); pointwise -> (out, in, 1, 1)
        return {f"{prefix}.conv1.weight": t[0].permute(2, 3, 0, 1),
                f"{prefix}.pointwise.weight": t[1].permute(3, 2, 0, 1)}
    if cls == "BatchNormalization":  # gamma, beta, moving mean, moving variance
        return {f"{prefix}.weight": t[0], f"{prefix}.bias": t[1], f"{prefix}.running_mean": t[2],
                f"{prefix}.running_var": t[3], f"{prefix}.num_batches_tracked": torch.tensor(0)}
    if cls == "Dense":  # kernel (in, out) -> weight (out, in)
        return {f"{prefix}.weight": t[0].T, f"{prefix}.bias": t[1]}
    raise ZooError(f"no conversion for Keras layer class {cls}")


def xception_backbone_state(archive: KerasArchive, asset: AssetPackage) -> dict[str, torch.Tensor]:
    """The nested keras.applications.Xception of `archive` in timm `tf_xception` names (no classifier)."""
    if "xception" not in archive.submodels:
        raise asset_error(asset, f"{archive.path.name} has no nested 'xception' model "
                                 f"(sub-models: {sorted(archive.submodels) or 'none'})")
    layers = archive.submodels["xception"]
    residual = [own for own, (cls, _) in layers.items() if not own.startswith("block")]
    skip_index = {}
    for cls in ("Conv2D", "BatchNormalization"):  # k-th unnamed conv and k-th unnamed BN: the k-th skip path
        skip_index.update({own: k for k, own in enumerate(o for o in residual if layers[o][0] == cls)})
    state = {}
    for own, (cls, arrays) in layers.items():
        state.update(_to_torch(cls, arrays, _xception_target(own, cls, skip_index)))
    return state


def dense_head_state(archive: KerasArchive, names: dict[str, str]) -> dict[str, torch.Tensor]:
    """Outer Dense layers of `archive`, {Keras layer name: target module name}, as torch tensors."""
    state = {}
    for own, target in names.items():
        cls, arrays = archive.layers[own]
        state.update(_to_torch(cls, arrays, target))
    return state
