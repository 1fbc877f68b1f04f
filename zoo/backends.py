"""Inference backends: one run answered by ONNX Runtime or by PyTorch, chosen explicitly.

    backend = zoo.load_backend("weights/RUN", "onnx")   # or "onnx-int8", "torch"; a folder or a Hub repo id
    backend.name                 # what answers: "onnx", "onnx-int8" or "torch"
    backend.fallback_reason      # why not the backend asked for (None when it is)
    logits, features = backend.predict(x)  # (B, C, H, W) [, metadata (B, F)] -> (B, K), (B, D) or None
    backend.features_reason      # why `features` is None (a model.onnx exported before it had that output)
    logits, features, feature_map = backend.predict_with_map(x)  # and the last feature map (B, D, h, w) or None
    backend.cam_head             # zoo.onnx_cam.CamHead: Grad-CAM from feature_map with numpy, or None:
    backend.cam_reason           #   why heatmaps come from PyTorch's Grad-CAM instead
    backend.torch_model()        # the PyTorch model, built on first call (only a fallback's Grad-CAM needs it)

`features` are zoo.trust.features_and_logits' pooled backbone features, which the OOD check compares: both
backends give them from the same single pass as the logits. A model.onnx exported before the `features`
output existed still answers, with features None and `features_reason` saying to re-export it; the caller
then shows "no OOD check" with that reason rather than running PyTorch a second time for the features.

"onnx" uses the run's model.onnx when it passes zoo.onnx_file.check_onnx_file and was verified against
exactly these weights. Only a verification the zoo recorded itself counts (zoo.onnx_info.verification_record:
its own cache, keyed by the sha256 of both the ONNX file and the weights, written by an export or a
quantization here or by an earlier verification); what the folder says about itself (onnx.json, which anyone
who can change model.onnx can rewrite too) never does. Any other file (a run folder's, a Hub snapshot's, an int8
file) is verified now against the PyTorch model on reference inputs, and the result is remembered. A run
without model.onnx gets one exported and verified once into the zoo's cache (ZOO_CACHE/onnx/...), never into
the run folder. "onnx-int8" uses model.int8.onnx (zoo.onnx_int8.quantize_int8 writes it only when it keeps
>= 99% top-1 agreement on the run's test split; on first use here its top-1 class is checked against PyTorch's),
else the fp32 file. Whatever fails (onnxruntime not installed, an invalid or mismatched file, a failed
verification) falls back to PyTorch, and `fallback_reason` says why: never a wrong answer. Each call's outputs
are checked too (their shapes; predict's caller checks that they are finite).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import _hub
from ._builder import resolve_data_config_from_cfg
from ._errors import ZooError
from ._hub import WEIGHTS_NAME, load_pretrained, read_config, resolve_folder
from .archs.metadata import MetadataSchema
from .assets import file_sha256
from .onnx_export import export_onnx
from .onnx_file import check_onnx_file
from .onnx_cam import CAM_FALLBACKS, CamHead, read_head_weights
from .onnx_info import remember_verification, verification_record
from .onnx_io import (DEFAULT_THREADS, FEATURE_MAP_NAME, FEATURES_NAME, INPUT_NAME, METADATA_NAME, OUTPUT_NAME, OnnxIO,
                      has_features_output, has_output, onnx_session, require_onnx_runtime)
from .onnx_verify import reference_inputs, verify_int8_onnx, verify_onnx
from .run_layout import ONNX_INFO_NAME, ONNX_INT8_NAME, ONNX_NAME
from .trust import features_and_logits

__all__ = ["BACKENDS", "Backend", "TorchBackend", "OnnxBackend", "check_backend", "load_backend"]

BACKENDS = ("onnx", "onnx-int8", "torch")
_CACHE_LAYOUT = "f"  # in the cache entry's name: exports since the `features` output (older entries lack it)


def check_backend(name: str) -> str:
    """`name` if it is a backend (e.g. the value of an app's setting); a ZooError listing them otherwise."""
    if name not in BACKENDS:
        raise ZooError(f"unknown inference backend {name!r}; choose one of {', '.join(BACKENDS)}.")
    return name


class Backend:
    """One run's model behind `predict`; subclasses say how it runs."""

    name: str = ""
    features_reason: str | None = None  # why predict gives no features (None when it does)

    def __init__(self, folder: Path, config: dict, requested: str, fallback_reason: str | None,
                 model: nn.Module | None = None, loader: Callable[[], nn.Module] | None = None):
        self.folder, self.config, self.requested, self.fallback_reason = folder, config, requested, fallback_reason
        self._model, self._model_lock = model, threading.Lock()
        self._loader = loader or (lambda: load_pretrained(folder))  # builds the PyTorch model when first needed
        self.io = OnnxIO.from_config(config)
        args = config.get("model_args") or {}
        self.metadata_schema = (MetadataSchema.from_dict(args.get("metadata_schema"))
                                if self.io.metadata_features is not None else None)
        self.label_names = [str(n) for n in config.get("label_names") or range(config["num_classes"])]
        # the same dict zoo.resolve_data_config gives for the loaded model: the app's preprocessing is identical
        self.data_config = resolve_data_config_from_cfg(config.get("pretrained_cfg") or {}, config.get("zoo"))

    def predict(self, x: torch.Tensor, metadata: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, C, H, W) [and (B, F) metadata for a metadata head] -> float32 logits (B, K) and image features
        (B, D), or None with `features_reason` set."""
        raise NotImplementedError

    def predict_with_map(self, x: torch.Tensor, metadata: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray | None]:
        """predict's (logits, features) and, where the closed-form Grad-CAM can use it, the last feature map
        (B, D, h, w) of the same pass (None otherwise)."""
        logits, features = self.predict(x, metadata)
        return logits, features, None

    @property
    def cam_head(self) -> CamHead | None:
        """The closed-form head Grad-CAM can use with predict_with_map's map; None: see cam_reason."""
        return None

    @property
    def cam_head_loaded(self) -> bool:
        """Whether cam_head's weights are read already (the first heatmap reads them: loading, not Grad-CAM)."""
        return False

    @property
    def cam_layer(self) -> str | None:
        """The layer whose map cam_head's Grad-CAM weighs (None without cam_head)."""
        return None

    @property
    def cam_reason(self) -> str | None:
        """Why heatmaps come from PyTorch's Grad-CAM (None when cam_head gives them)."""
        return f"answered by PyTorch ({self.fallback_reason})" if self.fallback_reason else "answered by PyTorch"

    @property
    def feature_width(self) -> int | None:
        """D of the features predict gives, None when it gives none."""
        raise NotImplementedError

    def torch_model(self) -> nn.Module:
        """The run's PyTorch model (eval mode), loaded on the first call only."""
        with self._model_lock:
            if self._model is None:
                self._model = self._loader()
            return self._model

    @property
    def torch_loaded(self) -> bool:
        return self._model is not None

    @property
    def nbytes(self) -> int:
        """Memory held: the backend's weights, plus the PyTorch model's once it is loaded."""
        if self._model is None:
            return 0
        tensors = list(self._model.parameters()) + list(self._model.buffers())
        return sum(t.numel() * t.element_size() for t in tensors)

    @property
    def description(self) -> str:
        """What answers, for display (e.g. a column of the app)."""
        raise NotImplementedError

    def _metadata(self, x: torch.Tensor, metadata: torch.Tensor | None) -> torch.Tensor | None:
        if self.metadata_schema is None:
            return None
        if metadata is None:  # as the PyTorch head does: every field unknown
            return self.metadata_schema.encode([{}] * x.shape[0])
        return metadata


class TorchBackend(Backend):
    """PyTorch eager, fp32."""

    name = "torch"

    def predict(self, x: torch.Tensor, metadata: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.torch_model()
        with torch.inference_mode():
            features, logits = features_and_logits(model, x, self._metadata(x, metadata))  # (B, D), (B, K)
        return logits.float(), features.float()

    @property
    def feature_width(self) -> int:
        return int(self.torch_model().num_features)

    @property
    def description(self) -> str:
        return f"PyTorch {torch.__version__.split('+')[0]}" + (
            f" (ONNX Runtime not used: {self.fallback_reason})" if self.fallback_reason else "")


class OnnxBackend(Backend):
    """ONNX Runtime on the CPU, from a checked and verified ONNX file."""

    def __init__(self, folder: Path, config: dict, requested: str, fallback_reason: str | None,
                 model: nn.Module | None, path: Path, data: bytes, info: dict[str, Any], threads: int,
                 loader: Callable[[], nn.Module] | None = None):
        super().__init__(folder, config, requested, fallback_reason, model, loader)
        self.path, self.info = path, info
        self.name = "onnx-int8" if path.name == ONNX_INT8_NAME else "onnx"
        self.session = onnx_session(data, threads)
        self.onnx_bytes = len(data)  # the initializers dominate; ONNX Runtime holds about this much
        if has_features_output(self.session):
            self._outputs = [OUTPUT_NAME, FEATURES_NAME]
        else:
            self._outputs = [OUTPUT_NAME]
            self.features_reason = (f"no OOD check on ONNX for this file ({path.name}, exported before it gave image "
                                    f"features): re-export it with python -m zoo export RUN")
        self._cam_record, self._cam_reason = self._cam_plan()
        self._cam_head: CamHead | None = None
        self._cam_head_lock = threading.Lock()

    def _cam_plan(self) -> tuple[dict[str, Any] | None, str | None]:
        """(the verified closed-form Grad-CAM record, None) or (None, why heatmaps come from PyTorch)."""
        if self.name == "onnx-int8":
            return None, CAM_FALLBACKS["int8"]
        if not has_output(self.session, FEATURE_MAP_NAME):
            return None, CAM_FALLBACKS["exported_before"]
        record = (self.info.get("verification") or {}).get("cam")
        if not isinstance(record, dict):
            return None, CAM_FALLBACKS["verified_before"]
        if record.get("form") is None:
            return None, str(record.get("reason") or "no closed form")
        return record, None

    @property
    def cam_reason(self) -> str | None:
        return self._cam_reason

    @property
    def cam_layer(self) -> str | None:
        return None if self._cam_record is None else str(self._cam_record.get("layer"))

    @property
    def cam_head_loaded(self) -> bool:
        return self._cam_head is not None

    @property
    def cam_head(self) -> CamHead | None:
        """Read on first use from the file's own initializers (the bytes checked against the verified sha256)."""
        if self._cam_record is None:
            return None
        with self._cam_head_lock:
            if self._cam_head is None:
                import onnx  # noqa: PLC0415

                data = self.path.read_bytes()
                if hashlib.sha256(data).hexdigest() != self.info.get("sha256"):
                    raise ZooError(f"{self.path} changed since it was verified; reload the model (or re-export it).")
                self._cam_head = read_head_weights(onnx.load_from_string(data), self._cam_record)
            return self._cam_head

    @property
    def feature_width(self) -> int | None:
        if len(self._outputs) == 1:
            return None
        return int(self.session.get_outputs()[1].shape[1])

    def predict(self, x: torch.Tensor | np.ndarray, metadata: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits, features, _ = self._run(x, metadata, with_map=False)
        return logits, features

    def predict_with_map(self, x: torch.Tensor | np.ndarray, metadata: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray | None]:
        return self._run(x, metadata, with_map=self._cam_record is not None)

    def _run(self, x: torch.Tensor | np.ndarray, metadata: torch.Tensor | None, with_map: bool
             ) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray | None]:
        shape = tuple(x.shape)
        if len(shape) != 4 or shape[1:] != self.io.input_size:
            raise ZooError(f"{self.folder.name}'s ONNX model takes (batch, {', '.join(map(str, self.io.input_size))}) "
                           f"input, got {shape}; preprocess the image with the model's data config.")
        feeds = {INPUT_NAME: np.ascontiguousarray(np.asarray(x, dtype=np.float32))}
        meta = self._metadata(x, metadata)
        if meta is not None:
            if tuple(meta.shape) != (shape[0], self.io.metadata_features):
                raise ZooError(f"metadata tensor has shape {tuple(meta.shape)}, expected ({shape[0]}, "
                               f"{self.io.metadata_features}); make it with the model's MetadataSchema.encode.")
            feeds[METADATA_NAME] = np.ascontiguousarray(np.asarray(meta, dtype=np.float32))
        outputs = self._outputs + ([FEATURE_MAP_NAME] if with_map else [])
        logits, *rest = self.session.run(outputs, feeds)  # (B, K) [, (B, D)] [, (B, D, h, w)]
        feature_map = rest.pop() if with_map else None
        self._check_outputs(shape[0], logits, rest[0] if rest else None)
        if feature_map is not None and (feature_map.ndim != 4 or feature_map.shape[0] != shape[0]):
            raise ZooError(f"{self.folder.name}'s {self.path.name} gave a feature map of shape {feature_map.shape}, "
                           f"not ({shape[0]}, D, h, w); re-export it with python -m zoo export RUN.")
        return torch.from_numpy(logits), torch.from_numpy(rest[0]) if rest else None, feature_map

    def _check_outputs(self, batch: int, logits: np.ndarray, features: np.ndarray | None) -> None:
        """The shapes the run's config.json and the verified graph promise, on every call: a file is checked once,
        but what ONNX Runtime gives is what the labels, the temperature and the OOD bank are applied to."""
        problems = []
        if logits.shape != (batch, self.io.num_classes):
            problems.append(f"logits of shape {logits.shape}, not ({batch}, {self.io.num_classes})")
        width = self.feature_width
        if features is not None and (features.ndim != 2 or features.shape[0] != batch
                                     or (width is not None and features.shape[1] != width)):
            problems.append(f"features of shape {features.shape}, not ({batch}, {width})")
        if problems:
            raise ZooError(f"{self.folder.name}'s {self.path.name} gave {' and '.join(problems)} (config.json: "
                           f"{self.io.num_classes} classes); the file does not fit this run: re-export it with "
                           f"python -m zoo export RUN, or delete it to use the PyTorch weights.")

    @property
    def nbytes(self) -> int:
        return self.onnx_bytes + super().nbytes

    @property
    def description(self) -> str:
        import onnxruntime  # noqa: PLC0415

        v = self.info.get("verification") or {}
        if "max_abs_diff" in v:
            figure = f"max |Δ logit| {v['max_abs_diff']:.1g} vs PyTorch on {v.get('inputs')} inputs"
        elif "top1_agreement_with_pytorch" in v:  # an int8 file verified here on first use
            figure = f"top-1 agreement with PyTorch {v['top1_agreement_with_pytorch']:.1%} on {v.get('inputs')} inputs"
        else:
            figure = f"top-1 agreement with fp32 {v.get('top1_agreement_with_fp32', 0):.1%} on {v.get('inputs')} inputs"
        precision = "int8" if self.name == "onnx-int8" else "fp32"
        note = "".join(f"; {r}" for r in (self.fallback_reason, self.features_reason) if r)
        return f"ONNX Runtime {onnxruntime.__version__} ({precision}, {figure}{note})"


def load_backend(source: str | os.PathLike, backend: str = "onnx", *, revision: str | None = None,
                 threads: int = DEFAULT_THREADS, model: nn.Module | None = None,
                 export_missing: bool = True) -> Backend:
    """The run at `source` (a run folder or a Hub repo id) behind the `backend` asked for, or PyTorch with
    `fallback_reason` set when that backend cannot answer correctly.

    `threads`: ONNX Runtime's intra-op threads. `model`: the run's PyTorch model if already loaded (used for
    a verification or the fallback instead of loading it again). `export_missing`: export a run without
    model.onnx into the zoo's cache (once). A source that is not a loadable run raises ZooError.
    """
    check_backend(backend)
    optional = () if backend == "torch" else (ONNX_NAME, ONNX_INT8_NAME, ONNX_INFO_NAME)
    folder = resolve_folder(source, revision, optional_files=optional)
    local = Path(source).is_dir()
    config = read_config(folder)  # a Hub snapshot's links are followed up to its repo's cache folder only

    def loader() -> nn.Module:  # the PyTorch model of exactly these files (a Hub repo at the snapshot's commit)
        return load_pretrained(folder) if local else load_pretrained(str(source), revision=folder.name)

    state = {"model": model, "load": loader}
    if backend == "torch":
        return TorchBackend(folder, config, backend, None, model or loader(), loader)
    reasons: list[str] = []
    for name in ((ONNX_INT8_NAME, ONNX_NAME) if backend == "onnx-int8" else (ONNX_NAME,)):
        try:
            return _onnx_backend(folder, config, backend, name, threads, state, export_missing, reasons)
        except ZooError as e:
            reasons.append(str(e))
        except Exception as e:  # onnx / onnxruntime's own errors must not take the caller down
            reasons.append(f"ONNX Runtime failed on {name} ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
    return TorchBackend(folder, config, backend, "; ".join(reasons), state["model"] or loader(), loader)


def _onnx_backend(folder: Path, config: dict, requested: str, name: str, threads: int, state: dict,
                  export_missing: bool, reasons: list[str]) -> OnnxBackend:
    require_onnx_runtime()
    weights_sha = file_sha256(folder / WEIGHTS_NAME) if (folder / WEIGHTS_NAME).is_file() else None
    path = folder / name
    if not path.is_file():
        if name == ONNX_INT8_NAME:
            raise ZooError(f"{folder.name} has no {ONNX_INT8_NAME} (python -m zoo quantize RUN --images DIR makes one "
                           "where int8 keeps the top-1 class)")
        if not export_missing or weights_sha is None:
            raise ZooError(f"{folder.name} has no {ONNX_NAME} (python -m zoo export RUN makes one)")
        path = _cached_export(folder, config, weights_sha, state)
    data = check_onnx_file(path, config)
    digest = hashlib.sha256(data).hexdigest()
    # the zoo's own record only: onnx.json beside the file is the folder's word about itself
    info = verification_record(digest, weights_sha) or _verify_now(folder, path, data, state, threads, digest,
                                                                     weights_sha)
    reason = "; ".join(reasons) or None
    return OnnxBackend(folder, config, requested, reason, None, path, data, info, threads, state["load"])


def _cache_dir() -> Path:
    return Path(_hub.CACHE_DIR) / "onnx"  # read at call time: tests and ZOO_CACHE point it elsewhere


def _cached_export(folder: Path, config: dict, weights_sha: str, state: dict) -> Path:
    """model.onnx for a run folder without one, exported and verified once into the zoo's cache."""
    config_digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    target = _cache_dir() / f"{weights_sha[:32]}-{config_digest[:12]}-{_CACHE_LAYOUT}" / ONNX_NAME
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        model = state["model"] = state["model"] or state["load"]()
        export_onnx(model, target, weights=folder / WEIGHTS_NAME, update_card=False)
    return target


def _verify_now(folder: Path, path: Path, data: bytes, state: dict, threads: int, digest: str,
                weights_sha: str | None) -> dict[str, Any]:
    """Verify an ONNX file the zoo holds no record of against the PyTorch model of these weights (an int8 file:
    its top-1 class); remember the result in the zoo's cache."""
    model = state["model"] = state["model"] or state["load"]()
    inputs, metadata = reference_inputs(model)
    int8 = path.name == ONNX_INT8_NAME
    try:
        figures = (verify_int8_onnx if int8 else verify_onnx)(model, data, inputs, metadata, threads=threads)
    except ZooError as e:
        again = f"python -m zoo quantize {folder} --images DIR" if int8 else f"python -m zoo export {folder}"
        raise ZooError(f"{path.name} of {folder.name} was refused: {e} It does not belong to these weights "
                       f"(whatever its {ONNX_INFO_NAME} says); make it again with `{again}` or delete it") from None
    record = {"sha256": digest, "weights_sha256": weights_sha,
              "verification": {**figures, "inputs_source": "reference inputs, when loaded"}}
    remember_verification(record)
    return record
