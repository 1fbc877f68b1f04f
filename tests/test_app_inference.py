"""The app's engine without a browser: catalog, preprocessing per model config, predictions, Grad-CAM,
comparisons and their summary, DICOM examples and every bad input."""
import json
import threading

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo import inference
from ui.comparison import agreement_summary, check_selection, compare
from zoo.catalog import PLOT_FILES, discover_models
from zoo.images import ImageLoadError, load_image, to_model_mode

from _app_zoo import BROKEN, LESIONS, TINY_MODELS, UNFINISHED, bad_inputs, convertible_inputs, packaged_examples


@pytest.fixture(scope="module")
def cache():
    return inference.ModelCache(max_models=8)


DIGIT_MODELS = ["lenet5-scratch-digits", "lite0-fe-digits", "quadsnet-scratch-digits"]


# --- catalog ---------------------------------------------------------------------------------------------

def test_catalog_lists_run_folders_with_their_metadata(entries):
    assert set(TINY_MODELS) | {BROKEN, UNFINISHED} == set(entries)
    lenet = entries["lenet5-scratch-digits"]
    assert lenet.available and lenet.source == "local"
    assert (lenet.architecture, lenet.mode, lenet.dataset) == ("lenet5", "scratch", "digits")
    assert lenet.params == (61_706, 61_706)
    assert lenet.test_metrics["balanced_accuracy"] == pytest.approx(0.79)
    assert set(lenet.plots) == {"curves", "confusion_matrix", "roc", "reliability"}
    fe = entries["lite0-fe-digits"]
    assert fe.mode == "feature-extraction" and fe.params[1] < fe.params[0] / 100
    meta = entries["lenet5-meta-lesions"]
    assert meta.head == "metadata" and meta.metadata_schema["site"] == ["back", "face", "hand"]
    assert meta.label_names == LESIONS
    unfinished = entries[UNFINISHED]
    assert not unfinished.available and "has not finished" in unfinished.reason and "--resume" in unfinished.reason


def test_catalog_file_entries_hub_unreachable_duplicates_and_errors(weights, tmp_path, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"models": [
        {"id": "hub-model", "source": "hub", "repo_id": "someone/ham10000-densenet201"},
        {"id": "elsewhere", "source": "local", "path": str(weights / "lenet5-scratch-digits")},
        {"id": "lenet5-scratch-digits", "source": "local", "path": str(weights / "lite0-fe-digits")},
        {"id": "bad-repo", "source": "hub", "repo_id": "not a repo"},
        {"id": "ftp", "source": "ftp"},
        {"source": "local"},
    ]}))
    found = {e.id: e for e in discover_models(weights, catalog)}
    hub = found["hub-model"]
    assert hub.source == "hub" and not hub.available and "cannot be reached" in hub.reason
    assert "HF_HUB_OFFLINE" in hub.reason
    assert found["elsewhere"].available and found["elsewhere"].architecture == "lenet5"
    duplicate = [e for e in found.values() if e.id.startswith("lenet5-scratch-digits (")]
    assert len(duplicate) == 1 and "already used" in duplicate[0].reason
    assert "OWNER/NAME" in found["bad-repo"].reason
    assert "must be one of local, hub" in found["ftp"].reason
    assert any("needs a non-empty string" in (e.reason or "") for e in found.values())


def test_malformed_catalog_is_listed_not_fatal(weights, tmp_path):
    catalog = tmp_path / "catalog.json"
    catalog.write_text("{not json")
    found = {e.id: e for e in discover_models(weights, catalog)}
    assert "catalog.json" in found and "not valid JSON" in found["catalog.json"].reason
    assert found["lenet5-scratch-digits"].available


def test_committed_catalog_is_empty_and_valid():
    from pathlib import Path
    data = json.loads((Path(__file__).resolve().parents[1] / "weights" / "catalog.json").read_text())
    assert data == {"models": []}


def test_plot_names_match_what_train_writes():
    # one declaration (zoo.run_layout) that the catalog and train's plot writer both use, not two equal copies
    from train.plots import PLOT_FILES as TRAIN_PLOT_FILES
    from zoo.run_layout import PLOT_FILES as LAYOUT_PLOT_FILES
    assert PLOT_FILES is LAYOUT_PLOT_FILES and TRAIN_PLOT_FILES is LAYOUT_PLOT_FILES


# --- preprocessing -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("run, shape", [("lenet5-scratch-digits", (1, 1, 32, 32)), ("lite0-fe-digits", (1, 3, 32, 32)),
                                        ("quadsnet-scratch-digits", (1, 3, 16, 16))])
@pytest.mark.parametrize("example", ["retina", "ct"])
def test_preprocessing_follows_each_models_config_and_matches_training(entries, cache, run, shape, example):
    from train.augment import eval_transform
    loaded = cache.get(entries[run])
    image = load_image(packaged_examples()[example]).image
    x = inference.preprocess(loaded, image)
    assert tuple(x.shape) == shape
    expected = eval_transform(loaded.data_config)(to_model_mode(image, shape[1])).unsqueeze(0)
    torch.testing.assert_close(x, expected, rtol=0, atol=0)  # the app feeds what training evaluated on


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"])
@pytest.mark.parametrize("crop_pct, crop_mode", [(1.0, "center"), (0.875, "center"), (0.9, "squash"),
                                                 (0.9, "border")])
def test_a_grey_image_for_an_rgb_model_gives_exactly_the_replicate_first_tensor(interpolation, crop_pct, crop_mode):
    """preprocess resizes a grey image's one band before replicating it (a third of the work on a chest X-ray):
    the tensor must be the one that replicating first and then resizing gives, bit for bit."""
    from types import SimpleNamespace

    from train.augment import eval_transform
    rng = np.random.default_rng(0)
    grey = Image.fromarray(rng.integers(0, 256, size=(301, 517), dtype=np.uint8), mode="L")  # non-square
    config = dict(input_size=(3, 48, 48), interpolation=interpolation, mean=(0.485, 0.456, 0.406),
                  std=(0.229, 0.224, 0.225), crop_pct=crop_pct, crop_mode=crop_mode)
    loaded = SimpleNamespace(data_config=config, in_chans=3, transform=inference.build_transform(config),
                             entry=SimpleNamespace(id="test"))
    expected = eval_transform(config)(grey.convert("RGB")).unsqueeze(0)
    torch.testing.assert_close(inference.preprocess(loaded, grey), expected, rtol=0, atol=0)


def test_normalisation_uses_the_models_mean_and_std(entries, cache):
    loaded = cache.get(entries["lite0-fe-digits"])
    x = inference.preprocess(loaded, Image.new("RGB", (50, 50), (255, 0, 128)))
    mean, std = loaded.data_config["mean"], loaded.data_config["std"]
    expected = [(v / 255 - m) / s for v, m, s in zip((255, 0, 128), mean, std)]
    assert x[0, :, 10, 10].tolist() == pytest.approx(expected, abs=1e-3)
    gray = cache.get(entries["lenet5-scratch-digits"])
    assert gray.data_config["mean"] == [0.5] or tuple(gray.data_config["mean"]) == (0.5,)


# --- prediction, cache, Grad-CAM -------------------------------------------------------------------------

def test_prediction_is_deterministic_and_probabilities_sum_to_one(entries, cache):
    loaded = cache.get(entries["quadsnet-scratch-digits"])
    image = load_image(packaged_examples()["retina"]).image
    first, second = inference.predict(loaded, image, top_k=3), inference.predict(loaded, image, top_k=3)
    np.testing.assert_array_equal(first.probabilities, second.probabilities)
    assert first.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert len(first.top_k) == 3 and first.top_k[0][1] >= first.top_k[1][1] >= first.top_k[2][1]
    assert first.top_k[0][0] == str(first.class_index) and first.latency_ms > 0


def test_cache_loads_once_and_evicts_least_recently_used(entries):
    small = inference.ModelCache(max_models=2)
    a, b, c = (entries[m] for m in DIGIT_MODELS)
    loaded_a = small.get(a)
    assert small.get(a) is loaded_a and small.loads == 1  # the second prediction does not reload
    small.get(b)
    small.get(a)  # a is now the most recent
    small.get(c)  # evicts b
    assert small.is_loaded(a) and small.is_loaded(c) and not small.is_loaded(b) and len(small) == 2
    calls = []
    small.get(b, on_load=calls.append)
    assert calls == [b] and small.loads == 4
    with pytest.raises(zoo.ZooError, match="max_models"):
        inference.ModelCache(max_models=0)


def test_cache_memory_budget_evicts_but_keeps_the_newest(entries):
    budget = inference.ModelCache(max_models=8, max_bytes=1)  # smaller than any model
    for run in DIGIT_MODELS:
        budget.get(entries[run])
    assert len(budget) == 1 and budget.is_loaded(entries[DIGIT_MODELS[-1]])


def test_a_failed_load_is_not_cached(entries):
    failing = inference.ModelCache(max_models=2)
    for _ in range(2):
        with pytest.raises(zoo.ZooError, match="could not be loaded"):
            failing.get(entries[BROKEN])
    assert len(failing) == 0 and failing.loads == 0 and not failing._loading


def test_concurrent_requests_load_a_model_once(entries):
    shared = inference.ModelCache(max_models=2)
    results = []
    threads = [threading.Thread(target=lambda: results.append(shared.get(entries["lenet5-scratch-digits"])))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert shared.loads == 1 and len({id(r) for r in results}) == 1


@pytest.mark.parametrize("run", list(TINY_MODELS))
def test_grad_cam_gives_a_map_for_every_model(entries, cache, run):
    loaded = cache.get(entries[run])
    image = load_image(packaged_examples()["ct"]).image
    prediction = inference.predict(loaded, image, {"age": 40, "sex": "male", "site": "back"})
    mask = inference.grad_cam(loaded, prediction)
    size = loaded.data_config["input_size"][1:]
    assert mask.shape == tuple(size) and mask.min() >= 0 and mask.max() <= 1 and np.isfinite(mask).all()
    overlay = inference.cam_overlay(loaded, prediction, mask)
    assert overlay.dtype == np.uint8 and overlay.shape[2] == 3 and min(overlay.shape[:2]) >= inference.CAM_DISPLAY_SIZE
    # Grad-CAM must leave the model as it was: same prediction, no gradients kept, modes' frozen flags intact
    again = inference.predict(loaded, image, {"age": 40, "sex": "male", "site": "back"})
    np.testing.assert_array_equal(prediction.probabilities, again.probabilities)
    assert all(p.grad is None for p in loaded.model.parameters())
    assert zoo.count_params(loaded.model) == loaded.params


def test_lenet_cam_uses_a_layer_with_a_spatial_map(entries, cache):
    loaded = cache.get(entries["lenet5-scratch-digits"])
    assert loaded.cam_layer == "features.act3"  # C5 is 1x1 at 32 px: a map of one pixel shows nothing


def test_metadata_is_encoded_and_changes_the_answer(entries, cache):
    loaded = cache.get(entries["lenet5-meta-lesions"])
    image = load_image(packaged_examples()["retina"]).image
    unknown = inference.predict(loaded, image, None)
    known = inference.predict(loaded, image, {"age": 70, "sex": "female", "site": "face"})
    assert not np.allclose(unknown.probabilities, known.probabilities)
    assert inference.encode_metadata(loaded, {"sex": "other", "site": "moon"}).tolist() == \
        inference.encode_metadata(loaded, {}).tolist()  # unrecognised values use the unknown category
    for age in (-3, 400, "old"):
        with pytest.raises(zoo.ZooError, match="age must be"):
            inference.encode_metadata(loaded, {"age": age})
    assert inference.encode_metadata(cache.get(entries["lenet5-scratch-digits"]), {"age": 3}) is None


# --- comparisons ---------------------------------------------------------------------------------------------

def test_compare_records_and_agreement(entries, cache):
    image = load_image(packaged_examples()["ct"])
    comparison = compare(image, [entries[m] for m in DIGIT_MODELS], cache, top_k=3)
    records = comparison.records()
    assert [r["model"] for r in records] == DIGIT_MODELS
    for record, result in zip(records, comparison.results):
        assert record["error"] is None and len(record["top_k"]) == 3
        assert set(record["top_k"][0]) == {"label", "probability"}
        assert record["latency_ms"] > 0 and record["cam_ms"] > 0
        assert record["params_total"] >= record["params_trainable"] > 0
        assert record["mode"] in zoo.MODES and result.heatmap is not None
        json.dumps(record)  # JSON-ready
    tops = {r.top_label for r in comparison.results}
    summary = comparison.summary
    assert summary.unanimous == (len(tops) == 1)
    assert ("agree" in summary.markdown) if len(tops) == 1 else ("disagree" in summary.markdown)
    assert sum(len(v) for v in summary.votes.values()) == 3
    assert comparison.image_info["modality"] == "CT" and comparison.image_info["window_width"] > 0


def test_a_failing_model_reports_its_error_while_the_others_answer(entries, cache):
    image = load_image(packaged_examples()["retina"])
    chosen = [entries["lenet5-scratch-digits"], entries[BROKEN], entries[UNFINISHED], entries["lite0-fe-digits"]]
    comparison = compare(image, chosen, cache)
    by_id = {r.model: r for r in comparison.results}
    assert by_id[BROKEN].error and "could not be loaded" in by_id[BROKEN].error and "safetensors" in by_id[BROKEN].error
    assert by_id[UNFINISHED].error and "unavailable" in by_id[UNFINISHED].error
    assert not by_id[BROKEN].top_k and by_id[BROKEN].heatmap is None
    for ok in ("lenet5-scratch-digits", "lite0-fe-digits"):
        assert by_id[ok].error is None and by_id[ok].top_k and by_id[ok].heatmap is not None
    assert set(comparison.summary.failed) == {BROKEN, UNFINISHED}
    assert f"`{BROKEN}` failed" in comparison.summary.markdown


def test_a_different_label_set_is_flagged(entries, cache):
    image = load_image(packaged_examples()["retina"])
    chosen = [entries["lenet5-scratch-digits"], entries["lite0-fe-digits"], entries["lenet5-meta-lesions"]]
    comparison = compare(image, chosen, cache, metadata={"age": 50})
    meta = comparison.results[2]
    assert meta.label_set_differs and comparison.summary.differing_label_sets == ["lenet5-meta-lesions"]
    assert meta.top_label in LESIONS and "Different label set" in comparison.summary.markdown
    assert not comparison.results[0].label_set_differs
    assert sum(len(v) for v in comparison.summary.votes.values()) == 2  # the lesion model is not counted


@pytest.mark.parametrize("count", [0, 1, 7])
def test_selection_must_hold_two_to_six_models(count):
    with pytest.raises(zoo.ZooError, match=r"Select 2 to 6 models to compare; \d+ selected"):
        check_selection([f"m{i}" for i in range(count)])
    assert check_selection(["a", "b", "a"]) == ["a", "b"]
    with pytest.raises(zoo.ZooError, match="1 selected"):
        check_selection(["a", "a"])  # a model picked twice counts once


def test_agreement_summary_cases():
    def result(name, label, labels=("0", "1")):
        return inference.ModelResult(model=name, label_names=list(labels), top_k=[(label, 0.9)])
    agree = agreement_summary([result("a", "1"), result("b", "1")])
    assert agree.unanimous and "All 2 models agree: `1`" in agree.markdown
    split = agreement_summary([result("a", "1"), result("b", "1"), result("c", "0")])
    assert not split.unanimous and "Most say `1` (2 of 3)" in split.markdown
    assert split.votes == {"1": ["a", "b"], "0": ["c"]}
    tie = agreement_summary([result("a", "1"), result("b", "0")])
    assert "No majority" in tie.markdown
    failed = agreement_summary([inference.ModelResult(model="x", error="boom"), result("a", "1")])
    assert failed.failed == ["x"] and "boom" in failed.markdown


def test_agreement_summary_leaves_ood_flagged_models_out_and_counts_them():
    def result(name, label, flagged=None):
        ood = None if flagged is None else {"score": 0.5 if flagged else 0.01, "threshold": 0.1, "flagged": flagged}
        return inference.ModelResult(model=name, label_names=["0", "1"], top_k=[(label, 0.9)], ood=ood)
    summary = agreement_summary([result("a", "1", False), result("b", "1"), result("c", "0", True)])
    assert summary.unanimous and summary.votes == {"1": ["a", "b"]} and summary.flagged == ["c"]
    assert "All 2 remaining models agree: `1`" in summary.markdown
    assert "1 of 3 models flagged this image** as unlike the images they were trained on and are left out: `c`" \
        in summary.markdown
    everyone = agreement_summary([result("a", "1", True), result("b", "0", True)])
    assert everyone.flagged == ["a", "b"] and not everyone.votes
    assert "No meaningful answer" in everyone.markdown and "2 of 2 models flagged" in everyone.markdown


# --- inputs --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ct", "mr"])
def test_dicom_examples_are_windowed_and_classified(entries, cache, name):
    image = load_image(packaged_examples()[name])
    info = image.info
    assert info["format"] == "DICOM" and info["modality"] in ("CT", "MR")
    assert info["window_source"] and info["window_width"] and image.image.mode == "L"
    comparison = compare(image, [entries["lenet5-scratch-digits"], entries["lite0-fe-digits"]], cache,
                                   cam=False)
    assert all(r.error is None and r.top_k for r in comparison.results)


def test_bad_inputs_are_refused_with_a_clear_message(tmp_path):
    for name, (path, phrase) in bad_inputs(tmp_path).items():
        with pytest.raises(ImageLoadError) as caught:
            load_image(path)
        message = str(caught.value)
        assert name in message and phrase.lower() in message.lower(), message


def test_unusual_inputs_are_converted_and_classified(entries, cache, tmp_path):
    chosen = [entries["lenet5-scratch-digits"], entries["lite0-fe-digits"]]
    for name, path in convertible_inputs(tmp_path).items():
        image = load_image(path)
        assert image.image.mode in ("L", "RGB"), name
        comparison = compare(image, chosen, cache, cam=False)
        assert all(r.error is None and r.top_k for r in comparison.results), name
    deep = np.asarray(load_image(tmp_path / "deep16.png").image)
    assert deep.min() == 0 and deep.max() == 255  # 16-bit scaled to the full range, not clipped to white


def test_inference_and_catalog_import_no_ui_code():
    import subprocess
    import sys
    from pathlib import Path
    code = ("import sys, zoo.inference, zoo.catalog; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('gradio', 'gradio_client', 'train', 'app')]; print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_teaching_tab_reads_the_study_reports_that_exist(tmp_path):
    from ui.teaching import study_reports

    assert study_reports(tmp_path) == []
    folder = tmp_path / "studies" / "imbalance"
    folder.mkdir(parents=True)
    (folder / "report.md").write_text("# Imbalance\n\n| remedy | bal. acc. |\n|---|---|\n| plain-ce | 0.948 |\n"
                                      "![plot](imbalance.png)\n")
    (title, text), = study_reports(tmp_path)
    assert title == "imbalance" and "| plain-ce | 0.948 |" in text and "![plot]" not in text
