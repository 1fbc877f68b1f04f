"""The natively implemented architectures (zoo/archs): timm interface, sizes, parameter counts."""
import functools

import pytest
import timm
import torch
import torch.nn as nn
from timm.models._manipulate import group_parameters

import zoo.archs  # noqa: F401  (registers the models with timm)
from zoo._errors import ZooError

NATIVE = ['lenet5', 'alexnet', 'zfnet', 'googlenet', 'nasnet_mobile', 'quadsnet']
# (C, H, W) minimum inputs, measured when the models were written
MIN_INPUT = {
    'lenet5': (1, 32, 32),
    'alexnet': (3, 63, 63),
    'zfnet': (3, 47, 47),
    'googlenet': (3, 31, 31),
    'nasnet_mobile': (3, 3, 3),
    'quadsnet': (3, 16, 16),
}
# a module inside the stage sequence, run again in backward when gradient checkpointing is on
CHECKPOINTED_MODULE = {
    'lenet5': 'features.c3',
    'alexnet': 'features.conv3',
    'zfnet': 'features.conv3',
    'googlenet': 'blocks.inception4a',
    'nasnet_mobile': 'cell_1',
    'quadsnet': 'stages.1',
}


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    # these inputs are tiny: a second thread only adds synchronisation, which costs 10-100x when the
    # two cores are busy with other work
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _create(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, **kwargs)


@functools.lru_cache(maxsize=None)
def _shared(name: str) -> nn.Module:
    """A 3-class model for the tests that do not change it (saves re-creating AlexNet's 62M parameters)."""
    return _create(name, num_classes=3)


def _input(name: str, batch: int = 2, in_chans=None, extra_w: int = 0) -> torch.Tensor:
    c, h, w = MIN_INPUT[name]
    return torch.randn(batch, in_chans or c, h, w + extra_w)


def _first_convs(model: nn.Module):
    first_conv = model.pretrained_cfg['first_conv']
    return (first_conv,) if isinstance(first_conv, str) else tuple(first_conv)


@pytest.mark.parametrize('name', NATIVE)
def test_registered_with_timm(name):
    assert name in timm.list_models()


@pytest.mark.parametrize('name', NATIVE)
def test_pretrained_cfg(name):
    model = _shared(name)
    cfg = model.pretrained_cfg
    for key in ('input_size', 'min_input_size', 'pool_size', 'crop_pct', 'interpolation', 'mean', 'std',
                'first_conv', 'classifier', 'paper_name'):
        assert cfg.get(key) is not None, key
    assert tuple(cfg['min_input_size']) == MIN_INPUT[name]
    assert len(cfg['mean']) == len(cfg['std']) == cfg['input_size'][0]
    modules = dict(model.named_modules())
    for path in _first_convs(model):
        assert isinstance(modules[path], nn.Conv2d), path
        assert modules[path].in_channels == cfg['input_size'][0]
    assert modules[cfg['classifier']] is model.get_classifier()
    assert isinstance(model.get_classifier(), nn.Linear)
    assert model.get_classifier().out_features == 3


@pytest.mark.parametrize('name', NATIVE)
def test_forward_at_min_input_size(name):
    model = _shared(name)
    for training, extra_w in ((True, 0), (False, 5)):  # square and non-square
        model.train(training)
        with torch.set_grad_enabled(training):
            out = model(_input(name, extra_w=extra_w))
        assert out.shape == (2, 3)
        assert torch.isfinite(out).all()
    model.eval()


@pytest.mark.parametrize('name', NATIVE)
def test_default_input_size_gives_pool_size(name):
    model = _create(name, num_classes=3, device='meta').eval()  # shapes only, no compute
    features = model.forward_features(torch.empty(1, *model.pretrained_cfg['input_size'], device='meta'))
    assert tuple(features.shape[-2:]) == tuple(model.pretrained_cfg['pool_size'])


@pytest.mark.parametrize('name', NATIVE)
def test_below_min_input_size_raises(name):
    model = _shared(name)
    c, h, w = MIN_INPUT[name]
    if h == 1:
        pytest.skip('no smaller input exists')
    with pytest.raises(ZooError, match=rf'{h}x{w}.*{h - 1}x{w}|{h - 1}x{w}.*{h}x{w}'):
        model(torch.randn(1, c, h - 1, w))


@pytest.mark.parametrize('name', NATIVE)
def test_single_channel_input(name):
    model = _create(name, num_classes=3, in_chans=1).eval()
    for path in _first_convs(model):
        assert model.get_submodule(path).in_channels == 1
    with torch.no_grad():
        out = model(_input(name, in_chans=1))
    assert out.shape == (2, 3)


@pytest.mark.parametrize('name', NATIVE)
def test_features_and_head(name):
    model = _shared(name)
    with torch.no_grad():
        features = model.forward_features(_input(name))
        assert features.ndim == 4 and features.shape[:2] == (2, model.num_features)
        pre_logits = model.forward_head(features, pre_logits=True)
        assert pre_logits.shape == (2, getattr(model, 'head_hidden_size', model.num_features))
        assert model.forward_head(features).shape == (2, 3)


@pytest.mark.parametrize('name', NATIVE)
def test_reset_classifier(name):
    model = _create(name, num_classes=3).eval()
    x = _input(name)
    model.reset_classifier(5)
    assert model.num_classes == 5 and model.get_classifier().out_features == 5
    assert model.get_submodule(model.pretrained_cfg['classifier']) is model.get_classifier()
    with torch.no_grad():
        assert model(x).shape == (2, 5)
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity)
    with torch.no_grad():
        assert model(x).shape == (2, getattr(model, 'head_hidden_size', model.num_features))


@pytest.mark.parametrize('name', NATIVE)
def test_feature_info(name):
    model = _shared(name)
    modules = dict(model.named_modules())
    for info in model.feature_info:
        assert info['module'] in modules, info
    assert model.feature_info[-1]['num_chs'] == model.num_features
    features = _create(name, features_only=True).eval()
    with torch.no_grad():
        maps = features(_input(name))
    assert [m.shape[1] for m in maps] == [info['num_chs'] for info in model.feature_info]


@pytest.mark.parametrize('name', NATIVE)
@pytest.mark.parametrize('coarse', [True, False])
def test_group_matcher_orders_stem_stages_head(name, coarse):
    model = _shared(name)
    groups = group_parameters(model, model.group_matcher(coarse=coarse))
    grouped = [n for _, names in sorted(groups.items()) for n in names]
    assert sorted(grouped) == sorted(n for n, _ in model.named_parameters())
    assert len(grouped) == len(set(grouped))
    ordered = [groups[k] for k in sorted(groups)]
    assert len(ordered) >= 3  # stem, at least one stage, head
    classifier = model.pretrained_cfg['classifier']
    assert {f'{classifier}.weight', f'{classifier}.bias'} <= set(ordered[-1])
    assert all(not n.startswith(classifier + '.') for group in ordered[:-1] for n in group)
    assert {f'{path}.weight' for path in _first_convs(model)} <= set(ordered[0])


@pytest.mark.parametrize('name', NATIVE)
def test_grad_checkpointing_recomputes_stages(name):
    model = _create(name, num_classes=3).eval()  # eval: dropout off, both passes compute the same gradients
    calls = []
    # a pre-hook: torch stops the recomputation once it has what backward needs, before the module returns
    model.get_submodule(CHECKPOINTED_MODULE[name]).register_forward_pre_hook(lambda *args: calls.append(1))
    first_conv = model.get_submodule(_first_convs(model)[0])
    x = _input(name)
    model(x).sum().backward()
    expected = first_conv.weight.grad.clone()
    assert len(calls) == 1
    model.zero_grad()
    calls.clear()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    assert len(calls) == 2  # run again in backward: the stage's activations were not kept
    torch.testing.assert_close(first_conv.weight.grad, expected)


def test_quadsnet_parameter_count_matches_paper():
    # seed 000_02ca16e809fb32d3.txt, Table II: 5,235,944 trainable parameters (2 classes, RGB)
    model = _create('quadsnet', num_classes=2, in_chans=3)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 5_201_192
    assert abs(trainable - 5_235_944) / 5_235_944 < 0.02


def test_quadsnet_concatenates_four_streams():
    model = _create('quadsnet', num_classes=2).eval()
    assert model.num_features == 4 * 384
    stage = model.stages[1]
    x = torch.randn(1, 4 * 96, 8, 8)
    with torch.no_grad():
        out = stage(x)
        # eq. 1 order [CS1; CS2; SS1; SS2], each stream on its own slice of the previous stage
        expected = torch.cat([block(xi) for block, xi in zip((stage.cs1, stage.cs2, stage.ss1, stage.ss2),
                                                              x.split(96, dim=1))], dim=1)
    torch.testing.assert_close(out, expected)
    bn = stage.cs1.bn
    assert bn.momentum == pytest.approx(0.01) and bn.eps == pytest.approx(1e-4)


def test_nasnet_mobile_parameter_count_matches_keras():
    model = _create('nasnet_mobile')
    trainable = sum(p.numel() for p in model.parameters())
    bn_stats = sum(b.numel() for n, b in model.named_buffers() if 'running_' in n)
    # Keras NASNetMobile: 5,326,716 in all, of which 36,738 are non-trainable BatchNorm statistics
    assert trainable == 5_289_978
    assert trainable + bn_stats == 5_326_716
    assert abs(trainable - 5_326_716) / 5_326_716 < 0.03


def test_googlenet_aux_logits_in_training_only():
    model = _create('googlenet', num_classes=4, aux_logits=True)
    x = _input('googlenet')
    model.train()
    out = model(x)
    assert isinstance(out, tuple) and len(out) == 3
    assert all(o.shape == (2, 4) for o in out)
    model.reset_classifier(5)
    assert all(o.shape == (2, 5) for o in model(x))
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5)
    # without aux_logits, training mode returns plain logits
    plain = _create('googlenet', num_classes=4).train()
    assert isinstance(plain(x), torch.Tensor)


def test_unsupported_options_raise():
    with pytest.raises(ZooError, match='drop_path_rate'):
        timm.create_model('quadsnet', drop_path_rate=0.1)
    timm.create_model('lenet5', drop_path_rate=0.)  # a no-op value is accepted, as timm passes such defaults
