"""Weights on disk: the offline ImageNet import, the Hub layout, and every bad weights file."""
import json

import pytest
import timm
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file
from skimage import data

import zoo


@pytest.fixture(scope="module")
def lite0():
    return zoo.create_model("efficientnet_lite0", pretrained=True, mode="feature-extraction").eval()


@pytest.mark.parametrize("image, classes", [("chelsea", range(281, 286)), ("coffee", [967])])
def test_offline_imagenet_weights_are_real(lite0, image, classes):
    # scikit-image's bundled photos: a tabby cat (ImageNet 281-285) and an espresso (967).
    transform = timm.data.create_transform(**zoo.resolve_data_config(lite0))
    x = transform(Image.fromarray(getattr(data, image)())).unsqueeze(0)
    with torch.no_grad():
        assert lite0(x).argmax().item() in classes


def test_offline_import_maps_every_tensor_by_name_and_shape():
    imported = load_file(zoo.offline_imagenet_weights("efficientnet_lite0"))
    reference = timm.create_model("efficientnet_lite0").state_dict()
    assert imported.keys() == reference.keys()
    assert all(imported[k].shape == reference[k].shape for k in reference)


def test_grayscale_pretrained_first_conv_is_adapted():
    gray = zoo.create_model("efficientnet_lite0", num_classes=2, in_chans=1, pretrained=True, mode="fine-tune")
    rgb = load_file(zoo.offline_imagenet_weights())["conv_stem.weight"]
    assert torch.allclose(gray.conv_stem.weight[:, 0], rgb.sum(dim=1), atol=1e-5)  # timm sums RGB filters


@pytest.fixture
def run(tmp_path):
    model = zoo.create_model("lenet5", num_classes=3).eval()
    folder = zoo.save_pretrained(model, tmp_path / "run", label_names=["benign", "malignant", "normal"],
                                 dataset="digits", metrics={"accuracy": 0.91, "roc_auc": 0.97},
                                 card_sections={"Training recipe": "Adam, 3 epochs."})
    return model, folder


def test_config_json_is_timm_layout_with_zoo_metadata(run):
    _, folder = run
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "lenet5" and config["num_classes"] == 3
    assert config["label_names"] == ["benign", "malignant", "normal"]
    assert config["pretrained_cfg"]["input_size"] == [1, 32, 32]
    assert {"mean", "std", "first_conv", "classifier"} <= set(config["pretrained_cfg"])
    assert config["zoo"]["mode"] == "scratch" and config["zoo"]["dataset"] == "digits"


def test_model_card_header_parses_and_carries_the_metrics(run):
    _, folder = run
    text = (folder / "README.md").read_text()
    header = yaml.safe_load(text.split("---")[1])
    assert header["library_name"] == "timm" and header["pipeline_tag"] == "image-classification"
    metrics = {m["type"]: m["value"] for m in header["model-index"][0]["results"][0]["metrics"]}
    assert metrics == {"accuracy": 0.91, "roc_auc": 0.97}
    assert "## Training recipe" in text and "not a medical device" in text


def _corrupt(folder, change):
    weights = load_file(folder / "model.safetensors")
    change(weights)
    save_file(weights, folder / "model.safetensors")


@pytest.mark.parametrize("change, match", [
    (lambda w: w.pop("fc.bias"), r"lacks tensor 'fc.bias' \(expected shape \(3,\)\)"),
    (lambda w: w.update(extra=torch.zeros(2)), r"unexpected tensor 'extra' \(shape \(2,\)\)"),
    (lambda w: w.update({"fc.bias": torch.zeros(5)}), r"'fc.bias' has shape \(5,\), expected \(3,\)"),
])
def test_mismatched_weights_name_the_tensor(run, change, match):
    _, folder = run
    _corrupt(folder, change)
    with pytest.raises(zoo.ZooError, match=match):
        zoo.load_pretrained(folder)


def test_corrupt_safetensors_header(run):
    _, folder = run
    (folder / "model.safetensors").write_bytes(b"\xff" * 8 + b"{not json")
    with pytest.raises(zoo.ZooError, match="not a readable safetensors file"):
        zoo.load_pretrained(folder)


def test_pickle_weights_are_refused_before_unpickling(run, monkeypatch):
    _, folder = run
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not even opened")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    with pytest.raises(zoo.ZooError, match="no model.safetensors.*pytorch_model.bin.*refuses"):
        zoo.load_pretrained(folder)


def test_unknown_architecture_in_config(run):
    _, folder = run
    config = json.loads((folder / "config.json").read_text())
    config["architecture"] = "hypernet9000"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(zoo.ZooError, match="'hypernet9000'.*import zoo"):
        zoo.load_pretrained(folder)


def test_unknown_zoo_keys_are_kept_and_known_ones_are_typed(run):
    # a folder written by a newer zoo (an extra key) loads and keeps the key; a wrongly typed known
    # field is refused with its name, value and file, and the catalog lists the model as unavailable
    from zoo.catalog import discover_models

    _, folder = run
    config = json.loads((folder / "config.json").read_text())
    config["zoo"]["calibration"] = {"temperature": 1.5}
    (folder / "config.json").write_text(json.dumps(config))
    loaded = zoo.load_pretrained(folder)
    assert loaded.zoo_cfg["calibration"] == {"temperature": 1.5} and loaded.zoo_cfg["dataset"] == "digits"
    parsed = zoo.ZooConfig.from_dict(loaded.zoo_cfg)
    assert parsed.extra == {"calibration": {"temperature": 1.5}} and parsed.architecture == "lenet5"
    assert zoo.ZooConfig.from_dict(parsed.to_dict()) == parsed

    config["zoo"]["params_total"] = "many"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(zoo.ZooError, match=r"config\.json: zoo field 'params_total' must be an integer or null, "
                                           r"got 'many'"):
        zoo.load_pretrained(folder)
    [entry] = discover_models(folder.parent, catalog=folder.parent / "none.json")
    assert not entry.available and "params_total" in entry.reason

    config["zoo"].update(params_total=None, mode="freeze")  # a mode this zoo does not know: named, with the choices
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(zoo.ZooError, match=r"config\.json: zoo field 'mode': Unknown mode 'freeze'; choose one of "
                                           r"the transfer modes: scratch, .*\. Fix config\.json or save the model"):
        zoo.load_pretrained(folder)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    from zoo.fileio import atomic_write

    path = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(2)}, str(path))
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(path) as f:
            save_file({"w": torch.zeros(2)}, f.name)  # a library writing by name, then failing
            raise RuntimeError("disk full")
    assert torch.equal(load_file(path)["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temporary file left
    with atomic_write(path) as f:
        save_file({"w": torch.zeros(2)}, f.name)
    assert torch.equal(load_file(path)["w"], torch.zeros(2))


def test_not_a_folder_nor_repo(tmp_path):
    with pytest.raises(zoo.ZooError, match="neither a model folder nor a Hub repo id"):
        zoo.load_pretrained(str(tmp_path / "missing" / "deep" / "x"))


def test_non_finite_weights_are_never_written(tmp_path):
    model = zoo.create_model("lenet5", num_classes=2)
    with torch.no_grad():
        model.get_classifier().weight[0, 0] = float("nan")
    with pytest.raises(zoo.ZooError, match="non-finite"):
        zoo.save_pretrained(model, tmp_path / "nan")
    assert not (tmp_path / "nan" / "model.safetensors").exists()


def test_label_names_must_match_outputs(tmp_path):
    with pytest.raises(zoo.ZooError, match="2 label_names for a model with 3 outputs"):
        zoo.save_pretrained(zoo.create_model("lenet5", num_classes=3), tmp_path / "x", label_names=["a", "b"])


def test_first_offline_import_leaves_the_global_rng_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo._hub, "CACHE_DIR", tmp_path / "fresh-cache")
    torch.manual_seed(0)
    zoo.offline_imagenet_weights()  # imports for the first time into the fresh cache
    after_import = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(3), after_import)


def test_config_json_states_its_format_and_stock_timm_still_loads_it(run):
    model, folder = run
    config = json.loads((folder / "config.json").read_text())
    assert config["zoo"]["format_version"] == zoo.ZOO_FORMAT_VERSION == 1
    x = torch.randn(2, 1, 32, 32)
    stock = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    with torch.no_grad():
        assert torch.allclose(stock(x), model(x), atol=1e-6)
    assert zoo.load_pretrained(folder).zoo_cfg["format_version"] == 1


def test_a_config_json_without_a_format_version_loads_as_before(run):
    model, folder = run
    config = json.loads((folder / "config.json").read_text())
    del config["zoo"]["format_version"]  # as every zoo wrote it before formats were versioned
    (folder / "config.json").write_text(json.dumps(config))
    loaded = zoo.load_pretrained(folder)
    assert loaded.zoo_cfg["mode"] == "scratch" and loaded.label_names == ["benign", "malignant", "normal"]
    assert loaded.zoo_cfg["format_version"] is None
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("version, match", [
    (2, r"config\.json: its zoo block has format version 2, newer than the version 1 this zoo reads.*Upgrade the zoo"),
    (0, r"config\.json: zoo field 'format_version' must be a version from 1, got 0"),
    ("1", r"config\.json: zoo field 'format_version' must be an integer or null, got '1'")])
def test_a_config_json_of_a_newer_or_invalid_format_is_refused_by_name(run, version, match):
    from zoo.catalog import discover_models

    _, folder = run
    config = json.loads((folder / "config.json").read_text())
    config["zoo"]["format_version"] = version
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(zoo.ZooError, match=match):
        zoo.load_pretrained(folder)
    [entry] = discover_models(folder.parent, catalog=folder.parent / "none.json")
    assert not entry.available and "format" in entry.reason
    if version == 2:  # timm ignores the zoo block: stock timm still loads what a newer zoo wrote
        timm.create_model(f"local-dir:{folder}", pretrained=True)
