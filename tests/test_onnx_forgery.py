"""A run folder's word about itself is not trusted: a tampered model.onnx whose onnx.json was rewritten to match
is verified against the PyTorch weights and refused, and what a model gives on each call is checked, so that a
file which got past verification anyway (a lying record in the zoo's own cache) fails its own column only."""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from _app_zoo import DIGITS
from _onnx_tamper import forge_cache_record, forge_onnx_json, nan_features, shift_bias, widen_logits
from _private_zoo import fit_digit_ood
from ui.comparison import compare
from zoo import inference
from zoo.backends import load_backend
from zoo.catalog import discover_models
from zoo.images import LoadedImage
from zoo.onnx_export import reference_inputs, verification_record
from zoo.run_layout import ONNX_INT8_NAME, ONNX_NAME

pytest.importorskip("onnxruntime")


def _digit_inputs(backend, count: int = 12) -> torch.Tensor:
    from sklearn.datasets import load_digits

    transform = inference.build_transform(backend.data_config)
    images = [Image.fromarray(np.rint(d * (255 / 16)).astype(np.uint8), "L") for d in load_digits().images[:count]]
    return torch.stack([transform(image) for image in images])  # (N, 1, 32, 32)


@pytest.fixture
def run(weights, tmp_path):
    """A copy of the tiny zoo's LeNet-5 on digits, with the model.onnx its export verified and recorded."""
    folder = tmp_path / "lenet5-scratch-digits"
    shutil.copytree(weights / "lenet5-scratch-digits", folder)
    zoo.export_onnx(folder)
    return folder


def _unanswered_class(run) -> int:
    """A class PyTorch gives none of the verification's reference inputs: int8's top-1 check must see the forgery."""
    model = zoo.load_pretrained(run)
    inputs, _ = reference_inputs(model)
    with torch.inference_mode():
        answered = set(model(inputs).argmax(1).tolist())
    return next(i for i in range(len(DIGITS)) if i not in answered)


def test_a_tampered_model_onnx_with_a_forged_onnx_json_is_refused_and_pytorch_answers(run):
    target = _unanswered_class(run)
    shift_bias(run / ONNX_NAME, target)  # +100 on one class: every image becomes that class
    entry = forge_onnx_json(run)
    assert load_backend(run, "torch").name == "torch"  # (the weights themselves are untouched)
    backend = load_backend(run)
    assert backend.name == "torch", "a forged onnx.json was taken on its word"
    assert "was refused" in backend.fallback_reason and "does not reproduce PyTorch" in backend.fallback_reason
    assert "ONNX Runtime not used" in backend.description and "max |Δ logit| 1e-06" not in backend.description
    x = _digit_inputs(backend)
    with torch.inference_mode():
        answers = backend.predict(x)[0].argmax(1)
        assert torch.equal(answers, zoo.load_pretrained(run)(x).argmax(1)) and not bool((answers == target).all())
    assert verification_record(entry["sha256"], entry["weights_sha256"]) is None  # nothing trusted was remembered


def test_a_tampered_model_onnx_with_a_forged_onnx_json_is_not_published(run, tmp_path, monkeypatch):
    from hub_server import HubServer, point_client_at
    from train.push import PushError, push_run

    shutil.copyfile(run / ONNX_NAME, tmp_path / "honest.onnx")
    shift_bias(run / ONNX_NAME, _unanswered_class(run))
    forge_onnx_json(run)
    token = "hf_alice_write_0123456789abcdef"
    with HubServer(tokens={token: "alice"}) as server:
        point_client_at(monkeypatch, server.endpoint, tmp_path / "hf")
        with pytest.raises(PushError, match=rf"{ONNX_NAME} is not published: {ONNX_NAME} of {run.name} was refused"
                                            r".*does not reproduce PyTorch.*then push again"):
            push_run(run, "alice/forged", token=token)
        assert "alice/forged" not in server.repos  # refused before anything was sent
        shutil.copyfile(tmp_path / "honest.onnx", run / ONNX_NAME)  # the export as it was: published
        assert ONNX_NAME in push_run(run, "alice/honest", token=token)


def test_a_tampered_model_onnx_published_with_a_forged_onnx_json_is_refused_from_the_hub(run, tmp_path, monkeypatch):
    from hub_server import HubServer, point_client_at

    shift_bias(run / ONNX_NAME, _unanswered_class(run))
    forge_onnx_json(run)
    with HubServer() as server:
        point_client_at(monkeypatch, server.endpoint, tmp_path / "hf")
        # published with another tool (train.push refuses it): the Hub copy is refused on load all the same
        server.add_repo("alice/forged", {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()})
        backend = load_backend("alice/forged")
        assert backend.name == "torch" and "was refused" in backend.fallback_reason
        x = _digit_inputs(backend)
        with torch.inference_mode():
            assert torch.equal(backend.predict(x)[0].argmax(1), zoo.load_pretrained(run)(x).argmax(1))


def test_a_tampered_int8_file_with_a_forged_record_is_refused_for_the_fp32_file(run):
    shutil.copyfile(run / ONNX_NAME, run / ONNX_INT8_NAME)
    shift_bias(run / ONNX_INT8_NAME, _unanswered_class(run))
    forge_onnx_json(run, ONNX_INT8_NAME)
    backend = load_backend(run, "onnx-int8")
    assert backend.name == "onnx" and backend.path.name == ONNX_NAME  # the verified fp32 file answers
    assert f"{ONNX_INT8_NAME} of {run.name} was refused" in backend.fallback_reason
    assert "top-1 class agrees with PyTorch's" in backend.fallback_reason


def _two_model_zoo(weights, tmp_path):
    zoo_dir = tmp_path / "zoo"
    for name in ("lenet5-scratch-digits", "quadsnet-scratch-digits"):
        shutil.copytree(weights / name, zoo_dir / name)
    return zoo_dir, zoo_dir / "lenet5-scratch-digits"


def _digit_image() -> LoadedImage:
    from sklearn.datasets import load_digits

    return LoadedImage(Image.fromarray(np.rint(load_digits().images[3] * (255 / 16)).astype(np.uint8), "L"))


def test_logits_of_the_wrong_width_fail_that_models_column_only(weights, tmp_path):
    zoo_dir, bad = _two_model_zoo(weights, tmp_path)
    config = json.loads((bad / "config.json").read_text())
    config["zoo"]["temperature"] = 1.5  # the trust step indexed labels with the extra class: IndexError
    (bad / "config.json").write_text(json.dumps(config))
    widen_logits(bad / ONNX_NAME)
    forge_cache_record(bad)  # past verification: only the check on every call stands in the way
    comparison = compare(_digit_image(), discover_models(zoo_dir), inference.ModelCache(), cam=False)
    records = {r["model"]: r for r in comparison.records()}
    failed = records["lenet5-scratch-digits"]
    assert "gave logits of shape (1, 11), not (1, 10)" in failed["error"]
    assert failed["top_k"] == [] and failed["calibrated_top_k"] is None
    assert records["quadsnet-scratch-digits"]["error"] is None and records["quadsnet-scratch-digits"]["top_k"]
    assert comparison.summary.failed == ["lenet5-scratch-digits"]


def test_nan_features_give_no_ood_check_never_a_pass(weights, tmp_path):
    zoo_dir, bad = _two_model_zoo(weights, tmp_path)
    fit_digit_ood(bad, count=60)
    nan_features(bad / ONNX_NAME)
    forge_cache_record(bad)
    image = _digit_image()
    records = {r["model"]: r for r in compare(image, discover_models(zoo_dir), inference.ModelCache(),
                                                        cam=False).records()}
    lenet = records["lenet5-scratch-digits"]
    assert lenet["error"] is None and lenet["top_k"]  # the logits are right: it answers
    assert lenet["ood"] is None and lenet["ood_reason"].startswith("no OOD check: features not finite")
    on_torch = compare(image, discover_models(zoo_dir), inference.ModelCache(backend="torch"),
                                 cam=False).records()
    assert next(r for r in on_torch if r["model"] == lenet["model"])["ood"]["flagged"] is False  # a real check
