"""The app's example images: digits from the demo data and real scans that ship inside installed packages.

They are written into a temporary folder (the only extra folder the app serves), never into the repository.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["EXAMPLE_DIGITS", "digits", "digit_examples", "package_dir", "write_examples"]

EXAMPLE_DIGITS = (0, 3, 7)


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


def write_examples(folder: Path, weights: Path) -> list[tuple[str, str]]:
    """Write the example images into `folder`: digits from the demo data and medical images that ship
    inside scikit-image and pydicom. Returns (path, label) pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    examples = []
    picks = digit_examples(weights)
    images, labels = (None, None)
    if picks is None:  # no digits run: the first image of each class
        images, labels = digits()
        picks = [(int(np.flatnonzero(labels == c)[0]), c) for c in EXAMPLE_DIGITS]
    for index, label in picks:
        path = folder / f"digit-{label}-{index}.png"
        if not path.is_file():
            if images is None:
                images, labels = digits()
            # the same 0..16 -> 0..255 conversion as train's bundled digits source
            Image.fromarray(np.rint(images[index] * (255.0 / 16.0)).astype(np.uint8), mode="L").save(path)
        examples.append((str(path), f"digit {label} (demo data)"))
    packaged = [(package_dir("skimage") / "data" / "retina.jpg", "retina.jpg: fundus photo (scikit-image)"),
                (package_dir("pydicom") / "data" / "test_files" / "CT_small.dcm", "CT_small.dcm: CT slice (pydicom)"),
                (package_dir("pydicom") / "data" / "test_files" / "MR_small.dcm", "MR_small.dcm: MR slice (pydicom)")]
    for source, label in packaged:
        if source.is_file():
            target = folder / source.name
            if not target.is_file() or target.stat().st_size != source.stat().st_size:
                shutil.copyfile(source, target)
            examples.append((str(target), label))
    return examples
