"""Prediction-set methods: which classes a model cannot rule out for an image, with a coverage guarantee, each
chosen by the name its run folder declares.

A method is a small class with a ``name`` (written as ``method`` in config.json's zoo ``conformal`` block), a reader
that validates that block (``read``), the block it writes (``to_config``), its ``coverage`` and
``prediction_set(probabilities)``. `read_prediction_sets` is the one reader: it picks the method by the declared
name and says why there is none. A new method is one new class here and its line in PREDICTION_SET_METHODS (and
its JavaScript twin in web/private.js, or private mode offers the model without sets).

Blocks written before ``method`` existed (format_version 1) are split-conformal threshold sets, then the only
method: a block with no name is read as ``"threshold"``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ._errors import ZooError
from .calibration import finite_number, skipped_reason

__all__ = ["DEFAULT_PREDICTION_SETS", "PREDICTION_SET_METHODS", "PredictionSets", "ThresholdSets",
           "read_prediction_sets"]


class PredictionSets:
    """The interface of a prediction-set method (see the module docstring)."""

    name: ClassVar[str]
    alpha: float

    @property
    def coverage(self) -> float:
        """The promised probability that the set holds the true class."""
        return 1.0 - self.alpha

    @classmethod
    def read(cls, block: dict[str, Any], config_path: Path) -> "PredictionSets":
        """The method's values from the zoo block's `conformal` entry; damaged values raise ZooError naming
        config_path."""
        raise NotImplementedError

    def to_config(self) -> dict[str, Any]:
        """The `conformal` entry this method writes into config.json's zoo block (its name among them)."""
        raise NotImplementedError

    def prediction_set(self, probabilities: np.ndarray | torch.Tensor) -> list[int]:
        """The class indices in the set for one image's calibrated probabilities (K,)."""
        raise NotImplementedError


@dataclass(frozen=True)
class ThresholdSets(PredictionSets):
    """Split conformal prediction with the score 1 - calibrated p(class) ("A Gentle Introduction to Conformal
    Prediction and Distribution-Free Uncertainty Quantification", Angelopoulos and Bates): the set holds every
    class with 1 - p <= threshold; on exchangeable data it holds the true class with probability >= 1 - alpha.
    Its sets are the smallest on average of the conformal methods, and may be empty: then no class is plausible
    enough at this coverage (the guarantee still holds; an empty set is itself a warning)."""

    alpha: float
    threshold: float
    n_calibration: int
    name: ClassVar[str] = "threshold"

    @classmethod
    def read(cls, block: dict[str, Any], config_path: Path) -> "ThresholdSets":
        alpha, threshold, n = block.get("alpha"), block.get("threshold"), block.get("n_calibration")
        if not finite_number(alpha) or not 0 < alpha < 1:
            raise ZooError(f"{config_path}: zoo.conformal.alpha is {alpha!r}; it must be a number in (0, 1) "
                           "(0.1 for 90% prediction sets).")
        if not finite_number(threshold) or not 0 <= threshold <= 1:
            raise ZooError(f"{config_path}: zoo.conformal.threshold is {threshold!r}; it must be a finite number "
                           "in [0, 1] (a quantile of 1 - p(true class)). Retrain to fit it again.")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ZooError(f"{config_path}: zoo.conformal.n_calibration is {n!r}; it must be a positive integer.")
        return cls(alpha=float(alpha), threshold=float(threshold), n_calibration=n)

    def to_config(self) -> dict[str, Any]:
        return {"conformal": {"method": self.name, "alpha": self.alpha, "threshold": self.threshold,
                              "n_calibration": self.n_calibration}}

    def prediction_set(self, probabilities: np.ndarray | torch.Tensor) -> list[int]:
        """Class indices in the set for one image's calibrated probabilities (K,), most probable first."""
        p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
        members = np.flatnonzero(1.0 - p <= self.threshold)
        return members[np.argsort(-p[members], kind="stable")].tolist()


PREDICTION_SET_METHODS: dict[str, type[PredictionSets]] = {ThresholdSets.name: ThresholdSets}
DEFAULT_PREDICTION_SETS = ThresholdSets.name


def read_prediction_sets(zoo_cfg: dict[str, Any], config_path: Path, calibrated: bool
                         ) -> tuple[PredictionSets | None, str | None]:
    """(the prediction-set method a zoo block declares, None) or (None, why there is none). `calibrated`: whether
    the block's calibration was read (sets are fitted on calibrated probabilities). A method this zoo does not
    know (or sets on a calibration it does not know) gives no sets, with the reason; a known method's damaged
    values, or sets without their calibration, raise ZooError."""
    block = zoo_cfg.get("conformal")
    if block is None or skipped_reason(block):
        return None, skipped_reason(block) or f"no conformal threshold in {config_path}: no prediction sets for this model"
    if not isinstance(block, dict):
        raise ZooError(f"{config_path}: zoo.conformal must be an object "
                       f'{{"method", "alpha", "threshold", "n_calibration"}}, got {block!r:.80}.')
    name = block.get("method", ThresholdSets.name)  # no name: written when threshold sets were the only method
    method = PREDICTION_SET_METHODS.get(name) if isinstance(name, str) else None
    if method is None:
        return None, (f"{config_path} declares prediction-set method {name!r:.60}, which this version of the zoo "
                      f"does not know ({', '.join(PREDICTION_SET_METHODS)}): no prediction sets; upgrade the zoo")
    sets = method.read(block, config_path)
    if not calibrated and zoo_cfg.get("calibration_method") is not None:
        return None, (f"no prediction sets: {config_path}'s sets were fitted on probabilities calibrated by a method "
                      "this version of the zoo does not know; upgrade the zoo")
    if not calibrated:
        # the sets were fitted on calibrated probabilities: without the calibration they are other numbers
        raise ZooError(f"{config_path}: zoo.conformal is set but zoo.temperature is missing; the threshold "
                       "was fitted on temperature-scaled probabilities. Restore the temperature or "
                       "delete both keys.")
    return sets, None
