"""Private mode without a browser: web/preprocess.js (run by node) gives the server's exact input tensor, and
the routes serve only the models on offer, by id, read-only, whatever path a client tries."""
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from _app_zoo import TINY_MODELS
from _private_zoo import CALIBRATED, CAM_MODELS, build_private_zoo, parity_images
from ui.private import ORT_DIST, WEB_DIR, private_routes
from ui.settings import Settings
from zoo.images import load_image, to_model_mode
from zoo.inference import build_transform

NODE = shutil.which("node")
INTERPOLATIONS = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return build_private_zoo(tmp_path_factory.getbasetemp() / "private-zoo")


@pytest.mark.skipif(NODE is None, reason="node is not installed (apt-get install nodejs)")
def test_preprocess_js_gives_the_servers_tensor_bit_for_bit(tmp_path):
    """Every PIL filter, grey and colour models, downscaling and upscaling, centre crop and squash, 5 real images."""
    cases, expected = [], []
    for name, path in parity_images(tmp_path / "images").items():
        image = load_image(path).image  # what the server reads (alpha composited on black)
        rgba = np.ascontiguousarray(np.asarray(image.convert("RGBA")))
        raw = tmp_path / f"{name}.rgba"
        raw.write_bytes(rgba.tobytes())
        for i, interpolation in enumerate(INTERPOLATIONS):
            for channels in (1, 3):
                size, crop_pct, crop_mode = ((32, 0.875, "center"), (75, 1.0, "center"), (20, 0.9, "squash"),
                                             (224, 0.95, "center"))[(i + channels) % 4]
                cfg = {"input_size": [channels, size, size], "interpolation": interpolation, "crop_pct": crop_pct,
                       "crop_mode": crop_mode, "mean": [0.485, 0.456, 0.406][:channels],
                       "std": [0.229, 0.224, 0.225][:channels]}
                expected.append(build_transform(cfg)(to_model_mode(image, channels)).numpy())
                cases.append({"cfg": cfg, "file": str(raw), "width": rgba.shape[1], "height": rgba.shape[0],
                              "out": str(tmp_path / f"{len(cases)}.f32")})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    script = f"""
        import {{ preprocess }} from {json.dumps((WEB_DIR / "preprocess.js").as_uri())};
        import fs from "fs";
        for (const c of JSON.parse(fs.readFileSync({json.dumps(str(tmp_path / "cases.json"))}))) {{
          const x = preprocess(new Uint8Array(fs.readFileSync(c.file)), c.width, c.height, c.cfg);
          fs.writeFileSync(c.out, Buffer.from(x.buffer));
        }}"""
    subprocess.run([NODE, "--input-type=module", "-e", script], check=True, timeout=120)
    for case, want in zip(cases, expected):
        got = np.frombuffer(Path(case["out"]).read_bytes(), dtype=np.float32).reshape(want.shape)
        assert np.array_equal(got, want), (case["cfg"], case["file"], float(np.abs(got - want).max()))


@pytest.fixture(scope="module")
def client(weights):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    # a limit between the LeNets' ONNX files (~0.25 MB) and Lite0's (~13 MB)
    app = FastAPI(routes=private_routes(Settings(weights=weights), max_bytes=2 * 2**20))
    return TestClient(app)


def test_the_listing_offers_small_verified_models_and_says_why_not_the_others(client):
    listing = client.get("/private/api/models").json()
    offered = {m["id"] for m in listing["models"]}
    assert offered == {"lenet5-scratch-digits", "lenet5-meta-lesions", *CAM_MODELS}
    reasons = {m["id"]: m["reason"] for m in listing["not_offered"]}
    assert "over private mode's limit of 2 MB" in reasons["lite0-fe-digits"]
    assert "over private mode's limit" in reasons["quadsnet-scratch-digits"]
    assert "not a readable safetensors file" in reasons["broken-weights"]  # its model.onnx is not verified for them
    assert "unavailable" in reasons["unfinished-run"]


def test_a_bundle_holds_what_the_page_needs(client, weights):
    bundle = client.get(f"/private/api/models/{CALIBRATED}/bundle.json").json()
    assert bundle["preprocessing"] == {"input_size": [1, 32, 32], "interpolation": "bilinear", "crop_pct": 1.0,
                                       "crop_mode": "center", "mean": [0.5], "std": [0.5]}
    assert bundle["label_names"] == list(TINY_MODELS[CALIBRATED][4])
    assert bundle["temperature"] == 1.7 and bundle["conformal"] == {"alpha": 0.1, "threshold": 0.85}
    assert "features" in bundle["onnx"]["outputs"]  # the OOD check's input, as every export since has it
    assert bundle["ood"] is None and "no OOD statistics (ood.safetensors)" in bundle["ood_reason"]
    meta = client.get("/private/api/models/lenet5-meta-lesions/bundle.json").json()
    assert meta["metadata_unknown"] and meta["temperature"] is None
    onnx = client.get(f"/private/api/models/{CALIBRATED}/model.onnx")
    assert onnx.status_code == 200 and onnx.content == (weights / CALIBRATED / "model.onnx").read_bytes()
    assert onnx.headers["cross-origin-embedder-policy"] == "require-corp"


def test_the_bundle_states_the_format_the_page_reads(client):
    """The server writes BUNDLE_VERSION into every bundle and web/private.js refuses any other version: the two
    declarations must name the same one, or the page would refuse every model."""
    import re

    from ui.private import BUNDLE_VERSION

    bundle = client.get(f"/private/api/models/{CALIBRATED}/bundle.json").json()
    assert bundle["format_version"] == BUNDLE_VERSION == 2
    page_version = re.findall(r"^const BUNDLE_VERSION = (\d+);$", (WEB_DIR / "private.js").read_text(), re.M)
    assert page_version == [str(BUNDLE_VERSION)]


@pytest.mark.parametrize("url", [
    "/private/api/models/lite0-fe-digits/model.onnx",             # over the size limit: not on offer
    "/private/api/models/broken-weights/config.json",
    f"/private/api/models/{CALIBRATED}/config.json",                # a run-folder file that is not served
    f"/private/api/models/{CALIBRATED}/model.safetensors",
    f"/private/api/models/{CALIBRATED}/ood.bin",                    # no OOD statistics in this run
    f"/private/api/models/..%2F{CALIBRATED}/model.onnx",
    f"/private/api/models/{CALIBRATED}/..%2F..%2F{CALIBRATED}%2Fconfig.json",
    f"/private/api/models/{CALIBRATED}/%2E%2E%2Fmodel.safetensors",
    "/private/api/models/%2E%2E/model.onnx",
    "/private/static/..%2Fprivate.py",
    "/private/static/..%2F..%2Fui%2Fprivate.py",
    "/private/static/package.json",
    "/private/static/ort.wasm.min.js.map",
    "/private/static/%2Fetc%2Fpasswd",
])
def test_nothing_but_the_offer_is_served(client, url):
    response = client.get(url)
    assert response.status_code == 404, (url, response.status_code, response.content[:200])
    assert b"safetensors" not in response.content[:4] and not response.content.startswith(b"{\"architecture")


def test_the_routes_are_read_only(client):
    for url in ("/private/", f"/private/api/models/{CALIBRATED}/model.onnx", "/private/api/models"):
        assert client.post(url, content=b"x").status_code == 405
        assert client.put(url, content=b"x").status_code == 405
        assert client.delete(url).status_code == 405


@pytest.mark.skipif(not (ORT_DIST / "ort.wasm.min.js").is_file(), reason="web/node_modules missing: npm ci in web/")
def test_the_page_and_onnxruntime_web_are_served_locally(client):
    page = client.get("/private/")
    assert page.status_code == 200 and "never uploaded" in page.text
    assert "http" not in page.text.split("<body>")[0]  # every script and style comes from this app
    for name, kind in (("ort.wasm.min.js", "javascript"), ("ort-wasm-simd-threaded.mjs", "javascript"),
                       ("ort-wasm-simd-threaded.wasm", "wasm"), ("private.js", "javascript")):
        response = client.get(f"/private/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"], name
    assert json.loads((WEB_DIR / "package.json").read_text())["dependencies"] == {"onnxruntime-web": "1.30.0"}
    lock = json.loads((WEB_DIR / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/onnxruntime-web"]["version"] == "1.30.0"


def test_a_model_resized_as_tensorflow_does_is_not_offered_with_the_reason(weights, tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    folder = tmp_path / "tf-resized"
    shutil.copytree(weights / "lenet5-scratch-digits", folder)
    config = json.loads((folder / "config.json").read_text())
    config["zoo"]["resize"] = "tf-bilinear"  # as the imported skin-lesion model's block says (zoo.eval_transform)
    (folder / "config.json").write_text(json.dumps(config))
    client = TestClient(FastAPI(routes=private_routes(Settings(weights=tmp_path), max_bytes=2 * 2**20)))
    listing = client.get("/private/api/models").json()
    assert listing["models"] == []
    reason = next(m["reason"] for m in listing["not_offered"] if m["id"] == "tf-resized")
    assert "resize 'tf-bilinear'" in reason and "not implemented in the browser" in reason


def test_a_closed_form_models_bundle_carries_its_heads_weights_and_the_download_counts_them(client, weights):
    """cam.bin holds exactly the head weights the server's Grad-CAM uses (read from the verified model.onnx), laid out
    as the bundle says; the listing's download size counts them; a model without the closed form gets the server's
    reason instead."""
    import zoo
    from zoo.onnx_cam import CLOSED_FORMS

    listing = client.get("/private/api/models").json()
    assert listing["heatmap"]["image_weight"] == 0.55 and len(listing["heatmap"]["colors"]) == 256
    sizes = {m["id"]: m for m in listing["models"]}
    for model, form in zip(CAM_MODELS, ("mlp", "linear")):
        bundle = client.get(f"/private/api/models/{model}/bundle.json").json()
        assert bundle["cam"]["form"] == form and bundle["cam_reason"] is None and bundle["cam"]["channels"] == 120
        data = client.get(f"/private/api/models/{model}/cam.bin").content
        assert len(data) == bundle["cam"]["bytes"] and sizes[model]["cam_sha256"] == bundle["cam"]["sha256"]
        assert sizes[model]["download_bytes"] == bundle["onnx"]["bytes"] + len(data)  # no OOD bank in these runs
        head = zoo.load_backend(weights / model, "onnx", export_missing=False).cam_head
        values = np.frombuffer(data, dtype="<f4")
        assert list(bundle["cam"]["arrays"]) == list(CLOSED_FORMS[form])
        for role, place in bundle["cam"]["arrays"].items():
            array = values[place["offset"]:place["offset"] + int(np.prod(place["shape"]))].reshape(place["shape"])
            assert np.array_equal(array, head.weights[role]), role
    plain = client.get(f"/private/api/models/{CALIBRATED}/bundle.json").json()
    assert plain["cam"] is None and plain["cam_reason"].startswith("no heatmap in private mode: its last feature map "
                                                                   "is 1x1, under 3 px a side")
    assert client.get(f"/private/api/models/{CALIBRATED}/cam.bin").status_code == 404


@pytest.mark.skipif(NODE is None, reason="node is not installed (apt-get install nodejs)")
def test_cam_js_gives_the_servers_map_and_gradient(tmp_path):
    """web/cam.js's head gradients and map (OpenCV's bilinear resize written out) against zoo.onnx_cam's, on random
    maps of odd shapes, up- and down-sampled, for both closed forms."""
    from zoo.onnx_cam import CamHead, cam_mask

    rng = np.random.default_rng(0)
    cases, expected = [], []
    for D, h, w, H, W in ((16, 5, 5, 48, 48), (8, 3, 4, 37, 50), (32, 7, 7, 224, 224), (4, 1, 6, 10, 60),
                          (6, 9, 9, 4, 5)):
        feature_map = rng.standard_normal((D, h, w)).astype(np.float32)
        pooled = feature_map.mean(axis=(1, 2))
        hidden, classes = 11, 3
        heads = {"linear": {"weight": rng.standard_normal((classes, D + 2)).astype(np.float32)},
                 "mlp": {"fc1.weight": rng.standard_normal((hidden, D)).astype(np.float32),
                         "fc1.bias": rng.standard_normal(hidden).astype(np.float32),
                         "fc2.weight": rng.standard_normal((classes, hidden)).astype(np.float32)}}
        for form, weights in heads.items():
            gradient = CamHead(form, weights, D).gradient(pooled, 2)
            expected.append((gradient, cam_mask(feature_map, gradient, (H, W))))
            cases.append({"cam": {"form": form, "channels": D,
                                  "arrays": {k: {"shape": list(v.shape)} for k, v in weights.items()}},
                          "arrays": {k: v.ravel().tolist() for k, v in weights.items()},
                          "map": feature_map.ravel().tolist(), "pooled": pooled.tolist(), "size": [D, h, w, H, W]})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    script = f"""
        import {{ camMask, headGradient }} from {json.dumps((WEB_DIR / "cam.js").as_uri())};
        import fs from "fs";
        const out = JSON.parse(fs.readFileSync({json.dumps(str(tmp_path / "cases.json"))})).map((c) => {{
          const arrays = Object.fromEntries(Object.entries(c.arrays).map(([k, v]) => [k, Float32Array.from(v)]));
          const gradient = headGradient(c.cam, arrays, Float32Array.from(c.pooled), 2, 3);
          const [D, h, w, H, W] = c.size;
          return [Array.from(gradient), Array.from(camMask(Float32Array.from(c.map), D, h, w, gradient, H, W))];
        }});
        fs.writeFileSync({json.dumps(str(tmp_path / "out.json"))}, JSON.stringify(out));"""
    subprocess.run([NODE, "--input-type=module", "-e", script], check=True, timeout=120)
    for case, (want_gradient, want_mask), (gradient, mask) in zip(
            cases, expected, json.loads((tmp_path / "out.json").read_text())):
        np.testing.assert_allclose(gradient, want_gradient, rtol=1e-6, atol=1e-9, err_msg=case["cam"]["form"])
        got = np.asarray(mask, dtype=np.float32).reshape(want_mask.shape)
        assert float(np.abs(got - want_mask).max()) <= 1e-5, (case["size"], float(np.abs(got - want_mask).max()))
