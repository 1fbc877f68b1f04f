"""A model's facts, as "Model Cards for Model Reporting" (Mitchell et al., 2019) and clinical-AI reporting guidelines
ask of a model's page: intended use, training data and its licence, evaluation (with n, interval and who evaluated),
what it was never tested on, known failure modes.

They live in config.json's zoo block as ``"facts"`` (written by ``python -m train`` and the imports through
``zoo.save_pretrained(..., extra_config={"facts": ...})``)::

    {"intended_use": str, "training_data": str, "training_data_license": str | null,
     "evaluation": [{"data": str, "n": int, "metric": str, "value": float, "ci95": [lo, hi] | null,
                     "by": "ours" | "the model's author"}],
     "not_tested_on": [str], "failure_modes": [str]}

Reading never fails: a malformed part of a folder's facts reads as not stated, and the problem is kept
(``ModelFacts.problems``) so the page can say what was wrong. Where a run folder states no facts, ``known_facts``
derives only what its files show (data set, test accuracy with n and a Wilson interval from metrics.json) and
leaves the rest not stated: nothing is guessed.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .intervals import wilson_interval

__all__ = ["EVALUATED_BY", "NOT_STATED", "Evaluation", "ModelFacts", "accuracy_with_interval", "frequent_confusions",
           "known_facts", "wilson_ci95"]

NOT_STATED = "not stated by the model's maker"
EVALUATED_BY = ("ours", "the model's author")  # who measured an evaluation figure
_TEXT_FIELDS = ("intended_use", "training_data")
_LIST_FIELDS = ("not_tested_on", "failure_modes")
_FIELDS = (*_TEXT_FIELDS, "training_data_license", "evaluation", *_LIST_FIELDS)


@dataclass(frozen=True)
class Evaluation:
    """One measured figure: `metric` = `value` on `n` images of `data`, its 95% interval, and who measured it."""

    data: str
    n: int
    metric: str
    value: float
    ci95: tuple[float, float] | None
    by: str  # one of EVALUATED_BY

    def to_dict(self) -> dict[str, Any]:
        """The evaluation as the JSON object config.json's facts hold (ci95 as a list, or null)."""
        return {"data": self.data, "n": self.n, "metric": self.metric, "value": self.value,
                "ci95": None if self.ci95 is None else list(self.ci95), "by": self.by}


@dataclass(frozen=True)
class ModelFacts:
    """What is known about a model. None: not stated (a licence stated as null is `license_stated` and None)."""

    intended_use: str | None = None
    training_data: str | None = None
    training_data_license: str | None = None
    license_stated: bool = False          # the licence was stated, possibly as unknown (null)
    evaluation: tuple[Evaluation, ...] | None = None
    not_tested_on: tuple[str, ...] | None = None
    failure_modes: tuple[str, ...] | None = None
    derived: tuple[str, ...] = ()         # fields derived from the run folder's files, not stated by its maker
    problems: tuple[str, ...] = field(default=(), compare=False)  # malformed parts, read as not stated

    def to_dict(self) -> dict[str, Any]:
        """The stated facts in config.json's shape (fields not stated are left out)."""
        out: dict[str, Any] = {name: getattr(self, name) for name in _TEXT_FIELDS if getattr(self, name)}
        if self.license_stated:
            out["training_data_license"] = self.training_data_license
        if self.evaluation is not None:
            out["evaluation"] = [e.to_dict() for e in self.evaluation]
        out.update({name: list(getattr(self, name)) for name in _LIST_FIELDS if getattr(self, name) is not None})
        return out

    @classmethod
    def from_dict(cls, values: Any, source: str = "config.json") -> "ModelFacts":
        """Parse a "facts" object; never raises: each malformed part is left not stated and named in `problems`."""
        if isinstance(values, ModelFacts):
            return values
        if not isinstance(values, Mapping):
            return cls(problems=(f"{source}: \"facts\" must be an object, got {type(values).__name__}",))
        problems = [f"{source}: facts field {key!r} is not one of {', '.join(_FIELDS)}; ignored"
                    for key in values if key not in _FIELDS]
        parsed: dict[str, Any] = {}
        for name in _TEXT_FIELDS:
            if name in values:
                parsed[name] = _text(values[name], f"{source}: facts field {name!r}", problems)
        if "training_data_license" in values:
            licence = values["training_data_license"]
            if licence is None or (isinstance(licence, str) and licence.strip()):
                parsed.update(training_data_license=licence, license_stated=True)
            else:
                problems.append(f"{source}: facts field 'training_data_license' must be a string or null, "
                                f"got {licence!r:.60}")
        if "evaluation" in values:
            parsed["evaluation"] = _evaluations(values["evaluation"], source, problems)
        for name in _LIST_FIELDS:
            if name in values:
                parsed[name] = _texts(values[name], f"{source}: facts field {name!r}", problems)
        return cls(**parsed, problems=tuple(problems))


def _text(value: Any, where: str, problems: list[str]) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    problems.append(f"{where} must be a non-empty string, got {value!r:.60}")
    return None


def _texts(value: Any, where: str, problems: list[str]) -> tuple[str, ...] | None:
    """A list of non-empty strings; a bad item is dropped, anything but a list is not stated."""
    if not isinstance(value, list):
        problems.append(f"{where} must be a list of strings, got {value!r:.60}")
        return None
    kept = tuple(t for t in (_text(v, f"{where} item", problems) for v in value) if t)
    return kept if kept or not value else None  # every item malformed: nothing stated, not "none"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _evaluation(item: Any, where: str) -> Evaluation | str:
    """One evaluation entry, or what is wrong with it."""
    if not isinstance(item, Mapping):
        return f"{where} must be an object, got {item!r:.60}"
    data, n, metric, value = item.get("data"), item.get("n"), item.get("metric"), item.get("value")
    ci95, by = item.get("ci95"), item.get("by")
    if not (isinstance(data, str) and data.strip() and isinstance(metric, str) and metric.strip()):
        return f"{where} needs 'data' and 'metric' strings"
    if not (isinstance(n, int) and not isinstance(n, bool) and n > 0):
        return f"{where} needs a positive integer 'n' (how many images), got {n!r:.40}"
    if not _number(value):
        return f"{where} needs a finite number 'value', got {value!r:.40}"
    if ci95 is not None and not (isinstance(ci95, (list, tuple)) and len(ci95) == 2 and all(map(_number, ci95))
                                 and ci95[0] <= value <= ci95[1]):
        return f"{where} has 'ci95' {ci95!r:.60}: it must be [low, high] around the value, or null"
    if by not in EVALUATED_BY:
        return f"{where} has 'by' {by!r:.40}: it must be one of {', '.join(map(repr, EVALUATED_BY))}"
    return Evaluation(data.strip(), n, metric.strip(), float(value),
                      None if ci95 is None else (float(ci95[0]), float(ci95[1])), by)


def _evaluations(value: Any, source: str, problems: list[str]) -> tuple[Evaluation, ...] | None:
    if not isinstance(value, list):
        problems.append(f"{source}: facts field 'evaluation' must be a list, got {value!r:.60}")
        return None
    kept = []
    for i, item in enumerate(value):
        parsed = _evaluation(item, f"{source}: facts evaluation[{i}]")
        if isinstance(parsed, Evaluation):
            kept.append(parsed)
        else:
            problems.append(f"{parsed}; left out")
    return tuple(kept) if kept or not value else None  # every entry malformed: nothing stated, not "none"


def wilson_ci95(successes: int, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of successes / n (n > 0), rounded to 4 places as the cards give it."""
    return wilson_interval(successes, n, digits=4)


def accuracy_with_interval(test: Mapping[str, Any], data: str, by: str = "ours") -> Evaluation | None:
    """Accuracy with its n and Wilson interval from a metrics.json ``test`` block (train.metrics' layout: accuracy,
    num_samples, confusion_matrix); None where the block lacks them or they disagree (an interval must belong to
    its value)."""
    n, matrix, accuracy = test.get("num_samples"), test.get("confusion_matrix"), test.get("accuracy")
    if not (isinstance(n, int) and n > 0 and isinstance(matrix, list) and _number(accuracy)):
        return None
    try:
        correct = sum(int(row[i]) for i, row in enumerate(matrix))
        total = sum(int(v) for row in matrix for v in row)
    except (TypeError, ValueError, IndexError):
        return None
    if total != n or abs(correct / n - accuracy) > 1e-6:
        return None
    return Evaluation(data, n, "accuracy", float(accuracy), wilson_ci95(correct, n), by)


def frequent_confusions(matrix: Sequence[Sequence[int]], names: Sequence[str], split: str, most: int = 2) -> list[str]:
    """The `most` most frequent wrong answers of a confusion matrix (rows: true class), as measured failure modes:
    'PNEUMONIA read as NORMAL: 2 of 8 PNEUMONIA test images'."""
    wrong = sorted(((int(matrix[t][p]), t, p) for t in range(len(names)) for p in range(len(names))
                    if t != p and matrix[t][p] > 0), reverse=True)[:most]
    return [f"{names[t]} read as {names[p]}: {count} of {sum(map(int, matrix[t]))} {names[t]} {split} images"
            for count, t, p in wrong]


def known_facts(stated: ModelFacts | None, dataset: str | None, medical: bool | None,
                run_metrics: Mapping[str, Any]) -> ModelFacts:
    """The facts a run folder states, completed where it states none with what its files show: the data set (and
    whether it is medical) and the test accuracy with n and interval from its metrics.json. The rest stays not
    stated."""
    facts = stated or ModelFacts()
    derived: list[str] = []
    if facts.training_data is None and dataset:
        kind = {True: " (medical images)", False: " (not medical images)"}.get(medical, "")
        facts, derived = replace(facts, training_data=f"{dataset}{kind}"), [*derived, "training_data"]
    test = run_metrics.get("test")
    if facts.evaluation is None and isinstance(test, Mapping):
        evaluated = run_metrics.get("evaluation")
        data = evaluated.get("data") if isinstance(evaluated, Mapping) else None
        found = accuracy_with_interval(test, data if isinstance(data, str) else f"test split of {dataset or 'its data'}")
        if found is not None:
            facts, derived = replace(facts, evaluation=(found,)), [*derived, "evaluation"]
    return replace(facts, derived=tuple(derived)) if derived else facts

