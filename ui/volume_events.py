"""What the Compare tab's volume controls do: the axis and slice a user picks of an uploaded volume (NIfTI,
multi-frame DICOM), its preview, and "all slices". Named callbacks over the app's state, each returning the updates
of the components app.py lists as its outputs, in that order; the work itself is ui/volume.py's."""
from __future__ import annotations

from typing import Any

import gradio as gr

from zoo import ZooError
from zoo import images as zoo_images

from . import comparison
from .state import ComparisonApp, metadata_record
from .train_tab import session_of
from .volume import VolumeView, all_slices_figure, all_slices_markdown, run_all_slices

__all__ = ["AXIS_LABEL", "VolumeEvents", "slice_label"]

AXIS_LABEL = "Slice plane (canonical RAS: sagittal fixes left-right, coronal front-back, axial top-bottom)"


def slice_label(axis: str, count: int) -> str:
    return f"{axis.capitalize()} slice (0 to {count - 1})"


class VolumeEvents:
    """The volume controls' callbacks over one app's state."""

    def __init__(self, app: ComparisonApp):
        self.app = app

    def _view(self, path: str | None, axis: str | None = None, index: float | None = None) -> VolumeView | None:
        """The (axis, slice) of a volume upload, or None for an image (or a file that cannot be read, whose
        preview already says why)."""
        if not path or not zoo_images.is_volume(path):
            return None
        try:
            return self.app.volumes.view(path, axis, None if index is None else int(index))
        except ZooError:
            return None

    def uploaded(self, path: str | None) -> list[Any]:
        """A new upload: (volume controls group, axis, slice slider, view, DICOM window group, plot, all-slices text).
        For a volume: the controls at the middle axial slice (what the preview shows), no DICOM window (a volume is
        shown through its own window); for an image: the controls hidden, the window group as the upload left it."""
        view = self._view(path)
        if view is None:
            return [gr.Group(visible=False), gr.skip(), gr.skip(), None, gr.skip(), gr.Plot(None, visible=False), ""]
        axis, index = view
        count = self.app.volumes.get(path).num_slices(axis)
        return [gr.Group(visible=True), axis, gr.Slider(minimum=0, maximum=count - 1, value=index, step=1,
                                                        label=slice_label(axis, count)),
                view, gr.Group(visible=False), gr.Plot(None, visible=False), ""]

    def axis_chosen(self, path: str | None, axis: str | None) -> list[Any]:
        """Another plane: (slice slider at its middle, view, preview, image info)."""
        view = self._view(path, axis)
        if view is None:
            return [gr.skip(), None, gr.skip(), gr.skip()]
        count = self.app.volumes.get(path).num_slices(view[0])
        picture, text = self.app.preview(path, view=view)
        return [gr.Slider(minimum=0, maximum=count - 1, value=view[1], step=1, label=slice_label(view[0], count)),
                view, picture, text]

    def slice_chosen(self, path: str | None, axis: str | None, index: float | None) -> list[Any]:
        """Another slice: (view, preview, image info)."""
        view = self._view(path, axis, index)
        if view is None:
            return [None, gr.skip(), gr.skip()]
        picture, text = self.app.preview(path, view=view)
        return [view, picture, text]

    def all_slices(self, path: str | None, axis: str | None, ids: list[str] | None, age: float | None,
                   sex: str | None, site: str | None, request: gr.Request, progress: Any = gr.Progress()
                   ) -> tuple[Any, str]:
        """"All slices": (the plot of each model's top-class probability along the slices, what it shows in words)."""
        app = self.app
        try:
            if self._view(path, axis) is None:
                raise ZooError("upload a volume (.nii, .nii.gz or a multi-frame DICOM) first: all slices are a "
                               "volume's")
            chosen = app.selected_entries(comparison.check_selection(ids or []), session_of(request))
            run = run_all_slices(app.volumes.get(path), axis, chosen, app.cache, metadata_record(age, sex, site),
                                 app.settings.max_pixels,
                                 progress=lambda done, total, what: progress((done, total), desc=what))
        except ZooError as e:
            message = app.public(str(e))
            gr.Warning(message, title="All slices")
            return gr.Plot(None, visible=False), f"**⚠ {message}**"
        return gr.Plot(all_slices_figure(run), visible=True), app.public(all_slices_markdown(run))
