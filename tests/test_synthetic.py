"""Synthetic images join the training split only, up to a target balance; quality report; checks."""
import json
import shutil

import pytest
from PIL import Image

from _toy_images import make_folder
from train import DataError, run_training
from train.data import load_source, make_splits
from train.gan import GanConfig, generate_images, train_gan
from train.synthetic import (SYNTHETIC_KEY_PREFIX, add_synthetic, plan_top_up, quality_report,
                             read_synthetic_set)

SPLIT = dict(val_frac=0.2, test_frac=0.2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("syn") / "shapes", counts=(20, 20, 8))


@pytest.fixture(scope="module")
def synthetic(data, tmp_path_factory):
    """A GAN for the minority class 'centre' on the split of seed 42, and 30 of its images."""
    root = tmp_path_factory.mktemp("syn-gan")
    train_gan(GanConfig(data=str(data), classes=["centre"], image_size=16, width=8, latent_dim=16, epochs=2,
                        batch_size=8, seed=42, out=str(root / "gan"), quiet=True, **SPLIT))
    generate_images(root / "gan", 30, root / "synthetic", progress=False)
    return root / "synthetic"


@pytest.fixture(scope="module")
def run(data, synthetic, tmp_path_factory):
    return run_training(arch="lenet5", data=str(data), epochs=1, seed=42, synthetic=str(synthetic),
                        target_balance=1.0, out=str(tmp_path_factory.mktemp("syn-run") / "run"), quiet=True,
                        **SPLIT)


def test_top_up_reaches_the_target_balance_as_far_as_images_exist():
    assert plan_top_up([100, 40, 10], [0, 500, 30], 1.0) == [0, 60, 30]
    assert plan_top_up([100, 40, 10], [0, 500, 500], 0.5) == [0, 10, 40]
    assert plan_top_up([100, 120, 10], [50, 50, 50], 1.0) == [20, 0, 50]
    with pytest.raises(ValueError):
        plan_top_up([1, 2], [1, 1], 0.0)


def test_synthetic_images_join_the_training_split_only(run, data):
    split = json.loads((run.run_dir / "split.json").read_text())
    synthetic_train = [k for k, label in split["train"] if k.startswith(SYNTHETIC_KEY_PREFIX)]
    assert synthetic_train and all(label == "centre" for k, label in split["train"] if k in synthetic_train)
    for name in ("val", "test"):
        assert not [k for k, _ in split[name] if k.startswith(SYNTHETIC_KEY_PREFIX)]
    # validation and test are exactly the real split a run without --synthetic gets
    real = make_splits(load_source(str(data)), seed=42, **SPLIT)
    assert [k for k, _ in split["test"]] == [s.key for s in real.test]
    assert [k for k, _ in split["val"]] == [s.key for s in real.val]
    # topped up to the largest class's real count (12 'left' and 'top' training images, 4 real 'centre')
    counts = split["counts"]["train"]
    real_counts = {n: sum(1 for s in real.train if s.label == c) for c, n in enumerate(split["label_names"])}
    assert real_counts == {"centre": 4, "left": 12, "top": 12}
    assert counts == {"centre": 12, "left": 12, "top": 12}
    assert len(synthetic_train) == 8


def test_model_card_and_config_say_how_many_synthetic_images_were_used(run):
    config = json.loads((run.run_dir / "config.json").read_text())
    counts = config["zoo"]["training"]["synthetic_images"]
    split = json.loads((run.run_dir / "split.json").read_text())
    n = sum(1 for k, _ in split["train"] if k.startswith(SYNTHETIC_KEY_PREFIX))
    assert counts == {"centre": n, "left": 0, "top": 0}
    card = (run.run_dir / "README.md").read_text()
    assert f"{n} in all (centre: {n})" in card
    assert f"| centre | 4 | {n} | 2 | 2 |" in card and "train (synthetic)" in card


def test_lower_target_balance_adds_fewer(data, synthetic):
    source = load_source(str(data))
    splits = make_splits(source, seed=42, **SPLIT)
    full = add_synthetic(source, splits, synthetic, 1.0)
    half = add_synthetic(source, splits, synthetic, 0.5)
    extra = lambda s: sum(1 for x in s.train if x.key.startswith(SYNTHETIC_KEY_PREFIX))  # noqa: E731
    assert extra(half) < extra(full)
    assert half.val == splits.val and half.test == splits.test


def test_generators_that_saw_held_out_images_are_refused(data, synthetic):
    source = load_source(str(data))
    other = make_splits(source, seed=7, **SPLIT)  # a split whose val/test hold the GAN's training images
    with pytest.raises(DataError, match="validation or test split"):
        add_synthetic(source, other, synthetic, 1.0)


def test_wrong_size_or_edited_files_are_errors_not_resized(synthetic, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(synthetic, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    first = copy / manifest["files"][0]["file"]
    Image.new("L", (20, 20)).save(first)
    with pytest.raises(DataError, match="changed after it was generated"):
        read_synthetic_set(copy)
    manifest["files"][0]["sha256"] = __import__("hashlib").sha256(first.read_bytes()).hexdigest()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="20x20.*never resized"):
        read_synthetic_set(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(DataError, match="no manifest.json"):
        read_synthetic_set(copy)


def test_quality_report_scores_agreement_and_nearest_real_distance(run, synthetic, tmp_path):
    report = quality_report(synthetic, run.run_dir, out=tmp_path / "q", progress=False)
    centre = report["classes"]["centre"]
    assert centre["count"] == 30
    agree = sum(1 for im in report["images"] if im["predicted"] == "centre") / 30
    assert centre["agreement"] == pytest.approx(agree)
    assert centre["num_real_images"] == 4  # the real 'centre' training images the generator saw
    assert centre["synthetic_nn_rmse_min"] <= centre["synthetic_nn_rmse_median"]
    assert all(im["nearest_real"].startswith("centre/") for im in report["images"])
    assert (tmp_path / "q" / "quality.json").is_file()
    assert "classifier agrees" in (tmp_path / "q" / "quality.md").read_text()


def test_an_exact_copy_of_a_training_image_has_distance_zero(synthetic, run, tmp_path, data):
    copy = tmp_path / "copy"
    shutil.copytree(synthetic, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    trained_on = manifest["real_training_images"]["classes"]["centre"][0]
    target = copy / manifest["files"][0]["file"]
    Image.open(data / trained_on).save(target)  # 16 px grayscale like the generator's output
    manifest["files"][0]["sha256"] = __import__("hashlib").sha256(target.read_bytes()).hexdigest()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    report = quality_report(copy, run.run_dir, progress=False)
    first = report["images"][0]
    assert first["nearest_real"] == trained_on and first["nearest_real_rmse"] == pytest.approx(0.0, abs=1e-9)
    assert report["classes"]["centre"]["near_copies"] >= 1
