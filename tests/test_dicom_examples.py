"""pydicom-data's real DICOM studies as the app's examples: the chest PA radiograph (MONOCHROME1) shown as a viewer
shows it, and what the medical models' OOD checks make of a chest film from another hospital."""
from __future__ import annotations

import numpy as np
import pytest

from ui import comparison
from ui.examples import DICOM_STUDIES, SERVED_SUFFIXES, make_private_folder, thumbnail, write_examples
from ui.formatting import ood_banner, trust_markdown
from zoo.catalog import discover_models
from zoo.images import load_image
from zoo.inference import ModelCache

CHEST_PA = "RG1_UNCR.dcm"


@pytest.fixture(scope="module")
def dicom_examples(tmp_path_factory):
    """The examples the app writes, DICOM studies only, by file name."""
    folder = make_private_folder(tmp_path_factory.mktemp("examples"))
    examples = write_examples(folder, tmp_path_factory.mktemp("no-weights"))
    return {study.file: e for study in DICOM_STUDIES for e in examples if e.path.endswith(study.file)}


def _mean(pixels: np.ndarray, x: tuple[float, float], y: tuple[float, float]) -> float:
    """Mean grey of a region given as fractions of the width and height."""
    h, w = pixels.shape
    return float(pixels[int(y[0] * h):int(y[1] * h), int(x[0] * w):int(x[1] * w)].mean())


def test_every_dicom_study_is_an_unlabelled_example_with_a_thumbnail_and_never_served_inline(dicom_examples):
    assert set(dicom_examples) == {study.file for study in DICOM_STUDIES}
    for name, example in dicom_examples.items():
        assert example.true_label is None and "no label" in example.caption and "pydicom-data" in example.caption
        assert not example.path.lower().endswith(SERVED_SUFFIXES)  # a .dcm reaches the page only as a download
        preview = thumbnail(example)
        assert max(preview.size) == 160 and np.asarray(preview).std() > 10, name  # a picture, not a blank tile
    assert "chest PA radiograph" in dicom_examples[CHEST_PA].caption


def test_chest_pa_is_shown_bone_white_lungs_dark_in_the_files_own_window(dicom_examples):
    loaded = load_image(dicom_examples[CHEST_PA].path)
    assert loaded.info["photometric_interpretation"] == "MONOCHROME1"
    # the file carries a window (centre 15000, width 30000): a viewer uses it, and so does the zoo
    assert loaded.info["window_source"] == "file (Window Center/Width)"
    assert (loaded.info["window_center"], loaded.info["window_width"]) == (15000.0, 30000.0)
    pixels = np.asarray(loaded.image, dtype=np.float64)
    lungs = [_mean(pixels, (0.18, 0.33), (0.25, 0.5)), _mean(pixels, (0.65, 0.8), (0.25, 0.5))]
    mediastinum = _mean(pixels, (0.45, 0.53), (0.2, 0.6))  # heart, spine and sternum: dense, so white
    # measured: lungs 149 and 141, mediastinum 222; MONOCHROME1 left uninverted gives the reverse
    assert max(lungs) + 40 < mediastinum


def test_chest_pa_through_the_medical_zoo_reports_each_models_ood_verdict(medical_zoo, dicom_examples):
    weights, _ = medical_zoo
    entries = discover_models(weights)
    result = comparison.compare(load_image(dicom_examples[CHEST_PA].path), entries, ModelCache(max_models=2),
                                cam=False)
    by_model = {r.model: r for r in result.results}
    assert set(by_model) == {"pneumonia-xception", "braintumor-xception"}
    for r in result.results:
        assert r.error is None and r.ood is not None  # every model's check ran and its verdict is in its column
        verdict = "flagged" if r.ood["flagged"] else "passed"
        assert verdict in trust_markdown(r)
    # the pneumonia model was trained on paediatric films of one hospital: an adult PA film from another is
    # unlike them (measured: score 0.42 over the threshold 0.27), and the page says so over its column and in
    # the summary, instead of counting its NORMAL/PNEUMONIA answer
    pneumonia = by_model["pneumonia-xception"]
    assert pneumonia.ood_flagged
    assert "unlike the images `pneumonia-xception` was trained on" in ood_banner(pneumonia)
    assert "pneumonia-xception" in result.summary.flagged
    assert "flagged this image" in result.summary.markdown and "`pneumonia-xception`" in result.summary.markdown
