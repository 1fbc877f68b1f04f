"""Data sources, splits and bad input: each problem gets a message naming the file or column."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _toy_images import toy_image
from train.data import (DataError, ImageDataset, class_counts, load_source, make_splits,
                        split_record, verify_images)


def make_folder(root, classes=("a", "b", "c"), per_class=8, modes=("L",)):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            gray = toy_image(c, 100 * c + i, size=24)
            mode = modes[i % len(modes)]
            if mode == "I;16":  # 16-bit: scaled, not clipped
                Image.fromarray(gray.astype(np.uint16) * 257).save(root / name / f"{i}.png")
            elif mode == "RGBA":
                Image.fromarray(gray).convert("RGBA").save(root / name / f"{i}.png")
            elif mode == "P":
                Image.fromarray(gray).convert("P").save(root / name / f"{i}.png")
            elif mode == "CMYK":
                Image.fromarray(gray).convert("CMYK").save(root / name / f"{i}.jpg")
            else:
                Image.fromarray(gray).convert(mode).save(root / name / f"{i}.png")
    return root


def test_digits_split_is_stratified_reproducible_and_disjoint():
    source = load_source("digits")
    assert source.num_classes == 10 and len(source.samples) == 1797
    a = make_splits(source, 0.15, 0.15, seed=7)
    b = make_splits(source, 0.15, 0.15, seed=7)
    assert [s.key for s in a.test] == [s.key for s in b.test]
    assert len(a.test) == 270 and len(a.val) == 270 and len(a.train) == 1257
    keys = [set(s.key for s in part) for _, part in a.items()]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    counts = class_counts(a.test, 10)
    assert max(counts) - min(counts) <= 2  # stratified: every digit ~27 times
    c = make_splits(source, 0.15, 0.15, seed=8)
    assert [s.key for s in c.test] != [s.key for s in a.test]


def test_split_record_lists_every_image(tmp_path):
    source = load_source(str(make_folder(tmp_path / "d", per_class=10)))
    splits = make_splits(source, 0.2, 0.2, seed=1)
    record = split_record(source, splits, 1, 0.2, 0.2)
    json.dumps(record)
    listed = [k for name in ("train", "val", "test") for k, _ in record[name]]
    assert sorted(listed) == sorted(s.key for s in source.samples)
    assert record["label_names"] == ["a", "b", "c"] and record["counts"]["test"] == {"a": 2, "b": 2, "c": 2}


def test_image_folder_with_its_own_split(tmp_path):
    root = tmp_path / "split"
    make_folder(root / "train", per_class=6)
    make_folder(root / "test", per_class=3)
    source = load_source(str(root))
    splits = make_splits(source, 0.25, 0.15, seed=0)
    assert splits.predefined
    assert len(splits.test) == 9 and all(s.key.startswith("test/") for s in splits.test)
    # no val folder: validation is carved from train, never from test
    assert all(s.key.startswith("train/") for s in splits.val + splits.train)


def test_odd_image_modes_are_converted_for_the_model(tmp_path):
    root = make_folder(tmp_path / "modes", per_class=5, modes=("L", "RGBA", "P", "I;16", "CMYK"))
    source = verify_images(load_source(str(root)))
    assert len(source.samples) == 15 and not source.skipped
    for in_chans, mode in ((1, "L"), (3, "RGB")):
        ds = ImageDataset(source, source.samples, transform=lambda im: im, in_chans=in_chans)
        images = [ds[i][0] for i in range(len(ds))]
        assert {im.mode for im in images} == {mode}
    # the 16-bit file (the 8-bit picture times 257) is scaled linearly, not clipped to white
    ds = ImageDataset(source, source.samples, transform=lambda im: np.asarray(im), in_chans=1)
    sixteen = next(i for i, s in enumerate(source.samples) if s.key == "a/3.png")
    pixels, original = ds[sixteen][0].astype(float), toy_image(0, 3, size=24).astype(float)
    assert np.corrcoef(pixels.ravel(), original.ravel())[0, 1] > 0.999
    assert (pixels == 255).mean() < 0.05 and pixels.max() - pixels.min() > 200


def test_corrupt_images_are_skipped_and_listed_or_fatal_with_strict(tmp_path):
    root = make_folder(tmp_path / "bad", per_class=6)
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (root / "b" / "empty.jpg").write_bytes(b"")
    source = verify_images(load_source(str(root)))
    assert len(source.samples) == 18
    assert sorted(s.key for s in source.skipped) == ["a/broken.png", "b/empty.jpg"]
    with pytest.raises(DataError, match="broken.png|empty.jpg"):
        verify_images(load_source(str(root)), strict=True)


def test_empty_class_folder_is_named(tmp_path):
    root = make_folder(tmp_path / "d", per_class=4)
    (root / "empty_class").mkdir()
    (root / "empty_class" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="empty_class has no image files"):
        load_source(str(root))


def test_single_class_is_refused(tmp_path):
    root = make_folder(tmp_path / "one", classes=("only",), per_class=5)
    with pytest.raises(DataError, match="at least 2 classes"):
        load_source(str(root))


def test_folder_without_class_subfolders(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    Image.fromarray(toy_image(0, 0, size=24)).save(root / "x.png")
    with pytest.raises(DataError, match="no class subfolders.*x.png"):
        load_source(str(root))


def test_spec_matching_nothing(tmp_path):
    with pytest.raises(DataError, match="matches nothing.*digits"):
        load_source(str(tmp_path / "no_such_data"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"\.txt file"):
        load_source(str(tmp_path / "notes.txt"))


def _write_csv(path, rows, header):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _ham_like(tmp_path, n_per_class=6):
    """HAM10000's layout: image ids without extension in subfolders, lesion ids, metadata."""
    images = tmp_path / "ham"
    (images / "part_1").mkdir(parents=True)
    (images / "part_2").mkdir(parents=True)
    rows = []
    for c, dx in enumerate(("bkl", "mel", "nv")):
        for i in range(n_per_class):
            image_id = f"ISIC_{c}{i:04d}"
            part = "part_1" if i % 2 else "part_2"
            Image.fromarray(toy_image(c, 10 * c + i, size=24)).convert("RGB").save(images / part / f"{image_id}.jpg")
            rows.append([f"HAM_{c}{i // 2:03d}", image_id, dx, "histo", 30 + i * 5 if i != 3 else "",
                         ("male", "female", "unknown")[i % 3], ("back", "face", "lower extremity")[i % 3]])
    header = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
    return _write_csv(images / "HAM10000_metadata.csv", rows, header), images


def test_ham10000_csv_layout_works_as_it_comes(tmp_path):
    path, images = _ham_like(tmp_path)
    source = load_source(str(path))
    assert source.label_names == ["bkl", "mel", "nv"] and len(source.samples) == 18
    assert source.metadata_fields == ["age", "sex", "localization"]
    first = source.samples[0]
    assert first.metadata == {"age": 30.0, "sex": "male", "localization": "back"}
    assert source.samples[3].metadata["age"] is None  # empty age -> unknown
    assert source.samples[2].metadata["sex"] is None  # 'unknown' -> unknown
    splits = make_splits(source, 0.2, 0.2, seed=3)
    # images of one lesion never straddle two splits
    where = {}
    for name, part in splits.items():
        for s in part:
            assert where.setdefault(s.group, name) == name


def test_csv_missing_column_is_named(tmp_path):
    path = _write_csv(tmp_path / "labels.csv", [["x.png", "1"]], ["file_name", "y"])
    with pytest.raises(DataError, match=r"no image column.*'file_name'.*--image-col"):
        load_source(str(path))
    with pytest.raises(DataError, match=r"--label-col column 'dx' is missing.*'file_name', 'y'"):
        load_source(str(path), image_col="file_name", label_col="dx")


def test_csv_labels_without_image_are_skipped_and_listed(tmp_path):
    path, images = _ham_like(tmp_path)
    with open(path, "a", newline="") as f:
        csv.writer(f).writerow(["HAM_999", "ISIC_missing", "nv", "histo", "40", "male", "back"])
    source = load_source(str(path))
    assert [s.key for s in source.skipped] == ["ISIC_missing"]
    assert "no image file" in source.skipped[0].reason
    with pytest.raises(DataError, match="ISIC_missing"):
        verify_images(source, strict=True)


def test_csv_whose_images_are_all_missing(tmp_path):
    path = _write_csv(tmp_path / "meta.csv", [["ISIC_1", "nv"], ["ISIC_2", "mel"]], ["image_id", "dx"])
    with pytest.raises(DataError, match=r"none of the 2 rows.*ISIC_1.*--image-dir"):
        load_source(str(path))


def test_medmnist_npz(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 30), ("val", 9), ("test", 9)):
        arrays[f"{split}_images"] = rng.integers(0, 255, size=(n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 3).reshape(n, 1)
    np.savez(tmp_path / "pathmnist.npz", **arrays)
    source = load_source(str(tmp_path / "pathmnist.npz"))
    splits = make_splits(source, 0.15, 0.15, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 9, 9) and splits.predefined
    ds = ImageDataset(source, splits.test, transform=np.asarray, in_chans=3)
    assert ds[0][0].shape == (28, 28, 3)
    assert np.array_equal(ds[0][0][..., 0], arrays["test_images"][0])

    np.savez(tmp_path / "chestmnist.npz", train_images=arrays["train_images"],
             train_labels=rng.integers(0, 2, size=(30, 14)))
    with pytest.raises(DataError, match="multi-label"):
        load_source(str(tmp_path / "chestmnist.npz"))
    np.savez(tmp_path / "other.npz", x=arrays["train_images"])
    with pytest.raises(DataError, match="lacks 'train_images'"):
        load_source(str(tmp_path / "other.npz"))


def test_too_few_images_for_a_split(tmp_path):
    root = make_folder(tmp_path / "tiny", per_class=2)
    with pytest.raises(DataError):
        make_splits(load_source(str(root)), 0.5, 0.45, seed=0)


def _medmnist_arrays(size: int, n: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {f"{s}_{k}": v for s in ("train", "val", "test") for k, v in (
        ("images", rng.integers(0, 255, size=(n, size, size), dtype=np.uint8)),
        ("labels", (np.arange(n) % 2).reshape(n, 1)))}


def test_medmnist_spec_without_the_package_says_what_to_do(monkeypatch, tmp_path):
    import sys
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "medmnist", None)  # import fails as if not installed
    with pytest.raises(DataError, match=r"pneumoniamnist.npz is not there.*medtl-zoo\[medmnist\].*\.medmnist"):
        load_source("medmnist:pneumoniamnist")
    with pytest.raises(DataError, match="SIZE '32' is not one of MedMNIST's sizes 28, 64, 128, 224"):
        load_source("medmnist:pneumoniamnist:32")


def test_medmnist_file_already_in_the_package_folder_needs_no_package_or_network(monkeypatch, tmp_path):
    import sys
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "medmnist", None)
    (tmp_path / ".medmnist").mkdir()
    np.savez(tmp_path / ".medmnist" / "breastmnist_64.npz", **_medmnist_arrays(64))
    source = load_source("medmnist:breastmnist:64")
    assert source.array.shape == (36, 64, 64) and source.spec == "medmnist:breastmnist:64"
    assert source.label_names == ["0", "1"]  # the package, when installed, names them


def _fake_medmnist(url: str):
    """A stand-in with the medmnist package's interface (INFO with the file's URL, classes, root, FLAG_SIZE.npz)."""
    import types

    class BreastMNIST:
        def __init__(self, split, download=False, size=None, root=None):
            np.savez(Path(root) / f"breastmnist_{size}.npz", **_medmnist_arrays(size))

    return types.SimpleNamespace(INFO={"breastmnist": {"python_class": "BreastMNIST", "url_64": url,
                                                       "label": {"0": "malignant", "1": "normal"}}},
                                 BreastMNIST=BreastMNIST)


def test_medmnist_spec_loads_what_the_package_downloads(tmp_path, monkeypatch):
    import socket
    import sys
    monkeypatch.setenv("HOME", str(tmp_path))
    with socket.socket() as host:  # a listening data host
        host.bind(("127.0.0.1", 0))
        host.listen()
        fake = _fake_medmnist(f"http://127.0.0.1:{host.getsockname()[1]}/breastmnist_64.npz")
        monkeypatch.setitem(sys.modules, "medmnist", fake)
        source = load_source("medmnist:breastmnist:64")
    assert source.label_names == ["malignant", "normal"] and source.array.shape == (36, 64, 64)
    assert source.spec == "medmnist:breastmnist:64"
    assert (tmp_path / ".medmnist" / "breastmnist_64.npz").is_file()  # where the package keeps it
    with pytest.raises(DataError, match="unknown MedMNIST flag"):
        load_source("medmnist:nosuchmnist")


def test_medmnist_download_fails_within_seconds_when_its_host_is_unreachable(tmp_path, monkeypatch):
    import socket
    import sys
    import time
    monkeypatch.setenv("HOME", str(tmp_path))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setitem(sys.modules, "medmnist", _fake_medmnist(f"http://127.0.0.1:{closed}/breastmnist_64.npz"))
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"data host 127.0.0.1 cannot be reached.*put it at .*breastmnist_64.npz"):
        load_source("medmnist:breastmnist:64")
    assert time.perf_counter() - start < 5
