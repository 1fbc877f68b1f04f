"""The largest image file a user may upload: one limit for the Compare tab and the Train tab's intake.

The app hands it to Gradio as ``max_file_size`` (overridable with ZOO_APP_MAX_FILE_SIZE); train.intake caps
each image of an upload at it. The pixel cap they share is zoo.images.MAX_IMAGE_PIXELS, beside the reader
that enforces it.
"""
from __future__ import annotations

__all__ = ["MAX_UPLOAD_BYTES", "MAX_UPLOAD_SIZE"]

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
# the same limit in Gradio's spelling, where 1 MB is 1024**2 bytes
MAX_UPLOAD_SIZE = f"{MAX_UPLOAD_BYTES // 1024**2}mb"
