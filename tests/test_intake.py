"""A learner's own images: every upload form becomes one ImageFolder that `python -m train --data` reads the same
way, and hostile uploads are refused with a message, leaving nothing behind."""
import functools
import io
import stat
import time
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format
import pydicom
import pytest
from pydicom.data import get_testdata_file
from PIL import Image
from sklearn.datasets import load_digits

from _batch_inputs import write_zip
from train.data import class_counts, load_source
from train.intake import DATA_FOLDER, IntakeError, IntakeLimits, read_class_files, read_upload
from zoo.assets import medical_classifier
from zoo.images import load_image


@functools.lru_cache(maxsize=1)
def digits():
    return load_digits()


def digit_png(index: int, size: int = 8) -> bytes:
    """scikit-learn's digit number `index` as PNG bytes (0..16 grey levels scaled to 0..240)."""
    pixels = (digits().images[index] * 15).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((size, size)).save(buffer, format="PNG")
    return buffer.getvalue()


def digits_of(digit: int, count: int) -> list[int]:
    return [int(i) for i in np.flatnonzero(digits().target == digit)[:count]]


def chest_xrays() -> dict[str, list[Path]]:
    by_label: dict[str, list[Path]] = {}
    for path, label in medical_classifier("pneumonia").images():
        by_label.setdefault(label, []).append(path)
    return by_label


def assert_reads_back(report):
    """load_source (what --data uses) finds the same classes, in the report's order, with the same counts."""
    source = load_source(str(report.folder))
    assert source.label_names == [report.class_folders[name] for name in report.label_names]
    assert class_counts(source.samples, source.num_classes) == [report.counts[name] for name in report.label_names]


def assert_left_nothing(tmp_path: Path, job: Path, keep: set[str]):
    """After a refusal: no data folder, no half-built folder in the job, nothing new beside it."""
    assert not job.exists() or list(job.iterdir()) == []
    assert {p.name for p in tmp_path.iterdir()} <= keep | {job.name}


# --- each form reads right ------------------------------------------------------------------------

def test_class_by_class_chest_xrays_with_a_text_file_and_copies(tmp_path):
    xrays = chest_xrays()
    notes = tmp_path / "notes.txt"
    notes.write_text("these are my chest X-rays\n")
    classes = {" Normal  lungs ": xrays["NORMAL"] + [notes, xrays["NORMAL"][0]],  # a text file, a second copy
               "Pneumonia / infected": xrays["PNEUMONIA"] + [xrays["NORMAL"][1]]}  # a normal one filed here too
    report = read_class_files(classes, tmp_path / "job")

    assert report.folder == tmp_path / "job" / DATA_FOLDER
    assert report.label_names == ["Normal lungs", "Pneumonia / infected"]
    assert report.class_folders == {"Normal lungs": "Normal lungs", "Pneumonia / infected": "Pneumonia _ infected"}
    assert report.counts == {"Normal lungs": 8, "Pneumonia / infected": 9}
    reasons = dict(report.skipped)
    assert "text file" in reasons["notes.txt"]
    assert "same file as" in reasons[xrays["NORMAL"][0].name]
    assert report.duplicates == [(xrays["NORMAL"][1].name, ["Normal lungs", "Pneumonia / infected"])]
    assert_reads_back(report)
    text = report.markdown()
    assert "| Normal lungs | 8 |" in text and "| Pneumonia / infected | 9 |" in text
    assert "notes.txt" in text and "more than one class" in text
    # the copies are the uploaded bytes: what trains is what the Compare tab reads from the file
    copy = next((report.folder / "Normal lungs").glob(f"*-{xrays['NORMAL'][2].stem}.jpg"))
    assert copy.read_bytes() == xrays["NORMAL"][2].read_bytes()


def test_zip_of_class_folders_in_a_top_folder_skips_clutter_and_lists_non_images(tmp_path):
    entries = {f"my dataset/{name}/{i}.png": digit_png(i) for name, digit in (("zero", 0), ("one", 1))
               for i in digits_of(digit, 5)}
    entries |= {"my dataset/zero/readme.txt": b"drawn by the class of 2026\n",
                "my dataset/.DS_Store": b"\0\0\0\1Bud1", "__MACOSX/my dataset/zero/._1.png": b"\0\5\26\7",
                "my dataset/one/notes.pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj"}
    report = read_upload(write_zip(tmp_path / "digits.zip", entries), tmp_path / "job")

    assert report.label_names == ["one", "zero"] and report.counts == {"one": 5, "zero": 5}
    reasons = dict(report.skipped)
    assert set(reasons) == {"my dataset/zero/readme.txt", "my dataset/one/notes.pdf"}  # clutter is not listed
    assert "text file" in reasons["my dataset/zero/readme.txt"]
    assert "not a recognised image" in reasons["my dataset/one/notes.pdf"]
    assert_reads_back(report)
    assert [p.name for p in (tmp_path / "job").iterdir()] == [DATA_FOLDER]  # the unpacked upload is gone


def test_zip_with_train_and_test_folders_merges_them_into_classes(tmp_path):
    xrays = chest_xrays()
    entries = {f"chest_xray/{split}/{label}/{path.name}": path.read_bytes()
               for label, paths in xrays.items() for split, part in (("train", paths[:6]), ("test", paths[6:]))
               for path in part}
    report = read_upload(write_zip(tmp_path / "chest_xray.zip", entries), tmp_path / "job")
    assert report.label_names == ["NORMAL", "PNEUMONIA"] and report.counts == {"NORMAL": 8, "PNEUMONIA": 8}
    assert "test/train folders merged" in report.source
    assert_reads_back(report)


def test_zip_with_a_csv_of_file_and_label(tmp_path):
    rows = ["file,label"] + [f"images/{i}.png,digit {d}" for d in (3, 8) for i in digits_of(d, 4)]
    entries = {f"images/{i}.png": digit_png(i) for d in (3, 8) for i in digits_of(d, 4)}
    entries |= {"labels.csv": "\n".join(rows).encode(), "images/extra.png": digit_png(0)}
    report = read_upload(write_zip(tmp_path / "labelled.zip", entries), tmp_path / "job")
    assert report.counts == {"digit 3": 4, "digit 8": 4}
    assert report.skipped == [("images/extra.png", "not named in labels.csv")]
    assert_reads_back(report)


def test_medmnist_npz_becomes_png_files_with_the_same_pixels(tmp_path):
    images = (digits().images[:30] * 15).astype(np.uint8)  # (30, 8, 8)
    labels = (digits().target[:30] % 2).reshape(-1, 1)  # (30, 1): even / odd
    path = tmp_path / "evenodd.npz"
    np.savez(path, train_images=images[:20], train_labels=labels[:20], val_images=images[20:25],
             val_labels=labels[20:25], test_images=images[25:], test_labels=labels[25:])
    report = read_upload(path, tmp_path / "job")
    assert report.label_names == ["0", "1"]
    assert sum(report.counts.values()) == 30 and report.counts["0"] == int((labels == 0).sum())
    assert_reads_back(report)
    written = next((report.folder / "0").glob("*train_images_0*.png"))
    assert np.array_equal(np.asarray(load_image(written).image), images[0])


def test_dicom_files_are_read_by_their_content_even_without_an_extension(tmp_path):
    ct = Path(get_testdata_file("CT_small.dcm", download=False))
    renamed = pydicom.dcmread(ct)
    renamed.PatientName = "Second^Scan"  # other bytes, so not a copy of CT_small.dcm
    buffer = io.BytesIO()
    renamed.save_as(buffer)
    entries = {"ct/CT_small.dcm": ct.read_bytes(), "ct/scan_0002": buffer.getvalue(),
               "mr/MR_small.dcm": Path(get_testdata_file("MR_small.dcm", download=False)).read_bytes(),
               "mr/MR_small_RLE.dcm": Path(get_testdata_file("MR_small_RLE.dcm", download=False)).read_bytes()}
    report = read_upload(write_zip(tmp_path / "scans.zip", entries), tmp_path / "job")
    assert report.counts == {"ct": 2, "mr": 2} and report.skipped == []
    assert sorted(p.suffix for p in report.folder.rglob("*.*")) == [".dcm"] * 4  # the extensionless one too
    assert_reads_back(report)


def test_class_names_are_made_safe_and_never_read_as_splits(tmp_path):
    png = [digit_png(i) for i in range(6)]
    for i, data in enumerate(png):
        (tmp_path / f"{i}.png").write_bytes(data)
    files = [tmp_path / f"{i}.png" for i in range(6)]
    report = read_class_files({"train": files[:2], "test": files[2:4], ".hidden/../x": files[4:]}, tmp_path / "job")
    assert report.class_folders == {"test": "test_class", "train": "train_class", ".hidden/../x": "hidden_.._x"}
    assert_reads_back(report)  # a folder named train/test would make load_source read splits instead of classes
    assert sorted(p.name for p in report.folder.iterdir()) == ["hidden_.._x", "test_class", "train_class"]


def test_a_second_upload_replaces_the_first(tmp_path):
    job = tmp_path / "job"
    make = {f"{n}/{i}.png": digit_png(i) for n, d in (("a", 0), ("b", 1)) for i in digits_of(d, 2)}
    read_upload(write_zip(tmp_path / "first.zip", make), job)
    second = {f"{n}/{i}.png": digit_png(i) for n, d in (("c", 2), ("d", 3)) for i in digits_of(d, 3)}
    report = read_upload(write_zip(tmp_path / "second.zip", second), job)
    assert sorted(p.name for p in report.folder.iterdir()) == ["c", "d"]
    assert sorted(p.name for p in job.iterdir()) == [DATA_FOLDER]


# --- hostile or unusable uploads ------------------------------------------------------------------

def good_classes() -> dict[str, bytes]:
    return {f"{n}/{i}.png": digit_png(i) for n, d in (("zero", 0), ("one", 1)) for i in digits_of(d, 3)}


@pytest.mark.parametrize("name", ["../evil.png", "zero/../../evil.png", "/tmp/evil.png", "C:\\evil.png",
                                  "C:/Windows/evil.png", "zero\\..\\..\\evil.png"])
def test_paths_out_of_the_archive_are_refused(tmp_path, name):
    upload = write_zip(tmp_path / "up.zip", good_classes() | {name: digit_png(0)})
    with pytest.raises(IntakeError, match=r"up\.zip: the entry .* points outside the archive's folder"):
        read_upload(upload, tmp_path / "job")
    assert_left_nothing(tmp_path, tmp_path / "job", {"up.zip"})
    assert not Path("/tmp/evil.png").exists()


def test_symbolic_links_in_the_archive_are_refused(tmp_path):
    upload = write_zip(tmp_path / "up.zip", good_classes())
    with zipfile.ZipFile(upload, "a") as archive:
        link = zipfile.ZipInfo("zero/passwd.png")
        link.create_system = 3  # unix
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(IntakeError, match=r"'zero/passwd.png' is a symbolic link; links are refused"):
        read_upload(upload, tmp_path / "job")
    assert_left_nothing(tmp_path, tmp_path / "job", {"up.zip"})


def write_zero_bomb(path: Path, megabytes: int) -> Path:
    """A zip whose one entry inflates from about 1/1000 of its size: `megabytes` MiB of zeros."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zero/1.png", digit_png(1))
        with archive.open("one/bomb.png", "w", force_zip64=True) as entry:
            block = bytes(1 << 20)
            for _ in range(megabytes):
                entry.write(block)
    return path


def files_over(folder: Path, limit: int, but: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p != but and p.stat().st_size > limit]


@pytest.mark.parametrize("limits, message", [
    (IntakeLimits(), r"would inflate from .* to 67,108,864 bytes \(over 100x\); this looks like a zip bomb"),
    (IntakeLimits(max_total_bytes=8 << 20, max_compression_ratio=10 ** 6),
     r"would inflate to 67,1\d\d,\d\d\d bytes, over the limit of 8,388,608; nothing was unpacked")])
def test_a_zip_bomb_is_refused_without_inflating_it(tmp_path, monkeypatch, limits, message):
    upload = write_zero_bomb(tmp_path / "bomb.zip", megabytes=64)
    assert upload.stat().st_size < 1 << 20
    opened = []  # every entry anything inflates goes through ZipFile.open
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: opened.append(name) or
                        real_open(self, name, *a, **k))
    started = time.perf_counter()
    with pytest.raises(IntakeError, match=message):
        read_upload(upload, tmp_path / "job", limits)
    assert time.perf_counter() - started < 1.0
    assert opened == []  # refused from the zip's directory: not one entry was inflated
    assert files_over(tmp_path, 1 << 20, but=upload) == []
    assert_left_nothing(tmp_path, tmp_path / "job", {"bomb.zip"})


def test_a_zip_entry_that_inflates_past_its_declared_size_is_refused(tmp_path):
    """The header says 1,000 bytes; the data inflate to 4 MiB. Nothing over 1,000 bytes may be written."""
    upload = tmp_path / "liar.zip"
    with zipfile.ZipFile(upload, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zero/1.png", digit_png(1))
        archive.writestr("one/liar.png", bytes(4 << 20))
        real = archive.getinfo("one/liar.png").file_size
        local = archive.getinfo("one/liar.png").header_offset
    data = bytearray(upload.read_bytes())
    central = next(i for i in range(len(data)) if data.startswith(b"PK\1\2", i)  # its central directory entry
                   and data.startswith(b"one/liar.png", i + 46))
    assert int.from_bytes(data[local + 22:local + 26], "little") == real  # the uncompressed size, as written
    data[local + 22:local + 26] = data[central + 24:central + 28] = (1000).to_bytes(4, "little")
    upload.write_bytes(bytes(data))
    with pytest.raises(IntakeError, match=r"'one/liar.png' cannot be unpacked .*damaged"):
        read_upload(upload, tmp_path / "job")
    assert files_over(tmp_path, 1000, but=upload) == []
    assert_left_nothing(tmp_path, tmp_path / "job", {"liar.zip"})


def test_too_many_files_are_refused(tmp_path):
    upload = write_zip(tmp_path / "up.zip", good_classes())
    with pytest.raises(IntakeError, match=r"up\.zip holds more than 5 files; upload at most 5 images"):
        read_upload(upload, tmp_path / "job", IntakeLimits(max_files=5))
    assert_left_nothing(tmp_path, tmp_path / "job", {"up.zip"})


def test_images_over_the_byte_or_pixel_caps_are_skipped_and_listed(tmp_path):
    entries = good_classes() | {"zero/big.png": digit_png(0, size=64), "one/many_pixels.png": digit_png(1, size=40)}
    limits = IntakeLimits(max_image_bytes=1500, max_pixels=40 * 39)
    report = read_upload(write_zip(tmp_path / "up.zip", entries), tmp_path / "job", limits)
    reasons = dict(report.skipped)
    assert len(digit_png(0, size=64)) > 1500 >= len(digit_png(1, size=40))
    assert "over the per-image limit of 1,500 bytes" in reasons["zero/big.png"]
    assert "40x40 = 1,600 pixels is over the limit of 1,560" in reasons["one/many_pixels.png"]
    assert report.counts == {"one": 3, "zero": 3}


def test_a_single_class_is_refused(tmp_path):
    upload = write_zip(tmp_path / "up.zip", {f"dataset/normal/{i}.png": digit_png(i) for i in range(4)})
    with pytest.raises(IntakeError, match=r"found 1 class\(es\) \['normal'\] .* needs at least 2"):
        read_upload(upload, tmp_path / "job")
    assert_left_nothing(tmp_path, tmp_path / "job", {"up.zip"})


def test_a_class_with_one_usable_image_is_refused_naming_the_skipped_one(tmp_path):
    entries = good_classes() | {"rare/1.png": digit_png(5), "rare/2.png": b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"}
    with pytest.raises(IntakeError, match=r"at least 2 images: 'rare' has 1 usable image\(s\); 1 skipped, "
                                          r"e\.g\. rare/2\.png: (corrupt|.*truncated)"):
        read_upload(write_zip(tmp_path / "up.zip", entries), tmp_path / "job")
    assert_left_nothing(tmp_path, tmp_path / "job", {"up.zip"})


def test_class_by_class_needs_names_and_two_classes(tmp_path):
    (tmp_path / "0.png").write_bytes(digit_png(0))
    files = [tmp_path / "0.png"] * 2
    with pytest.raises(IntakeError, match=r"found 1 class\(es\) \['normal'\]"):
        read_class_files({"normal": files}, tmp_path / "job")
    with pytest.raises(IntakeError, match=r"class 2 of the classes given has no name"):
        read_class_files({"normal": files, "  ": files}, tmp_path / "job")
    with pytest.raises(IntakeError, match=r"two classes are named 'Normal' and 'normal'"):
        read_class_files({"Normal": files, "normal ": files}, tmp_path / "job")
    with pytest.raises(IntakeError, match=r"found 11 classes in the classes given, over the limit of 10"):
        read_class_files({f"c{i}": files for i in range(11)}, tmp_path / "job")


@pytest.mark.parametrize("rows, message", [
    (["file,label", "zero/a.png,zero", "zero/b.png,", "one/c.png,one", "one/d.png,one"],
     r"1 row\(s\) of up\.zip/labels\.csv cannot be used \(labels\.csv:3: zero/b\.png: empty 'label'\)"),
    (["file,label", "zero/a.png,zero", "zero/b.png,zero", "one/c.png,one", "one/gone.png,one"],
     r"one/gone\.png: labels\.csv line 5 names it, but no image file for it exists under up\.zip"),
    (["name,kind", "zero/a.png,zero", "one/c.png,one"],
     r"up\.zip/labels\.csv: no image column; looked for .* among the columns \['name', 'kind'\]; rename that "
     r"column to one of those names")])
def test_csv_labels_that_do_not_parse_are_refused(tmp_path, rows, message):
    entries = {name: digit_png(i) for i, name in enumerate(["zero/a.png", "zero/b.png", "one/c.png", "one/d.png"])}
    upload = write_zip(tmp_path / "up.zip", entries | {"labels.csv": "\n".join(rows).encode()})
    with pytest.raises(IntakeError, match=message):
        read_upload(upload, tmp_path / "job")
    assert_left_nothing(tmp_path, tmp_path / "job", {"up.zip"})


def test_a_csv_naming_a_file_outside_the_zip_is_refused(tmp_path):
    secret = tmp_path / "server_image.png"
    secret.write_bytes(digit_png(7))
    rows = ["file,label", "a.png,zero", "b.png,zero", "c.png,one", f"{secret},one", "../../../server_image.png,one"]
    entries = {f"{n}.png": digit_png(i) for i, n in enumerate("abc")} | {"labels.csv": "\n".join(rows).encode()}
    with pytest.raises(IntakeError, match=r"labels\.csv names '.*server_image\.png', a file outside the zip"):
        read_upload(write_zip(tmp_path / "up.zip", entries), tmp_path / "job")
    assert_left_nothing(tmp_path, tmp_path / "job", {"up.zip", "server_image.png"})


@pytest.mark.parametrize("arrays, message", [
    ({"images": np.zeros((4, 8, 8), np.uint8), "labels": np.array([0, 1, 0, 1])},
     r"evenodd\.npz lacks 'train_images'/'train_labels'; it holds \['images', 'labels'\]"),
    ({"train_images": np.zeros((4, 8, 8), np.uint8), "train_labels": np.zeros((4, 1), np.int64)},
     r"evenodd\.npz: the labels hold a single class"),
    ({"train_images": np.zeros((2001, 2, 2), np.uint8), "train_labels": np.arange(2001) % 2},
     r"evenodd\.npz holds 2001 images, over the limit of 2000; save a subset")])
def test_an_npz_without_the_expected_arrays_is_refused(tmp_path, arrays, message):
    path = tmp_path / "evenodd.npz"
    np.savez(path, **arrays)
    with pytest.raises(IntakeError, match=message):
        read_upload(path, tmp_path / "job")
    assert_left_nothing(tmp_path, tmp_path / "job", {"evenodd.npz"})


def test_an_npz_whose_header_claims_a_huge_array_is_refused_before_reading_it(tmp_path):
    header = io.BytesIO()  # a valid .npy header claiming 4 x 8000 x 8000 bytes, followed by 256 bytes
    npy_format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (4, 8000, 8000)})
    labels = io.BytesIO()
    np.save(labels, np.array([0, 1, 0, 1]))
    path = write_zip(tmp_path / "evenodd.npz", {"train_images.npy": header.getvalue() + bytes(256),
                                                "train_labels.npy": labels.getvalue()})
    with pytest.raises(IntakeError, match=r"'train_images.npy' \(uint8, shape \(4, 8000, 8000\)\) is not a plain "
                                          r"numeric array of the size its file holds"):
        read_upload(path, tmp_path / "job")
    assert_left_nothing(tmp_path, tmp_path / "job", {"evenodd.npz"})


@pytest.mark.parametrize("name, content, message", [
    ("broken.zip", b"PK\3\4 this is not really a zip", r"broken\.zip is not a readable zip archive"),
    ("xray.png", digit_png(0), r"xray\.png: a \.png file cannot be read as a data set; upload a \.zip")])
def test_uploads_that_are_not_archives_get_a_message(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(IntakeError, match=message):
        read_upload(tmp_path / name, tmp_path / "job")
    assert_left_nothing(tmp_path, tmp_path / "job", {name})


def test_the_train_tab_caps_each_image_as_the_compare_tab_does(tmp_path):
    """One upload limit for both tabs: an image the Compare tab accepts is not refused for training."""
    from ui.settings import Settings
    compare = Settings(weights=tmp_path)
    intake = IntakeLimits()
    assert compare.max_file_size == "50mb" and intake.max_image_bytes == 50 * 1024**2  # Gradio: 1 MB = 1024**2 B
    assert intake.max_pixels == compare.max_pixels == 40_000_000
