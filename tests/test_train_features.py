"""The feature-extraction cache, the epoch order and the metadata head in training."""
import csv
import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import zoo
import train.engine
import train.features
import train.trust
from train import run_training
from train.engine import epoch_batches
from train.features import cached_forward, plan_cache


def _frozen(name, head=None, schema=None, size=32):
    torch.manual_seed(0)
    model = zoo.create_model(name, num_classes=4, mode="feature-extraction", pretrained=False,
                             head=head, metadata_schema=schema, drop_rate=0.2)
    return model.eval(), (model.pretrained_cfg["input_size"][0], size, size)


@pytest.mark.filterwarnings("ignore:mode='feature-extraction' freezes")
@pytest.mark.parametrize("name,head,level", [
    ("efficientnet_lite0", None, "pre_logits"),
    ("lenet5", None, "pre_logits"),
    ("efficientnet_lite0", "metadata", "pooled"),
    ("efficientnet_lite0", "soft_attention", "maps"),
])
def test_cached_head_gives_the_full_models_logits(name, head, level):
    schema = zoo.MetadataSchema() if head == "metadata" else None
    model, input_size = _frozen(name, head, schema)
    plan = plan_cache(model, "feature-extraction", "auto", "none", 10, input_size)
    assert plan.level == level, plan.reason
    x = torch.randn(3, *input_size)
    metadata = schema.encode([{"age": 40, "sex": "male", "localization": "back"}, {}, None]) if schema else None
    with torch.no_grad():
        full = model(x, metadata) if schema else model(x)
        features = train.features._extract_batch(model, level, x)
        cached = cached_forward(model, level)(features, metadata)
    assert torch.allclose(full, cached, atol=1e-5)


@pytest.mark.filterwarnings("ignore:mode='feature-extraction' freezes")
def test_cache_is_refused_honestly():
    model, size = _frozen("efficientnet_lite0")
    assert "--augment standard" in plan_cache(model, "feature-extraction", "auto", "standard", 10, size).reason
    assert plan_cache(model, "feature-extraction", "off", "none", 10, size).level is None
    assert plan_cache(model, "fine-tune", "auto", "none", 10, size).level is None
    attention, size = _frozen("efficientnet_lite0", head="soft_attention")
    plan = plan_cache(attention, "feature-extraction", "auto", "none", 10_000, size, max_bytes=1024)
    assert plan.level is None and "GiB" in plan.reason


def test_epoch_order_is_seeded_and_balanced_sampling_evens_classes():
    labels = [0] * 90 + [1] * 10
    a = epoch_batches(labels, epoch=1, seed=5, batch_size=16)
    assert a == epoch_batches(labels, epoch=1, seed=5, batch_size=16)
    assert a != epoch_batches(labels, epoch=2, seed=5, batch_size=16)
    assert sorted(i for b in a for i in b) == list(range(100))
    balanced = [i for b in epoch_batches(labels, 1, 5, 16, sampler="balanced") for i in b]
    share = Counter(labels[i] for i in balanced)[1] / len(balanced)
    assert 0.35 < share < 0.65  # ~0.5 instead of 0.1
    # a last batch of one image is merged (batch norm cannot train on a single image)
    sizes = [len(b) for b in epoch_batches(list(range(33)), 1, 0, 16)]
    assert sizes == [16, 17]
    seeded = [item for b in epoch_batches(labels, 1, 5, 16, with_item_seeds=True) for item in b]
    assert len({s for _, s in seeded}) == 100


def _ham_like(root, per_class=10):
    root.mkdir(parents=True)
    rows = []
    for c, dx in enumerate(("bcc", "mel", "nv")):
        for i in range(per_class):
            rng = np.random.default_rng(10 * c + i)
            image = rng.integers(0, 80, size=(24, 24, 3), dtype=np.uint8)
            image[..., c] += 150
            Image.fromarray(image).save(root / f"ISIC_{c}{i:03d}.jpg")
            rows.append([f"HAM_{c}{i:03d}", f"ISIC_{c}{i:03d}", dx, 20 + 5 * i,
                         ("male", "female")[i % 2], ("back", "face", "unknown")[i % 3]])
    with open(root / "HAM10000_metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["lesion_id", "image_id", "dx", "age", "sex", "localization"])
        writer.writerows(rows)
    return root / "HAM10000_metadata.csv"


def test_metadata_head_trains_on_cached_features_from_a_ham_csv(tmp_path):
    csv_path = _ham_like(tmp_path / "ham")
    result = run_training(arch="efficientnet_lite0", mode="feature-extraction", head="metadata",
                          data=str(csv_path), img_size=32, epochs=2, lr=0.01, batch_size=8,
                          val_frac=0.2, test_frac=0.2, workers=0, out=str(tmp_path / "run"), quiet=True)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["feature_cache"]["level"] == "pooled"
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["label_names"] == ["bcc", "mel", "nv"]
    schema = config["model_args"]["metadata_schema"]
    assert schema["site_field"] == "localization" and "back" in schema["site"]
    model = zoo.load_pretrained(result.run_dir)
    assert model.metadata_schema.sex == ("female", "male")


def test_disk_cache_is_reused_by_a_second_run(tmp_path, monkeypatch):
    csv_path = _ham_like(tmp_path / "ham")
    common = dict(arch="efficientnet_lite0", mode="feature-extraction", data=str(csv_path), img_size=32,
                  epochs=2, lr=0.01, batch_size=8, val_frac=0.2, test_frac=0.2, workers=0,
                  cache="disk", cache_dir=str(tmp_path / "cache"), quiet=True)
    first = run_training(out=str(tmp_path / "first"), **common)
    files = list((tmp_path / "cache").glob("efficientnet_lite0-*.safetensors"))
    assert len(files) == 1

    def must_not_run(*args, **kwargs):
        raise AssertionError("the frozen backbone ran although the disk cache holds its features")

    monkeypatch.setattr(train.engine, "extract_features", must_not_run)
    second = run_training(out=str(tmp_path / "second"), **common)
    assert second.metrics == first.metrics
    # another preprocessing (input size) is another key: the cache is not reused wrongly
    monkeypatch.undo()
    run_training(out=str(tmp_path / "third"), **{**common, "img_size": 40})
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2


def test_trust_figures_come_from_the_feature_cache_and_equal_a_full_pass(tmp_path, monkeypatch):
    """The end-of-run trust fit reuses the cached features (the backbone runs only over the few validation
    images that check them) and gives exactly what running the model over every split gives; a cache that
    does not reproduce the model is not used."""
    csv_path = _ham_like(tmp_path / "ham")
    common = dict(arch="efficientnet_lite0", mode="feature-extraction", data=str(csv_path), img_size=32,
                  epochs=2, lr=0.01, batch_size=8, val_frac=0.2, test_frac=0.2, workers=0, onnx=False,
                  quiet=True)
    seen = []
    full_pass = train.trust.collect_outputs

    def counting(model, dataset, *args, **kwargs):
        seen.append(len(dataset))
        return full_pass(model, dataset, *args, **kwargs)

    monkeypatch.setattr(train.trust, "collect_outputs", counting)
    reused = run_training(out=str(tmp_path / "reused"), **common)
    assert seen == [6]  # the 6 validation images of the check, nothing else

    seen.clear()
    cached_outputs = train.engine.Trainer.cached_outputs
    monkeypatch.setattr(train.engine.Trainer, "cached_outputs",
                        lambda self, split: tuple(t + 0.01 for t in cached_outputs(self, split)))
    full = run_training(out=str(tmp_path / "full"), **common)
    assert sorted(seen) == [6, 6, 6, 18]  # the check failed: every split went through the model

    figures = [json.loads((r.run_dir / "metrics.json").read_text()) for r in (reused, full)]
    for key in ("calibration", "conformal", "ood"):
        assert _numbers(figures[0][key]) == pytest.approx(_numbers(figures[1][key]), rel=1e-6), key
    banks = [load_file(str(r.run_dir / "ood.safetensors"))["bank"] for r in (reused, full)]
    assert torch.allclose(banks[0], banks[1], atol=1e-6)


def _numbers(record, prefix=""):
    """{"a.b": number} of a nested metrics record (pytest.approx compares flat mappings only)."""
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(_numbers(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[prefix + key] = value
    return flat
