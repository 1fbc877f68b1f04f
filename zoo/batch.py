"""Batch classification: every image of a folder, a .zip or a list of files through every chosen model, one row per
(file, model), with the files that could not be read listed with their reason (never a stop)::

    from zoo.batch import classify_batch
    from zoo.catalog import discover_models
    from zoo.inference import ModelCache

    result = classify_batch("scans/", discover_models("weights")[:2], ModelCache())
    result.write_csv("out.csv")        # zoo.batch_report.CSV_COLUMNS, written atomically
    result.skipped                     # [(file, why it was not classified)]
    result.summaries                   # model id -> ModelSummary: accuracy, balanced accuracy, intervals, confusion

An image's class is the name of the folder that holds it (``normal/001.png``): where every such folder names one
of a model's classes, that model gets a summary (zoo.batch_report). Images are read with zoo.images (every
format its readers register: the suffixes of zoo.images.IMAGE_SUFFIXES), decoded once and shared by the models;
each model answers a chunk of images in one forward pass of its backend (zoo.prediction.predict_batch), with
the same trust checks (calibrated probability, prediction set, OOD score) as a comparison (zoo.inference.answers_of).
A zip goes through the archive checks of any upload (zoo.archives); the caps are zoo.upload_limits'.
"""
from __future__ import annotations

import math
import os
import stat
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from ._errors import ZooError
from .archives import ArchiveLimits, extract_zip, is_ignored, too_large
from .batch_report import BatchResult, BatchRow, summarise
from .catalog import ModelEntry
from .fileio import read_small_file
from .images import IMAGE_SUFFIXES, MAX_IMAGE_PIXELS, ImageLoadError, is_image_name, load_image
from .inference import LoadedModel, ModelCache, ModelResult, SharedImage, answers_of, predict_batch
from .upload_limits import MAX_ARCHIVE_BYTES, MAX_ARCHIVE_FILES, MAX_UPLOAD_BYTES

__all__ = ["BATCH_PIXELS", "BatchError", "BatchFile", "BatchLimits", "DEFAULT_CHUNK", "classify_batch", "collect_files"]

DEFAULT_CHUNK = 32  # images decoded and shared by the models at a time
# pixels (H x W) per forward pass: on a CPU a batch of large inputs outgrows the caches and runs slower per image than
# single images (benchmarks/bench_batch.py measured efficientnet_lite0 at 224 px slower in chunks of 32), while small
# inputs gain from fewer calls; 32 digits at 32 px fit, a 224-px image goes alone
BATCH_PIXELS = 32 * 32 * 32
Progress = Callable[[int, int, str], None]  # progress(done, total, what): `done` of `total` images finished


class BatchError(ZooError):
    """A batch that cannot run at all (no image, too many files, a refused archive); the message says what to do."""


@dataclass(frozen=True)
class BatchLimits:
    """Caps on one batch: the same as any upload (zoo.upload_limits, zoo.images.MAX_IMAGE_PIXELS)."""

    max_files: int = MAX_ARCHIVE_FILES
    max_total_bytes: int = MAX_ARCHIVE_BYTES  # a zip's members once inflated
    max_image_bytes: int = MAX_UPLOAD_BYTES
    max_pixels: int = MAX_IMAGE_PIXELS

    def archive(self) -> ArchiveLimits:
        """The same limits in zoo.archives' terms, for reading a zip of images."""
        return ArchiveLimits(max_files=self.max_files, max_total_bytes=self.max_total_bytes,
                             max_member_bytes=self.max_image_bytes)


@dataclass(frozen=True)
class BatchFile:
    """One image to classify: its name as shown (its path inside the folder or zip), where it is, its folder's
    name (the true class, when the folders name classes; None for a file outside any folder), and the folder
    that links in it must not leave."""

    name: str
    path: Path
    label: str | None
    root: Path


def collect_files(sources: str | os.PathLike | Sequence[str | os.PathLike], staging: Path,
                  limits: BatchLimits = BatchLimits()) -> tuple[list[BatchFile], list[tuple[str, str]], str]:
    """(images to classify, [(file, why it is skipped)], what was read in words) from folders (recursively), .zip
    archives (unpacked under `staging`, through zoo.archives' checks) and image files. More than
    `limits.max_files` images, or a refused archive, raise BatchError."""
    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    files: list[BatchFile] = []
    skipped: list[tuple[str, str]] = []
    described = []
    for index, item in enumerate(items):
        path = Path(item)
        if path.is_dir():
            found = _folder_files(path, path, "", skipped)
            described.append(f"the folder {path.name or path}")
        elif path.suffix.lower() == ".zip" and path.is_file():
            target = staging / f"zip-{index}"
            try:
                _, too_big = extract_zip(path, target, limits.archive())  # its files are walked below
            except ZooError as e:
                raise BatchError(str(e)) from None
            prefix = f"{path.name}/" if len(items) > 1 else ""
            skipped += [(prefix + name, why) for name, why in too_big]
            found = _folder_files(target, target, prefix, skipped)
            described.append(f"the zip {path.name}")
        elif path.is_file() and is_image_name(path.name):
            found = [BatchFile(path.name, path, None, path.parent)]
        else:
            skipped.append((path.name, _not_an_image(path)))
            found = []
        files += found
        if len(files) > limits.max_files:
            raise BatchError(f"more than {limits.max_files} images were given; classify at most {limits.max_files} "
                             "at a time (split the folder or the zip)")
    loose = sum(1 for item in items if Path(item).is_file() and Path(item).suffix.lower() != ".zip")
    if loose:
        described.append(f"{loose} file(s) given one by one")
    return files, skipped, ", ".join(described)


def _not_an_image(path: Path) -> str:
    if not path.exists():
        return "no such file or folder"
    return (f"not an image file: its name does not end in one of {', '.join(IMAGE_SUFFIXES)} (the formats "
            "zoo.images reads); convert it, or give a folder or a .zip of images")


def _folder_files(folder: Path, root: Path, prefix: str, skipped: list[tuple[str, str]]) -> list[BatchFile]:
    """The image files under `folder`, sorted, hidden files and links to folders left out; other files skipped.
    An image's label is the name of the folder holding it, below any lone folder that wraps class folders
    (``scans/normal/1.png`` and ``scans/2.png``: normal and none; ``normal/1.png`` alone: normal)."""
    images: list[tuple[PurePosixPath, Path]] = []
    for current, folders, names in os.walk(folder):  # links to folders are not followed
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        relative_folder = PurePosixPath(Path(current).relative_to(folder).as_posix())
        for name in sorted(names):
            relative = relative_folder / name
            if is_ignored(relative):
                continue
            if not is_image_name(name):
                skipped.append((prefix + relative.as_posix(), _not_an_image(Path(current) / name)))
                continue
            images.append((relative, Path(current) / name))
    depth = 0  # lone wrapping folders above the class folders (a lone folder of images is a class folder)
    while (images and len({r.parts[depth] for r, _ in images}) == 1 and all(len(r.parts) > depth + 1 for r, _ in images)
           and any(len(r.parts) > depth + 2 for r, _ in images)):
        depth += 1
    return [BatchFile(prefix + relative.as_posix(), path, relative.parts[-2] if len(relative.parts) > depth + 1
                      else None, root) for relative, path in images]


def _read(file: BatchFile, limits: BatchLimits):
    """The decoded image of one file, or the reason it cannot be classified (a string)."""
    try:
        info = os.stat(file.path)
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file (a device, a pipe or a folder)"
        if info.st_size > limits.max_image_bytes:
            return too_large(info.st_size, limits.max_image_bytes)
        data = read_small_file(file.path, limits.max_image_bytes, root=file.root)
        return load_image(data, max_pixels=limits.max_pixels).image
    except ImageLoadError as e:
        return str(e).removeprefix("<bytes>: ")
    except ZooError as e:  # a link out of the folder: the message names the server's path, so say it plainly
        return ("a link to a file outside the folder; links are not followed" if "symbolic link" in str(e)
                else str(e).replace(str(file.path), file.name))
    except (OSError, ValueError, MemoryError) as e:  # what a decoder may raise beyond load_image's own errors
        return f"cannot be read or decoded ({type(e).__name__}: {e})"


def classify_batch(sources: str | os.PathLike | Sequence[str | os.PathLike], entries: Sequence[ModelEntry],
                   cache: ModelCache, *, limits: BatchLimits = BatchLimits(), chunk: int = DEFAULT_CHUNK,
                   progress: Progress | None = None, progress_bar: bool = True) -> BatchResult:
    """Every image of `sources` (a folder, a .zip, an image file, or a list of them) through every entry: one row per
    (file, model) in file order, the skipped files with their reasons, and a summary per model whose classes the
    folders name. A model that cannot load, or fails on an image, has an error in its rows; the others answer.
    `progress(done, total, what)` and a tqdm bar (`progress_bar`, on stderr) follow the images."""
    if not entries:
        raise BatchError("choose at least one model to classify the images with")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="zoo-batch-") as staging:
        files, skipped, source = collect_files(sources, Path(staging), limits)
        if not files:
            listed = "; ".join(f"{name}: {why}" for name, why in skipped[:5])
            raise BatchError(f"no image to classify in {source or 'what was given'}"
                             f"{' (' + listed + ')' if listed else ''}; give image files "
                             f"({', '.join(IMAGE_SUFFIXES)}), a folder or a .zip of them")
        models = _load_all(entries, cache)
        rows: list[BatchRow] = []
        classified: list[BatchFile] = []
        with tqdm(total=len(files), unit="image", desc="classifying", disable=not progress_bar) as bar:
            for first in range(0, len(files), max(1, int(chunk))):
                part = files[first:first + max(1, int(chunk))]
                if progress is not None:
                    progress(first, len(files), f"images {first + 1}-{first + len(part)} of {len(files)}")
                readable = []
                for file in part:
                    image = _read(file, limits)
                    if isinstance(image, str):
                        skipped.append((file.name, image))
                    else:
                        readable.append((file, SharedImage(image)))
                answers = {entry.id: _answer_chunk(entry, models[entry.id], [img for _, img in readable])
                           for entry in entries}
                for i, (file, _) in enumerate(readable):
                    rows += [BatchRow(file.name, file.label, answers[entry.id][i]) for entry in entries]
                classified += [file for file, _ in readable]
                bar.update(len(part))
        if progress is not None:
            progress(len(files), len(files), "done")
    return BatchResult(source=source, models=[e.id for e in entries], files=[f.name for f in classified],
                       rows=rows, skipped=skipped, summaries=summarise(rows, [e.id for e in entries]),
                       wall_s=time.perf_counter() - start)


def _load_all(entries: Sequence[ModelEntry], cache: ModelCache) -> dict[str, LoadedModel | str]:
    """Each entry's loaded model, or the error that stopped it (its rows then carry it)."""
    models: dict[str, LoadedModel | str] = {}
    for entry in entries:
        try:
            models[entry.id] = cache.get(entry)
        except ZooError as e:
            models[entry.id] = str(e)
        except Exception as e:  # one broken model must not stop the others
            models[entry.id] = f"{entry.id} could not be loaded ({type(e).__name__}: {e})."
    return models


def _answer_chunk(entry: ModelEntry, model: LoadedModel | str, images: list[SharedImage]) -> list[ModelResult]:
    """One model's results for a chunk of images: one forward pass; where that fails, image by image, so that one
    image the model cannot take (a shape it refuses) fails its own row only."""
    if isinstance(model, str):
        return [_failed(entry, model) for _ in images]
    if not images:
        return []
    size = max(1, BATCH_PIXELS // math.prod(model.data_config["input_size"][1:]))
    if len(images) > size:  # large inputs: smaller forward passes (see BATCH_PIXELS)
        return [r for first in range(0, len(images), size)
                for r in _answer_chunk(entry, model, images[first:first + size])]
    try:
        predictions = predict_batch(model, images, top_k=len(model.label_names))
    except Exception:  # noqa: BLE001  (told apart below, one image at a time)
        return [_answer_chunk(entry, model, [image])[0] for image in images] if len(images) > 1 else \
            [_one_failure(entry, model, images[0])]
    return answers_of(entry, model, predictions)  # a prediction the trust step refuses: its own row's error


def _one_failure(entry: ModelEntry, model: LoadedModel, image: SharedImage) -> ModelResult:
    try:
        predict_batch(model, [image])
    except ZooError as e:
        return _failed(entry, str(e))
    except Exception as e:
        return _failed(entry, f"{entry.id} failed ({type(e).__name__}: {e}).")
    return _failed(entry, f"{entry.id} failed on this image in a batch; classify it on its own.")


def _failed(entry: ModelEntry, error: str) -> ModelResult:
    return ModelResult(model=entry.id, label_names=list(entry.label_names), error=error)
