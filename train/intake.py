"""A learner's own images (class by class, one .zip, or a MedMNIST .npz) read into one checked ImageFolder.

Every form ends as ``<job_dir>/data/<class folder>/<image>``, which ``train.data.load_source`` (and
``python -m train --data``) reads as it is, plus an :class:`IntakeReport` of what was read, skipped and
found twice. Uploads are treated as hostile: archive entries never leave the job folder (``..``,
absolute paths, drive letters and links are refused), sizes are capped from the zip's directory and
again while inflating (zoo.archives: the checks every zip upload goes through), and each image is
decoded with ``zoo.images.load_image``, the reader of the Compare tab, so what trains is what the app
would read. Every refusal raises :class:`IntakeError` before anything trains, and leaves nothing behind:
the folder is built in a hidden folder of ``job_dir`` and only renamed into place once complete.

One cohesive thing, kept in one module near 500 lines: the three forms (class by class, zip, .npz) are
thin readers that feed one builder, and all of them share the limits, the refusal messages and the
candidate type; split apart they would only pass those across files.
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
import shutil
import stat
import tempfile
import unicodedata
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping, Sequence

import numpy as np
from numpy.lib import format as npy_format
from PIL import Image

from zoo.archives import ArchiveError, ArchiveLimits, extract_members, plan_members, too_large
from zoo.images import FORMAT_SUFFIXES, MAX_IMAGE_PIXELS, ImageLoadError, load_image
from zoo.upload_limits import MAX_ARCHIVE_BYTES, MAX_ARCHIVE_FILES, MAX_UPLOAD_BYTES

from ._errors import DataError
from .data import SPLIT_ALIASES, load_csv, load_npz

__all__ = ["IntakeLimits", "IntakeReport", "IntakeError", "read_upload", "read_class_files", "DATA_FOLDER",
           "MAX_CLASS_NAME_CHARS"]

DATA_FOLDER = "data"  # the normalised ImageFolder's name inside job_dir
MAX_CLASS_NAME_CHARS = 60  # 60 characters of UTF-8 stay under the 255-byte limit of a folder name
MAX_LISTED = 25  # skipped files and duplicates shown in the report's text; the lists keep them all

_UNSAFE_IN_FOLDER_NAME = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


class IntakeError(DataError):
    """An upload that cannot become training data; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class IntakeLimits:
    """Caps on one upload. The per-image caps are the Compare tab's defaults, imported from zoo."""

    max_files: int = MAX_ARCHIVE_FILES
    max_total_bytes: int = MAX_ARCHIVE_BYTES  # uncompressed
    max_image_bytes: int = MAX_UPLOAD_BYTES  # ZOO_APP_MAX_FILE_SIZE's default
    max_pixels: int = MAX_IMAGE_PIXELS  # ZOO_APP_MAX_PIXELS's default
    max_compression_ratio: int = 100  # a zip entry over 1 MiB inflating more than this is a zip bomb (zoo.archives)
    min_per_class: int = 2
    min_classes: int = 2
    max_classes: int = 10

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"IntakeLimits.{item.name} must be a positive int, got {value!r}")
        if not 2 <= self.min_classes <= self.max_classes:
            raise ValueError(f"IntakeLimits needs 2 <= min_classes <= max_classes, got {self.min_classes} and "
                             f"{self.max_classes}")

    def archive(self) -> ArchiveLimits:
        """The caps zoo.archives applies to a zip upload."""
        return ArchiveLimits(max_files=self.max_files, max_total_bytes=self.max_total_bytes,
                             max_member_bytes=self.max_image_bytes, max_compression_ratio=self.max_compression_ratio)


@dataclass
class IntakeReport:
    """What an upload became: the ImageFolder to train on, and what was read, skipped and found twice."""

    folder: Path  # the normalised ImageFolder: pass str(folder) to load_source / --data
    label_names: list[str]  # display names, in load_source's class order (sorted folder names)
    counts: dict[str, int]  # images per class
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name as uploaded, reason)
    duplicates: list[tuple[str, list[str]]] = field(default_factory=list)  # identical bytes in several classes
    class_folders: dict[str, str] = field(default_factory=dict)  # display name -> its folder name under `folder`
    source: str = ""  # what was read, in words

    def markdown(self) -> str:
        """The report for the tab: classes and counts, skipped files with reasons, duplicates across classes."""
        total = sum(self.counts.values())
        lines = [f"**Read {total} images in {len(self.label_names)} classes** from {_md(self.source)}.", "",
                 "| Class | Images |", "|---|---:|"]
        lines += [f"| {_md(name)} | {self.counts[name]} |" for name in self.label_names]
        if self.skipped:
            lines += ["", f"**{len(self.skipped)} file(s) skipped**, not used for training:"]
            lines += [f"- {_md(name)}: {_md(reason)}" for name, reason in self.skipped[:MAX_LISTED]]
            lines += [f"- ... and {len(self.skipped) - MAX_LISTED} more"] if len(self.skipped) > MAX_LISTED else []
        else:
            lines += ["", "No file was skipped."]
        if self.duplicates:
            lines += ["", f"**{len(self.duplicates)} image(s) are in more than one class** (identical files). One "
                          "picture cannot teach two answers: keep each in its right class only, or the model learns "
                          "noise and its measured accuracy suffers."]
            lines += [f"- {_md(name)}: in {', '.join(_md(label) for label in labels)}"
                      for name, labels in self.duplicates[:MAX_LISTED]]
            lines += [f"- ... and {len(self.duplicates) - MAX_LISTED} more"] \
                if len(self.duplicates) > MAX_LISTED else []
        return "\n".join(lines)


def read_upload(path: str | Path, job_dir: Path, limits: IntakeLimits = IntakeLimits()) -> IntakeReport:
    """Read one upload into ``job_dir/data``: a .zip of class folders, a .zip with a CSV of file,label, or a
    MedMNIST .npz. A previous ``job_dir/data`` is replaced; an IntakeError leaves ``job_dir`` as it was."""
    path = Path(path)
    upload = path.name
    if not path.is_file():
        raise IntakeError(f"{upload}: no such file ({path}); upload it again")
    suffix = path.suffix.lower()
    if suffix == ".zip":
        return _transaction(Path(job_dir), partial(_read_zip, path, upload, limits))
    if suffix == ".npz":
        return _transaction(Path(job_dir), partial(_read_npz, path, upload, limits))
    raise IntakeError(f"{upload}: a {suffix or 'extensionless'} file cannot be read as a data set; upload a .zip "
                      "(a folder per class, or images with a CSV of file,label) or a MedMNIST .npz, or add single "
                      "images class by class")


def read_class_files(classes: Mapping[str, Sequence[str | Path]], job_dir: Path,
                     limits: IntakeLimits = IntakeLimits()) -> IntakeReport:
    """Read images given class by class ({class name: [image paths]}) into ``job_dir/data``; each class name
    (as the learner typed it) gets a safe folder name, and stays the display name in the report."""
    labels = [_display_name(name) for name in classes]
    _check_labels(labels, "the classes given", limits)
    files = sum(len(paths) for paths in classes.values())
    if files > limits.max_files:
        raise IntakeError(f"{files} images were added, over the limit of {limits.max_files}; use fewer images "
                          "per class")
    candidates: list[_Candidate] = []
    skipped: list[tuple[str, str]] = []
    total = 0
    for label, paths in zip(labels, classes.values()):
        for given in paths:
            path = Path(given)
            try:
                size = path.stat().st_size
            except OSError as e:
                skipped.append((path.name, f"cannot be read ({e.strerror}); add it again"))
                continue
            if size > limits.max_image_bytes:
                skipped.append((path.name, _too_large(size, limits)))
                continue
            total += size
            candidates.append(_Candidate(path.name, label, partial(_read_file, path, limits.max_image_bytes)))
    if total > limits.max_total_bytes:
        raise IntakeError(f"the images add up to {total:,} bytes, over the limit of {limits.max_total_bytes:,}; "
                          "use fewer or smaller images")
    source = f"{files} file(s) added class by class"
    job_dir = Path(job_dir)
    return _transaction(job_dir, lambda build: _build(candidates, labels, build, job_dir, limits, skipped, source))


# --- building the folder (shared by every form) ---------------------------------------------------

class _Skip(Exception):
    """A file that is left out, with the reason the report gives."""


@dataclass(frozen=True)
class _Candidate:
    name: str  # as uploaded: what the report calls it
    label: str  # display name of its class
    read: Callable[[], bytes]  # its bytes; raises _Skip


@dataclass(frozen=True)
class _Taken:
    sha256: str | None = None
    path: Path | None = None  # where the checked copy was written
    problem: str | None = None


def _transaction(job_dir: Path, build_into: Callable[[Path], IntakeReport]) -> IntakeReport:
    """Build in a hidden folder of job_dir, then rename its data folder into place; on any error remove it."""
    job_dir.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=".intake-", dir=job_dir))
    try:
        report = build_into(build)
        final = job_dir / DATA_FOLDER
        if final.exists():  # a new upload replaces the job's previous data
            shutil.rmtree(final)
        (build / DATA_FOLDER).rename(final)
        return report
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _build(candidates: list[_Candidate], labels: list[str], build: Path, job_dir: Path, limits: IntakeLimits,
           skipped: list[tuple[str, str]], source: str) -> IntakeReport:
    """Decode and copy every candidate into build/data/<class folder>/, drop exact copies within a class,
    list copies across classes, and check the classes' sizes."""
    _check_labels(labels, "the upload", limits)
    folders = _folder_names(labels)
    data = build / DATA_FOLDER
    for folder in folders.values():
        (data / folder).mkdir(parents=True)
    targets = [data / folders[c.label] / f"{i:05d}-{_safe_stem(c.name)}" for i, c in enumerate(candidates)]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # Pillow decodes without the GIL
        taken = list(pool.map(partial(_take, limits=limits), candidates, targets))
    counts, duplicates, problems = _keep_unique(candidates, taken, labels, skipped)
    _check_class_sizes(counts, problems, limits)
    order = sorted(labels, key=lambda label: folders[label])  # load_source sorts the class folders
    return IntakeReport(folder=Path(job_dir) / DATA_FOLDER, label_names=order,
                        counts={label: counts[label] for label in order}, skipped=skipped,
                        duplicates=duplicates, class_folders={label: folders[label] for label in order},
                        source=source)


def _take(candidate: _Candidate, target: Path, limits: IntakeLimits) -> _Taken:
    """Read, decode (as the app would) and write one image; or say why it is skipped."""
    try:
        data = candidate.read()
        loaded = load_image(data, max_pixels=limits.max_pixels)
    except _Skip as e:
        return _Taken(problem=str(e))
    except ImageLoadError as e:
        return _Taken(problem=str(e).removeprefix("<bytes>: "))
    except (OSError, ValueError, MemoryError) as e:  # what a decoder may raise beyond load_image's own errors
        return _Taken(problem=f"cannot be decoded ({type(e).__name__}: {e})")
    suffix = FORMAT_SUFFIXES.get(str(loaded.info.get("format")), ".png")
    path = target.with_name(target.name + suffix)
    with open(path, "xb") as f:
        f.write(data)
    return _Taken(hashlib.sha256(data).hexdigest(), path)


def _keep_unique(candidates: list[_Candidate], taken: list[_Taken], labels: list[str],
                 skipped: list[tuple[str, str]]
                 ) -> tuple[dict[str, int], list[tuple[str, list[str]]], dict[str, list[str]]]:
    """-> (images per class, identical files in several classes, skip reasons per class). A second copy of
    a file in one class is removed: it could land in both the training and the test fold."""
    counts = {label: 0 for label in labels}
    problems: dict[str, list[str]] = {label: [] for label in labels}
    first_of: dict[tuple[str, str], str] = {}  # (sha256, class) -> the first name with those bytes there
    classes_of: dict[str, list[str]] = {}  # sha256 -> the classes holding those bytes
    first_name: dict[str, str] = {}
    for candidate, result in zip(candidates, taken):
        reason = result.problem
        if reason is None and (result.sha256, candidate.label) in first_of:
            result.path.unlink()
            reason = (f"the same file as {first_of[result.sha256, candidate.label]} in class "
                      f"'{candidate.label}'; one copy is kept (a second could be both trained and tested on)")
        if reason is not None:
            skipped.append((candidate.name, reason))
            problems[candidate.label].append(f"{candidate.name}: {reason}")
            continue
        first_of[result.sha256, candidate.label] = candidate.name
        first_name.setdefault(result.sha256, candidate.name)
        classes_of.setdefault(result.sha256, []).append(candidate.label)
        counts[candidate.label] += 1
    duplicates = [(first_name[sha], found) for sha, found in classes_of.items() if len(found) > 1]
    return counts, duplicates, problems


def _check_class_sizes(counts: dict[str, int], problems: dict[str, list[str]], limits: IntakeLimits) -> None:
    small = [label for label, n in counts.items() if n < limits.min_per_class]
    if not small:
        return
    described = []
    for label in small:
        why = f"; {len(problems[label])} skipped, e.g. {problems[label][0]}" if problems[label] else ""
        described.append(f"'{label}' has {counts[label]} usable image(s){why}")
    raise IntakeError(f"every class needs at least {limits.min_per_class} images: {'; '.join(described)}. Add "
                      "images to the class, or remove it")


def _check_labels(labels: list[str], what: str, limits: IntakeLimits) -> None:
    """Class names: present, short, distinct (ignoring case), and between min_classes and max_classes."""
    for position, label in enumerate(labels, start=1):
        if not label:
            raise IntakeError(f"class {position} of {what} has no name; give it one")
        if len(label) > MAX_CLASS_NAME_CHARS:
            raise IntakeError(f"the class name '{label[:40]}...' is {len(label)} characters long; shorten it to "
                              f"at most {MAX_CLASS_NAME_CHARS}")
    seen: dict[str, str] = {}
    for label in labels:
        if label.casefold() in seen:
            raise IntakeError(f"two classes are named '{seen[label.casefold()]}' and '{label}' (the same name, "
                              "ignoring case and spaces); give each class its own name, or merge them")
        seen[label.casefold()] = label
    if len(labels) < limits.min_classes:
        raise IntakeError(f"found {len(labels)} class(es) {labels} in {what}; learning to tell classes apart needs "
                          f"at least {limits.min_classes}: add images of another class")
    if len(labels) > limits.max_classes:
        raise IntakeError(f"found {len(labels)} classes in {what}, over the limit of {limits.max_classes}; merge "
                          "or remove some classes")


def _display_name(text: str) -> str:
    """A class name as shown: Unicode NFC (macOS zips spell 'é' in two code points), single spaces, trimmed."""
    return " ".join(unicodedata.normalize("NFC", str(text)).split())


def _folder_names(labels: list[str]) -> dict[str, str]:
    """A safe, distinct folder name for each display name; the name itself wherever it is safe."""
    folders: dict[str, str] = {}
    taken: set[str] = set()
    for label in labels:
        base = _UNSAFE_IN_FOLDER_NAME.sub("_", label).strip(" .") or "class"  # a leading dot hides a folder
        if base.lower() in SPLIT_ALIASES:  # load_source reads a folder named train/val/test as a split
            base += "_class"
        name, n = base, 2
        while name.casefold() in taken:
            name, n = f"{base}-{n}", n + 1
        taken.add(name.casefold())
        folders[label] = name
    return folders


def _safe_stem(name: str) -> str:
    stem = PurePosixPath(name.replace("\\", "/")).stem
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:40] or "image"


def _read_file(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (read at most limit + 1, whatever stat said)."""
    try:  # O_NONBLOCK: a named pipe must not block the open
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise _Skip(f"cannot be read ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise _Skip("not a regular file (a folder, a device or a pipe)")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise _Skip(f"over {limit:,} bytes, the per-image limit; downscale or re-compress it")
    return data


def _too_large(size: int, limits: IntakeLimits) -> str:
    return too_large(size, limits.max_image_bytes)


def _md(text: str) -> str:
    """Text safe inside Markdown (a table cell or a list item): special characters escaped, one line."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


# --- zip archives ---------------------------------------------------------------------------------

def _read_zip(path: Path, upload: str, limits: IntakeLimits, build: Path) -> IntakeReport:
    """Unpack the checked entries into build/upload, then read them as class folders or through their CSV."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise IntakeError(f"{upload} is not a readable zip archive ({e}); zip the class folders again and "
                          "upload the .zip") from None
    staging = build / "upload"
    try:
        with archive:  # the archive checks every zip upload goes through (zoo.archives)
            members, skipped = plan_members(archive, upload, limits.archive())
            files = extract_members(archive, members, staging, upload, limits.archive())
    except ArchiveError as e:
        raise IntakeError(str(e)) from None
    tables = sorted(p for p in files if p.suffix.lower() in (".csv", ".tsv"))
    if len(tables) > 1:
        raise IntakeError(f"{upload} holds {len(tables)} CSV files {[t.as_posix() for t in tables]}; keep the one "
                          "that labels the images")
    if tables:
        candidates, source = _csv_candidates(tables[0], files, staging, upload, limits, skipped)
    else:
        candidates, source = _folder_candidates(files, upload, limits, skipped)
    labels = list(dict.fromkeys(c.label for c in candidates))
    return _build(candidates, labels, build, build.parent, limits, skipped, source)


def _folder_candidates(files: dict[PurePosixPath, Path], upload: str, limits: IntakeLimits,
                       skipped: list[tuple[str, str]]) -> tuple[list[_Candidate], str]:
    """cls/x.png, or with wrapping folders (dataset/cls/x.png) and split folders (train/cls/x.png) merged."""
    paths = sorted(files)
    depth, merged = _class_depth(paths)
    candidates = []
    for relative in paths:
        if len(relative.parts) <= depth + 1:
            skipped.append((relative.as_posix(), "not inside a class folder; put each image in its class's folder"))
            continue
        candidates.append(_Candidate(relative.as_posix(), _display_name(relative.parts[depth]),
                                     partial(_read_file, files[relative], limits.max_image_bytes)))
    if not candidates:
        raise IntakeError(f"{upload} holds no class folders; expected a folder per class with its images "
                          "(normal/001.png, pneumonia/001.png, ...), or images with a CSV of file,label")
    source = f"the zip {upload} (a folder per class" + (f"; its {'/'.join(merged)} folders merged)" if merged
                                                          else ")")
    return candidates, source


def _class_depth(paths: list[PurePosixPath]) -> tuple[int, list[str]]:
    """How many folder levels lie above the class folders: lone wrapping folders, then split folders."""
    depth = 0
    while True:
        nested = [p for p in paths if len(p.parts) > depth + 1]
        if len({p.parts[depth] for p in nested}) == 1 and all(len(p.parts) > depth + 2 for p in nested):
            depth += 1
        else:
            break
    nested = [p for p in paths if len(p.parts) > depth + 1]
    splits = sorted({p.parts[depth] for p in nested})
    if nested and all(s.lower() in SPLIT_ALIASES for s in splits) and all(len(p.parts) > depth + 2 for p in nested):
        return depth + 1, splits
    return depth, []


def _csv_candidates(table: PurePosixPath, files: dict[PurePosixPath, Path], staging: Path, upload: str,
                    limits: IntakeLimits, skipped: list[tuple[str, str]]) -> tuple[list[_Candidate], str]:
    """The rows of the zip's CSV (columns found by train.data's CSV reader); every row must name a file in
    the zip and a label, else the upload is refused."""
    shown = f"{upload}/{table.as_posix()}"
    try:
        source = load_csv(files[table])
    except DataError as e:  # where the folders name the classes, the CSV may hold something else
        raise IntakeError(_inside_upload(f"{e}. If the zip's folders name the classes, remove the CSV from the zip",
                                         staging, upload)) from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise IntakeError(f"{shown} cannot be read as CSV text ({e}); save it as 'CSV UTF-8' and upload "
                          "again") from None
    if source.skipped:
        rows = "; ".join(f"{s.key}: {s.reason}" for s in source.skipped[:5])
        raise IntakeError(_inside_upload(f"{len(source.skipped)} row(s) of {shown} cannot be used ({rows}); every "
                                         "row needs a label and an image file that is in the zip. Fix the CSV and "
                                         "upload again", staging, upload))
    root = staging.resolve()
    candidates, used = [], {table}
    for sample in source.samples:
        resolved = Path(sample.ref).resolve()
        if not resolved.is_relative_to(root):
            raise IntakeError(f"{shown} names {sample.key!r}, a file outside the zip; name each image by its path "
                              "inside the zip (e.g. images/001.png)")
        relative = PurePosixPath(resolved.relative_to(root).as_posix())
        used.add(relative)
        candidates.append(_Candidate(relative.as_posix(), _display_name(source.label_names[sample.label]),
                                     partial(_read_file, resolved, limits.max_image_bytes)))
    skipped += [(p.as_posix(), f"not named in {table.name}") for p in sorted(files) if p not in used]
    return candidates, f"the zip {upload} (labels from {table.as_posix()})"


def _inside_upload(message: str, staging: Path, upload: str) -> str:
    """A message of train.data about the unpacked copy, naming the upload instead of the build folder."""
    for folder in {str(staging.resolve()), str(staging)}:
        message = message.replace(folder + os.sep, f"{upload}/").replace(folder, upload)
    return message


# --- MedMNIST .npz ----------------------------------------------------------------------------------

def _read_npz(path: Path, upload: str, limits: IntakeLimits, build: Path) -> IntakeReport:
    """The arrays of a MedMNIST .npz (read by train.data.load_npz) written as PNG files, one folder per class.

    PNG, not the array itself: every form then ends as the same ImageFolder, with the same caps, checks and
    report, and PNG keeps each 8-bit pixel exactly. The file's own train/val/test split is merged.
    """
    _check_npz_arrays(path, upload, limits)
    try:
        source = load_npz(path)
    except DataError as e:
        raise IntakeError(str(e).replace(str(path), upload)) from None
    candidates = [_Candidate(sample.key, _display_name(source.label_names[sample.label]),
                             partial(_png_bytes, source.array, sample.ref)) for sample in source.samples]
    height, width = source.array.shape[1:3]
    description = (f"the MedMNIST file {upload} ({len(candidates)} images of {width}x{height} px, written as PNG; "
                   "its train/val/test split merged)")
    return _build(candidates, list(dict.fromkeys(c.label for c in candidates)), build, build.parent, limits, [],
                  description)


def _check_npz_arrays(path: Path, upload: str, limits: IntakeLimits) -> None:
    """From the .npz's zip directory and each array's .npy header, before any array is read: the bytes the
    arrays declare and the number of images stay within the limits, and no array holds Python objects."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise IntakeError(f"{upload} is not a readable .npz file ({e}); upload a MedMNIST .npz (arrays "
                          "train_images, train_labels, ...)") from None
    with archive:
        members = [info for info in archive.infolist() if info.filename.endswith(".npy")]
        declared = sum(info.file_size for info in members)
        if declared > limits.max_total_bytes:
            raise IntakeError(f"{upload}: its arrays would take {declared:,} bytes, over the limit of "
                              f"{limits.max_total_bytes:,}; keep fewer images")
        images = 0
        for info in members:
            shape, dtype = _npy_header(archive, info, upload)
            if dtype.hasobject or math.prod(shape) * dtype.itemsize > info.file_size:  # math.prod: no overflow
                raise IntakeError(f"{upload}: the array {info.filename!r} ({dtype}, shape {shape}) is not a plain "
                                  "numeric array of the size its file holds; save the images as uint8 arrays "
                                  "with numpy.savez")
            if info.filename.removesuffix(".npy").endswith("_images") and shape:
                images += shape[0]
    if images > limits.max_files:
        raise IntakeError(f"{upload} holds {images} images, over the limit of {limits.max_files}; save a subset "
                          f"(e.g. train_images[:{limits.max_files}] with its labels) and upload that")


def _npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, upload: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        with archive.open(info) as f:
            version = npy_format.read_magic(f)
            read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            shape, _, dtype = read_header(f)
    except (ValueError, zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError) as e:
        raise IntakeError(f"{upload}: the array {info.filename!r} is not a readable .npy array ({e}); save the "
                          "file again with numpy.savez") from None
    return tuple(int(n) for n in shape), dtype


def _png_bytes(array: np.ndarray, index: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array[index]).save(buffer, format="PNG")  # (H, W) -> L, (H, W, 3) -> RGB
    return buffer.getvalue()
