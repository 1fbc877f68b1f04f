"""The DCGAN: shapes, training on the training split only, files, resume, generation, errors."""
import json
from contextlib import contextmanager

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from _toy_images import make_folder
from train import TrainingInterrupted
from train.data import load_source, make_splits
from train.gan import (DCGANDiscriminator, DCGANGenerator, GanConfig, GeneratorError, generate_images,
                       load_generator, main, train_gan)
from train.gan import fit
from train.gan.generate import sample_images
from train.gan.model import check_image_size


def _cfg(data, out, **kw):
    values = dict(data=str(data), out=str(out), classes=["left", "centre"], image_size=16, width=8, latent_dim=16,
                  epochs=3, batch_size=8, val_frac=0.2, test_frac=0.2, seed=3, quiet=True)
    return GanConfig(**{**values, **kw})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("gan") / "shapes")


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("gan-run") / "gan"
    return train_gan(_cfg(data, out, sample_every=2))


@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_networks_map_noise_to_images_and_images_to_logits(size):
    g, d = DCGANGenerator(16, size, 3, 8), DCGANDiscriminator(size, 3, 8)
    images = g(torch.randn(2, 16))
    assert images.shape == (2, 3, size, size)
    assert images.abs().max() <= 1.0  # tanh output
    assert d(images).shape == (2,)


@pytest.mark.parametrize("size", [12, 4, 512])
def test_image_size_must_be_a_supported_power_of_two(size):
    with pytest.raises(ValueError, match="power of two"):
        check_image_size(size)


def test_training_writes_generators_grids_curves_and_card(run):
    root = run.run_dir
    for name in ("gan_config.yaml", "train_split.json", "gan_metrics.json", "losses.png", "README.md"):
        assert (root / name).is_file(), name
    assert not (root / "config.json").exists()  # the app must not take a GAN run for a classifier
    for cls in ("left", "centre"):
        config = json.loads((root / "generators" / cls / "config.json").read_text())
        assert config["class_name"] == cls and config["image_size"] == 16 and config["channels"] == 1
        assert config["epochs"] == 3
        state = load_file(root / "generators" / cls / "model.safetensors")
        assert any(k.endswith("running_mean") for k in state)
        grids = sorted(p.name for p in (root / "samples" / cls).glob("*.png"))
        assert grids == ["epoch_0002.png", "epoch_0003.png"]  # every 2 epochs and the last
        assert (root / "checkpoints" / f"{cls}.pt").is_file()
    assert set(run.classes) == {"left", "centre"}
    assert not (root / "generators" / "top").exists()


def test_generators_see_only_the_training_split(run, data):
    record = json.loads((run.run_dir / "train_split.json").read_text())
    source = load_source(str(data))
    splits = make_splits(source, 0.2, 0.2, 3)
    train = {s.key for s in splits.train}
    held_out = {s.key for s in splits.val + splits.test}
    seen = {k for keys in record["classes"].values() for k in keys}
    assert seen and seen <= train and not seen & held_out
    left = source.label_names.index("left")
    assert len(record["classes"]["left"]) == sum(1 for s in splits.train if s.label == left)


def test_resume_extends_to_the_same_weights_as_one_run(data, tmp_path):
    whole = train_gan(_cfg(data, tmp_path / "whole", classes=["centre"], epochs=4))
    part = train_gan(_cfg(data, tmp_path / "part", classes=["centre"], epochs=2))
    assert json.loads((part.run_dir / "generators/centre/config.json").read_text())["epochs"] == 2
    resumed = train_gan(resume=part.run_dir, epochs=4, quiet=True)
    a = load_file(whole.run_dir / "generators/centre/model.safetensors")
    b = load_file(resumed.run_dir / "generators/centre/model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert yaml.safe_load((resumed.run_dir / "gan_config.yaml").read_text())["epochs"] == 4


class _StopAfterChecks:
    """Stands in for the SIGINT handler: asks the loop to stop once it has checked `after` times."""

    def __init__(self, after):
        self.after, self.checks = after, 0

    @property
    def reason(self):
        self.checks += 1
        return "SIGINT" if self.checks > self.after else None

    @contextmanager
    def installed(self):
        yield self


def test_interrupted_mid_epoch_resumes_to_the_same_weights(data, tmp_path, monkeypatch):
    # 'centre' has 6 training images: batch 4 gives 2 steps per epoch, so the stop lands mid-epoch
    cfg = dict(classes=["centre"], epochs=2, batch_size=4)
    whole = train_gan(_cfg(data, tmp_path / "whole", **cfg))
    monkeypatch.setattr(fit, "StopRequest", lambda: _StopAfterChecks(after=0))
    with pytest.raises(TrainingInterrupted, match="step 1/2"):
        train_gan(_cfg(data, tmp_path / "cut", **cfg))
    assert (tmp_path / "cut" / "checkpoints" / "centre.pt").is_file()
    assert not (tmp_path / "cut" / "generators").exists()
    monkeypatch.undo()
    resumed = train_gan(resume=tmp_path / "cut", quiet=True)
    a = load_file(whole.run_dir / "generators/centre/model.safetensors")
    b = load_file(resumed.run_dir / "generators/centre/model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_an_existing_run_needs_resume_or_overwrite(run, data):
    assert main(["--data", str(data), "--out", str(run.run_dir), "--epochs", "1", "-q"]) == 2
    assert main(["--resume", str(run.run_dir), "--image-size", "32"]) == 2  # would be ignored


def test_generate_writes_imagefolder_and_manifest(run, tmp_path):
    out = tmp_path / "synthetic"
    assert main(["generate", str(run.run_dir), "--per-class", "5", "--out", str(out), "-q"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["synthetic"] is True and manifest["image_size"] == 16 and manifest["channels"] == 1
    assert {c: v["count"] for c, v in manifest["classes"].items()} == {"left": 5, "centre": 5}
    assert len(manifest["files"]) == 10
    for entry in manifest["files"]:
        assert entry["synthetic"] is True
        assert entry["generator"].endswith(f"generators/{entry['class']}/model.safetensors")
        with Image.open(out / entry["file"]) as im:
            assert im.size == (16, 16) and im.mode == "L"
            assert im.text["synthetic"] == "true"
    assert sorted(p.name for p in out.iterdir()) == ["centre", "left", "manifest.json"]
    # the same seed gives the same images; a second write needs --overwrite
    assert main(["generate", str(run.run_dir), "--per-class", "5", "--out", str(out), "-q"]) == 2
    again = generate_images(run.run_dir, 5, out, seed=0, overwrite=True, progress=False)
    assert [e["sha256"] for e in again["files"]] == [e["sha256"] for e in manifest["files"]]


def test_generate_never_deletes_a_folder_it_did_not_write(run, tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(Exception, match="not a synthetic set"):
        generate_images(run.run_dir, 2, other, overwrite=True, progress=False)
    assert (other / "notes.txt").read_text() == "keep"


def test_wrong_image_shape_from_a_generator_is_an_error(run, tmp_path):
    generator, config = load_generator(run.run_dir / "generators" / "left")
    with pytest.raises(GeneratorError, match=r"shape \(1, 16, 16\).*declares \(1, 32, 32\)"):
        sample_images(generator, {**config, "image_size": 32}, 2, seed=0)
    with pytest.raises(GeneratorError, match=r"declares \(3, 16, 16\)"):
        sample_images(generator, {**config, "channels": 3}, 2, seed=0)
    # weights that do not fit the config are refused when loading
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes((run.run_dir / "generators/left/model.safetensors").read_bytes())
    (broken / "config.json").write_text(json.dumps({**config, "image_size": 32}))
    with pytest.raises(GeneratorError, match="does not match"):
        load_generator(broken)


def test_generated_pixels_follow_the_generator(run):
    generator, config = load_generator(run.run_dir / "generators" / "centre")
    pixels = sample_images(generator, config, 3, seed=5)
    with torch.no_grad():
        z = torch.randn(3, config["latent_dim"], generator=torch.Generator().manual_seed(5))
        expected = ((generator(z).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0].numpy()
    assert pixels.dtype == np.uint8 and pixels.shape == (3, 16, 16)
    np.testing.assert_array_equal(pixels, expected)
