"""Inputs of the batch-classification tests: class folders of scikit-learn's digits (real images, written as PNG
here), a corrupt PNG, a DICOM outside the class folders and a note, as a folder or a .zip."""
import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.data import get_testdata_file

CLASSES = ("0", "1", "2")
PER_CLASS = 3


def digit_png(index: int) -> bytes:
    """scikit-learn's digit number `index` as an 8x8 grey PNG (0..16 grey levels scaled to 0..240)."""
    from ui.examples import digits

    images, _ = digits()
    buffer = io.BytesIO()
    Image.fromarray((images[index] * 15).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def digits_of(digit: str, count: int) -> list[int]:
    from ui.examples import digits

    _, targets = digits()
    return [int(i) for i in np.flatnonzero(np.asarray(targets) == int(digit))[:count]]


def class_folder_entries() -> dict[str, bytes]:
    """path in the folder -> bytes: PER_CLASS digits per class folder, a corrupt PNG, a DICOM and a note."""
    entries = {f"{c}/{i}.png": digit_png(i) for c in CLASSES for i in digits_of(c, PER_CLASS)}
    good = entries[next(iter(entries))]
    entries["1/corrupt.png"] = good[: len(good) // 2]
    entries["scan.dcm"] = Path(get_testdata_file("CT_small.dcm", download=False)).read_bytes()
    entries["notes.txt"] = b"the labels are the folder names\n"
    return entries


def write_folder(root: Path, entries: dict[str, bytes]) -> Path:
    for name, data in entries.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path
