"""One model's prediction for one image: its preprocessing from the model's own config, the metadata a metadata
head takes, the forward pass through the model's backend, and the input as the model saw it.

Every model sees the image as it saw its training data: ``zoo.images.to_model_mode`` gives it its own channel
count, and timm's evaluation transform built from its ``pretrained_cfg`` (the same transform ``python -m train``
evaluates with) resizes, crops and normalises it. Both backends give the logits and the image features of one
pass, so the trust checks (zoo.trust) are the same on either.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from ._errors import ZooError
from .images import to_model_mode
from .model_cache import LoadedModel

__all__ = ["DEFAULT_TOP_K", "MAX_AGE", "Prediction", "SharedImage", "encode_metadata", "model_input_image",
           "model_view", "predict", "predict_batch", "preprocess"]

DEFAULT_TOP_K = 5
MAX_AGE = 130.0
MAX_RESIZED_PIXELS = 25_000_000  # the image after the transform's resize, before its crop (75 MB as RGB)


def _check_resize(loaded: LoadedModel, image: Image.Image) -> None:
    """Refuse an image whose resize to the model's input (shorter side first) would be enormous.

    timm's eval transform scales the shorter side to input_size / crop_pct before cropping; a strip of
    300000x1 pixels would become gigapixels. zoo.images.load_image already refuses thin strips; this
    guards images that reach the model another way.
    """
    side = max(loaded.data_config["input_size"][1:])
    target = math.floor(side / float(loaded.data_config.get("crop_pct") or 1.0))
    short, long = sorted(image.size)
    pixels = target * math.ceil(target * long / max(short, 1))
    if pixels > MAX_RESIZED_PIXELS:
        raise ZooError(
            f"{loaded.entry.id}: resizing this {image.size[0]}x{image.size[1]} image to the model's input "
            f"({target} px on its shorter side) would make {pixels:,} pixels, over the limit of "
            f"{MAX_RESIZED_PIXELS:,}. Crop the image to a shape closer to square."
        )


# Steps of timm's eval transform that treat every band of a PIL image alike (the same resampling coefficients and
# rounding, the same crop box): a grey image can go through them before its band is replicated for an RGB model.
_BAND_WISE_STEPS = (transforms.Resize, transforms.CenterCrop)


class SharedImage:
    """One decoded image that several models read (a comparison): its conversion to each channel count, and each
    distinct resize and centre crop (the same steps: sizes, interpolation, crop), is computed once and shared.

    Pass it wherever an image goes to the models (preprocess, predict, run_model); a plain PIL image is wrapped
    for that one model. Thread-safe.
    """

    def __init__(self, image: Image.Image):
        self.image = image
        self._converted: dict[int, Image.Image] = {}
        self._resized: dict[tuple, Image.Image] = {}
        self._lock = threading.Lock()

    def converted(self, in_chans: int) -> Image.Image:
        """The image with a model's channel count (zoo.images.to_model_mode)."""
        with self._lock:
            if in_chans not in self._converted:
                self._converted[in_chans] = to_model_mode(self.image, in_chans)
            return self._converted[in_chans]

    def resized(self, in_chans: int, steps: Sequence[Callable[[Image.Image], Image.Image]]) -> Image.Image:
        """converted(in_chans) through `steps` (PIL to PIL: resize, centre crop), once per distinct steps; a step's
        repr names all it does (size, interpolation, max_size, antialias)."""
        key = (in_chans, tuple(repr(step) for step in steps))
        with self._lock:
            if key in self._resized:
                return self._resized[key]
        image = self.converted(in_chans)
        for step in steps:
            image = step(image)
        with self._lock:
            return self._resized.setdefault(key, image)


def preprocess(loaded: LoadedModel, image: Image.Image | SharedImage) -> torch.Tensor:
    """An 8-bit L/RGB image -> the model's input batch (1, C, H, W), from the model's own config.

    A grey image for a 3-channel model is resized and cropped as one band, then replicated: exactly the tensor that
    replicating first gives (tests compare them bit for bit), with a third of the resampling and of the conversion,
    which on a 1776x1416 chest X-ray is most of the preprocessing. Through a SharedImage, models whose resize and
    crop are the same share them: the same tensors as each model resizing on its own.
    """
    shared = image if isinstance(image, SharedImage) else SharedImage(image)
    _check_resize(loaded, shared.image)
    steps = list(getattr(loaded.transform, "transforms", ()))
    band_wise = next((i for i, step in enumerate(steps) if not isinstance(step, _BAND_WISE_STEPS)), len(steps))
    if not 0 < band_wise < len(steps):  # no resize or crop to share: the transform as one step
        return loaded.transform(shared.converted(loaded.in_chans)).unsqueeze(0)  # PIL -> (1, C, H, W)
    grey_for_rgb = shared.image.mode == "L" and loaded.in_chans == 3
    x = shared.resized(1 if grey_for_rgb else loaded.in_chans, steps[:band_wise])  # resize, centre crop
    if grey_for_rgb:
        x = x.convert("RGB")  # still one band until here
    for step in steps[band_wise:]:
        x = step(x)  # to tensor, normalise: PIL -> (C, H, W)
    return x.unsqueeze(0)  # (C, H, W) -> (1, C, H, W)


def encode_metadata(loaded: LoadedModel, metadata: Mapping[str, Any] | None) -> torch.Tensor | None:
    """{"age", "sex", "site"} -> the (1, F) tensor a metadata head takes (None for other models).

    Missing or unrecognised values use the model's unknown category.
    """
    schema = loaded.metadata_schema
    if schema is None:
        return None
    metadata = dict(metadata or {})
    age = metadata.get("age")
    if age not in (None, ""):
        try:
            age_value = float(age)
        except (TypeError, ValueError):
            raise ZooError(f"age must be a number of years or empty, got {age!r}.") from None
        if not math.isfinite(age_value) or not 0 <= age_value <= MAX_AGE:
            raise ZooError(f"age must be between 0 and {MAX_AGE:g} years, got {age!r}; leave it empty if unknown.")
    record = {schema.age_field: age, schema.sex_field: metadata.get("sex"), schema.site_field: metadata.get("site")}
    return schema.encode([record])  # (1, F)


@dataclass
class Prediction:
    """One model's answer for one image."""

    probabilities: np.ndarray        # (num_classes,)
    top_k: list[tuple[str, float]]   # [(label, probability)], most probable first
    latency_ms: float                # preprocessing + forward + postprocessing
    input: torch.Tensor              # (1, C, H, W), what the model saw
    metadata: torch.Tensor | None    # (1, F) for a metadata head
    logits: torch.Tensor | None = None    # (1, K) raw logits (zoo.trust applies the temperature)
    features: torch.Tensor | None = None  # (1, D) image features for the OOD check (zoo.trust); None when the
                                          # backend gives none (a model.onnx exported before they existed)
    feature_map: np.ndarray | None = None  # (1, D, h, w) the same pass's last feature map, where the backend's
                                           # closed-form Grad-CAM uses it (zoo.onnx_cam); else None

    @property
    def class_index(self) -> int:
        return int(self.probabilities.argmax())


def predict(loaded: LoadedModel, image: Image.Image | SharedImage, metadata: Mapping[str, Any] | None = None,
            top_k: int = DEFAULT_TOP_K) -> Prediction:
    """Class probabilities for `image`; deterministic for the same input (eval mode, inference mode)."""
    start = time.perf_counter()
    x = preprocess(loaded, image)
    meta = encode_metadata(loaded, metadata)
    with loaded.lock, torch.inference_mode():
        logits, features, feature_map = loaded.backend.predict_with_map(x, meta)  # -> (1, K), (1, D), (1, D, h, w)
        probs = _checked_probabilities(loaded, logits, 1)  # (1, K)
    return _prediction(loaded, probs[0], top_k, start, x, meta, logits, features, feature_map)


def predict_batch(loaded: LoadedModel, images: Sequence[Image.Image | SharedImage],
                  top_k: int = DEFAULT_TOP_K) -> list[Prediction]:
    """predict() for several images in one forward pass (a batch classification: no metadata, every field of a
    metadata head unknown; no feature map, so no closed-form Grad-CAM). Each prediction's `latency_ms` is its
    share of the batch's time (preprocessing, the one forward pass, postprocessing). An image that cannot be
    preprocessed raises ZooError for the whole call: preprocess each first where that must not happen."""
    start = time.perf_counter()
    x = torch.cat([preprocess(loaded, image) for image in images])  # B x (1, C, H, W) -> (B, C, H, W)
    with loaded.lock, torch.inference_mode():
        logits, features = loaded.backend.predict(x, None)  # -> (B, K), (B, D) or None
        probs = _checked_probabilities(loaded, logits, len(images))  # (B, K)
    predictions = [_prediction(loaded, probs[i], top_k, start, x[i:i + 1], None, logits[i:i + 1],
                               None if features is None else features[i:i + 1], None) for i in range(len(images))]
    share = (time.perf_counter() - start) * 1000.0 / max(len(images), 1)
    for prediction in predictions:
        prediction.latency_ms = share
    return predictions


def _checked_probabilities(loaded: LoadedModel, logits: torch.Tensor, batch: int) -> torch.Tensor:
    """softmax of logits (B, K) -> (B, K), once their shape and values are checked."""
    if tuple(logits.shape) != (batch, len(loaded.label_names)):
        raise ZooError(f"{loaded.entry.id} gave logits of shape {tuple(logits.shape)} for its "
                       f"{len(loaded.label_names)} classes, so its answer cannot be read; its model file does "
                       "not fit its config.json: re-export or retrain it.")
    if not bool(torch.isfinite(logits).all()):
        raise ZooError(f"{loaded.entry.id} produced NaN or infinite outputs for this image, so it has no "
                       "answer; its weights are probably damaged (non-finite values): retrain or "
                       "re-download it.")
    return logits.float().softmax(dim=-1)


def _prediction(loaded: LoadedModel, probs: torch.Tensor, top_k: int, start: float, x: torch.Tensor,
                meta: torch.Tensor | None, logits: torch.Tensor, features: torch.Tensor | None,
                feature_map: np.ndarray | None) -> Prediction:
    """One image's Prediction from its probabilities (K,): the top k classes by name."""
    values, indices = probs.topk(min(max(1, int(top_k)), probs.numel()))
    names = loaded.label_names
    top = [(names[i] if i < len(names) else str(i), float(v)) for v, i in zip(values.tolist(), indices.tolist())]
    latency_ms = (time.perf_counter() - start) * 1000.0
    return Prediction(probabilities=probs.numpy(), top_k=top, latency_ms=latency_ms, input=x, metadata=meta,
                      logits=logits, features=features, feature_map=feature_map)


def model_view(loaded: LoadedModel, x: torch.Tensor) -> np.ndarray:
    """The input the model saw, de-normalised for display: (1, C, H, W) -> (H, W, 3) float32 in [0, 1]."""
    mean = torch.tensor(loaded.data_config["mean"], dtype=x.dtype).view(-1, 1, 1)
    std = torch.tensor(loaded.data_config["std"], dtype=x.dtype).view(-1, 1, 1)
    image = (x[0].detach() * std + mean).clamp(0.0, 1.0)  # (C, H, W)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)  # (1, H, W) -> (3, H, W)
    return image.permute(1, 2, 0).numpy().astype(np.float32)  # (3, H, W) -> (H, W, 3)


def model_input_image(loaded: LoadedModel, image: Image.Image | SharedImage) -> np.ndarray:
    """What the model reads of `image`: its own transform's output (channels, size, crop), de-normalised
    to an (H, W, 3) uint8 image at the model's input size (a grey model's one channel repeated)."""
    view = model_view(loaded, preprocess(loaded, image))  # (H, W, 3) float in [0, 1]
    return np.rint(view * 255.0).astype(np.uint8)
