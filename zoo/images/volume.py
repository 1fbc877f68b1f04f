"""A volume (NIfTI, multi-frame DICOM) as the app reads it: 8-bit voxels in canonical order, and its 2-D slices.

A reader (`zoo.images.nifti_reader`, `zoo.images.dicom_reader`) turns a file into a `Volume`: the voxels in
(x, y, z) order - for NIfTI reoriented to nibabel's closest canonical RAS+ (x to the patient's Right, y to
Anterior, z to Superior) - windowed once over the whole volume to 8 bits (the 0.5th-99.5th percentile unless
stated otherwise in ``info``). `Volume.slice` cuts one sagittal (fixed x), coronal (fixed y) or axial (fixed z)
slice as the same `LoadedImage` every image reader returns, displayed in the neurological convention (the
patient's right on the image's right; superior, else anterior, at the top) with square pixels.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from .decoded import ImageLoadError, Limits, LoadedImage
from .pixels import check_size, downscale

__all__ = ["AXES", "DEFAULT_AXIS", "MAX_VOLUME_VOXELS", "MAX_VOLUME_DATA_BYTES", "VOLUME_WINDOW_PERCENTILES",
           "Volume", "check_volume_size", "window_volume"]

AXES = ("sagittal", "coronal", "axial")  # the slice planes, in the order of the array axis each one fixes
DEFAULT_AXIS = "axial"
# a volume holds at most as many voxels as an image may hold pixels (zoo.images.MAX_IMAGE_PIXELS): a 512x512x150 CT
MAX_VOLUME_VOXELS = 40_000_000
# the voxels as stored, once inflated (a float32 volume of MAX_VOLUME_VOXELS); checked from the header, before reading
MAX_VOLUME_DATA_BYTES = 4 * MAX_VOLUME_VOXELS
VOLUME_WINDOW_PERCENTILES = (0.5, 99.5)  # the intensity window of a grayscale volume, over all its voxels
_WINDOW_SAMPLE = 8_000_000  # larger volumes estimate the percentiles from a regular sample of this many voxels


@dataclass
class Volume:
    """8-bit voxels (x, y, z) or (x, y, z, 3) for colour, their spacing (mm), and how they were made."""

    voxels: np.ndarray
    spacing: tuple[float, float, float]
    info: dict[str, Any] = field(default_factory=dict)

    def num_slices(self, axis: str) -> int:
        """How many slices the volume has along `axis` (sagittal, coronal or axial)."""
        return int(self.voxels.shape[_axis_index(axis)])

    def middle(self, axis: str = DEFAULT_AXIS) -> int:
        """The index of the middle slice along `axis`."""
        return self.num_slices(axis) // 2

    def slice(self, axis: str, index: int, limits: Limits) -> LoadedImage:
        """Slice `index` along `axis` as an 8-bit L (or RGB) image, checked and downscaled by `limits`."""
        position, count, name = _axis_index(axis), self.num_slices(axis), self.info["source"]
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < count:
            raise ImageLoadError(f"{name}: slice {index!r} is not among the {count} {axis} slices "
                                 f"(0 to {count - 1}). Pick a slice in that range.")
        plane = np.take(self.voxels, int(index), axis=position)  # (the other two axes in order[, 3])
        plane = np.flip(np.swapaxes(plane, 0, 1), axis=0)  # rows: the second axis, its high end on top
        rows_mm, columns_mm = _plane_spacing(self.spacing, position)
        image = Image.fromarray(np.ascontiguousarray(plane), mode="RGB" if plane.ndim == 3 else "L")
        notes = [f"{axis} slice {index} of {count} (0 to {count - 1})"]
        image = _square_pixels(image, rows_mm, columns_mm, notes,
                               lambda size: check_size(f"{name} ({axis} slice {index})", size, limits))
        image = downscale(image, limits.max_side, notes)
        info = {key: value for key, value in self.info.items() if key != "notes"}
        info.update(axis=axis, slice_index=int(index), num_slices=count, original_size=(plane.shape[1], plane.shape[0]),
                    mode=image.mode, size=image.size,
                    notes=[*self.info.get("notes", []), *notes])
        return LoadedImage(image, info)

    def middle_slice(self, limits: Limits) -> LoadedImage:
        """The middle slice along DEFAULT_AXIS, saying so in its notes (what `load_image` gives for a volume)."""
        loaded = self.slice(DEFAULT_AXIS, self.middle(), limits)
        loaded.info["notes"].append(f"a volume: the middle {DEFAULT_AXIS} slice was used "
                                    "(zoo.images.load_volume reads every slice)")
        return loaded


def _axis_index(axis: str) -> int:
    if axis not in AXES:
        raise ImageLoadError(f"axis must be one of {', '.join(AXES)}, got {axis!r:.60}. Pick one of those.")
    return AXES.index(axis)


def _plane_spacing(spacing: tuple[float, float, float], position: int) -> tuple[float, float]:
    """(row spacing, column spacing) in mm of a slice across array axis `position`: its rows step along the
    higher remaining axis, its columns along the lower one."""
    low, high = (s for i, s in enumerate(spacing) if i != position)
    return high, low


def _square_pixels(image: Image.Image, rows_mm: float, columns_mm: float, notes: list[str],
                   check: Callable[[tuple[int, int]], None]) -> Image.Image:
    """Resample a slice of anisotropic voxels (e.g. 0.5 x 0.5 x 5 mm) so that a pixel is as tall as it is wide;
    `check` (the size limits) sees the size first."""
    if not (rows_mm > 0 and columns_mm > 0) or np.isclose(rows_mm, columns_mm, rtol=0.01):
        check(image.size)
        return image
    ratio = rows_mm / columns_mm  # > 1: rows are farther apart than columns, so stretch the height
    width, height = image.size
    size = (width, max(1, round(height * ratio))) if ratio > 1 else (max(1, round(width / ratio)), height)
    check(size)
    notes.append(f"voxels of {columns_mm:g} x {rows_mm:g} mm in this plane: resampled from {width}x{height} to "
                 f"{size[0]}x{size[1]} so that pixels are square")
    return image.resize(size, Image.Resampling.BILINEAR)


def check_volume_size(name: str, shape: tuple[int, ...], bytes_per_voxel: int, max_voxels: int) -> None:
    """Refuse, from a header, a volume with more than `max_voxels` voxels or MAX_VOLUME_DATA_BYTES of data."""
    voxels = int(np.prod(shape[:3], dtype=np.int64))
    if voxels > max_voxels:
        raise ImageLoadError(
            f"{name}: a volume of {' x '.join(str(s) for s in shape[:3])} = {voxels:,} voxels, over the limit of "
            f"{max_voxels:,} voxels (max_voxels); refused before reading its data. Crop or downsample it (e.g. "
            "keep the slices of interest), or pass a larger max_voxels if you trust the file."
        )
    if voxels * bytes_per_voxel > MAX_VOLUME_DATA_BYTES:
        raise ImageLoadError(
            f"{name}: its {voxels:,} voxels at {bytes_per_voxel} bytes each take {voxels * bytes_per_voxel:,} "
            f"bytes, over the limit of {MAX_VOLUME_DATA_BYTES:,}; refused before reading its data. Save it with "
            "a smaller data type (e.g. float32 or int16) or crop it."
        )


def window_volume(values: np.ndarray, name: str, notes: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Grayscale voxels (any numeric type) to uint8 through one window over the whole volume: its
    VOLUME_WINDOW_PERCENTILES; non-finite voxels count as the window's low end. -> (voxels, window info)."""
    finite = np.isfinite(values)
    non_finite = values.size - int(np.count_nonzero(finite))
    if non_finite == values.size:
        raise ImageLoadError(f"{name}: every voxel is NaN or infinite; there is no image to show. "
                             "Re-export the volume.")
    sample = values[finite] if non_finite else values.reshape(-1)
    step = max(1, sample.size // _WINDOW_SAMPLE)
    low, high = (float(v) for v in np.percentile(sample[::step], VOLUME_WINDOW_PERCENTILES))
    if high <= low:  # e.g. a mostly empty mask: the full range
        low, high = float(sample.min()), float(sample.max())
    lower, upper = VOLUME_WINDOW_PERCENTILES
    source = f"percentile window over the volume ({lower}th-{upper}th percentile of its voxels" + \
             (f", estimated from every {step}th voxel)" if step > 1 else ")")
    window = {"window_source": source, "window_low": low, "window_high": high,
              "window_center": (low + high) / 2, "window_width": high - low}
    if non_finite:
        notes.append(f"{non_finite:,} NaN/infinite voxels shown as the window's low end")
    if high <= low:
        notes.append(f"constant volume (every voxel {low:g}) shown black")
        return np.zeros(values.shape, dtype=np.uint8), window
    scaled = np.empty(values.shape, dtype=np.uint8)
    for z in range(values.shape[2]):  # a slab at a time: float temporaries of one slice, not of the volume
        part = np.nan_to_num(values[:, :, z].astype(np.float32), nan=low, posinf=high, neginf=low)
        scaled[:, :, z] = np.round(np.clip((part - low) / (high - low), 0.0, 1.0) * 255)
    return scaled, window
