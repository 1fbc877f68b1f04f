"""The app's example images: real chest X-rays and brain MRIs with their true labels, real scans without labels,
and digits for the digits demo models, all read from installed packages, never from the repository.

They are written into a private folder made for each app process (tempfile.mkdtemp: a fresh, unguessable name,
owner-only permissions), which is the only extra place the app serves files from, and only the image files it
wrote there (app.launch_kwargs). The folder is removed when the process exits.
"""
from __future__ import annotations

import atexit
import hashlib
import importlib.util
import io
import json
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from zoo import ZooError
from zoo import images as zoo_images
from zoo.assets import ASSET_PACKAGES, MEDICAL_CLASSIFIERS, asset_file

__all__ = ["DICOM_STUDIES", "EXAMPLE_DIGITS", "MEDICAL_PER_CLASS", "SERVED_SUFFIXES", "THUMBNAIL_SIDE", "Example",
           "digits", "digit_examples", "make_private_folder", "mni_template", "package_dir", "thumbnail",
           "write_examples"]

_logger = logging.getLogger(__name__)

EXAMPLE_DIGITS = (0, 3, 7)
# packaged labelled images shown per class: (classifier name, images per class)
MEDICAL_PER_CLASS = {"pneumonia": 2, "braintumor": 1}
# what a browser may show inline; any other example (DICOM) is never served from the examples folder:
# Gradio hands it out from its own cache with a download content type (application/octet-stream, attachment)
SERVED_SUFFIXES = (".png", ".jpg", ".jpeg")
_MODALITY = {"pneumonia": "chest X-ray", "braintumor": "brain MRI"}
THUMBNAIL_SIDE = 160  # px, the longer side of an example's preview in the examples strip


class DicomStudy(NamedTuple):
    """A real DICOM file of pydicom-data (unlabelled): its file, sha256 pin and what it shows."""

    file: str  # under the package's data/ folder
    sha256: str
    what: str  # the caption's description: modality and body part, as its header says


# pydicom-data's real studies shown as examples, each pinned: the chest PA is a film from another hospital than the
# pneumonia model's paediatric training films, so the comparison shows what each model's OOD check makes of it
DICOM_STUDIES = (
    DicomStudy("RG1_UNCR.dcm", "946f28f48b9fbf360196a9b835c8fce83b0c654bf85a5107663c8a61df02e498",
               "chest PA radiograph (CR, MONOCHROME1)"),
    DicomStudy("RG3_UNCR.dcm", "6babfc42dd404213e1758d6dbb93648c248783cc23f593103fff4295c3374dfb",
               "lower-leg radiograph (CR)"),
    DicomStudy("US1_UNCR.dcm", "af5a66e40cd49d15dfbf7b78c850eba0662bdc7339339c3fa13f123a57e812cb",
               "ultrasound, colour Doppler (US)"),
    DicomStudy("MR2_UNCR.dcm", "c14c7f0c6e25bd4dfbb822fe264e540fc7142bf1c9d15d4c652ec8f5f97fa9e8",
               "shoulder MR slice (MR)"),
    DicomStudy("693_UNCR.dcm", "cc4cdd599231922ecf63de2ddacf03d51c4588805c9154c2eef1ff49c23b32be",
               "head CT slice (CT)"),
)


class Example(NamedTuple):
    """An example image: where the app wrote it, its caption in the examples strip, its true label if known."""

    path: str
    caption: str
    true_label: str | None = None


def package_dir(name: str) -> Path:
    """An installed package's folder, found without importing it (imports cost cold-start time)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"{name} is not installed: pip install -r requirements.txt")
    return Path(spec.origin).parent


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (images (N, 8, 8) in 0..16, labels (N,)), read from the file it ships.

    The same data as sklearn.datasets.load_digits, read with numpy: importing scikit-learn would add
    seconds to the app's cold start.
    """
    data = np.loadtxt(package_dir("sklearn") / "datasets" / "data" / "digits.csv.gz", delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


def digit_examples(weights: Path, classes: tuple[int, ...] = EXAMPLE_DIGITS) -> list[tuple[int, int]] | None:
    """(index, label) of digits from a demo run's test split (unseen in training), or None without such a run."""
    for split in sorted(weights.glob("*/split.json")) if weights.is_dir() else []:
        try:
            record = json.loads(split.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if record.get("data") == "digits" and isinstance(record.get("test"), list):
            picked = {}
            for key, label in record["test"]:
                picked.setdefault(int(label), int(key))
            if all(c in picked for c in classes):
                return [(picked[c], c) for c in classes]
    return None


def make_private_folder(parent: Path | None = None) -> Path:
    """A new folder only this user can read or write (mode 0700), under `parent` (default: the system's temporary
    folder), removed when the process exits. Refuses a `parent` that is a symbolic link."""
    parent = Path(parent or tempfile.gettempdir())
    if parent.is_symlink():
        raise RuntimeError(f"the examples folder's parent {parent} is a symbolic link; refusing to follow it "
                           "(set ZOO_APP_EXAMPLES to a real folder)")
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="zoo-app-examples-", dir=parent))  # a fresh name, created 0700
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        raise RuntimeError(f"{folder} is not a private folder of this user; refusing to write examples there")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _write_new(path: Path, data: bytes) -> str:
    """Write `data` to a file that must not exist yet (never through a symbolic link); returns its sha256."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def _caption(what: str, label: str | None, file_name: str, source: str) -> str:
    """'chest X-ray, true label NORMAL: NORMAL2-IM-1427-0001.jpeg (pneumonia-model-package)': what the image is,
    its true label if known, its file (two examples of one class differ only there) and where it comes from."""
    known = f"true label {label}" if label is not None else "no label"
    return f"{what}, {known}: {file_name} ({source})"


def thumbnail(example: Example, side: int = THUMBNAIL_SIDE) -> Image.Image:
    """A small 8-bit preview of an example, DICOM included (browsers cannot show a .dcm file)."""
    image = zoo_images.load_image(example.path).image.copy()
    image.thumbnail((side, side))
    if min(image.size) < side // 2:  # an 8x8 digit: enlarge with visible pixels, not a blur
        scale = side // max(image.size)
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    return image


def _medical_examples() -> list[tuple[Path, str, str]]:
    """(packaged file, caption, true label) for a few chest X-rays and brain MRIs of the asset packages;
    none from a package that is missing or damaged (logged: the app starts without them)."""
    picked = []
    for name, per_class in MEDICAL_PER_CLASS.items():
        source = MEDICAL_CLASSIFIERS[name]
        try:
            images = source.images()
        except ZooError as e:
            _logger.warning("no %s examples: %s", _MODALITY[name], e)
            continue
        shown: dict[str, int] = {}
        for path, label in images:
            if shown.get(label, 0) < per_class:
                shown[label] = shown.get(label, 0) + 1
                picked.append((path, _caption(_MODALITY[name], label, path.name, source.package), label))
    return picked


def _dicom_examples() -> list[tuple[Path, str]]:
    """(packaged file, caption) of pydicom-data's studies, each checked against its pin; none where the package is
    missing or changed (logged: the app starts without them)."""
    source = ASSET_PACKAGES["pydicom_data"]
    try:
        return [(asset_file(source, f"data/{study.file}", study.sha256),
                 _caption(study.what, None, study.file, source.package)) for study in DICOM_STUDIES]
    except ZooError as e:
        _logger.warning("no DICOM radiograph examples: %s", e)
        return []


def mni_template() -> tuple[Path, str] | None:
    """nilearn's MNI ICBM152 2009 T1 template (a NIfTI volume, read as package data, sha256-pinned) and its caption;
    None, logged, when the package is missing or changed (the app starts without it)."""
    try:
        path = asset_file(ASSET_PACKAGES["nilearn"], "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                          "421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6")
    except ZooError as e:
        _logger.warning("no MNI template example: %s", e)
        return None
    return path, _caption("brain MRI volume (NIfTI; the average of 152 healthy adults)", None, path.name, "nilearn")


def write_examples(folder: Path, weights: Path) -> list[Example]:
    """Write the example images into `folder` (a private folder from make_private_folder, empty): labelled chest
    X-rays and brain MRIs, a fundus photo, CT and MR slices, pydicom-data's real DICOM studies (a chest PA
    radiograph among them), then digits for the digits demo models."""
    examples = []
    for source, caption, label in _medical_examples():
        target = folder / source.name
        _write_new(target, source.read_bytes())
        examples.append(Example(str(target), caption, label))
    dicom_files = package_dir("pydicom") / "data" / "test_files"
    packaged = [(package_dir("skimage") / "data" / "retina.jpg", _caption("fundus photo", None, "retina.jpg",
                                                                           "scikit-image")),
                (dicom_files / "CT_small.dcm", _caption("CT slice", None, "CT_small.dcm", "pydicom")),
                (dicom_files / "MR_small.dcm", _caption("MR slice", None, "MR_small.dcm", "pydicom")),
                *_dicom_examples()]
    packaged += [volume for volume in [mni_template()] if volume is not None]
    for source, caption in packaged:
        if source.is_file():
            target = folder / source.name
            _write_new(target, source.read_bytes())
            examples.append(Example(str(target), caption))
    picks = digit_examples(weights)
    images, labels = digits()
    if picks is None:  # no digits run: the first image of each class
        picks = [(int(np.flatnonzero(labels == c)[0]), c) for c in EXAMPLE_DIGITS]
    for index, label in picks:
        path = folder / f"digit-{label}-{index}.png"
        # the same 0..16 -> 0..255 conversion as train's bundled digits source
        png = io.BytesIO()
        Image.fromarray(np.rint(images[index] * (255.0 / 16.0)).astype(np.uint8), mode="L").save(png, "PNG")
        _write_new(path, png.getvalue())
        examples.append(Example(str(path), _caption("digit", str(label), path.name, "scikit-learn digits"), str(label)))
    return examples
