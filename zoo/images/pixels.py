"""Pixel steps every reader shares: the size checks made from a header, downscaling, min-max to 8 bits.

Checked before decoding: the pixel count and the aspect ratio (a 300000x1 strip would become gigapixels once a
model resizes its shorter side). Done right after decoding: downscaling to `Limits.max_side` on the longer side.
High-depth pixels are scaled to 8 bits in chunks rather than through full-size float copies.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .decoded import ImageLoadError, Limits

__all__ = ["check_size", "fit", "downscale", "downscale_values", "min_max_to_uint8"]

_CHUNK_VALUES = 1 << 20  # high-depth pixels are scaled to 8 bits this many at a time (a few MB of floats)


def min_max_to_uint8(values: np.ndarray, name: str, notes: list[str], what: str) -> np.ndarray:
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


def check_size(name: str, size: tuple[int, int], limits: Limits) -> None:
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


def fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """`size` scaled so that its longer side is `max_side` (each side at least 1 pixel)."""
    scale = max_side / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def downscale(im: Image.Image, max_side: int | None, notes: list[str]) -> Image.Image:
    """The image shrunk (Lanczos) to `max_side` on its longer side, or itself if it is not larger."""
    if max_side is None or max(im.size) <= max_side:
        return im
    size = fit(im.size, max_side)
    notes.append(f"downscaled from {im.size[0]}x{im.size[1]} to {size[0]}x{size[1]} "
                 f"(longer side limited to {max_side} px)")
    # reducing_gap: a box reduction by an integer factor first, then Lanczos (fast, same result to the eye)
    return im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def downscale_values(pixels: np.ndarray, max_side: int | None, notes: list[str]) -> np.ndarray:
    """A 2-D array of stored values shrunk to `max_side`, kept in its dtype and value range.

    Resized as 32-bit float (Pillow "F"): exact for values up to 2**24, which covers 16-bit pixels.
    """
    height, width = pixels.shape
    if max_side is None or max(width, height) <= max_side:
        return pixels
    size = fit((width, height), max_side)
    notes.append(f"downscaled from {width}x{height} to {size[0]}x{size[1]} "
                 f"(longer side limited to {max_side} px) before windowing")
    small = np.asarray(Image.fromarray(pixels.astype(np.float32), mode="F")
                       .resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0))
    # Lanczos overshoots at edges; stay within the stored values (a modality LUT is indexed by them)
    small = np.clip(np.round(small), float(pixels.min()), float(pixels.max()))
    return small.astype(pixels.dtype)
