"""Every architecture of the registry, and every head, exports to ONNX (logits and the OOD check's image
features) and verifies both against PyTorch.

At the architecture's smallest input size (at least 32 px) and 3 classes, so that the whole registry runs
in CI; verification is the one export_onnx always does (ONNX Runtime vs PyTorch, max |Δ logit| and top-1).
"""
import pytest
import torch

import zoo
from _registry_params import registry_params
from zoo.onnx_export import FEATURES_NAME, INPUT_NAME, METADATA_NAME, OUTPUT_NAME, OnnxIO, check_onnx_file, export_onnx

pytest.importorskip("onnxruntime")

HEAD_CASES = [("resnet18", head) for head in zoo.HEADS] + [("quadsnet", "soft_attention+metadata")]


def _small(model, size):
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (model.pretrained_cfg["input_size"][0], size, size)}
    return model.eval()


def _export_and_check(model, tmp_path):
    io_spec = OnnxIO.from_model(model)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, *io_spec.input_size, generator=generator)
    meta = None
    if io_spec.metadata_features is not None:
        schema = model.metadata_schema
        meta = schema.encode([{}, {"age": 30, "sex": "male", "localization": "back"}, {"sex": "female"}])
    result = export_onnx(model, tmp_path / "model.onnx", inputs=x, metadata=meta)
    assert not model.training  # the export leaves the model in the mode it found it in
    v = result.info["verification"]
    assert v["inputs"] == 3 and v["max_abs_diff"] <= v["tolerance"] and v["top1_agreement"] == 1.0
    assert v["features"]["max_abs_diff"] <= v["features"]["tolerance"]  # the OOD check's input, same rule
    assert result.info["inputs"][INPUT_NAME] == ["batch", *io_spec.input_size]
    outputs = dict(result.info["outputs"])
    feature_map = outputs.pop("feature_map", None)  # where forward_features gives a 2-D map: Grad-CAM's input
    assert outputs == {OUTPUT_NAME: ["batch", io_spec.num_classes], FEATURES_NAME: ["batch", model.num_features]}
    assert feature_map is None or (feature_map[:2] == ["batch", model.num_features] and v["cam"]["form"] in
                                   (None, "linear", "mlp"))
    assert (METADATA_NAME in result.info["inputs"]) == (meta is not None)
    config = {"num_classes": io_spec.num_classes, "pretrained_cfg": {"input_size": list(io_spec.input_size)},
              "model_args": {"head": getattr(model, "head_name", None),
                             "metadata_schema": model.metadata_schema.to_dict() if meta is not None else None}}
    check_onnx_file(result.path, config)  # what a loader checks: parses, checker, IO match


@pytest.mark.parametrize("name", registry_params())
def test_every_architecture_exports_and_verifies(name, tmp_path):
    info = zoo.get_architecture(name)
    size = max(32, *info.min_input_size[1:])
    torch.manual_seed(0)
    _export_and_check(_small(zoo.create_model(name, num_classes=3), size), tmp_path)


@pytest.mark.parametrize("backbone,head", HEAD_CASES, ids=[f"{b}-{h}" for b, h in HEAD_CASES])
def test_every_head_exports_and_verifies(backbone, head, tmp_path):
    torch.manual_seed(0)
    _export_and_check(_small(zoo.create_model(backbone, num_classes=3, head=head), 64), tmp_path)
