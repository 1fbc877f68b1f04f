"""Turn an image file into 8-bit pixels, the same way for training and for the app.

`load_image` reads PNG, JPEG, BMP, TIFF and GIF with Pillow and DICOM with pydicom, and returns an
8-bit ``"L"`` (grayscale source) or ``"RGB"`` (colour source) image plus a record of what was done
to it. Every problem with the input raises `ImageLoadError`, whose message names the file, says what
is wrong with it and what to do.

A few hundred bytes must not cost gigabytes: the pixel count and the aspect ratio are checked from the
header, before decoding (a 300000x1 strip would become gigapixels once a model resizes its shorter
side), large images are downscaled once, here, to at most `MAX_IMAGE_SIDE` pixels on the longer side
(JPEGs are decoded at a reduced scale directly), and high-depth pixels are scaled to 8 bits in chunks
rather than through full-size float copies. ``info["original_size"]`` keeps the file's own size.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import threading
import unicodedata
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.dataelem import DataElement
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.filereader import read_dataset, read_preamble
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.uid import (UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian)

from ._errors import ZooError

__all__ = ["DEFLATED_DICOM_HEADER_BYTES", "ImageLoadError", "LoadedImage", "MAX_IMAGE_PIXELS", "MAX_IMAGE_SIDE",
           "MAX_ASPECT_RATIO", "CHOSEN_WINDOW", "load_image", "printable_name", "to_model_mode"]

MAX_IMAGE_PIXELS = 40_000_000  # ~6300 x 6300; larger inputs are refused before their pixels are decoded
MAX_IMAGE_SIDE = 2048  # larger images are downscaled to this longer side right after decoding
MAX_ASPECT_RATIO = 20  # longer side / shorter side; thinner strips are refused before decoding
PILLOW_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF")  # Pillow plugins allowed to open user files
DICOM_ROBUST_PERCENTILES = (0.5, 99.5)  # display range of a DICOM that carries no window of its own
CHOSEN_WINDOW = "chosen, not the file's or the automatic one"  # info["window_source"] of a caller's window

# characters that reorder text where a file name is shown (a right-to-left override makes "scan\u202egnp.exe" read
# "scanexe.png"): the bidirectional controls (U+061C, U+200E/200F, U+202A-202E, U+2066-2069); control characters
# (category Cc: newlines, escapes) are written as escapes too
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("LA", "La", "RGBA", "RGBa")
_DICOM_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# a deflated DICOM must be inflated before its header can be read; the data elements before the pixel data may
# inflate to at most this many bytes (real headers take kilobytes; overlays of a large image a few MB)
DEFLATED_DICOM_HEADER_BYTES = 16 << 20
# bits per sample of Float / Double Float Pixel Data, which name no Bits Allocated of their own
_FLOAT_PIXEL_BITS = {"FloatPixelData": 32, "DoubleFloatPixelData": 64}
_PIXEL_DATA_TAGS = tuple(tag_for_keyword(keyword) for keyword in _DICOM_PIXEL_KEYWORDS)
_UNDEFINED_LENGTH = 0xFFFFFFFF
_INFLATE_INPUT_BYTES = 1 << 16  # compressed bytes read per step while inflating
_DICOM_IDENTITY_KEYWORDS = ("SOPClassUID", "StudyInstanceUID", "Modality", "Rows", "Columns")
# warnings.catch_warnings swaps process-wide state; serialise our own short uses of it
_WARNINGS_LOCK = threading.Lock()
_CHUNK_VALUES = 1 << 20  # high-depth pixels are scaled to 8 bits this many at a time (a few MB of floats)
# how an image file starts, for naming a file Pillow cannot even open (e.g. cut inside its header)
_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF", b"GIF89a": "GIF",
               b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


class ImageLoadError(ZooError):
    """An input file that cannot be turned into an image; the message names the file and the fix."""


@dataclass
class LoadedImage:
    """An 8-bit ``"L"`` or ``"RGB"`` image and a record of how it was made from the file."""

    image: Image.Image
    info: dict[str, Any] = field(default_factory=dict)


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
    limits = _Limits(max_pixels, max_side, float(max_aspect_ratio), _checked_window(window))
    name, readable, head = _open_source(source)
    if not head:
        raise ImageLoadError(f"{name}: the file is empty (0 bytes). Re-export or re-download it.")
    if head[128:132] == b"DICM":
        return _load_dicom(readable(), name, limits)
    loaded = _load_with_pillow(readable(), name, limits)
    if loaded is not None:
        if window is not None:
            loaded.info["notes"].append("the window was not used: only grayscale DICOM images are windowed")
        return loaded
    text_problem = _describe_text(head)
    if text_problem is not None:
        raise ImageLoadError(f"{name}: {text_problem}")
    if name.lower().endswith((".dcm", ".dicom")) or _starts_like_dicom_dataset(head):
        return _load_dicom(readable(), name, limits)
    kind = next((fmt for magic, fmt in _SIGNATURES.items() if head.startswith(magic)), None)
    if kind is not None:
        raise ImageLoadError(
            f"{name}: starts like a {kind} file but is truncated or corrupt (its header cannot be read; "
            f"first bytes {head[:8]!r}). Re-export or re-download it."
        )
    raise ImageLoadError(
        f"{name}: not a recognised image; its content is not {', '.join(PILLOW_FORMATS)} or DICOM "
        f"(first bytes {head[:8]!r}). Convert it to PNG (or DICOM for scans) and try again."
    )


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


# ----------------------------------------------------------------------------------------------
# Input handling and content sniffing


@dataclass(frozen=True)
class _Limits:
    max_pixels: int
    max_side: int | None
    max_aspect_ratio: float
    window: tuple[float, float] | None = None  # how the caller wants a grayscale DICOM shown (centre, width)


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


def _starts_like_dicom_dataset(head: bytes) -> bool:
    """True for a DICOM stream without the 128-byte preamble: it opens with a group 0002/0008 tag."""
    return head[:2] in (b"\x02\x00", b"\x08\x00") and len(head) >= 8


# ----------------------------------------------------------------------------------------------
# PNG, JPEG, BMP, TIFF, GIF (Pillow)


def _load_with_pillow(fp: str | io.BytesIO, name: str, limits: _Limits) -> LoadedImage | None:
    """Decode with Pillow, or return None if the content is not one of PILLOW_FORMATS."""
    with _WARNINGS_LOCK, warnings.catch_warnings():
        # Pillow only warns between its MAX_IMAGE_PIXELS and twice that (at open, GIF seek, TIFF load)
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(fp, formats=PILLOW_FORMATS)
        except UnidentifiedImageError:
            return None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bomb_error(name, exc, limits.max_pixels) from exc
        except Exception as exc:  # a header Pillow recognised but could not parse
            raise ImageLoadError(
                f"{name}: corrupt image header ({exc}). Re-export or re-download it."
            ) from exc
        with im:
            return _decode_with_pillow(im, name, limits)


def _decode_with_pillow(im: Image.Image, name: str, limits: _Limits) -> LoadedImage:
    _check_size(name, im.size, limits)
    info: dict[str, Any] = {
        "source": name, "format": im.format, "original_mode": im.mode, "original_size": im.size, "notes": [],
    }
    try:
        if getattr(im, "is_animated", False):
            info["notes"].append("animated/multi-page file: the first frame was used")
        if im.format == "JPEG" and limits.max_side is not None and max(im.size) > limits.max_side:
            # decode at 1/2, 1/4 or 1/8 scale (no smaller than the target): a fraction of the memory
            im.draft(im.mode, _fit(im.size, limits.max_side))
        im.load()  # full decode, so truncated or corrupt data fail here rather than later
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb_error(name, exc, limits.max_pixels) from exc
    except Exception as exc:
        raise ImageLoadError(
            f"{name}: the {im.format} data are truncated or corrupt ({exc}). Re-export or re-download it."
        ) from exc
    orientation = im.getexif().get(0x0112, 1)  # EXIF Orientation
    if orientation != 1:
        im = ImageOps.exif_transpose(im)
        info["exif_orientation"] = orientation
        info["notes"].append(f"EXIF orientation {orientation} applied")
    image = _pil_to_8bit(im, name, info["notes"], limits.max_side)
    if image is im:  # detach from the file, which the caller closes
        image = im.copy()
    info.update(mode=image.mode, size=image.size)
    return LoadedImage(image, info)


def _bomb_error(name: str, exc: Exception, max_pixels: int) -> ImageLoadError:
    # Pillow checks its own (process-wide, possibly lowered by an app) limit while opening, before
    # _check_size can run: when the image is over our max_pixels too, say so in our own terms.
    found = re.search(r"\((\d+) pixels\)", str(exc))
    if found and int(found.group(1)) > max_pixels:
        return ImageLoadError(
            f"{name}: {int(found.group(1)):,} pixels is over the limit of {max_pixels:,} pixels (max_pixels). "
            "Downscale the image, or pass a larger max_pixels if you trust the file."
        )
    return ImageLoadError(
        f"{name}: refused as a possible decompression bomb: {exc} (Pillow's limit "
        f"PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS:,}; this loader's max_pixels={max_pixels:,}). "
        "Downscale the image before using it."
    )


def _pil_to_8bit(im: Image.Image, name: str, notes: list[str], max_side: int | None) -> Image.Image:
    """Convert any Pillow mode to 8-bit L or RGB: high depth min-max scaled, alpha on black.

    Downscaled to `max_side` as early as the mode allows (high depth after its min-max over every
    pixel, palettes after expansion, alpha before compositing: Pillow resizes it premultiplied).
    """
    mode = im.mode
    if mode in _HIGH_DEPTH_MODES:
        gray = Image.fromarray(_min_max_to_uint8(np.asarray(im), name, notes, f"mode {mode}"), mode="L")
        return _downscale(gray, max_side, notes)
    if mode == "1":
        return _downscale(im.convert("L"), max_side, notes)
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if im.has_transparency_data else "RGB")
        notes.append(f"palette image expanded to {im.mode}")
    elif mode in ("L", "RGB") and im.has_transparency_data:  # a tRNS colour key
        im = im.convert("LA" if mode == "L" else "RGBA")
    im = _downscale(im, max_side, notes)
    if im.mode in _ALPHA_MODES:
        im = _composite_on_black(im)
        notes.append("alpha channel composited on a black background")
    if im.mode not in ("L", "RGB"):
        notes.append(f"{im.mode} converted to RGB")
        im = im.convert("RGB")
    return im


def _composite_on_black(im: Image.Image) -> Image.Image:
    """Flatten an image with alpha onto black, so that transparent pixels read the same everywhere."""
    gray = im.mode in ("LA", "La")
    im = im.convert("LA" if gray else "RGBA")
    color = im.convert("L" if gray else "RGB")
    return Image.composite(color, Image.new(color.mode, im.size, 0), im.getchannel("A"))


def _min_max_to_uint8(values: np.ndarray, name: str, notes: list[str], what: str) -> np.ndarray:
    """Scale the actual min..max of `values` to 0..255 (non-finite values -> 0).

    Written as two passes over chunks of _CHUNK_VALUES values rather than one numpy expression: the
    expression's float64 temporaries of a 40-Mpx image take ~320 MB each (2.6 GB for a 6300x6300
    16-bit PNG of 0.3 MB); the chunks take a few MB.
    """
    flat = values.reshape(-1)
    low, high, non_finite = np.inf, -np.inf, 0
    for start in range(0, flat.size, _CHUNK_VALUES):
        part = flat[start:start + _CHUNK_VALUES]
        if part.dtype.kind in "fc":
            finite = np.isfinite(part)
            non_finite += part.size - int(np.count_nonzero(finite))
            part = part[finite]
        if part.size:
            low, high = min(low, float(part.min())), max(high, float(part.max()))
    if low > high:
        raise ImageLoadError(f"{name}: every pixel is NaN or infinite; there is no image to show.")
    if non_finite:
        notes.append(f"{non_finite} NaN/infinite pixels set to 0")
    if high == low:
        notes.append(f"{what}: constant image (every pixel {low:g}) shown black")
        return np.zeros(values.shape, dtype=np.uint8)
    out = np.empty(flat.shape, dtype=np.uint8)
    for start in range(0, flat.size, _CHUNK_VALUES):
        part = flat[start:start + _CHUNK_VALUES].astype(np.float64)
        scaled = np.where(np.isfinite(part), (part - low) / (high - low), 0.0)
        out[start:start + _CHUNK_VALUES] = np.round(scaled * 255).astype(np.uint8)
    notes.append(f"{what}: values {low:g}..{high:g} scaled to 0..255")
    return out.reshape(values.shape)


def _check_size(name: str, size: tuple[int, int], limits: _Limits) -> None:
    """Refuse too many pixels, or a strip too thin, from the header (before anything is decoded)."""
    width, height = size
    if width * height > limits.max_pixels:
        raise ImageLoadError(
            f"{name}: {width}x{height} = {width * height:,} pixels is over the limit of {limits.max_pixels:,} "
            "pixels (max_pixels). Downscale the image, or pass a larger max_pixels if you trust the file."
        )
    if min(width, height) < 1:
        raise ImageLoadError(f"{name}: {width}x{height} pixels holds no image. Re-export it.")
    ratio = max(width, height) / min(width, height)
    if ratio > limits.max_aspect_ratio:
        raise ImageLoadError(
            f"{name}: {width}x{height} pixels is a strip {ratio:,.0f} times longer than it is wide, over the "
            f"limit of {limits.max_aspect_ratio:g}:1 (max_aspect_ratio): a model resizes the shorter side to "
            "its input size, which would blow such a strip up to an enormous image. Crop it to the region "
            "of interest (a shape closer to square) and try again."
        )


def _fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """`size` scaled so that its longer side is `max_side` (each side at least 1 pixel)."""
    scale = max_side / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _downscale(im: Image.Image, max_side: int | None, notes: list[str]) -> Image.Image:
    """The image shrunk (Lanczos) to `max_side` on its longer side, or itself if it is not larger."""
    if max_side is None or max(im.size) <= max_side:
        return im
    size = _fit(im.size, max_side)
    notes.append(f"downscaled from {im.size[0]}x{im.size[1]} to {size[0]}x{size[1]} "
                 f"(longer side limited to {max_side} px)")
    # reducing_gap: a box reduction by an integer factor first, then Lanczos (fast, same result to the eye)
    return im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _downscale_values(pixels: np.ndarray, max_side: int | None, notes: list[str]) -> np.ndarray:
    """A 2-D array of stored values shrunk to `max_side`, kept in its dtype and value range.

    Resized as 32-bit float (Pillow "F"): exact for values up to 2**24, which covers 16-bit pixels.
    """
    height, width = pixels.shape
    if max_side is None or max(width, height) <= max_side:
        return pixels
    size = _fit((width, height), max_side)
    notes.append(f"downscaled from {width}x{height} to {size[0]}x{size[1]} "
                 f"(longer side limited to {max_side} px) before windowing")
    small = np.asarray(Image.fromarray(pixels.astype(np.float32), mode="F")
                       .resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0))
    # Lanczos overshoots at edges; stay within the stored values (a modality LUT is indexed by them)
    small = np.clip(np.round(small), float(pixels.min()), float(pixels.max()))
    return small.astype(pixels.dtype)


# ----------------------------------------------------------------------------------------------
# DICOM (pydicom)


def _load_dicom(fp: str | io.BytesIO, name: str, limits: _Limits) -> LoadedImage:
    """Decode the first frame of a DICOM file and present it as a radiology viewer would."""
    ds = _read_dicom(fp, name, limits)
    try:
        rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        if not rows or not columns:
            raise ValueError(f"Rows/Columns are {ds.get('Rows')!r}/{ds.get('Columns')!r}")
        _check_size(name, (columns, rows), limits)
        info = _dicom_info(ds, name)
        transfer_syntax = _transfer_syntax(ds, name, info["notes"])
        info.update(transfer_syntax=transfer_syntax.name, transfer_syntax_uid=str(transfer_syntax))
        pixels = _decode_first_frame(ds, name, transfer_syntax)
        if info["number_of_frames"] > 1:
            info["notes"].append(f"first of {info['number_of_frames']} frames used")
        if pixels.ndim == 2 and info["photometric_interpretation"] != "PALETTE COLOR":
            pixels = _downscale_values(pixels, limits.max_side, info["notes"])  # windowing at full size costs GBs
        image = _downscale(_dicom_to_8bit(pixels, ds, info, limits.window), limits.max_side, info["notes"])
    except ImageLoadError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise ImageLoadError(
            f"{name}: the DICOM header has an invalid or inconsistent value ({exc}). "
            "Repair or re-export the file."
        ) from exc
    info.update(mode=image.mode, size=image.size)
    return LoadedImage(image, info)


def _read_dicom(fp: str | io.BytesIO, name: str, limits: _Limits) -> pydicom.Dataset:
    """Read a DICOM dataset, checking that it is one and that it holds pixels."""
    try:
        with open(fp, "rb") if isinstance(fp, str) else contextlib.nullcontext(fp) as f:
            ds = _read_dicom_dataset(f, name, limits)
        is_dicom = any(keyword in ds for keyword in _DICOM_IDENTITY_KEYWORDS + _DICOM_PIXEL_KEYWORDS)
    except ImageLoadError:
        raise
    except Exception as exc:
        raise ImageLoadError(
            f"{name}: cannot be read as DICOM ({exc}). Check that the file is complete."
        ) from exc
    if not is_dicom:
        raise ImageLoadError(
            f"{name}: has no DICOM elements (no SOP Class, Modality, Rows or Pixel Data), so it is not a "
            "DICOM file. Pass a DICOM, PNG, JPEG, BMP, TIFF or GIF image."
        )
    if not any(keyword in ds for keyword in _DICOM_PIXEL_KEYWORDS):
        sop_class = ds.get("SOPClassUID")
        kind = f"a '{UID(sop_class).name}' object" if sop_class else "a DICOM object"
        raise ImageLoadError(
            f"{name}: is {kind} with no Pixel Data (7FE0,0010), so it holds no image "
            "(reports, plans and structure sets do not). Pass the image series' files instead."
        )
    return ds


def _read_dicom_dataset(f: io.BufferedIOBase, name: str, limits: _Limits) -> pydicom.Dataset:
    """pydicom's reading of `f`, except that a deflated file is inflated no further than its image needs.

    pydicom inflates a Deflated Explicit VR Little Endian dataset whole before anything of it is read: a 1 MB
    file of zeros can announce gigabytes. Here its header is inflated (at most DEFLATED_DICOM_HEADER_BYTES) and
    checked first, then only as many pixel bytes as Rows x Columns x Frames of at most max_pixels pixels hold.
    """
    preamble = read_preamble(f, True)  # None (and rewound) for a file without the 128-byte preamble
    # the File Meta group (0002,xxxx) is always Explicit VR Little Endian and never deflated
    file_meta = FileMetaDataset(read_dataset(f, False, True, stop_when=lambda tag, vr, length: tag >> 16 != 2))
    try:
        deflated = file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
    except Exception:  # a File Meta that is not Explicit VR: pydicom's own reader copes with it
        deflated = False
    if not deflated:
        f.seek(0)
        return pydicom.dcmread(f, force=True)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, PS3.5 A.5
    head = b"".join(_inflate(f, inflater, DEFLATED_DICOM_HEADER_BYTES))
    header, pixel = _deflated_header(head)
    if pixel is None:
        if not inflater.eof and len(head) >= DEFLATED_DICOM_HEADER_BYTES:
            raise ImageLoadError(
                f"{name}: a deflated DICOM whose data elements before the Pixel Data inflate to more than "
                f"{DEFLATED_DICOM_HEADER_BYTES >> 20} MB; refused before inflating it further (DICOM headers take "
                "kilobytes). Re-export it uncompressed (e.g. `gdcmconv --raw`), or as PNG."
            )
        return FileDataset(getattr(f, "name", name), header, preamble, file_meta, False, True)
    tag, vr, length, value_start = pixel
    _check_deflated_pixel_length(header, tag, length, name, limits)
    value = b"".join([head[value_start:value_start + length],
                      *_inflate(f, inflater, max(0, length - (len(head) - value_start)))])
    del head
    header.add(DataElement(tag, vr, value))  # a short value fails at decoding as truncated pixel data
    return FileDataset(getattr(f, "name", name), header, preamble, file_meta, False, True)


def _inflate(f: io.BufferedIOBase, inflater: Any, limit: int) -> list[bytes]:
    """The next at most `limit` inflated bytes of `f`'s deflate stream (fewer where it ends), as chunks."""
    chunks, size = [], 0
    while size < limit and not inflater.eof:
        pending = inflater.unconsumed_tail or f.read(_INFLATE_INPUT_BYTES)
        # max_length bounds the output of this call: zlib keeps the rest of the input for the next one
        chunk = inflater.decompress(pending, limit - size) if pending else inflater.flush()[:limit - size]
        chunks.append(chunk)
        size += len(chunk)
        if not pending:  # the file ended
            break
    return chunks


def _deflated_header(head: bytes) -> tuple[pydicom.Dataset, tuple[int, str, int, int] | None]:
    """The data elements of an inflated dataset before its pixel data, and the pixel data element's
    (tag, VR, declared length, offset of its value in `head`), or None where `head` ends before it."""
    stream = io.BytesIO(head)
    found: list[tuple[int, str, int, int]] = []

    def stop(tag: int, vr: str | None, length: int) -> bool:
        if tag in _PIXEL_DATA_TAGS:
            found.append((int(tag), str(vr), length, stream.tell()))  # pydicom stands at the value
            return True
        # an element running past what was inflated so far is not read (it would be cut short)
        return length != _UNDEFINED_LENGTH and stream.tell() + length > len(head)

    header = read_dataset(stream, False, True, stop_when=stop)
    return header, (found[0] if found else None)


def _check_deflated_pixel_length(header: pydicom.Dataset, tag: int, length: int, name: str,
                                 limits: _Limits) -> None:
    """Refuse, from the inflated header alone, pixel data larger than the header's image or the pixel limit."""
    rows, columns = int(header.get("Rows") or 0), int(header.get("Columns") or 0)
    if not rows or not columns:
        raise ImageLoadError(
            f"{name}: the deflated DICOM's header gives Rows/Columns {header.get('Rows')!r}/"
            f"{header.get('Columns')!r}, so the size of its pixel data is unknown. Repair or re-export the file."
        )
    _check_size(name, (columns, rows), limits)
    frames = int(header.get("NumberOfFrames") or 1)
    if rows * columns * frames > limits.max_pixels:
        raise ImageLoadError(
            f"{name}: a deflated DICOM of {frames} frames of {columns}x{rows} = {rows * columns * frames:,} "
            f"pixels in all, over the limit of {limits.max_pixels:,} pixels (max_pixels): a deflated file is "
            "inflated whole. Keep fewer frames, convert it to an uncompressed DICOM, or pass a larger "
            "max_pixels if you trust the file."
        )
    bits = _FLOAT_PIXEL_BITS.get(keyword_for_tag(tag)) or int(header.get("BitsAllocated") or 0)
    needed = -(-rows * columns * frames * int(header.get("SamplesPerPixel") or 1) * bits // 8)
    if length == _UNDEFINED_LENGTH or length > needed + needed % 2:
        declared = "an undefined length" if length == _UNDEFINED_LENGTH else f"{length:,} bytes"
        raise ImageLoadError(
            f"{name}: its deflated Pixel Data declare {declared}, but {frames} frame(s) of {columns}x{rows} "
            f"pixels at {bits} bits need {needed:,} bytes; refused before inflating them. "
            "Repair or re-export the file."
        )


def _dicom_info(ds: pydicom.Dataset, name: str) -> dict[str, Any]:
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    return {
        "source": name, "format": "DICOM", "modality": ds.get("Modality"),
        "sop_class": UID(ds.SOPClassUID).name if ds.get("SOPClassUID") else None,
        "photometric_interpretation": photometric,
        "original_mode": f"{ds.get('BitsStored', ds.get('BitsAllocated'))}-bit {photometric}",
        "original_size": (int(ds.Columns), int(ds.Rows)),
        "number_of_frames": int(ds.get("NumberOfFrames") or 1), "frame_used": 0,
        "bits_stored": ds.get("BitsStored"),
        "rescale_slope": None if slope is None else float(slope),
        "rescale_intercept": None if intercept is None else float(intercept),
        "window_presets": _window_presets(ds), "notes": [],
    }


def _window_presets(ds: pydicom.Dataset) -> list[dict[str, Any]]:
    """The file's Window Center/Width pairs (often several: soft tissue, bone, lung) with their explanations."""
    centers, widths = ds.get("WindowCenter"), ds.get("WindowWidth")
    if centers is None or widths is None:
        return []
    explanations = ds.get("WindowCenterWidthExplanation") or []
    as_list = (lambda v: list(v) if isinstance(v, (list, tuple, pydicom.multival.MultiValue)) else [v])
    explanations = as_list(explanations)
    presets = []
    for i, (center, width) in enumerate(zip(as_list(centers), as_list(widths))):
        if float(width) >= 1:  # a narrower window is invalid in DICOM's LINEAR function
            explanation = str(explanations[i]).strip() if i < len(explanations) else ""
            presets.append({"center": float(center), "width": float(width), "explanation": explanation})
    return presets


def _transfer_syntax(ds: pydicom.Dataset, name: str, notes: list[str]) -> UID:
    """The file's transfer syntax, checked to have an installed decoder; inferred if missing."""
    if not hasattr(ds, "file_meta"):
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    transfer_syntax = ds.file_meta.get("TransferSyntaxUID")
    if transfer_syntax is None:
        if "PixelData" in ds and ds["PixelData"].is_undefined_length:  # encapsulated = compressed
            raise ImageLoadError(
                f"{name}: the Pixel Data are compressed but the file names no Transfer Syntax UID "
                "(0002,0010), so the codec is unknown. Re-export the file with its file meta header."
            )
        is_implicit, is_little = ds.original_encoding
        transfer_syntax = (
            ImplicitVRLittleEndian if is_implicit
            else ExplicitVRLittleEndian if is_little is not False else ExplicitVRBigEndian
        )
        ds.file_meta.TransferSyntaxUID = transfer_syntax
        notes.append(f"no Transfer Syntax UID in the file; read as {transfer_syntax.name}")
    transfer_syntax = UID(transfer_syntax)
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError as exc:
        raise ImageLoadError(
            f"{name}: its pixel data use the transfer syntax {transfer_syntax.name} ({transfer_syntax}), "
            "which pydicom has no decoder for. Convert it to an uncompressed DICOM (e.g. dcmtk "
            "`dcmdjpeg`, `gdcmconv --raw`) or to PNG."
        ) from exc
    if not decoder.is_available:
        raise ImageLoadError(
            f"{name}: its pixel data are compressed with {transfer_syntax.name} ({transfer_syntax}) and no "
            f"installed package decodes it. Install one of: {_decoder_packages(decoder)}; or convert the "
            "file to an uncompressed DICOM (e.g. `gdcmconv --raw`)."
        )
    return transfer_syntax


def _decoder_packages(decoder: Any) -> str:
    # missing_dependencies reads like 'pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1'
    return "; ".join(dep.replace(" - requires ", " (") + ")" for dep in decoder.missing_dependencies)


def _decode_first_frame(ds: pydicom.Dataset, name: str, transfer_syntax: UID) -> np.ndarray:
    try:
        ds.pixel_array_options(index=0)  # decode only the first frame of a multi-frame file
        return ds.pixel_array
    except Exception as exc:
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        if transfer_syntax.is_compressed:
            decoder = get_decoder(transfer_syntax)
            raise ImageLoadError(
                f"{name}: the {transfer_syntax.name} ({transfer_syntax}) pixel data could not be decoded "
                f"by the installed decoder(s) {', '.join(decoder.available_plugins) or 'none'} ({reason}). "
                f"Install another decoder ({_decoder_packages(decoder) or 'gdcm; pylibjpeg'}) or convert "
                "the file to an uncompressed DICOM."
            ) from exc
        raise ImageLoadError(
            f"{name}: the DICOM pixel data are truncated or inconsistent with the header ({reason}). "
            "Re-export or re-download the file."
        ) from exc


def _dicom_to_8bit(pixels: np.ndarray, ds: pydicom.Dataset, info: dict[str, Any],
                   window: tuple[float, float] | None = None) -> Image.Image:
    """Rescale, window (`window` if given) and (for MONOCHROME1) invert grayscale; keep colour as RGB."""
    photometric = info["photometric_interpretation"]
    if window is not None and (photometric == "PALETTE COLOR" or pixels.ndim == 3):
        info["notes"].append("the window was not used: only grayscale DICOM images are windowed")
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)[..., :3]  # (H, W) -> (H, W, 3)
        info["notes"].append("palette colour lookup table applied")
        return Image.fromarray(_full_range_to_uint8(rgb, 8 * rgb.dtype.itemsize), mode="RGB")
    if pixels.ndim == 3:  # RGB; pydicom has already turned YBR into RGB
        if photometric != "RGB":
            info["notes"].append(f"{photometric} converted to RGB by pydicom")
        bits = int(ds.get("BitsStored") or 8 * pixels.dtype.itemsize)
        return Image.fromarray(_full_range_to_uint8(pixels, bits), mode="RGB")

    values = apply_modality_lut(pixels, ds)  # stored values -> modality units (e.g. Hounsfield)
    if ds.get("ModalityLUTSequence"):
        info["notes"].append("modality LUT sequence applied")
    if window is None:
        gray = _apply_window(values, ds, info)
    else:
        center, width = window
        info.update(window_source=CHOSEN_WINDOW, window_center=center, window_width=width)
        # DICOM PS3.3 C.11.2.1.2.1, the LINEAR function, to 0..1 (a width of 1 is a step at the centre)
        gray = np.clip((values - (center - 0.5)) / max(width - 1, 1e-6) + 0.5, 0.0, 1.0)
    if photometric == "MONOCHROME1":
        gray = 1.0 - gray
        info["notes"].append("MONOCHROME1: inverted so that higher values are brighter")
    return Image.fromarray(np.round(gray * 255).astype(np.uint8), mode="L")


def _apply_window(values: np.ndarray, ds: pydicom.Dataset, info: dict[str, Any]) -> np.ndarray:
    """Map modality values to 0..1 with the file's VOI LUT / window, else a robust min-max."""
    has_lut = bool(ds.get("VOILUTSequence"))
    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    if has_lut or has_window:
        try:
            if has_lut:  # a LUT is indexed by integer values
                values = np.round(values).astype(np.int64)
            windowed = apply_voi_lut(values, ds, index=0, prefer_lut=True)
            low, high = _voi_output_range(ds, has_lut)
            gray = np.clip((windowed - low) / (high - low), 0.0, 1.0)
        except (ValueError, TypeError, AttributeError, ZeroDivisionError, NotImplementedError) as exc:
            info["notes"].append(f"the file's VOI LUT/window failed ({exc}); used robust min-max")
        else:
            if has_lut:
                info.update(window_source="file (VOI LUT Sequence)", window_center=None, window_width=None)
            else:
                info.update(
                    window_source="file (Window Center/Width)",
                    window_center=_first_value(ds.WindowCenter), window_width=_first_value(ds.WindowWidth),
                    voi_lut_function=str(ds.get("VOILUTFunction", "LINEAR")),
                )
            return gray
    low_percentile, high_percentile = DICOM_ROBUST_PERCENTILES
    low, high = (float(p) for p in np.percentile(values, DICOM_ROBUST_PERCENTILES))
    if high <= low:  # e.g. a mostly empty mask: fall back to the full range
        low, high = float(values.min()), float(values.max())
    info.update(
        window_source=f"robust min-max ({low_percentile}th-{high_percentile}th percentile)",
        window_center=(low + high) / 2, window_width=high - low,
    )
    if high <= low:
        info["notes"].append(f"constant image (every pixel {low:g}) shown black")
        return np.zeros(values.shape, dtype=np.float64)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def _voi_output_range(ds: pydicom.Dataset, has_lut: bool) -> tuple[float, float]:
    """The output values pydicom's VOI step gives below and above the window (or the LUT's extremes)."""
    if has_lut:
        descriptor = ds.VOILUTSequence[0].LUTDescriptor
        entries, first_mapped = (descriptor[0] or 2**16), descriptor[1]
        lut = apply_voi_lut(np.arange(first_mapped, first_mapped + entries), ds, index=0, prefer_lut=True)
        return float(lut.min()), float(lut.max())
    center, width = _first_value(ds.WindowCenter), abs(_first_value(ds.WindowWidth))
    # far outside the window every VOI function (LINEAR, LINEAR_EXACT, SIGMOID) reaches its limits
    probe = np.array([center - 100 * width - 1, center + 100 * width + 1], dtype=np.float64)
    below, above = apply_voi_lut(probe, ds, index=0, prefer_lut=False)
    return float(below), float(above)


def _first_value(value: Any) -> float:
    """The first of a multi-valued DICOM element (e.g. several windows), as a float."""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0]
    return float(value)


def _full_range_to_uint8(pixels: np.ndarray, bits: int) -> np.ndarray:
    """Scale unsigned `bits`-bit colour samples to 8 bits."""
    if pixels.dtype == np.uint8 and bits <= 8:
        return pixels
    return np.round(np.clip(pixels.astype(np.float64) / (2**bits - 1), 0.0, 1.0) * 255).astype(np.uint8)
