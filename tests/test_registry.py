"""Every registered architecture: metadata, create, forward, backward, freeze, and round-trip through the Hub layout."""
import math
from pathlib import Path

import pytest
import timm
import torch

import zoo
from _registry_params import registry_params

SEEDS_DIR = Path(__file__).resolve().parents[2] / "shared" / "seeds"
ARCHS = zoo.list_architectures()

REQUIRED = {  # every architecture the brief and the zoo issue name
    "lenet5", "alexnet", "zfnet", "googlenet", "nasnet_mobile", "quadsnet", "vgg11", "vgg16", "vgg19",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "densenet121", "densenet201", "inception_v3",
    "inception_v4", "inception_resnet_v2", "xception", "mobilenetv1_100", "mobilenetv2_100",
    "mobilenetv3_small_100", "mobilenetv3_large_100", "efficientnet_b0", "efficientnet_b2", "efficientnet_lite0",
    "nasnetalarge",
}


def test_every_surveyed_architecture_is_registered():
    assert REQUIRED <= set(ARCHS)


def test_mode_order_shows_every_mode_once():
    assert len(zoo.MODE_ORDER) == len(set(zoo.MODE_ORDER)) and set(zoo.MODE_ORDER) == set(zoo.MODES)
    assert zoo.MODE_ORDER[0] == "scratch"


@pytest.mark.parametrize("name", ARCHS)
def test_input_sizes_are_the_families_default_cfgs(name):
    # one declaration: the registry's sizes are read from the family's default_cfgs, so no typed second copy can
    # drift from them
    a = zoo.get_architecture(name)
    cfg = timm.models.get_pretrained_cfg(a.imagenet_tag or a.timm_name)
    assert a.default_input_size == tuple(cfg.input_size)
    if cfg.min_input_size is not None:
        assert a.min_input_size == tuple(cfg.min_input_size)


@pytest.mark.parametrize("name", ["googlenet", "nasnet_mobile"])
def test_the_smallest_registered_input_runs(name):
    # the smallest input that runs, measured: one pixel less fails inside torch (an empty pooling output for
    # GoogLeNet, a 3x3 stem convolution larger than the image for NASNet-A Mobile)
    c, h, w = zoo.get_architecture(name).min_input_size
    model = zoo.create_model(name, num_classes=2).train()
    out = model(torch.randn(2, c, h, w))
    (out[0] if isinstance(out, tuple) else out).sum().backward()
    with pytest.raises(zoo.ZooError, match=f"at least {h}x{w}"):
        model(torch.randn(2, c, h - 1, w - 1))


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        zoo._registry.register_architecture(zoo.get_architecture("resnet50"))


@pytest.mark.parametrize("name", ARCHS)
def test_metadata_schema(name):
    a = zoo.get_architecture(name)
    assert a.name == name and timm.is_model(a.timm_name)
    assert a.seeds and all(s in zoo._registry.SEEDS for s in a.seeds)
    if SEEDS_DIR.is_dir():
        assert all((SEEDS_DIR / f).is_file() for f in a.seed_files)
    assert a.paper and a.family
    assert len(a.default_input_size) == 3 and len(a.min_input_size) == 3
    assert all(m <= d for m, d in zip(a.min_input_size[1:], a.default_input_size[1:]))
    assert a.recommended_mode in a.modes and set(a.modes) <= set(zoo.MODES)
    if a.imagenet_tag is not None:
        assert a.imagenet_tag in timm.list_pretrained(a.timm_name + ".*"), a.imagenet_tag
        assert a.recommended_mode != "scratch"
    if not a.has_imagenet_weights:
        assert a.recommended_mode == "scratch"
    with torch.device("meta"):  # counting on the meta device allocates nothing
        model = timm.create_model(a.timm_name)
    assert sum(p.numel() for p in model.parameters()) == a.num_params


def _grads_ok(model, frozen_expected):
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"{n} got no finite gradient"
        else:
            assert frozen_expected and p.grad is None, f"frozen {n} got a gradient"


@pytest.mark.parametrize("name", registry_params())
def test_create_forward_backward_freeze_roundtrip(name, tmp_path):
    a = zoo.get_architecture(name)
    torch.manual_seed(0)
    model = zoo.create_model(name, num_classes=3)
    c, h, w = a.min_input_size
    x = torch.randn(2, c, max(h, 32), max(w, 32))

    model.train()
    out = model(x)
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    out.sum().backward()
    _grads_ok(model, frozen_expected=False)

    # feature extraction on the same model: only the head trains, frozen BN statistics stay put
    with pytest.warns(UserWarning, match="random"):
        zoo.apply_mode(model, "feature-extraction", pretrained=False)
    model.zero_grad(set_to_none=True)
    total, trainable = zoo.count_params(model)
    assert trainable == sum(p.numel() for p in zoo.head_parameters(model)) > 0
    assert total == sum(p.numel() for p in model.parameters())
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    model.train()
    out = model(x)
    (out[0] if isinstance(out, tuple) else out).sum().backward()
    _grads_ok(model, frozen_expected=True)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())

    # Hub layout round trip: zoo and stock timm both load it to identical outputs
    model.eval()
    folder = zoo.save_pretrained(model, tmp_path / "run", label_names=["a", "b", "c"])
    assert {"model.safetensors", "config.json", "README.md"} <= {p.name for p in folder.iterdir()}
    loaded = zoo.load_pretrained(folder)
    stock = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    with torch.no_grad():
        ref = model(x)
        assert torch.equal(loaded(x), ref)
        assert torch.allclose(stock(x), ref, atol=1e-6)
    assert loaded.label_names == ["a", "b", "c"]
    assert zoo.count_params(loaded) == (total, trainable)


@pytest.mark.parametrize("name", ARCHS)
def test_grayscale_cam_layer_and_minimum_size(name):
    # On the meta device: shapes, hooks and errors are checked without allocating or computing anything.
    a = zoo.get_architecture(name)
    _, h, w = a.min_input_size
    with torch.device("meta"):
        model = zoo.create_model(name, num_classes=2, in_chans=1).eval()
        assert zoo.resolve_data_config(model)["input_size"][0] == 1
        assert model(torch.empty(1, 1, max(h, 32), max(w, 32))).shape == (1, 2)
        with pytest.raises(zoo.ZooError, match=f"at least {h}x{w}"):
            model(torch.empty(1, 1, h - 1, w - 1))
        with pytest.raises(zoo.ZooError, match="1-channel"):
            model(torch.empty(1, 3, h, w))
    layers = zoo.cam_target_layers(model)
    assert layers and all(any(layer is m for m in model.modules()) for layer in layers)


def test_num_params_are_plausible():
    # Table II of seed 000 lists VGG16 138,357,544 and ResNet50 25,636,712 (Keras); timm's match within 0.5%.
    assert zoo.get_architecture("vgg16").num_params == 138_357_544
    assert math.isclose(zoo.get_architecture("resnet50").num_params, 25_636_712, rel_tol=0.005)
