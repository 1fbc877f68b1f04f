"""The native architectures behave like timm's own families: no pooling, TorchScript, torch.fx,
forward_intermediates, features_only and complete default_cfgs (issue 14, item 3)."""
import functools
import math

import pytest
import timm
import torch
import torch.fx
import torch.nn as nn
from timm.models._features_fx import create_feature_extractor, get_graph_node_names

import zoo.archs  # noqa: F401  (registers the models with timm)
from zoo._errors import ZooError

# the six native architectures and their minimum inputs: one list, in tests/test_native_archs.py
from test_native_archs import MIN_INPUT, NATIVE  # noqa: E402

# (C, H, W): a small input whose last feature map is larger than 1x1
SPATIAL_INPUT = {
    'lenet5': (1, 48, 40),
    'alexnet': (3, 95, 95),
    'zfnet': (3, 79, 79),
    'googlenet': (3, 64, 64),
    'nasnet_mobile': (3, 64, 64),
    'quadsnet': (3, 32, 48),
}
# the models whose head cannot take an unpooled map: with global_pool='' they return the map itself
FC_HEAD = ['lenet5', 'alexnet', 'zfnet']
# every field of timm's PretrainedCfg that preprocessing, the Hub config and timm's model tests read
PRETRAINED_CFG_KEYS = (
    'architecture', 'num_classes', 'input_size', 'min_input_size', 'fixed_input_size', 'pool_size', 'crop_pct',
    'crop_mode', 'interpolation', 'mean', 'std', 'first_conv', 'classifier', 'license', 'paper_name',
)


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny inputs: a second thread only adds synchronisation
    yield
    torch.set_num_threads(threads)


def _create(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, **kwargs).eval()


@functools.lru_cache(maxsize=None)
def _shared(name: str) -> nn.Module:
    """A 3-class model in eval mode for the tests that do not change it."""
    return _create(name, num_classes=3)


def _input(name: str, sizes=MIN_INPUT) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, *sizes[name])


@pytest.mark.parametrize('name', NATIVE)
def test_no_pooling_returns_the_unpooled_features(name):
    x = _input(name, SPATIAL_INPUT)
    model = _create(name, num_classes=0, global_pool='')
    with torch.no_grad():
        features = model.forward_features(x)
        out = model(x)
    assert out.ndim == 4 and out.shape[:2] == (2, model.num_features) and min(out.shape[-2:]) > 1
    torch.testing.assert_close(out, features)
    # timm's check: at the default input size the unpooled output has the documented pool_size
    meta = _create(name, num_classes=0, global_pool='', device='meta')
    out = meta(torch.empty(1, *meta.pretrained_cfg['input_size'], device='meta'))
    assert tuple(out.shape[-2:]) == tuple(meta.pretrained_cfg['pool_size'])


@pytest.mark.parametrize('name', NATIVE)
def test_reset_classifier_to_no_pooling_and_back(name):
    model = _create(name, num_classes=3)
    x = _input(name, SPATIAL_INPUT)
    with torch.no_grad():
        logits = model(x)
        model.reset_classifier(0, '')
        assert model.num_classes == 0
        torch.testing.assert_close(model(x), model.forward_features(x))
        model.reset_classifier(3, 'avg')
        assert model(x).shape == logits.shape == (2, 3)


@pytest.mark.parametrize('name', FC_HEAD)
def test_no_pooling_with_a_classifier_is_refused(name):
    # the fully connected layers need a pooled vector: a classifier on the unpooled map cannot exist
    with pytest.raises(ZooError, match="num_classes=0, got num_classes=5"):
        timm.create_model(name, num_classes=5, global_pool='')
    model = _shared(name)
    with pytest.raises(ZooError, match="num_classes=0, got num_classes=3"):
        model.reset_classifier(3, '')
    with pytest.raises(ZooError, match="global_pool must be one of"):
        model.reset_classifier(3, 'catavgmax')


@pytest.mark.parametrize('name', NATIVE)
def test_torchscript_matches_eager(name):
    model = _shared(name)
    scripted = torch.jit.script(model)
    x = _input(name)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))
    # the clear size error survives scripting (TorchScript re-raises it as a generic exception)
    c, h, w = MIN_INPUT[name]
    if h > 1:
        with pytest.raises(Exception, match=f'at least {h}x{w}'):
            scripted(torch.randn(1, c, h - 1, w))


def _traced(model: nn.Module) -> nn.Module:
    """torch.fx graph of the model with timm's leaf modules and functions, returning the model's output."""
    train_nodes, eval_nodes = get_graph_node_names(model)
    nodes = eval_nodes if not model.training else train_nodes
    return create_feature_extractor(model, {nodes[-1]: 'out'})


@pytest.mark.parametrize('name', NATIVE)
def test_fx_trace_forward_backward_and_torchscript(name):
    model = _shared(name)
    x = _input(name)
    graph = _traced(model)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(graph(x)['out'], expected)
        torch.testing.assert_close(torch.jit.script(graph)(x)['out'], expected)
    # the minimum-size check is one call in the graph, not traced away
    c, h, w = MIN_INPUT[name]
    if h > 1:
        with pytest.raises(ZooError, match=f'at least {h}x{w}'):
            graph(torch.randn(1, c, h - 1, w))
    # backward through a graph traced in training mode reaches every parameter
    train_model = _create(name, num_classes=3).train()
    train_graph = _traced(train_model)
    train_graph(x)['out'].mean().backward()
    missing = [n for n, p in train_graph.named_parameters() if p.grad is None]
    assert not missing
    assert sum(p.numel() for p in train_graph.parameters()) == sum(p.numel() for p in train_model.parameters())


@pytest.mark.parametrize('name', [n for n in NATIVE if n != 'nasnet_mobile'])
def test_plain_torch_fx_symbolic_trace(name):
    # nasnet_mobile's 'same'-padded convolutions (timm's own layers) need timm's tracer, as nasnetalarge does
    model = _shared(name)
    graph = torch.fx.symbolic_trace(model)
    x = _input(name)
    with torch.no_grad():
        torch.testing.assert_close(graph(x), model(x))


@pytest.mark.parametrize('name', NATIVE)
def test_forward_intermediates(name):
    model = _shared(name)
    info = model.feature_info
    x = _input(name, SPATIAL_INPUT)
    height, width = x.shape[-2:]
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        assert len(intermediates) == len(info) >= 3
        for level, feature in zip(info, intermediates):
            assert feature.shape[:2] == (2, level['num_chs'])
            # timm's bound: a level of reduction r is at most ceil(size / r) + 1 pixels a side
            assert feature.shape[2] <= math.ceil(height / level['reduction']) + 1
            assert feature.shape[3] <= math.ceil(width / level['reduction']) + 1
        # the last level is the final feature map
        torch.testing.assert_close(intermediates[-1], final)

        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert isinstance(last_two, list) and len(last_two) == 2
        for got, want in zip(last_two, intermediates[-2:]):
            torch.testing.assert_close(got, want)
        picked = model.forward_intermediates(x, indices=[0, -2], intermediates_only=True)
        torch.testing.assert_close(picked[0], intermediates[0])
        torch.testing.assert_close(picked[1], intermediates[-2])

        # stop_early ends at the last requested level: the output is that level's map
        early, early_intermediates = model.forward_intermediates(x, indices=[1], stop_early=True)
        torch.testing.assert_close(early_intermediates[0], intermediates[1])
        torch.testing.assert_close(early, intermediates[1])

        nhwc = model.forward_intermediates(x, output_fmt='NHWC', intermediates_only=True)
        for got, want in zip(nhwc, intermediates):
            torch.testing.assert_close(got, want.permute(0, 2, 3, 1))
        with pytest.raises(ZooError, match="output_fmt='NCL'"):
            model.forward_intermediates(x, output_fmt='NCL')
        with pytest.raises(AssertionError, match='out of range'):  # timm's feature_take_indices
            model.forward_intermediates(x, indices=[len(info)])


@pytest.mark.parametrize('name', NATIVE)
def test_forward_intermediates_with_grad_checkpointing(name):
    model = _create(name, num_classes=3)
    x = _input(name)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
    model.set_grad_checkpointing(True)
    x.requires_grad_(True)
    checkpointed_final, checkpointed = model.forward_intermediates(x)
    torch.testing.assert_close(checkpointed_final, final)
    for got, want in zip(checkpointed, intermediates):
        torch.testing.assert_close(got, want)
    sum(t.sum() for t in checkpointed).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize('name', NATIVE)
def test_features_only(name):
    backbone = _shared(name)
    features = _create(name, features_only=True)
    x = _input(name, SPATIAL_INPUT)
    with torch.no_grad():
        maps = features(x)
        # the same taps as hooks on the feature_info modules (timm's other extractor)
        hooked = _create(name, features_only=True, feature_cls='hook')(x)
    assert features.feature_info.channels() == [level['num_chs'] for level in backbone.feature_info]
    assert features.feature_info.reduction() == [level['reduction'] for level in backbone.feature_info]
    assert [m.shape[1] for m in maps] == features.feature_info.channels()
    assert len(hooked) == len(maps)
    for got, want in zip(maps, hooked):
        torch.testing.assert_close(got, want)
    # no classifier, and out_indices prunes the layers after the last requested level
    all_params = sum(p.numel() for p in backbone.parameters())
    kept_params = sum(p.numel() for p in features.parameters())
    assert kept_params < all_params
    first_two = _create(name, features_only=True, out_indices=(0, 1))
    with torch.no_grad():
        first_maps = first_two(x)
    assert len(first_maps) == 2
    for got, want in zip(first_maps, maps[:2]):
        torch.testing.assert_close(got, want)
    assert sum(p.numel() for p in first_two.parameters()) < kept_params


@pytest.mark.parametrize('name', NATIVE)
def test_default_cfgs_complete(name):
    cfg = timm.models.get_pretrained_cfg(name)
    assert cfg is not None
    values = cfg.to_dict()
    missing = [k for k in PRETRAINED_CFG_KEYS if values.get(k) is None]
    assert not missing
    assert values['architecture'] == name
    channels = values['input_size'][0]
    assert len(values['mean']) == len(values['std']) == channels == values['min_input_size'][0]
    assert all(m <= s for m, s in zip(values['min_input_size'], values['input_size']))
    assert 0 < values['crop_pct'] <= 1
    # the model's own config is what timm's data pipeline reads
    data_cfg = timm.data.resolve_data_config({}, model=_shared(name))
    assert data_cfg['input_size'] == tuple(values['input_size'])
    assert data_cfg['mean'] == tuple(values['mean']) and data_cfg['std'] == tuple(values['std'])
