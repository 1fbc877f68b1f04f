"""Volumes (NIfTI, multi-frame DICOM) in the Compare tab: the uploaded volume kept decoded, the slice a user
picked, and "all slices": every selected model over the slices of one axis, drawn as each model's top-class
probability along the slice index with the slices its OOD check flagged marked.

Plain Python over zoo (no gradio): ui/volume_events.py turns it into the page's updates, ui/state.py reads a
slice through it, ui/compare_api.py resolves the API's ``axis`` / ``slice`` with it.
"""
from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zoo import ZooError
from zoo import images as zoo_images
from zoo.catalog import ModelEntry
from zoo.images.decoded import Limits
from zoo.inference import ModelCache, ModelResult, run_models

__all__ = ["MAX_ALL_SLICES", "VOLUMES_KEPT", "AllSlices", "VolumeCache", "VolumeView", "all_slices_figure",
           "all_slices_markdown", "run_all_slices", "sampled_slices", "slice_record", "view_note"]

VolumeView = tuple[str, int]  # (axis, slice index): which slice of a volume the models read
# "all slices" runs at most this many slices (one in k beyond): measured 0.2 s per slice and Xception-sized model on
# the 2-core machine, so 64 slices take ~26 s with 2 such models, ~80 s with 6
MAX_ALL_SLICES = 64
VOLUMES_KEPT = 2  # decoded volumes kept, the least recently used dropped first (each at most 40 MB, RGB 120 MB)


class VolumeCache:
    """The uploaded volumes, decoded once while the file is unchanged (every slice, preview and run reads it)."""

    def __init__(self, kept: int = VOLUMES_KEPT):
        self.kept = kept
        self._volumes: OrderedDict[tuple, zoo_images.Volume] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str) -> zoo_images.Volume:
        """The volume in `path`; an unreadable or oversized file raises the loader's ZooError."""
        stat = os.stat(path)
        key = os.path.realpath(path), stat.st_mtime_ns, stat.st_size
        with self._lock:
            if key in self._volumes:
                self._volumes.move_to_end(key)
                return self._volumes[key]
        volume = zoo_images.load_volume(path)
        with self._lock:
            self._volumes[key] = volume
            while len(self._volumes) > self.kept:
                self._volumes.popitem(last=False)
        return volume

    def view(self, path: str, axis: str | None = None, index: int | None = None) -> VolumeView:
        """The (axis, slice) to read of the volume in `path`: the middle of DEFAULT_AXIS unless given; a slice out
        of range or an unknown axis raises ZooError naming the valid ones."""
        volume = self.get(path)
        axis = axis or zoo_images.DEFAULT_AXIS
        count = volume.num_slices(axis)  # names the axes when `axis` is not one
        if index is None:
            return axis, volume.middle(axis)
        if isinstance(index, float) and index.is_integer():
            index = int(index)
        if not isinstance(index, int) or not 0 <= index < count:
            raise ZooError(f"slice {index!r} is not among the {count} {axis} slices of {volume.info['source']} "
                           f"(0 to {count - 1}). Pick a slice in that range.")
        return axis, index

    def requested_view(self, path: str | None, axis: str | None, index: float | None) -> VolumeView | None:
        """The slice an API call asks for: None for an image, the middle of DEFAULT_AXIS of a volume unless `axis`
        and/or `index` are given; asking for a slice of an image raises ZooError."""
        if path and zoo_images.is_volume(path):
            return self.view(path, axis, index)
        if axis is not None or index is not None:
            raise ZooError(f"axis {axis!r} / slice {index!r} were given, but the file is an image, not a volume "
                           "(NIfTI .nii / .nii.gz or a multi-frame DICOM). Leave axis and slice empty for an image.")
        return None

    def slice(self, path: str, view: VolumeView, max_pixels: int) -> zoo_images.LoadedImage:
        """The slice `view` of the volume in `path` as the 8-bit image every model reads."""
        axis, index = view
        return self.get(path).slice(axis, index, _slice_limits(max_pixels))


def _slice_limits(max_pixels: int) -> Limits:
    return Limits(max_pixels, zoo_images.MAX_IMAGE_SIDE, zoo_images.MAX_ASPECT_RATIO)


def view_note(info: Mapping[str, Any]) -> str:
    """A line saying which slice of which volume the models read ('' for an image that is no volume's slice)."""
    if info.get("axis") is None:
        return ""
    line = (f"\n\nEvery model read {info['axis']} slice {info['slice_index']} (0 to {info['num_slices'] - 1}) of the "
            f"volume {info.get('source')}")
    if "window_low" in info and info.get("format") != "DICOM":  # a DICOM's window has its own line (ui.window)
        line += f", through the intensity window {info['window_low']:g} to {info['window_high']:g}"
    return line + "."


def slice_record(info: Mapping[str, Any]) -> dict[str, Any]:
    """``{"slice": {axis, index, num_slices}}`` for a /compare record of a volume's slice, else {}."""
    if info.get("axis") is None:
        return {}
    return {"slice": {"axis": info["axis"], "index": info["slice_index"], "num_slices": info["num_slices"]}}


def sampled_slices(count: int, most: int = MAX_ALL_SLICES) -> range:
    """Every k-th slice index of `count`, k the smallest stride that keeps them to at most `most`."""
    return range(0, count, max(1, math.ceil(count / most)))


@dataclass
class AllSlices:
    """Each model's answer on every sampled slice of one axis."""

    source: str
    axis: str
    num_slices: int
    indices: list[int]
    # model id -> per sampled slice: (top class, its probability, OOD-flagged); None where the model failed
    answers: dict[str, list[tuple[str, float, bool] | None]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # model id -> its first error

    @property
    def stride(self) -> int:
        return self.indices[1] - self.indices[0] if len(self.indices) > 1 else 1


def run_all_slices(volume: zoo_images.Volume, axis: str, entries: Sequence[ModelEntry], cache: ModelCache,
                   metadata: Mapping[str, Any] | None, max_pixels: int,
                   progress: Callable[[int, int, str], None] | None = None) -> AllSlices:
    """Every entry on every sampled slice (sampled_slices) along `axis`: top class only, no Grad-CAM."""
    count = volume.num_slices(axis)
    indices = list(sampled_slices(count))
    run = AllSlices(volume.info["source"], axis, count, indices, {e.id: [] for e in entries})
    for done, index in enumerate(indices):
        if progress is not None:
            progress(done, len(indices), f"{axis} slice {index} ({done + 1} of {len(indices)})")
        image = volume.slice(axis, index, _slice_limits(max_pixels)).image
        for result in run_models(image, entries, cache, metadata, top_k=1, cam=False):
            run.answers[result.model].append(_answer(result))
            if result.error is not None:
                run.errors.setdefault(result.model, result.error)
    if progress is not None:
        progress(len(indices), len(indices), "done")
    return run


def _answer(result: ModelResult) -> tuple[str, float, bool] | None:
    if result.error is not None or not result.top_k:
        return None
    label, probability = result.top_k[0]
    return label, float(probability), result.ood_flagged


def all_slices_figure(run: AllSlices) -> Any:
    """Each model's top-class probability along the slice index; OOD-flagged slices marked with a cross."""
    from matplotlib.figure import Figure  # noqa: PLC0415  (matplotlib stays out of the app's cold start)

    fig = Figure(figsize=(9, 3.8), layout="constrained")
    ax = fig.add_subplot()
    for model, answers in run.answers.items():
        points = [(i, a) for i, a in zip(run.indices, answers) if a is not None]
        if not points:
            continue
        line, = ax.plot([i for i, _ in points], [a[1] for _, a in points], marker=".", label=model)
        flagged = [(i, a[1]) for i, a in points if a[2]]
        if flagged:
            ax.scatter([i for i, _ in flagged], [p for _, p in flagged], marker="x", s=60, color=line.get_color(),
                       label=f"{model}: OOD-flagged slice", zorder=3)
    ax.set_xlim(-0.5, run.num_slices - 0.5)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"{run.axis} slice index (one in {run.stride} of {run.num_slices})" if run.stride > 1
                  else f"{run.axis} slice index")
    ax.set_ylabel("top-class probability")
    ax.set_title(f"{run.source}: each model's top class probability, {len(run.indices)} {run.axis} slices",
                 fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right")
    return fig


def all_slices_markdown(run: AllSlices) -> str:
    """What the plot shows, in words: the slices run, each model's most frequent top class and its flagged slices."""
    sampled = (f"one in {run.stride} of its {run.num_slices} {run.axis} slices ({len(run.indices)} slices: at "
               f"most {MAX_ALL_SLICES} are run: each costs every model one prediction)"
               if run.stride > 1 else f"all {run.num_slices} {run.axis} slices")
    lines = [f"Every selected model read {sampled} of **{run.source}** (uncalibrated softmax probabilities; "
             "crosses mark the slices a model's OOD check flagged as unlike its training images)."]
    for model, answers in run.answers.items():
        given = [a for a in answers if a is not None]
        if not given:
            lines.append(f"- `{model}`: no answer ({run.errors.get(model, 'failed').splitlines()[0]})")
            continue
        labels = [a[0] for a in given]
        common = max(dict.fromkeys(labels), key=labels.count)
        flagged = sum(a[2] for a in given)
        lines.append(f"- `{model}`: top class `{common}` on {labels.count(common)} of {len(given)} slices; "
                     f"{flagged} slice{'s' if flagged != 1 else ''} OOD-flagged")
    return "\n".join(lines)
