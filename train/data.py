"""The ``--data`` spec: resolved to a bundled data set, an ImageFolder, a CSV or a MedMNIST .npz file.

This module reads image folders and CSV files, checks that every image decodes, and is the public face
of the data pieces: the sample types (train.samples), splits (train.splits), bundled data sets
(train.bundled_datasets), MedMNIST (train.medmnist_source) and the torch dataset (train.image_dataset)
are re-exported here. Files are decoded with ``zoo.images.load_image`` so training and the app read
pixels identically.
"""
from __future__ import annotations

import csv
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

from zoo.images import IMAGE_SUFFIXES as IMAGE_EXTENSIONS  # the one list of readable image files
from zoo.images import image_stem, is_image_name

from ._errors import DataError
from .bundled_datasets import (BUNDLED_DATASETS, DIGITS_IMBALANCED_DEFAULTS, load_brain_mri_source, load_bundled,
                               load_chest_xray_source, load_digits_imbalanced_source, load_digits_source,
                               register_bundled)
from .image_dataset import ImageDataset
# importing train.medmnist_source also registers the "medmnist" bundled name
from .medmnist_source import MEDMNIST_SIZES, load_medmnist_source, load_npz, medmnist_file, medmnist_root
from .samples import SPLIT_NAMES, DataSource, Sample, SkippedFile, Splits, class_counts, data_fingerprint
from .splits import make_splits, split_record

__all__ = [
    "IMAGE_EXTENSIONS", "Sample", "SkippedFile", "DataSource", "Splits", "DataError",
    "BUNDLED_DATASETS", "register_bundled", "load_source", "make_splits", "verify_images",
    "class_counts", "ImageDataset", "split_record", "data_fingerprint", "MEDMNIST_SIZES", "medmnist_file",
    "medmnist_root", "load_medmnist_source", "SPLIT_ALIASES",
    "SPLIT_NAMES", "DIGITS_IMBALANCED_DEFAULTS", "load_digits_source", "load_digits_imbalanced_source",
    "load_chest_xray_source", "load_brain_mri_source", "load_image_folder", "load_csv", "load_npz",
]

_logger = logging.getLogger("train")

# a folder with one of these names (any case) holds a split of an ImageFolder, not a class
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "test": "test", "testing": "test"}
_IMAGE_COLUMNS = ("image", "image_id", "image_path", "path", "file", "filename", "isic_id")
_LABEL_COLUMNS = ("label", "dx", "class", "target", "diagnosis")
_METADATA_COLUMNS = ("age", "age_approx", "sex", "localization", "anatom_site_general")
_UNKNOWN = {"", "unknown", "nan", "none", "null", "na", "n/a", "?"}


def load_source(spec: str, image_dir: str | None = None, image_col: str | None = None,
                label_col: str | None = None, metadata_cols: Sequence[str] | None = None) -> DataSource:
    """Resolve a ``--data`` spec: a bundled name, an ImageFolder directory, a CSV or an .npz file."""
    spec = str(spec)
    bundled = load_bundled(spec)
    if bundled is not None:
        return bundled
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
    return is_image_name(path.name) and not path.name.startswith(".")  # scan.nii.gz too (compound suffix)


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
                stems.setdefault(image_stem(p.name), p)
        found = stems.get(image_stem(Path(value).name) if is_image_name(value) else value)
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

