"""train/lesson.py: transfer learning in seconds on the packaged medical images, evaluated honestly."""
import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import train.lesson as lesson
import zoo
from train import DataError
from train.data import load_source
from train.lesson import LessonCancelled, LessonRequest

# small and short, so the whole module stays a few CPU seconds per run
REQUEST = LessonRequest("chest-xray", ("efficientnet_lite0",), img_size=96, epochs=8)


@pytest.fixture(scope="module")
def chest_lesson(tmp_path_factory):
    """One lesson on the 16 packaged chest X-rays, counting the run_training calls it makes."""
    out = tmp_path_factory.mktemp("lesson")
    calls, epochs = [], []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(zoo._hub, "CACHE_DIR", tmp_path_factory.getbasetemp() / "zoo-cache")
        real = lesson.run_training

        def counting(cfg, **kwargs):
            calls.append((cfg, kwargs["hooks"]))
            return real(cfg, **kwargs)

        mp.setattr(lesson, "run_training", counting)
        records = lesson.run_lesson(REQUEST, out, on_epoch=epochs.append)
    return records, calls, epochs


def test_bundled_medical_datasets_are_the_packaged_images():
    chest, brain = load_source("chest-xray"), load_source("brain-mri")
    assert (len(chest.samples), chest.label_names) == (16, ["NORMAL", "PNEUMONIA"])
    assert np.bincount([s.label for s in chest.samples]).tolist() == [8, 8]
    assert len(brain.samples) == 17 and len(brain.label_names) == 4
    assert chest.medical is brain.medical is True
    assert "10.17632/rscbjbr9sj.2" in chest.description and "licence not verified" in brain.description


def test_every_mode_has_lesson_defaults():
    # the lesson's per-mode defaults follow zoo.MODES: a mode added to the zoo needs its epochs and learning rate
    assert set(lesson.DEFAULT_EPOCHS) == set(lesson.MODE_LR) == set(zoo.MODES)
    request = lesson.LessonRequest("chest-xray", ("efficientnet_lite0",), mode="scratch")
    assert request.transfer_mode is zoo.get_mode("scratch")
    assert request.size_for("efficientnet_lite0") == lesson.FALLBACK_IMG_SIZE  # a big backbone from scratch: small input


def test_intervals_are_wilson_and_contain_the_estimate():
    low, high = lesson.wilson_interval(11, 16)
    assert (round(low, 3), round(high, 3)) == (0.444, 0.858)   # Wilson 95 % for 11/16
    for matrix in ([[8, 0], [0, 8]], [[5, 3], [2, 6]], [[6, 0, 0], [3, 0, 0], [1, 1, 1]]):
        m = np.asarray(matrix)
        value = np.mean(np.diag(m) / m.sum(1))
        low, high = lesson.balanced_accuracy_interval(m)
        assert 0.0 <= low <= value <= high <= 1.0 and high - low > 0.05


@pytest.mark.heavy   # shares one lesson of 6 trainings (10-40 s on a busy 2-core machine)
def test_cross_validated_record_with_intervals(chest_lesson):
    (record,), _, _ = chest_lesson
    assert record.protocol == "5-fold stratified cross-validation"
    assert record.n == {"images": 16, "train": 16, "val": 0, "test": 16, "folds": 5}
    assert np.asarray(record.confusion_matrix).sum() == 16
    assert record.accuracy == np.trace(record.confusion_matrix) / 16
    assert record.accuracy_ci95[0] <= record.accuracy <= record.accuracy_ci95[1]
    assert record.balanced_accuracy_ci95[0] <= record.balanced_accuracy <= record.balanced_accuracy_ci95[1]
    assert 0 < record.params_trainable < record.params_total   # only the head trained
    assert any("calibration" in note.lower() for note in record.notes)
    api = json.loads(json.dumps(record.to_dict()))
    assert api["id"] == record.run_dir.name and api["accuracy_ci95"] == list(record.accuracy_ci95)


@pytest.mark.heavy   # shares one lesson of 6 trainings (10-40 s on a busy 2-core machine)
def test_one_training_path_folds_and_final_run_go_through_run_training(chest_lesson):
    (record,), calls, epochs = chest_lesson
    assert len(calls) == 6   # 5 folds + the model kept, all through the runner
    written = [hooks for _, hooks in calls if hooks.write_run]
    assert len(written) == 1 and written[0].held_out is not None
    # what the runner wrote: its resolved configuration, its metrics with the CV evaluation
    assert "arch: efficientnet_lite0" in (record.run_dir / "run_config.yaml").read_text()
    metrics = json.loads((record.run_dir / "metrics.json").read_text())
    assert metrics["test"]["confusion_matrix"] == record.confusion_matrix
    assert metrics["evaluation"]["folds"] == 5 and metrics["feature_cache"]["level"] == "pre_logits"
    assert len(metrics["history"]) == REQUEST.epochs
    card = (record.run_dir / "README.md").read_text()
    assert "5-fold stratified cross-validation" in card and "need more data" in card
    # live curves: every epoch of every run, final model included
    assert len(epochs) == 6 * REQUEST.epochs and epochs[-1]["phase"].startswith("final")


@pytest.mark.heavy   # shares one lesson of 6 trainings (10-40 s on a busy 2-core machine)
def test_run_folder_loads_in_the_zoo_and_stock_timm_with_equal_logits(chest_lesson):
    (record,), _, _ = chest_lesson
    ours = zoo.load_pretrained(record.run_dir).eval()
    stock = timm.create_model("local-dir:" + str(record.run_dir), pretrained=True).eval()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.allclose(ours(x), stock(x), atol=1e-6)
    assert json.loads((record.run_dir / "config.json").read_text())["label_names"] == record.label_names


@pytest.mark.heavy
@pytest.mark.parametrize("cancel_in", ["fold 2/5", "final"])
def test_cancel_leaves_no_files(tmp_path, cancel_in):
    out = tmp_path / "jobs"
    seen = []

    def should_stop() -> bool:
        return any(r["phase"].startswith(cancel_in) for r in seen)

    with pytest.raises(LessonCancelled):
        lesson.run_lesson(REQUEST, out, on_epoch=seen.append, should_stop=should_stop)
    assert not out.exists() or not any(out.rglob("*"))
    assert seen[-1]["phase"].startswith(cancel_in)


@pytest.mark.heavy
def test_learning_curve_frozen_features_vs_scratch(tmp_path):
    points = []
    returned = lesson.learning_curve(REQUEST, tmp_path, on_point=points.append)
    assert returned == points
    for mode in ("feature-extraction", "scratch"):
        mine = [p for p in points if p.mode == mode]
        assert [p.per_class for p in mine] == [1, 2, 4, 7]   # 8 per class: "all" keeps one to test on
        for p in mine:
            assert p.ci95[0] <= p.accuracy <= p.ci95[1]
            assert p.n_test == lesson.CURVE_DRAWS * (16 - 2 * p.per_class)
    assert not any(tmp_path.iterdir())   # curve points write no run folders
    figure = lesson.plot_learning_curve(points, tmp_path / "curve.png")
    assert figure.stat().st_size > 10_000


def test_requests_and_data_are_checked_before_training(tmp_path):
    with pytest.raises(Exception, match="transfer mode"):
        LessonRequest("chest-xray", ("efficientnet_lite0",), mode="freeze").check()
    with pytest.raises(Exception, match="at least one"):
        LessonRequest("chest-xray", ()).check()
    folder = tmp_path / "data"
    for name, count in (("a", 3), ("b", 1)):
        (folder / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (40, 40), (60 * i, 90, 30)).save(folder / name / f"{i}.png")
    with pytest.raises(DataError, match=r"\{'b': 1\} have fewer than 2 images"):
        lesson.run_lesson(LessonRequest(str(folder), ("efficientnet_lite0",)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_backbones_and_estimate():
    usable = dict(lesson.available_backbones())
    assert usable["efficientnet_lite0"] is None
    assert "scratch" in usable["lenet5"]
    quick = lesson.estimate_seconds(REQUEST, 16)
    slow = lesson.estimate_seconds(LessonRequest("chest-xray", ("efficientnet_lite0",), mode="fine-tune"), 16)
    assert 0 < quick < slow
