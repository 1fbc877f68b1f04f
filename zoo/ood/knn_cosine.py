"""The nearest-neighbour OOD score: 1 - cosine similarity to the nearest training image ("Out-of-Distribution
Detection with Deep Nearest Neighbors", Sun et al., 2022). The default method; its JavaScript twin is
web/private.js's OOD_SCORES["knn-cosine"].

The statistics are the L2-normalised image features of training images (the bank, (N, D)); an image's score is
1 - its cosine similarity to the nearest of them (0 = a training image's twin, up to 2). Why k = 1 and these
features: see `fit`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._errors import ZooError
from .base import OODStatistics, register_ood_method, threshold_card_text

__all__ = ["KnnCosine", "OOD_BANK_MAX", "leave_one_out_scores"]

_logger = logging.getLogger("zoo")
OOD_BANK_MAX = 20_000   # at most this many training images' features in the bank
_UNIT_TOLERANCE = 1e-3  # bank rows are unit length up to float32 rounding


@register_ood_method
@dataclass(frozen=True)
class KnnCosine(OODStatistics):
    """L2-normalised features of training images (N, D) and the score threshold."""

    bank: torch.Tensor = field(default=None, repr=False, kw_only=True)  # (N, D) float32, rows of unit length

    name = "knn-cosine"
    version = "1"
    tensor_names = ("bank",)
    threshold_range = (0.0, 2.0)
    summary = "1 - cosine similarity of the image features to the nearest training image's (k-nearest-neighbour, k = 1)"
    numpy_score = ('score = max(0.0, 1.0 - float((ood["bank"] @ (features / max(np.linalg.norm(features), '
                   '1e-12))).max()))')

    @classmethod
    def from_features(cls, features: torch.Tensor, threshold: float = float("inf")) -> KnnCosine:
        """Statistics whose bank is exactly these features (N, D), normalised."""
        return cls(threshold=float(threshold), bank=F.normalize(features.detach().float(), dim=1).contiguous())

    @classmethod
    def fit(cls, features: torch.Tensor, labels: np.ndarray | None = None, seed: int = 0,
            max_rows: int = OOD_BANK_MAX) -> KnnCosine:
        """The bank: training features, L2-normalised, (N, D) float32; a seeded random subset of `max_rows`
        for larger training sets (Sun et al. report that a sample of the training set works). A ZooError
        when every image has all-zero features.

        Why k-nearest-neighbour (k = 1) on the backbone's pooled features, and not a Mahalanobis distance
        (Lee et al., 2018; zoo/ood/mahalanobis.py) or the pre-logit features: both were tried on a LeNet-5
        digits run against the real images of benchmarks/bench_ood.py (natural photos, DICOM, chest X-rays,
        brain MRIs), with statistics and thresholds from in-distribution data only. AUROC / share of OOD
        images flagged at the 95%-validation threshold: Mahalanobis with class means and a Ledoit-Wolf
        covariance on the pre-logit features 0.961 / 77%, on the pooled features 0.959 / 87%, on both
        0.982 / 92% (the retina photograph passed); nearest neighbour on pre-logits 0.978 / 82%, on pooled
        features 0.996 / 100%. The class-conditional Gaussian does not fit features that a tanh or ReLU
        squashes; a nearest neighbour needs no distributional assumption. k = 1 because medical training sets
        are small (hundreds of images), where farther neighbours already belong to other clusters (k = 3 and
        5 flagged 98% and 92%). The cost: the file holds N x D numbers derived from the training images (the
        model card says so: publishing a model publishes them too).
        """
        features = features.detach().float()
        # an all-zero feature vector (a ReLU backbone that saw nothing it responds to) has no direction
        bank = F.normalize(features[features.norm(dim=1) > 0], dim=1)
        if len(bank) < len(features):
            _logger.warning("OOD check: %d of %d training images have all-zero features and are left out of "
                            "the feature bank", len(features) - len(bank), len(features))
        if not len(bank):
            raise ZooError("every training image has all-zero image features (the backbone responds to none of "
                           "them), so no OOD check was fitted; check the preprocessing and weights")
        if len(bank) > max_rows:
            keep = torch.randperm(len(bank), generator=torch.Generator().manual_seed(seed))[:max_rows]
            bank = bank[keep.sort().values]
        return cls(threshold=float("inf"), bank=bank.contiguous())

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """1 - cosine similarity to the nearest training image: (B, D) -> (B,), in [0, 2]."""
        f = F.normalize(features.detach().float().reshape(len(features), -1), dim=1)  # (B, D)
        nearest = torch.zeros(len(f))
        for start in range(0, len(f), 256):  # (256, N) similarities at a time
            nearest[start:start + 256] = (f[start:start + 256] @ self.bank.T).max(dim=1).values
        return (1.0 - nearest).clamp_min(0.0)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"bank": F.normalize(self.bank.detach().float(), dim=1).contiguous()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], threshold: float, path: Path,
                     width: int | None) -> KnnCosine:
        bank = tensors["bank"]
        if bank.ndim != 2 or bank.shape[0] < 1 or (width is not None and bank.shape[1] != width):
            raise ZooError(f"{path}: bank has shape {tuple(bank.shape)}, but this model's image features have "
                           f"{width} values (expected (N, {width})); the file belongs to another model. Delete it "
                           "or retrain.")
        norms = bank.float().norm(dim=1)
        if not torch.allclose(norms, torch.ones_like(norms), atol=_UNIT_TOLERANCE):
            raise ZooError(f"{path}: bank rows must have unit length (L2-normalised features); found norms from "
                           f"{float(norms.min()):.4g} to {float(norms.max()):.4g}. Retrain, or delete the file.")
        return cls(threshold=threshold, bank=bank.float(), file=str(path))

    @property
    def width(self) -> int:
        return int(self.bank.shape[1])

    def describe(self) -> dict[str, Any]:
        return {"feature_size": self.width, "bank_size": int(self.bank.shape[0])}

    def browser_arrays(self) -> dict[str, np.ndarray]:
        return {"bank": self.bank.numpy()}  # (N, D), checked finite and unit rows

    @classmethod
    def card_text(cls, ood: dict[str, Any], dataset: str) -> str:
        return (
            f"**Out-of-distribution check** (\"Out-of-Distribution Detection with Deep Nearest Neighbors\", "
            f"Sun et al., 2022): the score is 1 - the cosine similarity of the model's {ood['feature_size']} "
            f"pooled image features to those of the nearest of {ood['bank_size']} training images, which "
            f"`{ood['file']}` holds (features, not images; publishing this model publishes them). "
            + threshold_card_text(ood, dataset))


def leave_one_out_scores(features: torch.Tensor) -> torch.Tensor:
    """Each image's knn-cosine score against the others: 1 - cosine similarity to its nearest OTHER image,
    (N, D) -> (N,).

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
