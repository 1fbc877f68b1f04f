"""What a batch classification (zoo.batch) gives: its rows, the CSV of them, and a summary per model when the images'
folders name the model's classes (accuracy and balanced accuracy with 95% intervals, and the confusion matrix).

Accuracy's interval is the Wilson score interval (zoo.intervals.wilson_interval); balanced accuracy (the mean of
the per-class recalls, scikit-learn's balanced_accuracy_score) gets the interval of the mean of per-class Jeffreys
posteriors (zoo.intervals.balanced_accuracy_interval). Both say their n: a dozen images give wide intervals.
"""
from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .fileio import atomic_write
from .inference import ModelResult
from .intervals import balanced_accuracy_interval, wilson_interval

__all__ = ["CSV_COLUMNS", "EMPTY_SET", "SET_SEPARATOR", "BatchResult", "BatchRow", "ModelSummary", "summarise"]

# the CSV's columns, in order: one row per (file, model)
CSV_COLUMNS = ("file", "true_label", "model", "top1", "probability", "calibrated_probability", "prediction_set",
               "prediction_set_coverage", "ood_score", "ood_threshold", "ood_flagged", "latency_ms", "backend",
               "error")
SET_SEPARATOR = "|"  # between the classes of a prediction set in one CSV cell
EMPTY_SET = "{}"  # an empty prediction set (no class probable enough); an empty cell: the model has no sets
# a cell that starts with one of these is a formula to a spreadsheet: file and folder names come from users
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class BatchRow:
    """One (file, model): the file's name (its path in the folder or zip), its folder's name, the model's result."""

    file: str
    true_label: str | None
    result: ModelResult

    def record(self) -> dict[str, Any]:
        """The row as the CSV has it (CSV_COLUMNS); numbers rounded, None where there is no value."""
        r = self.result
        top = r.top_k[0] if r.top_k else None
        calibrated = dict(r.calibrated_top_k or []).get(top[0]) if top else None
        ood = r.ood or {}
        members = None if r.prediction_set is None else SET_SEPARATOR.join(r.prediction_set) or EMPTY_SET
        return {"file": self.file, "true_label": self.true_label, "model": r.model,
                "top1": top[0] if top else None, "probability": _round(top[1] if top else None),
                "calibrated_probability": _round(calibrated),
                "prediction_set": members,
                "prediction_set_coverage": r.prediction_set_coverage,
                "ood_score": _round(ood.get("score")), "ood_threshold": _round(ood.get("threshold")),
                "ood_flagged": None if r.ood is None else bool(ood.get("flagged")),
                "latency_ms": None if r.latency_ms is None else round(r.latency_ms, 3),
                "backend": r.backend, "error": r.error}


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 6)


@dataclass
class ModelSummary:
    """One model over the images whose folder names one of its classes; `reason` says why there is none."""

    model: str
    n: int = 0                      # images answered whose folder names a class of the model
    correct: int = 0
    accuracy: float | None = None
    accuracy_ci95: tuple[float, float] | None = None
    balanced_accuracy: float | None = None
    balanced_accuracy_ci95: tuple[float, float] | None = None
    classes: list[str] = field(default_factory=list)  # the model's classes: the confusion matrix's rows and columns
    confusion_matrix: list[list[int]] = field(default_factory=list)  # rows: true (folder), columns: predicted
    flagged: int = 0                # of the n, images the OOD check flagged (still counted)
    failed: int = 0                 # labelled images the model could not answer (not counted)
    reason: str | None = None

    def record(self) -> dict[str, Any]:
        """The summary as a JSON-ready dict (tuples as lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def summarise(rows: Sequence[BatchRow], models: Sequence[str]) -> dict[str, ModelSummary]:
    """A summary per model, where the images' folders name its classes (compared case-insensitively)."""
    return {model: _summary(model, [row for row in rows if row.result.model == model]) for model in models}


def _summary(model: str, rows: list[BatchRow]) -> ModelSummary:
    labelled = [row for row in rows if row.true_label is not None]
    if not labelled:
        return ModelSummary(model, reason="the images are not in class folders (a folder per class, named after "
                                          "the model's classes, gives an accuracy)")
    answered = [row for row in labelled if row.result.error is None and row.result.top_k]
    names = next((row.result.label_names for row in answered), None) or next(
        (row.result.label_names for row in labelled if row.result.label_names), [])
    index = {name.strip().casefold(): i for i, name in enumerate(names)}
    folders = sorted({row.true_label for row in labelled})
    unknown = [f for f in folders if f.strip().casefold() not in index]
    if unknown:
        return ModelSummary(model, classes=list(names), reason=(
            f"folder(s) {', '.join(repr(f) for f in unknown[:5])} are not among its classes "
            f"({', '.join(names[:10])}{', …' if len(names) > 10 else ''}); name each folder after a class"))
    failed = len(labelled) - len(answered)
    if not answered:
        first = next((row.result.error for row in labelled if row.result.error), "no answer")
        return ModelSummary(model, classes=list(names), failed=failed,
                            reason=f"it answered none of the images ({first.splitlines()[0]})")
    y_true = [index[row.true_label.strip().casefold()] for row in answered]
    y_pred = [index[row.result.top_k[0][0].strip().casefold()] for row in answered]
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix  # noqa: PLC0415  (only when needed)

    matrix = confusion_matrix(y_true, y_pred, labels=list(range(len(names))))
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": those have no recall, as intended
        warnings.simplefilter("ignore")
        balanced = float(balanced_accuracy_score(y_true, y_pred))
    correct = int(np.trace(matrix))
    return ModelSummary(model, n=len(answered), correct=correct, accuracy=correct / len(answered),
                        accuracy_ci95=wilson_interval(correct, len(answered)), balanced_accuracy=balanced,
                        balanced_accuracy_ci95=balanced_accuracy_interval(matrix), classes=list(names),
                        confusion_matrix=matrix.tolist(), flagged=sum(row.result.ood_flagged for row in answered),
                        failed=failed)


@dataclass
class BatchResult:
    """A batch classification: rows in file order (each file's models together), skipped files, summaries."""

    source: str                       # what was read, in words
    models: list[str]
    files: list[str]                  # the images classified, in order
    rows: list[BatchRow]
    skipped: list[tuple[str, str]]    # (file, why it was not classified)
    summaries: dict[str, ModelSummary]
    wall_s: float

    def records(self) -> list[dict[str, Any]]:
        """Every row as a JSON-ready dict, in the order classified."""
        return [row.record() for row in self.rows]

    def csv_text(self) -> str:
        """The rows as CSV (CSV_COLUMNS). A file or folder name that a spreadsheet would run as a formula (it starts
        with =, +, -, @) is written with a leading apostrophe."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for record in self.records():
            for key in ("file", "true_label"):
                if isinstance(record[key], str) and record[key].startswith(_FORMULA_STARTS):
                    record[key] = "'" + record[key]
            writer.writerow(record)
        return buffer.getvalue()

    def write_csv(self, path: str | os.PathLike) -> None:
        """Write the CSV atomically: a reader never sees half of it, and a failed write leaves `path` as it was."""
        with atomic_write(path, "w") as f:
            f.write(self.csv_text())

    def summary_lines(self) -> list[str]:
        """The summary as plain text: per model, the accuracy figures with their n and intervals, or why none."""
        lines = [f"{len(self.files)} image(s) from {self.source} x {len(self.models)} model(s) in {self.wall_s:.1f} s "
                 f"(loading the models included); {len(self.skipped)} file(s) skipped"]
        for model in self.models:
            s = self.summaries[model]
            if s.reason is not None:
                lines.append(f"{model}: no accuracy: {s.reason}")
                continue
            low, high = s.accuracy_ci95
            blow, bhigh = s.balanced_accuracy_ci95
            lines.append(f"{model}: accuracy {s.accuracy:.1%} ({s.correct}/{s.n}, 95% CI {low:.1%}-{high:.1%}); "
                         f"balanced accuracy {s.balanced_accuracy:.1%} (95% CI {blow:.1%}-{bhigh:.1%}); "
                         f"OOD-flagged {s.flagged} of {s.n}" + (f"; {s.failed} not answered" if s.failed else ""))
            present = [i for i, row in enumerate(s.confusion_matrix) if sum(row)]
            used = sorted(set(present) | {j for row in s.confusion_matrix for j, v in enumerate(row) if v})
            width = max([len(s.classes[j]) for j in used] + [len(str(max(map(max, s.confusion_matrix))))]) + 1
            lines.append("  confusion matrix (rows: folder, columns: predicted)")
            lines.append("  " + " " * width + "".join(f"{s.classes[j]:>{width}}" for j in used))
            lines += ["  " + f"{s.classes[i]:>{width}}" + "".join(f"{s.confusion_matrix[i][j]:>{width}}" for j in used)
                      for i in present]
        return lines
