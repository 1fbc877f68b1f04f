"""The largest image file a user may upload: one limit for the Compare tab, the Train tab's intake and the batch
classification (zoo.batch); and the caps on an upload of many images (a zip, a batch), shared by the intake and the
batch classification.

The app hands it to Gradio as ``max_file_size`` (overridable with ZOO_APP_MAX_FILE_SIZE); train.intake caps
each image of an upload at it. The pixel cap they share is zoo.images.MAX_IMAGE_PIXELS, beside the reader
that enforces it.
"""
from __future__ import annotations

__all__ = ["MAX_ARCHIVE_BYTES", "MAX_ARCHIVE_FILES", "MAX_UPLOAD_BYTES", "MAX_UPLOAD_SIZE"]

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
# the same limit in Gradio's spelling, where 1 MB is 1024**2 bytes
MAX_UPLOAD_SIZE = f"{MAX_UPLOAD_BYTES // 1024**2}mb"
# an upload of many images (a .zip for the Train tab's intake, a batch classification): files, and bytes once inflated
MAX_ARCHIVE_FILES = 2000
MAX_ARCHIVE_BYTES = 512 * 1024 * 1024  # 2000 JPEG chest X-rays of ~250 kB fit
