"""How far a loaded model's answer can be trusted: calibrated probabilities, a prediction set and an
out-of-distribution (OOD) check, from what `python -m train` fitted at the end of the run (train/trust.py).

Three pieces, each optional, each validated when the model loads, each a method chosen by the name the run
folder declares (the name written is the one read back):

- **calibration** (config.json, zoo block ``calibration_method`` and its keys; zoo/calibration.py): today
  temperature scaling, "On Calibration of Modern Neural Networks" (Guo et al., 2017): softmax(logits / T); the
  raw logits, the arg-max and stock timm's view of the weights do not change.
- **prediction sets** (config.json, zoo block ``conformal`` ``{"method", "alpha", ...}``;
  zoo/prediction_sets.py): today split-conformal threshold sets ("A Gentle Introduction to Conformal
  Prediction and Distribution-Free Uncertainty Quantification", Angelopoulos and Bates). The set holds every
  class whose calibrated probability p has 1 - p <= threshold; on exchangeable data it contains the true class
  with probability >= 1 - alpha.
- **OOD statistics** (``ood.safetensors`` in the run folder): an out-of-distribution score fitted on the
  training images' features, and the threshold 95% of the validation images pass; an image scoring above it is
  flagged. Which score is the file's own choice: its metadata names a method of zoo/ood/ (knn-cosine, the
  default: 1 - cosine similarity to the nearest training image; mahalanobis: the distance to the nearest class
  mean), and zoo.ood.read_ood_statistics, the one reader of the file, applies that method. The features are the
  backbone's output (``forward_features``), globally average-pooled: what the classifier head reads, and for
  most timm models exactly the penultimate (pre-logit) features.

A model without these (trained before they existed, or imported without its data) loads and works; its
`Trust` says which pieces are missing and why. A run folder may say why itself: ``{"skipped": reason}`` in
place of the zoo block's ``calibration`` or ``conformal`` object (zoo/keras_import.py does, for models that
come with too few images to fit them), and ``ood.note`` for what a reader must know about its OOD check. Statistics
that are present but unusable (a temperature outside TEMPERATURE_RANGE, a threshold outside its range, NaN/inf
values, a shape that does not fit the model) are refused with a ZooError naming the file; a calibration,
prediction-set or OOD method this version does not know gives no such piece, with the reason. `read_trust` is the one
validation: the server's comparison and private mode's offer (ui/private.py) both go through it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .calibration import TEMPERATURE_RANGE, Calibration, TemperatureScaling, read_calibration, skipped_reason
from .ood import (DEFAULT_OOD_METHOD, OOD_PASS_RATE, KnnCosine, OODStatistics, leave_one_out_scores,
                  read_ood_statistics, save_ood_statistics)
from .prediction_sets import PredictionSets, read_prediction_sets
from .run_layout import CONFIG_NAME, OOD_NAME

__all__ = ["OOD_NAME", "DEFAULT_OOD_METHOD", "OOD_PASS_RATE", "DEFAULT_ALPHA", "TEMPERATURE_RANGE", "OODStatistics",
           "Trust", "Assessment", "features_and_logits", "feature_size", "leave_one_out_scores",
           "read_trust", "write_ood_statistics"]

DEFAULT_ALPHA = 0.1


def features_and_logits(model: nn.Module, x: torch.Tensor,
                        metadata: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(image features (B, D), logits (B, K)) in one backbone pass, through timm's interface.

    The features are forward_features' output averaged over its spatial positions (or tokens): the
    image representation the head starts from, D = model.num_features. Metadata (a metadata-fusion
    head) enters only the logits: the OOD check is about the image.
    """
    maps = model.forward_features(x)  # (B, 3, H, W) -> (B, C, h, w), (B, N, C) or (B, C)
    features = maps.mean(dim=tuple(range(2, maps.ndim))) if maps.ndim == 4 else (
        maps.mean(dim=1) if maps.ndim == 3 else maps)  # -> (B, C)
    logits = model.forward_head(maps) if metadata is None else model.forward_head(maps, metadata)  # -> (B, K)
    return features, logits


def feature_size(model: nn.Module) -> int:
    """D, the width of the image features the OOD check compares (forward_features' channels)."""
    return int(model.num_features)


# --- the pieces ---------------------------------------------------------------------------------------

@dataclass
class Assessment:
    """What the trust checks say about one image."""

    calibrated: np.ndarray | None      # (K,) softmax(logits / T), None without a temperature
    prediction_set: list[int] | None   # class indices, None without a conformal threshold
    ood: dict[str, Any] | None         # {"score", "threshold", "flagged"}, None without statistics
    ood_reason: str | None = None      # why there is no OOD check although the model has statistics


@dataclass
class Trust:
    """The trust pieces of one loaded model, each None with a reason when the run folder lacks it."""

    calibration: Calibration | None = None
    prediction_sets: PredictionSets | None = None
    ood: OODStatistics | None = None
    calibration_reason: str | None = None
    conformal_reason: str | None = None
    ood_reason: str | None = None
    ood_note: str | None = None                  # what to know about the OOD check (e.g. how it was fitted)
    test_figures: dict[str, Any] | None = None   # the run's test-split calibration figures, if recorded

    @property
    def temperature(self) -> float | None:
        """T of temperature scaling, None under any other calibration or none (the records' `temperature`)."""
        return self.calibration.temperature if isinstance(self.calibration, TemperatureScaling) else None

    @property
    def conformal(self) -> PredictionSets | None:
        """The prediction-set method (records and pages call it the conformal set)."""
        return self.prediction_sets

    def calibrated_probabilities(self, logits: torch.Tensor) -> torch.Tensor | None:
        """The calibration's probabilities over the last dimension, or None without a calibration."""
        return None if self.calibration is None else self.calibration.probabilities(logits)

    def assess(self, logits: torch.Tensor, features: torch.Tensor | None) -> Assessment:
        """The calibrated probabilities, prediction set and OOD check for one image: logits (1, K) or (K,),
        features (1, D) or (D,); without features (a backend that gives none) no OOD check, nor with
        non-finite ones (a NaN is no distance: it must never pass as in-distribution)."""
        calibrated = self.calibrated_probabilities(logits.reshape(-1))
        probs = calibrated.numpy() if calibrated is not None else None
        members = (self.prediction_sets.prediction_set(probs)
                   if self.prediction_sets is not None and probs is not None else None)
        if self.ood is None or features is None:
            return Assessment(calibrated=probs, prediction_set=members, ood=None)
        if not bool(torch.isfinite(features).all()):
            return Assessment(calibrated=probs, prediction_set=members, ood=None,
                              ood_reason="no OOD check: features not finite (the model gave NaN or infinite image "
                                         "features for this image, so nothing says it is like its training images)")
        return Assessment(calibrated=probs, prediction_set=members, ood=self.ood.check(features.reshape(1, -1))[0])


# --- reading and validating ---------------------------------------------------------------------------

def read_trust(folder: str | os.PathLike, config: dict[str, Any], model: nn.Module | int | None) -> Trust:
    """The trust pieces of the model loaded from `folder` (whose config.json is `config`), validated.

    `model`: the loaded model, or the width D of its image features where it runs without PyTorch (an ONNX
    graph's `features` output): the OOD statistics must have that width. None: a backend that gives no
    features (the statistics are still checked, but not against a width; they cannot be used).
    """
    folder = Path(folder)
    zoo_cfg = dict(config.get("zoo") or {})
    config_path = folder / CONFIG_NAME
    calibration, calibration_reason = read_calibration(zoo_cfg, config_path)
    sets, conformal_reason = read_prediction_sets(zoo_cfg, config_path, calibration is not None)
    ood_block = zoo_cfg.get("ood")
    declared = ood_block.get("method") if isinstance(ood_block, dict) else None
    ood, ood_reason = read_ood_statistics(folder, model if model is None or isinstance(model, int)
                                          else feature_size(model), declared if isinstance(declared, str) else None)
    if ood is None and skipped_reason(ood_block):  # the run folder says why it has no OOD check (an import without images)
        ood_reason = skipped_reason(ood_block)
    figures = zoo_cfg.get("calibration")
    note = ood_block.get("note") if isinstance(ood_block, dict) and ood is not None else None
    return Trust(calibration=calibration, prediction_sets=sets, ood=ood,
                 calibration_reason=calibration_reason, conformal_reason=conformal_reason,
                 ood_reason=ood_reason, ood_note=note if isinstance(note, str) else None,
                 test_figures=figures if isinstance(figures, dict) and not skipped_reason(figures) else None)


def write_ood_statistics(folder: str | os.PathLike, bank: torch.Tensor, threshold: float) -> Path:
    """Write knn-cosine statistics whose bank is exactly these features (N, D) into `folder`'s ood.safetensors
    (zoo.ood.save_ood_statistics writes those of any method)."""
    return save_ood_statistics(folder, KnnCosine.from_features(bank, threshold))
