"""Several models judge one image: a model cache, preprocessing from each model's own config, predictions,
Grad-CAM maps, comparison records and an agreement summary.

This is the comparison app's engine, written without any UI code so that it can be tested and used on its
own::

    from zoo.catalog import discover_models
    from zoo.images import load_image
    from zoo import inference

    entries = discover_models("weights")
    cache = inference.ModelCache(max_models=8)
    comparison = inference.compare(load_image("scan.dcm"), entries[:3], cache)
    comparison.records()          # one JSON-ready dict per model
    comparison.summary.markdown   # which models agree on the top class

Every model sees the image as it saw its training data: ``zoo.images.to_model_mode`` gives it its own
channel count, and timm's evaluation transform built from its ``pretrained_cfg`` (the same transform
``python -m train`` evaluates with) resizes, crops and normalises it.

What runs the model is a backend (zoo.backends), chosen explicitly: ``ModelCache(backend="onnx")`` (the
default) answers from ONNX Runtime where onnxruntime is installed and the run has, or can make once into the
zoo's cache, a verified model.onnx, else from PyTorch, and each record says which (``backend``,
``backend_note``); ``"torch"`` always uses PyTorch; ``"onnx-int8"`` a run's int8 file where it has one. Both
give the logits and the image features of one pass, so the trust checks (zoo.trust: temperature, prediction
set, OOD) are the same on either. The PyTorch model is built only when a Grad-CAM heatmap is asked for.
"""
from __future__ import annotations

import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform
from torchvision import transforms
from torch import nn

from ._errors import ZooError
from ._hub import WEIGHTS_NAME
from .archs.metadata import MetadataSchema
from .backends import Backend, check_backend, load_backend
from .cam import cam_target_layers
from .catalog import ModelEntry
from .images import LoadedImage, to_model_mode
from .modes import count_params
from .run_layout import ONNX_NAME
from .trust import Trust, read_trust

__all__ = [
    "MIN_MODELS", "MAX_MODELS", "DEFAULT_TOP_K", "DEFAULT_BACKEND", "LoadedModel", "load_model", "ModelCache", "Prediction", "ModelResult",
    "Agreement", "Comparison", "build_transform", "preprocess", "encode_metadata", "predict", "grad_cam",
    "cam_overlay", "model_view", "model_input_image", "agreement_summary", "check_selection", "compare",
    "ProgressCallback", "true_label_verdicts",
]

MIN_MODELS, MAX_MODELS = 2, 6
DEFAULT_BACKEND = "onnx"  # ONNX Runtime where it can answer correctly, else PyTorch saying why (zoo.backends)
DEFAULT_TOP_K = 5
MAX_AGE = 130.0
CAM_DISPLAY_SIZE = 224  # heatmaps of small inputs (LeNet's 32 px) are upscaled to at least this for display
CAM_MIN_MAP_SIZE = 3  # Grad-CAM uses the last feature level at least this many pixels a side (zoo.cam)
MAX_RESIZED_PIXELS = 25_000_000  # the image after the transform's resize, before its crop (75 MB as RGB)
_TRANSFORM_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


# --- loading and caching -----------------------------------------------------------------------------

@dataclass
class LoadedModel:
    """A model ready to predict: its backend, preprocessing, labels and trust statistics. The PyTorch model
    and its Grad-CAM layers are built on first use (`model`, `cam_target`), not at load."""

    entry: ModelEntry
    backend: Backend
    data_config: dict[str, Any]
    transform: Callable[[Image.Image], torch.Tensor]
    label_names: list[str]
    metadata_schema: MetadataSchema | None
    trust: Trust
    load_s: float
    # one request at a time per model: Grad-CAM adds hooks that another request's forward would run
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _cam: tuple[list[nn.Module], str] | None = field(default=None, repr=False)
    _cam_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def in_chans(self) -> int:
        return int(self.data_config["input_size"][0])

    @property
    def model(self) -> nn.Module:
        """The PyTorch model (eval mode), built on the first call (Grad-CAM needs it; predictions do not)."""
        return self.backend.torch_model()

    @property
    def torch_loaded(self) -> bool:
        return self.backend.torch_loaded

    @property
    def cam_ready(self) -> bool:
        return self._cam is not None

    def cam_target(self) -> tuple[list[nn.Module], str]:
        """Grad-CAM's target layers and their names for display; the first call builds the PyTorch model and
        imports pytorch-grad-cam."""
        with self._cam_lock:
            if self._cam is None:
                _import_cam_library()
                model = self.model
                layers = cam_target_layers(model, tuple(self.data_config["input_size"]), CAM_MIN_MAP_SIZE)
                names = {module: name for name, module in model.named_modules()}
                self._cam = layers, ", ".join(names.get(m, type(m).__name__) for m in layers)
            return self._cam

    @property
    def target_layers(self) -> list[nn.Module]:
        return self.cam_target()[0]

    @property
    def cam_layer(self) -> str:
        return self.cam_target()[1]

    @property
    def params(self) -> tuple[int | None, int | None]:
        """(total, trainable in its transfer mode): config.json's record, or counted once PyTorch is loaded."""
        total, trainable = self.entry.params
        if total is None and self.torch_loaded:
            return count_params(self.model)
        return total, trainable

    @property
    def nbytes(self) -> int:
        """Memory the model holds: the backend's (an ONNX Runtime session), plus PyTorch's once built."""
        return self.backend.nbytes


def build_transform(data_config: Mapping[str, Any]) -> Callable[[Image.Image], torch.Tensor]:
    """timm's evaluation transform (resize, centre crop, to tensor, normalise) for a resolved data config.

    The same call as train.augment.eval_transform (tests check both give identical tensors), so a model
    sees in the app exactly what it was evaluated on.
    """
    return create_transform(**{k: data_config[k] for k in _TRANSFORM_KEYS if k in data_config}, is_training=False)


def _import_cam_library() -> None:
    """Import pytorch-grad-cam (it pulls in OpenCV: a second or more the first time) when the first heatmap
    of a model is prepared (LoadedModel.cam_target, counted as loading), so that a Grad-CAM's time is the
    map's cost, not the library's import. Not at module import nor at a model's load: a comparison without
    heatmaps never needs it."""
    import pytorch_grad_cam  # noqa: F401, PLC0415
    import pytorch_grad_cam.utils.image  # noqa: F401, PLC0415
    import pytorch_grad_cam.utils.model_targets  # noqa: F401, PLC0415


def load_model(entry: ModelEntry, backend: str) -> LoadedModel:
    """Load one catalog entry behind `backend` ("onnx", "onnx-int8" or "torch": zoo.backends.load_backend,
    which falls back to PyTorch saying why); any failure is a ZooError that says which model and why."""
    check_backend(backend)
    if not entry.available:
        raise ZooError(f"{entry.id} is unavailable: {entry.reason}")
    start = time.perf_counter()
    try:
        runner = load_backend(entry.location, backend, revision=entry.revision)
        # the trust statistics, validated against the width of the features this backend gives
        trust = (getattr(runner.torch_model(), "trust", None) if runner.torch_loaded else None) or \
            read_trust(runner.folder, runner.config, runner.feature_width)
    except ZooError as e:
        raise ZooError(f"{entry.id} could not be loaded: {e}") from None
    except Exception as e:  # torch/timm/onnxruntime errors on a damaged folder must not take the app down
        raise ZooError(f"{entry.id} could not be loaded ({type(e).__name__}: {e}).") from None
    return LoadedModel(
        entry=entry, backend=runner, data_config=runner.data_config, transform=build_transform(runner.data_config),
        label_names=runner.label_names, metadata_schema=runner.metadata_schema, trust=trust,
        load_s=time.perf_counter() - start)


def _weights_stamp(entry: ModelEntry) -> tuple:
    """Changes when a local run folder's weights or model.onnx are rewritten (a re-trained or re-exported run
    is reloaded)."""
    if entry.source == "local":
        stamp = []
        for name in (WEIGHTS_NAME, ONNX_NAME):
            try:
                stat = (entry.run_dir or Path(entry.location)).joinpath(name).stat()
                stamp += [stat.st_mtime_ns, stat.st_size]
            except OSError:
                stamp.append(None)
        return tuple(stamp)
    return (entry.revision,)


class ModelCache:
    """Loaded models behind one backend, least recently used evicted first, bounded by a count and optionally
    by bytes (what each backend holds: its ONNX Runtime session, and the PyTorch model once Grad-CAM built it).

    Thread-safe: concurrent requests for the same model wait for one load instead of loading twice.
    """

    def __init__(self, max_models: int = 8, max_bytes: int | None = None, backend: str = DEFAULT_BACKEND):
        if not isinstance(max_models, int) or max_models < 1:
            raise ZooError(f"ModelCache max_models must be an integer >= 1, got {max_models!r}.")
        self.max_models, self.max_bytes, self.backend = max_models, max_bytes, check_backend(backend)
        self._models: OrderedDict[tuple, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple, threading.Lock] = {}
        self.loads = 0  # how many loads happened (a cached prediction does not add one)

    @staticmethod
    def _key(entry: ModelEntry) -> tuple:
        return entry.id, entry.location, _weights_stamp(entry)

    def __len__(self) -> int:
        return len(self._models)

    def is_loaded(self, entry: ModelEntry) -> bool:
        return self._key(entry) in self._models

    def get(self, entry: ModelEntry, on_load: Callable[[ModelEntry], None] | None = None) -> LoadedModel:
        """The loaded model for `entry`, loading it (and calling `on_load(entry)` first) if needed."""
        key = self._key(entry)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                self._evict()  # a PyTorch model built for Grad-CAM since the last call now counts
                return self._models[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._models:  # another request loaded it while we waited
                    self._models.move_to_end(key)
                    return self._models[key]
            try:
                if on_load is not None:
                    on_load(entry)
                loaded = load_model(entry, self.backend)  # a failure is not cached: the next request tries again
                with self._lock:
                    self.loads += 1
                    for old in [k for k in self._models if k[0] == entry.id]:  # a re-trained run's old weights
                        del self._models[old]
                    self._models[key] = loaded
                    self._evict()
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            return loaded

    def _evict(self) -> None:
        while len(self._models) > self.max_models:
            self._models.popitem(last=False)
        if self.max_bytes is not None:
            while len(self._models) > 1 and sum(m.nbytes for m in self._models.values()) > self.max_bytes:
                self._models.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


# --- preprocessing and prediction --------------------------------------------------------------------

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


def preprocess(loaded: LoadedModel, image: Image.Image) -> torch.Tensor:
    """An 8-bit L/RGB image -> the model's input batch (1, C, H, W), from the model's own config.

    A grey image for a 3-channel model is resized and cropped as one band, then replicated: exactly the tensor that
    replicating first gives (tests compare them bit for bit), with a third of the resampling and of the conversion,
    which on a 1776x1416 chest X-ray is most of the preprocessing.
    """
    _check_resize(loaded, image)
    steps = list(getattr(loaded.transform, "transforms", ()))
    band_wise = next((i for i, step in enumerate(steps) if not isinstance(step, _BAND_WISE_STEPS)), len(steps))
    if image.mode == "L" and loaded.in_chans == 3 and 0 < band_wise < len(steps):
        for step in steps[:band_wise]:
            image = step(image)  # resize, centre crop: still one band
        x = image.convert("RGB")
        for step in steps[band_wise:]:
            x = step(x)  # to tensor, normalise
    else:
        x = loaded.transform(to_model_mode(image, loaded.in_chans))  # PIL -> (C, H, W)
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

    @property
    def class_index(self) -> int:
        return int(self.probabilities.argmax())


def predict(loaded: LoadedModel, image: Image.Image, metadata: Mapping[str, Any] | None = None,
            top_k: int = DEFAULT_TOP_K) -> Prediction:
    """Class probabilities for `image`; deterministic for the same input (eval mode, inference mode)."""
    start = time.perf_counter()
    x = preprocess(loaded, image)
    meta = encode_metadata(loaded, metadata)
    with loaded.lock, torch.inference_mode():
        logits, features = loaded.backend.predict(x, meta)  # (1, C, H, W) -> (1, K), (1, D) or None
        if tuple(logits.shape) != (1, len(loaded.label_names)):
            raise ZooError(f"{loaded.entry.id} gave logits of shape {tuple(logits.shape)} for its "
                           f"{len(loaded.label_names)} classes, so its answer cannot be read; its model file does "
                           "not fit its config.json: re-export or retrain it.")
        if not bool(torch.isfinite(logits).all()):
            raise ZooError(f"{loaded.entry.id} produced NaN or infinite outputs for this image, so it has no "
                           "answer; its weights are probably damaged (non-finite values): retrain or "
                           "re-download it.")
        probs = logits.float().softmax(dim=-1)[0]  # (1, K) -> (K,)
        values, indices = probs.topk(min(max(1, int(top_k)), probs.numel()))
    names = loaded.label_names
    top = [(names[i] if i < len(names) else str(i), float(v)) for v, i in zip(values.tolist(), indices.tolist())]
    latency_ms = (time.perf_counter() - start) * 1000.0
    return Prediction(probabilities=probs.numpy(), top_k=top, latency_ms=latency_ms, input=x, metadata=meta,
                      logits=logits, features=features)


# --- Grad-CAM ----------------------------------------------------------------------------------------

class _WithMetadata(nn.Module):
    """Binds a metadata tensor so that pytorch-grad-cam can call model(x) on a metadata-fusion model."""

    def __init__(self, model: nn.Module, metadata: torch.Tensor):
        super().__init__()
        self.model, self.metadata = model, metadata

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.metadata)


@contextmanager
def _no_weight_grads(model: nn.Module):
    """Grad-CAM needs gradients of activations only: skip the weights' (faster, nothing accumulates)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def grad_cam(loaded: LoadedModel, prediction: Prediction, class_index: int | None = None) -> np.ndarray:
    """Grad-CAM map (H, W) in [0, 1] at the model's input size, for `class_index` (default: the top class).

    The target layer comes from the zoo (zoo.cam_target_layers), so every architecture gets its last
    feature map, native ones included. Grad-CAM needs gradients, so it runs on the PyTorch model whatever
    backend answered (the first map builds it), on the input the prediction was made from.
    """
    from pytorch_grad_cam import GradCAM  # noqa: PLC0415
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: PLC0415

    index = prediction.class_index if class_index is None else int(class_index)
    target_layers, _ = loaded.cam_target()  # builds the PyTorch model on the first heatmap
    model = loaded.model
    target = model if prediction.metadata is None else _WithMetadata(model, prediction.metadata)
    with loaded.lock, _no_weight_grads(model), torch.enable_grad():
        # a normal tensor (the prediction's comes from inference mode) that requires grad: with frozen
        # weights, only such an input makes the target layer's output carry a gradient
        x = prediction.input.clone().requires_grad_(True)
        with GradCAM(model=target, target_layers=target_layers) as cam:
            mask = cam(input_tensor=x, targets=[ClassifierOutputTarget(index)])[0]  # (H, W)
    mask = np.nan_to_num(np.asarray(mask, dtype=np.float32), nan=0.0)
    return np.clip(mask, 0.0, 1.0)


def model_view(loaded: LoadedModel, x: torch.Tensor) -> np.ndarray:
    """The input the model saw, de-normalised for display: (1, C, H, W) -> (H, W, 3) float32 in [0, 1]."""
    mean = torch.tensor(loaded.data_config["mean"], dtype=x.dtype).view(-1, 1, 1)
    std = torch.tensor(loaded.data_config["std"], dtype=x.dtype).view(-1, 1, 1)
    image = (x[0].detach() * std + mean).clamp(0.0, 1.0)  # (C, H, W)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)  # (1, H, W) -> (3, H, W)
    return image.permute(1, 2, 0).numpy().astype(np.float32)  # (3, H, W) -> (H, W, 3)


def model_input_image(loaded: LoadedModel, image: Image.Image) -> np.ndarray:
    """What the model reads of `image`: its own transform's output (channels, size, crop), de-normalised
    to an (H, W, 3) uint8 image at the model's input size (a grey model's one channel repeated)."""
    view = model_view(loaded, preprocess(loaded, image))  # (H, W, 3) float in [0, 1]
    return np.rint(view * 255.0).astype(np.uint8)


def cam_overlay(loaded: LoadedModel, prediction: Prediction, mask: np.ndarray,
                display_size: int = CAM_DISPLAY_SIZE) -> np.ndarray:
    """The heatmap over the model's view of the image, (H', W', 3) uint8, at least `display_size` wide."""
    from pytorch_grad_cam.utils.image import show_cam_on_image  # noqa: PLC0415

    overlay = show_cam_on_image(model_view(loaded, prediction.input), mask, use_rgb=True, image_weight=0.55)
    height, width = overlay.shape[:2]
    scale = math.ceil(display_size / max(height, width))
    if scale > 1:
        overlay = np.asarray(Image.fromarray(overlay).resize((width * scale, height * scale), Image.BILINEAR))
    return overlay


# --- comparing models --------------------------------------------------------------------------------

@dataclass
class ModelResult:
    """One column of a comparison: a model's answer, or the error that stopped it."""

    model: str
    architecture: str | None = None
    mode: str | None = None
    head: str | None = None
    dataset: str | None = None
    source: str | None = None
    label_names: list[str] = field(default_factory=list)
    top_k: list[tuple[str, float]] = field(default_factory=list)
    latency_ms: float | None = None
    cam_ms: float | None = None
    load_ms: float | None = None     # set when this request loaded the model (or built PyTorch for Grad-CAM)
    backend: str | None = None       # what answered: "onnx", "onnx-int8" or "torch" (zoo.backends)
    backend_note: str | None = None  # the backend in words, with why it is not the one asked for
    params_total: int | None = None
    params_trainable: int | None = None
    test_metrics: dict[str, float] = field(default_factory=dict)
    heatmap: np.ndarray | None = None  # (H, W, 3) uint8 overlay
    cam_layer: str | None = None
    cam_note: str | None = None      # e.g. a map with no positive evidence
    cam_error: str | None = None
    error: str | None = None
    label_set_differs: bool = False
    # trust (zoo/trust.py): each None with a reason when the run folder lacks that piece
    calibrated_top_k: list[tuple[str, float]] | None = None  # softmax(logits / temperature)
    temperature: float | None = None
    prediction_set: list[str] | None = None
    prediction_set_coverage: float | None = None  # 1 - alpha, e.g. 0.9 for "90% set"
    ood: dict[str, Any] | None = None             # {"score", "threshold", "flagged"}
    ood_reason: str | None = None                 # why there is no OOD check (ood is None)
    trust_notes: list[str] = field(default_factory=list)  # why calibration or sets are missing; OOD caveats
    test_ece: dict[str, float] | None = None      # the run's test ECE before/after temperature scaling, n, bins

    @property
    def ood_flagged(self) -> bool:
        """The OOD check says this image is unlike the model's training images."""
        return bool(self.ood and self.ood.get("flagged"))

    @property
    def top_label(self) -> str | None:
        return self.top_k[0][0] if self.top_k else None

    def record(self) -> dict[str, Any]:
        """The JSON record of the app's /compare API."""
        return {
            "model": self.model, "architecture": self.architecture, "mode": self.mode, "head": self.head,
            "dataset": self.dataset, "source": self.source,
            "top_k": [{"label": label, "probability": round(p, 6)} for label, p in self.top_k],
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3),
            "cam_ms": None if self.cam_ms is None else round(self.cam_ms, 3),
            "load_ms": None if self.load_ms is None else round(self.load_ms, 1),
            "backend": self.backend, "backend_note": self.backend_note,
            "params_total": self.params_total, "params_trainable": self.params_trainable,
            "test_metrics": self.test_metrics, "num_classes": len(self.label_names),
            "label_set_differs": self.label_set_differs, "cam_layer": self.cam_layer, "cam_note": self.cam_note,
            "cam_error": self.cam_error, "error": self.error,
            "calibrated_top_k": None if self.calibrated_top_k is None else
            [{"label": label, "probability": round(p, 6)} for label, p in self.calibrated_top_k],
            "temperature": self.temperature, "prediction_set": self.prediction_set,
            "prediction_set_coverage": self.prediction_set_coverage, "ood": self.ood, "ood_reason": self.ood_reason,
            "trust_notes": list(self.trust_notes), "test_ece": self.test_ece,
        }


@dataclass
class Agreement:
    """Which models agree on the top class, and which cannot be compared (another label set, an error)."""

    markdown: str
    unanimous: bool
    votes: dict[str, list[str]]        # top label -> models, among models sharing the common label set
    differing_label_sets: list[str]    # models whose classes differ from the common set
    failed: list[str]
    flagged: list[str] = field(default_factory=list)  # models whose OOD check flagged the image: left out
    true_label: str | None = None      # the image's known label (an example's), if any
    verdicts: dict[str, list[str]] = field(default_factory=dict)  # right / wrong / not_applicable -> models


def agreement_summary(results: Sequence[ModelResult], true_label: str | None = None) -> Agreement:
    """Summarise a comparison: agreement on the top class, disagreements, differing label sets, failures,
    and, when the image's `true_label` is known (an example's), which models were right.

    A model whose OOD check flagged the image has no meaningful answer: it is left out and counted.
    Sets ``label_set_differs`` on the results whose classes are not the most common label set.
    """
    flagged = [r.model for r in results if r.error is None and r.top_k and r.ood_flagged]
    answered = [r for r in results if r.error is None and r.top_k and not r.ood_flagged]
    failed = [r.model for r in results if r.error is not None]
    sets = Counter(tuple(r.label_names) for r in answered)
    common = max(sets, key=lambda s: (sets[s], -[tuple(r.label_names) for r in answered].index(s))) if sets else ()
    comparable = [r for r in answered if tuple(r.label_names) == common]
    differing = [r for r in answered if tuple(r.label_names) != common]
    for r in results:
        r.label_set_differs = r in differing
    votes: dict[str, list[str]] = {}
    for r in sorted(comparable, key=lambda r: -r.top_k[0][1]):
        votes.setdefault(r.top_label, []).append(r.model)
    ranked = sorted(votes.items(), key=lambda kv: -len(kv[1]))

    lines = []
    unanimous = len(comparable) >= 2 and len(votes) == 1
    if unanimous:
        label, names = ranked[0]
        mean = np.mean([r.top_k[0][1] for r in comparable])
        lines.append(f"**All {len(names)} {'remaining ' if flagged else ''}models agree: `{label}`** "
                     f"(mean probability {mean:.2f}).")
    elif len(comparable) >= 2:
        top_count = len(ranked[0][1])
        lead = (f"Most say `{ranked[0][0]}` ({top_count} of {len(comparable)})"
                if top_count > 1 and sum(len(v) == top_count for _, v in ranked) == 1 else "No majority")
        lines.append(f"**The models disagree.** {lead}.")
        lines += [f"- `{label}`: {', '.join(f'`{m}`' for m in names)}" for label, names in ranked]
    elif len(comparable) == 1:
        r = comparable[0]
        lines.append(f"Only `{r.model}` answered with this label set: `{r.top_label}` ({r.top_k[0][1]:.2f}).")
    elif flagged:
        lines.append("**No meaningful answer:** every model that answered flagged this image as unlike its "
                     "training images.")
    else:
        lines.append("**No model answered.**")
    if flagged:
        lines.append(f"- ⚠ **{len(flagged)} of {len(results)} models flagged this image** as unlike the images "
                     f"they were trained on and are left out: {', '.join(f'`{m}`' for m in flagged)}.")
    if differing:
        common_desc = _describe_labels(common)
        for r in differing:
            lines.append(f"- ⚠ **Different label set:** `{r.model}` chooses among {_describe_labels(r.label_names)}, "
                         f"not the {common_desc} of the others; its answer `{r.top_label}` is not counted above.")
    for r in results:
        if r.error is not None:
            lines.append(f"- ✖ `{r.model}` failed: {r.error.splitlines()[0]}")
    # every model that answered is judged, flagged ones too: "not applicable" is about its classes, and a
    # flagged model right or wrong on a labelled example is worth seeing beside its banner
    judged = [r for r in results if r.error is None and r.top_k]
    verdicts = true_label_verdicts(judged, true_label) if true_label else {}
    if verdicts:
        lines.insert(0, _verdict_line(true_label, verdicts))
    return Agreement(markdown="\n".join(lines), unanimous=unanimous, votes=dict(ranked),
                     differing_label_sets=[r.model for r in differing], failed=failed, flagged=flagged,
                     true_label=true_label, verdicts=verdicts)


def true_label_verdicts(results: Sequence[ModelResult], true_label: str) -> dict[str, list[str]]:
    """right / wrong / not_applicable -> the models that answered: right when the top class is `true_label`
    (compared case-insensitively: "PNEUMONIA" is MedMNIST's "pneumonia"), not applicable when `true_label` is
    none of the model's classes."""
    wanted = true_label.strip().casefold()
    verdicts: dict[str, list[str]] = {"right": [], "wrong": [], "not_applicable": []}
    for r in results:
        if wanted not in {name.strip().casefold() for name in r.label_names}:
            verdicts["not_applicable"].append(r.model)
        else:
            verdicts["right" if (r.top_label or "").strip().casefold() == wanted else "wrong"].append(r.model)
    return verdicts


def _verdict_line(true_label: str, verdicts: dict[str, list[str]]) -> str:
    def names(models: list[str]) -> str:
        return ", ".join(f"`{m}`" for m in models) or "none"

    line = f"**True label: `{true_label}`** — right: {names(verdicts['right'])}; wrong: {names(verdicts['wrong'])}"
    if verdicts["not_applicable"]:
        line += f"; not applicable (`{true_label}` is not among their classes): {names(verdicts['not_applicable'])}"
    return line + "."


def _describe_labels(labels: Sequence[str]) -> str:
    shown = ", ".join(labels[:6]) + (", …" if len(labels) > 6 else "")
    return f"{len(labels)} classes ({shown})"


@dataclass
class Comparison:
    """The answer of every selected model for one image."""

    results: list[ModelResult]
    summary: Agreement
    image_info: dict[str, Any]

    def records(self) -> list[dict[str, Any]]:
        return [r.record() for r in self.results]


def check_selection(model_ids: Sequence[str]) -> list[str]:
    """The selected ids, de-duplicated in order; fewer than MIN_MODELS or more than MAX_MODELS raises."""
    if isinstance(model_ids, str) or not isinstance(model_ids, Sequence):
        raise ZooError(f"models must be a list of model ids, got {type(model_ids).__name__}: {model_ids!r:.80}.")
    ids = list(dict.fromkeys(str(m) for m in model_ids))
    if not MIN_MODELS <= len(ids) <= MAX_MODELS:
        raise ZooError(f"Select {MIN_MODELS} to {MAX_MODELS} models to compare; {len(ids)} selected"
                       f"{' (' + ', '.join(ids) + ')' if ids else ''}.")
    return ids


def _result_for(entry: ModelEntry) -> ModelResult:
    total, trainable = entry.params
    return ModelResult(model=entry.id, architecture=entry.architecture, mode=entry.mode, head=entry.head,
                       dataset=entry.dataset, source=entry.source, label_names=entry.label_names,
                       params_total=total, params_trainable=trainable, test_metrics=entry.test_metrics)


def run_model(entry: ModelEntry, image: Image.Image, cache: ModelCache, metadata: Mapping[str, Any] | None = None,
              top_k: int = DEFAULT_TOP_K, cam: bool = True,
              on_load: Callable[[ModelEntry], None] | None = None) -> ModelResult:
    """One model's column: load (cached), predict, Grad-CAM. Errors end up in the result, never raised."""
    result = _result_for(entry)
    try:
        was_loaded = cache.is_loaded(entry)
        loaded = cache.get(entry, on_load=on_load)
        if not was_loaded:
            result.load_ms = loaded.load_s * 1000.0
        result.label_names = loaded.label_names
        result.params_total, result.params_trainable = loaded.params
        result.backend, result.backend_note = loaded.backend.name, loaded.backend.description
        prediction = predict(loaded, image, metadata, top_k)
        # the trust step reads this model's outputs too: what it refuses fails this column only
        _add_trust(result, loaded, prediction, len(prediction.top_k))
    except ZooError as e:
        _clear_answer(result)
        result.error = str(e)
        return result
    except Exception as e:  # one broken model must not stop the others
        _clear_answer(result)
        result.error = f"{entry.id} failed ({type(e).__name__}: {e})."
        return result
    result.top_k, result.latency_ms = prediction.top_k, prediction.latency_ms
    if cam:
        start = time.perf_counter()
        try:
            if not loaded.cam_ready:  # the first heatmap builds the PyTorch model: loading, not Grad-CAM
                loaded.cam_target()
                result.load_ms = (result.load_ms or 0.0) + (time.perf_counter() - start) * 1000.0
                start = time.perf_counter()
            result.cam_layer = loaded.cam_layer
            mask = grad_cam(loaded, prediction)
            result.heatmap = cam_overlay(loaded, prediction, mask)
            if not mask.any():
                result.cam_note = (f"Grad-CAM found no region with positive evidence for `{prediction.top_k[0][0]}` "
                                   f"at layer {loaded.cam_layer}: the map is empty.")
        except Exception as e:  # the prediction stands even if its explanation fails
            result.cam_error = f"Grad-CAM failed for {entry.id} ({type(e).__name__}: {e})."
        result.cam_ms = (time.perf_counter() - start) * 1000.0
    return result


def _clear_answer(result: ModelResult) -> None:
    """Nothing of a failed model's answer stays in its result (a trust step that failed half-way)."""
    result.calibrated_top_k = result.prediction_set = result.prediction_set_coverage = None
    result.temperature = result.ood = result.ood_reason = result.test_ece = None
    result.trust_notes = []


def _add_trust(result: ModelResult, loaded: LoadedModel, prediction: Prediction, top_k: int) -> None:
    """Calibrated top-k, prediction set and OOD check (zoo/trust.py) of one prediction, into its result."""
    trust = loaded.trust
    assessment = trust.assess(prediction.logits, prediction.features)
    names = loaded.label_names
    if assessment.calibrated is not None:
        order = np.argsort(-assessment.calibrated, kind="stable")[:top_k]
        result.calibrated_top_k = [(names[i], float(assessment.calibrated[i])) for i in order]
    if assessment.prediction_set is not None:
        result.prediction_set = [names[i] for i in assessment.prediction_set]
        result.prediction_set_coverage = trust.conformal.coverage
    result.temperature, result.ood = trust.temperature, assessment.ood
    result.ood_reason = assessment.ood_reason or trust.ood_reason or (
        loaded.backend.features_reason if prediction.features is None else None)
    result.trust_notes = [note for note in (trust.calibration_reason, trust.conformal_reason, trust.ood_note) if note]
    figures = trust.test_figures or {}
    if "test_ece_before" in figures and "test_ece_after" in figures:
        result.test_ece = {"before": figures["test_ece_before"], "after": figures["test_ece_after"],
                           "n": figures.get("n_test"), "bins": figures.get("ece_bins")}


ProgressCallback = Callable[[int, int, str], None]
"""progress(done, total, what): `done` of `total` models finished, `what` the step starting now."""


def compare(image: LoadedImage, entries: Sequence[ModelEntry], cache: ModelCache,
            metadata: Mapping[str, Any] | None = None, top_k: int = DEFAULT_TOP_K, cam: bool = True,
            on_load: Callable[[ModelEntry], None] | None = None,
            progress: ProgressCallback | None = None, true_label: str | None = None) -> Comparison:
    """Run every entry on one loaded image; a model that fails reports its error while the others answer.
    `true_label`, known for the app's examples, makes the summary say which models were right.

    `progress`, if given, is told before each model's step ("<id>: predicting", or "Loading <id>
    (first use)…" when it is not cached yet) and once at the end.
    """
    check_selection([e.id for e in entries])
    total = len(entries)
    results = []
    for done, entry in enumerate(entries):
        def loading(e: ModelEntry, done: int = done) -> None:
            if progress is not None:
                progress(done, total, f"Loading {e.id} (first use)…")
            if on_load is not None:
                on_load(e)

        if progress is not None:
            progress(done, total, f"{entry.id}: predicting")
        results.append(run_model(entry, image.image, cache, metadata, top_k, cam, loading))
    if progress is not None:
        progress(total, total, "done")
    return Comparison(results=results, summary=agreement_summary(results, true_label), image_info=dict(image.info))
