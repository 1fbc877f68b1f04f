"""The Batch tab: many images, or a .zip of them, through the chosen models (zoo.batch): the table of every (file,
model), where the models agree on each image (ui.comparison's agreement), the summary when the zip's folders name
the models' classes, and the CSV to download. One batch job runs at a time per app process; others wait in line
with their place shown. The public /batch API (gradio_client) is the same event.

The callbacks are plain functions of the ComparisonApp and plain values, so the tests call them without a browser.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder

from zoo import ZooError
from zoo.batch import BatchLimits, classify_batch
from zoo.batch_report import EMPTY_SET, SET_SEPARATOR, BatchResult, BatchRow, ModelSummary
from zoo.images import IMAGE_SUFFIXES
from zoo.upload_limits import MAX_ARCHIVE_FILES

from . import comparison
from .about import FILE_TYPES_HELP
from .state import ComparisonApp
from .train_tab import session_of

__all__ = ["AGREEMENT_HEADERS", "BATCH", "MAX_BATCH_MODELS", "TABLE_HEADERS", "BatchOutcome", "agreement_rows",
           "build_batch_tab", "offered_models", "run_batch", "summary_markdown", "table_rows"]

BATCH = dict(concurrency_id="batch", concurrency_limit=1)  # one batch job per app process; others queue
MAX_BATCH_MODELS = comparison.MAX_MODELS
TABLE_HEADERS = ["File", "True label", "Model", "Top-1", "Probability", "Calibrated", "Prediction set", "OOD score",
                 "OOD flagged", "Latency (ms)", "Error"]
AGREEMENT_HEADERS = ["File", "True label", "Where the models agree"]
MAX_LISTED = 25  # skipped files listed in the summary; the CSV and the table keep every row
INTRO = (f"Classify many images at once: drop image files ({FILE_TYPES_HELP}) or one .zip of them (at most "
         f"{MAX_ARCHIVE_FILES} images). In a .zip, put each image in a folder named after its class (`normal/1.png`, "
         "`pneumonia/2.png`) to get each model's accuracy, balanced accuracy (with 95% intervals) and confusion "
         "matrix. Files that cannot be read are listed with the reason; the others are classified. One batch runs "
         "at a time on this server; others wait in line with their place shown.")


@dataclass
class BatchOutcome:
    """What the tab shows of one batch: the result (server paths shortened) and the CSV written for download."""

    result: BatchResult
    csv_path: Path


def run_batch(app: ComparisonApp, files: Sequence[str] | str | None, model_ids: Sequence[str] | str | None,
              session: str | None = None, progress: Callable[..., Any] | None = None) -> BatchOutcome:
    """Classify the uploaded files (images and .zip archives) with 1 to MAX_BATCH_MODELS models; a problem the user
    can fix raises gr.Error saying what to do."""
    files = [files] if isinstance(files, str) else [f for f in (files or []) if f]
    if not files:
        raise gr.Error(f"Upload images ({FILE_TYPES_HELP}) or a .zip of them first.", print_exception=False)
    if isinstance(model_ids, str):
        model_ids = [m.strip() for m in model_ids.split(",") if m.strip()]
    ids = list(dict.fromkeys(str(m) for m in model_ids or []))
    if not 1 <= len(ids) <= MAX_BATCH_MODELS:
        raise gr.Error(f"Select 1 to {MAX_BATCH_MODELS} models; {len(ids)} selected.", title="Select models",
                       print_exception=False)

    def report(done: int, total: int, what: str) -> None:
        if progress is not None:
            progress((done, total), desc=f"Classifying {what}", unit="images")

    try:
        result = classify_batch(files, app.selected_entries(ids, session), app.cache, progress=report,
                                limits=BatchLimits(max_pixels=app.settings.max_pixels), progress_bar=False)
    except ZooError as e:
        raise gr.Error(app.public(str(e)), title="These files cannot be classified", print_exception=False) from None
    _make_public(app, result)
    folder = Path(get_upload_folder()) / "batch" / uuid.uuid4().hex  # a folder the server serves files from
    folder.mkdir(parents=True)
    csv_path = folder / "batch-classification.csv"
    result.write_csv(csv_path)
    return BatchOutcome(result, csv_path)


def _make_public(app: ComparisonApp, result: BatchResult) -> None:
    """Errors and reasons as remote users may read them: no server paths."""
    for row in result.rows:
        row.result.error = app.public(row.result.error)
    result.skipped = [(name, app.public(why)) for name, why in result.skipped]
    for summary in result.summaries.values():
        summary.reason = app.public(summary.reason)


def table_rows(result: BatchResult) -> list[list[Any]]:
    """One row per (file, model), as TABLE_HEADERS."""
    rows = []
    for record in result.records():
        rows.append([record["file"], record["true_label"] or "", record["model"], record["top1"] or "",
                     _number(record["probability"]), _number(record["calibrated_probability"]),
                     _prediction_set(record["prediction_set"]), _number(record["ood_score"]),
                     {True: "yes", False: "no", None: ""}[record["ood_flagged"]],
                     "" if record["latency_ms"] is None else f"{record['latency_ms']:.1f}", record["error"] or ""])
    return rows


def _prediction_set(cell: str | None) -> str:
    if cell is None:
        return ""
    return "(empty: unsure)" if cell == EMPTY_SET else cell.replace(SET_SEPARATOR, ", ")


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def agreement_rows(result: BatchResult) -> list[list[Any]]:
    """One row per image: where its models agree (ui.comparison.agreement_summary: OOD-flagged models left out,
    models of another label set not counted), and which were right when its folder names its class."""
    by_file: dict[str, list[BatchRow]] = {}
    for row in result.rows:
        by_file.setdefault(row.file, []).append(row)
    return [[file, rows[0].true_label or "", _agreement_text(rows)] for file, rows in by_file.items()]


def _agreement_text(rows: list[BatchRow]) -> str:
    agreement = comparison.agreement_summary([row.result for row in rows], rows[0].true_label)
    votes = agreement.votes
    if agreement.unanimous:
        text = f"all {len(next(iter(votes.values())))} agree: {next(iter(votes))}"
    elif len(votes) > 1:
        text = "disagree: " + ", ".join(f"{label} ({len(models)})" for label, models in votes.items())
    elif votes:
        text = f"one model answered: {next(iter(votes))}"
    else:
        text = "no model answered"
    extras = [f"{len(agreement.flagged)} flagged as unlike their training images" if agreement.flagged else "",
              f"{len(agreement.failed)} failed" if agreement.failed else "",
              f"{len(agreement.differing_label_sets)} with other classes" if agreement.differing_label_sets else ""]
    if agreement.verdicts:
        right, judged = len(agreement.verdicts["right"]), len(agreement.verdicts["right"] + agreement.verdicts["wrong"])
        extras.append(f"right: {right} of {judged}")
    return "; ".join([text, *[e for e in extras if e]])


def summary_markdown(result: BatchResult) -> str:
    """What was read and classified, each model's figures on the labelled images (with n and 95% intervals) or why
    there are none, and the skipped files with their reasons."""
    lines = [f"**{len(result.files)} image(s)** from {_md(result.source)} × **{len(result.models)} model(s)** in "
             f"{result.wall_s:.1f} s (loading the models included); {len(result.skipped)} file(s) skipped."]
    for model in result.models:
        lines += ["", *_model_markdown(result.summaries[model], result.source)]
    if result.skipped:
        lines += ["", f"**Skipped ({len(result.skipped)})**, not classified:"]
        lines += [f"- `{_md(name)}`: {_md(why)}" for name, why in result.skipped[:MAX_LISTED]]
        lines += [f"- … and {len(result.skipped) - MAX_LISTED} more"] if len(result.skipped) > MAX_LISTED else []
    return "\n".join(lines)


def _model_markdown(s: ModelSummary, source: str) -> list[str]:
    if s.reason is not None:
        return [f"**{_md(s.model)}**: no accuracy: {_md(s.reason)}."]
    (low, high), (blow, bhigh) = s.accuracy_ci95, s.balanced_accuracy_ci95
    lines = [f"**{_md(s.model)}** on the {s.n} images of {_md(source)} whose folder names their class: accuracy "
             f"**{s.accuracy:.1%}** ({s.correct}/{s.n}; 95% Wilson interval {low:.1%}–{high:.1%}), balanced accuracy "
             f"**{s.balanced_accuracy:.1%}** (95% interval {blow:.1%}–{bhigh:.1%}, from per-class Jeffreys "
             f"posteriors); {s.flagged} of {s.n} flagged as unlike its training images"
             + (f"; {s.failed} not answered" if s.failed else "") + "."]
    present = [i for i, row in enumerate(s.confusion_matrix) if sum(row)]
    used = sorted(set(present) | {j for row in s.confusion_matrix for j, v in enumerate(row) if v})
    lines += ["", "| folder ↓ / predicted → | " + " | ".join(_md(s.classes[j]) for j in used) + " |",
              "|---|" + "---:|" * len(used)]
    lines += [f"| {_md(s.classes[i])} | " + " | ".join(str(s.confusion_matrix[i][j]) for j in used) + " |"
              for i in present]
    return lines


def _md(text: Any) -> str:
    """Text safe inside Markdown (a table cell or a list item): special characters escaped, one line."""
    return "".join("\\" + c if c in "\\`*_[]<>|#" else c for c in " ".join(str(text).split()))


def offered_models(app: ComparisonApp, ids: Sequence[str] | None, session: str | None, rescan: bool = False
                   ) -> gr.CheckboxGroup:
    """The tab's model list as it is now: the app's models (the weights folder read again when `rescan`, as the
    Compare tab's "Rescan models" does) and those this browser session trained in the Train tab; the ticked models
    that are still offered stay ticked."""
    if rescan:
        app.refresh()
    return app.model_picker(ids, session)


def build_batch_tab(app: ComparisonApp, tab: gr.Tab) -> None:
    """Lay out the Batch tab (`tab`, inside the current Blocks) and wire it: its click is the public /batch API;
    opening the tab brings its model list up to date (a rescan on the Compare tab, a model trained in this session)."""
    gr.Markdown(INTRO, elem_id="batch-intro")
    with gr.Row():
        files = gr.File(file_count="multiple", type="filepath", file_types=[*IMAGE_SUFFIXES, ".zip"],
                        label="Images, or a .zip of class folders", elem_id="batch-files", scale=1)
        with gr.Column(scale=1):
            models = gr.CheckboxGroup(choices=app.choices(), value=app.default_selection(2),
                                      label=f"Models (1 to {MAX_BATCH_MODELS})", elem_id="batch-models")
            with gr.Row():
                run = gr.Button("Classify all", variant="primary", elem_id="batch-button")
                rescan = gr.Button("Rescan models", variant="secondary", size="sm", elem_id="batch-rescan")
    summary = gr.Markdown(elem_id="batch-summary")
    agreement = gr.Dataframe(headers=AGREEMENT_HEADERS, interactive=False, wrap=True, label="Agreement per image",
                             max_height=400, elem_id="batch-agreement")
    table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, wrap=True, label="Every image × every model",
                         max_height=600, pinned_columns=1, elem_id="batch-table")
    csv_file = gr.File(label="The table as CSV", interactive=False, elem_id="batch-csv")

    def on_batch(files: list[str] | None, models: list[str] | None, request: gr.Request = None,
                 progress: gr.Progress = gr.Progress()) -> tuple[str, list[list[Any]], list[list[Any]], str]:
        """Classify image files and/or .zip archives with 1-6 models (ids); returns the summary (Markdown), the
        agreement per image, one row per (file, model) and the CSV file of those rows."""
        outcome = run_batch(app, files, models, session_of(request), progress)
        return (summary_markdown(outcome.result), agreement_rows(outcome.result), table_rows(outcome.result),
                str(outcome.csv_path))

    run.click(on_batch, inputs=[files, models], outputs=[summary, agreement, table, csv_file], api_name="batch",
              **BATCH)

    def on_open(ids: list[str] | None, request: gr.Request) -> gr.CheckboxGroup:
        return offered_models(app, ids, session_of(request))

    def on_rescan(ids: list[str] | None, request: gr.Request) -> gr.CheckboxGroup:
        return offered_models(app, ids, session_of(request), rescan=True)

    tab.select(on_open, inputs=models, outputs=models, api_visibility="private", show_progress="hidden")
    rescan.click(on_rescan, inputs=models, outputs=models, api_visibility="private")
