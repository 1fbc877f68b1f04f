"""The comparison app's policy: how many models a comparison takes (2 to 6), and the summary of where the models
agree, written as Markdown for the page, with which models were right when the image's true label is known.

The models' answers themselves come from zoo.inference (one column per model, whatever the app does with them)::

    from zoo.catalog import discover_models
    from zoo.images import load_image
    from zoo import inference
    from ui import comparison

    entries = discover_models("weights")
    cache = inference.ModelCache(max_models=8)
    result = comparison.compare(load_image("scan.dcm"), entries[:3], cache)
    result.records()          # one JSON-ready dict per model
    result.summary.markdown   # which models agree on the top class
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zoo import inference
from zoo import ZooError
from zoo.catalog import ModelEntry
from zoo.images import LoadedImage
from zoo.inference import DEFAULT_TOP_K, ModelCache, ModelResult, ProgressCallback

__all__ = ["MIN_MODELS", "MAX_MODELS", "Agreement", "Comparison", "agreement_summary", "check_selection", "compare",
           "true_label_verdicts"]

MIN_MODELS, MAX_MODELS = 2, 6


@dataclass
class Agreement:
    """Which models agree on the top class, and which cannot be compared (another label set, an error)."""

    markdown: str
    unanimous: bool
    votes: dict[str, list[str]]        # top label -> models, among models sharing the common label set
    differing_label_sets: list[str]    # models whose classes differ from the common set
    failed: list[str]
    flagged: list[str] = field(default_factory=list)  # models whose OOD check flagged the image: left out
    true_label: str | None = None      # the image's known label (an example's), if any
    verdicts: dict[str, list[str]] = field(default_factory=dict)  # right / wrong / not_applicable -> models


def agreement_summary(results: Sequence[ModelResult], true_label: str | None = None) -> Agreement:
    """Summarise a comparison: agreement on the top class, disagreements, differing label sets, failures,
    and, when the image's `true_label` is known (an example's), which models were right.

    A model whose OOD check flagged the image has no meaningful answer: it is left out and counted.
    Sets ``label_set_differs`` on the results whose classes are not the most common label set.
    """
    flagged = [r.model for r in results if r.error is None and r.top_k and r.ood_flagged]
    answered = [r for r in results if r.error is None and r.top_k and not r.ood_flagged]
    failed = [r.model for r in results if r.error is not None]
    sets = Counter(tuple(r.label_names) for r in answered)
    common = max(sets, key=lambda s: (sets[s], -[tuple(r.label_names) for r in answered].index(s))) if sets else ()
    comparable = [r for r in answered if tuple(r.label_names) == common]
    differing = [r for r in answered if tuple(r.label_names) != common]
    for r in results:
        r.label_set_differs = r in differing
    votes: dict[str, list[str]] = {}
    for r in sorted(comparable, key=lambda r: -r.top_k[0][1]):
        votes.setdefault(r.top_label, []).append(r.model)
    ranked = sorted(votes.items(), key=lambda kv: -len(kv[1]))

    lines = []
    unanimous = len(comparable) >= 2 and len(votes) == 1
    if unanimous:
        label, names = ranked[0]
        mean = np.mean([r.top_k[0][1] for r in comparable])
        lines.append(f"**All {len(names)} {'remaining ' if flagged else ''}models agree: `{label}`** "
                     f"(mean probability {mean:.2f}).")
    elif len(comparable) >= 2:
        top_count = len(ranked[0][1])
        lead = (f"Most say `{ranked[0][0]}` ({top_count} of {len(comparable)})"
                if top_count > 1 and sum(len(v) == top_count for _, v in ranked) == 1 else "No majority")
        lines.append(f"**The models disagree.** {lead}.")
        lines += [f"- `{label}`: {', '.join(f'`{m}`' for m in names)}" for label, names in ranked]
    elif len(comparable) == 1:
        r = comparable[0]
        lines.append(f"Only `{r.model}` answered with this label set: `{r.top_label}` ({r.top_k[0][1]:.2f}).")
    elif flagged:
        lines.append("**No meaningful answer:** every model that answered flagged this image as unlike its "
                     "training images.")
    else:
        lines.append("**No model answered.**")
    if flagged:
        lines.append(f"- ⚠ **{len(flagged)} of {len(results)} models flagged this image** as unlike the images "
                     f"they were trained on and are left out: {', '.join(f'`{m}`' for m in flagged)}.")
    if differing:
        common_desc = _describe_labels(common)
        for r in differing:
            lines.append(f"- ⚠ **Different label set:** `{r.model}` chooses among {_describe_labels(r.label_names)}, "
                         f"not the {common_desc} of the others; its answer `{r.top_label}` is not counted above.")
    for r in results:
        if r.error is not None:
            lines.append(f"- ✖ `{r.model}` failed: {r.error.splitlines()[0]}")
    # every model that answered is judged, flagged ones too: "not applicable" is about its classes, and a
    # flagged model right or wrong on a labelled example is worth seeing beside its banner
    judged = [r for r in results if r.error is None and r.top_k]
    verdicts = true_label_verdicts(judged, true_label) if true_label else {}
    if verdicts:
        lines.insert(0, _verdict_line(true_label, verdicts))
    return Agreement(markdown="\n".join(lines), unanimous=unanimous, votes=dict(ranked),
                     differing_label_sets=[r.model for r in differing], failed=failed, flagged=flagged,
                     true_label=true_label, verdicts=verdicts)


def true_label_verdicts(results: Sequence[ModelResult], true_label: str) -> dict[str, list[str]]:
    """right / wrong / not_applicable -> the models that answered: right when the top class is `true_label`
    (compared case-insensitively: "PNEUMONIA" is MedMNIST's "pneumonia"), not applicable when `true_label` is
    none of the model's classes."""
    wanted = true_label.strip().casefold()
    verdicts: dict[str, list[str]] = {"right": [], "wrong": [], "not_applicable": []}
    for r in results:
        if wanted not in {name.strip().casefold() for name in r.label_names}:
            verdicts["not_applicable"].append(r.model)
        else:
            verdicts["right" if (r.top_label or "").strip().casefold() == wanted else "wrong"].append(r.model)
    return verdicts


def _verdict_line(true_label: str, verdicts: dict[str, list[str]]) -> str:
    def names(models: list[str]) -> str:
        return ", ".join(f"`{m}`" for m in models) or "none"

    line = f"**True label: `{true_label}`** — right: {names(verdicts['right'])}; wrong: {names(verdicts['wrong'])}"
    if verdicts["not_applicable"]:
        line += f"; not applicable (`{true_label}` is not among their classes): {names(verdicts['not_applicable'])}"
    return line + "."


def _describe_labels(labels: Sequence[str]) -> str:
    shown = ", ".join(labels[:6]) + (", …" if len(labels) > 6 else "")
    return f"{len(labels)} classes ({shown})"


@dataclass
class Comparison:
    """The answer of every selected model for one image."""

    results: list[ModelResult]
    summary: Agreement
    image_info: dict[str, Any]

    def records(self) -> list[dict[str, Any]]:
        return [r.record() for r in self.results]


def check_selection(model_ids: Sequence[str]) -> list[str]:
    """The selected ids, de-duplicated in order; fewer than MIN_MODELS or more than MAX_MODELS raises."""
    if isinstance(model_ids, str) or not isinstance(model_ids, Sequence):
        raise ZooError(f"models must be a list of model ids, got {type(model_ids).__name__}: {model_ids!r:.80}.")
    ids = list(dict.fromkeys(str(m) for m in model_ids))
    if not MIN_MODELS <= len(ids) <= MAX_MODELS:
        raise ZooError(f"Select {MIN_MODELS} to {MAX_MODELS} models to compare; {len(ids)} selected"
                       f"{' (' + ', '.join(ids) + ')' if ids else ''}.")
    return ids


def compare(image: LoadedImage, entries: Sequence[ModelEntry], cache: ModelCache,
            metadata: Mapping[str, Any] | None = None, top_k: int = DEFAULT_TOP_K, cam: bool = True,
            on_load: Callable[[ModelEntry], None] | None = None,
            progress: ProgressCallback | None = None, true_label: str | None = None) -> Comparison:
    """Run every entry on one loaded image (zoo.inference.run_models: a model that fails reports its error while
    the others answer) and summarise where they agree. `true_label`, known for the app's examples, makes the
    summary say which models were right. Fewer than MIN_MODELS or more than MAX_MODELS raises ZooError."""
    check_selection([e.id for e in entries])
    results = inference.run_models(image.image, entries, cache, metadata, top_k, cam, on_load, progress)
    return Comparison(results=results, summary=agreement_summary(results, true_label), image_info=dict(image.info))
