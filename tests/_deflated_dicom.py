"""Real Deflated Explicit VR Little Endian DICOM files (transfer syntax 1.2.840.10008.1.2.1.99) for tests and
benchmarks.

`write_deflated_dicom` encodes the data elements with pydicom and deflates them as PS3.5 A.5 says (raw
deflate of everything after the file meta), streaming zero pixels through zlib: a file announcing a gigabyte
of pixels is written in a few MB of memory and is about a megabyte on disk. pydicom's own writer would need
the gigabyte in memory twice. `tests/test_images.py` checks that pydicom reads these files back.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

__all__ = ["grayscale_dataset", "write_deflated_dicom"]

_ZEROS = bytes(1 << 20)


def grayscale_dataset(rows: int, columns: int, bits: int = 8) -> Dataset:
    """A Secondary Capture MONOCHROME2 dataset of rows x columns, without its Pixel Data, set to be deflated."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns = "OT", rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    return ds


def write_deflated_dicom(path: Path, ds: Dataset, pixel_bytes: int) -> Path:
    """Write `ds` (no Pixel Data) followed by an OB Pixel Data element of `pixel_bytes` zero bytes, deflated."""
    if "PixelData" in ds:
        raise ValueError("write_deflated_dicom writes the Pixel Data itself; pass a dataset without it")
    meta = DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    pydicom.dataset.validate_file_meta(ds.file_meta, enforce_standard=True)
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    padded = pixel_bytes + pixel_bytes % 2  # element values have an even length
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with open(path, "wb") as f:
        f.write(bytes(128) + b"DICM" + meta.getvalue())
        f.write(compressor.compress(body.getvalue()))
        f.write(compressor.compress(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, padded)))
        for start in range(0, padded, len(_ZEROS)):
            f.write(compressor.compress(_ZEROS[:min(len(_ZEROS), padded - start)]))
        f.write(compressor.flush())
    return path
