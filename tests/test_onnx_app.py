"""The app's inference on ONNX Runtime: the same records as on PyTorch (top-1, probabilities, calibration,
prediction sets, the OOD check), PyTorch only for Grad-CAM and only when a heatmap is asked for, a bad
model.onnx falling back for its model alone, and a cache budget that counts what each model holds."""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo import inference
from ui.comparison import compare
from zoo.catalog import discover_models
from zoo.images import LoadedImage, load_image, to_model_mode
from zoo.run_layout import ONNX_NAME
from zoo.trust import features_and_logits, write_ood_statistics

from _app_zoo import TINY_MODELS, build_tiny_zoo, packaged_examples
from _onnx_graphs import write_graph

pytest.importorskip("onnxruntime")

METADATA = {"age": 50, "sex": "male", "site": "face"}
# differ by nature between backends (heatmap_source, like backend_note, names the backend and why it answered)
VOLATILE = ("latency_ms", "load_ms", "cam_ms", "backend", "backend_note", "heatmap_source")


def _digits(n: int) -> list[Image.Image]:
    from sklearn.datasets import load_digits
    return [Image.fromarray(np.rint(d * (255 / 16)).astype(np.uint8), mode="L") for d in load_digits().images[:n]]


def _add_trust(folder) -> None:
    """Temperature, a conformal threshold and OOD statistics (features of 24 digits), as train.trust writes them."""
    model = zoo.load_pretrained(folder)
    data_config = zoo.resolve_data_config(model)
    transform = inference.build_transform(data_config)
    x = torch.stack([transform(to_model_mode(i, data_config["input_size"][0])) for i in _digits(24)])
    with torch.inference_mode():
        features, _ = features_and_logits(model, x)
    write_ood_statistics(folder, features, 0.35)
    config = json.loads((folder / "config.json").read_text())
    config["zoo"].update(temperature=1.7, conformal={"alpha": 0.1, "threshold": 0.85, "n_calibration": 50})
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def trusted(tmp_path_factory):
    """The tiny zoo's models (with their verified model.onnx) and trust statistics, in a folder of their own."""
    source = build_tiny_zoo(tmp_path_factory.getbasetemp() / "app-zoo")
    weights = tmp_path_factory.mktemp("trusted-zoo")
    for run in TINY_MODELS:
        shutil.copytree(source / run, weights / run)
        _add_trust(weights / run)
    return weights


def _entries(weights):
    return [e for e in discover_models(weights) if e.available]


def _images():
    examples = packaged_examples()
    import skimage
    return {"retina": load_image(examples["retina"]), "ct": load_image(examples["ct"]), "mr": load_image(examples["mr"]),
            "chelsea": load_image(f"{skimage.data_dir}/chelsea.png"), "digit": LoadedImage(_digits(30)[-1])}


def _assert_same_record(onnx_record: dict, torch_record: dict) -> None:
    assert onnx_record["error"] is None and torch_record["error"] is None, (onnx_record["error"], torch_record["error"])
    for key in ("top_k", "calibrated_top_k"):
        assert [t["label"] for t in onnx_record[key]] == [t["label"] for t in torch_record[key]], key
        np.testing.assert_allclose([t["probability"] for t in onnx_record[key]],
                                   [t["probability"] for t in torch_record[key]], atol=1e-4, err_msg=key)
    assert onnx_record["ood"]["score"] == pytest.approx(torch_record["ood"]["score"], abs=1e-4)
    assert onnx_record["ood"]["flagged"] == torch_record["ood"]["flagged"]
    rest = {k: v for k, v in onnx_record.items() if k not in (*VOLATILE, "top_k", "calibrated_top_k", "ood")}
    assert rest == {k: torch_record[k] for k in rest}  # prediction set, temperature, reasons, params, ...


def test_onnx_and_pytorch_backends_give_the_same_records(trusted):
    entries = _entries(trusted)
    onnx_cache, torch_cache = inference.ModelCache(backend="onnx"), inference.ModelCache(backend="torch")
    flagged = set()
    for name, image in _images().items():
        on_onnx = compare(image, entries, onnx_cache, METADATA, top_k=3, cam=False).records()
        on_torch = compare(image, entries, torch_cache, METADATA, top_k=3, cam=False).records()
        for a, b in zip(on_onnx, on_torch):
            assert (a["backend"], b["backend"]) == ("onnx", "torch"), a["backend_note"]
            assert a["backend_note"].startswith("ONNX Runtime") and b["backend_note"].startswith("PyTorch")
            _assert_same_record(a, b)
            flagged.add(a["ood"]["flagged"])
    assert flagged == {True, False}  # the check said both things, the same on both backends
    assert not any(onnx_cache.get(e).torch_loaded for e in entries)  # answered without building PyTorch


def test_a_comparison_without_heatmaps_never_builds_the_pytorch_model(trusted):
    entries = _entries(trusted)
    cache = inference.ModelCache()
    image = _images()["ct"]
    comparison = compare(image, entries, cache, METADATA, cam=False)
    assert all(r.heatmap is None and r.backend == "onnx" for r in comparison.results)
    loaded = [cache.get(e) for e in entries]
    assert not any(m.torch_loaded or m.cam_ready for m in loaded)
    assert [m.nbytes for m in loaded] == [m.backend.onnx_bytes for m in loaded]
    comparison = compare(image, entries, cache, METADATA, cam=True)
    assert all(r.heatmap is not None and r.cam_error is None and r.load_ms is not None for r in comparison.results)
    assert all(m.torch_loaded and m.nbytes > m.backend.onnx_bytes for m in loaded)  # the budget counts both
    again = compare(image, entries, cache, METADATA, cam=True)
    assert all(r.load_ms is None for r in again.results)  # built once


def test_the_cache_budget_counts_the_pytorch_model_grad_cam_built(trusted):
    first, second = _entries(trusted)[:2]
    sizes = inference.ModelCache()
    budget = sizes.get(first).nbytes + sizes.get(second).nbytes
    cache = inference.ModelCache(max_bytes=budget)
    image = load_image(packaged_examples()["ct"]).image
    inference.run_model(first, image, cache, cam=True)  # builds first's PyTorch model: over the budget now
    inference.run_model(second, image, cache, cam=False)
    assert cache.is_loaded(second) and not cache.is_loaded(first)


def test_a_bad_model_onnx_falls_back_to_pytorch_for_that_model_only(trusted, tmp_path):
    weights = tmp_path / "weights"
    shutil.copytree(trusted, weights)
    (weights / "lite0-fe-digits" / ONNX_NAME).write_bytes(b"\x08\x07not an onnx file" * 40)
    entries = _entries(weights)
    image = _images()["retina"]
    records = {r["model"]: r for r in compare(image, entries, inference.ModelCache(), METADATA).records()}
    bad = records["lite0-fe-digits"]
    assert bad["backend"] == "torch" and bad["error"] is None
    assert "ONNX Runtime not used" in bad["backend_note"] and "not a valid ONNX file" in bad["backend_note"]
    assert {m: r["backend"] for m, r in records.items() if m != "lite0-fe-digits"} == \
        {m: "onnx" for m in records if m != "lite0-fe-digits"}
    reference = compare(image, entries, inference.ModelCache(backend="torch"), METADATA).records()
    _assert_same_record(records["lite0-fe-digits"], next(r for r in reference if r["model"] == "lite0-fe-digits"))


def test_a_model_onnx_from_before_the_features_output_answers_without_an_ood_check(trusted, tmp_path):
    weights = tmp_path / "weights"
    for run in ("lenet5-scratch-digits", "quadsnet-scratch-digits"):
        shutil.copytree(trusted / run, weights / run)
    write_graph(weights / "lenet5-scratch-digits", "logits_only")
    entries = _entries(weights)
    image = _images()["mr"]
    on_onnx = {r["model"]: r for r in compare(image, entries, inference.ModelCache(), cam=False).records()}
    on_torch = {r["model"]: r for r in compare(image, entries, inference.ModelCache(backend="torch"),
                                                         cam=False).records()}
    old = on_onnx["lenet5-scratch-digits"]
    assert old["backend"] == "onnx" and old["ood"] is None
    assert old["ood_reason"].startswith("no OOD check on ONNX for this file") and "python -m zoo export" in old["ood_reason"]
    assert "no OOD check on ONNX" in old["backend_note"]
    assert old["prediction_set"] == on_torch["lenet5-scratch-digits"]["prediction_set"]  # the rest of trust works
    assert on_onnx["quadsnet-scratch-digits"]["ood"] is not None
    _assert_same_record(on_onnx["quadsnet-scratch-digits"], on_torch["quadsnet-scratch-digits"])


def test_the_backend_is_explicit_and_checked():
    with pytest.raises(zoo.ZooError, match="unknown inference backend 'gpu'"):
        inference.ModelCache(backend="gpu")
    assert inference.ModelCache().backend == inference.DEFAULT_BACKEND == "onnx"
