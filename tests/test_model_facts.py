"""The model facts panel: what each model's config.json states (intended use, training data and licence, evaluation
with n and interval, never tested on, failure modes), what is derived from its run folder, and "not stated" for the
rest; malformed facts never break a model."""
from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from ui import comparison
from ui.formatting import column_details
from ui.model_facts import facts_markdown
from zoo import ZooConfig
from zoo.catalog import discover_models
from zoo.inference import ModelCache
from zoo.images import load_image
from zoo.model_facts import NOT_STATED, ModelFacts, known_facts, wilson_ci95


def _facts_panel(details: str) -> str:
    """The folded 'Model facts' block of a column's details."""
    start = details.index("<summary>Model facts</summary>")
    return details[start:details.index("</details>", start)]


def test_every_test_zoo_model_shows_a_facts_panel_saying_what_is_not_stated(weights, tmp_path):
    entries = [e for e in discover_models(weights) if e.available]
    digit = tmp_path / "digit.png"
    Image.new("L", (8, 8), 128).save(digit)
    digits_models = [e for e in entries if e.dataset == "digits"][:3]
    result = comparison.compare(load_image(str(digit)), digits_models, ModelCache(max_models=3), cam=False)
    for r in result.results:
        panel = _facts_panel(column_details(r))
        for item in ("Intended use", "Training data", "Training data licence", "Evaluation", "Never tested on",
                     "Known failure modes"):
            assert f"**{item}:**" in panel, (r.model, item)
        # these folders state no facts: the data set is derived from config.json, everything else is not stated
        assert "digits" in panel and "derived from its run folder" in panel
        assert panel.count(NOT_STATED) == 5, panel  # intended use, licence, evaluation, tested on, failure modes


def test_imported_medical_models_state_their_facts_with_n_interval_and_who_measured(medical_zoo):
    weights, runs = medical_zoo
    for entry in discover_models(weights):
        facts = entry.facts
        assert facts.problems == () and facts.derived == ()  # all stated by the import, all well formed
        metrics = json.loads((runs[entry.id.split("-")[0]] / "metrics.json").read_text())["test"]
        (evaluation,) = facts.evaluation
        assert (evaluation.n, evaluation.by, evaluation.metric) == (metrics["num_samples"], "ours", "accuracy")
        assert list(evaluation.ci95) == metrics["accuracy_ci95"]  # the card's own Wilson interval
        assert "not for clinical use" in facts.intended_use and facts.not_tested_on
        panel = facts_markdown(facts)
        assert f"n = {metrics['num_samples']}" in panel and "measured by **us**" in panel
    pneumonia = next(e for e in discover_models(weights) if e.id == "pneumonia-xception").facts
    assert pneumonia.training_data_license == "CC BY 4.0" and "paediatric" in pneumonia.training_data
    # measured on the 16 packaged X-rays: one normal read as pneumonia, two pneumonias read as normal
    assert pneumonia.failure_modes[0] == "PNEUMONIA read as NORMAL: 2 of 8 PNEUMONIA packaged images"
    brain = next(e for e in discover_models(weights) if e.id == "braintumor-xception").facts
    assert brain.license_stated and brain.training_data_license is None
    assert "**unknown**" in facts_markdown(brain)


@pytest.mark.parametrize("bad_facts", [
    ["not", "an", "object"],
    {"intended_use": 5, "evaluation": [{"data": "x", "n": -3, "metric": "accuracy", "value": 0.9, "by": "ours"},
                                       {"data": "y", "n": 10, "metric": "accuracy", "value": 0.9,
                                        "ci95": [0.1, 0.2], "by": "ours"}],
     "not_tested_on": "CT", "failure_modes": [None], "training_data_license": 7, "made_up": 1},
])
def test_malformed_facts_leave_the_model_usable_and_read_as_not_stated(weights, tmp_path, bad_facts):
    zoo_dir = tmp_path / "zoo"
    folder = zoo_dir / "lenet5-bad-facts"
    shutil.copytree(weights / "lenet5-scratch-digits", folder)
    config = json.loads((folder / "config.json").read_text())
    config["zoo"]["facts"] = bad_facts
    (folder / "config.json").write_text(json.dumps(config))
    shutil.copytree(weights / "quadsnet-scratch-digits", zoo_dir / "quadsnet-scratch-digits")
    entries = discover_models(zoo_dir)
    entry = next(e for e in entries if e.id == "lenet5-bad-facts")
    assert entry.available and entry.facts.problems
    digit = tmp_path / "digit.png"
    Image.new("L", (8, 8), 200).save(digit)
    result = comparison.compare(load_image(str(digit)), entries, ModelCache(max_models=2), cam=False)
    answered = next(r for r in result.results if r.model == "lenet5-bad-facts")
    assert answered.error is None and answered.top_k  # the model still answers
    panel = _facts_panel(column_details(answered))
    assert "could not be read" in panel
    assert f"**Intended use:** _{NOT_STATED}_" in panel and f"**Evaluation:** _{NOT_STATED}_" in panel
    assert f"**Never tested on:** _{NOT_STATED}_" in panel and f"**Known failure modes:** _{NOT_STATED}_" in panel
    if isinstance(bad_facts, dict):  # each bad part is named: a negative n, an interval that excludes its value
        assert any("positive integer 'n'" in p for p in entry.facts.problems)
        assert any("'ci95'" in p for p in entry.facts.problems)


def test_a_trained_run_states_its_facts_with_its_test_n_and_wilson_interval(digits_run):
    config = json.loads((digits_run.run_dir / "config.json").read_text())
    test = json.loads((digits_run.run_dir / "metrics.json").read_text())["test"]
    facts = ZooConfig.from_dict(config["zoo"]).facts
    assert facts.problems == ()
    assert "not for clinical use" in facts.intended_use
    assert facts.training_data.startswith("digits (not medical images): ")
    (evaluation,) = facts.evaluation
    correct = sum(row[i] for i, row in enumerate(test["confusion_matrix"]))
    assert evaluation.n == test["num_samples"] and evaluation.by == "ours"
    assert evaluation.ci95 == wilson_ci95(correct, test["num_samples"])
    assert evaluation.ci95[0] <= evaluation.value <= evaluation.ci95[1]
    assert facts.not_tested_on and isinstance(facts.failure_modes, tuple)


def test_a_run_without_facts_gets_only_what_its_files_show():
    # an older run: config.json names the data set, metrics.json has the test split (18 of 20 right)
    test = {"accuracy": 0.9, "num_samples": 20, "confusion_matrix": [[9, 1], [1, 9]]}
    facts = known_facts(None, "pneumoniamnist", True, {"test": test})
    assert facts.training_data == "pneumoniamnist (medical images)"
    (evaluation,) = facts.evaluation
    assert (evaluation.n, evaluation.ci95, evaluation.by) == (20, wilson_ci95(18, 20), "ours")
    assert facts.intended_use is None and facts.not_tested_on is None and facts.failure_modes is None
    # figures that disagree (accuracy 0.9 but 10 of 20 on the diagonal) give no evaluation rather than a wrong one
    assert known_facts(None, "x", None, {"test": {**test, "confusion_matrix": [[5, 5], [5, 5]]}}).evaluation is None
    # stated facts win over derived ones, and a round trip through config.json keeps them
    stated = ModelFacts.from_dict({"intended_use": "research", "training_data": "HAM10000",
                                   "training_data_license": None, "evaluation": []})
    kept = ZooConfig.from_dict(ZooConfig(facts=stated).to_dict()).facts
    assert kept == stated and known_facts(kept, "other", None, {"test": test}) == stated
