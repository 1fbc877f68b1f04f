"""Transfer-learning modes, initialisation schemes and the errors of create_model."""
import ast
import math
from pathlib import Path

import pytest
import torch

import zoo

ROOT = Path(__file__).resolve().parents[1]


def test_modes_keep_their_public_spelling_and_order():
    assert zoo.MODES == ("scratch", "feature-extraction", "fine-tune", "partial-fine-tune")
    assert zoo.MODE_ORDER == ("scratch", "feature-extraction", "partial-fine-tune", "fine-tune")
    assert [zoo.get_mode(name).name for name in zoo.MODES] == list(zoo.MODES)


def test_each_mode_carries_what_it_implies():
    scratch, frozen, fine, partial = (zoo.get_mode(m) for m in zoo.MODES)
    assert not scratch.needs_pretrained and all(m.needs_pretrained for m in (frozen, fine, partial))
    assert [m.frozen_backbone for m in (scratch, frozen, fine, partial)] == [False, True, False, False]
    assert [m.freezes for m in (scratch, frozen, fine, partial)] == [False, True, False, True]
    assert [m.uses_trainable_stages for m in (scratch, frozen, fine, partial)] == [False, False, False, True]
    assert [m.head_lr_multiplier for m in (scratch, frozen, fine, partial)] == [1.0, 1.0, 10.0, 10.0]


@pytest.mark.parametrize("bad", ["transfer", "Fine-Tune", None, 3])
def test_an_unknown_mode_is_named_with_the_choices(bad):
    with pytest.raises(zoo.ZooError, match=rf"Unknown mode {bad!r}; choose one of the transfer modes: "
                                           r"scratch, feature-extraction, fine-tune, partial-fine-tune"):
        zoo.get_mode(bad)


def _mode_tuples(path: Path) -> list[str]:
    """Tuple, list and set literals in `path` that spell two or more mode names: a second declaration."""
    names = set(zoo.MODES)
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            spelled = [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in names]
            if len(spelled) >= 2:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {spelled}")
    return found


def test_modes_are_declared_once():
    """No source file lists the modes again (e.g. `mode in ("fine-tune", "partial-fine-tune")`): such a list drifts
    when a mode is added. Ask zoo.get_mode(name) for the property instead."""
    sources = [p for folder in ("zoo", "train", "ui", "scripts", "benchmarks") for p in (ROOT / folder).rglob("*.py")]
    found = [hit for path in sources + [ROOT / "app.py"] for hit in _mode_tuples(path)]
    assert not found, "modes listed again instead of read from zoo.modes: " + "; ".join(found)


def test_feature_extraction_trains_exactly_the_head():
    model = zoo.create_model("efficientnet_lite0", num_classes=4, mode="feature-extraction", pretrained=True)
    total, trainable = zoo.count_params(model)
    assert trainable == 1280 * 4 + 4 and total == 4_652_008 - 1281 * 1000 + trainable
    assert model.zoo_cfg["mode"] == "feature-extraction" and model.zoo_cfg["pretrained"]


def test_feature_extraction_keeps_batchnorm_statistics_frozen():
    model = zoo.create_model("resnet18", num_classes=2, mode="feature-extraction", pretrained=False)
    before = model.layer1[0].bn1.running_mean.clone()
    model.train()(torch.randn(4, 3, 32, 32) * 5 + 3)
    assert torch.equal(model.layer1[0].bn1.running_mean, before)
    zoo.apply_mode(model, "fine-tune")  # un-freezing restores normal batch norm behaviour
    model.train()(torch.randn(4, 3, 32, 32) * 5 + 3)
    assert not torch.equal(model.layer1[0].bn1.running_mean, before)


def test_feature_extraction_without_weights_warns_that_features_are_random():
    with pytest.warns(UserWarning, match="random"):
        zoo.create_model("quadsnet", num_classes=2, mode="feature-extraction")


@pytest.mark.parametrize("stages", [1, 2, 3])
def test_partial_fine_tune_trains_the_last_n_stages(stages):
    model = zoo.create_model("resnet18", num_classes=2, mode="partial-fine-tune", trainable_stages=stages)
    layers = ["layer4", "layer3", "layer2", "layer1"]
    for i, name in enumerate(layers):
        assert all(p.requires_grad == (i < stages) for p in getattr(model, name).parameters()), name
    assert all(not p.requires_grad for p in model.conv1.parameters())
    assert all(p.requires_grad for p in model.fc.parameters())


def test_partial_fine_tune_rejects_impossible_stage_counts():
    n = len(zoo.backbone_stages(zoo.create_model("lenet5", num_classes=2)))
    with pytest.raises(zoo.ZooError, match=f"from 1 to {n}"):
        zoo.create_model("lenet5", num_classes=2, mode="partial-fine-tune", trainable_stages=n + 1)


def test_fine_tune_param_groups_give_the_head_a_larger_lr():
    model = zoo.create_model("resnet18", num_classes=2, mode="fine-tune")
    groups = {g["name"]: g for g in zoo.param_groups(model, lr=1e-4)}
    assert groups["head"]["lr"] == pytest.approx(1e-3) and groups["backbone"]["lr"] == 1e-4
    assert sum(p.numel() for g in groups.values() for p in g["params"]) == zoo.count_params(model)[1]
    frozen = zoo.create_model("resnet18", num_classes=2, mode="feature-extraction")
    assert [g["name"] for g in zoo.param_groups(frozen, lr=1e-4)] == ["head"]


@pytest.mark.parametrize("scheme", sorted(zoo.INIT_SCHEMES))
def test_every_init_scheme_applies(scheme):
    model = zoo.create_model("lenet5", num_classes=10, init=scheme, bias_init=0.01 if scheme != "zeros" else "zeros")
    w = model.get_classifier().weight
    fan_in, fan_out = w.shape[1], w.shape[0]
    if scheme == "zeros":
        assert torch.count_nonzero(w) == 0
        return
    expected_std = {
        "he_normal": math.sqrt(2 / fan_in), "he_uniform": math.sqrt(2 / fan_in),
        "xavier_normal": math.sqrt(2 / (fan_in + fan_out)), "xavier_uniform": math.sqrt(2 / (fan_in + fan_out)),
        "lecun_normal": math.sqrt(1 / fan_in), "lecun_uniform": math.sqrt(1 / fan_in),
        "random_normal": 0.05, "random_uniform": 0.05 / math.sqrt(3), "truncated_normal": 0.05 * 0.88,
        "orthogonal": None,
    }[scheme]
    if expected_std is None:  # orthogonal rows
        assert torch.allclose(w @ w.T, torch.eye(fan_out), atol=1e-4)
    else:
        assert w.std().item() == pytest.approx(expected_std, rel=0.2)
    assert torch.allclose(model.get_classifier().bias, torch.full_like(model.get_classifier().bias, 0.01))


def test_init_on_pretrained_model_touches_only_the_head():
    ref = zoo.create_model("efficientnet_lite0", num_classes=2, mode="fine-tune", pretrained=True)
    model = zoo.create_model("efficientnet_lite0", num_classes=2, mode="fine-tune", pretrained=True, init="he_normal")
    assert torch.equal(ref.conv_stem.weight, model.conv_stem.weight)


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="resnet5"), r"Unknown architecture 'resnet5'.*Closest: resnet50"),
    (dict(name="quadsnet", mode="transfer"), "Unknown mode 'transfer'"),
    (dict(name="quadsnet", num_classes=-1), "num_classes must be an integer >= 0"),
    (dict(name="quadsnet", num_classes=2.5), "num_classes must be an integer"),
    (dict(name="quadsnet", in_chans=4), "in_chans must be 1"),
    (dict(name="quadsnet", head="transformer"), "Unknown head 'transformer'"),
    (dict(name="quadsnet", init="kaiming"), "Unknown init scheme 'kaiming'"),
    (dict(name="quadsnet", pretrained=True, mode="feature-extraction"), "quadsnet has no ImageNet weights"),
    (dict(name="efficientnet_lite0", pretrained=True, mode="scratch"), "contradicts"),
    (dict(name="quadsnet", metadata_schema={"sex": ["f", "m"]}), "needs a metadata head"),
])
def test_create_model_errors_are_clear(kwargs, match):
    kwargs.setdefault("num_classes", 2)
    with pytest.raises(zoo.ZooError, match=match):
        zoo.create_model(kwargs.pop("name"), **kwargs)


def test_pretrained_without_network_fails_fast(monkeypatch):
    import time

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "ENDPOINT", "http://127.0.0.1:9")
    start = time.monotonic()
    with pytest.raises(zoo.ZooError, match=r"resnet18\.a1_in1k.*cannot be reached"):
        zoo.create_model("resnet18", num_classes=2, mode="fine-tune", pretrained=True)
    assert time.monotonic() - start < 10
