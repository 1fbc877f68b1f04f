"""The Mahalanobis OOD score: the squared distance of an image's features to the nearest class mean under one
shared covariance ("A Simple Unified Framework for Detecting Out-of-Distribution Samples and Adversarial
Attacks", Lee et al., 2018), on the same pooled features as knn-cosine. Its JavaScript twin is web/private.js's
OOD_SCORES["mahalanobis"].

Fitted on the training features: one mean per class and the covariance of the features around their class mean,
shrunk towards a scaled identity by scikit-learn's LedoitWolf, so that it is invertible even with fewer images
than feature dimensions (a medical training set of hundreds of images, D up to 2048). The file stores the
whitening matrix W (D, D), with W^T W the inverse covariance, and the whitened class means (K, D): the score
is then min_k ||W f - W mu_k||^2 / D, the same number the page computes with one matrix-vector product.
Dividing by D keeps the score near 1 for in-distribution images whatever the width (a chi-square over D
degrees of freedom, divided by them): the threshold reads the same across models, and float32 features from
two runtimes give scores within 1e-4 of each other.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._errors import ZooError
from .base import OODStatistics, register_ood_method, threshold_card_text

__all__ = ["Mahalanobis"]

_EIGEN_FLOOR = 1e-12  # eigenvalues of the shrunk covariance below this share of the largest are lifted to it


@register_ood_method
@dataclass(frozen=True)
class Mahalanobis(OODStatistics):
    """The whitening matrix (D, D) and the whitened class means (K, D); score = min_k ||W f - c_k||^2 / D."""

    whitening: torch.Tensor = field(default=None, repr=False, kw_only=True)  # (D, D) float32
    centres: torch.Tensor = field(default=None, repr=False, kw_only=True)    # (K, D) float32
    shrinkage: float | None = field(default=None, kw_only=True)            # Ledoit-Wolf's, when fitted here

    name = "mahalanobis"
    version = "1"
    tensor_names = ("whitening", "centres")
    threshold_range = (0.0, float("inf"))
    summary = ("squared Mahalanobis distance of the image features to the nearest class mean (shared "
               "Ledoit-Wolf covariance), divided by the feature width")
    numpy_score = ('score = float((((ood["whitening"].astype(np.float64) @ features) - ood["centres"]) ** 2)'
                   '.sum(axis=1).min() / features.size)')

    @classmethod
    def fit(cls, features: torch.Tensor, labels: np.ndarray, seed: int = 0) -> Mahalanobis:
        """Class means and the shrunk shared covariance of training features (N, D) with labels (N,); `seed`
        is unused (the fit is deterministic)."""
        from sklearn.covariance import LedoitWolf

        x = features.detach().double().numpy()
        labels = np.asarray(labels)
        classes = np.unique(labels)
        if len(x) < 2 or len(x) != len(labels):
            raise ZooError(f"a Mahalanobis OOD fit needs at least 2 images with one label each, got {len(x)} "
                           f"images and {len(labels)} labels.")
        means = np.stack([x[labels == c].mean(axis=0) for c in classes])  # (K, D)
        centred = x - means[np.searchsorted(classes, labels)]
        estimate = LedoitWolf(assume_centered=True).fit(centred)
        eigenvalues, vectors = np.linalg.eigh(estimate.covariance_)
        eigenvalues = np.maximum(eigenvalues, eigenvalues.max() * _EIGEN_FLOOR)
        whitening = (vectors / np.sqrt(eigenvalues)).T  # W = diag(1/sqrt(l)) V^T: W^T W = covariance^-1
        # the stored float32 values are what every score is computed from, the threshold's included
        w32 = torch.from_numpy(whitening).float().contiguous()
        centres = (torch.from_numpy(means) @ w32.double().T).float().contiguous()
        return cls(threshold=float("inf"), whitening=w32, centres=centres, shrinkage=float(estimate.shrinkage_))

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """min over classes of the squared whitened distance, / D: (B, D) -> (B,), >= 0 (float64)."""
        f = features.detach().double().reshape(len(features), -1)  # (B, D)
        whitened = f @ self.whitening.double().T                   # (B, D)
        distances = torch.cdist(whitened, self.centres.double()) ** 2  # (B, K)
        return distances.min(dim=1).values / self.width

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"whitening": self.whitening.float().contiguous(), "centres": self.centres.float().contiguous()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], threshold: float, path: Path,
                     width: int | None) -> Mahalanobis:
        whitening, centres = tensors["whitening"], tensors["centres"]
        d = whitening.shape[-1] if whitening.ndim == 2 else None
        if (whitening.ndim != 2 or whitening.shape[0] != d or (width is not None and d != width)
                or centres.ndim != 2 or centres.shape[0] < 1 or centres.shape[1] != d):
            raise ZooError(f"{path}: whitening has shape {tuple(whitening.shape)} and centres "
                           f"{tuple(centres.shape)}, but this model's image features have {width} values (expected "
                           f"({width}, {width}) and (K, {width})); the file belongs to another model. Delete it or "
                           "retrain.")
        return cls(threshold=threshold, whitening=whitening.float(), centres=centres.float(), file=str(path))

    @property
    def width(self) -> int:
        return int(self.whitening.shape[1])

    def describe(self) -> dict[str, Any]:
        return {"feature_size": self.width, "classes": int(self.centres.shape[0]),
                **({"shrinkage": self.shrinkage} if self.shrinkage is not None else {})}

    def browser_arrays(self) -> dict[str, np.ndarray]:
        return {"whitening": self.whitening.numpy(), "centres": self.centres.numpy()}

    @classmethod
    def card_text(cls, ood: dict[str, Any], dataset: str) -> str:
        shrinkage = f" (shrinkage {ood['shrinkage']:.3f})" if "shrinkage" in ood else ""
        return (
            "**Out-of-distribution check** (Mahalanobis distance, \"A Simple Unified Framework for Detecting "
            "Out-of-Distribution Samples and Adversarial Attacks\", Lee et al., 2018): the score is the squared "
            f"Mahalanobis distance of the model's {ood['feature_size']} pooled image features to the nearest of "
            f"the {ood['classes']} class means of the training images, under their shared covariance shrunk by "
            f"Ledoit-Wolf{shrinkage}, divided by {ood['feature_size']}. `{ood['file']}` holds the class means and "
            "the whitening matrix (summary statistics of the training features, no image's own features). "
            + threshold_card_text(ood, dataset))
