"""How far a loaded model's answer can be trusted: calibrated probabilities, a prediction set and an
out-of-distribution (OOD) check, from what `python -m train` fitted at the end of the run (train/trust.py).

Three pieces, each optional, each validated when the model loads:

- **temperature** (config.json, zoo block): temperature scaling, "On Calibration of Modern Neural
  Networks" (Guo et al., 2017). Calibrated probabilities are softmax(logits / T); the raw logits, the
  arg-max and stock timm's view of the weights do not change.
- **conformal** (config.json, zoo block ``{"alpha", "threshold", "n_calibration"}``): split conformal
  prediction ("A Gentle Introduction to Conformal Prediction and Distribution-Free Uncertainty
  Quantification", Angelopoulos and Bates). The set holds every class whose calibrated probability p
  has 1 - p <= threshold; on exchangeable data it contains the true class with probability >= 1 - alpha.
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
values, a shape that does not fit the model) are refused with a ZooError naming the file; statistics of an OOD
method this version does not know give no OOD check, with the reason. `read_trust` is the one
validation: the server's comparison and private mode's offer (ui/private.py) both go through it.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._errors import ZooError
from .ood import (DEFAULT_OOD_METHOD, OOD_PASS_RATE, KnnCosine, OODStatistics, leave_one_out_scores,
                  read_ood_statistics, save_ood_statistics)
from .run_layout import CONFIG_NAME, OOD_NAME

__all__ = ["OOD_NAME", "DEFAULT_OOD_METHOD", "OOD_PASS_RATE", "DEFAULT_ALPHA", "TEMPERATURE_RANGE", "OODStatistics",
           "Conformal", "Trust", "Assessment", "features_and_logits", "feature_size", "leave_one_out_scores",
           "read_trust", "write_ood_statistics"]

DEFAULT_ALPHA = 0.1
# A temperature outside this range is a damaged or forged file, not a calibration: train/trust.py's fit searches
# exactly this range, below 0.05 softmax(logits / T) is one-hot for any logits a classifier gives (1e-300
# overflows to NaN probabilities), above 20 it is near-uniform (1e300: exactly uniform).
TEMPERATURE_RANGE = (0.05, 20.0)
_RANGE_SLACK = 1e-9  # a fit that stopped on a bound may land a rounding error outside it


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

@dataclass(frozen=True)
class Conformal:
    """A split-conformal threshold on the score 1 - calibrated p(class)."""

    alpha: float
    threshold: float
    n_calibration: int

    @property
    def coverage(self) -> float:
        return 1.0 - self.alpha

    def prediction_set(self, probabilities: np.ndarray | torch.Tensor) -> list[int]:
        """Class indices in the set for one image's calibrated probabilities (K,), most probable first.

        The set may be empty: then no class is plausible enough at this coverage (the guarantee
        still holds; an empty set is itself a warning).
        """
        p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
        members = np.flatnonzero(1.0 - p <= self.threshold)
        return members[np.argsort(-p[members], kind="stable")].tolist()


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

    temperature: float | None = None
    conformal: Conformal | None = None
    ood: OODStatistics | None = None
    calibration_reason: str | None = None
    conformal_reason: str | None = None
    ood_reason: str | None = None
    ood_note: str | None = None                  # what to know about the OOD check (e.g. how it was fitted)
    test_figures: dict[str, Any] | None = None   # the run's test-split calibration figures, if recorded

    def calibrated_probabilities(self, logits: torch.Tensor) -> torch.Tensor | None:
        """softmax(logits / T) over the last dimension, or None without a temperature."""
        if self.temperature is None:
            return None
        probabilities = (logits.detach().float() / self.temperature).softmax(dim=-1)
        if not bool(torch.isfinite(probabilities).all()):
            raise ZooError(f"the temperature-scaled probabilities (T = {self.temperature:g}) are not finite, so "
                           "this model has no calibrated answer; its logits are probably damaged: retrain it.")
        return probabilities

    def assess(self, logits: torch.Tensor, features: torch.Tensor | None) -> Assessment:
        """The calibrated probabilities, prediction set and OOD check for one image: logits (1, K) or (K,),
        features (1, D) or (D,); without features (a backend that gives none) no OOD check, nor with
        non-finite ones (a NaN is no distance: it must never pass as in-distribution)."""
        calibrated = self.calibrated_probabilities(logits.reshape(-1))
        probs = calibrated.numpy() if calibrated is not None else None
        members = (self.conformal.prediction_set(probs)
                   if self.conformal is not None and probs is not None else None)
        if self.ood is None or features is None:
            return Assessment(calibrated=probs, prediction_set=members, ood=None)
        if not bool(torch.isfinite(features).all()):
            return Assessment(calibrated=probs, prediction_set=members, ood=None,
                              ood_reason="no OOD check: features not finite (the model gave NaN or infinite image "
                                         "features for this image, so nothing says it is like its training images)")
        return Assessment(calibrated=probs, prediction_set=members, ood=self.ood.check(features.reshape(1, -1))[0])


# --- reading and validating ---------------------------------------------------------------------------

def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _skipped(block: Any) -> str | None:
    """The reason of a ``{"skipped": reason}`` block, else None."""
    if isinstance(block, dict) and set(block) == {"skipped"} and isinstance(block["skipped"], str):
        return block["skipped"]
    return None


def _read_temperature(zoo_cfg: dict[str, Any], config_path: Path) -> tuple[float | None, str | None]:
    if "temperature" not in zoo_cfg or zoo_cfg["temperature"] is None:
        return None, _skipped(zoo_cfg.get("calibration")) or (
            f"no temperature in {config_path} (a run trained before calibration, or a model imported without "
            "validation data): the probabilities are the raw softmax")
    value = zoo_cfg["temperature"]
    low, high = TEMPERATURE_RANGE
    if not _finite_number(value) or not low * (1 - _RANGE_SLACK) <= value <= high * (1 + _RANGE_SLACK):
        raise ZooError(f"{config_path}: zoo.temperature is {value!r:.60}; a temperature must be a number from {low:g} "
                       f"to {high:g} (the range training fits it in). Delete the key to use raw probabilities, or "
                       "retrain to fit it again.")
    return float(value), None


def _read_conformal(zoo_cfg: dict[str, Any], config_path: Path, has_temperature: bool
                    ) -> tuple[Conformal | None, str | None]:
    block = zoo_cfg.get("conformal")
    if block is None or _skipped(block):
        return None, _skipped(block) or f"no conformal threshold in {config_path}: no prediction sets for this model"
    if not isinstance(block, dict):
        raise ZooError(f"{config_path}: zoo.conformal must be an object "
                       f'{{"alpha", "threshold", "n_calibration"}}, got {block!r}.')
    alpha, threshold, n = block.get("alpha"), block.get("threshold"), block.get("n_calibration")
    if not _finite_number(alpha) or not 0 < alpha < 1:
        raise ZooError(f"{config_path}: zoo.conformal.alpha is {alpha!r}; it must be a number in (0, 1) "
                       "(0.1 for 90% prediction sets).")
    if not _finite_number(threshold) or not 0 <= threshold <= 1:
        raise ZooError(f"{config_path}: zoo.conformal.threshold is {threshold!r}; it must be a finite number "
                       "in [0, 1] (a quantile of 1 - p(true class)). Retrain to fit it again.")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ZooError(f"{config_path}: zoo.conformal.n_calibration is {n!r}; it must be a positive integer.")
    if not has_temperature:
        # the threshold was fitted on calibrated probabilities: without T they are other numbers
        raise ZooError(f"{config_path}: zoo.conformal is set but zoo.temperature is missing; the threshold "
                       "was fitted on temperature-scaled probabilities. Restore the temperature or "
                       "delete both keys.")
    return Conformal(alpha=float(alpha), threshold=float(threshold), n_calibration=n), None


def read_trust(folder: str | os.PathLike, config: dict[str, Any], model: nn.Module | int | None) -> Trust:
    """The trust pieces of the model loaded from `folder` (whose config.json is `config`), validated.

    `model`: the loaded model, or the width D of its image features where it runs without PyTorch (an ONNX
    graph's `features` output): the OOD statistics must have that width. None: a backend that gives no
    features (the statistics are still checked, but not against a width; they cannot be used).
    """
    folder = Path(folder)
    zoo_cfg = dict(config.get("zoo") or {})
    config_path = folder / CONFIG_NAME
    temperature, calibration_reason = _read_temperature(zoo_cfg, config_path)
    conformal, conformal_reason = _read_conformal(zoo_cfg, config_path, temperature is not None)
    ood_block = zoo_cfg.get("ood")
    declared = ood_block.get("method") if isinstance(ood_block, dict) else None
    ood, ood_reason = read_ood_statistics(folder, model if model is None or isinstance(model, int)
                                          else feature_size(model), declared if isinstance(declared, str) else None)
    figures = zoo_cfg.get("calibration")
    note = ood_block.get("note") if isinstance(ood_block, dict) and ood is not None else None
    return Trust(temperature=temperature, conformal=conformal, ood=ood,
                 calibration_reason=calibration_reason, conformal_reason=conformal_reason,
                 ood_reason=ood_reason, ood_note=note if isinstance(note, str) else None,
                 test_figures=figures if isinstance(figures, dict) and not _skipped(figures) else None)


def write_ood_statistics(folder: str | os.PathLike, bank: torch.Tensor, threshold: float) -> Path:
    """Write knn-cosine statistics whose bank is exactly these features (N, D) into `folder`'s ood.safetensors
    (zoo.ood.save_ood_statistics writes those of any method)."""
    return save_ood_statistics(folder, KnnCosine.from_features(bank, threshold))
