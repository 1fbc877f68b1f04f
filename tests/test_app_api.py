"""The app served on 127.0.0.1 and called with gradio_client: /compare on real example images, bad inputs,
limits, and what the server will and will not serve."""
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from _app_zoo import (BROKEN, TINY_MODELS, bad_inputs, build_tiny_zoo, convertible_inputs,  # noqa: E402
                      packaged_examples, zoo_of)
from _serve import serve  # noqa: E402

RECORD_FIELDS = {"model", "top_k", "latency_ms", "params_total", "params_trainable", "mode", "error",
                 "calibrated_top_k", "temperature", "prediction_set", "ood", "ood_reason"}
OOD_FIELDS = {"score", "threshold", "flagged"}
DIGIT_MODELS = ["lenet5-scratch-digits", "lite0-fe-digits", "quadsnet-scratch-digits"]
TRAINED = "lenet5-digits-trained"  # the session's real LeNet-5 digits run, with its trust statistics


def check_trust_fields(record: dict) -> None:
    """The trust part of a record: each piece present and well-formed, or null (OOD: with the reason)."""
    if record["ood"] is None:
        assert isinstance(record["ood_reason"], str) and record["ood_reason"], record
    else:
        assert set(record["ood"]) == OOD_FIELDS and isinstance(record["ood"]["flagged"], bool)
        assert 0 <= record["ood"]["score"] <= 2 and 0 < record["ood"]["threshold"] <= 2
        assert record["ood"]["flagged"] == (record["ood"]["score"] > record["ood"]["threshold"])
    if record["temperature"] is None:
        assert record["calibrated_top_k"] is None and record["prediction_set"] is None
    else:
        assert record["temperature"] > 0
        calibrated = record["calibrated_top_k"]
        assert [c["label"] for c in calibrated] == [t["label"] for t in record["top_k"]]  # T keeps the order
        assert 0 < sum(c["probability"] for c in calibrated) <= 1.0001
        assert record["prediction_set"] is None or isinstance(record["prediction_set"], list)
MAX_FILE_SIZE = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def served(tmp_path_factory, digits_run):
    """(app module, demo, url, client) for the tiny zoo and the trained digits run, with a 2 MB upload limit."""
    import app
    from gradio_client import Client

    weights = build_tiny_zoo(tmp_path_factory.getbasetemp() / "app-zoo")
    catalog = tmp_path_factory.mktemp("catalog") / "catalog.json"
    catalog.write_text(json.dumps({"models": [{"id": TRAINED, "source": "local", "path": str(digits_run.run_dir)}]}))
    settings = app.Settings(weights=weights, catalog=catalog, examples_dir=tmp_path_factory.mktemp("examples"),
                            max_file_size=f"{MAX_FILE_SIZE}b", queue_size=5)
    demo, url = serve(settings)
    client = Client(url, verbose=False)
    yield app, demo, url, client
    client.close() if hasattr(client, "close") else None
    demo.close()


def compare(client, path, models, age=None, sex="", site="", top_k=5):
    from gradio_client import handle_file
    return client.predict(handle_file(str(path)), models, age, sex, site, top_k, api_name="/compare")


def test_only_batch_compare_and_train_are_public_api(served):
    _, _, _, client = served
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert sorted(endpoints) == ["/batch", "/compare", "/train"]
    train = [p["parameter_name"] for p in endpoints["/train"]["parameters"]]
    assert train == ["data", "dataset", "backbones", "mode", "img_size", "epochs"]


@pytest.mark.parametrize("example", ["retina", "ct", "mr"])
def test_compare_on_real_example_images(served, example):
    _, demo, _, client = served
    records = compare(client, packaged_examples()[example], DIGIT_MODELS, top_k=3)
    assert [r["model"] for r in records] == DIGIT_MODELS
    entries = demo.zoo_app.entries
    for record in records:
        assert RECORD_FIELDS <= set(record) and record["error"] is None
        assert len(record["top_k"]) == 3 and all(set(t) == {"label", "probability"} for t in record["top_k"])
        assert 0 < sum(t["probability"] for t in record["top_k"]) <= 1.0001
        assert record["latency_ms"] > 0
        entry = entries[record["model"]]
        assert (record["params_total"], record["params_trainable"]) == entry.params
        assert record["mode"] == entry.mode
        # the run folders have a verified model.onnx: ONNX Runtime answers, and the record says so
        assert record["backend"] == "onnx" and record["backend_note"].startswith("ONNX Runtime")
        check_trust_fields(record)  # the tiny models have no trust statistics: null with the reason
        assert record["ood"] is None and "no OOD statistics" in record["ood_reason"]


@pytest.mark.parametrize("example, flagged", [("retina", True), ("ct", True), ("mr", True), ("digit", False)])
def test_records_carry_calibration_the_prediction_set_and_the_ood_check(served, example, flagged):
    _, demo, _, client = served
    # the first example is medical where those assets are installed: take a digit's
    digit = next(e[0] for e in demo.zoo_app.examples if e[1].startswith("digit"))
    path = digit if example == "digit" else packaged_examples()[example]
    trained, untrained = compare(client, path, [TRAINED, DIGIT_MODELS[0]], top_k=3)
    for record in (trained, untrained):
        assert RECORD_FIELDS <= set(record) and record["error"] is None
        check_trust_fields(record)
    assert trained["ood"]["flagged"] is flagged, trained["ood"]
    config = json.loads((demo.zoo_app.entries[TRAINED].run_dir / "config.json").read_text())["zoo"]
    assert trained["temperature"] == config["temperature"] and trained["prediction_set_coverage"] == 0.9
    assert set(trained["prediction_set"]) <= set(map(str, range(10)))
    assert trained["test_ece"]["after"] <= trained["test_ece"]["before"] and trained["test_ece"]["n"] == 270
    assert untrained["ood"] is None and untrained["temperature"] is None


def test_compare_with_digit_example_is_deterministic_and_cached(served):
    _, demo, _, client = served
    digit = next(e.path for e in demo.zoo_app.examples if e.path.endswith(".png"))
    first = compare(client, digit, DIGIT_MODELS[:2])
    loads = demo.zoo_app.cache.loads
    second = compare(client, digit, DIGIT_MODELS[:2])
    assert [r["top_k"] for r in first] == [r["top_k"] for r in second]
    assert demo.zoo_app.cache.loads == loads  # the second prediction reloads nothing
    assert all(r["load_ms"] is None for r in second)


def test_model_ids_as_comma_separated_text(served):
    _, _, _, client = served
    records = compare(client, packaged_examples()["ct"], ",".join(DIGIT_MODELS[:2]))
    assert [r["model"] for r in records] == DIGIT_MODELS[:2]


def test_keyword_arguments_and_defaults(served):
    from gradio_client import handle_file
    _, _, _, client = served
    records = client.predict(image=handle_file(str(packaged_examples()["mr"])), models=DIGIT_MODELS[:2],
                             api_name="/compare")
    assert [r["model"] for r in records] == DIGIT_MODELS[:2] and len(records[0]["top_k"]) == 5


def test_heatmaps_flag_gives_each_record_its_heatmap_file_and_its_source(served):
    from gradio_client import handle_file
    from PIL import Image
    _, _, _, client = served
    image = handle_file(str(packaged_examples()["ct"]))
    plain = client.predict(image=image, models=DIGIT_MODELS[:2], api_name="/compare")
    assert all("heatmap" not in r and r["heatmap_source"] is None for r in plain)  # off by default, as before
    records = client.predict(image=image, models=DIGIT_MODELS[:2], heatmaps=True, api_name="/compare")
    for record in records:
        assert record["cam_error"] is None, record
        with Image.open(record["heatmap"]) as picture:  # downloaded by the client, as Gradio returns files
            assert picture.format == "PNG" and picture.width >= 224
        # the tiny zoo's LeNet-5 and Lite0 at 32 px end in a 1x1 map: no closed form there, PyTorch's Grad-CAM
        # draws them, and the record says why
        assert record["heatmap_source"].startswith("torch (its last feature map is 1x1, under 3 px a side"), record


def test_metadata_reaches_the_metadata_head(served):
    _, _, _, client = served
    path = packaged_examples()["retina"]
    models = ["lenet5-meta-lesions", "lenet5-scratch-digits"]
    unknown = compare(client, path, models)[0]
    given = compare(client, path, models, age=72, sex="female", site="face")[0]
    assert unknown["error"] is None and given["error"] is None
    assert unknown["top_k"] != given["top_k"]


@pytest.mark.parametrize("models", [[], ["lenet5-scratch-digits"], [f"m{i}" for i in range(7)]])
def test_two_to_six_models(served, models):
    from gradio_client.exceptions import AppError
    _, _, _, client = served
    with pytest.raises(AppError, match="Select 2 to 6 models"):
        compare(client, packaged_examples()["ct"], models)


def test_failing_and_unknown_models_report_errors_while_others_answer(served):
    _, _, _, client = served
    records = compare(client, packaged_examples()["ct"], ["lenet5-scratch-digits", BROKEN, "no-such-model"])
    by_id = {r["model"]: r for r in records}
    assert by_id["lenet5-scratch-digits"]["error"] is None and by_id["lenet5-scratch-digits"]["top_k"]
    assert "could not be loaded" in by_id[BROKEN]["error"]
    assert "no model with id 'no-such-model'" in by_id["no-such-model"]["error"]


def test_bad_inputs_give_clear_errors_and_the_app_stays_up(served, tmp_path):
    from gradio_client.exceptions import AppError
    _, _, _, client = served
    for name, (path, phrase) in bad_inputs(tmp_path).items():
        with pytest.raises(AppError) as caught:
            compare(client, path, DIGIT_MODELS[:2])
        message = str(caught.value)
        assert name in message and phrase.lower() in message.lower(), message
    records = compare(client, packaged_examples()["ct"], DIGIT_MODELS[:2])
    assert all(r["error"] is None for r in records)


def test_unusual_images_are_converted(served, tmp_path):
    _, _, _, client = served
    for name, path in convertible_inputs(tmp_path).items():
        records = compare(client, path, DIGIT_MODELS[:2], top_k=1)
        assert all(r["error"] is None and r["top_k"] for r in records), name


def test_upload_over_the_size_limit_is_refused(served, tmp_path):
    import httpx
    _, _, url, client = served
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(MAX_FILE_SIZE + 1024))
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # the client knows the limit
        compare(client, big, DIGIT_MODELS[:2])
    with big.open("rb") as f:  # and the server enforces it for any other client
        response = httpx.post(f"{url}gradio_api/upload", files={"files": ("big.png", f, "image/png")}, timeout=30)
    assert response.status_code == 413, response.text
    assert compare(client, packaged_examples()["ct"], DIGIT_MODELS[:2])[0]["error"] is None


def _get(url: str, path) -> tuple[int, str | None, str | None]:
    """(status, content type, content disposition) of the app's file route for `path`."""
    try:
        with urllib.request.urlopen(f"{url}gradio_api/file={quote(str(path))}") as response:
            return response.status, response.headers.get("content-type"), response.headers.get("content-disposition")
    except urllib.error.HTTPError as e:
        return e.code, None, None


def test_only_the_upload_cache_and_the_example_images_are_served(served):
    import gradio.processing_utils as gr_processing
    app, demo, url, _ = served
    settings, state = demo.zoo_app.settings, demo.zoo_app
    xray = next(e.path for e in state.examples if e.true_label == "PNEUMONIA")
    assert _get(url, xray)[:2] == (200, "image/jpeg")
    for secret in (app.__file__, settings.weights / "lenet5-scratch-digits" / "config.json",
                   settings.weights / "lenet5-scratch-digits" / "model.safetensors", "/etc/passwd"):
        assert _get(url, secret)[0] in (403, 404), secret
    # the examples folder: private to this process; a file planted there, or a DICOM example, is not served from it
    assert state.examples_dir.parent == settings.examples_dir and oct(state.examples_dir.stat().st_mode)[-3:] == "700"
    planted = state.examples_dir / "page.html"
    planted.write_text("<script>alert(document.domain)</script>")
    ct = next(e.path for e in state.examples if e.path.endswith("CT_small.dcm"))
    assert _get(url, planted)[0] == 403 and _get(url, ct)[0] == 403
    # the page gets the DICOM example through Gradio's cache, as a download, never shown inline
    cached = gr_processing.move_resource_to_block_cache(ct, demo)
    status, content_type, disposition = _get(url, cached)
    assert status == 200 and content_type == "application/octet-stream" and disposition.startswith("attachment")


def test_queue_and_limits_are_configured(served):
    _, demo, _, _ = served
    assert demo._queue.max_size == 5
    assert demo.max_file_size == MAX_FILE_SIZE
    assert set(TINY_MODELS) <= set(demo.zoo_app.entries)


def test_settings_from_the_environment(monkeypatch, tmp_path):
    import gradio as gr

    from ui.formatting import models_table_markdown
    from ui.settings import Settings, SettingsError
    from ui.state import ComparisonApp
    monkeypatch.setenv("ZOO_APP_CACHE_MODELS", "3")
    monkeypatch.setenv("ZOO_APP_MAX_PIXELS", "1000")
    monkeypatch.setenv("ZOO_APP_WEIGHTS", str(tmp_path / "none"))
    monkeypatch.setenv("ZOO_APP_EXAMPLES", str(tmp_path / "examples"))
    settings = Settings.from_env()
    assert settings.cache_models == 3 and settings.max_pixels == 1000
    state = ComparisonApp(settings)  # no run folders: the app still starts, with the examples
    assert state.entries == {} and len(state.examples) == 8 + 3 + 5 + 1 + 3  # X-rays and MRIs, retina/CT/MR, pydicom-data, MNI, digits
    assert "No models yet" in models_table_markdown([])
    with pytest.raises(gr.Error, match="over the limit of 1,000 pixels"):
        state.read_image(str(packaged_examples()["ct"]))  # 128 x 128 > 1000
    assert state.cache.backend == "onnx"  # the default
    monkeypatch.setenv("ZOO_APP_BACKEND", "torch")
    assert ComparisonApp(Settings.from_env()).cache.backend == "torch"
    monkeypatch.setenv("ZOO_APP_BACKEND", "tensorrt")
    with pytest.raises(SettingsError, match="ZOO_APP_BACKEND='tensorrt' is not a backend; set it to one of onnx, "
                                            "onnx-int8, torch"):
        Settings.from_env()
    monkeypatch.delenv("ZOO_APP_BACKEND")
    monkeypatch.setenv("ZOO_APP_CACHE_MODELS", "many")
    with pytest.raises(SettingsError, match="ZOO_APP_CACHE_MODELS='many' must be a whole number"):
        Settings.from_env()


# --- the medical demo: imported chest X-ray and brain MRI classifiers ----------------------------------------------

@pytest.fixture(scope="module")
def medical_demo(medical_zoo, tmp_path_factory):
    """The app over the two imported Keras classifiers and one digits model."""
    import app
    tiny = build_tiny_zoo(tmp_path_factory.getbasetemp() / "app-zoo")
    weights = zoo_of(tmp_path_factory.mktemp("medical-api-zoo"), *medical_zoo[1].values(),
                     tiny / "lenet5-scratch-digits")
    return app.build_demo(app.Settings(weights=weights, examples_dir=tmp_path_factory.mktemp("medical-examples")))


def test_medical_models_are_the_default_and_an_example_xray_says_which_models_were_right(medical_demo, tmp_path):
    state = medical_demo.zoo_app
    assert state.default_selection() == ["pneumonia-xception", "braintumor-xception"]
    models = next(b for b in medical_demo.blocks.values() if getattr(b, "elem_id", None) == "models")
    assert models.value == ["pneumonia-xception", "braintumor-xception"]  # what the page shows ticked
    xray = next(e for e in state.examples if e.true_label == "PNEUMONIA")
    assert "true label PNEUMONIA: " in xray.caption
    copy = tmp_path / "from-gradio-cache.jpeg"  # Gradio hands the callback a copy: the label follows the bytes
    copy.write_bytes(Path(xray.path).read_bytes())
    assert state.true_label(str(copy)) == "PNEUMONIA"
    assert state.true_label(str(packaged_examples()["retina"])) is None  # unlabelled, as every upload
    ids = ["pneumonia-xception", "braintumor-xception", "lenet5-scratch-digits"]
    comparison = state.compare(str(copy), ids, cam=False, true_label=state.true_label(str(copy)))
    assert comparison.results[0].top_label == "PNEUMONIA"  # Keras's own answer for this X-ray
    assert comparison.summary.verdicts == {"right": ["pneumonia-xception"], "wrong": [],
                                           "not_applicable": ["braintumor-xception", "lenet5-scratch-digits"]}
    first = comparison.summary.markdown.splitlines()[0]
    assert first == ("**True label: `PNEUMONIA`** — right: `pneumonia-xception`; wrong: none; not applicable "
                     "(`PNEUMONIA` is not among their classes): `braintumor-xception`, `lenet5-scratch-digits`.")
    assert "True label" not in state.compare(str(copy), ids, cam=False).summary.markdown  # an upload: no label


def test_true_label_verdicts_ignore_case_and_name_wrong_models():
    from ui.comparison import agreement_summary
    from zoo.inference import ModelResult
    results = [ModelResult(model="a", label_names=["normal", "pneumonia"], top_k=[("normal", 0.9)]),
               ModelResult(model="b", label_names=["NORMAL", "PNEUMONIA"], top_k=[("PNEUMONIA", 0.6)]),
               ModelResult(model="c", label_names=["0", "1"], top_k=[("1", 0.7)]),
               ModelResult(model="d", label_names=["NORMAL", "PNEUMONIA"], error="broken")]
    summary = agreement_summary(results, true_label="PNEUMONIA")
    assert summary.verdicts == {"right": ["b"], "wrong": ["a"], "not_applicable": ["c"]}
    assert summary.markdown.startswith("**True label: `PNEUMONIA`** — right: `b`; wrong: `a`; not applicable")
