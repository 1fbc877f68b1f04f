"""Batch classification (zoo.batch, python -m zoo classify FOLDER_OR_ZIP): a folder of class folders made here from
scikit-learn's digits, plus a corrupt file, a DICOM and a note, through the tiny zoo's models -> the rows, the CSV,
the skipped files and the summary with its intervals; zips through the upload checks."""
import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo.batch import BatchError, BatchLimits, classify_batch
from zoo.batch_report import CSV_COLUMNS, EMPTY_SET
from zoo.inference import ModelCache, run_model
from zoo.images import load_image
from zoo.intervals import balanced_accuracy_interval, wilson_interval

from _batch_inputs import CLASSES, PER_CLASS, class_folder_entries, digit_png, digits_of, write_folder, write_zip

MODELS = ["lenet5-scratch-digits", "quadsnet-scratch-digits"]


@pytest.fixture(scope="module")
def cache():
    return ModelCache(max_models=4)


def test_a_folder_gives_a_row_per_file_and_model_the_skipped_files_and_a_summary(tmp_path, entries, cache):
    folder = write_folder(tmp_path / "scans", class_folder_entries())
    result = classify_batch(folder, [entries[m] for m in MODELS], cache, progress_bar=False)

    images = [f"{c}/{i}.png" for c in CLASSES for i in digits_of(c, PER_CLASS)] + ["scan.dcm"]
    assert sorted(result.files) == sorted(images)
    assert [(row.file, row.result.model) for row in result.rows] == [(f, m) for f in result.files for m in MODELS]
    skipped = dict(result.skipped)
    assert set(skipped) == {"1/corrupt.png", "notes.txt"}
    assert "truncated or corrupt" in skipped["1/corrupt.png"] and "not an image file" in skipped["notes.txt"]
    for row in result.rows:
        assert row.result.error is None and row.result.top_k and row.result.latency_ms > 0
        assert row.true_label == (None if row.file == "scan.dcm" else row.file.split("/")[0])
    # the summary: the 9 labelled images per model, figures that follow from the rows themselves
    for model in MODELS:
        summary = result.summaries[model]
        labelled = [r for r in result.rows if r.result.model == model and r.true_label is not None]
        correct = sum(r.result.top_label == r.true_label for r in labelled)
        assert summary.reason is None and summary.n == len(labelled) == len(CLASSES) * PER_CLASS
        assert summary.correct == correct and summary.accuracy == pytest.approx(correct / summary.n)
        assert summary.accuracy_ci95 == wilson_interval(correct, summary.n)
        matrix = np.array(summary.confusion_matrix)
        assert summary.classes == [str(i) for i in range(10)] and matrix.sum() == summary.n
        assert matrix[[int(c) for c in CLASSES]].sum(axis=1).tolist() == [PER_CLASS] * len(CLASSES)
        recalls = [matrix[int(c), int(c)] / PER_CLASS for c in CLASSES]
        assert summary.balanced_accuracy == pytest.approx(np.mean(recalls))
        assert summary.balanced_accuracy_ci95 == balanced_accuracy_interval(matrix)
        low, high = summary.balanced_accuracy_ci95
        assert 0 <= low <= summary.balanced_accuracy <= high <= 1 and high - low > 0.2  # 9 images: a wide interval
    text = "\n".join(result.summary_lines())
    assert f"{len(images)} image(s) from the folder scans x 2 model(s)" in text and "2 file(s) skipped" in text
    assert "95% CI" in text and f"/{len(CLASSES) * PER_CLASS}," in text


def test_the_csv_has_the_rows_and_is_written_atomically(tmp_path, entries, cache):
    folder = write_folder(tmp_path / "scans", class_folder_entries())
    result = classify_batch(folder, [entries[m] for m in MODELS], cache, progress_bar=False)
    out = tmp_path / "out.csv"
    out.write_text("an older table\n")
    result.write_csv(out)
    with open(out, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == CSV_COLUMNS and len(rows) == len(result.rows)
    for row, batch_row in zip(rows, result.rows):
        assert row["file"] == batch_row.file and row["model"] == batch_row.result.model
        assert row["top1"] == batch_row.result.top_label
        assert float(row["probability"]) == pytest.approx(batch_row.result.top_k[0][1], abs=1e-6)
        assert row["backend"] == "onnx" and row["error"] == ""
    assert [p.name for p in tmp_path.iterdir() if p.name != "scans"] == ["out.csv"]  # no temporary file left


def test_batch_answers_equal_one_image_at_a_time(tmp_path, entries, cache):
    """A chunk through one forward pass gives each image the probabilities the comparison gives it alone."""
    folder = write_folder(tmp_path / "scans", {k: v for k, v in class_folder_entries().items() if k != "notes.txt"})
    result = classify_batch(folder, [entries[m] for m in MODELS], cache, chunk=4, progress_bar=False)
    for row in result.rows:
        alone = run_model(entries[row.result.model], load_image(folder / row.file).image, cache, cam=False,
                          top_k=10)
        assert alone.top_label == row.result.top_label
        assert dict(alone.top_k) == pytest.approx(dict(row.result.top_k), abs=1e-5)


def test_a_broken_model_fails_its_rows_and_the_others_answer(tmp_path, entries, cache):
    folder = write_folder(tmp_path / "scans", {k: v for k, v in class_folder_entries().items() if k.startswith("0/")})
    result = classify_batch(folder, [entries["broken-weights"], entries[MODELS[0]]], cache, progress_bar=False)
    broken = [r for r in result.rows if r.result.model == "broken-weights"]
    assert len(broken) == PER_CLASS and all("could not be loaded" in r.result.error for r in broken)
    assert all(r.result.error is None for r in result.rows if r.result.model == MODELS[0])
    assert "answered none of the images" in result.summaries["broken-weights"].reason
    assert result.summaries[MODELS[0]].n == PER_CLASS


def test_folders_that_are_not_the_models_classes_give_no_summary_and_say_why(tmp_path, entries, cache):
    folder = write_folder(tmp_path / "scans", {"cats/1.png": digit_png(1), "dogs/2.png": digit_png(2)})
    result = classify_batch(folder, [entries[MODELS[0]]], cache, progress_bar=False)
    assert len(result.rows) == 2
    assert "'cats', 'dogs' are not among its classes" in result.summaries[MODELS[0]].reason


def test_a_zip_of_class_folders_is_read_like_a_folder(tmp_path, entries, cache):
    upload = write_zip(tmp_path / "digits.zip", {f"digits/{k}": v for k, v in class_folder_entries().items()})
    result = classify_batch(upload, [entries[MODELS[0]]], cache, progress_bar=False)
    assert "digits/1/corrupt.png" in dict(result.skipped)
    assert result.summaries[MODELS[0]].n == len(CLASSES) * PER_CLASS
    assert result.source == "the zip digits.zip"


@pytest.mark.parametrize("name", ["../evil.png", "/tmp/evil.png", "0/../../evil.png"])
def test_a_zip_with_a_path_out_of_it_is_refused(tmp_path, entries, cache, name):
    upload = write_zip(tmp_path / "up.zip", {"0/1.png": digit_png(0), name: digit_png(1)})
    with pytest.raises(BatchError, match=r"up\.zip: the entry .* points outside the archive's folder"):
        classify_batch(upload, [entries[MODELS[0]]], cache, progress_bar=False)
    assert not (tmp_path.parent / "evil.png").exists() and not Path("/tmp/evil.png").exists()


def test_too_many_images_are_refused_and_nothing_at_all_is_said_plainly(tmp_path, entries, cache):
    folder = write_folder(tmp_path / "scans", {k: v for k, v in class_folder_entries().items() if k.endswith(".png")})
    with pytest.raises(BatchError, match=r"more than 4 images were given; classify at most 4"):
        classify_batch(folder, [entries[MODELS[0]]], cache, limits=BatchLimits(max_files=4), progress_bar=False)
    empty = write_folder(tmp_path / "notes", {"a.txt": b"x"})
    with pytest.raises(BatchError, match=r"no image to classify in the folder notes \(a\.txt: not an image file"):
        classify_batch(empty, [entries[MODELS[0]]], cache, progress_bar=False)


def test_an_image_over_the_byte_limit_is_skipped_with_the_reason(tmp_path, entries, cache):
    dicom = class_folder_entries()["scan.dcm"]
    folder = write_folder(tmp_path / "scans", {"0/small.png": digit_png(0), "scan.dcm": dicom})
    result = classify_batch(folder, [entries[MODELS[0]]], cache, limits=BatchLimits(max_image_bytes=5000),
                            progress_bar=False)
    assert result.files == ["0/small.png"]
    assert "over the per-image limit of 5,000 bytes" in dict(result.skipped)["scan.dcm"]


def test_the_cli_prints_the_summary_and_skipped_files_and_writes_the_csv(tmp_path, weights, capsys):
    from zoo.__main__ import main

    folder = write_folder(tmp_path / "scans", class_folder_entries())
    out = tmp_path / "out.csv"
    code = main(["classify", str(folder), "--model", str(weights / MODELS[0]), "--model", MODELS[1],
                 "--weights", str(weights), "--csv", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"{MODELS[0]}: accuracy" in printed and f"{MODELS[1]}: accuracy" in printed and "95% CI" in printed
    assert "skipped 2 file(s):" in printed and "1/corrupt.png: " in printed and "notes.txt: not an image" in printed
    with open(out, newline="") as f:
        assert len(list(csv.DictReader(f))) == 2 * (len(CLASSES) * PER_CLASS + 1)
    # one image keeps the single-image behaviour; a folder without a run folder says what to give
    one = folder / "0" / f"{digits_of('0', 1)[0]}.png"
    assert main(["classify", str(one), "--model", str(weights / MODELS[0])]) == 0
    assert capsys.readouterr().out.startswith(f"{weights / MODELS[0]}: ")
    assert main(["classify", str(folder)]) == 2
    assert "give one or more --model weights/RUN" in capsys.readouterr().err


@pytest.mark.heavy
def test_a_trained_run_fills_the_trust_columns_and_is_accurate_on_its_test_digits(tmp_path, digits_run):
    """The real digits run: calibrated probability, prediction set and OOD score in every row, and an accuracy on
    its own test-split digits close to its recorded test accuracy."""
    from ui.examples import digits
    from zoo.catalog import entry_for_folder

    images, targets = digits()
    split = json.loads((digits_run.run_dir / "split.json").read_text())["test"][:60]
    entries = {}
    for key, _ in split:
        pixels = np.rint(images[int(key)] * (255.0 / 16.0)).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
        entries[f"{targets[int(key)]}/{key}.png"] = buffer.getvalue()
    folder = write_folder(tmp_path / "test-digits", entries)
    result = classify_batch(folder, [entry_for_folder(digits_run.run_dir)], ModelCache(), progress_bar=False)
    records = result.records()
    assert len(records) == len(split)
    for record in records:
        assert 0 < record["calibrated_probability"] <= 1 and record["prediction_set_coverage"] == 0.9
        members = [] if record["prediction_set"] == EMPTY_SET else record["prediction_set"].split("|")
        assert set(members) <= {str(d) for d in range(10)}
        assert record["ood_score"] is not None and isinstance(record["ood_flagged"], bool)
    cache = ModelCache()
    for row in result.rows[:5]:  # the trust columns are what a comparison of that image alone says
        alone = run_model(entry_for_folder(digits_run.run_dir), load_image(folder / row.file).image,
                          cache, cam=False, top_k=10)
        record = row.record()
        assert record["calibrated_probability"] == pytest.approx(alone.calibrated_top_k[0][1], abs=1e-5)
        assert record["ood_score"] == pytest.approx(alone.ood["score"], abs=1e-5)
        assert record["ood_flagged"] == alone.ood["flagged"]
    summary = result.summaries[digits_run.run_dir.name]
    assert summary.n == len(split) and summary.accuracy > 0.8
    low, high = summary.accuracy_ci95
    assert low < summary.accuracy < high or summary.accuracy == 1.0
    shutil.rmtree(folder)
