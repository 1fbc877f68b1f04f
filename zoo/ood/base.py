"""The out-of-distribution (OOD) seam: what every OOD score provides, the registry that chooses one by the name a
run folder declares, and the one reader and writer of its file (``ood.safetensors``).

A method is a frozen dataclass subclassing OODStatistics, registered with @register_ood_method under its `name`.
Its file holds its own tensors plus ``threshold`` (1,), and the safetensors metadata ``{"method": name,
"version": its format version}``: the name written is the name read back. The reader validates what every
method shares (the tensors it names are there and finite, the threshold is in the method's range) and leaves the
rest (shapes, norms) to the method's `from_tensors`. A file naming a method this version does not know gives "no
OOD check" with the reason, for that model only: never a crash, and never a pass.
"""
from __future__ import annotations

import dataclasses
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import save_file

from .._errors import ZooError
from ..fileio import atomic_write, check_file_size, read_safetensors, read_safetensors_metadata
from ..run_layout import OOD_NAME

__all__ = ["DEFAULT_OOD_METHOD", "OOD_PASS_RATE", "OODStatistics", "register_ood_method", "ood_method",
           "ood_method_names", "threshold_at_pass_rate", "threshold_card_text", "read_ood_statistics", "save_ood_statistics"]

DEFAULT_OOD_METHOD = "knn-cosine"
OOD_PASS_RATE = 0.95   # the OOD threshold lets this share of the in-distribution images it is set on pass
_REGISTRY: dict[str, type[OODStatistics]] = {}


@dataclass(frozen=True)
class OODStatistics(ABC):
    """Fitted statistics of one OOD score and its threshold: an image scoring above it is flagged."""

    threshold: float
    file: str = dataclasses.field(default=OOD_NAME, kw_only=True)

    name: ClassVar[str]                     # the registry key, written into the file's metadata
    version: ClassVar[str]                  # the file format of this method; another version is refused
    tensor_names: ClassVar[tuple[str, ...]]  # what the file holds besides "threshold"
    threshold_range: ClassVar[tuple[float, float]]  # (low, high]: a threshold outside is a damaged file
    summary: ClassVar[str]                  # the score in one line (metrics.json's "score")
    # one Python statement, numpy only, that sets `score` (a float) from `ood` (the file's arrays by name) and
    # `features` (the image's (D,) float32 features): the model card's ONNX Runtime snippet runs it
    numpy_score: ClassVar[str]

    @classmethod
    @abstractmethod
    def fit(cls, features: torch.Tensor, labels: np.ndarray, seed: int = 0) -> OODStatistics:
        """Statistics of in-distribution image features (N, D) with their labels (N,); threshold +inf until
        set (with_threshold) from held-out scores."""

    @abstractmethod
    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """The OOD score of each image: features (B, D) -> (B,), higher = more unlike the fitted images."""

    @abstractmethod
    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors the file holds (tensor_names), contiguous float32."""

    @classmethod
    @abstractmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], threshold: float, path: Path,
                     width: int | None) -> OODStatistics:
        """Statistics from a file's (finite) tensors, checked against the model's feature width; a ZooError
        naming `path` when they do not fit."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """metrics.json's figures of the fitted statistics (feature_size and the method's own sizes)."""

    @abstractmethod
    def browser_arrays(self) -> dict[str, np.ndarray]:
        """What private mode's page needs to compute the same score (web/private.js), as float32 arrays."""

    @classmethod
    @abstractmethod
    def card_text(cls, ood: dict[str, Any], dataset: str) -> str:
        """The model card's paragraph on this OOD check, from metrics.json's ``ood`` figures."""

    @property
    @abstractmethod
    def width(self) -> int:
        """D, the width of the image features the statistics compare."""

    def with_threshold(self, threshold: float) -> OODStatistics:
        """A copy of these statistics with another threshold."""
        return dataclasses.replace(self, threshold=float(threshold))

    def check(self, features: torch.Tensor) -> list[dict[str, Any]]:
        """{"score", "threshold", "flagged"} per image of a (B, D) batch."""
        return [{"score": float(s), "threshold": self.threshold, "flagged": bool(s > self.threshold)}
                for s in self.scores(features).tolist()]


def register_ood_method(cls: type[OODStatistics]) -> type[OODStatistics]:
    """Class decorator: make an OOD method known by its `name` (importing its module registers it)."""
    if cls.name in _REGISTRY:
        raise ValueError(f"OOD method {cls.name!r} is registered twice ({_REGISTRY[cls.name].__module__} and "
                         f"{cls.__module__}); give the new one another name.")
    _REGISTRY[cls.name] = cls
    return cls


def ood_method_names() -> tuple[str, ...]:
    """The names of the OOD methods this version knows, the default first."""
    return tuple(sorted(_REGISTRY, key=lambda name: (name != DEFAULT_OOD_METHOD, name)))


def ood_method(name: str) -> type[OODStatistics]:
    """The OOD method registered as `name`; a ZooError listing the known ones otherwise."""
    if name not in _REGISTRY:
        raise ZooError(f"OOD method {name!r} is not known to this version of the zoo; known: "
                       f"{list(ood_method_names())}.")
    return _REGISTRY[name]


def threshold_at_pass_rate(scores: np.ndarray | torch.Tensor, pass_rate: float = OOD_PASS_RATE) -> float:
    """The score `pass_rate` of these in-distribution scores stay at or under (the "higher" quantile)."""
    return float(np.quantile(np.asarray(scores, dtype=np.float64), pass_rate, method="higher"))


def threshold_card_text(ood: dict[str, Any], dataset: str) -> str:
    """The model card's sentences on an OOD threshold and its test pass rate (metrics.json's ``ood``), which
    every method's card_text ends with."""
    return (f"An image scoring above **{ood['threshold']:.4g}** (the score {OOD_PASS_RATE:.0%} of the validation "
            "images pass) is flagged as unlike the training data. "
            f"It passed **{ood['test_pass_rate']:.1%}** of the {ood['n_test']} test images of {dataset}. "
            "No out-of-distribution image was used to set it; how well it flags such images is measured by "
            "`benchmarks/bench_ood.py`.")


def save_ood_statistics(folder: str | os.PathLike, statistics: OODStatistics) -> Path:
    """Write `ood.safetensors` into `folder`: the method's tensors, its threshold, its name and version."""
    path = Path(folder) / OOD_NAME
    tensors = {**statistics.tensors(), "threshold": torch.tensor([statistics.threshold], dtype=torch.float32)}
    with atomic_write(path) as f:
        save_file(tensors, f.name, metadata={"format": "pt", "method": statistics.name,
                                             "version": statistics.version})
    return path


def _declared_method(path: Path, declared: str | None) -> tuple[str, str]:
    """(method, version) the file names. Files written before methods were read back say "knn-cosine", "1"; a
    file without that metadata (written by hand with safetensors) is read as that, the only format then."""
    metadata = read_safetensors_metadata(path)
    method, version = metadata.get("method", DEFAULT_OOD_METHOD), metadata.get("version", "1")
    if declared is not None and declared != method:
        raise ZooError(f"{path} holds {method!r} statistics, but config.json's zoo.ood.method says {declared!r}: "
                       "the file belongs to another run. Retrain, or delete the file to load the model without "
                       "an OOD check.")
    return method, version


def read_ood_statistics(folder: str | os.PathLike, width: int | None, declared: str | None = None
                        ) -> tuple[OODStatistics | None, str | None]:
    """The validated OOD statistics of a run folder, or (None, why there is no OOD check).

    `width`: the model's image-feature width D (None: not checked). `declared`: the method config.json's zoo
    block names. A damaged file, one of another format version, or one that does not fit the model is a
    ZooError naming it; an unknown method is no OOD check, with the reason.
    """
    folder = Path(folder)
    path = folder / OOD_NAME
    if not path.is_file():
        return None, (f"no OOD statistics: {folder} has no {OOD_NAME} (a run trained before the OOD check, "
                      "or a model imported without its training data), so this model cannot tell when "
                      "an image is unlike its training images")
    check_file_size(path)  # before the statistics are read into memory
    name, version = _declared_method(path, declared)
    if name not in _REGISTRY:
        return None, (f"no OOD check: method {name!r} (in {path}) is not known to this version of the zoo, "
                      f"which knows {list(ood_method_names())}; update the zoo to use it")
    method = _REGISTRY[name]
    if version != method.version:
        raise ZooError(f"{path} is {name} format version {version!r}; this version of the zoo reads version "
                       f"{method.version!r}. Update the zoo, or retrain to write the file again.")
    tensors = read_safetensors(path)
    expected = (*method.tensor_names, "threshold")
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise ZooError(f"{path} lacks tensor(s) {missing}; a {name} OOD statistics file holds {list(expected)}. "
                       "Retrain, or delete the file to load the model without an OOD check.")
    for key in expected:
        if not torch.isfinite(tensors[key]).all():
            raise ZooError(f"{path}: tensor {key!r} has non-finite values (NaN/inf); the statistics are "
                           "unusable. Retrain, or delete the file to load the model without an OOD check.")
    threshold = tensors["threshold"]
    low, high = method.threshold_range
    if threshold.numel() != 1 or not low < float(threshold) <= high:
        raise ZooError(f"{path}: threshold must be one number in ({low:g}, {high:g}] (a {name} score), got "
                       f"{threshold.tolist()}. Retrain, or delete the file.")
    return method.from_tensors(tensors, float(threshold), path, width), None

