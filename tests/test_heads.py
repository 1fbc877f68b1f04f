"""Soft-Attention (seed 002, 2.2.4) and metadata fusion (seed 002, 2.2.2) on any backbone."""
import pytest
import torch

import zoo
from zoo.archs.metadata import MetadataSchema
from zoo.archs.soft_attention import SoftAttention


def test_soft_attention_maps_are_spatial_softmaxes_scaled_by_gamma():
    layer = SoftAttention(in_chs=8, num_heads=4)
    t = torch.randn(2, 8, 5, 6)
    alpha = layer.attention_maps(t)
    assert alpha.shape == (2, 1, 5, 6)
    assert torch.allclose(alpha.sum(dim=(2, 3)), torch.full((2, 1), 4.0))  # K softmaxes, each sums to 1
    out, _ = layer(t)
    assert torch.count_nonzero(out) == 0  # gamma starts at 0
    with torch.no_grad():
        layer.gamma.fill_(2.0)
    out, alpha = layer(t)
    assert torch.allclose(out, 2.0 * alpha * t)


@pytest.mark.parametrize("backbone", ["densenet121", "mobilenetv3_small_100", "quadsnet", "lenet5"])
@pytest.mark.parametrize("mode", ["scratch", "feature-extraction", "partial-fine-tune"])
def test_soft_attention_variant_of_any_backbone(backbone, mode, recwarn):
    model = zoo.create_model(backbone, num_classes=3, head="soft_attention", mode=mode)
    c = model.pretrained_cfg["input_size"][0]
    out = model.train()(torch.randn(2, c, 32, 32))
    out.sum().backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, n
    if mode == "feature-extraction":
        head = sum(p.numel() for p in zoo.head_parameters(model))
        assert zoo.count_params(model)[1] == head
        assert all(p.requires_grad for p in model.attention.parameters())
    assert zoo.cam_target_layers(model) == [model.attention]


def test_metadata_schema_encodes_unknowns_explicitly():
    schema = MetadataSchema(sex=("female", "male"), site=("back", "face"), age_mean=50, age_std=10)
    x = schema.encode([{"age": 60, "sex": "male", "localization": "face"},
                       {"age": None, "sex": "", "localization": "moon"}, {}])
    assert x.shape == (3, schema.num_features) == (3, 2 + 3 + 3)
    assert x[0].tolist() == [1.0, 0.0, 0, 1, 0, 0, 1, 0]
    assert x[1].tolist() == [0.0, 1.0, 0, 0, 1, 0, 0, 1] == x[2].tolist()
    with pytest.raises(zoo.ZooError, match="age must be a number"):
        schema.encode([{"age": "old"}])
    assert MetadataSchema.from_dict(schema.to_dict()) == schema


def test_metadata_model_takes_metadata_and_saves_its_schema(tmp_path):
    schema = MetadataSchema(site=("back", "face", "scalp")).fit([{"age": 30}, {"age": 70}])
    model = zoo.create_model("resnet18", num_classes=2, head="soft_attention+metadata", metadata_schema=schema).eval()
    x = torch.randn(2, 3, 32, 32)
    meta = schema.encode([{"age": 30, "sex": "female", "localization": "back"}, {}])
    with torch.no_grad():
        y, y_none = model(x, meta), model(x)
    assert y.shape == (2, 2) and not torch.equal(y, y_none)  # the metadata changes the prediction
    with pytest.raises(zoo.ZooError, match="metadata tensor has shape"):
        model(x, meta[:, :3])
    loaded = zoo.load_pretrained(zoo.save_pretrained(model, tmp_path / "m"))
    assert loaded.metadata_schema == schema
    with torch.no_grad():
        assert torch.equal(loaded(x, meta), y)
