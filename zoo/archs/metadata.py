"""Patient-metadata fusion: encode age, sex and anatomical site and join them to the image features.

seed 002_dacd70395d15e47e.txt, section 2.2.2 (Input Schema): age is normalised; sex and anatomical site
are one-hot encoded with unknown kept as its own category; the encoding goes through a dense layer
(4096 units in the seed) whose output is concatenated with the image features before the classifier.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .._errors import ZooError

__all__ = ["MetadataSchema", "MetadataEncoder", "HAM10000_SITES"]

# HAM10000_metadata.csv `localization` values (the seed's data set), 'unknown' handled separately.
HAM10000_SITES = (
    "abdomen", "acral", "back", "chest", "ear", "face", "foot", "genital", "hand", "lower extremity",
    "neck", "scalp", "trunk", "upper extremity",
)
UNKNOWN = "unknown"
MAX_CATEGORIES = 1000  # per field: a saved schema is read from config.json, so its size is bounded


@dataclass
class MetadataSchema:
    """Fields and categories of the metadata a model takes; saved in the model's config.json."""

    sex: tuple[str, ...] = ("female", "male")
    site: tuple[str, ...] = HAM10000_SITES
    age_mean: float = 50.0  # normalisation; `fit` sets them from the training split
    age_std: float = 20.0
    age_field: str = "age"
    sex_field: str = "sex"
    site_field: str = "localization"
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping | "MetadataSchema" | None) -> "MetadataSchema":
        if d is None:
            return cls()
        if isinstance(d, MetadataSchema):
            return d
        if not isinstance(d, Mapping):
            raise ZooError(f"metadata schema must be an object of fields and categories, got {d!r:.80}")
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ZooError(f"metadata schema has unknown keys {sorted(map(str, unknown))}; allowed: {sorted(known)}")
        d = dict(d)
        for k in ("sex", "site"):  # categories: a short list of distinct names
            if k in d:
                if (not isinstance(d[k], (list, tuple)) or not all(isinstance(c, str) for c in d[k])
                        or not 1 <= len(set(d[k])) == len(d[k]) <= MAX_CATEGORIES):
                    raise ZooError(f"metadata schema {k!r} must be a list of 1 to {MAX_CATEGORIES} distinct names, "
                                   f"got {d[k]!r:.80}")
                d[k] = tuple(d[k])
        for k in ("age_mean", "age_std"):
            if k in d and (isinstance(d[k], bool) or not isinstance(d[k], (int, float)) or not math.isfinite(d[k])
                           or (k == "age_std" and d[k] <= 0)):
                raise ZooError(f"metadata schema {k!r} must be a finite number{' above 0' if k == 'age_std' else ''}, "
                               f"got {d[k]!r:.80}")
        for k in ("age_field", "sex_field", "site_field"):
            if k in d and not isinstance(d[k], str):
                raise ZooError(f"metadata schema {k!r} must be a column name (a string), got {d[k]!r:.80}")
        if "extra" in d and not isinstance(d["extra"], dict):
            raise ZooError(f"metadata schema 'extra' must be an object, got {d['extra']!r:.80}")
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sex"], d["site"] = list(self.sex), list(self.site)
        return d

    @property
    def num_features(self) -> int:
        # age (normalised), age-unknown flag, sex one-hot + unknown, site one-hot + unknown
        return 2 + len(self.sex) + 1 + len(self.site) + 1

    def fit(self, records: Iterable[Mapping]) -> "MetadataSchema":
        """Age mean/std from training records (ages that are missing are ignored)."""
        ages = [a for a in (_age(r.get(self.age_field)) for r in records) if a is not None]
        if len(ages) >= 2:
            mean = sum(ages) / len(ages)
            std = math.sqrt(sum((a - mean) ** 2 for a in ages) / (len(ages) - 1)) or 1.0
            self.age_mean, self.age_std = float(mean), float(std)
        return self

    def encode(self, records: Iterable[Mapping | None]) -> torch.Tensor:
        """Records like {"age": 45, "sex": "male", "localization": "back"} -> (B, num_features) float tensor.

        Missing, empty or unrecognised values go to the unknown category (age: 0 with the unknown flag set).
        """
        rows = []
        for r in records:
            r = r or {}
            age = _age(r.get(self.age_field))
            row = [0.0 if age is None else (age - self.age_mean) / self.age_std, 1.0 if age is None else 0.0]
            row += _one_hot(r.get(self.sex_field), self.sex)
            row += _one_hot(r.get(self.site_field), self.site)
            rows.append(row)
        return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), self.num_features)


def _age(value) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", UNKNOWN, "nan")):
        return None
    try:
        age = float(value)
    except (TypeError, ValueError):
        raise ZooError(f"metadata age must be a number or empty, got {value!r}") from None
    return None if math.isnan(age) else age


def _one_hot(value, categories: tuple[str, ...]) -> list[float]:
    key = str(value).strip().lower() if value is not None else UNKNOWN
    vec = [0.0] * (len(categories) + 1)
    vec[categories.index(key) if key in categories else len(categories)] = 1.0
    return vec


class MetadataEncoder(nn.Module):
    """(B, schema.num_features) -> (B, hidden): a dense layer with ReLU, as seed 002's input schema."""

    def __init__(self, schema: MetadataSchema, hidden: int = 4096, drop_rate: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(schema.num_features, hidden)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop_rate)
        self.out_features = hidden

    def forward(self, metadata: torch.Tensor) -> torch.Tensor:
        return self.drop(self.act(self.fc(metadata)))
