"""Patient-metadata fusion: encode age, sex and anatomical site and join them to the image features.

seed 002_dacd70395d15e47e.txt, section 2.2.2 (Input Schema): age is normalised; sex and anatomical site
are one-hot encoded with unknown kept as its own category; the encoding goes through a dense layer
(4096 units in the seed) whose output is concatenated with the image features before the classifier.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .._errors import ZooError
from ._common import KERAS_BN_EPS  # the fusion heads imported from Keras normalise as Keras does

__all__ = ["MetadataSchema", "MetadataEncoder", "HAM10000_SITES", "LAYOUT_BLOCKS", "DenseBlock", "hidden_sizes"]

# HAM10000_metadata.csv `localization` values (the seed's data set), 'unknown' handled separately.
HAM10000_SITES = (
    "abdomen", "acral", "back", "chest", "ear", "face", "foot", "genital", "hand", "lower extremity",
    "neck", "scalp", "trunk", "upper extremity",
)
UNKNOWN = "unknown"
# the blocks of an encoded row; a schema's `layout` orders them (an imported model keeps its source's order)
LAYOUT_BLOCKS = ("age", "age_unknown", "sex", "site")
MAX_HIDDEN_LAYERS = 8
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
    layout: tuple[str, ...] = LAYOUT_BLOCKS  # order of the blocks in an encoded row
    age_fill: float | None = None  # the age a missing one is encoded as (None: age_mean, i.e. 0 after normalising)

    @classmethod
    def from_dict(cls, d: Mapping | "MetadataSchema" | None) -> "MetadataSchema":
        """The schema from its JSON form (a schema is returned as it is; None gives the default); unknown keys
        raise ZooError."""
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
        if "layout" in d:
            if (not isinstance(d["layout"], (list, tuple)) or not all(isinstance(b, str) for b in d["layout"])
                    or sorted(d["layout"]) != sorted(LAYOUT_BLOCKS)):
                raise ZooError(f"metadata schema 'layout' must order the blocks {list(LAYOUT_BLOCKS)}, each once, "
                               f"got {d['layout']!r:.80}")
            d["layout"] = tuple(d["layout"])
        fill = d.get("age_fill")
        if fill is not None and (isinstance(fill, bool) or not isinstance(fill, (int, float)) or not math.isfinite(fill)):
            raise ZooError(f"metadata schema 'age_fill' must be a finite number of years or null, got {fill!r:.80}")
        return cls(**d)

    def to_dict(self) -> dict:
        """The schema as JSON-ready values (lists for the category tuples), as config.json stores it."""
        d = asdict(self)
        d["sex"], d["site"], d["layout"] = list(self.sex), list(self.site), list(self.layout)
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

        Missing, empty or unrecognised values go to the unknown category (age: `age_fill`, or 0 after
        normalising, with the unknown flag set); the blocks come in `layout` order.
        """
        fill = self.age_mean if self.age_fill is None else self.age_fill
        rows = []
        for r in records:
            r = r or {}
            age = _age(r.get(self.age_field))
            blocks = {"age": [((fill if age is None else age) - self.age_mean) / self.age_std],
                      "age_unknown": [1.0 if age is None else 0.0],
                      "sex": _one_hot(r.get(self.sex_field), self.sex),
                      "site": _one_hot(r.get(self.site_field), self.site)}
            rows.append([v for block in self.layout for v in blocks[block]])
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


def hidden_sizes(hidden: int | Sequence[int]) -> tuple[int, ...]:
    """A dense stack's widths: one int (one layer) or a list of them, each >= 1, at most MAX_HIDDEN_LAYERS."""
    sizes = (hidden,) if isinstance(hidden, int) and not isinstance(hidden, bool) else tuple(hidden)
    if not 1 <= len(sizes) <= MAX_HIDDEN_LAYERS or not all(
            isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in sizes):
        raise ZooError(f"hidden sizes must be a positive integer or a list of 1 to {MAX_HIDDEN_LAYERS} of them, "
                       f"got {hidden!r:.80}")
    return sizes


class DenseBlock(nn.Sequential):
    """[Dropout ->] Linear -> ReLU [-> BatchNorm1d]: one layer of a fusion head (Keras's Dense(relu) [+ BN])."""

    def __init__(self, in_features: int, out_features: int, drop_rate: float = 0.0, batch_norm: bool = False):
        super().__init__()
        if drop_rate:
            self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, out_features)
        self.act = nn.ReLU()
        if batch_norm:
            self.norm = nn.BatchNorm1d(out_features, eps=KERAS_BN_EPS)


class MetadataEncoder(nn.Module):
    """(B, schema.num_features) -> (B, hidden[-1]): dense layers with ReLU (seed 002's input schema has one of
    4096 units), each optionally followed by batch norm (as the imported skin-lesion model's two layers are)."""

    def __init__(self, schema: MetadataSchema, hidden: int | Sequence[int] = 4096, drop_rate: float = 0.0,
                 batch_norm: bool = False):
        super().__init__()
        sizes = hidden_sizes(hidden)
        if len(sizes) == 1 and not batch_norm:  # the original single layer keeps its tensor names (fc.*)
            self.fc = nn.Linear(schema.num_features, sizes[0])
            self.act = nn.ReLU(inplace=True)
        else:
            widths = (schema.num_features, *sizes)
            self.layers = nn.Sequential(*(DenseBlock(i, o, batch_norm=batch_norm) for i, o in zip(widths, sizes)))
        self.drop = nn.Dropout(drop_rate)
        self.out_features = sizes[-1]

    def forward(self, metadata: torch.Tensor) -> torch.Tensor:
        x = self.layers(metadata) if hasattr(self, "layers") else self.act(self.fc(metadata))
        return self.drop(x)
