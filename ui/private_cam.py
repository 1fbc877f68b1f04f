"""Private mode's Grad-CAM heatmaps: what the page needs to compute them itself, as the server does (zoo.onnx_cam).

A model whose verified ONNX file has the closed form (its onnx.json's Grad-CAM record, read by zoo.backends) gets
its head's weights as raw little-endian float32 in `cam.bin` (the arrays one after the other, as PyTorch holds them,
read from the verified ONNX file's own initializers: the same numbers the server's heatmap uses), and a "cam" entry
in its bundle naming the form, the map's channel count and each array's shape and offset. The page (web/cam.js)
runs the graph, takes its `feature_map` and `features` outputs, and computes the head's gradient and the map:

    "linear"   dS_c/df = weight[c, :D]
    "mlp"      dS_c/df = fc1.weight^T ((fc1.weight f + fc1.bias > 0) * fc2.weight[c])

then scales and resizes it as zoo.onnx_cam.cam_mask does (OpenCV's bilinear resize, written out in web/cam.js),
and overlays it on the model's view with the same colour table and weight as the server (PAGE_HEATMAP). Any other
model says why it has none: the reason the server's heatmap_source gives for falling back to PyTorch, which the
page does not have.
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from zoo import ZooError
from zoo.backends import Backend
from zoo.gradcam import CAM_DISPLAY_SIZE, CAM_IMAGE_WEIGHT
from zoo.onnx_cam import CLOSED_FORMS

from .heatmaps import HEATMAP_LABEL, LEGEND_LEAST, LEGEND_MOST, colormap_table

__all__ = ["CAM_FILE", "NO_HEATMAP", "cam_bundle", "page_heatmap_settings"]

CAM_FILE = "cam.bin"  # the route's name for a model's head weights
NO_HEATMAP = "no heatmap in private mode: {reason}; the Compare tab makes it with PyTorch's Grad-CAM"


def page_heatmap_settings() -> dict[str, Any]:
    """How the page draws every heatmap, as ui.heatmaps and zoo.gradcam.cam_overlay draw the server's: OpenCV's JET
    colours (index = uint8(255 * map)), the image's weight in the overlay, the display size and the legend's words."""
    return {"colors": colormap_table().tolist(), "image_weight": CAM_IMAGE_WEIGHT, "display_size": CAM_DISPLAY_SIZE,
            "label": HEATMAP_LABEL, "least": LEGEND_LEAST, "most": LEGEND_MOST}


def cam_bundle(backend: Backend, spare_bytes: int) -> tuple[dict[str, Any] | None, str | None, bytes | None]:
    """(the bundle's "cam" entry, None, cam.bin's bytes) for a model whose heatmap has the closed form and whose head
    weights fit in `spare_bytes` (what the download limit leaves); else (None, why it has no heatmap, None)."""
    try:
        head = backend.cam_head  # read from the verified ONNX file (its sha256 checked again)
    except ZooError as e:
        return None, NO_HEATMAP.format(reason=f"its head's weights could not be read ({e})"), None
    if head is None:
        return None, NO_HEATMAP.format(reason=backend.cam_reason or "no closed form"), None
    arrays = {role: np.ascontiguousarray(head.weights[role], dtype="<f4") for role in CLOSED_FORMS[head.form]}
    data = b"".join(a.tobytes() for a in arrays.values())
    if len(data) > spare_bytes:
        return None, NO_HEATMAP.format(reason=f"its head's weights ({len(data) / 2**20:.1f} MB) would take its "
                                       "download over private mode's limit"), None
    offsets = np.cumsum([0, *(a.size for a in arrays.values())]).tolist()
    entry = {"form": head.form, "channels": head.channels, "layer": backend.cam_layer,
             "arrays": {role: {"shape": list(a.shape), "offset": offset}
                        for (role, a), offset in zip(arrays.items(), offsets)},
             "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    return entry, None, data
