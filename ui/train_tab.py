"""The Train tab: its layout, its wiring, and the callbacks that turn the tab's values into a training job
(ui/training.py holds the work they call). app.py places the tab; the /train API is wired here too.

Every callback is a module-level function of plain values plus the ComparisonApp, so the tests call them
without a browser.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from train import ConfigError, DataError, lesson
from train.intake import IntakeReport
from train.lesson import LessonCancelled, learning_curve, plot_learning_curve, plot_live_curves
from train.plots import plot_confusion_matrix
from zoo import ZooError

from . import about
from .state import ComparisonApp
from .training import (BUNDLED_COUNTS, CLASS_BY_CLASS, DATA_CHOICES, EPOCH_CHOICES, LIVE_PLOT_EVERY_S, MAX_CLASSES,
                       MODE_CHOICES, RESULT_HEADERS, SIZE_CHOICES, UPLOAD, TrainingJob, backbone_choices,
                       check_time_cap, curve_markdown, estimate_markdown, lesson_markdown, read_learner_data, request_for,
                       result_rows, save_to_weights, session_limits, unavailable_markdown, zip_runs)

__all__ = ["PreparedJob", "build_train_tab", "forget_session", "learning_curve_ui", "prepare_job", "save_models",
           "session_of", "train_api", "train_models"]

# the problems a learner can fix: said in the tab, never a traceback
LEARNER_ERRORS = (ConfigError, DataError, ZooError)
TRAINING = dict(concurrency_id="training", concurrency_limit=1)  # one training job per app process; others queue


def session_of(request: gr.Request | None) -> str:
    """The browser session (or API client) a request comes from."""
    return getattr(request, "session_hash", None) or "api"


def _picture(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _job_folders(app: ComparisonApp, session: str) -> tuple[Path, Path]:
    """(where the learner's images are read to, where the trained models go) for a session."""
    return app.trained.folder(session) / "data", app.trained.models_dir(session)


@dataclass(frozen=True)
class PreparedJob:
    """A training job checked before anything trains: the data read, the request built, the time cap checked."""

    spec: str                    # the --data spec trained on
    report: IntakeReport | None  # what the intake read (None for packaged data)
    request: lesson.LessonRequest
    images: int
    data_dir: Path
    models_dir: Path

    def start(self, app: ComparisonApp, session: str) -> TrainingJob:
        return TrainingJob(self.request, self.models_dir, app.trained.stop_flag(session), app.settings.train_max_s).start()


def prepare_job(app: ComparisonApp, choice: str, upload: str | None, names: Sequence[str],
                files: Sequence[Sequence[str] | None], backbones: Sequence[str] | None, mode: str, img_size: Any,
                epochs: Any, session: str) -> PreparedJob:
    """Read the learner's data and check the request against this server's time cap (the Train button and /train
    share it); raises a LEARNER_ERRORS exception that says what to change."""
    data_dir, models_dir = _job_folders(app, session)
    spec, report = read_learner_data(choice, upload, names, files, data_dir, session_limits(app.settings.max_pixels))
    request = request_for(spec, backbones, mode, img_size, epochs)
    images = BUNDLED_COUNTS.get(choice) or sum(report.counts.values())
    check_time_cap(request, images, app.settings.train_max_s)
    return PreparedJob(spec, report, request, images, data_dir, models_dir)


def train_models(app: ComparisonApp, choice: str, upload: str | None, names: Sequence[str],
                 files: Sequence[Sequence[str] | None], backbones: Sequence[str] | None, mode: str, img_size: Any,
                 epochs: Any, selected: Sequence[str] | None, session: str) -> Iterator[tuple]:
    """The Train button: read the data, train one model per backbone with live curves, then the results.

    Yields (status, live curves, results rows, confusion matrix, lesson text, download, Compare choices)."""
    keep = gr.update()
    try:
        prepared = prepare_job(app, choice, upload, names, files, backbones, mode, img_size, epochs, session)
    except LEARNER_ERRORS as e:
        yield f"**⚠ {app.public(str(e))}**", keep, keep, keep, keep, keep, keep
        return
    report, data_dir, images = prepared.report, prepared.data_dir, prepared.images
    shown = report.markdown() + "\n\n" if report else ""
    yield shown + "Training… " + estimate_markdown(choice, report, backbones, mode, img_size, epochs), \
        None, [], None, "", None, keep
    job = prepared.start(app, session)
    start, drawn = time.perf_counter(), 0.0
    try:
        for new in job.updates():
            if new and time.perf_counter() - drawn >= LIVE_PLOT_EVERY_S:
                drawn = time.perf_counter()
                last = job.history[-1]
                status = (f"{shown}Training **{last['arch']}** ({last['phase']}): epoch {last['epoch']}/"
                          f"{last['epochs']}, {time.perf_counter() - start:.0f} s so far")
                try:
                    live = _picture(plot_live_curves(job.history, data_dir.parent / "live.png"))
                except OSError:
                    if job.stop.is_set():  # the page was closed: its session's folder is already gone
                        break
                    raise
                yield status, live, keep, keep, keep, keep, keep
    finally:  # a closed tab or the Cancel button ends the generator: stop the thread, which removes its files
        job.cancel()
    if isinstance(job.error, LessonCancelled):
        why = (f"Stopped at this server's time cap of {app.settings.train_max_s} s per job (ZOO_APP_TRAIN_MAX_S)"
               if job.timed_out else "Cancelled")
        yield f"{why}: nothing was kept.", keep, keep, keep, keep, keep, keep
        return
    if job.error is not None:
        message = str(job.error) if isinstance(job.error, LEARNER_ERRORS) else \
            f"training failed: {type(job.error).__name__}: {job.error}"
        yield f"**⚠ {app.public(message)}**", keep, keep, keep, keep, keep, keep
        return
    records = job.records or []
    first = records[0]
    matrix = _picture(plot_confusion_matrix(first.confusion_matrix, first.label_names, data_dir.parent / "cm.png",
                                            title=f"{first.id}: {first.protocol}"))
    download = zip_runs([r.run_dir for r in records], data_dir.parent / "trained-models.zip")
    status = (f"{shown}Done in {time.perf_counter() - start:.0f} s on {images} images: {len(records)} model(s) "
              "trained. They are now in the model lists of the Compare and Batch tabs for this browser session "
              "(marked \"trained here\") and are deleted when you close the page; download them below to keep them.")
    yield status, _picture(plot_live_curves(job.history, data_dir.parent / "live.png")), result_rows(records), \
        matrix, lesson_markdown(records), str(download), app.model_picker(selected, session)


def learning_curve_ui(app: ComparisonApp, choice: str, upload: str | None, names: Sequence[str],
                      files: Sequence[Sequence[str] | None], backbones: Sequence[str] | None, img_size: Any,
                      epochs: Any, session: str) -> tuple[Image.Image | None, str]:
    """The learning-curve button: frozen features of the first backbone vs LeNet-5 from scratch."""
    data_dir, _ = _job_folders(app, session)
    try:
        spec, _ = read_learner_data(choice, upload, names, files, data_dir, session_limits(app.settings.max_pixels))
        request = request_for(spec, backbones, "feature-extraction", img_size, epochs)
        flag, deadline = app.trained.stop_flag(session), time.perf_counter() + app.settings.train_max_s
        points = learning_curve(request, data_dir.parent / "curve",
                                should_stop=lambda: flag.is_set() or time.perf_counter() > deadline)
    except LessonCancelled:
        return None, ("Cancelled." if flag.is_set() else
                      f"Stopped at this server's time cap of {app.settings.train_max_s} s per job.")
    except LEARNER_ERRORS as e:
        return None, f"**⚠ {app.public(str(e))}**"
    title = f"Learning curve on {spec if choice != UPLOAD and choice != CLASS_BY_CLASS else 'your images'}"
    figure = plot_learning_curve(points, data_dir.parent / "curve.png", title=title)
    return _picture(figure), curve_markdown(points)


def train_api(app: ComparisonApp, data: str | None, dataset: str, backbones: Any, mode: str, img_size: Any,
              epochs: Any, session: str) -> list[dict[str, Any]]:
    """/train: one record per trained model (id, arch, mode, n, protocol, accuracy and balanced accuracy with 95%
    intervals, seconds); the ids then answer /compare from the same client."""
    if isinstance(backbones, str):
        backbones = [b.strip() for b in backbones.split(",") if b.strip()]
    choice = dataset if dataset in BUNDLED_COUNTS else UPLOAD
    try:
        job = prepare_job(app, choice, data, [], [], backbones, mode, img_size, epochs, session).start(app, session)
        for _ in job.updates():
            pass
    except LEARNER_ERRORS as e:
        raise gr.Error(app.public(str(e)), title="Cannot train", print_exception=False) from None
    if job.error is not None:
        message = (f"stopped at this server's time cap of {app.settings.train_max_s} s per job; nothing was kept"
                   if job.timed_out else str(job.error))
        raise gr.Error(app.public(message), title="Training failed", print_exception=False)
    records = [r.to_dict() for r in job.records or []]
    for record in records:
        record.pop("run_dir")  # a server path: never sent to a client
    return records


def save_models(app: ComparisonApp, session: str, selected: Sequence[str] | None) -> tuple[str, Any]:
    """The save button (shown only when saving is on): the session's models copied into the weights folder."""
    if not app.settings.save_trained:  # also refused when called over HTTP with the button hidden
        return "Saving into the weights folder is off on this server (ZOO_APP_SAVE_TRAINED).", gr.update()
    copied = save_to_weights(app.trained, session, app.settings.weights)
    app.refresh()
    text = (f"Saved {len(copied)} model(s) into the weights folder: {', '.join(copied)}. They stay after this page "
            "closes and every user of this app sees them." if copied else "Nothing new to save.")
    return text, app.model_picker(selected, session)


def forget_session(app: ComparisonApp) -> Callable[[gr.Request], None]:
    """demo.unload's callback: a closed page's job stops, its images and trained models are deleted."""
    def forget(request: gr.Request) -> None:
        app.trained.drop(session_of(request))
    return forget


def build_train_tab(app: ComparisonApp, compare_models: gr.CheckboxGroup) -> None:
    """Lay out the Train tab inside the current Blocks and wire it; trained models update `compare_models`."""
    usable, unusable = backbone_choices()
    gr.Markdown(about.TRAIN_INTRO)
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            data_choice = gr.Radio(DATA_CHOICES, value=DATA_CHOICES[0][1], label="Data", elem_id="train-data")
            with gr.Group(visible=False) as upload_group:
                upload = gr.File(label="A .zip of class folders, a .zip with a CSV (file,label), or a MedMNIST .npz",
                                 file_types=[".zip", ".npz"], type="filepath", elem_id="train-upload")
            with gr.Group(visible=False) as classes_group:
                gr.Markdown(about.CLASS_BY_CLASS_HELP, padding=True)
                names, files, rows = [], [], []
                for i in range(MAX_CLASSES):
                    with gr.Row(visible=i < 2) as row:
                        names.append(gr.Textbox(value=f"class {i + 1}", label=f"Class {i + 1} name", scale=1,
                                                elem_id=f"class-name-{i}"))
                        files.append(gr.File(file_count="multiple", type="filepath", label="Images", scale=2,
                                             elem_id=f"class-files-{i}"))
                    rows.append(row)
                shown_rows = gr.State(2)
                add_class = gr.Button("Add a class", size="sm", elem_id="add-class")
        with gr.Column(scale=1, min_width=300):
            backbones = gr.CheckboxGroup(usable, value=usable[:1], label="Backbones (ImageNet weights available here)",
                                         elem_id="train-backbones")
            gr.Markdown(unavailable_markdown(unusable))
            mode = gr.Radio(MODE_CHOICES, value=MODE_CHOICES[0][1], label="Transfer mode", elem_id="train-mode")
            with gr.Row():
                img_size = gr.Dropdown(SIZE_CHOICES, value=SIZE_CHOICES[0], label="Input size (px)")
                epochs = gr.Dropdown(EPOCH_CHOICES, value=EPOCH_CHOICES[0], label="Epochs")
            estimate = gr.Markdown(estimate_markdown(DATA_CHOICES[0][1], None, usable[:1], MODE_CHOICES[0][1],
                                                     SIZE_CHOICES[0], EPOCH_CHOICES[0]), elem_id="train-estimate")
            with gr.Row():
                train_button = gr.Button("Train", variant="primary", elem_id="train-button")
                cancel_button = gr.Button("Cancel", variant="stop", elem_id="train-cancel")
                curve_button = gr.Button("Learning curve", elem_id="curve-button")
            gr.Markdown(f"One training job runs at a time on this server, at most {app.settings.train_max_s} s each; "
                        "others wait in line with their place shown.")
    status = gr.Markdown(elem_id="train-status")
    live = gr.Image(label="Training curves (loss and accuracy per epoch)", type="pil", interactive=False,
                    elem_id="train-live")
    results = gr.Dataframe(headers=RESULT_HEADERS, interactive=False, wrap=True, label="Results",
                           elem_id="train-results")
    with gr.Row(equal_height=False):
        confusion = gr.Image(label="Confusion matrix (held-out answers)", type="pil", interactive=False,
                             elem_id="train-confusion")
        lesson_text = gr.Markdown(elem_id="train-lesson")
    download = gr.File(label="The trained run folders (model.safetensors, config.json, model card, metrics)",
                       interactive=False, elem_id="train-download")
    save_button = gr.Button("Save the trained models into this app's weights folder", size="sm",
                            visible=app.settings.save_trained, elem_id="train-save")
    with gr.Row(equal_height=False):
        curve = gr.Image(label="Learning curve", type="pil", interactive=False, elem_id="train-curve")
        curve_text = gr.Markdown(elem_id="train-curve-text")

    def on_data(choice, chosen, chosen_mode, size, chosen_epochs):
        return (gr.Group(visible=choice == UPLOAD), gr.Group(visible=choice == CLASS_BY_CLASS),
                estimate_markdown(choice, None, chosen, chosen_mode, size, chosen_epochs))

    def more_classes(count):
        count = min(count + 1, MAX_CLASSES)
        return [count] + [gr.Row(visible=i < count) for i in range(MAX_CLASSES)]

    def on_estimate(choice, chosen, chosen_mode, size, chosen_epochs):
        return estimate_markdown(choice, None, chosen, chosen_mode, size, chosen_epochs)

    def class_data(values: dict) -> tuple[list[str], list[Any]]:
        return [values[name] for name in names], [values[box] for box in files]

    def on_train(values: dict, request: gr.Request):  # values: {component: value} of the `learner` inputs
        yield from train_models(app, values[data_choice], values[upload], *class_data(values), values[backbones],
                                values[mode], values[img_size], values[epochs], values[compare_models],
                                session_of(request))

    def on_curve(values: dict, request: gr.Request):
        return learning_curve_ui(app, values[data_choice], values[upload], *class_data(values), values[backbones],
                                 values[img_size], values[epochs], session_of(request))

    def on_save(selected, request: gr.Request):
        return save_models(app, session_of(request), selected)

    def on_cancel(request: gr.Request):
        return "Cancelling…" if app.trained.cancel(session_of(request)) else "Nothing is training."

    def on_api(data: str | None = None, dataset: str = "", backbones: Any = None, mode: str = "feature-extraction",
               img_size: Any = None, epochs: Any = None, request: gr.Request = None) -> list[dict[str, Any]]:
        """Train one model per backbone on a packaged `dataset` (chest-xray, brain-mri, digits) or an uploaded
        `data` file (zip of class folders, zip with a CSV, .npz); returns one record per model, whose id then
        answers /compare from the same client."""
        return train_api(app, data, dataset, backbones, mode, img_size, epochs, session_of(request))

    data_choice.change(on_data, inputs=[data_choice, backbones, mode, img_size, epochs],
                       outputs=[upload_group, classes_group, estimate], api_visibility="private")
    add_class.click(more_classes, inputs=shown_rows, outputs=[shown_rows, *rows], api_visibility="private")
    for trigger in (backbones, mode, img_size, epochs):
        trigger.change(on_estimate, inputs=[data_choice, backbones, mode, img_size, epochs], outputs=estimate,
                       api_visibility="private")
    learner = {data_choice, upload, backbones, mode, img_size, epochs, compare_models, *names, *files}
    train_button.click(on_train, inputs=learner,
                       outputs=[status, live, results, confusion, lesson_text, download, compare_models],
                       api_visibility="private", **TRAINING)
    curve_button.click(on_curve, inputs=learner, outputs=[curve, curve_text], api_visibility="private", **TRAINING)
    save_button.click(on_save, inputs=compare_models, outputs=[status, compare_models], api_visibility="private")
    # the flag stops the job within a batch; the training generator then says so and nothing is kept
    cancel_button.click(on_cancel, outputs=status, api_visibility="private")
    with gr.Column(visible=False):
        api_data = gr.File(type="filepath", label="data")
        api_dataset = gr.Textbox(value="", label="dataset")
        api_backbones = gr.JSON(label="backbones")
        api_mode = gr.Textbox(value="feature-extraction", label="mode")
        api_size = gr.Number(value=None, precision=0, label="img_size")
        api_epochs = gr.Number(value=None, precision=0, label="epochs")
        api_out = gr.JSON(label="records")
        api_button = gr.Button()
    api_button.click(on_api, inputs=[api_data, api_dataset, api_backbones, api_mode, api_size, api_epochs],
                     outputs=api_out, api_name="train", **TRAINING)
