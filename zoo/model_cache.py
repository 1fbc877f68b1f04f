"""Loading models for inference and keeping them: a loaded model (its backend, preprocessing, labels and trust
statistics, the PyTorch model and Grad-CAM layers built on first use) and a bounded, thread-safe cache of them.

What runs the model is a backend (zoo.backends), chosen explicitly: ``ModelCache(backend="onnx")`` (the
default) answers from ONNX Runtime where onnxruntime is installed and the run has, or can make once into the
zoo's cache, a verified model.onnx, else from PyTorch; ``"torch"`` always uses PyTorch; ``"onnx-int8"`` a run's
int8 file where it has one. The PyTorch model is built only for a Grad-CAM heatmap that the ONNX feature map
cannot give (zoo.onnx_cam).
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from ._errors import ZooError
from ._hub import WEIGHTS_NAME
from .archs.metadata import MetadataSchema
from .backends import Backend, check_backend, load_backend
from .cam import cam_target_layers
from .catalog import ModelEntry
from .eval_transform import eval_transform
from .modes import count_params
from .onnx_cam import CAM_MIN_MAP_SIZE
from .run_layout import ONNX_NAME
from .trust import Trust, read_trust

__all__ = ["DEFAULT_BACKEND", "LoadedModel", "ModelCache", "import_cam_library", "load_model"]

DEFAULT_BACKEND = "onnx"  # ONNX Runtime where it can answer correctly, else PyTorch saying why (zoo.backends)


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
        """The PyTorch model (eval mode), built on the first call (a fallback Grad-CAM needs it; predictions do not)."""
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
                import_cam_library()
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


def import_cam_library() -> None:
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
        entry=entry, backend=runner, data_config=runner.data_config, transform=eval_transform(runner.data_config),
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
        """Whether this entry's model is in the cache now (getting it would not load it)."""
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
        """Drop every cached model."""
        with self._lock:
            self._models.clear()

