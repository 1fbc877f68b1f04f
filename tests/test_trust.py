"""Calibration, prediction sets and the out-of-distribution check: fitted by `python -m train`, validated
when a model loads, reported per model by zoo.inference; bad statistics are refused naming the file."""
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import skimage
import torch
from pydicom.data import get_testdata_file
from safetensors.torch import load_file, save_file

import zoo
from train.augment import eval_transform
from train.data import ImageDataset, load_source
from train.trust import (ECE_BINS, TRUST_SECTION, SplitOutputs, calibration_figures, collect_outputs,
                         conformal_threshold, fit_temperature, fit_trust, prediction_sets)
from zoo import inference
from zoo.catalog import discover_models
from zoo.images import load_image
from zoo.run_layout import OOD_NAME
from zoo.trust import features_and_logits


@pytest.fixture(scope="module")
def run_dir(digits_run):
    return digits_run.run_dir


@pytest.fixture(scope="module")
def metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def entry(run_dir):
    return next(e for e in discover_models(run_dir.parent) if e.id == run_dir.name)


def _test_split(run_dir, model):
    """The run's test images (as PIL images, through the data set's own loader) and their outputs."""
    source = load_source("digits")
    by_key = {s.key: s for s in source.samples}
    samples = [by_key[key] for key, _ in json.loads((run_dir / "split.json").read_text())["test"]]
    config = zoo.resolve_data_config(model)
    return ImageDataset(source, samples, eval_transform(config), config["input_size"][0])


# --- what training writes -------------------------------------------------------------------------------

def test_training_writes_temperature_ood_statistics_conformal_threshold_and_figures(run_dir, metrics):
    config = json.loads((run_dir / "config.json").read_text())["zoo"]
    assert 0.05 < config["temperature"] < 20
    assert config["conformal"]["alpha"] == 0.1 and 0 <= config["conformal"]["threshold"] <= 1
    assert config["conformal"]["n_calibration"] == metrics["calibration"]["n_fit"] == 270  # the validation split
    assert config["ood"]["file"] == OOD_NAME and (run_dir / OOD_NAME).is_file()
    assert (run_dir / "reliability.png").stat().st_size > 10_000
    bank = load_file(str(run_dir / OOD_NAME))["bank"]
    assert bank.shape == (metrics["ood"]["n_fit"], 120)  # LeNet-5's C5 features of the training images
    calibration = metrics["calibration"]
    assert calibration["n_test"] == 270 and calibration["ece_bins"] == ECE_BINS == 15
    for key in ("ece", "mce", "nll", "brier"):
        assert math.isfinite(calibration["before"][key]) and math.isfinite(calibration["after"][key])
    conformal, ood = metrics["conformal"], metrics["ood"]
    assert 0 < conformal["test_mean_set_size"] <= 10 and 0 <= conformal["test_coverage"] <= 1
    # 95% of the validation images pass by construction; the unseen test images nearly as many
    assert ood["validation_pass_rate"] >= 0.95 and ood["test_pass_rate"] >= 0.90
    card = (run_dir / "README.md").read_text()
    assert f"## {TRUST_SECTION}" in card and "reliability.png" in card
    assert "270 test images of digits" in card and "15 equal-width bins" in card
    assert f"{conformal['test_coverage']:.1%}" in card and f"{ood['test_pass_rate']:.1%}" in card
    low, high = conformal["test_coverage_ci95"]  # one split's coverage is a sample of 270: its interval is shown
    assert low < conformal["test_coverage"] < high and f"95% interval {low:.1%}-{high:.1%}, Wilson" in card


def test_temperature_scaling_does_not_worsen_test_calibration(metrics):
    # measured: ECE 0.0449 -> 0.0181, NLL 0.1206 -> 0.0980 (T = 0.761)
    before, after = metrics["calibration"]["before"], metrics["calibration"]["after"]
    assert after["ece"] <= before["ece"]
    assert after["nll"] <= before["nll"]


def test_prediction_sets_cover_the_true_class_at_the_target_rate(run_dir, metrics):
    """Split conformal promises coverage >= 90% on average over calibration/test draws, not on one split.

    With 270 calibration and 270 test images one split's coverage has a standard deviation of about 2.5
    points (measured below), so the run's own figure is checked against its sampling band, and the
    method's calibration against the mean over re-drawn splits of the same exchangeable images.
    Measured: this run's test coverage 86.7% (mean set size 0.87); over 400 re-drawn splits the mean is
    90.0% and the standard deviation 2.5 points.
    """
    model = zoo.load_pretrained(run_dir)
    outputs = {}
    for name in ("val", "test"):
        source = load_source("digits")
        by_key = {s.key: s for s in source.samples}
        samples = [by_key[k] for k, _ in json.loads((run_dir / "split.json").read_text())[name]]
        dataset = ImageDataset(source, samples, eval_transform(zoo.resolve_data_config(model)), 1)
        outputs[name] = collect_outputs(model, dataset, torch.device("cpu"))
    temperature = model.trust.temperature
    probs = torch.cat([outputs["val"].logits, outputs["test"].logits]).div(temperature).softmax(1).numpy()
    labels = np.concatenate([outputs["val"].labels, outputs["test"].labels])
    # the run's own threshold, recomputed from its validation split, reproduces the stored one
    n_val = len(outputs["val"].labels)
    assert conformal_threshold(probs[:n_val], labels[:n_val]) == pytest.approx(model.trust.conformal.threshold)
    rng = np.random.default_rng(0)
    coverages = []
    for _ in range(400):
        order = rng.permutation(len(labels))
        calibration, held_out = order[:n_val], order[n_val:]
        sets = prediction_sets(probs[held_out], conformal_threshold(probs[calibration], labels[calibration]))
        coverages.append(sets[np.arange(len(held_out)), labels[held_out]].mean())
    mean, spread = float(np.mean(coverages)), float(np.std(coverages))
    print(f"digits 90% sets: this split {metrics['conformal']['test_coverage']:.3f}, "
          f"re-drawn splits {mean:.4f} +- {spread:.4f}")
    assert abs(mean - 0.90) <= 0.01  # the method is calibrated (finite-sample bound: [0.900, 0.904])
    assert abs(metrics["conformal"]["test_coverage"] - 0.90) <= 3 * spread
    low, high = metrics["conformal"]["test_coverage_ci95"]
    assert low <= 0.90 <= high  # this split's coverage is consistent with the promised 90%


def test_calibration_pieces_on_known_inputs():
    rng = np.random.default_rng(1)
    logits = torch.from_numpy(rng.normal(size=(500, 4)) * 3)
    labels = torch.distributions.Categorical(logits=logits / 2.0).sample().numpy()  # generated at T = 2
    assert fit_temperature(logits, labels) == pytest.approx(2.0, rel=0.2)
    perfect = calibration_figures(np.eye(4)[labels], labels)
    assert perfect["ece"] == pytest.approx(0.0, abs=1e-6) and perfect["brier"] == pytest.approx(0.0, abs=1e-9)
    scores = np.linspace(0.0, 0.99, 100)  # 1 - p(true) = scores: the 91st smallest of 100 at alpha 0.1
    probs = np.stack([1 - scores, scores], 1)
    assert conformal_threshold(probs, np.zeros(100, dtype=int), alpha=0.1) == pytest.approx(scores[90])
    assert conformal_threshold(probs[:5], np.zeros(5, dtype=int), alpha=0.1) == 1.0  # too few: every class


def _split(rng, n, features):
    labels = rng.integers(0, 3, n)
    logits = torch.from_numpy(np.eye(3)[labels] * 2.0 + rng.normal(size=(n, 3)))
    return SplitOutputs(logits=logits, features=features(n), labels=labels)


@pytest.mark.parametrize("collapsed", [False, True])
def test_an_ood_check_that_cannot_discriminate_is_said_so_in_the_metrics_card_and_answers(tmp_path, collapsed):
    """A collapsed model (its features the same for every image) gets an OOD check that passes anything; training
    says so instead of writing a threshold that looks like a working check."""
    rng = np.random.default_rng(0)
    centre = torch.from_numpy(rng.normal(size=16))
    if collapsed:  # every image maps to (nearly) one point
        features = lambda n: (centre + 1e-6 * torch.from_numpy(rng.normal(size=(n, 16)))).float()  # noqa: E731
    else:
        features = lambda n: torch.from_numpy(rng.normal(size=(n, 16))).float()  # noqa: E731
    outputs = {name: _split(rng, 60, features) for name in ("train", "val", "test")}
    fit = fit_trust(outputs, ["a", "b", "c"], "toy", tmp_path)
    warning = fit.metrics["ood"].get("warning")
    if not collapsed:
        assert warning is None and "cannot discriminate" not in fit.card_section
        assert "note" not in fit.zoo_config["ood"]
        return
    assert "hardly vary across its training images" in warning
    assert "This check cannot discriminate" in fit.card_section
    assert fit.zoo_config["ood"]["note"].startswith("this OOD check cannot discriminate")


# --- through the inference API ------------------------------------------------------------------------

def _record(entry, path, cache):
    result = inference.run_model(entry, load_image(path).image, cache, cam=False)
    assert result.error is None, result.error
    return result.record()


def test_inference_flags_foreign_images_and_passes_own_digits(run_dir, entry):
    cache = inference.ModelCache()
    foreign = {"retina.jpg": Path(skimage.__file__).parent / "data" / "retina.jpg",
               "chelsea.png": Path(skimage.__file__).parent / "data" / "chelsea.png",
               "CT_small.dcm": Path(get_testdata_file("CT_small.dcm"))}
    for name, path in foreign.items():
        record = _record(entry, path, cache)
        assert record["ood"]["flagged"], (name, record["ood"])
        assert record["ood"]["score"] > record["ood"]["threshold"] and record["ood_reason"] is None
    record = _record(entry, foreign["retina.jpg"], cache)
    assert record["temperature"] == pytest.approx(json.loads((run_dir / "config.json").read_text())["zoo"]["temperature"])
    assert [c["label"] for c in record["calibrated_top_k"]][0] == record["top_k"][0]["label"]
    assert record["prediction_set_coverage"] == pytest.approx(0.9) and isinstance(record["prediction_set"], list)
    assert record["test_ece"]["after"] <= record["test_ece"]["before"]

    loaded = cache.get(entry)
    dataset = _test_split(run_dir, loaded.model)
    passed = correct_sets = 0
    for i in range(len(dataset)):
        result = inference.run_model(entry, dataset.load(i), cache, cam=False)
        passed += not result.ood["flagged"]
        correct_sets += loaded.label_names[dataset.samples[i].label] in result.prediction_set
    print(f"own digit test images passed: {passed}/{len(dataset)}; true class in the 90% set: "
          f"{correct_sets}/{len(dataset)}")
    assert passed / len(dataset) >= 0.90  # measured: 254/270 (94.1%)
    # the app path gives the run's own test figures: same preprocessing as training's evaluation
    assert passed / len(dataset) == pytest.approx(json.loads((run_dir / "metrics.json").read_text())["ood"]["test_pass_rate"])


def test_features_come_from_the_model_interface_for_native_timm_and_variant_models():
    for name, kwargs, size in (("lenet5", {}, 32), ("quadsnet", {}, 32), ("resnet18", {}, 64),
                               ("lenet5", dict(head="soft_attention", attention_heads=2), 32),
                               ("lenet5", dict(head="metadata", metadata_hidden=8), 32)):
        model = zoo.create_model(name, num_classes=3, **kwargs).eval()
        x = torch.zeros(2, model.pretrained_cfg["input_size"][0], size, size)
        with torch.no_grad():
            features, logits = features_and_logits(model, x)
            assert torch.allclose(logits, model(x), atol=1e-5)
        assert features.shape == (2, model.num_features), name


# --- bad input ----------------------------------------------------------------------------------------

def _copy(run_dir, tmp_path, name="copy"):
    target = tmp_path / name
    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns("checkpoint.pt", "*.png"))
    return target


def _edit_config(folder, **zoo_keys):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    for key, value in zoo_keys.items():
        if value is None:
            config["zoo"].pop(key, None)
        else:
            config["zoo"][key] = value
    path.write_text(json.dumps(config))


# 1e-300 gave NaN calibrated probabilities and an empty set, 1e300 uniform ones; a list aborted private mode's page
@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf"), "warm", 1e-300, 1e300, [1.7], 0.049])
def test_bad_temperature_is_refused_naming_the_file(run_dir, tmp_path, temperature):
    folder = _copy(run_dir, tmp_path)
    _edit_config(folder, temperature=temperature)
    with pytest.raises(zoo.ZooError, match=r"config\.json: zoo\.temperature is .*a number from 0\.05 to 20"):
        zoo.load_pretrained(folder)


@pytest.mark.parametrize("temperature", [0.05, 20.0])
def test_the_temperature_range_holds_what_training_fits(run_dir, tmp_path, temperature):
    from train.trust import TEMPERATURE_BOUNDS
    from zoo.trust import TEMPERATURE_RANGE

    assert TEMPERATURE_RANGE == TEMPERATURE_BOUNDS  # a fit on either bound loads
    folder = _copy(run_dir, tmp_path)
    _edit_config(folder, temperature=temperature)
    assert zoo.load_pretrained(folder).trust.temperature == temperature


def test_bad_ood_statistics_are_refused_naming_the_file(run_dir, tmp_path):
    good = load_file(str(run_dir / OOD_NAME))
    cases = {"nan": ({**good, "bank": good["bank"].clone().index_fill_(0, torch.tensor([3]), float("nan"))},
                     "non-finite"),
             "inf": ({**good, "threshold": torch.tensor([float("inf")])}, "non-finite"),
             "shape": ({**good, "bank": torch.nn.functional.normalize(torch.ones(5, 84), dim=1)},
                       r"shape \(5, 84\).*expected \(N, 120\)"),
             "missing-tensor": ({"bank": good["bank"]}, r"lacks tensor\(s\) \['threshold'\]"),
             "not-normalised": ({**good, "bank": good["bank"] * 3}, "unit length")}
    for name, (tensors, message) in cases.items():
        folder = _copy(run_dir, tmp_path, name)
        save_file(tensors, str(folder / OOD_NAME))
        with pytest.raises(zoo.ZooError, match=message) as error:
            zoo.load_pretrained(folder)
        assert str(folder / OOD_NAME) in str(error.value)


def test_conformal_threshold_without_temperature_or_out_of_range_is_refused(run_dir, tmp_path):
    folder = _copy(run_dir, tmp_path)
    _edit_config(folder, temperature=None)  # the block still names its calibration method
    with pytest.raises(zoo.ZooError, match="calibration_method is 'temperature' but zoo.temperature is missing"):
        zoo.load_pretrained(folder)
    _edit_config(folder, calibration_method=None)  # no calibration at all, but sets fitted on calibrated probabilities
    with pytest.raises(zoo.ZooError, match="zoo.temperature is missing"):
        zoo.load_pretrained(folder)
    _edit_config(folder, temperature=1.0, conformal={"alpha": 0.1, "threshold": float("nan"), "n_calibration": 9})
    with pytest.raises(zoo.ZooError, match=r"config\.json: zoo\.conformal\.threshold is nan"):
        zoo.load_pretrained(folder)


def test_each_piece_is_read_by_the_method_name_its_file_declares(run_dir, tmp_path):
    zoo_cfg = json.loads((run_dir / "config.json").read_text())["zoo"]
    assert zoo_cfg["calibration_method"] == "temperature" and zoo_cfg["conformal"]["method"] == "threshold"
    assert zoo_cfg["ood"]["method"] == "knn-cosine"
    folder = _copy(run_dir, tmp_path, "future-sets")
    _edit_config(folder, conformal={**zoo_cfg["conformal"], "method": "raps"})
    trust = zoo.load_pretrained(folder).trust
    assert trust.prediction_sets is None and "prediction-set method 'raps'" in trust.conformal_reason
    assert trust.temperature == zoo_cfg["temperature"]  # the other pieces stand
    folder = _copy(run_dir, tmp_path, "future-calibration")
    _edit_config(folder, calibration_method="dirichlet")
    trust = zoo.load_pretrained(folder).trust
    assert trust.calibration is None and "calibration method 'dirichlet'" in trust.calibration_reason
    assert trust.prediction_sets is None and "does not know" in trust.conformal_reason  # fitted on that calibration
    assert trust.ood is not None
    entry = next(e for e in discover_models(tmp_path) if e.id == "future-calibration")
    record = _record(entry, Path(skimage.__file__).parent / "data" / "retina.jpg", inference.ModelCache())
    assert record["calibrated_top_k"] is None and record["temperature"] is None and record["top_k"]


def test_run_without_statistics_loads_and_says_why(run_dir, tmp_path):
    folder = _copy(run_dir, tmp_path, "older-run")
    (folder / OOD_NAME).unlink()
    _edit_config(folder, temperature=None, calibration_method=None, conformal=None, ood=None, calibration=None,
                 format_version=None)
    model = zoo.load_pretrained(folder)
    assert "written before the zoo versioned its files" in model.trust.calibration_reason
    assert model.trust.ood is None and model.trust.temperature is None and model.trust.conformal is None
    assert "no OOD statistics" in model.trust.ood_reason and str(folder) in model.trust.ood_reason
    entry = next(e for e in discover_models(tmp_path) if e.id == "older-run")
    record = _record(entry, Path(skimage.__file__).parent / "data" / "retina.jpg", inference.ModelCache())
    assert record["top_k"] and record["ood"] is None and "no OOD statistics" in record["ood_reason"]
    assert record["calibrated_top_k"] is None and record["prediction_set"] is None and record["temperature"] is None
    assert any("no calibration in" in note for note in record["trust_notes"])
