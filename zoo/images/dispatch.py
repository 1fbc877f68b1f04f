"""Which reader reads a file: the registered readers, the image suffixes they read, and `load_image`.

A new format is one new module that builds an `ImageReader` (see `zoo.images.decoded`) and one entry in
`READERS`; `IMAGE_SUFFIXES` and `FORMAT_SUFFIXES`, the project's one list of readable image files, follow.
A file is read by the first reader SURE of it (a magic number), else by the first that PROBEs it successfully,
else - unless it is text - by the first that thinks it LIKELY; anything left gets an error naming what it is.
"""
from __future__ import annotations

import io
import os
import re
from typing import Any

import numpy as np

from ..upload_limits import MAX_UPLOAD_BYTES
from .decoded import (MAX_ASPECT_RATIO, MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, Claim, ImageLoadError, ImageReader, Limits,
                      LoadedImage, printable_name)
from .dicom_reader import DICOM_READER, dicom_frames
from .nifti_reader import NIFTI_READER
from .pillow_reader import PILLOW_READER
from .volume import MAX_VOLUME_VOXELS, Volume

__all__ = ["READERS", "IMAGE_SUFFIXES", "FORMAT_SUFFIXES", "VOLUME_FORMATS", "image_stem", "is_image_name", "is_volume",
           "load_image", "load_volume"]

# the registration: a new reader goes here
READERS: tuple[ImageReader, ...] = (PILLOW_READER, DICOM_READER, NIFTI_READER)
# the formats whose files may hold a volume (zoo.images.load_volume), as messages name them
VOLUME_FORMATS: tuple[str, ...] = tuple(fmt for reader in READERS if reader.read_volume for fmt in reader.formats)
# every file-name suffix a reader reads, lower case: which files of a folder are images
IMAGE_SUFFIXES: tuple[str, ...] = tuple(suffix for reader in READERS for suffix in reader.suffixes)
# info["format"] of a loaded image -> the suffix a copy of that file gets (content decides, not the name)
FORMAT_SUFFIXES: dict[str, str] = {fmt: suffix for reader in READERS for fmt, suffix in reader.format_suffixes.items()}


def is_image_name(name: str) -> bool:
    """Whether a file name ends in a suffix one of the readers reads (compound ones too: ``scan.nii.gz``), case
    aside."""
    return name.lower().endswith(IMAGE_SUFFIXES)


def image_stem(name: str) -> str:
    """A file name without its image suffix, compound ones whole (``case7.nii.gz`` -> ``case7``); other names as
    they are."""
    lower = name.lower()
    suffix = max((s for s in IMAGE_SUFFIXES if lower.endswith(s)), key=len, default="")
    return name[:len(name) - len(suffix)]


def load_image(source: str | os.PathLike | bytes, *, max_pixels: int = MAX_IMAGE_PIXELS,
               max_side: int | None = MAX_IMAGE_SIDE, max_aspect_ratio: float = MAX_ASPECT_RATIO,
               window: tuple[float, float] | None = None) -> LoadedImage:
    """Read a PNG, JPEG, BMP, TIFF, GIF or DICOM file (a path or its bytes) into an 8-bit L/RGB image.

    Images with more than `max_pixels` pixels, or longer than `max_aspect_ratio` times their width,
    are refused from their header, before decoding. Images larger than `max_side` on their longer side
    are downscaled to it (None keeps the full size); ``info["original_size"]`` is the file's size.
    `window` (centre, width in the modality's units, e.g. Hounsfield) replaces the automatic window of a
    grayscale DICOM (DICOM's LINEAR function); ``info["window_presets"]`` lists the file's own windows.
    """
    if not isinstance(max_pixels, int) or max_pixels <= 0:
        raise ImageLoadError(f"max_pixels must be a positive int, got {max_pixels!r}")
    if max_side is not None and (not isinstance(max_side, int) or max_side <= 0):
        raise ImageLoadError(f"max_side must be a positive int or None, got {max_side!r}")
    if not isinstance(max_aspect_ratio, (int, float)) or not max_aspect_ratio >= 1:
        raise ImageLoadError(f"max_aspect_ratio must be a number >= 1, got {max_aspect_ratio!r}")
    limits = Limits(max_pixels, max_side, float(max_aspect_ratio), _checked_window(window))
    name, readable, head = _open_source(source)
    if not head:
        raise ImageLoadError(f"{name}: the file is empty (0 bytes). Re-export or re-download it.")
    claims = [(reader, reader.claim(head, name)) for reader in READERS]
    sure = _first_claiming(claims, Claim.SURE)
    if sure is not None:
        return _read(sure, readable(), name, limits)
    for reader, claim in claims:
        if claim is Claim.PROBE and (loaded := reader.read(readable(), name, limits)) is not None:
            return loaded
    text_problem = _describe_text(head)
    if text_problem is not None:
        raise ImageLoadError(f"{name}: {text_problem}")
    likely = _first_claiming(claims, Claim.LIKELY)
    if likely is not None:
        return _read(likely, readable(), name, limits)
    raise _unreadable(name, head)


def load_volume(source: str | os.PathLike | bytes, *, max_voxels: int = MAX_VOLUME_VOXELS,
                max_file_bytes: int = MAX_UPLOAD_BYTES) -> Volume:
    """Read a volume (NIfTI .nii / .nii.gz, multi-frame DICOM; a path or its bytes) into an 8-bit `Volume`, whose
    `slice(axis, index, limits)` gives the images. Files over `max_file_bytes`, or announcing more than
    `max_voxels` voxels, are refused before their voxels are read."""
    if not isinstance(max_voxels, int) or max_voxels <= 0:
        raise ImageLoadError(f"max_voxels must be a positive int, got {max_voxels!r}")
    name, readable, head = _open_source(source)
    if not head:
        raise ImageLoadError(f"{name}: the file is empty (0 bytes). Re-export or re-download it.")
    size = _source_size(source)
    if size > max_file_bytes:
        raise ImageLoadError(f"{name}: a file of {size:,} bytes, over the limit of {max_file_bytes:,} bytes for a "
                             "volume (max_file_bytes). Crop or downsample it, or pass a larger max_file_bytes if "
                             "you trust the file.")
    claims = [(reader, reader.claim(head, name)) for reader in READERS if reader.read_volume is not None]
    reader = _first_claiming(claims, Claim.SURE) or _first_claiming(claims, Claim.LIKELY)
    if reader is None:
        raise ImageLoadError(f"{name}: not a volume; volumes are {' or '.join(VOLUME_FORMATS)} files (.nii, "
                             f".nii.gz, a multi-frame .dcm) (first bytes {head[:8]!r}). Open an image with "
                             "zoo.images.load_image.")
    return reader.read_volume(readable(), name, max_voxels)


def is_volume(source: str | os.PathLike | bytes) -> bool:
    """Whether `source` is a file `load_volume` reads: a NIfTI, or a DICOM of more than one frame (from its
    header). Unreadable files are not volumes (load_image then says what is wrong with them)."""
    try:
        name, readable, head = _open_source(source)
    except ImageLoadError:
        return False
    if NIFTI_READER.claim(head, name) is Claim.SURE:
        return True
    return DICOM_READER.claim(head, name) is not Claim.NO and dicom_frames(readable(), name) > 1


def _source_size(source: str | os.PathLike | bytes) -> int:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return len(source)
    return os.path.getsize(source)


def _first_claiming(claims: list[tuple[ImageReader, Claim]], wanted: Claim) -> ImageReader | None:
    return next((reader for reader, claim in claims if claim is wanted), None)


def _read(reader: ImageReader, fp: str | io.BytesIO, name: str, limits: Limits) -> LoadedImage:
    """What a reader that claimed the file made of it; a claimed file is never handed on to another reader."""
    loaded = reader.read(fp, name, limits)
    if loaded is None:
        raise ImageLoadError(f"{name}: its content looked like {' / '.join(reader.formats)} but could not be "
                             "read as such. Re-export or re-download it.")
    return loaded


def _unreadable(name: str, head: bytes) -> ImageLoadError:
    """The error for a file no reader took: a cut file of a known format, or an unknown format."""
    signatures = {magic: fmt for reader in READERS for magic, fmt in reader.signatures.items()}
    kind = next((fmt for magic, fmt in signatures.items() if head.startswith(magic)), None)
    if kind is not None:
        return ImageLoadError(
            f"{name}: starts like a {kind} file but is truncated or corrupt (its header cannot be read; "
            f"first bytes {head[:8]!r}). Re-export or re-download it."
        )
    formats = [fmt for reader in READERS for fmt in reader.formats]
    return ImageLoadError(
        f"{name}: not a recognised image; its content is not {', '.join(formats[:-1])} or {formats[-1]} "
        f"(first bytes {head[:8]!r}). Convert it to PNG (or DICOM for scans) and try again."
    )


def _checked_window(window: Any) -> tuple[float, float] | None:
    """`window` as (centre, width) floats; DICOM's LINEAR window needs a width of at least 1."""
    if window is None:
        return None
    try:
        center, width = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ImageLoadError(f"window must be (centre, width), two numbers, got {window!r:.100}") from None
    if not (np.isfinite(center) and np.isfinite(width) and width >= 1):
        raise ImageLoadError(f"window (centre {center:g}, width {width:g}): the centre must be finite and the "
                             "width at least 1 (in the image's units, e.g. Hounsfield). Pick a wider window.")
    return center, width


def _open_source(source: str | os.PathLike | bytes):
    """-> (name for messages, callable giving a fresh path-or-stream, first 2 KiB of content)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return "<bytes>", lambda: io.BytesIO(data), data[:2048]
    if not isinstance(source, (str, os.PathLike)):
        raise ImageLoadError(
            f"load_image takes a file path or the file's bytes, got {type(source).__name__}"
        )
    path = os.fspath(source)
    name = printable_name(os.path.basename(path) or path)  # every message and info["source"] show this name
    if not os.path.exists(path):
        raise ImageLoadError(f"{name}: no such file ({printable_name(path)}). Check the path.")
    if os.path.isdir(path):
        raise ImageLoadError(f"{name}: is a folder, not an image file ({printable_name(path)}). "
                             "Pass a file inside it.")
    try:
        with open(path, "rb") as f:
            head = f.read(2048)
    except OSError as exc:
        raise ImageLoadError(f"{name}: cannot be read ({exc}). Check the file's permissions.") from exc
    return name, lambda: path, head


def _describe_text(head: bytes) -> str | None:
    """Say what a file that is text rather than an image looks like, or None if it is binary."""
    sample = head[:1024].lstrip(b"\xef\xbb\xbf \t\r\n")
    lowered = sample.lower()
    if lowered.startswith(b"version https://git-lfs"):
        return "is a Git LFS pointer, not the image itself. Fetch the real file with `git lfs pull`."
    if re.match(rb"<(!doctype html|html|head|body|\?xml|svg)", lowered) or b"<html" in lowered:
        return (
            "looks like an HTML/XML document, not an image (often a web page - a login, error or "
            "preview page - saved instead of the file). Download the image file itself."
        )
    if b"\x00" in sample:
        return None
    controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 13))
    undecodable = sample.decode("utf-8", errors="replace").count("\ufffd")
    if controls <= len(sample) // 100 and undecodable <= len(sample) // 100 + 1:
        return "looks like a text file, not an image. Pass the image file itself."
    return None
