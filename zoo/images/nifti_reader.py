"""The NIfTI reader (nibabel): a ``.nii`` / ``.nii.gz`` volume, reoriented to canonical RAS+, as a `Volume`.

nibabel reads lazily: the header's shape and data type are checked against the volume limits before any voxel is
read or inflated (a gzip bomb announcing gigabytes is refused from its header), and only the voxels the header
describes are inflated. A 4-D file (e.g. fMRI time points) gives its first volume, saying so. As an image
(`zoo.images.load_image`) a volume is its middle axial slice.
"""
from __future__ import annotations

import contextlib
import gzip
import zlib
from typing import Any

import numpy as np

from .decoded import Claim, ImageLoadError, ImageReader, Limits, LoadedImage, Readable
from .volume import MAX_VOLUME_VOXELS, Volume, check_volume_size, window_volume

__all__ = ["NIFTI_READER", "NIFTI_FORMATS", "read_nifti_volume"]

NIFTI_FORMATS = ("NIfTI",)
_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI1_SINGLE, _NIFTI1_PAIR = b"n+1\x00", b"ni1\x00"  # at byte 344 of a NIfTI-1 header
_NIFTI2_SINGLE, _NIFTI2_PAIR = b"n+2\x00", b"ni2\x00"  # at byte 4 of a NIfTI-2 header
_HEADER_BYTES = 540  # a NIfTI-2 header; NIfTI-1 takes 348
_SUFFIXES = (".nii", ".nii.gz")
_FIX = "Re-export or re-download it (e.g. with nibabel, FSL's fslchfiletype or dcm2niix)."


def _nifti_magic(header: bytes) -> bytes | None:
    """The NIfTI magic of an (inflated) header's first bytes, or None."""
    if header[344:348] in (_NIFTI1_SINGLE, _NIFTI1_PAIR):
        return header[344:348]
    if header[4:8] in (_NIFTI2_SINGLE, _NIFTI2_PAIR):
        return header[4:8]
    return None


def _inflated_head(head: bytes) -> bytes:
    """As much of a gzip stream's start as the first bytes inflate to (at most a header), or b""."""
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, _HEADER_BYTES)
    except zlib.error:
        return b""


def _claim_nifti(head: bytes, name: str) -> Claim:
    """SURE for a NIfTI magic (inflated first where gzip); LIKELY for a .nii / .nii.gz name."""
    header = _inflated_head(head) if head.startswith(_GZIP_MAGIC) else head
    if _nifti_magic(header) is not None:
        return Claim.SURE
    return Claim.LIKELY if name.lower().endswith(_SUFFIXES) else Claim.NO


def read_nifti_volume(fp: Readable, name: str, max_voxels: int = MAX_VOLUME_VOXELS) -> Volume:
    """The NIfTI file `fp` as a canonical (RAS+) 8-bit `Volume`; any problem raises ImageLoadError."""
    import nibabel as nib  # noqa: PLC0415 - 0.6 s of imports, paid by the first volume, not by every start

    with open(fp, "rb") if isinstance(fp, str) else contextlib.nullcontext(fp) as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        with gzip.GzipFile(fileobj=raw, mode="rb") if compressed else contextlib.nullcontext(raw) as stream:
            image, notes = _open_nifti(stream, name, max_voxels)
            try:
                original = "".join(nib.orientations.aff2axcodes(image.affine))
                canonical = nib.as_closest_canonical(image)  # reads the voxels (checked above)
                values = np.asanyarray(canonical.dataobj)
            except (EOFError, OSError, ValueError, zlib.error) as exc:
                raise ImageLoadError(f"{name}: the NIfTI voxel data are truncated or corrupt ({_reason(exc)}). "
                                     f"{_FIX}") from exc
    spacing = tuple(float(z) for z in canonical.header.get_zooms()[:3])
    if original != "RAS":
        notes.append(f"reoriented from {original} to canonical RAS (nibabel's closest canonical orientation)")
    voxels, window = window_volume(values, name, notes)
    shape = voxels.shape
    info: dict[str, Any] = {
        "source": name, "format": "NIfTI (gzip)" if compressed else "NIfTI",
        "original_mode": f"{image.get_data_dtype()} volume",
        "volume_shape": tuple(int(s) for s in shape), "voxel_spacing_mm": spacing,
        "original_orientation": original, "orientation": "RAS", "compressed": compressed, **window,
        "notes": [f"volume of {shape[0]}x{shape[1]}x{shape[2]} voxels ({_mm(spacing)} mm)", *notes,
                  f"intensity window {window['window_low']:g} to {window['window_high']:g}: "
                  f"{window['window_source']}"],
    }
    return Volume(voxels, spacing, info)


def _open_nifti(stream: Any, name: str, max_voxels: int) -> tuple[Any, list[str]]:
    """The image nibabel makes of `stream`'s header (voxels not read yet), checked against the limits; 4-D gives
    its first volume. -> (image, notes)."""
    import nibabel as nib  # noqa: PLC0415 - see read_nifti_volume

    try:
        start = stream.read(_HEADER_BYTES)
        stream.seek(0)
    except (EOFError, OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise ImageLoadError(f"{name}: the compressed NIfTI data are truncated or corrupt ({_reason(exc)}). "
                             f"{_FIX}") from exc
    magic = _nifti_magic(start)
    if magic is None:
        raise ImageLoadError(f"{name}: not a NIfTI file (no NIfTI-1 or NIfTI-2 magic in its "
                             f"{len(start)}-byte header; the file is truncated, corrupt or of another format). "
                             f"{_FIX}")
    if magic in (_NIFTI1_PAIR, _NIFTI2_PAIR):
        raise ImageLoadError(f"{name}: the header of a NIfTI pair (.hdr + .img); its voxels are in another file. "
                             "Convert the pair to one .nii or .nii.gz file (e.g. nibabel.save(nibabel.load(hdr), "
                             "'volume.nii.gz')).")
    image_class = nib.Nifti2Image if magic == _NIFTI2_SINGLE else nib.Nifti1Image
    try:
        image = image_class.from_file_map({"image": nib.FileHolder(fileobj=stream)})
        shape, dtype = image.shape, image.get_data_dtype()
    except Exception as exc:  # nibabel's header errors have many types (HeaderDataError, struct.error, ...)
        raise ImageLoadError(f"{name}: the NIfTI header cannot be read ({_reason(exc)}). {_FIX}") from exc
    notes = []
    if len(shape) > 4 or (len(shape) == 4 and any(s != 1 for s in shape[4:])):
        raise ImageLoadError(f"{name}: a {len(shape)}-D NIfTI ({'x'.join(map(str, shape))}); volumes of 3 (or 4: "
                             "the first is used) dimensions are read. Save the 3-D volume you want on its own.")
    if len(shape) < 3 or min(shape) < 1:
        raise ImageLoadError(f"{name}: a NIfTI of shape {shape} holds no volume. {_FIX}")
    check_volume_size(name, shape, dtype.itemsize, max_voxels)
    if len(shape) == 4:
        if shape[3] > 1:
            notes.append(f"4-D file ({shape[3]} volumes, e.g. time points): the first volume was used")
        image = image.slicer[:, :, :, 0]  # reads the first volume's voxels only
    return image, notes


def _reason(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _mm(spacing: tuple[float, ...]) -> str:
    return " x ".join(f"{s:g}" for s in spacing)


def _middle_slice(fp: Readable, name: str, limits: Limits) -> LoadedImage:
    """What `load_image` gives for a NIfTI: its middle axial slice."""
    loaded = read_nifti_volume(fp, name, limits.max_pixels).middle_slice(limits)  # as many voxels as pixels
    if limits.window is not None:
        loaded.info["notes"].append("the window was not used: a volume is shown through its percentile window")
    return loaded


NIFTI_READER = ImageReader(formats=NIFTI_FORMATS, suffixes=_SUFFIXES,
                           format_suffixes={"NIfTI": ".nii", "NIfTI (gzip)": ".nii.gz"},
                           claim=_claim_nifti, read=_middle_slice, read_volume=read_nifti_volume)
