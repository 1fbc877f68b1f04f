"""Several models judge one image: each model's column (its answer, trust checks and Grad-CAM, or the error that
stopped it), written without any UI code so that it can be tested and used on its own::

    from zoo.catalog import discover_models
    from zoo.images import load_image
    from zoo import inference

    entries = discover_models("weights")
    cache = inference.ModelCache(max_models=8)
    results = inference.run_models(load_image("scan.dcm").image, entries[:3], cache)
    [r.record() for r in results]  # one JSON-ready dict per model

The pieces live in their own modules and are re-exported here: loading and caching (zoo.model_cache),
preprocessing and prediction (zoo.prediction), Grad-CAM (zoo.gradcam). What the comparison app makes of the
columns (how many models, where they agree) is the app's policy: ui/comparison.py.

Each record says which backend answered (``backend``, ``backend_note``); the trust checks (zoo.trust:
temperature, prediction set, OOD) are the same on either.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from ._errors import ZooError
from .catalog import ModelEntry
from .eval_transform import eval_transform as build_transform  # its name here since the app began
from .gradcam import CAM_DISPLAY_SIZE, cam_overlay, grad_cam, heatmap, onnx_cam_ready
from .model_cache import DEFAULT_BACKEND, LoadedModel, ModelCache, import_cam_library, load_model
from .model_facts import ModelFacts
from .prediction import (DEFAULT_TOP_K, MAX_AGE, Prediction, SharedImage, encode_metadata, model_input_image,
                         model_view, predict, predict_batch, preprocess)

__all__ = [
    "CAM_DISPLAY_SIZE", "DEFAULT_TOP_K", "DEFAULT_BACKEND", "MAX_AGE", "LoadedModel", "load_model", "ModelCache",
    "Prediction", "ModelResult", "SharedImage", "build_transform", "preprocess", "encode_metadata", "predict",
    "grad_cam", "heatmap", "cam_overlay", "model_view", "model_input_image", "run_model", "run_models",
    "ProgressCallback", "answers_of", "predict_batch",
]

ProgressCallback = Callable[[int, int, str], None]
"""progress(done, total, what): `done` of `total` models finished, `what` the step starting now."""


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
    heatmap_source: str | None = None  # "onnx" (closed form on the ONNX feature map) or "torch (<why>)"
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
    facts: ModelFacts | None = None               # intended use, training data, evaluation, ... (zoo.model_facts)

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
            "heatmap_source": self.heatmap_source,
            "cam_error": self.cam_error, "error": self.error,
            "calibrated_top_k": None if self.calibrated_top_k is None else
            [{"label": label, "probability": round(p, 6)} for label, p in self.calibrated_top_k],
            "temperature": self.temperature, "prediction_set": self.prediction_set,
            "prediction_set_coverage": self.prediction_set_coverage, "ood": self.ood, "ood_reason": self.ood_reason,
            "trust_notes": list(self.trust_notes), "test_ece": self.test_ece,
        }



def _result_for(entry: ModelEntry) -> ModelResult:
    total, trainable = entry.params
    return ModelResult(model=entry.id, architecture=entry.architecture, mode=entry.mode, head=entry.head,
                       dataset=entry.dataset, source=entry.source, label_names=entry.label_names,
                       params_total=total, params_trainable=trainable, test_metrics=entry.test_metrics,
                       facts=entry.facts)


def run_model(entry: ModelEntry, image: Image.Image | SharedImage, cache: ModelCache,
              metadata: Mapping[str, Any] | None = None, top_k: int = DEFAULT_TOP_K, cam: bool = True,
              on_load: Callable[[ModelEntry], None] | None = None) -> ModelResult:
    """One model's column: load (cached), predict, Grad-CAM. Errors end up in the result, never raised."""
    result = _result_for(entry)
    try:
        was_loaded = cache.is_loaded(entry)
        loaded = cache.get(entry, on_load=on_load)
        if not was_loaded:
            result.load_ms = loaded.load_s * 1000.0
        _describe_loaded(result, loaded)
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
            # a model's first heatmap reads the head's weights from the ONNX file and imports the CAM library, or
            # (a fallback) builds the PyTorch model: loading, not Grad-CAM
            first = not (loaded.backend.cam_head_loaded or loaded.cam_ready)
            if onnx_cam_ready(loaded, prediction):
                import_cam_library()  # the overlay's colours
            elif not loaded.cam_ready:
                loaded.cam_target()
            if first:
                result.load_ms = (result.load_ms or 0.0) + (time.perf_counter() - start) * 1000.0
                start = time.perf_counter()
            cam = heatmap(loaded, prediction)
            result.cam_layer, result.heatmap_source = cam.layer, cam.source_note
            result.heatmap = cam_overlay(loaded, prediction, cam.mask)
            if not cam.mask.any():
                result.cam_note = (f"Grad-CAM found no region with positive evidence for `{prediction.top_k[0][0]}` "
                                   f"at layer {cam.layer}: the map is empty.")
        except Exception as e:  # the prediction stands even if its explanation fails
            result.cam_error = f"Grad-CAM failed for {entry.id} ({type(e).__name__}: {e})."
        result.cam_ms = (time.perf_counter() - start) * 1000.0
    return result


def answers_of(entry: ModelEntry, loaded: LoadedModel, predictions: Sequence[Prediction]) -> list[ModelResult]:
    """Each prediction's result (its answer and trust checks, without Grad-CAM), for predictions of `loaded` (the
    model `entry` names) made another way than run_model (zoo.prediction.predict_batch): the model's description is
    read once. A prediction whose outputs the trust step refuses gets a result with the error instead."""
    base = _result_for(entry)
    _describe_loaded(base, loaded)
    results = []
    for prediction in predictions:
        result = replace(base, trust_notes=[])  # the entry's and the model's description, shared read-only
        try:
            _add_trust(result, loaded, prediction, len(prediction.top_k))
        except ZooError as e:
            _clear_answer(result)
            result.error = str(e)
        else:
            result.top_k, result.latency_ms = prediction.top_k, prediction.latency_ms
        results.append(result)
    return results


def _describe_loaded(result: ModelResult, loaded: LoadedModel) -> None:
    """What the loaded model says about itself: its labels, parameters and backend."""
    result.label_names = loaded.label_names
    result.params_total, result.params_trainable = loaded.params
    result.backend, result.backend_note = loaded.backend.name, loaded.backend.description


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


def run_models(image: Image.Image | SharedImage, entries: Sequence[ModelEntry], cache: ModelCache,
               metadata: Mapping[str, Any] | None = None, top_k: int = DEFAULT_TOP_K, cam: bool = True,
               on_load: Callable[[ModelEntry], None] | None = None,
               progress: ProgressCallback | None = None) -> list[ModelResult]:
    """Every entry's column for one image, in order (run_model: a model that fails reports its error while the
    others answer). The image is shared (SharedImage): each distinct resize among the models is done once.

    `progress`, if given, is told before each model's step ("<id>: predicting", or "Loading <id>
    (first use)…" when it is not cached yet) and once at the end.
    """
    shared = image if isinstance(image, SharedImage) else SharedImage(image)
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
        results.append(run_model(entry, shared, cache, metadata, top_k, cam, loading))
    if progress is not None:
        progress(total, total, "done")
    return results
