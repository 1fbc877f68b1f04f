"""Grad-CAM from the ONNX graph (zoo.onnx_cam): the closed-form map equals pytorch-grad-cam's on the PyTorch model
for every head with a closed form, is made without building the PyTorch model, and the other heads fall back to
PyTorch saying why."""
import shutil
import warnings

import numpy as np
import pytest
import torch

import zoo
from zoo import inference
from zoo.catalog import discover_models
from zoo.images import load_image
from zoo.onnx_cam import CAM_FALLBACKS
from zoo.onnx_export import ONNX_INFO_VERSION, read_onnx_info

from _app_zoo import packaged_examples
from _onnx_graphs import write_graph

pytest.importorskip("onnxruntime")
pytest.importorskip("pytorch_grad_cam")

SIZE = 48  # LeNet-5's C5 map is 5x5 at 48 px: a map Grad-CAM can use (it is 1x1 at 32 px)
SCHEMA = dict(sex=["female", "male"], site=["back", "face", "hand"])
# run -> (create_model kwargs, the closed form the export must find, or None for a fallback)
RUNS = {
    "lenet-mlp": (dict(head="mlp", mlp_hidden=16), "mlp"),
    "lenet-metadata": (dict(head="metadata", metadata_hidden=8, metadata_schema=SCHEMA), "linear"),
    "lenet-attention": (dict(head="soft_attention", attention_heads=2), "linear"),
    "lenet-plain": ({}, None),  # LeNet-5's own head: pooled C5 -> F6 -> tanh -> classifier
}


@pytest.fixture(scope="module")
def cam_zoo(tmp_path_factory):
    """A folder of exported runs, one per head (random weights: the maps' agreement is what is tested)."""
    root = tmp_path_factory.mktemp("cam-zoo")
    for seed, (run, (kwargs, _)) in enumerate(RUNS.items()):
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = zoo.create_model("lenet5", num_classes=3, mode="scratch", **kwargs)
        model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (1, SIZE, SIZE)}
        zoo.save_pretrained(model.eval(), root / run, label_names=["benign", "malignant", "other"], dataset="toy")
        zoo.export_onnx(root / run)
    return root


def _maps(folder, image_path, metadata=None):
    """{model id: (closed-form heatmap, pytorch-grad-cam's mask, PyTorch built before the latter?)}."""
    cache = inference.ModelCache(max_models=8)
    image = load_image(image_path).image
    out = {}
    for entry in discover_models(folder):
        loaded = cache.get(entry)
        prediction = inference.predict(loaded, image, metadata)
        cam = inference.heatmap(loaded, prediction)
        built = loaded.torch_loaded
        out[entry.id] = (cam, inference.grad_cam(loaded, prediction), built)
    return out


def _same_map(cam, reference) -> None:
    a, b = cam.mask.astype(np.float64).ravel(), reference.astype(np.float64).ravel()
    cosine = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    assert cosine >= 0.999, cosine
    assert np.unravel_index(cam.mask.argmax(), cam.mask.shape) == np.unravel_index(reference.argmax(), reference.shape)


@pytest.mark.parametrize("image", ["ct", "retina"])
def test_closed_form_maps_equal_pytorch_grad_cams_without_building_pytorch(cam_zoo, image):
    maps = _maps(cam_zoo, packaged_examples()[image], {"age": 60, "sex": "male", "site": "face"})
    for run, (_, form) in RUNS.items():
        cam, reference, built = maps[run]
        if form is None:
            continue
        assert cam.source == "onnx" and cam.reason is None and cam.source_note == "onnx", run
        assert not built, f"{run}: the PyTorch model was built for a closed-form heatmap"
        assert cam.mask.shape == reference.shape == (SIZE, SIZE)
        _same_map(cam, reference)


def test_heads_without_a_closed_form_fall_back_to_pytorch_and_say_why(cam_zoo):
    cam, reference, _ = _maps(cam_zoo, packaged_examples()["ct"])["lenet-plain"]
    assert cam.source == "torch" and "(84 inputs, the pooled map has 120)" in cam.reason
    assert "LeNet-5's F6" in cam.source_note
    np.testing.assert_array_equal(cam.mask, reference)


def test_a_file_exported_before_feature_maps_still_answers_and_its_heatmaps_come_from_pytorch(cam_zoo, tmp_path):
    run = tmp_path / "old" / "lenet-mlp"
    shutil.copytree(cam_zoo / "lenet-mlp", run)
    (run / "onnx.json").unlink()
    write_graph(run, "logits_only")  # as exported before `features` and `feature_map` existed
    cam, reference, _ = _maps(run.parent, packaged_examples()["ct"])["lenet-mlp"]
    assert cam.source == "torch" and cam.reason == CAM_FALLBACKS["exported_before"]
    assert cam.reason.startswith("exported before feature maps")
    np.testing.assert_array_equal(cam.mask, reference)


def test_the_export_records_each_heads_form_and_checks_it_against_autograd(cam_zoo):
    for run, (_, form) in RUNS.items():
        info = read_onnx_info(cam_zoo / run)["model.onnx"]
        assert info["format_version"] == ONNX_INFO_VERSION == 3
        assert info["outputs"]["feature_map"][1:] == ([240, 3, 3] if "attention" in run else [120, 5, 5])
        record = info["verification"]["cam"]
        assert record["form"] == form, (run, record)
        if form is not None:
            assert record["gradient_max_rel_diff"] <= 1e-4


def test_the_imported_medical_classifiers_mlp_heads_give_pytorch_grad_cams_map(medical_zoo):
    root, _ = medical_zoo
    for image in ("ct", "retina"):
        for run, (cam, reference, built) in _maps(root, packaged_examples()[image]).items():
            assert cam.source == "onnx" and not built, (run, cam.reason)
            _same_map(cam, reference)


def test_the_app_column_draws_a_closed_form_heatmap_without_pytorch_and_charges_its_first_read_to_loading(cam_zoo):
    entry = {e.id: e for e in discover_models(cam_zoo)}["lenet-mlp"]
    cache = inference.ModelCache()
    image = load_image(packaged_examples()["ct"]).image
    inference.run_model(entry, image, cache, cam=False)  # loaded, no heatmap yet
    first = inference.run_model(entry, image, cache)
    assert first.heatmap_source == "onnx" and first.cam_error is None and first.heatmap is not None
    assert first.load_ms is not None  # reading the head's weights (and the overlay's library) is loading
    assert first.record()["heatmap_source"] == "onnx" and first.cam_layer == "backbone.features.act5"
    again = inference.run_model(entry, image, cache)
    assert again.load_ms is None and not cache.get(entry).torch_loaded
    np.testing.assert_array_equal(again.heatmap, first.heatmap)
