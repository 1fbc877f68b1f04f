"""The DICOM reader (pydicom): one frame of a DICOM file (the middle one of a multi-frame file, as a NIfTI volume
gives its middle slice), presented as a radiology viewer would.

Grayscale is rescaled to modality units (e.g. Hounsfield), windowed (the caller's window, else the file's VOI
LUT or Window Center/Width, else a robust min-max) and MONOCHROME1 inverted; colour (RGB, YBR, palette) is kept
as RGB. A deflated file is inflated no further than its image needs (pydicom alone would inflate it whole), and
the file's window presets are listed in ``info["window_presets"]``.
"""
from __future__ import annotations

import contextlib
import io
import zlib
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataelem import DataElement
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.filereader import read_dataset, read_preamble
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.uid import (UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian)

from .decoded import CHOSEN_WINDOW, Claim, ImageLoadError, ImageReader, Limits, LoadedImage, Readable
from .pixels import check_size, downscale, downscale_values
from .volume import MAX_VOLUME_VOXELS, Volume, check_volume_size, window_volume

__all__ = ["DEFLATED_DICOM_HEADER_BYTES", "DICOM_ROBUST_PERCENTILES", "DICOM_READER", "dicom_frames", "middle_frame",
           "read_dicom_volume"]

DICOM_ROBUST_PERCENTILES = (0.5, 99.5)  # display range of a DICOM that carries no window of its own
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
_DICOM_SUFFIXES = (".dcm", ".dicom")


def _claim_dicom(head: bytes, name: str) -> Claim:
    """SURE for the 'DICM' magic after the 128-byte preamble; LIKELY for a .dcm name or a preamble-less
    stream opening with a group 0002/0008 tag."""
    if head[128:132] == b"DICM":
        return Claim.SURE
    if name.lower().endswith(_DICOM_SUFFIXES) or (head[:2] in (b"\x02\x00", b"\x08\x00") and len(head) >= 8):
        return Claim.LIKELY
    return Claim.NO


def _load_dicom(fp: str | io.BytesIO, name: str, limits: Limits) -> LoadedImage:
    """Decode one frame of a DICOM file (the middle one, `middle_frame`) and present it as a radiology viewer
    would."""
    ds = _read_dicom(fp, name, limits)
    try:
        rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        if not rows or not columns:
            raise ValueError(f"Rows/Columns are {ds.get('Rows')!r}/{ds.get('Columns')!r}")
        check_size(name, (columns, rows), limits)
        info = _dicom_info(ds, name)
        transfer_syntax = _transfer_syntax(ds, name, info["notes"])
        info.update(transfer_syntax=transfer_syntax.name, transfer_syntax_uid=str(transfer_syntax))
        pixels = _decode_frame(ds, name, transfer_syntax, info["frame_used"])
        if info["number_of_frames"] > 1:
            info["notes"].append(f"frame {info['frame_used'] + 1} of {info['number_of_frames']} used, the middle one "
                                 "(zoo.images.load_volume reads every frame)")
        if pixels.ndim == 2 and info["photometric_interpretation"] != "PALETTE COLOR":
            pixels = downscale_values(pixels, limits.max_side, info["notes"])  # windowing at full size costs GBs
        image = downscale(_dicom_to_8bit(pixels, ds, info, limits.window), limits.max_side, info["notes"])
    except ImageLoadError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise ImageLoadError(
            f"{name}: the DICOM header has an invalid or inconsistent value ({exc}). "
            "Repair or re-export the file."
        ) from exc
    info.update(mode=image.mode, size=image.size)
    return LoadedImage(image, info)


def _read_dicom(fp: str | io.BytesIO, name: str, limits: Limits) -> pydicom.Dataset:
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


def _read_dicom_dataset(f: io.BufferedIOBase, name: str, limits: Limits) -> pydicom.Dataset:
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
                                 limits: Limits) -> None:
    """Refuse, from the inflated header alone, pixel data larger than the header's image or the pixel limit."""
    rows, columns = int(header.get("Rows") or 0), int(header.get("Columns") or 0)
    if not rows or not columns:
        raise ImageLoadError(
            f"{name}: the deflated DICOM's header gives Rows/Columns {header.get('Rows')!r}/"
            f"{header.get('Columns')!r}, so the size of its pixel data is unknown. Repair or re-export the file."
        )
    check_size(name, (columns, rows), limits)
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
    frames = int(ds.get("NumberOfFrames") or 1)
    return {
        "source": name, "format": "DICOM", "modality": ds.get("Modality"),
        "sop_class": UID(ds.SOPClassUID).name if ds.get("SOPClassUID") else None,
        "photometric_interpretation": photometric,
        "original_mode": f"{ds.get('BitsStored', ds.get('BitsAllocated'))}-bit {photometric}",
        "original_size": (int(ds.Columns), int(ds.Rows)),
        "number_of_frames": frames, "frame_used": middle_frame(frames),
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


def middle_frame(frames: int) -> int:
    """The frame `load_image` reads of a file of `frames` frames: the middle one (0-based), as a volume's middle
    slice (zoo.images.volume.Volume.middle)."""
    return max(frames, 1) // 2


def _decode_frame(ds: pydicom.Dataset, name: str, transfer_syntax: UID, index: int) -> np.ndarray:
    try:
        ds.pixel_array_options(index=index)  # decode only that frame of a multi-frame file
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


def dicom_frames(fp: Readable, name: str) -> int:
    """How many frames a DICOM file's header announces (1 where it names none; 0 when it cannot be read)."""
    try:
        ds = _read_dicom(fp, name, Limits(max_pixels=MAX_VOLUME_VOXELS, max_side=None, max_aspect_ratio=float("inf")))
        return int(ds.get("NumberOfFrames") or 1)
    except (ImageLoadError, ValueError, TypeError):
        return 0


def read_dicom_volume(fp: Readable, name: str, max_voxels: int) -> Volume:
    """A multi-frame DICOM as a `Volume`: its frames are the axial slices, in file order, rows and columns as
    stored (the per-frame geometry is not read, so nothing is reoriented); grayscale rescaled to modality units
    and windowed over all frames, MONOCHROME1 inverted; colour kept as RGB."""
    ds = _read_dicom(fp, name, Limits(max_pixels=max_voxels, max_side=None, max_aspect_ratio=float("inf")))
    try:
        info = _dicom_info(ds, name)
        frames, rows, columns = info["number_of_frames"], int(ds.Rows), int(ds.Columns)
        if frames < 2:
            raise ImageLoadError(f"{name}: a DICOM of one frame is an image, not a volume. Open it as an image "
                                 "(zoo.images.load_image), or pass a multi-frame DICOM or a NIfTI volume.")
        bits = int(ds.get("BitsAllocated") or 8)
        check_volume_size(name, (columns, rows, frames), max(1, bits // 8) * int(ds.get("SamplesPerPixel") or 1),
                          max_voxels)
        transfer_syntax = _transfer_syntax(ds, name, info["notes"])
        pixels = _decode_all_frames(ds, name, transfer_syntax)
    except ImageLoadError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise ImageLoadError(f"{name}: the DICOM header has an invalid or inconsistent value ({exc}). "
                             "Repair or re-export the file.") from exc
    info["notes"].append(f"{frames} frames read as the axial slices, in file order, rows and columns as stored "
                         "(the file's per-frame geometry is not read: not reoriented)")
    voxels = np.moveaxis(pixels, (0, 1, 2), (2, 1, 0))  # (frames, rows, columns[, 3]) -> (columns, rows, frames[, 3])
    voxels = voxels[:, ::-1]  # a slice shows its top row at the top (Volume.slice puts the high end of y there)
    if pixels.ndim == 4 or info["photometric_interpretation"] == "PALETTE COLOR":
        voxels = _dicom_colour_volume(voxels, ds, info)
    else:
        voxels = _dicom_gray_volume(voxels, ds, info)
    spacing = _frame_spacing(ds)
    info.update(volume_shape=tuple(int(s) for s in voxels.shape[:3]), voxel_spacing_mm=spacing,
                orientation="as stored (frames as axial slices)", transfer_syntax=transfer_syntax.name)
    return Volume(np.ascontiguousarray(voxels), spacing, info)


def _decode_all_frames(ds: pydicom.Dataset, name: str, transfer_syntax: UID) -> np.ndarray:
    """Every frame: (frames, rows, columns) or (frames, rows, columns, 3)."""
    try:
        ds.pixel_array_options(index=None)
        return ds.pixel_array
    except Exception as exc:
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ImageLoadError(f"{name}: the {transfer_syntax.name} pixel data of its frames could not be decoded "
                             f"({reason}). Re-export the file, or convert it to an uncompressed DICOM "
                             "(e.g. `gdcmconv --raw`).") from exc


def _dicom_gray_volume(voxels: np.ndarray, ds: pydicom.Dataset, info: dict[str, Any]) -> np.ndarray:
    """Modality units (e.g. Hounsfield), one percentile window over every frame, MONOCHROME1 inverted."""
    values = apply_modality_lut(voxels, ds)
    gray, window = window_volume(values, info["source"], info["notes"])
    info.update(window)
    info["notes"].append(f"intensity window {window['window_low']:g} to {window['window_high']:g}: "
                         f"{window['window_source']}")
    if info["photometric_interpretation"] == "MONOCHROME1":
        info["notes"].append("MONOCHROME1: inverted so that higher values are brighter")
        return 255 - gray
    return gray


def _dicom_colour_volume(voxels: np.ndarray, ds: pydicom.Dataset, info: dict[str, Any]) -> np.ndarray:
    """RGB frames (pydicom has turned YBR into RGB) or palette frames through their colour table, as 8-bit RGB."""
    if info["photometric_interpretation"] == "PALETTE COLOR":
        rgb = apply_color_lut(voxels, ds)[..., :3]
        info["notes"].append("palette colour lookup table applied")
        return _full_range_to_uint8(rgb, 8 * rgb.dtype.itemsize)
    info.update(window_source="none: colour frames are shown as stored")
    return _full_range_to_uint8(voxels, int(ds.get("BitsStored") or 8 * voxels.dtype.itemsize))


def _frame_spacing(ds: pydicom.Dataset) -> tuple[float, float, float]:
    """(column, row, frame) spacing in mm from Pixel Spacing and Spacing Between Slices / Slice Thickness, where
    the file gives them (a shared functional group of an enhanced multi-frame file included); else 1 mm each."""
    groups = ds.get("SharedFunctionalGroupsSequence")
    measures = groups[0].get("PixelMeasuresSequence") if groups else None
    source = measures[0] if measures else ds
    try:
        row, column = (float(v) for v in source.get("PixelSpacing") or (1.0, 1.0))
        between = source.get("SpacingBetweenSlices") or source.get("SliceThickness") or 1.0
        spacing = (column, row, abs(float(between)))
    except (TypeError, ValueError):
        return 1.0, 1.0, 1.0
    return spacing if all(s > 0 for s in spacing) else (1.0, 1.0, 1.0)


DICOM_READER = ImageReader(formats=("DICOM",), suffixes=_DICOM_SUFFIXES, format_suffixes={"DICOM": ".dcm"},
                           claim=_claim_dicom, read=_load_dicom, read_volume=read_dicom_volume)
