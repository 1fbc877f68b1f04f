"""The DICOM window/level control's choices: the automatic window, the file's own presets, or a manual one.
Plain Python: the app holds the gradio control, zoo.images.load_image applies the window."""
from __future__ import annotations

from typing import Any

__all__ = ["WINDOW_AUTO", "WINDOW_MANUAL", "chosen_window", "window_choices", "window_note"]

WINDOW_AUTO = "auto"      # the file's first window, else a robust min-max (zoo.images)
WINDOW_MANUAL = "manual"  # the centre and width typed into the control


def window_choices(presets: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(label, value) pairs of the window menu: automatic, each of the file's windows, manual."""
    choices = [("Automatic (the file's first window, else 0.5-99.5th percentile)", WINDOW_AUTO)]
    for preset in presets:
        name = preset.get("explanation") or "from the file"
        choices.append((f"{name}: centre {preset['center']:g}, width {preset['width']:g}",
                        f"{preset['center']:g},{preset['width']:g}"))
    return choices + [("Manual (centre and width below)", WINDOW_MANUAL)]


def chosen_window(choice: str | None, center: float | None, width: float | None) -> tuple[float, float] | None:
    """The window to load the image with: None for automatic, the typed numbers for manual, else the preset's.
    A manual window with a missing number is passed on as it is, so the loader's message names it."""
    if not choice or choice == WINDOW_AUTO:
        return None
    if choice == WINDOW_MANUAL:
        return center, width
    preset_center, preset_width = (float(v) for v in choice.split(","))
    return preset_center, preset_width


def window_note(image_info: dict[str, Any]) -> str:
    """A line under the comparison's summary saying which window every model's input went through (DICOM only)."""
    if image_info.get("format") != "DICOM" or image_info.get("window_center") is None:
        return ""
    return (f"\n\nEvery model read this DICOM through the window centre {image_info['window_center']:g}, "
            f"width {image_info['window_width']:g} ({image_info.get('window_source')}).")
