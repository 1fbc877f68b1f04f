"""Train/validation/test splits: the data's own split when it has one, else a seeded stratified one."""
from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any

from ._errors import DataError
from .samples import SPLIT_NAMES, DataSource, Sample, Splits, class_counts

__all__ = ["make_splits", "split_record"]

_logger = logging.getLogger("train")


def make_splits(source: DataSource, val_frac: float = 0.15, test_frac: float = 0.15,
                seed: int = 42) -> Splits:
    """Use the data's own split if it has one, else a stratified train/val/test split.

    A predefined split without validation images gets one carved from its training images.
    Samples with a ``group`` (HAM10000's lesion_id) keep their whole group in one split.
    """
    given = {s.split for s in source.samples}
    if given == {None}:
        rest, test = _stratified(source.samples, test_frac, seed, "test")
        val_share = val_frac / (1.0 - test_frac) if test_frac < 1 else 0.0
        train, val = _stratified(rest, val_share, seed + 1, "val")
        splits = Splits(train, val, test, predefined=False)
    else:
        parts = {name: [s for s in source.samples if s.split == name] for name in SPLIT_NAMES}
        if not parts["val"]:
            parts["train"], parts["val"] = _stratified(parts["train"], val_frac, seed + 1, "val")
        if not parts["test"]:
            parts["train"], parts["test"] = _stratified(parts["train"], test_frac, seed, "test")
        splits = Splits(parts["train"], parts["val"], parts["test"], predefined=True)
    counts = class_counts(splits.train, source.num_classes)
    empty = [source.label_names[c] for c, n in enumerate(counts) if n == 0]
    if empty:
        raise DataError(f"class(es) {empty} of {source.spec} have no training images after the "
                        f"split (train counts {dict(zip(source.label_names, counts))}); add images")
    for name, part in splits.items():
        if not part:
            raise DataError(f"the {name} split of {source.spec} is empty ({len(source.samples)} "
                            f"images); use more data or a larger --{name}-frac")
    return splits


def _stratified(samples: list[Sample], fraction: float, seed: int, what: str
                ) -> tuple[list[Sample], list[Sample]]:
    """Split off `fraction` of samples, stratified by label (by group when samples have groups)."""
    if fraction <= 0:
        return list(samples), []
    from sklearn.model_selection import train_test_split
    has_groups = any(s.group is not None for s in samples)
    if has_groups:  # one unit per group, labelled by its first sample
        units: dict[str, list[Sample]] = {}
        for i, s in enumerate(samples):
            units.setdefault(s.group if s.group is not None else f"\0{i}", []).append(s)
        keys = list(units)
        labels = [units[k][0].label for k in keys]
    else:
        keys = list(range(len(samples)))
        labels = [s.label for s in samples]
    counts = Counter(labels)
    n_take = math.ceil(fraction * len(keys))
    stratify = labels if min(counts.values()) >= 2 and n_take >= len(counts) else None
    if stratify is None:
        _logger.warning("%s split is not stratified: a class has fewer than 2 %s or the split is "
                        "smaller than the number of classes (counts %s)", what,
                        "groups" if has_groups else "images", dict(sorted(counts.items())))
    if n_take >= len(keys):
        raise DataError(f"cannot split {len(keys)} {'groups' if has_groups else 'images'} into "
                        f"{what} fraction {fraction:.3f}; use more data or a smaller fraction")
    keep, take = train_test_split(keys, test_size=n_take, random_state=seed, shuffle=True,
                                  stratify=stratify)
    if has_groups:
        return ([s for k in keep for s in units[k]], [s for k in take for s in units[k]])
    return [samples[i] for i in keep], [samples[i] for i in take]


def split_record(source: DataSource, splits: Splits, seed: int, val_frac: float,
                 test_frac: float) -> dict[str, Any]:
    """The split as JSON-ready data (split.json): every image's key and label, per split."""
    record: dict[str, Any] = {
        "data": source.spec, "kind": source.kind, "root": str(source.root) if source.root else None,
        "predefined": splits.predefined, "seed": seed, "val_frac": val_frac, "test_frac": test_frac,
        "label_names": source.label_names,
        "counts": {name: dict(zip(source.label_names, class_counts(part, source.num_classes)))
                   for name, part in splits.items()},
    }
    for name, part in splits.items():
        record[name] = [[s.key, source.label_names[s.label]] for s in part]
    return record

