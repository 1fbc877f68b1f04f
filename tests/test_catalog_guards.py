"""One bad run folder must not take the app down: a weights folder of broken runs next to one good run.

Each broken run is a copy of the good one with one thing wrong (a field of the wrong type, a size over the
zoo's limits, label names that do not match, a model_args key that would make timm open a pickle, a link
out of the weights folder...). The catalog lists each as unavailable with its own reason, cheaply (no
model built, no large allocation); the app's default selection leaves them out and the page builds;
loading one directly is a ZooError, and no file named in a config is ever opened.
"""
import json
import os
import shutil
import tracemalloc
import warnings
from pathlib import Path

import pytest
import torch

import zoo
from zoo.catalog import discover_models
from zoo.model_config import MODEL_ARGS, check_model_config

GOOD = "good-lenet5"


class Payload:
    def __reduce__(self):
        return (print, ("a pickle from a config.json was unpickled",))


def _edit(key_path: str, value):
    """A change of a run folder's config.json that sets the dotted `key_path` to `value`."""
    def change(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        *parents, last = key_path.split(".")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
        (folder / "config.json").write_text(json.dumps(config))
    return change


def _broken_runs(weights: Path, outside: Path) -> dict[str, tuple[object, str]]:
    """name -> (what to do to a copy of the good run's folder, the phrase its reason must contain)."""
    pickle_file = outside / "evil.pth"
    torch.save({"state_dict": Payload()}, pickle_file)
    (outside / "elsewhere").mkdir()
    shutil.copytree(weights / GOOD, outside / "elsewhere" / "run")

    def link_config_to(target):
        def make(folder: Path) -> None:
            (folder / "config.json").unlink()
            os.symlink(target, folder / "config.json")
        return make

    def replace_folder_with_link(folder: Path) -> None:
        shutil.rmtree(folder)
        os.symlink(outside / "elsewhere" / "run", folder)

    def link_weights_out(folder: Path) -> None:
        (folder / "model.safetensors").unlink()
        os.symlink(outside / "elsewhere" / "run" / "model.safetensors", folder / "model.safetensors")

    def huge_config(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config["zoo"]["notes"] = "x" * 1_100_000
        (folder / "config.json").write_text(json.dumps(config))

    def fifo_config(folder: Path) -> None:  # reading it would wait for a writer forever
        (folder / "config.json").unlink()
        os.mkfifo(folder / "config.json")

    def deep_json(folder: Path) -> None:
        (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)

    return {
        "classes-as-text": (_edit("num_classes", "ten"), "num_classes must be a whole number, got 'ten'"),
        "params-as-text": (_edit("zoo.params_total", "lots"), "'params_total' must be an integer or null, got 'lots'"),
        "zoo-block-list": (_edit("zoo", [1, 2]), "the \"zoo\" object must be a JSON object, got list"),
        "model-args-list": (_edit("model_args", ["num_classes", 10]), "model_args must be an object"),
        "bad-metadata-schema": (_edit("model_args.metadata_schema", {"sex": "male"}),
                                "'sex' must be a list of 1 to 1000 distinct names"),
        "labels-too-few": (_edit("label_names", ["0", "1"]), "label_names has 2 names for 10 classes"),
        "labels-wrong-type": (_edit("label_names", {"0": "zero"}), "label_names must be a list of 10 strings"),
        "input-negative": (_edit("pretrained_cfg.input_size", [1, -32, 32]), "sides from 1 to 1024 pixels"),
        "input-100000": (_edit("pretrained_cfg.input_size", [1, 100000, 100000]), "sides from 1 to 1024 pixels"),
        "classes-1e9": (_edit("num_classes", 10**9), "num_classes must be between 1 and 10,000, got 1,000,000,000"),
        "classes-1e7": (_edit("num_classes", 10**7), "num_classes must be between 1 and 10,000, got 10,000,000"),
        "checkpoint-path": (_edit("model_args.checkpoint_path", str(pickle_file)),
                            "model_args key 'checkpoint_path' is not one the zoo writes"),
        "cfg-overlay-file": (_edit("model_args.pretrained_cfg_overlay", {"file": str(pickle_file)}),
                             "model_args key 'pretrained_cfg_overlay' is not one the zoo writes"),
        "backbone-local-dir": (_edit("model_args.backbone", f"local-dir:{outside}"),
                               "model_args.backbone must be one of the zoo's architectures"),
        "architecture-hf-hub": (_edit("architecture", "hf-hub:someone/evil"),
                                "names architecture 'hf-hub:someone/evil', which neither timm nor the zoo knows"),
        "config-dev-zero": (link_config_to("/dev/zero"), "outside"),
        "config-link-out": (link_config_to(outside / "elsewhere" / "run" / "config.json"), "outside"),
        "folder-link-out": (replace_folder_with_link, "symbolic link to a folder outside"),
        "weights-link-out": (link_weights_out, "outside"),
        "config-2mb": (huge_config, "over the 1,000,000-byte limit"),
        "config-deep": (deep_json, "not valid JSON"),
        "config-fifo": (fifo_config, "is not a regular file"),
    }


@pytest.fixture(scope="module")
def broken_zoo(tmp_path_factory):
    """(weights folder, {broken run: expected reason})"""
    weights = tmp_path_factory.mktemp("weights")
    outside = tmp_path_factory.mktemp("outside")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = zoo.create_model("lenet5", num_classes=10, mode="scratch")
    zoo.save_pretrained(model.eval(), weights / GOOD, label_names=[str(i) for i in range(10)], dataset="digits")
    reasons = {}
    for name, (change, phrase) in _broken_runs(weights, outside).items():
        folder = weights / name
        shutil.copytree(weights / GOOD, folder)
        change(folder)
        reasons[name] = phrase
    return weights, reasons


def test_every_broken_run_is_listed_unavailable_with_its_reason_cheaply(broken_zoo, monkeypatch):
    weights, reasons = broken_zoo
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    tracemalloc.start()
    entries = {e.id: e for e in discover_models(weights)}
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20 * 2**20, f"listing allocated {peak / 2**20:.0f} MB"  # 10**7 classes once cost 0.7 GB
    assert set(entries) == {GOOD, *reasons}  # none hidden (the /dev/zero link once was)
    assert entries[GOOD].available, entries[GOOD].reason
    for name, phrase in reasons.items():
        entry = entries[name]
        assert not entry.available and phrase in entry.reason, (name, entry.reason)
        assert entry.summary().startswith("unavailable: ") and entry.plots == {}
        entry.label_names, entry.params, entry.test_metrics, entry.architecture  # describing it never raises


def test_loading_a_broken_run_is_a_zoo_error_and_opens_no_named_file(broken_zoo, monkeypatch):
    weights, reasons = broken_zoo
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    for name, phrase in reasons.items():
        if name == "folder-link-out":
            continue  # loading the link itself is the caller's choice; the catalog is what refuses it
        with pytest.raises(zoo.ZooError) as caught:
            zoo.load_pretrained(weights / name)
        assert phrase in str(caught.value), (name, str(caught.value))
    assert zoo.load_pretrained(weights / GOOD).num_classes == 10


def test_the_app_starts_and_never_selects_a_broken_run(broken_zoo, tmp_path):
    import app
    from ui.state import ComparisonApp

    weights, reasons = broken_zoo
    settings = app.Settings(weights=weights, examples_dir=tmp_path / "examples")
    assert ComparisonApp(settings).default_selection() == [GOOD]
    demo = app.build_demo(settings)
    assert set(reasons) <= set(demo.zoo_app.entries)
    ids = [GOOD, next(iter(reasons))]
    records = demo.zoo_app.compare(str(demo.zoo_app.examples[0][0]), ids, cam=False).records()
    assert records[0]["error"] is None and "unavailable" in records[1]["error"]


def test_source_keys_of_pretrained_cfg_never_cause_a_load(broken_zoo, tmp_path, monkeypatch):
    weights, _ = broken_zoo
    folder = tmp_path / "with-sources"
    shutil.copytree(weights / GOOD, folder)
    pickle_file = tmp_path / "weights.pth"
    torch.save({"state_dict": Payload()}, pickle_file)
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"].update(file=str(pickle_file), url="http://127.0.0.1:9/weights.pth",
                                    hf_hub_id="someone/evil", state_dict={"x": 1})
    (folder / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: pytest.fail("a URL was fetched"))
    import timm.models._builder as timm_builder
    monkeypatch.setattr(timm_builder, "load_pretrained", lambda *a, **k: pytest.fail("timm loaded pretrained weights"))
    model = zoo.load_pretrained(folder)
    assert not {"file", "url", "hf_hub_id", "state_dict"} & set(model.pretrained_cfg)
    [entry] = discover_models(tmp_path, catalog=tmp_path / "none.json")
    assert entry.available


@pytest.mark.parametrize("arch, kwargs", [
    ("lenet5", {}), ("googlenet", {"aux_logits": True}), ("efficientnet_lite0", {"drop_rate": 0.3}),
    ("lenet5", {"head": "soft_attention"}), ("lenet5", {"head": "mlp", "mlp_hidden": 16}),
    ("vgg11", {"head": "mlp", "mlp_hidden": 16, "mlp_ratio": 1 / 64, "backbone_pre_logits": True}),  # onnx_import's
    ("lenet5", {"head": "soft_attention+metadata", "metadata_hidden": 8,
                "metadata_schema": {"sex": ["f", "m"], "site": ["a"]}}),
])
def test_the_model_args_allow_list_covers_what_the_zoo_saves(arch, kwargs, tmp_path):
    """Every key save_pretrained writes for the zoo's models is allowed, and the saved config passes the check."""
    from timm.models._hub import save_config_for_hf
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = zoo.create_model(arch, num_classes=3, **kwargs)
    save_config_for_hf(model, tmp_path / "config.json", model_config={"label_names": ["a", "b", "c"]})
    config = json.loads((tmp_path / "config.json").read_text())
    assert set(config.get("model_args", {})) <= set(MODEL_ARGS)
    check_model_config(config, "config.json")


def test_bounds_are_named_in_the_messages():
    base = {"architecture": "lenet5", "num_classes": 3}
    for change, phrase in (({"num_classes": 10_001}, "between 1 and 10,000"),
                           ({"zoo": {"params_total": 10**12}}, "between 0 and 500,000,000"),
                           ({"model_args": {"mlp_hidden": 10**6}}, "between 1 and 16,384"),
                           ({"pretrained_cfg": {"input_size": [3, 2048, 2048]}}, "from 1 to 1024 pixels"),
                           ({"pretrained_cfg": {"std": [0.0]}}, "finite numbers above 0"),
                           ({"pretrained_cfg": {"crop_pct": 0.001}}, "between 0.25 and 1")):
        with pytest.raises(zoo.ZooError, match=phrase):
            check_model_config({**base, **change}, "config.json")


def test_weights_over_the_parameter_limit_are_counted_from_the_header_and_not_read(tmp_path):
    from safetensors.torch import save_file

    from zoo.fileio import read_safetensors
    save_file({"a": torch.zeros(10, 10), "b": torch.zeros(5)}, tmp_path / "model.safetensors")
    with pytest.raises(zoo.ZooError, match="holds 105 parameters, over the zoo's limit of 100; it was not read"):
        read_safetensors(tmp_path / "model.safetensors", max_elements=100)
    assert set(read_safetensors(tmp_path / "model.safetensors", max_elements=105)) == {"a", "b"}
