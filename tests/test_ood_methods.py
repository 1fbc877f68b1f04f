"""The OOD seam (zoo/ood/): each method is chosen by the name its file declares, read back by one reader, and
refused per model when its file is damaged or of another version; an unknown method gives that model no OOD
check, with the reason, never a crash and never a pass. The second method, Mahalanobis distance, is fitted,
saved, loaded and thresholded like the first; training selects it with --ood-method."""
import json
from pathlib import Path

import numpy as np
import pytest
import skimage
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis
from sklearn.covariance import LedoitWolf
from sklearn.datasets import load_digits

import zoo
from zoo import inference
from zoo.catalog import discover_models
from zoo.fileio import read_safetensors_metadata
from zoo.images import load_image
from zoo.ood import (DEFAULT_OOD_METHOD, KnnCosine, Mahalanobis, ood_method, ood_method_names, read_ood_statistics,
                     save_ood_statistics, threshold_at_pass_rate)
from zoo.run_layout import CONFIG_NAME, OOD_NAME
from zoo.trust import features_and_logits

RETINA = Path(skimage.__file__).parent / "data" / "retina.jpg"


def _gaussian_classes(seed: int, n: int = 400, dim: int = 12) -> tuple[torch.Tensor, np.ndarray]:
    """Three classes of correlated Gaussian features (N, D) around different means, with their labels."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    labels = rng.integers(0, 3, n)
    means = rng.standard_normal((3, dim)) * 3
    return torch.from_numpy(rng.standard_normal((n, dim)) @ mixing + means[labels]), labels


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    """An (untrained) LeNet-5 run folder and the features and labels of 300 scikit-learn digits through it."""
    folder = tmp_path_factory.mktemp("ood-zoo") / "lenet5-digits"
    torch.manual_seed(0)
    model = zoo.create_model("lenet5", num_classes=10, mode="scratch").eval()
    zoo.save_pretrained(model, folder, label_names=[str(i) for i in range(10)], dataset="digits")
    digits = load_digits()
    transform = inference.build_transform(zoo.resolve_data_config(model))
    images = (digits.images[:300] * (255 / 16)).astype(np.uint8)
    x = torch.stack([transform(Image.fromarray(d, "L")) for d in images])
    with torch.no_grad():
        features, _ = features_and_logits(model, x)  # (300, 120)
    return folder, features, digits.target[:300]


def _with_statistics(source: Path, target: Path, statistics, declared: str | None = None) -> Path:
    """A copy of the run folder `source` with these OOD statistics (and config.json's zoo.ood declaring them)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", CONFIG_NAME):
        (target / name).write_bytes((source / name).read_bytes())
    config = json.loads((target / CONFIG_NAME).read_text())
    config["zoo"]["ood"] = {"method": declared or statistics.name, "file": OOD_NAME}
    (target / CONFIG_NAME).write_text(json.dumps(config))
    save_ood_statistics(target, statistics)
    return target


# --- the seam ---------------------------------------------------------------------------------------------------

def test_methods_are_chosen_by_name_and_an_unknown_name_is_refused_listing_the_known():
    assert ood_method_names()[0] == DEFAULT_OOD_METHOD == "knn-cosine" and "mahalanobis" in ood_method_names()
    assert ood_method("knn-cosine") is KnnCosine and ood_method("mahalanobis") is Mahalanobis
    with pytest.raises(zoo.ZooError, match=r"'energy' is not known.*'knn-cosine', 'mahalanobis'"):
        ood_method("energy")


def test_the_name_written_in_the_file_is_the_one_read_back(digits_folder, tmp_path):
    folder, features, labels = digits_folder
    for statistics in (KnnCosine.fit(features).with_threshold(0.3), Mahalanobis.fit(features, labels).with_threshold(2.0)):
        run = _with_statistics(folder, tmp_path / statistics.name, statistics)
        assert read_safetensors_metadata(run / OOD_NAME)["method"] == statistics.name
        loaded = zoo.load_pretrained(run).trust.ood
        assert type(loaded) is type(statistics) and loaded.threshold == pytest.approx(statistics.threshold)
        torch.testing.assert_close(loaded.scores(features[:20]), statistics.scores(features[:20]))


def test_an_unknown_method_gives_that_model_no_ood_check_and_the_other_model_its_own(digits_folder, tmp_path):
    folder, features, _ = digits_folder
    _with_statistics(folder, tmp_path / "known", KnnCosine.fit(features).with_threshold(0.3))
    unknown = _with_statistics(folder, tmp_path / "unknown", KnnCosine.fit(features).with_threshold(0.3),
                               declared="energy")
    tensors = load_file(str(unknown / OOD_NAME))
    save_file(tensors, str(unknown / OOD_NAME), metadata={"format": "pt", "method": "energy", "version": "1"})
    trust = zoo.load_pretrained(unknown).trust  # loads: the model works, only its OOD check is missing
    assert trust.ood is None
    assert "no OOD check: method 'energy'" in trust.ood_reason and "not known to this version" in trust.ood_reason
    entries = {e.id: e for e in discover_models(tmp_path)}
    cache, image = inference.ModelCache(), load_image(RETINA).image
    records = {name: inference.run_model(entries[name], image, cache, cam=False) for name in ("known", "unknown")}
    assert records["unknown"].error is None and records["unknown"].top_k and records["unknown"].ood is None
    assert "not known to this version" in records["unknown"].ood_reason  # never a pass
    assert records["known"].ood is not None and records["known"].ood["flagged"]  # a photo is not a digit


def test_a_damaged_or_other_version_file_is_refused_for_that_model_naming_it(digits_folder, tmp_path):
    folder, features, labels = digits_folder
    good = Mahalanobis.fit(features, labels).with_threshold(2.0)
    tensors = {**good.tensors(), "threshold": torch.tensor([2.0])}
    cases = {
        "newer-version": (tensors, {"method": "mahalanobis", "version": "2"}, r"format version '2'"),
        "nan": ({**tensors, "whitening": tensors["whitening"].clone().fill_(float("nan"))},
                {"method": "mahalanobis", "version": "1"}, "non-finite"),
        "shape": ({**tensors, "centres": tensors["centres"][:, :7].contiguous()}, {"method": "mahalanobis", "version": "1"},
                  r"centres \(10, 7\).*expected \(120, 120\) and \(K, 120\)"),
        "missing": ({"whitening": tensors["whitening"], "threshold": tensors["threshold"]},
                    {"method": "mahalanobis", "version": "1"}, r"lacks tensor\(s\) \['centres'\]"),
        "negative-threshold": ({**tensors, "threshold": torch.tensor([-1.0])},
                               {"method": "mahalanobis", "version": "1"}, "threshold must be one number in"),
    }
    for name, (broken, metadata, message) in cases.items():
        run = _with_statistics(folder, tmp_path / name, good)
        save_file(broken, str(run / OOD_NAME), metadata={"format": "pt", **metadata})
        with pytest.raises(zoo.ZooError, match=message) as error:
            zoo.load_pretrained(run)
        assert str(run / OOD_NAME) in str(error.value)
    # config.json declaring another method than the file holds: the file belongs to another run
    run = _with_statistics(folder, tmp_path / "other-run", good, declared="knn-cosine")
    with pytest.raises(zoo.ZooError, match="holds 'mahalanobis' statistics, but config.json's zoo.ood.method says"):
        zoo.load_pretrained(run)


def test_a_folder_without_statistics_says_so(tmp_path):
    statistics, reason = read_ood_statistics(tmp_path, width=120)
    assert statistics is None and f"has no {OOD_NAME}" in reason


# --- Mahalanobis -----------------------------------------------------------------------------------------------

def test_mahalanobis_score_is_the_squared_distance_to_the_nearest_class_mean_per_dimension():
    features, labels = _gaussian_classes(seed=1)
    statistics = Mahalanobis.fit(features, labels)
    x = features.numpy()
    means = [x[labels == c].mean(axis=0) for c in range(3)]
    centred = x - np.stack(means)[labels]
    inverse = np.linalg.inv(LedoitWolf(assume_centered=True).fit(centred).covariance_)
    queries = _gaussian_classes(seed=2, n=25)[0].numpy() + 0.5
    expected = [min(scipy_mahalanobis(q, m, inverse) ** 2 for m in means) / x.shape[1] for q in queries]
    np.testing.assert_allclose(statistics.scores(torch.from_numpy(queries)).numpy(), expected, rtol=1e-4)
    assert 0 < statistics.shrinkage < 1


def test_mahalanobis_threshold_passes_the_pass_rate_of_held_out_images_and_flags_shifted_ones():
    features, labels = _gaussian_classes(seed=3, n=600)
    statistics = Mahalanobis.fit(features[:400], labels[:400])
    held_out = statistics.scores(features[400:]).numpy()
    statistics = statistics.with_threshold(threshold_at_pass_rate(held_out))
    assert (held_out <= statistics.threshold).mean() >= 0.95
    assert (held_out <= statistics.threshold).mean() < 1.0  # the 95% quantile, not the maximum
    shifted = features[400:] + 6 * torch.ones(features.shape[1])
    assert all(check["flagged"] for check in statistics.check(shifted))


def test_mahalanobis_round_trip_through_the_file_keeps_every_score(digits_folder, tmp_path):
    folder, features, labels = digits_folder
    statistics = Mahalanobis.fit(features, labels).with_threshold(1.5)
    run = _with_statistics(folder, tmp_path / "round-trip", statistics)
    loaded, reason = read_ood_statistics(run, width=features.shape[1], declared="mahalanobis")
    assert reason is None and loaded.threshold == pytest.approx(1.5)
    torch.testing.assert_close(loaded.scores(features), statistics.scores(features), rtol=0, atol=1e-9)
    assert set(load_file(str(run / OOD_NAME))) == {"whitening", "centres", "threshold"}
    with pytest.raises(zoo.ZooError, match=r"expected \(84, 84\)"):
        read_ood_statistics(run, width=84)  # statistics of another model's features


def test_training_with_ood_method_mahalanobis_writes_loads_and_describes_it(tmp_path):
    from train import run_training
    from train.config import parse_args

    assert parse_args(["--arch", "lenet5", "--data", "digits"])[0].ood_method == "knn-cosine"
    assert parse_args(["--arch", "lenet5", "--data", "digits", "--ood-method", "mahalanobis"])[0].ood_method == "mahalanobis"
    with pytest.raises(SystemExit):
        parse_args(["--arch", "lenet5", "--data", "digits", "--ood-method", "energy"])
    out = tmp_path / "lenet5-mahalanobis"
    run_training(arch="lenet5", mode="scratch", data="digits", epochs=3, out=str(out), quiet=True, onnx=False,
                 ood_method="mahalanobis")
    config = json.loads((out / CONFIG_NAME).read_text())["zoo"]
    metrics = json.loads((out / "metrics.json").read_text())["ood"]
    assert config["ood"]["method"] == metrics["method"] == read_safetensors_metadata(out / OOD_NAME)["method"] == "mahalanobis"
    assert metrics["classes"] == 10 and metrics["validation_pass_rate"] >= 0.95
    card = (out / "README.md").read_text()
    assert "Mahalanobis distance" in card and "nearest of the 10 class means" in card
    model = zoo.load_pretrained(out)
    assert isinstance(model.trust.ood, Mahalanobis)
    assert model.trust.ood.threshold == pytest.approx(metrics["threshold"])
    record = inference.run_model(next(e for e in discover_models(tmp_path)), load_image(RETINA).image,
                                 inference.ModelCache(), cam=False)
    # the app applies the Mahalanobis statistics (whether they flag a photograph is bench_ood.py's measurement)
    assert record.ood is not None and record.ood["threshold"] == model.trust.ood.threshold, record.ood
    assert record.ood["score"] > 0 and record.ood["flagged"] == (record.ood["score"] > record.ood["threshold"])
