"""The model facts panel of a comparison column: one screen of what is known about the model (intended use, training
data and its licence, evaluation with n, interval and who measured it, what it was never tested on, known failure
modes), the items "Model Cards for Model Reporting" (Mitchell et al., 2019) and clinical-AI reporting guidelines
ask a model's page to state. What the model's maker did not state is said to be not stated, never filled in.

Plain Markdown from zoo.model_facts.ModelFacts: no gradio here.
"""
from __future__ import annotations

from collections.abc import Sequence

from zoo.model_facts import NOT_STATED, Evaluation, ModelFacts

__all__ = ["FACTS_TITLE", "describe_evaluation", "facts_markdown"]

FACTS_TITLE = "Model facts"
_DERIVED_NOTE = "derived from its run folder"


def describe_evaluation(evaluation: Evaluation) -> str:
    """'accuracy 0.825 (95% CI 0.805–0.844), n = 1,511, on …; measured by the model's author' (or 'by us')."""
    interval = "no interval stated" if evaluation.ci95 is None else \
        f"95% CI {evaluation.ci95[0]:.3f}–{evaluation.ci95[1]:.3f}"
    by = "us" if evaluation.by == "ours" else evaluation.by
    return (f"{evaluation.metric} **{evaluation.value:.3f}** ({interval}), n = {evaluation.n:,}, on "
            f"{evaluation.data}; measured by **{by}**")


def _items(values: Sequence[str] | None, none_known: str) -> str:
    """A stated list, inline (the panel must fit a narrow column); an empty one as `none_known`; an absent one as
    not stated."""
    if values is None:
        return f" _{NOT_STATED}_"
    return " " + ("; ".join(values) if values else none_known)


def _licence(facts: ModelFacts) -> str:
    if not facts.license_stated:
        return f"_{NOT_STATED}_"
    return facts.training_data_license or "**unknown** (no licence recorded for it)"


def facts_markdown(facts: ModelFacts | None) -> str:
    """The panel's Markdown: every item present, each either as stated, as derived (marked), or 'not stated'."""
    facts = facts or ModelFacts()

    def said(value: str | None, name: str) -> str:
        if value is None:
            return f"_{NOT_STATED}_"
        return value + (f" _({_DERIVED_NOTE})_" if name in facts.derived else "")

    if facts.evaluation is None:
        evaluation = f" _{NOT_STATED}_"
    elif not facts.evaluation:
        evaluation = " none stated"
    else:
        derived = f" _({_DERIVED_NOTE})_" if "evaluation" in facts.derived else ""
        evaluation = " " + "; ".join(describe_evaluation(e) for e in facts.evaluation) + derived
    lines = [f"- **Intended use:** {said(facts.intended_use, 'intended_use')}",
             f"- **Training data:** {said(facts.training_data, 'training_data')}",
             f"- **Training data licence:** {_licence(facts)}",
             f"- **Evaluation:**{evaluation}",
             f"- **Never tested on:**{_items(facts.not_tested_on, 'nothing named')}",
             f"- **Known failure modes:**{_items(facts.failure_modes, 'none known')}"]
    if facts.problems:
        lines.append(f"- ⚠ _Part of this model's facts could not be read and is shown as not stated: "
                     f"{'; '.join(facts.problems[:3])}{' …' if len(facts.problems) > 3 else ''}_")
    return "\n".join(lines)
