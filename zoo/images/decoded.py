"""What every image reader returns and shares: the decoded image, its error, the size limits, a reader's face.

A reader (one module per file format family: `zoo.images.pillow_reader`, `zoo.images.dicom_reader`) turns a
file into a `LoadedImage`, an 8-bit ``"L"`` or ``"RGB"`` image plus ``info``, the record of what was done to
it; it describes itself to the dispatcher (`zoo.images.dispatch`) as an `ImageReader`.

``info`` keys every reader writes: ``source`` (the printable file name), ``format``, ``original_mode``,
``original_size`` (the file's own size), ``mode``, ``size`` and ``notes`` (what was changed, in words). A DICOM
adds its photometric and bit-depth facts (``photometric_interpretation``, ``bits_stored``, ``rescale_*``), its
``window_presets`` and the window used (``window_source``, ``window_center``, ``window_width``).
"""
from __future__ import annotations

import enum
import io
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from PIL import Image

from .._errors import ZooError

__all__ = ["MAX_IMAGE_PIXELS", "MAX_IMAGE_SIDE", "MAX_ASPECT_RATIO", "CHOSEN_WINDOW", "ImageLoadError",
           "LoadedImage", "Limits", "Claim", "ImageReader", "Readable", "printable_name", "to_model_mode"]

MAX_IMAGE_PIXELS = 40_000_000  # ~6300 x 6300; larger inputs are refused before their pixels are decoded
MAX_IMAGE_SIDE = 2048  # larger images are downscaled to this longer side right after decoding
MAX_ASPECT_RATIO = 20  # longer side / shorter side; thinner strips are refused before decoding
CHOSEN_WINDOW = "chosen, not the file's or the automatic one"  # info["window_source"] of a caller's window

# characters that reorder text where a file name is shown (a right-to-left override makes "scan\u202egnp.exe" read
# "scanexe.png"): the bidirectional controls (U+061C, U+200E/200F, U+202A-202E, U+2066-2069); control characters
# (category Cc: newlines, escapes) are written as escapes too
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

Readable = Union[str, io.BytesIO]  # what a reader opens: a file path, or the bytes of an upload


class ImageLoadError(ZooError):
    """An input file that cannot be turned into an image; the message names the file and the fix."""


@dataclass
class LoadedImage:
    """An 8-bit ``"L"`` or ``"RGB"`` image and a record of how it was made from the file."""

    image: Image.Image
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Limits:
    """What the caller of `zoo.images.load_image` allows and asks for; every reader honours all of it."""

    max_pixels: int
    max_side: int | None
    max_aspect_ratio: float
    window: tuple[float, float] | None = None  # how the caller wants a grayscale DICOM shown (centre, width)


class Claim(enum.Enum):
    """How sure a reader is, from a file's first bytes and name, that the file is of its format."""

    NO = "not this format"
    SURE = "the content says so (a magic number): read it before any other reader"
    PROBE = "try it: the reader's `read` returns None where the content is not its format"
    LIKELY = "the name or a weak sign says so: read it when no probing reader took the file and it is not text"


@dataclass(frozen=True)
class ImageReader:
    """One format family's reader as the dispatcher sees it. Register it in `zoo.images.dispatch.READERS`."""

    formats: tuple[str, ...]  # the format names it reads, as messages list them ("PNG", ..., "DICOM")
    suffixes: tuple[str, ...]  # lower-case file-name suffixes its files carry ("." included)
    format_suffixes: Mapping[str, str]  # info["format"] it reports -> the suffix a copy of such a file gets
    claim: Callable[[bytes, str], Claim]  # (first 2 KiB, printable file name) -> how sure it is
    read: Callable[[Readable, str, Limits], LoadedImage | None]  # (file, printable name, limits)
    signatures: Mapping[bytes, str] = field(default_factory=dict)  # first bytes -> format, to name a cut file
    # a reader of volumes too (NIfTI, multi-frame DICOM): (file, printable name, max voxels) -> zoo.images.Volume,
    # which zoo.images.load_volume calls; `read` then gives one slice of it
    read_volume: Callable[[Readable, str, int], Any] | None = None


def printable_name(text: str) -> str:
    """`text` (a file name or path) with its bidirectional-control and control characters written as escapes
    (``\\u202e``), so that it reads where it is shown as the characters it holds, in their order."""
    return "".join(f"\\u{ord(c):04x}" if c in _BIDI_CONTROLS or unicodedata.category(c) == "Cc" else c for c in text)


def to_model_mode(image: Image.Image, in_chans: int) -> Image.Image:
    """Give a loaded image the channels a model takes: 1 -> ``"L"``, 3 -> ``"RGB"`` (gray replicated).

    RGB -> L uses Pillow's ITU-R 601-2 luma.
    """
    if image.mode not in ("L", "RGB"):
        raise ZooError(
            f"to_model_mode expects an 'L' or 'RGB' image, got mode {image.mode!r}; "
            "read the file with zoo.images.load_image first"
        )
    if in_chans == 1:
        return image if image.mode == "L" else image.convert("L")
    if in_chans == 3:
        return image if image.mode == "RGB" else image.convert("RGB")
    raise ZooError(f"in_chans must be 1 (grayscale) or 3 (RGB), got {in_chans!r}")

