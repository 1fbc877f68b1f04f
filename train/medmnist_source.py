"""MedMNIST: its .npz layout ({train,val,test}_images/_labels) and the ``--data medmnist:FLAG[:SIZE]`` source.

A file already in the medmnist package's folder is read as it is; only a missing one needs the package
and the network.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ._errors import DataError
from .bundled_datasets import register_bundled
from .samples import SPLIT_NAMES, DataSource, Sample

__all__ = ["MEDMNIST_SIZES", "load_npz", "medmnist_root", "medmnist_file", "load_medmnist_source"]

_logger = logging.getLogger("train")


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

