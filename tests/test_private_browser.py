"""Private mode in a real browser (Debian's Chromium through Playwright): the page computes the comparison
itself, equal to the server's /compare records and ONNX Runtime probabilities, its Grad-CAM heatmaps equal to the
server's closed form (zoo.onnx_cam), and no request it makes carries the image or leaves 127.0.0.1."""
import base64
import os
from urllib.parse import urlparse

import nibabel as nib
import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from _app_zoo import TINY_MODELS, packaged_examples  # noqa: E402
from _private_zoo import (CALIBRATED, CAM_MODELS, WITH_MAHALANOBIS, WITH_OOD, build_private_zoo,  # noqa: E402
                          chest_xray, parity_images)
from _serve import browser, needs_chromium, serve  # noqa: E402, F401  (browser: the fixture)
from ui.private import ORT_DIST  # noqa: E402

pytestmark = needs_chromium
MODELS = list(TINY_MODELS)
TOLERANCE = 1e-3
OOD_TOLERANCE = 1e-4  # |score difference| page vs server, every OOD method
CAM_TOLERANCE = 1e-3  # max |map difference| page vs server, both at the model's input size
if not (ORT_DIST / "ort.wasm.min.js").is_file():
    pytestmark = pytest.mark.skip(reason="web/node_modules missing: run npm ci --omit=dev in web/ (.ci/run does it)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import app

    weights = build_private_zoo(tmp_path_factory.getbasetemp() / "private-zoo")
    settings = app.Settings(weights=weights, examples_dir=tmp_path_factory.mktemp("examples"))
    demo, url = serve(settings)
    yield url, weights
    demo.close()


@pytest.fixture(scope="module")
def page(browser, server):
    page = browser.new_page()
    page.set_default_timeout(60_000)
    page.goto(server[0] + "private/")
    page.wait_for_function("document.body.dataset.state === 'ready'")
    yield page
    page.close()


def run_private(page, image, models=MODELS):
    """Tick `models`, choose `image`, compare; -> (results by model id, status text)."""
    for box in page.locator("#models input").all():
        box.set_checked(box.get_attribute("value") in models)
    page.locator("#image").set_input_files(str(image))
    page.evaluate("document.body.dataset.state = 'ready'")
    page.locator("#compare").click()
    page.wait_for_function("document.body.dataset.state === 'done'")
    return page.evaluate("window.zooPrivate.results"), page.locator("#status").inner_text()


def server_probabilities(folder, image):
    """The server's ONNX Runtime probabilities for `image`, with the app's preprocessing."""
    import zoo
    from zoo.images import load_image, to_model_mode
    from zoo.inference import build_transform

    backend = zoo.load_backend(folder, "onnx", export_missing=False)
    assert backend.name == "onnx", backend.fallback_reason
    channels = backend.data_config["input_size"][0]
    x = build_transform(backend.data_config)(to_model_mode(load_image(image).image, channels)).unsqueeze(0)
    logits, _features = backend.predict(x)  # (1, K), (1, D) or None
    return logits.softmax(dim=-1)[0].numpy()


def test_the_private_comparison_equals_compare_and_sends_no_image(page, server, tmp_path):
    from gradio_client import Client, handle_file

    url, _ = server
    client = Client(url, verbose=False)
    flagged, ood_gaps = {}, {}
    for image in (chest_xray(), packaged_examples()["retina"], parity_images(tmp_path)["digit"]):
        data = image.read_bytes()
        # a run of the file's bytes as text, in base64 and base64url, and its first bytes in hex
        needles = [data[1000:1064].decode("latin-1"), base64.b64encode(data[:3000])[100:164].decode(),
                   base64.urlsafe_b64encode(data[:3000])[100:164].decode(), data[:32].hex()]
        requests = []

        def record(request, requests=requests):
            requests.append(request)

        page.on("request", record)
        results, status = run_private(page, image)
        page.remove_listener("request", record)
        assert "4 of 4 models answered" in status and "not uploaded" in status
        for request in requests:  # bundles and ONNX files are cached: mostly nothing at all is requested
            assert urlparse(request.url).hostname == "127.0.0.1", request.url
            assert request.method == "GET" and request.post_data_buffer is None, (request.method, request.url)
            assert not any(needle in request.url for needle in needles), request.url
        records = client.predict(image=handle_file(str(image)), models=MODELS, api_name="/compare")
        for record in records:
            mine = results[record["model"]]
            assert record["error"] is None and mine["error"] is None
            assert mine["top_k"][0]["label"] == record["top_k"][0]["label"]
            for theirs, ours in zip(record["top_k"], mine["top_k"]):
                assert ours["label"] == theirs["label"] or abs(ours["probability"] - theirs["probability"]) < 1e-6
                assert abs(ours["probability"] - theirs["probability"]) <= TOLERANCE
            if record["model"] == CALIBRATED:
                assert record["calibrated_top_k"] and record["prediction_set"] is not None
                assert [p["label"] for p in mine["calibrated_top_k"]][:1] == [record["calibrated_top_k"][0]["label"]]
                for theirs, ours in zip(record["calibrated_top_k"], mine["calibrated_top_k"]):
                    assert abs(ours["probability"] - theirs["probability"]) <= TOLERANCE
                assert mine["prediction_set"] == record["prediction_set"]
            if record["model"] in (WITH_OOD, WITH_MAHALANOBIS):  # the page's OOD check, from the ONNX features
                # output, equals the server's, for each method
                assert record["ood"] is not None and mine["ood"] is not None, (record["ood"], mine.get("ood_reason"))
                ood_gaps[(image.name, record["model"])] = abs(mine["ood"]["score"] - record["ood"]["score"])
                assert ood_gaps[(image.name, record["model"])] <= OOD_TOLERANCE
                assert mine["ood"]["threshold"] == pytest.approx(record["ood"]["threshold"], abs=1e-6)
                assert mine["ood"]["flagged"] == record["ood"]["flagged"]
                if record["model"] == WITH_OOD:
                    flagged[image.name] = mine["ood"]["flagged"]
            else:  # the other runs have no OOD statistics: neither side makes up a check
                assert record["ood"] is None and mine.get("ood") is None and "no OOD" in mine["ood_reason"]
    print("|OOD score difference| page vs server:", ood_gaps)
    # a digits model: the chest X-ray and the photo are unlike its training images, a digit is not
    assert flagged == {chest_xray().name: True, "retina.jpg": True, "digit.png": False}, flagged
    page.screenshot(path="test-artifacts/private-compare.png", full_page=True)


def test_browser_probabilities_equal_onnx_runtimes_on_real_images(page, server, tmp_path):
    _, weights = server
    worst = {}
    for name, image in parity_images(tmp_path).items():
        results, _ = run_private(page, image)
        for model in MODELS:
            expected = server_probabilities(weights / model, image)
            got = np.asarray(results[model]["probabilities"])
            assert int(got.argmax()) == int(expected.argmax()), (name, model)
            worst[(name, model)] = float(np.abs(got - expected).max())
    print("max |Δp| browser vs ONNX Runtime:", max(worst.values()), worst)
    assert max(worst.values()) <= TOLERANCE, worst


def test_bad_image_dicom_and_the_tab_link(page, server, tmp_path):
    from playwright.sync_api import expect

    notes = tmp_path / "notes.png"
    notes.write_text("These are my notes, not an image.\n" * 5)
    _, status = run_private(page, notes)
    assert "cannot decode the file as an image" in status
    _, status = run_private(page, packaged_examples()["ct"])
    assert "DICOM" in status and "Compare tab" in status
    volume = tmp_path / "head.nii"  # a volume is refused as DICOM is: the page has no slices (the Compare tab has)
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), dtype=np.uint8), np.eye(4)), volume)
    _, status = run_private(page, volume)
    assert "head.nii is a NIfTI volume" in status and "Compare tab" in status
    _, status = run_private(page, packaged_examples()["retina"], MODELS[:1])
    assert "Select 2 to 6 models" in status
    page.goto(server[0])
    page.get_by_role("tab", name="Private").click()
    link = page.locator("#private-tab a", has_text="private comparison page")
    expect(link).to_be_visible()
    target = link.evaluate("a => a.href")  # Gradio opens Markdown links in a new tab: follow it here
    assert target == server[0] + "private/"
    page.goto(target)
    page.wait_for_function("document.body.dataset.state === 'ready'")


def test_a_model_the_browser_cannot_load_fails_alone(browser, server):
    context = browser.new_context()  # a fresh cache: the ONNX file is fetched (and damaged) here
    page = context.new_page()
    page.route("**/api/models/lenet5-meta-lesions/model.onnx*",
               lambda route: route.fulfill(status=200, body=b"not an onnx graph" * 10,
                                           headers={"Cross-Origin-Resource-Policy": "same-origin"}))
    page.goto(server[0] + "private/")
    page.wait_for_function("document.body.dataset.state === 'ready'")
    results, status = run_private(page, packaged_examples()["retina"], ["lenet5-meta-lesions", CALIBRATED])
    assert "could not load this model's ONNX file" in results["lenet5-meta-lesions"]["error"]
    assert results[CALIBRATED]["error"] is None and "1 of 2 models answered" in status
    assert "could not load" in page.locator(".column[data-model='lenet5-meta-lesions']").inner_text()
    context.close()


def test_a_browser_without_webassembly_is_told_so(browser, server):
    context = browser.new_context()
    context.add_init_script("delete window.WebAssembly;")
    page = context.new_page()
    page.goto(server[0] + "private/")
    page.wait_for_function("document.body.dataset.state === 'ready'")
    assert "no WebAssembly" in page.locator("#status").inner_text()
    _, status = run_private(page, packaged_examples()["retina"], MODELS[:2])
    assert "no WebAssembly" in status
    context.close()


def test_a_bundle_the_page_cannot_use_fails_its_column_alone(browser, server):
    """A temperature given as a list (a stale or forged bundle: the server no longer offers one) used to abort the
    whole comparison when its column was drawn; now that model fails, saying why, and the other answers."""
    context = browser.new_context()  # a fresh cache: the bundle is fetched (and forged) here

    def forged(route):
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), "temperature": [1.7]})

    page = context.new_page()
    page.route(f"**/api/models/{CALIBRATED}/bundle.json*", forged)
    page.goto(server[0] + "private/")
    page.wait_for_function("document.body.dataset.state === 'ready'")
    results, status = run_private(page, packaged_examples()["retina"], [CALIBRATED, "lenet5-meta-lesions"])
    assert "temperature [1.7] is not a positive number" in results[CALIBRATED]["error"], results[CALIBRATED]
    assert results["lenet5-meta-lesions"]["error"] is None and "1 of 2 models answered" in status, status
    assert "not a positive number" in page.locator(f".column[data-model='{CALIBRATED}']").inner_text()
    context.close()


@pytest.mark.parametrize("version", [1, 3, None])  # 1: a bundle from before heatmaps; 3: a newer app's
def test_a_bundle_of_another_format_is_refused_by_the_page_alone(browser, server, version):
    """A server of a newer app (or one from before bundles were versioned) sends a bundle this page cannot read:
    that model fails, saying so and what to do, and the other model answers."""
    context = browser.new_context()  # a fresh cache: the bundle is fetched (and forged) here

    def other_version(route):
        response = route.fetch()
        bundle = {k: v for k, v in response.json().items() if k != "format_version"}
        route.fulfill(response=response, json=bundle if version is None else {**bundle, "format_version": version})

    page = context.new_page()
    page.route(f"**/api/models/{CALIBRATED}/bundle.json*", other_version)
    page.goto(server[0] + "private/")
    page.wait_for_function("document.body.dataset.state === 'ready'")
    results, status = run_private(page, packaged_examples()["retina"], [CALIBRATED, "lenet5-meta-lesions"])
    error = results[CALIBRATED]["error"]
    assert f"its bundle.json has format version {'null' if version is None else version}, " in error, error
    assert "this page reads version 2" in error and "Reload the page" in error
    assert results["lenet5-meta-lesions"]["error"] is None and "1 of 2 models answered" in status, status
    context.close()


def test_nan_features_in_the_browser_give_no_ood_check_never_a_pass(browser, server, tmp_path):
    """The page's OOD check, like the server's: a NaN feature is no distance (it used to pass every image)."""
    import shutil

    from _onnx_tamper import nan_features

    _, weights = server
    forged = tmp_path / "model.onnx"
    shutil.copyfile(weights / WITH_OOD / "model.onnx", forged)
    nan_features(forged)
    context = browser.new_context()
    page = context.new_page()
    page.route(f"**/api/models/{WITH_OOD}/model.onnx*",
               lambda route: route.fulfill(response=route.fetch(), body=forged.read_bytes()))
    page.goto(server[0] + "private/")
    page.wait_for_function("document.body.dataset.state === 'ready'")
    results, status = run_private(page, parity_images(tmp_path)["digit"], [WITH_OOD, CALIBRATED])
    mine = results[WITH_OOD]
    assert mine["error"] is None and mine["top_k"] and "2 of 2 models answered" in status, (mine, status)
    assert mine["ood"] is None and mine["ood_reason"].startswith("no OOD check: features not finite"), mine
    context.close()


def test_an_ood_method_the_page_does_not_know_gives_no_ood_check_never_a_pass(browser, server, tmp_path):
    """A bundle naming an OOD method this page has no twin for (a server newer than the cached page): that model
    answers without an OOD check, saying why, and the other model's check runs."""
    context = browser.new_context()  # a fresh cache: the bundle is fetched (and changed) here

    def newer(route):
        response = route.fetch()
        bundle = response.json()
        route.fulfill(response=response, json={**bundle, "ood": {**bundle["ood"], "method": "energy"}})

    page = context.new_page()
    page.route(f"**/api/models/{WITH_OOD}/bundle.json*", newer)
    page.goto(server[0] + "private/")
    page.wait_for_function("document.body.dataset.state === 'ready'")
    results, status = run_private(page, chest_xray(), [WITH_OOD, WITH_MAHALANOBIS])
    mine = results[WITH_OOD]
    assert mine["error"] is None and mine["top_k"] and "2 of 2 models answered" in status, (mine, status)
    assert mine["ood"] is None and mine["ood_reason"].startswith("no OOD check: method energy is not known"), mine
    assert results[WITH_MAHALANOBIS]["ood"] is not None, results[WITH_MAHALANOBIS]
    context.close()


def server_heatmap(weights, model, image):
    """(the server's Grad-CAM map at the model's input size, its source, its class) for `image`: zoo.inference's
    heatmap on the ONNX backend, with /compare's all-unknown metadata."""
    from zoo import inference
    from zoo.catalog import discover_models
    from zoo.images import load_image

    [entry] = [e for e in discover_models(weights) if e.id == model]
    loaded = inference.ModelCache(max_models=1, backend="onnx").get(entry)
    prediction = inference.predict(loaded, load_image(image).image, {"age": None, "sex": None, "site": None})
    cam = inference.heatmap(loaded, prediction)
    return cam.mask, cam.source_note, loaded.label_names[prediction.class_index]


def test_the_pages_heatmaps_equal_the_servers_and_no_request_carries_the_image(page, server, tmp_path):
    _, weights = server
    chosen = [*CAM_MODELS, CALIBRATED]  # two closed forms (mlp, linear with metadata) and a model without one
    worst = {}
    images = {**parity_images(tmp_path), "chest": chest_xray()}
    for name, image in images.items():
        data = image.read_bytes()
        needles = [data[:32].hex(), base64.b64encode(data[:3000])[100:164].decode()]
        requests = []

        def record(request, requests=requests):
            requests.append(request)

        page.on("request", record)
        results, status = run_private(page, image, chosen)
        page.remove_listener("request", record)
        assert "3 of 3 models answered" in status, status
        for request in requests:
            assert urlparse(request.url).hostname == "127.0.0.1" and request.method == "GET", request.url
            assert request.post_data_buffer is None and not any(n in request.url for n in needles), request.url
        for model in CAM_MODELS:
            mine = results[model]
            assert mine["error"] is None and mine["heatmap_source"] == "onnx", (model, mine.get("heatmap_reason"))
            expected, source, label = server_heatmap(weights, model, image)
            assert source == "onnx" and mine["heatmap"]["label"] == label, (model, source, mine["heatmap"]["label"])
            got = np.asarray(mine["heatmap"]["mask"], dtype=np.float32).reshape(mine["heatmap"]["height"],
                                                                                mine["heatmap"]["width"])
            assert got.shape == expected.shape, (got.shape, expected.shape)
            worst[(name, model)] = float(np.abs(got - expected).max())
        # a model without the closed form says why, in the words of the server's heatmap_source
        _, source, _ = server_heatmap(weights, CALIBRATED, image)
        reason = results[CALIBRATED]["heatmap_reason"]
        assert results[CALIBRATED]["heatmap"] is None and reason.startswith("no heatmap in private mode: "), reason
        assert source == f"torch ({reason.split(': ', 1)[1].split('; the Compare tab')[0]})", (source, reason)
    print("max |Δ map| page vs server:", max(worst.values()), worst)
    assert max(worst.values()) <= CAM_TOLERANCE, worst
    shown = page.locator(f".column[data-model='{next(iter(CAM_MODELS))}'] canvas.heatmap-image")
    assert shown.evaluate("c => [c.width, c.height]") == [240, 240]  # 48 px scaled by 5, to at least 224
    assert "1x1, under 3 px" in page.locator(f".column[data-model='{CALIBRATED}']").inner_text()
    page.screenshot(path="test-artifacts/private-heatmaps.png", full_page=True)


def test_damaged_head_weights_cost_that_model_its_heatmap_only(browser, server, tmp_path):
    """cam.bin cut short (a proxy, a disk error): that model answers without a heatmap, saying why; the other model's
    heatmap is drawn."""
    damaged, intact = CAM_MODELS
    context = browser.new_context()  # a fresh cache: cam.bin is fetched (and cut) here
    page = context.new_page()
    page.route(f"**/api/models/{damaged}/cam.bin*",
               lambda route: route.fulfill(response=route.fetch(), body=route.fetch().body()[:100]))
    page.goto(server[0] + "private/")
    page.wait_for_function("document.body.dataset.state === 'ready'")
    results, status = run_private(page, parity_images(tmp_path)["retina"], [damaged, intact])
    assert "2 of 2 models answered" in status, status
    assert results[damaged]["top_k"] and results[damaged]["heatmap"] is None
    assert "cam.bin) are 100 bytes, its bundle says" in results[damaged]["heatmap_reason"], results[damaged]
    assert "cam.bin" in page.locator(f".column[data-model='{damaged}']").inner_text()
    assert results[intact]["heatmap_source"] == "onnx"
    assert page.locator(f".column[data-model='{intact}'] canvas.heatmap-image").count() == 1
    context.close()
