"""The readable image formats are declared once, by the readers registered in zoo.images, and a new reader is
one module plus its registration."""
import ast
import io
from pathlib import Path

import numpy as np
from PIL import Image

import train.data
import zoo.images
from zoo.images import FORMAT_SUFFIXES, IMAGE_SUFFIXES, READERS, load_image
from zoo.images import dispatch
from zoo.images.decoded import Claim, ImageReader, LoadedImage

ROOT = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("zoo", "train", "ui", "benchmarks")
# where suffixes may be written as literals: the readers themselves declare the formats they read
DECLARING_FOLDER = ROOT / "zoo" / "images"
# a different fact, named as such: what a browser shows inline (ui/examples.py), a subset of what can be read
OTHER_FACTS = {"SERVED_SUFFIXES"}


def suffix_literals(path: Path) -> list[str]:
    """'file:line' of every tuple/list/set literal of two or more image suffixes, and of every dict whose values
    are, in `path` (outside an assignment to one of OTHER_FACTS)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    allowed = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Assign)
               and any(isinstance(t, ast.Name) and t.id in OTHER_FACTS for t in node.targets)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            items = node.elts
        elif isinstance(node, ast.Dict):
            items = node.values
        else:
            continue
        suffixes = [i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)
                    and i.value.lower() in IMAGE_SUFFIXES]
        if len(suffixes) >= 2 and id(node) not in allowed:
            shown = path.relative_to(ROOT) if ROOT in path.parents else path.name
            found.append(f"{shown}:{node.lineno} {suffixes}")
    return found


def test_no_second_list_of_image_suffixes_is_typed_outside_the_readers():
    sources = [ROOT / "app.py"] + [p for folder in SOURCE_FOLDERS for p in sorted((ROOT / folder).rglob("*.py"))]
    found = [hit for path in sources if DECLARING_FOLDER not in path.parents for hit in suffix_literals(path)]
    assert found == [], ("image suffixes typed again; import zoo.images.IMAGE_SUFFIXES (or FORMAT_SUFFIXES) "
                         f"instead: {found}")


def test_the_checker_sees_a_second_list(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('EXTENSIONS = (".png", ".jpg")\nFORMATS = {"PNG": ".png", "DICOM": ".dcm"}\n'
                     'SERVED_SUFFIXES = (".png", ".jpg")\nONE = (".png", "x")\n', encoding="utf-8")
    assert [hit.split(" ")[0] for hit in suffix_literals(probe)] == ["probe.py:1", "probe.py:2"]


def test_every_list_of_readable_files_is_the_readers_own():
    assert IMAGE_SUFFIXES == (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".dcm", ".dicom", ".nii",
                              ".nii.gz")
    assert train.data.IMAGE_EXTENSIONS is IMAGE_SUFFIXES
    assert set(FORMAT_SUFFIXES.values()) <= set(IMAGE_SUFFIXES)
    assert [fmt for reader in READERS for fmt in reader.formats] == ["PNG", "JPEG", "BMP", "TIFF", "GIF", "DICOM",
                                                                       "NIfTI"]


def read_toy(fp, name: str, limits) -> LoadedImage:
    """A made-up format: 'TOYIMG', a side length byte, then side*side gray bytes."""
    data = fp.read() if isinstance(fp, io.BytesIO) else Path(fp).read_bytes()
    side = data[6]
    pixels = np.frombuffer(data[7:7 + side * side], dtype=np.uint8).reshape(side, side)
    image = Image.fromarray(pixels, mode="L")
    return LoadedImage(image, {"source": name, "format": "TOY", "original_size": image.size, "notes": [],
                               "mode": "L", "size": image.size})


def test_a_new_reader_is_one_registration(monkeypatch, tmp_path):
    toy = ImageReader(formats=("TOY",), suffixes=(".toy",), format_suffixes={"TOY": ".toy"},
                      claim=lambda head, name: Claim.SURE if head.startswith(b"TOYIMG") else Claim.NO, read=read_toy)
    path = tmp_path / "scan.toy"
    path.write_bytes(b"TOYIMG\x02" + bytes([0, 85, 170, 255]))
    before = str(_error_of(path))
    assert "not a recognised image; its content is not PNG, JPEG, BMP, TIFF, GIF, DICOM or NIfTI" in before
    monkeypatch.setattr(dispatch, "READERS", dispatch.READERS + (toy,))
    loaded = load_image(path)
    assert loaded.info["format"] == "TOY" and np.asarray(loaded.image).tolist() == [[0, 85], [170, 255]]
    assert "PNG, JPEG, BMP, TIFF, GIF, DICOM, NIfTI or TOY" in str(_error_of(tmp_path / "x.bin", b"\x01\x02\x03\x04"))
    assert zoo.images.load_image is load_image


def _error_of(path: Path, content: bytes | None = None) -> Exception:
    if content is not None:
        path.write_bytes(content)
    try:
        load_image(path)
    except zoo.images.ImageLoadError as exc:
        return exc
    raise AssertionError(f"{path.name} was read")
