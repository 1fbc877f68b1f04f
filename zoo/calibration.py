"""Calibration methods: how a loaded model turns its logits into probabilities it means, each chosen by the name its
run folder declares.

A method is a small class with a ``name`` (the word written into config.json's zoo block as
``calibration_method``), a reader that validates its keys of that block (``read``), the keys it writes
(``to_config``), a one-line description for people (``describe``) and ``probabilities(logits)``.
`read_calibration` is the one reader: it picks the method by the declared name and says why there is none.
A new method is one new class here and its line in CALIBRATION_METHODS (and its JavaScript twin in
web/private.js, or private mode offers the model without it).

Blocks written before ``calibration_method`` existed (format_version 1) hold a bare ``temperature``: temperature
scaling was then the only method, so a block with no name and a temperature is read as ``"temperature"``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from ._errors import ZooError

__all__ = ["CALIBRATION_METHODS", "DEFAULT_CALIBRATION", "TEMPERATURE_RANGE", "Calibration", "TemperatureScaling",
           "read_calibration", "skipped_reason"]

# A temperature outside this range is a damaged or forged file, not a calibration: train/trust.py's fit searches
# exactly this range, below 0.05 softmax(logits / T) is one-hot for any logits a classifier gives (1e-300
# overflows to NaN probabilities), above 20 it is near-uniform (1e300: exactly uniform).
TEMPERATURE_RANGE = (0.05, 20.0)
_RANGE_SLACK = 1e-9  # a fit that stopped on a bound may land a rounding error outside it


def finite_number(value: Any) -> bool:
    """A real number (not a bool) that is finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def skipped_reason(block: Any) -> str | None:
    """The reason of a ``{"skipped": reason}`` block (a run folder saying why a piece is absent), else None."""
    if isinstance(block, dict) and set(block) == {"skipped"} and isinstance(block["skipped"], str):
        return block["skipped"]
    return None


class Calibration:
    """The interface of a calibration method (see the module docstring)."""

    name: ClassVar[str]

    @classmethod
    def read(cls, zoo_cfg: dict[str, Any], config_path: Path) -> "Calibration":
        """The method's values from a run folder's zoo block; damaged values raise ZooError naming config_path."""
        raise NotImplementedError

    def to_config(self) -> dict[str, Any]:
        """The keys this method writes into config.json's zoo block (its name among them)."""
        raise NotImplementedError

    def describe(self) -> str:
        """The method and its values in a few words, for people (e.g. "temperature scaling, T = 0.761")."""
        raise NotImplementedError

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities from logits (..., K) -> (..., K); non-finite results raise ZooError."""
        raise NotImplementedError


@dataclass(frozen=True)
class TemperatureScaling(Calibration):
    """softmax(logits / T): "On Calibration of Modern Neural Networks" (Guo et al., 2017). The arg-max, the raw
    logits and stock timm's view of the weights do not change."""

    temperature: float
    name: ClassVar[str] = "temperature"

    @classmethod
    def read(cls, zoo_cfg: dict[str, Any], config_path: Path) -> "TemperatureScaling":
        value = zoo_cfg.get("temperature")
        if value is None:
            raise ZooError(f"{config_path}: zoo.calibration_method is {cls.name!r} but zoo.temperature is missing; "
                           "restore the temperature, or delete both keys to use raw probabilities.")
        low, high = TEMPERATURE_RANGE
        if not finite_number(value) or not low * (1 - _RANGE_SLACK) <= value <= high * (1 + _RANGE_SLACK):
            raise ZooError(f"{config_path}: zoo.temperature is {value!r:.60}; a temperature must be a number from "
                           f"{low:g} to {high:g} (the range training fits it in). Delete the key to use raw "
                           "probabilities, or retrain to fit it again.")
        return cls(float(value))

    def to_config(self) -> dict[str, Any]:
        return {"calibration_method": self.name, "temperature": self.temperature}

    def describe(self) -> str:
        return f"temperature scaling, T = {self.temperature:.3g}"

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        probabilities = (logits.detach().float() / self.temperature).softmax(dim=-1)
        if not bool(torch.isfinite(probabilities).all()):
            raise ZooError(f"the temperature-scaled probabilities (T = {self.temperature:g}) are not finite, so "
                           "this model has no calibrated answer; its logits are probably damaged: retrain it.")
        return probabilities


CALIBRATION_METHODS: dict[str, type[Calibration]] = {TemperatureScaling.name: TemperatureScaling}
DEFAULT_CALIBRATION = TemperatureScaling.name


def _declared_name(zoo_cfg: dict[str, Any]) -> str | None:
    name = zoo_cfg.get("calibration_method")
    if name is None and zoo_cfg.get("temperature") is not None:
        return TemperatureScaling.name  # a block from before the name was written: the one method there was
    return name


def _absent_reason(zoo_cfg: dict[str, Any], config_path: Path) -> str:
    reason = skipped_reason(zoo_cfg.get("calibration"))
    if reason:
        return reason
    written_by = ("written before the zoo versioned its files, possibly before calibration existed"
                  if zoo_cfg.get("format_version") is None else "its writer fitted none (python -m train does)")
    return f"no calibration in {config_path} ({written_by}): the probabilities are the raw softmax"


def read_calibration(zoo_cfg: dict[str, Any], config_path: Path) -> tuple[Calibration | None, str | None]:
    """(the calibration a run folder's zoo block declares, None) or (None, why there is none). A method this zoo
    does not know gives no calibration, with the reason; a known method's damaged values raise ZooError."""
    name = _declared_name(zoo_cfg)
    if name is None:
        return None, _absent_reason(zoo_cfg, config_path)
    method = CALIBRATION_METHODS.get(name) if isinstance(name, str) else None
    if method is None:
        return None, (f"{config_path} declares calibration method {name!r:.60}, which this version of the zoo does "
                      f"not know ({', '.join(CALIBRATION_METHODS)}): raw probabilities shown; upgrade the zoo")
    return method.read(zoo_cfg, config_path), None
