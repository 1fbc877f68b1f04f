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
- **OOD statistics** (``ood.safetensors`` in the run folder): the L2-normalised image features of the
  training images, "Out-of-Distribution Detection with Deep Nearest Neighbors" (Sun et al., 2022). An
  image's score is 1 - its cosine similarity to the nearest training image (0 = a training image's
  twin, up to 2); it is flagged when the score exceeds the stored threshold, which 95% of the
  validation images pass. The features are the backbone's output (``forward_features``), globally
  average-pooled: what the classifier head reads, and for most timm models exactly the penultimate
  (pre-logit) features. Why these and why nearest neighbours: see train/trust.py's fit_ood.

A model without these (trained before they existed, or imported without its data) loads and works; its
`Trust` says which pieces are missing and why. A run folder may say why itself: ``{"skipped": reason}`` in
place of the zoo block's ``calibration`` or ``conformal`` object (zoo/keras_import.py does, for models that
come with too few images to fit them), and ``ood.note`` for what a reader must know about its OOD check. Statistics
that are present but unusable (a temperature outside TEMPERATURE_RANGE, a threshold outside its range, NaN/inf
values, a shape that does not fit the model) are refused with a ZooError naming the file. `read_trust` is the one
validation: the server's comparison and private mode's offer (ui/private.py) both go through it.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
import torch.nn.functional as F
from torch import nn

from ._errors import ZooError
from .fileio import check_file_size, read_safetensors
from .run_layout import CONFIG_NAME, OOD_NAME

__all__ = ["OOD_NAME", "OOD_METHOD", "OOD_PASS_RATE", "DEFAULT_ALPHA", "TEMPERATURE_RANGE", "OODStatistics",
           "Conformal", "Trust", "Assessment", "features_and_logits", "feature_size", "leave_one_out_scores",
           "read_trust", "write_ood_statistics"]

OOD_METHOD = "knn-cosine"
OOD_FORMAT = "1"
OOD_PASS_RATE = 0.95   # the OOD threshold lets this share of the in-distribution images it is set on pass
DEFAULT_ALPHA = 0.1
_OOD_TENSORS = ("bank", "threshold")
# A temperature outside this range is a damaged or forged file, not a calibration: train/trust.py's fit searches
# exactly this range (its TEMPERATURE_BOUNDS), below 0.05 softmax(logits / T) is one-hot for any logits a
# classifier gives (1e-300 overflows to NaN probabilities), above 20 it is near-uniform (1e300: exactly uniform).
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
class OODStatistics:
    """L2-normalised features of training images (N, D) and the score threshold."""

    bank: torch.Tensor = field(repr=False)   # (N, D) float32, rows of unit length
    threshold: float
    method: str = OOD_METHOD
    file: str = OOD_NAME

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """1 - cosine similarity to the nearest training image: (B, D) -> (B,), in [0, 2]."""
        f = F.normalize(features.detach().float().reshape(len(features), -1), dim=1)  # (B, D)
        nearest = torch.zeros(len(f))
        for start in range(0, len(f), 256):  # (256, N) similarities at a time
            nearest[start:start + 256] = (f[start:start + 256] @ self.bank.T).max(dim=1).values
        return (1.0 - nearest).clamp_min(0.0)

    def check(self, features: torch.Tensor) -> list[dict[str, Any]]:
        """{"score", "threshold", "flagged"} per image of a (B, D) batch."""
        return [{"score": float(s), "threshold": self.threshold, "flagged": bool(s > self.threshold)}
                for s in self.scores(features).tolist()]


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


def _read_ood(folder: Path, size: int | None) -> tuple[OODStatistics | None, str | None]:
    path = folder / OOD_NAME
    if not path.is_file():
        return None, (f"no OOD statistics: {folder} has no {OOD_NAME} (a run trained before the OOD check, "
                      "or a model imported without its training data), so this model cannot tell when "
                      "an image is unlike its training images")
    check_file_size(path)  # before the bank is read into memory
    tensors = read_safetensors(path)
    missing = [k for k in _OOD_TENSORS if k not in tensors]
    if missing:
        raise ZooError(f"{path} lacks tensor(s) {missing}; an OOD statistics file holds {list(_OOD_TENSORS)}. "
                       "Retrain, or delete the file to load the model without an OOD check.")
    for name in _OOD_TENSORS:
        if not torch.isfinite(tensors[name]).all():
            raise ZooError(f"{path}: tensor {name!r} has non-finite values (NaN/inf); the statistics are "
                           "unusable. Retrain, or delete the file to load the model without an OOD check.")
    bank, threshold = tensors["bank"], tensors["threshold"]
    if bank.ndim != 2 or bank.shape[0] < 1 or (size is not None and bank.shape[1] != size):
        raise ZooError(f"{path}: bank has shape {tuple(bank.shape)}, but this model's image features have "
                       f"{size} values (expected (N, {size})); the file belongs to another model. Delete it "
                       "or retrain.")
    norms = bank.float().norm(dim=1)
    if not torch.allclose(norms, torch.ones_like(norms), atol=1e-3):
        raise ZooError(f"{path}: bank rows must have unit length (L2-normalised features); found norms from "
                       f"{float(norms.min()):.4g} to {float(norms.max()):.4g}. Retrain, or delete the file.")
    if threshold.numel() != 1 or not 0 < float(threshold) <= 2:
        raise ZooError(f"{path}: threshold must be one number in (0, 2] (a cosine distance), got "
                       f"{threshold.tolist()}. Retrain, or delete the file.")
    stats = OODStatistics(bank=bank.float(), threshold=float(threshold), file=str(path))
    return stats, None


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
    ood, ood_reason = _read_ood(folder, model if model is None or isinstance(model, int) else feature_size(model))
    figures = zoo_cfg.get("calibration")
    ood_block = zoo_cfg.get("ood")
    note = ood_block.get("note") if isinstance(ood_block, dict) and ood is not None else None
    return Trust(temperature=temperature, conformal=conformal, ood=ood,
                 calibration_reason=calibration_reason, conformal_reason=conformal_reason,
                 ood_reason=ood_reason, ood_note=note if isinstance(note, str) else None,
                 test_figures=figures if isinstance(figures, dict) and not _skipped(figures) else None)


def leave_one_out_scores(features: torch.Tensor) -> torch.Tensor:
    """Each image's OOD score against the others: 1 - cosine similarity to its nearest OTHER image, (N, D) -> (N,).

    For a model that comes with too few images for a separate threshold split: these are the scores the
    images would get if each were new, so a threshold on them is less optimistic than one on scores of 0
    (an image is its own nearest neighbour in the bank). N x N similarities: meant for small N.
    """
    f = F.normalize(features.detach().float().reshape(len(features), -1), dim=1)  # (N, D)
    if len(f) < 2:
        raise ZooError(f"leave-one-out OOD scores need at least 2 images, got {len(f)}.")
    similarity = f @ f.T  # (N, N)
    similarity.fill_diagonal_(-float("inf"))
    return (1.0 - similarity.max(dim=1).values).clamp_min(0.0)


def write_ood_statistics(folder: str | os.PathLike, bank: torch.Tensor, threshold: float) -> Path:
    """Write `ood.safetensors` (the format read_trust checks) into `folder`: bank (N, D) float32 with
    unit-length rows, threshold (1,)."""
    path = Path(folder) / OOD_NAME
    tensors = {"bank": F.normalize(bank.detach().float(), dim=1).contiguous(),
               "threshold": torch.tensor([float(threshold)], dtype=torch.float32)}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", "method": OOD_METHOD, "version": OOD_FORMAT})
    os.replace(tmp, path)
    return path
