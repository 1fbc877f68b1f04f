"""The Teaching tab's content: the transfer modes explained with the selected models' own numbers, a
frozen-vs-trainable chart, the numbers table, a lesson on trusting an answer (calibration, prediction sets,
the out-of-distribution check on the app's examples), each model's plots and the study reports."""
from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from train.lesson import wilson_interval
from zoo import MODE_ORDER, ZooError, inference
from zoo.catalog import ModelEntry
from zoo.images import load_image
from zoo.run_layout import CONFIG_NAME, OOD_NAME, WEIGHTS_NAME

from .about import MODE_TEXT, TRUST_TEXT
from .formatting import METRIC_COLUMNS, describe_classes, fmt_int, ood_cell, share
from .glossary import explain_terms

__all__ = [
    "PLOT_CAPTIONS", "PLOT_HEIGHT", "PLOT_ROWS", "TEACHING_HEADERS", "ExampleOODChecks", "TeachingSection",
    "column_widths", "params_figure", "run_facts", "contrasts", "study_reports", "teaching_markdown",
    "teaching_sections", "teaching_table", "test_accuracy", "trust_facts", "trust_lesson", "with_mode_comparison",
]

PLOT_CAPTIONS = {"curves": "training curves", "confusion_matrix": "confusion matrix (test)", "roc": "ROC curves (test)",
                 "reliability": "reliability diagram (test): raw softmax vs temperature-scaled"}
# how a model's plots are laid out: rows of (kind, relative width). train.plots draws the curves 14 x 4 in
# and the confusion matrices about twice as wide as the ROC plot, so each gets the width it needs to read;
# train.trust's reliability diagram (10 x 4.6 in) gets a row of its own.
PLOT_ROWS = ((("curves", 1),), (("confusion_matrix", 2), ("roc", 1)), (("reliability", 1),))
PLOT_HEIGHT = 400  # px; plots are shown whole (scaled to fit), never cropped
TEACHING_HEADERS = ["model", "mode", "parameters", "trainable", "frozen", "trainable %", "epochs", "train time (s)",
                    *[f"test {t}" for _, t in METRIC_COLUMNS]]
TABLE_CHAR_PX, TABLE_PADDING_PX = 9, 32  # the dataframe's bold header font, measured in Chromium


def _train_seconds(entry: ModelEntry) -> float | None:
    return (entry.run_metrics.get("timing") or {}).get("train_s")


def run_facts(entry: ModelEntry) -> str:
    """One sentence: what the model trained, for how long, and what it reached."""
    total, trainable = entry.params
    metrics = entry.test_metrics
    epochs = entry.run_metrics.get("epochs_run")
    seconds = _train_seconds(entry)
    effort = ""
    if epochs:
        effort = f" for {epochs} epoch{'s' if epochs != 1 else ''}" + (f" ({seconds:.0f} s)" if seconds else "")
    reached = (f" and reached test balanced accuracy **{metrics['balanced_accuracy']:.3f}**"
               if "balanced_accuracy" in metrics else "")
    extra = ", ".join(f"{title} {metrics[k]:.3f}" for k, title in METRIC_COLUMNS[1:] if k in metrics)
    return (f"`{entry.id}` trained **{fmt_int(trainable)} of {fmt_int(total)} parameters "
            f"({share(trainable, total)})**{effort}{reached}" + (f" ({extra})" if extra else "")
            + (f" on {entry.dataset}." if entry.dataset else "."))


@dataclass(frozen=True)
class TestAccuracy:
    """A run's test accuracy from its confusion matrix: correct of n, with its 95% Wilson interval."""

    correct: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.correct / self.n

    def text(self) -> str:
        return f"{self.value:.3f} (95% interval {self.low:.3f}-{self.high:.3f}, n = {self.n})"


def test_accuracy(entry: ModelEntry) -> TestAccuracy | None:
    """The test accuracy in the run's metrics.json, with its interval; None when the run saved no test matrix."""
    matrix = (entry.run_metrics.get("test") or {}).get("confusion_matrix")
    try:
        matrix = np.asarray(matrix, dtype=np.int64)
    except (TypeError, ValueError):
        return None
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.sum() <= 0 or (matrix < 0).any():
        return None
    correct, n = int(np.trace(matrix)), int(matrix.sum())
    return TestAccuracy(correct, n, *wilson_interval(correct, n))


def _why_not_better(better: ModelEntry, worse: ModelEntry, what: str) -> str:
    """The sentence a surprising pair of figures needs: whether the gap is within noise, and what usually causes it."""
    a, b = test_accuracy(better), test_accuracy(worse)
    if a is None or b is None:
        return ""
    overlap = a.low <= b.high and b.low <= a.high
    noise = (f"The two test accuracies, {b.text()} for `{worse.id}` and {a.text()} for `{better.id}`, have "
             + ("overlapping intervals: on this many test images the gap may be chance alone. "
                if overlap else "intervals that do not overlap: the gap is larger than chance on this test split. "))
    return noise + what


FT_BELOW_FE = ("Fine-tuning trains every weight, starting from a random head whose first large gradients also move "
               "the pretrained backbone; with few images, few epochs or images unlike ImageNet's (tiny, grey, "
               "upscaled), it can undo what pretraining gave and overfit, while feature extraction keeps those "
               "features fixed. More epochs at a lower learning rate, or partial fine-tuning, usually close the gap.")
SCRATCH_AHEAD = ("Training from scratch won here: on a small, simple task (8×8 digits, or a few clearly different "
                 "classes) a small network learns everything it needs, and ImageNet features of upscaled tiny images "
                 "help little. Transfer learning pays when the task is hard and labelled images are few, as in "
                 "most medical data sets.")


def contrasts(entries: list[ModelEntry]) -> list[str]:
    """Sentences comparing the selected models' numbers across modes."""
    lines = []
    by_mode: dict[str, list[ModelEntry]] = {}
    for e in entries:
        by_mode.setdefault(e.mode, []).append(e)
    for frozen in by_mode.get("feature-extraction", []):
        for tuned in by_mode.get("fine-tune", []):
            if frozen.architecture != tuned.architecture or frozen.dataset != tuned.dataset:
                continue
            _, frozen_trained = frozen.params
            _, tuned_trained = tuned.params
            ratio = tuned_trained / max(frozen_trained or 1, 1)
            line = (f"Fine-tuning `{tuned.architecture}` trained {ratio:,.0f}× more parameters "
                    f"than feature extraction ({fmt_int(tuned_trained)} vs {fmt_int(frozen_trained)})")
            frozen_ba = frozen.test_metrics.get("balanced_accuracy")
            tuned_ba = tuned.test_metrics.get("balanced_accuracy")
            if frozen_ba is not None and tuned_ba is not None:
                line += (f" and moved test balanced accuracy from {frozen_ba:.3f} to {tuned_ba:.3f} "
                         f"({tuned_ba - frozen_ba:+.3f})")
            frozen_s, tuned_s = _train_seconds(frozen), _train_seconds(tuned)
            if frozen_s and tuned_s:
                line += f"; its training took {tuned_s:.0f} s against {frozen_s:.0f} s"
            lines.append(line + ".")
            if frozen_ba is not None and tuned_ba is not None and tuned_ba < frozen_ba:
                lines.append(_why_not_better(frozen, tuned, FT_BELOW_FE))
    scratch = [e for e in by_mode.get("scratch", []) if "balanced_accuracy" in e.test_metrics]
    transfer = [e for m in MODE_ORDER[1:] for e in by_mode.get(m, []) if "balanced_accuracy" in e.test_metrics]
    if scratch and transfer:
        best_s = max(scratch, key=lambda e: e.test_metrics["balanced_accuracy"])
        best_t = max(transfer, key=lambda e: e.test_metrics["balanced_accuracy"])
        lines.append(f"The best model trained from scratch, `{best_s.id}` ({fmt_int(best_s.params[0])} parameters), "
                     f"reached {best_s.test_metrics['balanced_accuracy']:.3f}; the best transfer model, `{best_t.id}`, "
                     f"reached {best_t.test_metrics['balanced_accuracy']:.3f}.")
        if best_s.test_metrics["balanced_accuracy"] >= best_t.test_metrics["balanced_accuracy"]:
            lines.append(_why_not_better(best_s, best_t, SCRATCH_AHEAD))
    return [line for line in lines if line]


def _modes_compared(entries: list[ModelEntry]) -> bool:
    """Whether two or more transfer modes of one architecture on one data set are among the entries."""
    groups: dict[tuple, set] = {}
    for e in entries:
        if e.available and e.mode:
            groups.setdefault((e.architecture, e.dataset), set()).add(e.mode)
    return any(len(modes) >= 2 for modes in groups.values())


def with_mode_comparison(chosen: list[ModelEntry], offered: list[ModelEntry],
                         slots: int) -> tuple[list[ModelEntry], str]:
    """The entries the lesson shows: the selection, plus (when the selection shows one mode only) the offered
    architecture and data set with the most transfer modes, medical runs first (such as the models trained in the
    Train tab), so the modes are always seen side by side; and a sentence saying what was added and why."""
    if _modes_compared(chosen) or len(chosen) >= slots:
        return chosen, ""
    taken = {e.id for e in chosen}
    groups: dict[tuple, list[ModelEntry]] = {}
    for e in offered:
        if e.available and e.mode and e.id not in taken:
            groups.setdefault((e.architecture, e.dataset), []).append(e)
    candidates = [g for g in groups.values() if len({e.mode for e in g}) >= 2]
    if not candidates:
        return chosen, ""

    def rank(group: list[ModelEntry]) -> tuple:
        digits = (group[0].dataset or "").lower().startswith("digits")
        return (digits, -len({e.mode for e in group}), group[0].id)

    group = min(candidates, key=rank)
    order = {m: i for i, m in enumerate(MODE_ORDER)}
    by_mode = {}
    for e in sorted(group, key=lambda e: (order.get(e.mode, len(order)), e.id)):
        by_mode.setdefault(e.mode, e)  # one run per mode
    added = list(by_mode.values())[:slots - len(chosen)]
    if len(added) < 2:
        return chosen, ""
    first = added[0]
    stand_in = (" Digits stand in for medical images here: they train in seconds on this machine. To see the modes "
                "on chest X-rays or brain MRIs, run the lesson on the **Train** tab; its models then appear here."
                if (first.dataset or "").lower().startswith("digits") else "")
    note = (f"**Modes side by side.** Your selection shows one transfer mode only, so the lesson adds the zoo's runs "
            f"of `{first.architecture}` on {first.dataset}, one per mode ({', '.join(e.mode for e in added)})."
            + stand_in)
    return chosen + added, explain_terms(note)


def teaching_markdown(entries: list[ModelEntry]) -> str:
    """The transfer modes explained with these models' own numbers."""
    entries = [e for e in entries if e.available]
    if not entries:
        return "Select models on the **Compare** tab to see how they were trained."
    parts = []
    for mode in MODE_ORDER + tuple(sorted({e.mode for e in entries if e.mode not in MODE_ORDER})):
        members = [e for e in entries if e.mode == mode]
        if members:
            parts.append(MODE_TEXT.get(mode, f"**{mode}**") + "\n" + "\n".join(f"- {run_facts(e)}" for e in members))
    said = contrasts(entries)
    if said:
        parts.append("**What these numbers say.** " + " ".join(said))
    return explain_terms("\n\n".join(parts))


def params_figure(entries: list[ModelEntry]):
    """Frozen vs trainable parameters per model, as a horizontal bar chart (log scale)."""
    from matplotlib.figure import Figure  # noqa: PLC0415  (matplotlib stays out of the app's cold start)

    rows = [(e.id, *e.params) for e in entries if e.available and e.params[0]]
    fig = Figure(figsize=(8, 0.8 + 0.55 * max(len(rows), 1)), layout="constrained")
    ax = fig.add_subplot()
    if not rows:
        ax.text(0.5, 0.5, "no models selected", ha="center", va="center")
        ax.set_axis_off()
        return fig
    names = [r[0] for r in rows]
    trainable = np.array([r[2] or 0 for r in rows], dtype=float)
    frozen = np.array([r[1] - (r[2] or 0) for r in rows], dtype=float)
    y = np.arange(len(rows))
    ax.barh(y - 0.2, trainable, height=0.4, color="#d62728", label="trainable")
    ax.barh(y + 0.2, frozen, height=0.4, color="#7f7f7f", label="frozen")
    for i, (t, f) in enumerate(zip(trainable, frozen)):
        ax.text(max(t, 1), i - 0.2, f" {int(t):,} ({share(int(t), int(t + f))})", va="center", fontsize=8)
        if f:
            ax.text(f, i + 0.2, f" {int(f):,}", va="center", fontsize=8)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(right=max(trainable.max(), frozen.max()) * 20)  # room for the labels
    ax.set_xlabel("parameters (log scale)")
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    ax.set_title("Frozen vs trainable parameters")
    return fig


def teaching_table(entries: list[ModelEntry]) -> list[list[Any]]:
    """One row of TEACHING_HEADERS per available model."""
    rows = []
    for e in entries:
        if not e.available:
            continue
        total, trainable = e.params
        seconds = _train_seconds(e)
        rows.append([e.id, e.mode, total, trainable, (total or 0) - (trainable or 0), share(trainable, total),
                     e.run_metrics.get("epochs_run"), None if seconds is None else round(seconds, 1),
                     *[None if e.test_metrics.get(k) is None else round(e.test_metrics[k], 4)
                       for k, _ in METRIC_COLUMNS]])
    return rows


def column_widths(headers: list[str], rows: list[list[Any]]) -> list[str]:
    """CSS widths that fit each column's header and cells on one line (a table wider than the page scrolls
    sideways, its first column pinned, instead of cutting headers and numbers short)."""
    return [f"{max(len(str(v)) for v in [header] + [row[i] for row in rows]) * TABLE_CHAR_PX + TABLE_PADDING_PX}px"
            for i, header in enumerate(headers)]


@dataclass
class TeachingSection:
    """One model's row on the Teaching tab: a title and its training plots with their captions."""

    model: str
    title: str
    figures: dict[str, tuple[Image.Image, str]] = field(default_factory=dict)  # kind -> (plot, caption)


def teaching_sections(entries: list[ModelEntry]) -> list[TeachingSection]:
    """Each available model's title line and the plots of its run folder, read as images (the run folder
    itself is never served), in PLOT_CAPTIONS order."""
    sections = []
    for e in entries:
        if not e.available:
            continue
        metric = e.test_metrics.get("balanced_accuracy")
        facts = [e.mode or "mode unknown", f"{e.dataset or 'dataset unknown'} ({describe_classes(e.label_names)})"]
        if metric is not None:
            facts.append(f"test balanced accuracy {metric:.3f}")
        section = TeachingSection(model=e.id, title=f"#### {e.id}\n{' · '.join(facts)}")
        plots = e.plots
        for kind, caption in PLOT_CAPTIONS.items():
            if kind not in plots:
                continue
            try:
                with Image.open(plots[kind]) as im:
                    section.figures[kind] = (im.convert("RGB"), f"{e.id}: {caption}")
            except OSError:
                continue
        if not section.figures:
            section.title += "\n\n_No training plots in its run folder._"
        sections.append(section)
    return sections


def trust_facts(entry: ModelEntry) -> tuple[str, str]:
    """(calibration and prediction sets, OOD check) of one model in a sentence each, from its metrics.json."""
    metrics = entry.run_metrics
    calibration, conformal, ood = (metrics.get(k) or {} for k in ("calibration", "conformal", "ood"))
    if "temperature" in calibration:
        before, after = calibration["before"], calibration["after"]
        calibrated = (f"`{entry.id}`: T = **{calibration['temperature']:.3f}** (fitted on {calibration['n_fit']} "
                      f"validation images); test ECE **{before['ece']:.3f} → {after['ece']:.3f}**, NLL "
                      f"{before['nll']:.3f} → {after['nll']:.3f} ({calibration['n_test']} test images of "
                      f"{calibration['dataset']}, {calibration['ece_bins']} bins)")
        if "test_coverage" in conformal:
            interval = conformal.get("test_coverage_ci95")  # runs trained before it was recorded have none
            spread = f" (95% interval {interval[0]:.1%}–{interval[1]:.1%})" if interval else ""
            calibrated += (f"; its {conformal['target_coverage']:.0%} sets held the true class for "
                           f"**{conformal['test_coverage']:.1%}**{spread} of the test images, "
                           f"{conformal['test_mean_set_size']:.2f} classes on average")
    elif "skipped" in calibration:
        calibrated = f"`{entry.id}`: {calibration['skipped']}"
    else:
        calibrated = f"`{entry.id}`: no calibration recorded (trained before the zoo fitted one): raw probabilities"
    if "threshold" in ood:
        checked = f"`{entry.id}`: threshold **{ood['threshold']:.3f}** ({ood['threshold_rule']}, {ood['bank_size']} images in its bank)"
        if "test_pass_rate" in ood:
            checked += f"; it passed **{ood['test_pass_rate']:.1%}** of its {ood['n_test']} test images"
        if ood.get("note"):
            checked += f". _{ood['note']}_"
    elif "skipped" in ood:
        checked = f"`{entry.id}`: no OOD check: {ood['skipped']}"
    else:
        checked = f"`{entry.id}`: no OOD check for this model (no statistics in its run folder)"
    return calibrated, checked


def trust_lesson(entries: list[ModelEntry]) -> str:
    """Calibration, prediction sets and the OOD check, explained with these models' own numbers."""
    facts = [trust_facts(e) for e in entries if e.available]
    if not facts:
        return ""
    return explain_terms("\n".join([TRUST_TEXT["intro"], "", TRUST_TEXT["calibration"],
                                    *[f"- {c}" for c, _ in facts], "", TRUST_TEXT["ood"], *[f"- {o}" for _, o in facts]]))


def _folder_stamp(entry: ModelEntry) -> tuple:
    """Changes when the files behind a model's answers change (a re-trained or re-imported run)."""
    if entry.run_dir is None:
        return (entry.revision,)
    stamp = []
    for name in (CONFIG_NAME, WEIGHTS_NAME, OOD_NAME):
        try:
            stat = (entry.run_dir / name).stat()
            stamp.append((name, stat.st_mtime_ns, stat.st_size))
        except OSError:
            stamp.append((name, None))
    return tuple(stamp)


class ExampleOODChecks:
    """What each model's OOD check says about each of the app's example images: computed the first time a
    (model, example) pair is asked for, then remembered until the model's files change."""

    def __init__(self) -> None:
        self._done: dict[tuple, inference.ModelResult] = {}
        self._lock = threading.Lock()

    def results(self, entries: list[ModelEntry], examples: Sequence[Sequence[Any]],
                cache: inference.ModelCache) -> list[tuple[ModelEntry, list[inference.ModelResult | None]]]:
        """Per available model, one result (None: the example cannot be read) per example (path, label, ...)."""
        table, images = [], {}
        with self._lock:
            for entry in (e for e in entries if e.available):
                row = []
                for example in examples:
                    path = str(example[0])
                    key = (entry.id, entry.location, _folder_stamp(entry), path)
                    if key not in self._done:
                        if path not in images:
                            try:
                                images[path] = load_image(path).image
                            except ZooError:
                                images[path] = None
                        if images[path] is None:
                            row.append(None)
                            continue
                        self._done[key] = inference.run_model(entry, images[path], cache, top_k=1, cam=False)
                    row.append(self._done[key])
                table.append((entry, row))
        return table

    def markdown(self, entries: list[ModelEntry], examples: Sequence[Sequence[Any]],
                 cache: inference.ModelCache) -> str:
        """A model x example table of the OOD check (flagged or passed, score and threshold) and what it means."""
        table = self.results(entries, examples, cache)
        if not table or not examples:
            return ""
        names = [Path(str(example[0])).name for example in examples]
        lines = [TRUST_TEXT["examples"], "", "| model | " + " | ".join(f"`{n}`" for n in names) + " |",
                 "|---" * (len(names) + 1) + "|"]
        said = []
        for entry, row in table:
            cells = []
            for result in row:
                if result is None:
                    cells.append("unreadable")
                elif result.error is not None:
                    cells.append("✖ error")
                else:
                    cells.append(f"{ood_cell(result.ood)}, said `{result.top_label}`")
            lines.append(f"| `{entry.id}` | " + " | ".join(cells) + " |")
            checked = [(n, r) for n, r in zip(names, row) if r is not None and r.error is None and r.ood is not None]
            if checked:
                flagged = [n for n, r in checked if r.ood_flagged]
                said.append(f"`{entry.id}` flagged **{len(flagged)} of {len(checked)}** examples"
                            + (f" ({', '.join(flagged)})" if flagged else ""))
            elif any(r is not None and r.error is None for r in row):
                said.append(f"`{entry.id}` has no OOD check: it answers every image, whatever it is")
        return "\n".join(lines + ["", "; ".join(said) + "."] if said else lines)


def study_reports(weights: Path) -> list[tuple[str, str]]:
    """(title, markdown) of each study report under <weights>/studies/ (written by python -m train.study).

    Image links are dropped: the report folders are not served; the tables and verdicts are the content.
    """
    reports = []
    for path in sorted(weights.glob("studies/*/report.md")):
        text = path.read_text(encoding="utf-8", errors="replace")
        text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("!["))
        reports.append((path.parent.name, text))
    return reports
