"""The Pillow reader: PNG, JPEG, BMP, TIFF and GIF files to an 8-bit L/RGB `LoadedImage`.

Only the Pillow plugins in `PILLOW_FORMATS` may open a user's file. Pillow's decompression-bomb warning is an
error here; JPEGs larger than `Limits.max_side` are decoded at a reduced scale directly; high-depth modes are
min-max scaled to 8 bits, palettes expanded, alpha composited on black, EXIF orientation applied.
"""
from __future__ import annotations

import io
import re
import threading
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .decoded import Claim, ImageLoadError, ImageReader, Limits, LoadedImage
from .pixels import check_size, downscale, fit, min_max_to_uint8

__all__ = ["PILLOW_FORMATS", "PILLOW_READER"]

PILLOW_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF")  # Pillow plugins allowed to open user files
_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("LA", "La", "RGBA", "RGBa")
# warnings.catch_warnings swaps process-wide state; serialise our own short uses of it
_WARNINGS_LOCK = threading.Lock()
# how an image file starts, for naming a file Pillow cannot even open (e.g. cut inside its header)
_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF", b"GIF89a": "GIF",
               b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


def _load_with_pillow(fp: str | io.BytesIO, name: str, limits: Limits) -> LoadedImage | None:
    """Decode with Pillow, or return None if the content is not one of PILLOW_FORMATS."""
    loaded = _open_with_pillow(fp, name, limits)
    if loaded is not None and limits.window is not None:
        loaded.info["notes"].append("the window was not used: only grayscale DICOM images are windowed")
    return loaded


def _open_with_pillow(fp: str | io.BytesIO, name: str, limits: Limits) -> LoadedImage | None:
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


def _decode_with_pillow(im: Image.Image, name: str, limits: Limits) -> LoadedImage:
    check_size(name, im.size, limits)
    info: dict[str, Any] = {
        "source": name, "format": im.format, "original_mode": im.mode, "original_size": im.size, "notes": [],
    }
    try:
        if getattr(im, "is_animated", False):
            info["notes"].append("animated/multi-page file: the first frame was used")
        if im.format == "JPEG" and limits.max_side is not None and max(im.size) > limits.max_side:
            # decode at 1/2, 1/4 or 1/8 scale (no smaller than the target): a fraction of the memory
            im.draft(im.mode, fit(im.size, limits.max_side))
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
        gray = Image.fromarray(min_max_to_uint8(np.asarray(im), name, notes, f"mode {mode}"), mode="L")
        return downscale(gray, max_side, notes)
    if mode == "1":
        return downscale(im.convert("L"), max_side, notes)
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if im.has_transparency_data else "RGB")
        notes.append(f"palette image expanded to {im.mode}")
    elif mode in ("L", "RGB") and im.has_transparency_data:  # a tRNS colour key
        im = im.convert("LA" if mode == "L" else "RGBA")
    im = downscale(im, max_side, notes)
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


PILLOW_READER = ImageReader(
    formats=PILLOW_FORMATS,
    suffixes=(".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif"),
    # MPO: a JPEG holding several pictures (a camera's), which Pillow's JPEG plugin opens as such
    format_suffixes={"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif"},
    claim=lambda head, name: Claim.PROBE,  # Pillow itself tells its formats apart by trying to open the file
    read=_load_with_pillow,
    signatures=_SIGNATURES,
)
