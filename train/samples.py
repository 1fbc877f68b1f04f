"""What a ``--data`` spec resolves to: labelled samples, the source that holds them, and their split.

These types are shared by every reader (train.data, train.medmnist_source, train.bundled_datasets),
the splitter (train.splits) and the torch dataset (train.image_dataset).
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

__all__ = ["SPLIT_NAMES", "Sample", "SkippedFile", "DataSource", "Splits", "class_counts", "data_fingerprint"]

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class Sample:
    """One labelled image: a file path or an index into the source's array."""

    key: str                     # what split.json and error messages call it
    ref: Path | int              # file to decode, or row of DataSource.array
    label: int
    metadata: dict[str, Any] | None = None
    split: str | None = None     # set when the data defines its own split
    group: str | None = None     # images of one group (e.g. HAM10000's lesion_id) share a split


@dataclass
class SkippedFile:
    """A file or CSV line left out of the data, named by `key`, and why (`reason`): a run's skipped_files.json."""

    key: str
    reason: str


@dataclass
class DataSource:
    """What a ``--data`` spec resolved to."""

    name: str                    # dataset name for the model card and the default run name
    kind: str                    # imagefolder | csv | npz | bundled
    spec: str
    label_names: list[str]
    samples: list[Sample]
    root: Path | None = None     # sample keys are relative to this
    array: np.ndarray | None = None  # (N, H, W) or (N, H, W, C) uint8 for in-memory sources
    metadata_fields: list[str] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    description: str = ""
    medical: bool | None = None  # medical images? (the model card tags only what is known: None = not known)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def in_memory(self) -> bool:
        return self.array is not None


@dataclass
class Splits:
    """The train, validation and test samples; `predefined` when they follow a split given with the data (its
    train/ val/ test/ folders, a MedMNIST file's splits, explicit cross-validation indices) rather than a seeded
    stratified split."""

    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    predefined: bool = False

    def items(self) -> Iterator[tuple[str, list[Sample]]]:
        """("train", samples), ("val", samples), ("test", samples), in that order."""
        yield from (("train", self.train), ("val", self.val), ("test", self.test))


def class_counts(samples: Sequence[Sample], num_classes: int) -> list[int]:
    """How many samples each class 0..num_classes-1 has (0 for a class with none)."""
    counts = Counter(s.label for s in samples)
    return [counts.get(c, 0) for c in range(num_classes)]


def data_fingerprint(source: DataSource, samples: Sequence[Sample]) -> str:
    """A hash of the images' identities and contents-as-stored (for the disk feature cache)."""
    h = hashlib.sha256()
    h.update(json.dumps([source.spec, source.label_names]).encode())
    for s in samples:
        if isinstance(s.ref, Path):
            st = s.ref.stat()
            h.update(f"{s.ref.resolve()}|{st.st_size}|{st.st_mtime_ns}|{s.label}\n".encode())
        else:
            h.update(f"{s.key}|{s.label}\n".encode())
            h.update(np.ascontiguousarray(source.array[s.ref]).tobytes())
    return h.hexdigest()

