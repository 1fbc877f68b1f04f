"""Turn an image file into 8-bit pixels, the same way for training and for the app.

`load_image` reads PNG, JPEG, BMP, TIFF and GIF with Pillow, DICOM with pydicom and NIfTI with nibabel, and returns an
8-bit ``"L"`` (grayscale source) or ``"RGB"`` (colour source) image plus a record of what was done
to it. Every problem with the input raises `ImageLoadError`, whose message names the file, says what
is wrong with it and what to do.

A few hundred bytes must not cost gigabytes: the pixel count and the aspect ratio are checked from the
header, before decoding, large images are downscaled once, here, to at most `MAX_IMAGE_SIDE` pixels on the
longer side, and high-depth pixels are scaled to 8 bits in chunks. ``info["original_size"]`` keeps the
file's own size.

Modules: `decoded` (what every reader returns), `pixels` (the size checks and scaling they share),
`pillow_reader`, `dicom_reader`, `nifti_reader`, `volume` (a volume's slices) and `dispatch` (the registered
readers, `IMAGE_SUFFIXES`, `load_image`, and `load_volume`: a NIfTI or multi-frame DICOM as a `Volume` whose
sagittal, coronal and axial slices are images; `load_image` of a volume is its middle axial slice).
"""
from .decoded import (CHOSEN_WINDOW, MAX_ASPECT_RATIO, MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, ImageLoadError, LoadedImage,
                      printable_name, to_model_mode)
from .dicom_reader import DEFLATED_DICOM_HEADER_BYTES, DICOM_ROBUST_PERCENTILES
from .dispatch import (FORMAT_SUFFIXES, IMAGE_SUFFIXES, READERS, VOLUME_FORMATS, image_stem, is_image_name, is_volume,
                       load_image, load_volume)
from .pillow_reader import PILLOW_FORMATS
from .volume import AXES, DEFAULT_AXIS, MAX_VOLUME_VOXELS, VOLUME_WINDOW_PERCENTILES, Volume

__all__ = ["DEFLATED_DICOM_HEADER_BYTES", "ImageLoadError", "LoadedImage", "MAX_IMAGE_PIXELS", "MAX_IMAGE_SIDE",
           "MAX_ASPECT_RATIO", "CHOSEN_WINDOW", "load_image", "printable_name", "to_model_mode", "IMAGE_SUFFIXES",
           "FORMAT_SUFFIXES", "READERS", "PILLOW_FORMATS", "DICOM_ROBUST_PERCENTILES", "VOLUME_FORMATS", "is_volume",
           "load_volume", "image_stem", "is_image_name", "Volume", "AXES", "DEFAULT_AXIS", "MAX_VOLUME_VOXELS",
           "VOLUME_WINDOW_PERCENTILES"]
