"""The app's state and the work behind its callbacks: the models on offer, the model cache, reading the
upload (decoded once for its preview, its model inputs and its comparisons), the previews of what each model reads,
and a comparison. Problems a user can fix become gr.Error with the loader's own message (the one gradio piece
here)."""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

import zoo
from zoo import images as zoo_images
from zoo import inference
from zoo.assets import MEDICAL_CLASSIFIERS
from zoo.catalog import ModelEntry, discover_models

from . import comparison
from .about import NO_IMAGE
from .examples import Example, make_private_folder, write_examples
from .formatting import image_info_markdown, input_caption, model_choice_label, upscale_for_display
from .public_errors import public_comparison, public_message
from .settings import Settings
from .training import TrainedModels
from .volume import VolumeCache, VolumeView
from .window import WINDOW_AUTO, chosen_window, window_choices

__all__ = ["NON_MEDICAL_DATASETS", "UNKNOWN", "ComparisonApp", "ModelInput", "medical_rank", "metadata_record"]

_logger = logging.getLogger(__name__)

UNKNOWN = "unknown"
# datasets of the teaching runs (train's bundled handwritten digits: digits, digits-imbalanced, ...): their models
# show the transfer modes, they are not medical and are never the default selection while medical models exist
NON_MEDICAL_DATASETS = ("digits",)
ModelInput = tuple[Image.Image | None, str]  # (what a model reads, enlarged for display; its caption)
# decoded uploads kept, the least recently used dropped first: an upload's preview, model inputs and comparisons
# each read it, one decode serves them all (each at most zoo.images.MAX_IMAGE_SIDE a side: ~12 MB as RGB)
DECODED_UPLOADS = 8


class ComparisonApp:
    """The models on offer, the model cache and the callbacks' work; app.build_demo lays them out."""

    def __init__(self, settings: Settings):
        self.settings = settings
        for orphan in zoo.clean_cache():  # a kill -9 during an earlier process's ONNX export left it for good
            _logger.info("deleted %s, an unfinished write of an earlier app process", orphan)
        self.cache = inference.ModelCache(max_models=settings.cache_models,
                                          max_bytes=settings.cache_mb * 2**20 if settings.cache_mb else None,
                                          backend=settings.backend)
        self.entries: dict[str, ModelEntry] = {}
        self._decoded: OrderedDict[tuple, zoo_images.LoadedImage] = OrderedDict()
        self._decoded_lock = threading.Lock()
        self.volumes = VolumeCache()  # an uploaded volume (NIfTI, multi-frame DICOM), decoded once for its slices
        self.refresh()
        self.examples_dir = make_private_folder(settings.examples_dir)
        self.examples: list[Example] = write_examples(self.examples_dir, settings.weights)
        # the models each browser session trains in the Train tab: that session's Compare list only
        self.trained = TrainedModels(self.examples_dir / "trained")  # private like the examples, removed with them
        # an example is recognised by its bytes wherever Gradio copied it: (size, sha256) -> true label
        self._known_labels = {(os.path.getsize(e.path), hashlib.sha256(Path(e.path).read_bytes()).hexdigest()):
                              e.true_label for e in self.examples if e.true_label is not None}

    def refresh(self) -> list[ModelEntry]:
        """Rescan the weights folder and the catalog."""
        self.entries = {e.id: e for e in discover_models(self.settings.weights, self.settings.catalog)}
        for entry in self.entries.values():  # the reasons are shown to every user: no server paths
            entry.reason = self.public(entry.reason)
        return list(self.entries.values())

    def public(self, message: str | None) -> str | None:
        """A message as remote users may read it: the server's paths shortened (ui.public_errors)."""
        return public_message(message, self.settings.weights)

    def choices(self, session: str | None = None) -> list[tuple[str, str]]:
        """(label, id) of every model on offer: the medical ones first (medical_rank), then the rest by id; then the
        models `session` trained in the Train tab, marked as such."""
        entries = sorted(self.entries.values(), key=lambda e: (medical_rank(e) is None, medical_rank(e) or (0, "")))
        trained = [e for e in self.trained.entries(session).values() if e.id not in self.entries]  # saved: listed once
        return [(model_choice_label(e), e.id) for e in entries] + \
               [(f"{model_choice_label(e)} (trained here)", e.id) for e in trained]

    def model_picker(self, ids: Sequence[str] | None, session: str | None = None) -> gr.CheckboxGroup:
        """A model checkbox list brought up to date: the models on offer now (choices, with those `session` trained),
        with `ids` ticked, less those no longer offered."""
        choices = self.choices(session)
        offered = {model_id for _, model_id in choices}
        return gr.CheckboxGroup(choices=choices, value=[m for m in ids or [] if m in offered])

    def default_selection(self, count: int = 5) -> list[str]:
        """The medical models (the imported chest X-ray and brain MRI classifiers first), up to `count`; without two
        of them, up to `count` available models, one per (architecture, mode) first so the modes are all shown."""
        available = [e for e in self.entries.values() if e.available]
        medical = sorted((e for e in available if medical_rank(e) is not None), key=medical_rank)
        if len(medical) >= comparison.MIN_MODELS:
            return [e.id for e in medical[:count]]
        picked, seen = [], set()
        for e in available:
            if (e.architecture, e.mode) not in seen:
                picked.append(e.id)
                seen.add((e.architecture, e.mode))
        picked += [e.id for e in available if e.id not in picked]
        return picked[:count]

    def selected_entries(self, model_ids: list[str], session: str | None = None) -> list[ModelEntry]:
        """Entries for the ids (the app's, then those `session` trained); an id the app does not know becomes an
        unavailable entry with the reason."""
        entries = {**self.trained.entries(session), **self.entries}
        # the count, not the ids: the table "All models on offer" (Compare tab) lists them
        known = (f"this app offers {len(self.entries)} models, listed in the table \"All models on offer\" "
                 "on the Compare tab")
        return [entries.get(m) or ModelEntry(id=m, source="local", location="", available=False,
                                                  reason=f"no model with id {m!r:.100}; {known}")
                for m in model_ids]

    def true_label(self, path: str | None) -> str | None:
        """The true label of an example image (by its bytes: Gradio hands the callbacks a copy), else None."""
        if not path or not os.path.isfile(path):
            return None
        size = os.path.getsize(path)
        if not any(size == known_size for known_size, _ in self._known_labels):
            return None  # not an example: no need to read it
        return self._known_labels.get((size, hashlib.sha256(Path(path).read_bytes()).hexdigest()))

    def read_image(self, path: str | None, window: tuple[float, float] | None = None,
                   view: VolumeView | None = None) -> zoo_images.LoadedImage:
        """The uploaded file as an 8-bit image (a DICOM shown through `window`, (centre, width), if given; of a
        volume, the slice `view`, (axis, index), else its middle axial slice); any problem becomes a gr.Error with
        the loader's message. Decoded once while the file is unchanged: the same object is returned to every caller,
        which must not modify it."""
        if not path:
            raise gr.Error(NO_IMAGE, print_exception=False)
        key = _upload_key(path, (window, tuple(view)) if view else window)
        with self._decoded_lock:
            if key is not None and key in self._decoded:
                self._decoded.move_to_end(key)
                return self._decoded[key]
        try:
            if not view and zoo_images.is_volume(path):  # read through the volume cache: the slider's slices follow
                view = self.volumes.view(path)
            loaded = self.volumes.slice(path, tuple(view), self.settings.max_pixels) if view else \
                zoo_images.load_image(path, max_pixels=self.settings.max_pixels, window=window)
        except zoo.ZooError as e:  # not kept: a file that failed is read again (and fails again, saying why)
            raise gr.Error(self.public(str(e)), title="This image cannot be used", print_exception=False) from None
        if key is not None:
            with self._decoded_lock:
                self._decoded[key] = loaded
                while len(self._decoded) > DECODED_UPLOADS:
                    self._decoded.popitem(last=False)
        return loaded

    def preview(self, path: str | None, window: tuple[float, float] | None = None,
                view: VolumeView | None = None) -> tuple[Image.Image | None, str]:
        """The uploaded image as read (8-bit; small ones enlarged with visible pixels), and what was done to it."""
        picture, text, _ = self.preview_with_windows(path, window, view)
        return picture, text

    def preview_with_windows(self, path: str | None, window: tuple[float, float] | None = None,
                             view: VolumeView | None = None
                             ) -> tuple[Image.Image | None, str, list[dict[str, Any]] | None]:
        """preview() and the file's own DICOM windows ([] for a DICOM without any; None when not a DICOM)."""
        if not path:
            return None, "", None
        try:
            loaded = self.read_image(path, window, view)
        except gr.Error as e:
            gr.Warning(e.message)
            return None, f"**⚠ {e.message}**", None
        presets = loaded.info.get("window_presets") if loaded.info.get("format") == "DICOM" else None
        return upscale_for_display(loaded.image), image_info_markdown(loaded.info), presets

    def upload_preview(self, path: str | None) -> tuple[Any, ...]:
        """A new upload's preview and info, and the window control: shown with the file's own windows for a
        DICOM, reset to automatic."""
        picture, text, presets = self.preview_with_windows(path)
        return (picture, text, gr.Group(visible=presets is not None),
                gr.Dropdown(choices=window_choices(presets or []), value=WINDOW_AUTO), None, None)

    def window_preview(self, path: str | None, choice: str | None, center: float | None, width: float | None
                       ) -> tuple[Any, ...]:
        """The preview and info through the chosen window; a preset fills in its centre and width."""
        window = chosen_window(choice, center, width)
        picture, text = self.preview(path, window)
        return picture, text, *(window or (None, None))

    def model_inputs(self, path: str | None, model_ids: list[str] | None, session: str | None = None,
                     window: tuple[float, float] | None = None, view: VolumeView | None = None) -> list[ModelInput]:
        """What each selected model reads of the image (its own transform's output, de-normalised and
        enlarged with nearest-neighbour), with the model and its input size as the caption. Loads the
        models (cached), so the comparison that follows starts sooner."""
        if not path or not model_ids:
            return []
        try:
            image = inference.SharedImage(self.read_image(path, window, view).image)  # one resize per input size
        except gr.Error:
            return []  # preview() already says what is wrong with the file
        shown = []
        for entry in self.selected_entries(list(dict.fromkeys(model_ids))[:comparison.MAX_MODELS], session):
            try:
                loaded = self.cache.get(entry)
                view = inference.model_input_image(loaded, image)
            except zoo.ZooError as e:
                shown.append((None, f"**{entry.id}**: {self.public(str(e))}"))
                continue
            shown.append((upscale_for_display(view), input_caption(entry.id, loaded.data_config["input_size"])))
        return shown

    def compare(self, path: str | None, model_ids: list[str] | None, metadata: dict[str, Any] | None = None,
                top_k: int = inference.DEFAULT_TOP_K, cam: bool = True,
                progress: Callable[..., Any] | None = None, true_label: str | None = None,
                session: str | None = None, window: tuple[float, float] | None = None,
                view: VolumeView | None = None) -> comparison.Comparison:
        """Every selected model's answer; a bad selection or image raises gr.Error. `progress` is a
        gr.Progress (or any callable taking ((done, total), desc=...)); `true_label` (an example's) makes the
        summary say which models were right; `view` (axis, slice) picks a volume's slice."""
        try:
            ids = comparison.check_selection(model_ids or [])
        except zoo.ZooError as e:
            raise gr.Error(self.public(str(e)), title="Select models", print_exception=False) from None
        image = self.read_image(path, window, view)

        def report(done: int, total: int, what: str) -> None:
            if progress is not None:
                progress((done, total), desc=what)

        return public_comparison(comparison.compare(image, self.selected_entries(ids, session), self.cache, metadata,
                                                    top_k, cam, progress=report, true_label=true_label),
                                 self.settings.weights)

    def metadata_fields(self, model_ids: list[str] | None, session: str | None = None
                        ) -> tuple[bool, list[str], list[str]]:
        """Whether a selected model has a metadata head, and the union of their sex and site categories."""
        schemas = [e.metadata_schema for e in self.selected_entries(model_ids or [], session)
                   if e.available and e.metadata_schema]
        sexes = sorted({s for schema in schemas for s in schema["sex"]})
        sites = sorted({s for schema in schemas for s in schema["site"]})
        return bool(schemas), [UNKNOWN] + sexes, [UNKNOWN] + sites


def medical_rank(entry: ModelEntry) -> tuple[int, str] | None:
    """Sort key of a medical model (the packaged classifiers in zoo.assets' order, then the rest by id), or None for
    a teaching model trained on a NON_MEDICAL_DATASETS set or a model that names no dataset."""
    dataset = (entry.dataset or "").lower()
    if not dataset or dataset.startswith(NON_MEDICAL_DATASETS):
        return None
    source = entry.zoo_config.extra.get("source")
    package = source.get("package") if isinstance(source, dict) else None
    packages = [c.package for c in MEDICAL_CLASSIFIERS.values()]
    return (packages.index(package) if package in packages else len(packages), entry.id)


def _upload_key(path: str, window: tuple[float, float] | None) -> tuple | None:
    """What identifies one decoding of a file: its path and window, and its size and time of change (a file
    rewritten in place is decoded again); None when the file cannot be read (the loader then says why)."""
    try:
        stat = os.stat(path)
        key = os.path.realpath(path), stat.st_mtime_ns, stat.st_size, window
        hash(key)
    except (OSError, TypeError):  # unreadable, or a window given as a list: decoded each time, as before
        return None
    return key


def metadata_record(age: float | None, sex: str | None, site: str | None) -> dict[str, Any]:
    """The metadata inputs as the inference module takes them; 'unknown' and empty become missing."""
    return {"age": age, "sex": None if sex in (None, "", UNKNOWN) else sex,
            "site": None if site in (None, "", UNKNOWN) else site}
