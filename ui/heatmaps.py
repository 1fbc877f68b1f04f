"""How the app shows a Grad-CAM heatmap: with its colour legend drawn under it, greyed when the model's OOD check
flagged the image (the map explains an answer that is not meaningful). Plain numpy/Pillow: no gradio here."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from zoo.inference import ModelResult

__all__ = ["HEATMAPS_BY_DEFAULT", "HEATMAP_LABEL", "HEATMAP_SWITCH_LABEL", "LEGEND_LEAST", "LEGEND_MOST",
           "heatmap_for_display", "legend_colors"]

# Measured on the 2-core machine (tests' tiny zoo + the two packaged Xception classifiers, 6 models, the CT example,
# models already loaded, median of 3): a comparison takes 0.34 s without Grad-CAM and 10.3-22.2 s with it, so the
# heatmaps are opt-in and the first answer stays fast.
HEATMAPS_BY_DEFAULT = False
HEATMAP_SWITCH_LABEL = "Grad-CAM heatmaps (slower: about 30× the comparison time on CPU)"
HEATMAP_LABEL = "Grad-CAM: where the model looked"
LEGEND_LEAST, LEGEND_MOST = "blue: looked least", "red: looked most"
_LEGEND_BAR_HEIGHT = 14
_LEGEND_TEXT_HEIGHT = 16
_MARGIN = 4


def legend_colors(width: int) -> np.ndarray:
    """(width, 3) uint8: the colormap of pytorch-grad-cam's overlays (OpenCV's JET), from weakest to strongest."""
    import cv2  # noqa: PLC0415  (already imported by pytorch-grad-cam whenever a heatmap exists)

    # truncated to 8 bits as pytorch-grad-cam does (np.uint8(255 * mask)), so each colour is one the overlay uses
    ramp = (np.linspace(0.0, 1.0, width) * 255).astype(np.uint8).reshape(1, width)
    return cv2.cvtColor(cv2.applyColorMap(ramp, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)[0]


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
