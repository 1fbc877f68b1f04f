"""The Train tab's work: a learner's images read safely (train.intake), models trained on them through the one
training path (train.lesson, which calls run_training), the lesson told with the learner's own numbers, and the
models each browser session trained, which join that session's Compare list and disappear with it.

The callbacks here are plain module-level functions of plain values (app.py only lays them out and wires them), so
they are tested without a browser. One training job runs at a time in an app process (app.py gives the train events
one concurrency slot); the others wait in Gradio's queue, which shows each its place.
"""
from __future__ import annotations

import queue
import re
import shutil
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from train import lesson
from train import ConfigError, DataError
from train.intake import IntakeLimits, IntakeReport, read_class_files, read_upload
from zoo import ZooError
from zoo.catalog import ModelEntry, discover_models

__all__ = ["BUNDLED_CHOICES", "DATA_CHOICES", "MAX_CLASSES", "MODE_CHOICES", "RESULT_HEADERS", "SIZE_CHOICES",
           "EPOCH_CHOICES", "TrainedModels", "TrainingJob", "backbone_choices", "check_time_cap", "estimate_markdown", "save_to_weights",
           "lesson_markdown", "result_rows", "unavailable_markdown", "zip_runs"]

# the tab's data choices: the packaged labelled images first (offline, seconds), then the learner's own
BUNDLED_CHOICES = [("Packaged chest X-rays (16: normal, pneumonia)", "chest-xray"),
                   ("Packaged brain MRIs (17: glioma, meningioma, no tumour, pituitary)", "brain-mri"),
                   ("Handwritten digits (1,797, not medical: the train/validation/test protocol)", "digits")]
UPLOAD, CLASS_BY_CLASS = "upload", "classes"
DATA_CHOICES = BUNDLED_CHOICES + [("My images: one file (a zip of class folders, a zip with a CSV, a .npz)", UPLOAD),
                                  ("My images: class by class", CLASS_BY_CLASS)]
BUNDLED_COUNTS = {"chest-xray": 16, "brain-mri": 17, "digits": 1797}  # for the estimate before anything is read
MAX_CLASSES = 10
MODE_CHOICES = [("Feature extraction: the ImageNet backbone frozen, a new head trained", "feature-extraction"),
                ("Fine-tuning: every layer trains, starting from ImageNet", "fine-tune"),
                ("From scratch: random weights, no transfer (the baseline)", "scratch")]
AUTO = "auto"
SIZE_CHOICES = [AUTO, 64, 96, 128, 160, 224]
EPOCH_CHOICES = [AUTO, 3, 5, 10, 25, 50]
RESULT_HEADERS = ["model", "backbone", "mode", "images", "evaluation", "accuracy (95% CI)",
                  "balanced accuracy (95% CI)", "seconds", "trainable / total parameters"]
LIVE_PLOT_EVERY_S = 1.0  # the live curves are redrawn at most this often (matplotlib costs ~0.1 s a figure)


def backbone_choices() -> tuple[list[str], list[tuple[str, str]]]:
    """(the backbones a transfer mode can use here, [(backbone, why not) for the others])."""
    usable, unusable = [], []
    for arch, problem in lesson.available_backbones():
        (unusable.append((arch, problem)) if problem else usable.append(arch))
    return usable, unusable


def unavailable_markdown(unusable: Sequence[tuple[str, str]]) -> str:
    """The backbones that cannot transfer here, grouped by reason, folded away."""
    by_reason: dict[str, list[str]] = {}
    for arch, reason in unusable:
        by_reason.setdefault(reason.split(":")[0], []).append(arch)
    lines = [f"- **{', '.join(archs)}**: {reason}" for reason, archs in by_reason.items()]
    return ("<details><summary>Backbones not available here, and why</summary>\n\n" + "\n".join(lines)
            + "\n\n</details>") if lines else ""


def _choice(value: Any) -> int | None:
    return None if value in (None, "", AUTO) else int(value)


def request_for(data: str, backbones: Sequence[str] | None, mode: str, img_size: Any, epochs: Any) -> lesson.LessonRequest:
    """The LessonRequest for the tab's choices (ConfigError naming what is missing or wrong)."""
    return lesson.LessonRequest(data=data, backbones=tuple(backbones or ()), mode=mode or "feature-extraction",
                                img_size=_choice(img_size), epochs=_choice(epochs)).check()


def estimate_markdown(choice: str, report: IntakeReport | None, backbones: Sequence[str] | None, mode: str,
                      img_size: Any, epochs: Any) -> str:
    """What the training will cost, said before it starts."""
    images = BUNDLED_COUNTS.get(choice) or (sum(report.counts.values()) if report else None)
    if not backbones:
        return "Pick at least one backbone."
    if not images:
        return "The estimate appears once the images are read."
    try:
        request = request_for(choice if choice in BUNDLED_COUNTS else "upload", backbones, mode, img_size, epochs)
    except (ConfigError, ZooError) as e:
        return f"⚠ {e}"
    seconds = lesson.estimate_seconds(request, images)
    protocol = (f"stratified k-fold cross-validation (k = the smallest class's size, at most {lesson.MAX_FOLDS}), "
                "then one model trained on all images" if images < lesson.CV_LIMIT
                else "a train / validation / test split")
    return (f"About **{seconds:.0f} s** on this server for {images} images × {len(backbones)} backbone(s), "
            f"{mode}, evaluated by {protocol}.")


def result_rows(records: Sequence[lesson.LessonRecord]) -> list[list[Any]]:
    """One results-table row per trained model."""
    def ci(value: float, interval: Sequence[float]) -> str:
        return f"{value:.3f} ({interval[0]:.2f}–{interval[1]:.2f})"
    return [[r.id, r.arch, r.mode, r.n.get("images", sum(r.n.values())), r.protocol, ci(r.accuracy, r.accuracy_ci95),
             ci(r.balanced_accuracy, r.balanced_accuracy_ci95), f"{r.seconds:.1f}",
             f"{r.params_trainable:,} / {r.params_total:,}"] for r in records]


def lesson_markdown(records: Sequence[lesson.LessonRecord]) -> str:
    """Plain sentences on what the learner's own numbers show."""
    if not records:
        return ""
    lines = ["### What this shows"]
    for r in records:
        chance = 1 / max(len(r.label_names), 1)
        low, high = r.accuracy_ci95
        verdict = ("clearly better than guessing" if low > chance else
                   "not distinguishable from guessing with this few images")
        frozen = r.params_trainable / max(r.params_total, 1)
        lines.append(f"- **{r.id}** ({r.arch}, {r.mode}) got **{r.accuracy:.0%}** of "
                     f"{r.n.get('test', r.n.get('images'))} held-out answers right (95% interval {low:.0%}–{high:.0%}); "
                     f"guessing would get {chance:.0%}, so it is {verdict}. It trained {frozen:.2%} of its "
                     f"{r.params_total:,} parameters in {r.seconds:.1f} s.")
        lines += [f"  - {note}" for note in r.notes]
    if any(r.mode == "feature-extraction" for r in records):
        lines.append("- With a frozen backbone only the small head learns: the ImageNet features already separate "
                     "many medical images, which is why a few labelled images per class can be enough. The learning "
                     "curve below shows this against a network trained from scratch.")
    lines.append("- The interval is wide because the images are few: each held-out answer moves the accuracy by "
                 f"{1 / max(records[0].n.get('test', records[0].n.get('images', 1)), 1):.0%}.")
    return "\n".join(lines)


def curve_markdown(points: Sequence[lesson.CurvePoint]) -> str:
    """The learning curve's sentences, from its own points: what it shows, and what this few test images cannot."""
    if not points:
        return ""
    by_mode: dict[str, dict[int, lesson.CurvePoint]] = {}
    for p in points:
        by_mode.setdefault(p.mode, {})[p.per_class] = p
    text = ["Each point trains on that many labelled images per class (several random draws) and is tested on all "
            "the other images; the band is the 95% Wilson interval, and n is the number of test answers pooled."]
    frozen, scratch = by_mode.get("feature-extraction", {}), by_mode.get("scratch", {})
    for k in sorted(set(frozen) & set(scratch)):
        f, s = frozen[k], scratch[k]
        if f.ci95[0] > s.ci95[1]:
            verdict = "frozen ImageNet features are clearly ahead"
        elif s.ci95[0] > f.ci95[1]:
            verdict = "the network from scratch is clearly ahead"
        else:
            verdict = "the intervals overlap: these test images cannot tell the two apart"
        text.append(f"\n- **{k} per class** (n = {f.n_test}): frozen features {f.accuracy:.0%}, "
                    f"{lesson.SCRATCH_ARCH} from scratch {s.accuracy:.0%}; {verdict}.")
    text.append("\n\nWith many more labelled images a network from scratch catches up; transfer learning pays where "
                "labelled medical images are scarce, and the fewer test images are left, the wider the band.")
    return "".join(text)


def zip_runs(run_dirs: Sequence[Path], path: Path) -> Path:
    """The trained run folders in one zip (each as <id>/model.safetensors, config.json, README.md, ...)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for run_dir in run_dirs:
            for file in sorted(run_dir.rglob("*")):
                if file.is_file() and not file.is_symlink():
                    archive.write(file, f"{run_dir.name}/{file.relative_to(run_dir)}")
    return path


class TrainedModels:
    """The models each browser session trained: <root>/<session>/models/<id>, listed like a weights folder.

    They join that session's Compare list only and are deleted with the session (demo.unload) or at shutdown."""

    def __init__(self, root: Path):
        self.root = root
        self._lock = threading.Lock()
        self._stops: dict[str, threading.Event] = {}  # the running job's stop flag, by session

    def stop_flag(self, session: str) -> threading.Event:
        """A fresh stop flag for the session's next job (the Cancel button and a closed page set it)."""
        with self._lock:
            self._stops[session] = flag = threading.Event()
        return flag

    def cancel(self, session: str | None) -> bool:
        """Ask the session's running job to stop; False when none runs."""
        flag = self._stops.get(session or "")
        if flag is None or flag.is_set():
            return False
        flag.set()
        return True

    def folder(self, session: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", session or ""):
            raise ConfigError("this browser session has no usable id; reload the page")
        path = self.root / session
        path.mkdir(parents=True, exist_ok=True)
        return path

    def models_dir(self, session: str) -> Path:
        return self.folder(session) / "models"

    def entries(self, session: str | None) -> dict[str, ModelEntry]:
        """The session's trained models, by id (none for an unknown session)."""
        if not session or not (self.root / session / "models").is_dir():
            return {}
        return {e.id: e for e in discover_models(self.root / session / "models", catalog=self.root / "no-catalog")}

    def drop(self, session: str | None) -> None:
        """Forget a session: its running job is stopped, its images, job files and models are deleted."""
        self.cancel(session)
        if session and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", session):
            with self._lock:
                self._stops.pop(session, None)
                shutil.rmtree(self.root / session, ignore_errors=True)


@dataclass
class TrainingJob:
    """One training run in a thread, its epochs streamed to the tab, cancellable."""

    request: lesson.LessonRequest
    out_dir: Path
    stop: threading.Event = field(default_factory=threading.Event)
    max_s: float | None = None     # the server's time cap: past it the job stops as if cancelled
    history: list[dict[str, Any]] = field(default_factory=list)
    records: list[lesson.LessonRecord] | None = None
    error: BaseException | None = None
    timed_out: bool = False
    _epochs: queue.Queue = field(default_factory=queue.Queue)
    _thread: threading.Thread | None = None
    _started: float = 0.0

    def start(self) -> TrainingJob:
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="zoo-train", daemon=True)
        self._thread.start()
        return self

    def should_stop(self) -> bool:
        """Cancel pressed, page closed, or the time cap passed."""
        if self.max_s is not None and time.perf_counter() - self._started > self.max_s:
            self.timed_out = True
        return self.stop.is_set() or self.timed_out

    def _run(self) -> None:
        try:
            self.records = lesson.run_lesson(self.request, self.out_dir, on_epoch=self._epochs.put,
                                             should_stop=self.should_stop)
        except BaseException as e:  # the tab reports it; a cancel leaves no files (run_lesson removes them)
            self.error = e

    def updates(self, every_s: float = 0.25) -> Iterator[bool]:
        """Yield True whenever new epochs arrived, until the job ends."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(every_s)
            yield self._drain()
        yield self._drain()

    def _drain(self) -> bool:
        new = False
        while True:
            try:
                self.history.append(self._epochs.get_nowait())
                new = True
            except queue.Empty:
                return new

    def cancel(self, wait_s: float = 30.0) -> None:
        self.stop.set()
        if self._thread is not None:
            self._thread.join(wait_s)


def check_time_cap(request: lesson.LessonRequest, images: int, max_s: int) -> float:
    """The job's estimated seconds; ConfigError when the estimate is over the server's cap."""
    seconds = lesson.estimate_seconds(request, images)
    if seconds > max_s:
        raise ConfigError(f"this training is estimated at about {seconds:.0f} s, over this server's cap of {max_s} s "
                          "per job (ZOO_APP_TRAIN_MAX_S): choose fewer backbones, fewer epochs, a smaller input size, "
                          "feature extraction, or fewer images")
    return seconds


def save_to_weights(trained: TrainedModels, session: str, weights: Path) -> list[str]:
    """Copy the session's trained run folders into the app's weights folder (never over an existing folder);
    returns the ids copied."""
    copied = []
    for model_id, entry in trained.entries(session).items():
        target = weights / model_id
        if target.exists():
            continue
        weights.mkdir(parents=True, exist_ok=True)
        shutil.copytree(entry.location, target, symlinks=True)
        copied.append(model_id)
    return copied


def session_limits(max_pixels: int) -> IntakeLimits:
    """The intake's caps with the app's own pixel limit."""
    return IntakeLimits(max_pixels=max_pixels)


def read_learner_data(choice: str, upload: str | None, names: Sequence[str], files: Sequence[Sequence[str] | None],
                      job_dir: Path, limits: IntakeLimits) -> tuple[str, IntakeReport | None]:
    """(the --data spec to train on, the intake's report or None for packaged data); DataError says what is wrong."""
    if choice in BUNDLED_COUNTS:
        return choice, None
    shutil.rmtree(job_dir, ignore_errors=True)
    job_dir.mkdir(parents=True)
    if choice == UPLOAD:
        if not upload:
            raise DataError("no file uploaded: drop a zip of class folders, a zip with a CSV of file,label, or a "
                            "MedMNIST .npz in the box above")
        report = read_upload(upload, job_dir, limits)
    else:
        classes = {(name or "").strip() or f"class {i + 1}": list(paths or [])
                   for i, (name, paths) in enumerate(zip(names, files)) if paths}
        report = read_class_files(classes, job_dir, limits)
    return str(report.folder), report


def elapsed(start: float) -> str:
    return f"{time.perf_counter() - start:.0f} s"
