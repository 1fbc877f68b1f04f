"""Teach by doing: transfer learning end to end on a small labelled image set, on CPU, in seconds.

A lesson trains one model per chosen backbone through the one training path (``run_training``: the
engine, the feature cache, the run-folder writer) and evaluates it honestly for the amount of data:

- under ``CV_LIMIT`` images, stratified k-fold cross-validation over all images, k = min(5, smallest
  class count). Stratified k-fold rather than leave-one-out: it costs k + 1 trainings instead of n + 1,
  and with k no larger than the smallest class every fold scores at least one image of every class.
  The pooled out-of-fold predictions give the accuracy (95 % Wilson interval), the balanced accuracy
  (95 % interval from per-class Jeffreys posteriors, see ``balanced_accuracy_interval``) and the
  confusion matrix; the model that is kept is then trained on all images and its run folder reports
  that cross-validated evaluation. Calibration and prediction sets are left out: they need held-out
  validation and test splits that so few images cannot spare.
- from ``CV_LIMIT`` images on, the train / validation / test split of ``python -m train``, so the model
  gets its temperature, prediction sets and OOD check like any run.

Every image goes through a frozen backbone once per (backbone, input size) (``FeatureMemo``), so the
folds and the learning-curve points train heads on cached features in milliseconds.

The from-scratch baseline of the learning curve is LeNet-5 on 32x32 grey images (``SCRATCH_ARCH``):
a network of the backbones' size trained from random weights needs far more than a minute of CPU per
point, while LeNet-5 (146 thousand parameters) trains in well under a second and shows what a network that
starts from nothing learns from a handful of images.
"""
from __future__ import annotations

import hashlib
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import ImageOps
from sklearn.model_selection import StratifiedKFold

import zoo
from zoo.intervals import balanced_accuracy_interval  # one definition, re-exported here
from zoo.intervals import wilson_interval as zoo_wilson_interval

from ._errors import ConfigError, DataError, TrainingInterrupted
from .config import TrainConfig
from .data import DataSource, Sample, class_counts, load_source, verify_images
from .features import FeatureMemo
from .plots import plt, save_figure
from .runner import HeldOutPredictions, RunHooks, RunResult, run_training

__all__ = ["LessonRequest", "LessonRecord", "LessonCancelled", "CurvePoint", "available_backbones",
           "estimate_seconds", "run_lesson", "learning_curve", "plot_learning_curve", "plot_live_curves",
           "balanced_accuracy_interval", "wilson_interval", "CV_LIMIT", "SCRATCH_ARCH", "DEFAULT_IMG_SIZES",
           "DEFAULT_EPOCHS", "SCRATCH_BASELINE_TEXT", "CURVE_TEXT", "TRUST_NOTE"]

_logger = logging.getLogger("train")

CV_LIMIT = 100          # fewer images than this: cross-validation; from here on: train/val/test split
MAX_FOLDS = 5
SCRATCH_ARCH = "lenet5"  # the learning curve's from-scratch baseline (see the module docstring)
CURVE_DRAWS = 3          # random draws of the training images per learning-curve point
# Small inputs for CPU seconds: 160 px keeps most of what ImageNet features see at 224 px for half the
# pixels (Lite0, MobileNetV2); 150 px is the size the packaged Keras Xception classifiers were trained at.
DEFAULT_IMG_SIZES = {"efficientnet_lite0": 160, "mobilenetv2_100": 160, "xception": 150, SCRATCH_ARCH: 32}
FALLBACK_IMG_SIZE = 128  # other backbones, and any backbone trained from scratch
# A head on cached features costs milliseconds per epoch; modes that run the backbone every epoch get few.
DEFAULT_EPOCHS = {"feature-extraction": 25, "fine-tune": 5, "partial-fine-tune": 5, "scratch": 30}
MODE_LR = {"feature-extraction": 1e-2, "fine-tune": 1e-4, "partial-fine-tune": 1e-4, "scratch": 3e-3}
# forward pass, approximate milliseconds per 224 px image on an idle 2-core CPU, for estimate_seconds
FORWARD_MS_224 = {"efficientnet_lite0": 25.0, "mobilenetv2_100": 20.0, "xception": 110.0, SCRATCH_ARCH: 0.2}
RUN_OVERHEAD_S = 0.4     # building the model and the loop of one training run
RUN_FOLDER_S = 1.5       # plots, model card and weights of the kept model
# plain-language sentences for the app to show beside the figures (the lesson text)
SCRATCH_BASELINE_TEXT = (f"The from-scratch line is {SCRATCH_ARCH} (LeNet-5, 146 thousand parameters, 32x32 grey "
                         "images) "
                         "trained from random weights: a network the size of the pretrained backbones would need far "
                         "more than a minute of CPU per point to train from scratch, and far more images than this.")
CURVE_TEXT = ("Each point trains on that many labelled images per class, drawn at random several times, and tests on "
              "all the other images; the band is the 95 % Wilson interval. Frozen ImageNet features start from "
              "what a network learned on a million photos, so a few medical images already move them; a network "
              "that starts from nothing has to learn even edges from those few images.")
TRUST_NOTE = ("Calibration (temperature scaling) and prediction sets need more data: they are fitted on a held-out "
              f"validation split and checked on a test split, which fewer than {CV_LIMIT} images cannot spare. This "
              "model's probabilities are uncalibrated; read them as scores, not as chances.")


class LessonCancelled(Exception):
    """should_stop() asked the lesson to stop; everything it had written was removed."""


@dataclass(frozen=True)
class LessonRequest:
    """What the learner chose: data, backbones, transfer mode and optional size/epochs."""

    data: str                      # a --data spec: bundled name (chest-xray, brain-mri, digits) or an ImageFolder path
    backbones: tuple[str, ...]     # zoo architecture names (see available_backbones)
    mode: str = "feature-extraction"   # one of zoo.MODES
    img_size: int | None = None    # None: DEFAULT_IMG_SIZES (or FALLBACK_IMG_SIZE)
    epochs: int | None = None      # None: DEFAULT_EPOCHS[mode]
    seed: int = 0

    def size_for(self, arch: str) -> int:
        """The input size `arch` trains at: the request's, else the per-backbone default."""
        if self.img_size is not None:
            return self.img_size
        if not self.transfer_mode.needs_pretrained and arch != SCRATCH_ARCH:
            return FALLBACK_IMG_SIZE
        return DEFAULT_IMG_SIZES.get(arch, FALLBACK_IMG_SIZE)

    @property
    def transfer_mode(self) -> zoo.TransferMode:
        """The chosen mode with what it implies (frozen backbone, pretrained weights, ...)."""
        return zoo.get_mode(self.mode)

    @property
    def epochs_or_default(self) -> int:
        return self.epochs if self.epochs is not None else DEFAULT_EPOCHS[self.mode]

    def check(self) -> "LessonRequest":
        """Refuse an unknown mode, no backbone, or an unknown backbone, naming the value."""
        try:
            zoo.get_mode(self.mode)
        except zoo.ZooError as e:
            raise ConfigError(str(e)) from None
        if not self.backbones:
            raise ConfigError("no backbone chosen; pick at least one (available_backbones() lists them)")
        for arch in self.backbones:
            zoo.get_architecture(arch)  # ZooError naming the closest names
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        return self


@dataclass
class LessonRecord:
    """One trained backbone: its evaluation and its run folder. ``to_dict()`` is the /train API's record.

    ``n``: images (all), train (images the kept model trained on), val and test (images scored by the
    evaluation; under cross-validation every image is scored once, by a fold model that never saw it,
    and ``folds`` says how many folds).
    """

    id: str
    arch: str
    mode: str
    dataset: str
    n: dict[str, int]
    protocol: str
    accuracy: float
    accuracy_ci95: tuple[float, float]
    balanced_accuracy: float
    balanced_accuracy_ci95: tuple[float, float]
    confusion_matrix: list[list[int]]
    label_names: list[str]
    seconds: float
    params_total: int
    params_trainable: int
    run_dir: Path
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tuples as lists, the run folder as a string."""
        out = asdict(self)
        out["run_dir"] = str(self.run_dir)
        out["accuracy_ci95"] = list(self.accuracy_ci95)
        out["balanced_accuracy_ci95"] = list(self.balanced_accuracy_ci95)
        return out


@dataclass
class CurvePoint:
    """Accuracy with ``per_class`` labelled training images per class, pooled over the random draws."""

    per_class: int
    mode: str
    accuracy: float
    ci95: tuple[float, float]
    n_test: int


# --- intervals ------------------------------------------------------------------------------------

def wilson_interval(correct: int, total: int) -> tuple[float, float]:
    """95 % Wilson score interval of correct/total (zoo.intervals); (0, 1) with no test image: nothing is known."""
    return zoo_wilson_interval(correct, total) or (0.0, 1.0)


def _accuracy_figures(matrix: np.ndarray) -> dict[str, Any]:
    matrix = np.asarray(matrix)
    correct, total = int(np.trace(matrix)), int(matrix.sum())
    support = matrix.sum(axis=1)
    recalls = np.diag(matrix)[support > 0] / support[support > 0]
    return {"accuracy": correct / max(total, 1), "accuracy_ci95": wilson_interval(correct, total),
            "balanced_accuracy": float(recalls.mean()) if len(recalls) else 0.0,
            "balanced_accuracy_ci95": balanced_accuracy_interval(matrix)}


# --- backbones and time -----------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _hub_problem() -> str | None:
    try:
        zoo.check_hub_reachable("its ImageNet weights")
    except zoo.ZooError as e:
        return str(e)
    return None


@lru_cache(maxsize=None)
def _offline_problem(arch: str) -> str | None:
    try:
        zoo.offline_imagenet_weights(arch)
    except zoo.ZooError as e:
        return str(e)
    return None


def available_backbones() -> list[tuple[str, str | None]]:
    """Every zoo architecture as (name, None) when a transfer mode can use it here, else (name, why not).

    Offline ImageNet weights (zoo.offline_weights) are always usable once their packages are installed;
    Hub weights only when the Hub answers (checked once per process, in at most a few seconds).
    """
    out = []
    for arch in zoo.list_architectures():
        info = zoo.get_architecture(arch)
        if info.offline_weights:
            out.append((arch, _offline_problem(arch)))
        elif info.imagenet_tag is not None:
            problem = _hub_problem()
            out.append((arch, None if problem is None else f"its ImageNet weights come from the Hugging Face Hub: "
                                                           f"{problem}"))
        else:
            out.append((arch, "no ImageNet weights exist for it here, so there is nothing to transfer; "
                              "train it with mode scratch"))
    return out


def estimate_seconds(request: LessonRequest, num_images: int) -> float:
    """Rough wall time of run_lesson on an idle 2-core CPU, from measured per-image forward costs.

    Under CV_LIMIT images: up to MAX_FOLDS fold runs plus the kept model's (an upper bound: fewer folds when a
    class is smaller). Feature extraction runs each image through the backbone once; the other modes run
    forward and backward (about 3 forward passes) over every training image every epoch.
    """
    folds = MAX_FOLDS if num_images < CV_LIMIT else 0
    # images trained on over all runs: k folds of (k-1)/k of them plus the kept model, or the 70 % train split
    trained = num_images * folds if folds else num_images * (1 - 2 * TrainConfig.val_frac)
    total = 0.0
    for arch in request.backbones:
        size = request.size_for(arch)
        per_image = FORWARD_MS_224.get(arch, zoo.get_architecture(arch).num_params / 2e5) / 1000 * (size / 224) ** 2
        if request.transfer_mode.frozen_backbone:  # its features are computed once and cached
            compute = num_images * per_image
        else:
            compute = 3 * per_image * trained * request.epochs_or_default
        total += compute + (folds + 1) * RUN_OVERHEAD_S + RUN_FOLDER_S + num_images * 0.02  # 0.02 s: decoding
    return round(total, 1)


# --- data -----------------------------------------------------------------------------------------

def _load(spec: str) -> DataSource:
    """The request's data, read and verified once; every class needs two images (one to train, one to test)."""
    source = verify_images(load_source(spec))
    counts = class_counts(source.samples, source.num_classes)
    few = {name: c for name, c in zip(source.label_names, counts) if c < 2}
    if few:
        raise DataError(f"--data {spec}: class(es) {few} have fewer than 2 images; a lesson needs at least 2 per "
                        "class (one to learn from, one to test on). Add images or remove the class")
    return source


def _in_memory(source: DataSource, side: int) -> DataSource:
    """The images decoded once into memory, centre-cropped to side x side (for modes that read every epoch).

    Fine-tuning and scratch runs see every image every epoch; decoding a 1,400 px JPEG each time would
    dominate their seconds. The crop is the geometry of the model's own resize-and-centre-crop.
    """
    if source.in_memory:
        return source
    from zoo.images import load_image  # noqa: PLC0415
    array = np.stack([np.asarray(ImageOps.fit(load_image(s.ref).image.convert("RGB"), (side, side)))
                      for s in source.samples])  # (N, side, side, 3) uint8
    samples = [Sample(key=s.key, ref=i, label=s.label) for i, s in enumerate(source.samples)]
    return replace(source, samples=samples, array=array, root=None, skipped=list(source.skipped),
                   description=f"{source.description} (decoded once, centre-cropped to {side} px)")


def _labels(source: DataSource) -> np.ndarray:
    return np.asarray([s.label for s in source.samples], dtype=np.int64)


# --- training -------------------------------------------------------------------------------------

@dataclass
class _Job:
    """What one run_lesson / learning_curve call shares: data, features, callbacks, files written."""

    request: LessonRequest
    out_dir: Path
    source: DataSource
    on_epoch: Callable[[dict], None] | None
    should_stop: Callable[[], bool] | None
    memo: FeatureMemo = field(default_factory=FeatureMemo)
    decoded: dict[int, DataSource] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)

    def stopped(self) -> bool:
        return bool(self.should_stop and self.should_stop())

    def source_for(self, arch: str, mode: str, size: int) -> DataSource:
        if zoo.get_mode(mode).frozen_backbone:  # the feature memo decodes each image once anyway
            return self.source
        side = math.ceil(size / 0.875)  # room for the model's own resize and centre crop (crop_pct 0.875 or more)
        if side not in self.decoded:
            self.decoded[side] = _in_memory(self.source, side)
        return self.decoded[side]

    def train(self, arch: str, mode: str, indices: dict[str, list[int]], phase: str, *, out: Path | None = None,
              held_out: HeldOutPredictions | None = None, validate: bool = False) -> RunResult:
        """One run_training call: a fold or curve point (no folder), or the kept model (``out``).

        ``validate=False`` (folds, curve points, the model trained on all images): no held-out validation
        split exists, so no epoch is chosen on one; the last epoch's weights are kept."""
        request = self.request
        size = SCRATCH_IMG_SIZE if arch == SCRATCH_ARCH else request.size_for(arch)
        epochs = request.epochs_or_default
        cfg = TrainConfig(arch=arch, mode=mode, data=request.data, img_size=size, epochs=epochs,
                          lr=MODE_LR[mode], sched="none", monitor="loss", seed=request.seed,
                          workers=0, quiet=True, onnx=False, cache="memory",
                          out=str(out) if out else str(self.out_dir / ".unwritten"), overwrite=True,
                          extra={"lesson": {"phase": phase, "protocol": held_out.protocol if held_out else None}})

        def on_epoch(record: dict[str, Any]) -> None:
            if self.on_epoch is not None:
                self.on_epoch({"arch": arch, "mode": mode, "phase": phase, "epochs": epochs, **record})

        if out is not None:
            self.written.append(out)
        hooks = RunHooks(source=self.source_for(arch, mode, size), split_indices=indices, features=self.memo,
                         write_run=out is not None, checkpoints=False, on_epoch=on_epoch,
                         should_stop=self.should_stop, held_out=held_out, validate=validate)
        try:
            result = run_training(cfg, hooks=hooks)
        except TrainingInterrupted:
            raise LessonCancelled(f"cancelled while training {arch} ({phase})") from None
        if self.stopped():
            raise LessonCancelled(f"cancelled after training {arch} ({phase})")
        return result

    def remove_written(self) -> None:
        for path in self.written:
            shutil.rmtree(path, ignore_errors=True)
        try:
            self.out_dir.rmdir()  # only if nothing else is in it
        except OSError:
            pass


SCRATCH_IMG_SIZE = DEFAULT_IMG_SIZES[SCRATCH_ARCH]


def _standard_split(job: _Job) -> dict[str, list[int]]:
    """The stratified train/val/test split python -m train makes (15 % / 15 %, seeded), as sample indices."""
    from .data import make_splits  # noqa: PLC0415
    defaults = TrainConfig()
    splits = make_splits(job.source, defaults.val_frac, defaults.test_frac, job.request.seed)
    position = {id(s): i for i, s in enumerate(job.source.samples)}
    return {name: [position[id(s)] for s in part] for name, part in splits.items()}


def _record_id(request: LessonRequest, arch: str, source: DataSource) -> str:
    digest = hashlib.sha256(repr((request, arch, source.spec, time.time_ns())).encode()).hexdigest()[:8]
    return f"{arch}-{request.mode}-{source.name}-{digest}"


def _cross_validated(job: _Job, arch: str) -> tuple[HeldOutPredictions, int]:
    """Pooled out-of-fold predictions of stratified k-fold cross-validation, and k."""
    source, request = job.source, job.request
    labels = _labels(source)
    folds = min(MAX_FOLDS, int(np.bincount(labels).min()))
    probs = np.zeros((len(labels), source.num_classes))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=request.seed)
    for i, (train, test) in enumerate(splitter.split(np.zeros(len(labels)), labels), start=1):
        # no images to spare for validation: train for the fixed epochs and keep the last weights
        # (the runner needs a val split; the fold's training images fill it, unused with validate=False)
        result = job.train(arch, request.mode, {"train": train.tolist(), "val": train.tolist(),
                                                "test": test.tolist()}, f"fold {i}/{folds}")
        probs[test] = result.test_probs
    protocol = f"{folds}-fold stratified cross-validation"
    matrix = _confusion(labels, probs, source.num_classes)
    figures = _accuracy_figures(matrix)
    card = (f"Evaluated by {protocol} over all {len(labels)} images (scikit-learn StratifiedKFold, seed "
            f"{request.seed}): {folds} models, each trained on the other folds with this recipe, scored the images "
            f"of their own fold, so every image was predicted once by a model that never saw it. The metrics and "
            f"the confusion matrix below pool those {len(labels)} predictions: accuracy "
            f"{figures['accuracy']:.3f} (95 % Wilson interval {figures['accuracy_ci95'][0]:.3f}–"
            f"{figures['accuracy_ci95'][1]:.3f}), balanced accuracy {figures['balanced_accuracy']:.3f} (95 % "
            f"interval {figures['balanced_accuracy_ci95'][0]:.3f}–{figures['balanced_accuracy_ci95'][1]:.3f}, from "
            "per-class Jeffreys posteriors). This model itself was then trained on all the images.")
    extra = {"folds": folds, "images": len(labels), "accuracy_ci95": list(figures["accuracy_ci95"]),
             "balanced_accuracy_ci95": list(figures["balanced_accuracy_ci95"]),
             "interval_methods": {"accuracy": "Wilson score (scipy.stats.binomtest)",
                                  "balanced_accuracy": "mean of per-class Jeffreys Beta posteriors, 20,000 draws"}}
    return HeldOutPredictions(probs=probs, labels=labels, protocol=protocol, card_text=card,
                              trust_note=TRUST_NOTE, extra_metrics=extra), folds


def _confusion(labels: np.ndarray, probs: np.ndarray, num_classes: int) -> np.ndarray:
    from sklearn.metrics import confusion_matrix  # noqa: PLC0415
    return confusion_matrix(labels, probs.argmax(axis=1), labels=list(range(num_classes)))


def _train_backbone(job: _Job, arch: str) -> LessonRecord:
    start = time.perf_counter()
    source, request = job.source, job.request
    run_dir = job.out_dir / _record_id(request, arch, source)
    everything = list(range(len(source.samples)))
    notes = []
    if len(source.samples) < CV_LIMIT:
        held_out, folds = _cross_validated(job, arch)
        result = job.train(arch, request.mode, {"train": everything, "val": everything, "test": everything},
                           "final model (all images)", out=run_dir, held_out=held_out)
        n = {"images": len(everything), "train": len(everything), "val": 0, "test": len(everything), "folds": folds}
        matrix = np.asarray(result.test["confusion_matrix"])
        notes.append(TRUST_NOTE)
        protocol = held_out.protocol
    else:
        indices = _standard_split(job)
        result = job.train(arch, request.mode, indices, "train/val/test split", out=run_dir, validate=True)
        matrix = np.asarray(result.test["confusion_matrix"])
        n = {"images": len(everything), **{name: len(part) for name, part in indices.items()}}
        protocol = f"held-out test split ({n['test']} images) of a stratified train/validation/test split"
    if not request.transfer_mode.frozen_backbone and not source.in_memory:
        notes.append("images were decoded once and centre-cropped in memory before training, so each epoch "
                     "reads them quickly")
    if not request.transfer_mode.needs_pretrained or not zoo.get_architecture(arch).has_imagenet_weights:
        notes.append("trained from random weights: with few images expect little better than chance")
    total, trainable = result.params
    return LessonRecord(id=run_dir.name, arch=arch, mode=request.mode, dataset=source.name, n=n,
                        protocol=protocol, **_accuracy_figures(matrix), confusion_matrix=matrix.tolist(),
                        label_names=list(source.label_names), seconds=round(time.perf_counter() - start, 2),
                        params_total=total, params_trainable=trainable, run_dir=run_dir, notes=notes)


def run_lesson(request: LessonRequest, out_dir: Path, *, on_epoch: Callable[[dict], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> list[LessonRecord]:
    """Train and evaluate one model per backbone; each record's run_dir is a complete run folder.

    ``on_epoch(record)`` receives every epoch of every training run (``arch``, ``mode``, ``phase``,
    ``epoch``, ``epochs``, ``train_loss``, ``train_accuracy``, ...): the live curves. ``should_stop()`` is
    polled before every batch; when it returns True the lesson raises LessonCancelled and leaves no files.
    """
    request = request.check()
    job = _Job(request, Path(out_dir), _load(request.data), on_epoch, should_stop)
    try:
        if job.stopped():
            raise LessonCancelled("cancelled before training started")
        records = [_train_backbone(job, arch) for arch in request.backbones]
    except BaseException:
        job.remove_written()
        raise
    for record in records:
        _logger.info("lesson: %s %s on %s: accuracy %.3f (%.3f-%.3f), %s, %.1f s", record.arch, record.mode,
                     record.dataset, record.accuracy, *record.accuracy_ci95, record.protocol, record.seconds)
    return records


def _curve_counts(counts: Sequence[int]) -> list[int]:
    """Per-class training counts 1, 2, 4, 8, ... and "all" (every image but one of the largest class)."""
    most = max(counts) - 1
    steps = [k for k in (2 ** i for i in range(12)) if k < most]
    return steps + [most]


def _draw(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """min(per_class, n_c - 1) random images of each class to train on; the rest to test on."""
    train: list[int] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        train += rng.choice(members, size=min(per_class, len(members) - 1), replace=False).tolist()
    chosen = set(train)
    return sorted(train), [i for i in range(len(labels)) if i not in chosen]


def learning_curve(request: LessonRequest, out_dir: Path, *, on_point: Callable[[CurvePoint], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> list[CurvePoint]:
    """Accuracy against labelled training images per class: frozen features of the request's first backbone
    vs SCRATCH_ARCH from random weights, on the same random draws (CURVE_DRAWS per count), tested on the rest.

    Each point pools the draws' test predictions (n_test) with a 95 % Wilson interval; the draws overlap
    in their test images, so read the interval as approximate. Nothing is written to ``out_dir``.
    """
    request = request.check()
    job = _Job(request, Path(out_dir), _load(request.data), None, should_stop)
    labels = _labels(job.source)
    arms = (("feature-extraction", request.backbones[0]), ("scratch", SCRATCH_ARCH))
    points: list[CurvePoint] = []
    try:
        for per_class in _curve_counts(np.bincount(labels).tolist()):
            rng = np.random.default_rng([request.seed, per_class])
            draws = [_draw(labels, per_class, rng) for _ in range(CURVE_DRAWS)]
            for mode, arch in arms:
                arm_job = replace(job, request=replace(request, mode=mode))
                correct = total = 0
                for d, (train, test) in enumerate(draws, start=1):
                    result = arm_job.train(arch, mode, {"train": train, "val": train, "test": test},
                                           f"curve {per_class}/class, draw {d}")
                    correct += int((result.test_probs.argmax(axis=1) == result.test_labels).sum())
                    total += len(test)
                point = CurvePoint(per_class=per_class, mode=mode, accuracy=correct / total,
                                   ci95=wilson_interval(correct, total), n_test=total)
                points.append(point)
                if on_point is not None:
                    on_point(point)
    except TrainingInterrupted:
        raise LessonCancelled("learning curve cancelled") from None
    return points


def plot_learning_curve(points: Sequence[CurvePoint], path: str | Path, title: str = "") -> Path:
    """Accuracy (95 % Wilson band) against labelled images per class, one line per mode."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for mode in dict.fromkeys(p.mode for p in points):
        mine = sorted((p for p in points if p.mode == mode), key=lambda p: p.per_class)
        x = [p.per_class for p in mine]
        label = "frozen ImageNet features" if mode == "feature-extraction" else f"{mode} ({SCRATCH_ARCH})" \
            if mode == "scratch" else mode
        ax.plot(x, [p.accuracy for p in mine], "o-", label=label)
        ax.fill_between(x, [p.ci95[0] for p in mine], [p.ci95[1] for p in mine], alpha=0.2)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="labelled training images per class", ylabel="accuracy on the other images", ylim=(0, 1.02),
           title=title or "Learning curve (95 % Wilson intervals)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return save_figure(fig, path)


def plot_live_curves(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Training loss and accuracy per epoch of every run so far (on_epoch records), one line per run."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    runs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for record in history:
        runs.setdefault((record["arch"], record["mode"], record["phase"]), []).append(record)
    for (arch, mode, phase), records in runs.items():
        epochs = [r["epoch"] for r in records]
        final = not phase.startswith(("fold", "curve"))
        style = dict(alpha=1.0 if final else 0.35, linewidth=2 if final else 1)
        loss_ax.plot(epochs, [r["train_loss"] for r in records], label=f"{arch} {phase}", **style)
        acc_ax.plot(epochs, [r["train_accuracy"] for r in records], label=f"{arch} {phase}", **style)
    loss_ax.set(title="Training loss", xlabel="epoch")
    acc_ax.set(title="Training accuracy", xlabel="epoch", ylim=(0, 1.02))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
    if runs:
        acc_ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)
