"""ONNX export of runs, the ONNX Runtime backend, and what happens with bad ONNX files.

An export is verified against PyTorch before it is written; a loader refuses a file that is invalid,
belongs to another model or was not verified against the run's weights, and falls back to PyTorch
saying why. `python -m train` exports at the end of a run and train.push publishes the file.
"""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import constants
from PIL import Image

import zoo
from _onnx_graphs import write_graph
from hub_server import HubServer, point_client_at
from zoo import onnx_export, onnx_int8
from zoo.__main__ import main as zoo_main
from zoo.backends import OnnxBackend, TorchBackend, check_backend, load_backend
from zoo.onnx_export import check_onnx_file, export_onnx, quantize_int8, read_onnx_info
from zoo.run_layout import ONNX_INFO_NAME, ONNX_INT8_NAME, ONNX_NAME
from zoo.trust import features_and_logits, read_trust

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

ALICE = "hf_alice_write_0123456789abcdef"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(folder: Path, arch: str = "lenet5", head: str | None = None, size: int | None = None, classes: int = 3,
         seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = zoo.create_model(arch, num_classes=classes, head=head)
    if size is not None:
        model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (model.pretrained_cfg["input_size"][0], size, size)}
    return zoo.save_pretrained(model.eval(), folder, label_names=[f"class{i}" for i in range(classes)], dataset="toy")


def _inputs(folder: Path, n: int = 4) -> torch.Tensor:
    c, h, w = json.loads((folder / "config.json").read_text())["pretrained_cfg"]["input_size"]
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(1))


# --- export ----------------------------------------------------------------------------------------

def test_export_writes_a_verified_file_beside_the_weights_and_leaves_them_as_they_were(tmp_path, capsys):
    run = _run(tmp_path / "run")
    before = {name: _sha(run / name) for name in ("config.json", "model.safetensors")}
    assert zoo_main(["export", str(run)]) == 0
    assert "verified on" in capsys.readouterr().out
    assert {name: _sha(run / name) for name in before} == before  # config.json is the weights' description, untouched
    info = read_onnx_info(run)[ONNX_NAME]
    assert info["sha256"] == _sha(run / ONNX_NAME) and info["weights_sha256"] == before["model.safetensors"]
    assert info["format_version"] == onnx_export.ONNX_INFO_VERSION
    v = info["verification"]
    assert v["inputs"] >= 4 and v["max_abs_diff"] <= 1e-4 and v["top1_agreement"] == 1.0
    assert v["features"]["max_abs_diff"] <= v["features"]["tolerance"] and v["features"]["min_cosine"] > 0.99999
    assert v["onnxruntime"] == __import__("onnxruntime").__version__
    width = zoo.load_pretrained(run).num_features
    assert info["inputs"] == {"pixel_values": ["batch", 1, 32, 32]}
    # LeNet-5's C5 map is 1x1 at 32 px: exported all the same (too small for Grad-CAM, which says so)
    assert info["outputs"] == {"logits": ["batch", 3], "features": ["batch", width],
                               "feature_map": ["batch", width, 1, 1]}
    assert v["feature_map"]["max_abs_diff"] <= v["feature_map"]["tolerance"] and v["cam"]["form"] is None
    export_onnx(run)  # again: the card keeps one ONNX section, the new one
    card = (run / "README.md").read_text()
    assert card.count("## ONNX Runtime") == 1 and card.index("## ONNX Runtime") < card.index("## Intended use")
    assert "`pixel_values`: float32 (batch, 1, 32, 32)" in card and "`logits`: float32 (batch, 3)" in card
    assert f"`features`: float32 (batch, {width})" in card and "lowest cosine" in card
    session = onnx_export.onnx_session(run / ONNX_NAME)
    x = _inputs(run)
    model = zoo.load_pretrained(run)
    with torch.inference_mode():
        expected, (features, _) = model(x).numpy(), features_and_logits(model, x)
    logits, got_features = session.run(["logits", "features"], {"pixel_values": x.numpy()})
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    np.testing.assert_allclose(got_features, features.numpy(), atol=1e-5)


class _TracedBranch(torch.nn.Module):
    """Python control flow on the input's values: tracing keeps one branch, so the export computes another
    function than PyTorch does; verification must catch it."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3 * 8 * 8, 2)
        self.num_classes, self.num_features = 2, 3 * 8 * 8
        self.pretrained_cfg = {"input_size": (3, 8, 8)}

    def forward_features(self, x):
        return x.flatten(1)  # (B, 192)

    def forward_head(self, x):
        logits = self.fc(x)
        return logits if bool(x.mean() > 0) else -logits

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


class _NoInterface(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)
        self.num_classes, self.pretrained_cfg = 2, {"input_size": (1, 2, 2)}

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_a_model_that_does_not_verify_is_not_written(tmp_path):
    target = tmp_path / "out" / ONNX_NAME
    target.parent.mkdir()
    x = torch.rand(4, 3, 8, 8) + 0.1  # positive: PyTorch takes the branch the trace (on zeros) did not
    with pytest.raises(zoo.ZooError, match=r"does not reproduce PyTorch.*was not written"):
        export_onnx(_TracedBranch(), target, inputs=x)
    assert list(target.parent.iterdir()) == []  # no file, no onnx.json, no temporary left behind


def test_export_needs_a_path_for_a_bare_model_and_a_folder_that_exists(tmp_path):
    with pytest.raises(zoo.ZooError, match="needs a path"):
        export_onnx(zoo.create_model("lenet5", num_classes=2))
    with pytest.raises(zoo.ZooError, match="does not exist"):
        export_onnx(zoo.create_model("lenet5", num_classes=2), tmp_path / "missing" / ONNX_NAME)
    with pytest.raises(zoo.ZooError, match="timm's interface.*_NoInterface lacks forward_features, forward_head, num_f"):
        export_onnx(_NoInterface(), tmp_path / ONNX_NAME)
    assert not (tmp_path / ONNX_NAME).exists()


@pytest.mark.parametrize("arch,head,size,ood", [("lenet5", None, None, "knn-cosine"),
                                                 ("lenet5", None, None, "mahalanobis"),
                                                 ("resnet18", "metadata", 48, "knn-cosine")])
def test_the_card_snippet_runs_with_onnxruntime_alone(arch, head, size, ood, tmp_path):
    from zoo.ood import ood_method, save_ood_statistics

    run = _run(tmp_path / "run", arch, head, size)
    model = zoo.load_pretrained(run)
    bank = torch.randn(20, model.num_features, generator=torch.Generator().manual_seed(2))
    labels = np.arange(20) % 2
    # the snippet's OOD check must give the zoo's score, whichever method the file names
    save_ood_statistics(run, ood_method(ood).fit(bank, labels).with_threshold(0.5))
    config = json.loads((run / "config.json").read_text())
    config.setdefault("zoo", {})["temperature"] = 1.7  # and its probabilities the calibrated ones
    (run / "config.json").write_text(json.dumps(config))
    export_onnx(run)
    card = (run / "README.md").read_text()
    snippet = card.split("## ONNX Runtime", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    retina = np.asarray(Image.open(Path(__import__("skimage").__file__).parent / "data" / "retina.jpg"))
    Image.fromarray(retina[300:700, 200:900]).save(run / "image.png")  # 700x400: the resize keeps the ratio
    code = "import sys; sys.modules['torch'] = None  # the snippet must not need PyTorch\n" + snippet + \
        "\nprint(json.dumps([[float(v) for v in logits], [float(v) for v in probabilities]]))\n"
    result = subprocess.run([sys.executable, "-c", code], cwd=run, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    label, ood_line, outputs = result.stdout.splitlines()[-3:]
    logits, probabilities = json.loads(outputs)
    backend = load_backend(run)
    transform = __import__("timm").data.create_transform(**backend.data_config)
    image = zoo.images.to_model_mode(zoo.images.load_image(run / "image.png").image, backend.io.input_size[0])
    expected, features = backend.predict(transform(image).unsqueeze(0))  # the zoo's preprocessing, unknown metadata
    np.testing.assert_allclose(logits, expected[0].numpy(), atol=1e-4)
    assert label == backend.label_names[int(expected[0].argmax())]
    trust = read_trust(run, config, model)
    np.testing.assert_allclose(probabilities, trust.calibrated_probabilities(expected[0]).numpy(), atol=1e-5)
    score = float(trust.ood.scores(features)[0])
    assert ood_line.startswith(f"OOD score ({ood}) {score:.4f}, threshold 0.5000:"), (ood_line, score)


# --- loading: the backend and its fallbacks --------------------------------------------------------

def test_the_onnx_backend_answers_like_pytorch_without_building_it(tmp_path):
    run = _run(tmp_path / "run", "resnet18", "soft_attention+metadata", 32)
    export_onnx(run)
    backend = load_backend(run)
    assert isinstance(backend, OnnxBackend) and backend.name == "onnx" and backend.fallback_reason is None
    assert not backend.torch_loaded and backend.nbytes == backend.onnx_bytes  # Grad-CAM builds it on demand
    x = _inputs(run)
    meta = backend.metadata_schema.encode([{"age": 40, "sex": "male", "localization": "back"}, {}, {}, {}])
    model = backend.torch_model()
    assert backend.torch_loaded and backend.nbytes > backend.onnx_bytes and backend.torch_model() is model
    with torch.inference_mode():
        logits, features = backend.predict(x, meta)
        np.testing.assert_allclose(logits.numpy(), model(x, meta).numpy(), atol=1e-4)
        np.testing.assert_allclose(features.numpy(), features_and_logits(model, x, meta)[0].numpy(), atol=1e-4)
        np.testing.assert_allclose(backend.predict(x)[0].numpy(), model(x).numpy(), atol=1e-4)  # unknown metadata
    assert backend.features_reason is None and backend.feature_width == model.num_features == features.shape[1]
    assert backend.data_config == zoo.resolve_data_config(model)
    assert "ONNX Runtime" in backend.description and "fp32" in backend.description
    with pytest.raises(zoo.ZooError, match=r"takes \(batch, 3, 32, 32\) input, got \(1, 3, 64, 64\)"):
        backend.predict(torch.zeros(1, 3, 64, 64))
    torch_backend = load_backend(run, "torch")
    assert isinstance(torch_backend, TorchBackend) and torch_backend.fallback_reason is None
    for ours, theirs in zip(torch_backend.predict(x, meta), backend.predict(x, meta)):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-4)


def test_a_file_exported_before_the_features_output_still_answers_without_an_ood_check(tmp_path):
    run = _run(tmp_path / "run")
    write_graph(run, "logits_only")
    backend = load_backend(run)
    assert backend.name == "onnx" and backend.fallback_reason is None and not backend.torch_loaded
    assert backend.features_reason == ("no OOD check on ONNX for this file (model.onnx, exported before it gave image "
                                       "features): re-export it with python -m zoo export RUN")
    assert backend.info["verification"]["features"] is None and backend.feature_width is None
    assert "no OOD check" in backend.description
    x = _inputs(run)
    logits, features = backend.predict(x)
    assert features is None
    with torch.inference_mode():
        np.testing.assert_allclose(logits.numpy(), zoo.load_pretrained(run)(x).numpy(), atol=1e-5)
    export_onnx(run)  # re-exported: features now
    assert load_backend(run).features_reason is None and load_backend(run).predict(x)[1] is not None


def test_features_that_do_not_match_pytorch_are_refused_like_wrong_logits(tmp_path):
    run = _run(tmp_path / "run")
    write_graph(run, "features_off")  # the logits are right, the features 1% off
    backend = load_backend(run)
    assert backend.name == "torch" and "does not reproduce PyTorch's image features" in backend.fallback_reason
    assert "lowest cosine" in backend.fallback_reason


def test_a_run_without_onnx_gets_one_exported_once_into_the_cache_not_the_run_folder(tmp_path):
    run = _run(tmp_path / "run")
    listing = sorted(p.name for p in run.iterdir())
    first = load_backend(run)
    assert first.name == "onnx" and first.path.parent != run and sorted(p.name for p in run.iterdir()) == listing
    stamp = first.path.stat().st_mtime_ns
    second = load_backend(run)
    assert second.path == first.path and second.path.stat().st_mtime_ns == stamp and not second.torch_loaded
    _run(run, seed=1)  # retrained: other weights, another cache entry
    assert load_backend(run).path != first.path
    no_export = load_backend(_run(tmp_path / "other"), export_missing=False)
    assert no_export.name == "torch" and "has no model.onnx" in no_export.fallback_reason


def _graph_model(nodes, initializers=(), domain_imports=()):
    """A hand-made ONNX model with a run's interface: pixel_values (batch, 1, 32, 32) -> logits (batch, 3)."""
    helper = onnx.helper
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("pixel_values", onnx.TensorProto.FLOAT, ["batch", 1, 32, 32])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 3])], initializer=list(initializers))
    opsets = [helper.make_opsetid("", 17)] + [helper.make_opsetid(d, 1) for d in domain_imports]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def _bad_file(kind: str, run: Path, tmp_path: Path) -> bytes:
    helper = onnx.helper
    if kind == "garbage":
        return b"\x08\x07this is not protobuf" * 50
    if kind == "other_model":  # 4 classes for a 3-class run
        export_onnx(_run(tmp_path / "four", classes=4))
        return (tmp_path / "four" / ONNX_NAME).read_bytes()
    if kind == "other_weights":  # the right interface, someone else's weights, no record
        export_onnx(_run(tmp_path / "twin", seed=7))
        return (tmp_path / "twin" / ONNX_NAME).read_bytes()
    if kind == "custom_op":
        return _graph_model([helper.make_node("Evil", ["pixel_values"], ["logits"], domain="evil.ops")],
                            domain_imports=["evil.ops"])
    if kind == "external_data":
        weight = helper.make_tensor("w", onnx.TensorProto.FLOAT, [1024, 3], np.zeros(1024 * 3, np.float32))
        weight.ClearField("float_data")
        weight.data_location = onnx.TensorProto.EXTERNAL
        weight.external_data.add(key="location", value="../../../etc/passwd")
        nodes = [helper.make_node("Flatten", ["pixel_values"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"])]
        return _graph_model(nodes, [weight])
    raise AssertionError(kind)


BAD = {"garbage": "not a valid ONNX file", "other_model": "config.json says 'logits' of shape (batch, 3)",
       "other_weights": "does not reproduce PyTorch", "custom_op": "custom-op library",
       "external_data": "external file"}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_model_onnx_is_refused_and_pytorch_answers_saying_why(kind, tmp_path):
    run = _run(tmp_path / "run")
    (run / ONNX_NAME).write_bytes(_bad_file(kind, run, tmp_path))
    backend = load_backend(run)
    assert backend.name == "torch" and BAD[kind] in backend.fallback_reason
    assert "ONNX Runtime not used" in backend.description
    x = _inputs(run)
    with torch.inference_mode():
        np.testing.assert_array_equal(backend.predict(x)[0].numpy(), zoo.load_pretrained(run)(x).numpy())
    if kind != "other_weights":  # the file itself is wrong: the check alone refuses it
        with pytest.raises(zoo.ZooError, match=BAD[kind].replace("(", r"\(").replace(")", r"\)")):
            check_onnx_file(run / ONNX_NAME, json.loads((run / "config.json").read_text()))


def test_a_swapped_file_with_a_stale_record_is_verified_again_and_refused(tmp_path):
    run = _run(tmp_path / "run")
    export_onnx(run)
    export_onnx(_run(tmp_path / "twin", seed=7))
    (run / ONNX_NAME).write_bytes((tmp_path / "twin" / ONNX_NAME).read_bytes())  # onnx.json still names the old one
    backend = load_backend(run)
    assert backend.name == "torch" and "was refused" in backend.fallback_reason


def test_a_file_verified_elsewhere_is_checked_once_here_then_remembered(tmp_path, monkeypatch):
    import zoo._hub

    run = _run(tmp_path / "run")
    export_onnx(run)  # the export's own record is in this zoo's cache: trusted without PyTorch
    assert load_backend(run).info["verification"]["inputs_source"].startswith("reference inputs (example images")
    monkeypatch.setattr(zoo._hub, "CACHE_DIR", tmp_path / "another-machine")  # a copy: onnx.json came along
    first = load_backend(run)
    assert first.name == "onnx" and first.info["verification"]["inputs_source"] == "reference inputs, when loaded"
    (run / ONNX_INFO_NAME).unlink()  # the sidecar plays no part either way
    again = load_backend(run)
    assert again.name == "onnx" and again.info == first.info


def test_without_onnxruntime_the_backend_is_pytorch_and_says_how_to_install_it(tmp_path, monkeypatch):
    run = _run(tmp_path / "run")
    export_onnx(run)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if it were not installed
    backend = load_backend(run)
    assert backend.name == "torch" and "pip install 'medtl-zoo[onnx]'" in backend.fallback_reason


def test_unknown_backend_is_refused():
    assert check_backend("onnx") == "onnx"
    with pytest.raises(zoo.ZooError, match="unknown inference backend 'tensorrt'; choose one of onnx, onnx-int8, torch"):
        check_backend("tensorrt")


# --- int8 ------------------------------------------------------------------------------------------

def test_int8_is_a_separate_backend_kept_only_where_top1_agrees(tmp_path, monkeypatch):
    run = _run(tmp_path / "run", "resnet18", None, 32)
    export_onnx(run)
    fp32 = _sha(run / ONNX_NAME)
    x = _inputs(run, 16)
    assert load_backend(run, "onnx-int8").name == "onnx"  # none yet: fp32, saying why
    with monkeypatch.context() as patched:  # (undo() would also undo conftest's cache folder)
        patched.setattr(onnx_int8, "INT8_MIN_AGREEMENT", 1.01)  # an agreement no model reaches
        with pytest.raises(zoo.ZooError, match="under the 101% required"):
            quantize_int8(run, x)
    assert not (run / ONNX_INT8_NAME).exists()
    result = quantize_int8(run, x, inputs_source="16 random inputs")
    assert result.info["verification"]["top1_agreement_with_fp32"] >= 0.99 and _sha(run / ONNX_NAME) == fp32
    backend = load_backend(run, "onnx-int8")
    assert backend.name == "onnx-int8" and "int8" in backend.description and backend.fallback_reason is None
    assert load_backend(run).name == "onnx" and load_backend(run).path.name == ONNX_NAME  # never silently int8


# --- training and publishing -----------------------------------------------------------------------

TRAIN = ["--arch", "lenet5", "--data", "digits", "--epochs", "1", "--quiet"]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    home = tmp_path / "hf"
    with HubServer(tokens={ALICE: "alice"}) as server:
        point_client_at(monkeypatch, server.endpoint, home)
        yield server


def test_train_exports_onnx_push_publishes_it_and_the_hub_copy_answers(hub, tmp_path, monkeypatch):
    from train import main as train_main

    monkeypatch.setenv("HF_TOKEN", ALICE)
    run = tmp_path / "run"
    assert train_main(TRAIN + ["--out", str(run), "--push-to-hub", "alice/digits"]) == 0
    info = read_onnx_info(run)[ONNX_NAME]
    assert info["verification"]["inputs_source"] == "test images of run" and info["verification"]["inputs"] == 64
    assert info["weights_sha256"] == _sha(run / "model.safetensors")
    assert "onnx" not in json.loads((run / "config.json").read_text()).get("zoo", {})
    published = hub.repos["alice/digits"].resolve("main").files
    assert published[ONNX_NAME] == (run / ONNX_NAME).read_bytes() and ONNX_INFO_NAME in published
    backend = load_backend("alice/digits")  # from the Hub: its own verified model.onnx, no PyTorch built
    assert backend.name == "onnx" and backend.path.name == ONNX_NAME and not backend.torch_loaded
    assert Path(constants.HF_HUB_CACHE) in backend.path.parents
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = [Image.fromarray(np.rint(d * (255 / 16)).astype(np.uint8), mode="L") for d in digits.images[:32]]
    transform = __import__("timm").data.create_transform(**backend.data_config)
    x = torch.stack([transform(i) for i in images])
    with torch.inference_mode():
        reference = zoo.load_pretrained(run)(x)
    assert torch.equal(backend.predict(x)[0].argmax(1), reference.argmax(1))

    assert train_main(TRAIN + ["--out", str(run), "--overwrite", "--no-onnx"]) == 0  # no stale file survives
    assert not (run / ONNX_NAME).exists() and not (run / ONNX_INFO_NAME).exists()
    assert "## ONNX Runtime" not in (run / "README.md").read_text()


def test_push_refuses_an_onnx_file_not_verified_against_the_weights(tmp_path):
    from train.push import PushError, push_run

    run = _run(tmp_path / "run")
    export_onnx(run)
    assert ONNX_NAME in push_run(run, "alice/x", dry_run=True)
    _run(run, seed=3)  # new weights, old model.onnx
    with pytest.raises(PushError, match="model.onnx is not published: .*It does not belong to these weights"):
        push_run(run, "alice/x", dry_run=True)


def test_the_onnx_option_is_validated(monkeypatch):
    from train.config import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match="--onnx must be true or false"):
        TrainConfig(arch="lenet5", data="digits", onnx="yes").validate()
    real = __import__("importlib").util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(ConfigError, match="needs onnxruntime.*--no-onnx"):
        TrainConfig(arch="lenet5", data="digits").validate()
    TrainConfig(arch="lenet5", data="digits", onnx=False).validate()
