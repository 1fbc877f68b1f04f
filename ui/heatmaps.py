"""How the app shows a Grad-CAM heatmap: with its colour legend drawn under it, greyed when the model's OOD check
flagged the image (the map explains an answer that is not meaningful). Plain numpy/Pillow: no gradio here."""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from zoo.inference import ModelResult

__all__ = ["HEATMAPS_BY_DEFAULT", "HEATMAP_LABEL", "HEATMAP_SWITCH_LABEL", "LEGEND_LEAST", "LEGEND_MOST",
           "HEATMAP_FILE_TTL_S", "PNG_COMPRESS_LEVEL", "SWEEP_EVERY_S", "colormap_table", "heatmap_file",
           "heatmap_for_display", "legend_colors", "remove_old_files"]

# Measured on the 2-core machine (tests' tiny zoo + the two packaged Xception classifiers, 6 models, the CT example,
# models already loaded, median of 3): a comparison took 0.34 s without Grad-CAM and 10.3-22.2 s with it on PyTorch.
# Heatmaps from the ONNX feature map (zoo.onnx_cam) cost 1.07-1.33x the comparison without them (benchmarks/
# bench_onnx_cam.py), but models whose head has no closed form still use PyTorch's: the heatmaps stay opt-in.
HEATMAPS_BY_DEFAULT = False
HEATMAP_SWITCH_LABEL = ("Grad-CAM heatmaps (fast where a model's head allows it from ONNX; "
                        "otherwise PyTorch, many times slower)")
HEATMAP_LABEL = "Grad-CAM: where the model looked"
LEGEND_LEAST, LEGEND_MOST = "blue: looked least", "red: looked most"
_LEGEND_BAR_HEIGHT = 14
_LEGEND_TEXT_HEIGHT = 16
_MARGIN = 4


def colormap_table() -> np.ndarray:
    """(256, 3) uint8 RGB: the colour pytorch-grad-cam's overlay gives each 8-bit map value (OpenCV's JET)."""
    import cv2  # noqa: PLC0415  (already imported by pytorch-grad-cam whenever a heatmap exists)

    levels = np.arange(256, dtype=np.uint8).reshape(1, 256)
    return cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)[0]


def legend_colors(width: int) -> np.ndarray:
    """(width, 3) uint8: the colormap of pytorch-grad-cam's overlays (OpenCV's JET), from weakest to strongest."""
    # truncated to 8 bits as pytorch-grad-cam does (np.uint8(255 * mask)), so each colour is one the overlay uses
    ramp = (np.linspace(0.0, 1.0, width) * 255).astype(np.uint8)
    return colormap_table()[ramp]


def heatmap_for_display(result: ModelResult) -> np.ndarray | None:
    """A column's heatmap with the colour bar and its meaning drawn in a white margin below it, desaturated when
    the model's OOD check flagged the image; None when the comparison made no heatmap."""
    if result.heatmap is None:
        return None
    overlay = np.asarray(result.heatmap, dtype=np.uint8)  # (H, W, 3)
    height, width = overlay.shape[:2]
    legend = np.full((_MARGIN + _LEGEND_BAR_HEIGHT + _LEGEND_TEXT_HEIGHT, width, 3), 255, dtype=np.uint8)
    legend[_MARGIN:_MARGIN + _LEGEND_BAR_HEIGHT] = legend_colors(width)[None]
    picture = Image.fromarray(np.concatenate([overlay, legend]))
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=_LEGEND_TEXT_HEIGHT - 4)
    text_top = height + _MARGIN + _LEGEND_BAR_HEIGHT + 1
    draw.text((2, text_top), LEGEND_LEAST, fill=(0, 0, 0), font=font)
    draw.text((width - 2, text_top), LEGEND_MOST, fill=(0, 0, 0), font=font, anchor="ra")
    if result.ood_flagged:  # its answer is not meaningful: neither is where it looked
        picture = picture.convert("L").convert("RGB")
    return np.asarray(picture)


# The /compare API's heatmap files are removed once older than this (the client has downloaded them by then)
HEATMAP_FILE_TTL_S = 600.0
SWEEP_EVERY_S = 60.0  # the folder is scanned for old files at most this often, not at every heatmap
# zlib level of the PNG files: profiled under 20 clients x six-model /compare calls with heatmaps, encoding at
# Pillow's default level (6) took 55% of the time; level 1 encodes a 240x274 heatmap in 3.1 ms instead of 9.5 ms,
# for 36 KB instead of 26 KB (benchmarks/bench_app_load.py, docs/app.md)
PNG_COMPRESS_LEVEL = 1
_last_sweep: dict[Path, float] = {}  # folder -> when it was last scanned for old files


def heatmap_file(result: ModelResult, folder: Path) -> str | None:
    """A PNG of the column's heatmap as heatmap_for_display draws it (legend, greyed when OOD-flagged), in `folder`
    (the API passes one its server serves); None when the comparison made none. Files of earlier calls older than
    HEATMAP_FILE_TTL_S are removed (the folder is scanned at most every SWEEP_EVERY_S)."""
    picture = heatmap_for_display(result)
    if picture is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    remove_old_files(folder)
    path = folder / f"{result.model}-{uuid.uuid4().hex}.png"
    Image.fromarray(picture).save(path, compress_level=PNG_COMPRESS_LEVEL)
    return str(path)


def remove_old_files(folder: Path, now: float | None = None) -> int:
    """Delete the PNG files in `folder` older than HEATMAP_FILE_TTL_S, unless it was scanned less than
    SWEEP_EVERY_S ago; returns how many were deleted."""
    now = time.time() if now is None else now
    if now - _last_sweep.get(folder, float("-inf")) < SWEEP_EVERY_S:
        return 0
    _last_sweep[folder] = now  # another thread may scan at the same moment: each unlink is tried once
    removed = 0
    for old in folder.glob("*.png"):
        try:
            if now - old.stat().st_mtime > HEATMAP_FILE_TTL_S:
                old.unlink()
                removed += 1
        except OSError:  # another request removed it first
            pass
    return removed
