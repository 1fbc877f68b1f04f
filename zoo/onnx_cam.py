"""Grad-CAM without autograd: the exact map from the ONNX graph's `feature_map` output and the head's weights.

For a head that global-average-pools the last feature map A (D, h, w) into f (D,) and then applies layers to f
alone, the gradient of a class score S_c with respect to A at every position is dS_c/df / (h * w): Grad-CAM's
channel weights (the gradient averaged over positions) are dS_c/df / (h * w), so the map is
relu(sum_k dS_c/df_k A_k) up to that scale, which Grad-CAM's min-max scaling removes. dS_c/df has a closed form:

    "linear"  S = W f (+ W' metadata) + b              dS_c/df = W[c, :D]                 (the class's weight row)
    "mlp"     S = W2 relu(W1 f + b1) + b2              dS_c/df = W1^T ((W1 f + b1 > 0) * W2[c])

(CLOSED_FORMS). Which form a model's head has is not taken on its name alone: `cam_record` finds the classifier
module, checks that pytorch-grad-cam's target layer (zoo.cam) is the map the graph gives, takes the head's weights
from the ONNX file's own initializers (the file that was verified), and compares the closed-form gradient with
PyTorch's autograd on the verification inputs. Whatever fails is a fallback to PyTorch's Grad-CAM with its reason
(CAM_FALLBACKS): the record says which, and the backend (zoo.backends) uses it.

`cam_mask` then reproduces pytorch-grad-cam's scaling and OpenCV resize step for step, so the maps are the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .archs.mlp import MLPHead
from .cam import cam_target_layers

__all__ = ["CLOSED_FORMS", "HEAD_FORMS", "CAM_FALLBACKS", "CAM_MIN_MAP_SIZE", "GRADIENT_TOLERANCE", "CamHead",
           "cam_record", "cam_mask", "read_head_weights"]

CAM_MIN_MAP_SIZE = 3  # Grad-CAM uses the last feature level at least this many pixels a side (zoo.cam)
GRADIENT_TOLERANCE = 1e-4  # max |closed-form - autograd| gradient, relative to the largest |autograd| value

# the closed forms: each one's head weights, by role
CLOSED_FORMS: dict[str, tuple[str, ...]] = {"linear": ("weight",), "mlp": ("fc1.weight", "fc1.bias", "fc2.weight")}
# head name (config.json model_args.head; None: the architecture's own classifier) -> the form its gradient has where
# `cam_record`'s checks pass. The Soft-Attention head's output *is* the map Grad-CAM targets (zoo.cam), pooled into a
# linear layer; a metadata head concatenates the pooled map with the metadata's encoding before its linear layer, so
# the map's part of the gradient is the weight row's first D columns (the metadata does not enter it).
HEAD_FORMS: dict[str | None, str] = {None: "linear", "soft_attention": "linear", "metadata": "linear",
                                     "soft_attention+metadata": "linear", "mlp": "mlp"}
# why a model's heatmaps come from PyTorch's Grad-CAM instead (the record's "reason" is one of these, filled in)
CAM_FALLBACKS = {
    "exported_before": "exported before feature maps (the ONNX file has no feature_map output): re-export it with "
                       "python -m zoo export RUN",
    "verified_before": "verified before feature maps were checked: re-export the file with python -m zoo export RUN",
    "int8": "an int8 file's weights and map are approximations of the model's, so its heatmap comes from the fp32 "
            "PyTorch model",
    "no_map": "its last features are not a 2-D map (a {ndim}-D output: tokens or a vector), so there is no map to "
              "weigh",
    "small_map": "its last feature map is {height}x{width}, under {min_size} px a side, so Grad-CAM weighs an earlier "
                 "layer ({layer}), whose gradient is not the head's",
    "layer": "Grad-CAM's layer ({layer}) is not the last feature map the head pools: the layers after it (e.g. "
             "EfficientNet's final 1x1 convolution) make its gradient not the head's",
    "head": "its classifier ({classifier}) is not a linear layer or the zoo's mlp head on the pooled map ({detail}): "
            "layers between the pooling and it (e.g. VGG's ConvMlp, LeNet-5's F6) have no closed-form gradient here",
    "weights": "the head's weights ({name}) are not among the ONNX file's initializers as PyTorch has them",
    "gradient": "the closed-form gradient differs from PyTorch's autograd (max relative |difference| {diff:.3g}, "
                f"allowed {GRADIENT_TOLERANCE:g})",
}


@dataclass(frozen=True)
class CamHead:
    """A closed-form head: its form and weights (numpy, as PyTorch has them) and the map's channel count D."""

    form: str
    weights: dict[str, np.ndarray]
    channels: int

    def gradient(self, features: np.ndarray, class_index: int) -> np.ndarray:
        """dS_c/df (D,) at the pooled features f (D,)."""
        d = self.channels
        if self.form == "linear":
            return self.weights["weight"][class_index, :d].astype(np.float64)
        w1, b1, w2 = (self.weights[k].astype(np.float64) for k in CLOSED_FORMS["mlp"])
        hidden = w1 @ features.astype(np.float64) + b1  # (H,)
        return w1.T @ ((hidden > 0) * w2[class_index])  # (H, D)^T (H,) -> (D,)


def cam_mask(feature_map: np.ndarray, gradient: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Grad-CAM (H, W) in [0, 1] from one map (D, h, w) and dS_c/df (D,), at `size` (H, W), exactly as
    pytorch-grad-cam scales and resizes it (relu, min-max, cv2 bilinear resize, min-max again)."""
    import cv2  # noqa: PLC0415  (pytorch-grad-cam's own dependency: the same resize)

    area = feature_map.shape[1] * feature_map.shape[2]
    weights = (gradient / area).astype(np.float32)  # Grad-CAM's channel weights: the gradient's mean over positions
    cam = np.maximum((weights[:, None, None] * feature_map.astype(np.float32)).sum(axis=0), 0)  # (h, w)
    cam = _min_max(cam)
    cam = cv2.resize(np.float32(cam), (size[1], size[0]))  # (h, w) -> (H, W), bilinear
    mask = _min_max(np.maximum(cam, 0))
    return np.clip(np.nan_to_num(mask.astype(np.float32), nan=0.0), 0.0, 1.0)


def _min_max(cam: np.ndarray) -> np.ndarray:
    cam = cam - np.min(cam)
    return cam / (1e-7 + np.max(cam))


def read_head_weights(onnx_model: Any, record: dict[str, Any]) -> CamHead:
    """The closed-form head a cam record names, with its weights from the (verified) ONNX model proto."""
    from onnx import numpy_helper  # noqa: PLC0415

    initializers = {i.name: i for i in onnx_model.graph.initializer}
    weights = {}
    for role, (name, transposed) in record["weights"].items():
        array = numpy_helper.to_array(initializers[name])
        weights[role] = np.ascontiguousarray(array.T if transposed else array)
    return CamHead(record["form"], weights, int(record["channels"]))


def cam_record(model: nn.Module, onnx_model: Any, inputs: torch.Tensor, metadata: torch.Tensor | None,
               onnx_features: np.ndarray, input_size: tuple[int, int, int]) -> dict[str, Any]:
    """Whether this model's Grad-CAM has a closed form, checked: {"form", "channels", "layer", "weights",
    "gradient_max_rel_diff"} or {"form": None, "reason"} (CAM_FALLBACKS). `onnx_features` (B, D) are the
    ONNX file's pooled features on `inputs`; `onnx_model` its proto (weights by initializer)."""
    with torch.no_grad():
        maps = model.forward_features(inputs[:1])
    if maps.ndim != 4:
        return _fallback("no_map", ndim=maps.ndim)
    layer = _target_is_map(model, inputs[:1], input_size)
    if layer is None:
        names = {m: n for n, m in model.named_modules()}
        chosen = ", ".join(names.get(m, type(m).__name__) for m in cam_target_layers(model, input_size,
                                                                                       CAM_MIN_MAP_SIZE))
        height, width = int(maps.shape[2]), int(maps.shape[3])
        if min(height, width) < CAM_MIN_MAP_SIZE:
            return _fallback("small_map", height=height, width=width, min_size=CAM_MIN_MAP_SIZE, layer=chosen)
        return _fallback("layer", layer=chosen)
    found = _head_params(model, int(maps.shape[1]))
    if isinstance(found, dict) and "reason" in found:
        return found
    form, params = found
    located = {}
    for role, tensor in params.items():
        where = _find_initializer(onnx_model, tensor)
        if where is None:
            return _fallback("weights", name=role)
        located[role] = where
    record = {"form": form, "channels": int(maps.shape[1]), "layer": layer, "weights": located}
    head = read_head_weights(onnx_model, record)
    diff = _gradient_difference(model, head, inputs, metadata, onnx_features)
    if not diff <= GRADIENT_TOLERANCE:
        return _fallback("gradient", diff=diff)
    return {**record, "gradient_max_rel_diff": diff}


def _fallback(key: str, **values: Any) -> dict[str, Any]:
    return {"form": None, "reason": CAM_FALLBACKS[key].format(**values)}


def _target_is_map(model: nn.Module, x: torch.Tensor, input_size: tuple[int, int, int]) -> str | None:
    """The name of pytorch-grad-cam's target layer when its output is exactly forward_features' map, else None."""
    layers = cam_target_layers(model, input_size, CAM_MIN_MAP_SIZE)
    if len(layers) != 1:
        return None
    seen: list[torch.Tensor] = []
    handle = layers[0].register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        with torch.no_grad():
            maps = model.forward_features(x)
    finally:
        handle.remove()
    if not seen or not isinstance(seen[-1], torch.Tensor) or seen[-1].shape != maps.shape:
        return None
    if not torch.equal(seen[-1], maps):
        return None
    return {m: n for n, m in model.named_modules()}.get(layers[0], type(layers[0]).__name__)


def _head_params(model: nn.Module, channels: int):
    """(form, {role: parameter}) of the model's classifier, or a fallback record saying why it has no closed form."""
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    head_name = (getattr(model, "head_name", None) if hasattr(model, "zoo_backbone") else None)
    form = HEAD_FORMS.get(head_name)
    kind = type(classifier).__name__
    if form == "mlp" and isinstance(classifier, MLPHead) and classifier.fc1.in_features == channels:
        return "mlp", {"fc1.weight": classifier.fc1.weight, "fc1.bias": classifier.fc1.bias,
                       "fc2.weight": classifier.fc2.weight}
    metadata_width = 0 if getattr(model, "metadata_encoder", None) is None else int(model.head_hidden_size) - channels
    if form == "linear" and isinstance(classifier, nn.Linear) and classifier.in_features == channels + metadata_width:
        return "linear", {"weight": classifier.weight}
    detail = (f"{classifier.in_features} inputs, the pooled map has {channels}" if isinstance(classifier, nn.Linear)
              else "not a closed form this zoo knows")
    return _fallback("head", classifier=kind, detail=detail)


def _find_initializer(onnx_model: Any, tensor: torch.Tensor) -> tuple[str, bool] | None:
    """(name, transposed) of the ONNX initializer holding exactly `tensor` (or its transpose, as a MatMul keeps it)."""
    from onnx import numpy_helper  # noqa: PLC0415

    want = tensor.detach().cpu().numpy()
    for init in onnx_model.graph.initializer:
        if tuple(init.dims) not in (want.shape, want.shape[::-1]):
            continue
        array = numpy_helper.to_array(init)
        if array.shape == want.shape and np.array_equal(array, want):
            return init.name, False
        if want.ndim == 2 and array.shape == want.shape[::-1] and np.array_equal(array.T, want):
            return init.name, True
    return None


def _gradient_difference(model: nn.Module, head: CamHead, inputs: torch.Tensor, metadata: torch.Tensor | None,
                         onnx_features: np.ndarray, count: int = 4) -> float:
    """Largest |closed-form - autograd| of dS_c/dA over the first `count` inputs (top class of each), relative to
    the largest |autograd| value."""
    worst, scale = 0.0, 0.0
    for i in range(min(count, len(inputs))):
        with torch.enable_grad():
            maps = model.forward_features(inputs[i:i + 1]).detach().requires_grad_(True)
            meta = None if metadata is None else metadata[i:i + 1]
            logits = model.forward_head(maps) if meta is None else model.forward_head(maps, meta)
            c = int(logits[0].argmax())
            (grad,) = torch.autograd.grad(logits[0, c], maps)  # (1, D, h, w)
        area = grad.shape[2] * grad.shape[3]
        closed = head.gradient(onnx_features[i], c) / area  # (D,)
        auto = grad[0].double().numpy()
        worst = max(worst, float(np.abs(auto - closed[:, None, None]).max()))
        scale = max(scale, float(np.abs(auto).max()))
    return worst / scale if scale > 0 else (0.0 if worst == 0 else float("inf"))
