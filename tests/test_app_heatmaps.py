"""The Compare tab's heatmaps as a user sees them: a colour legend that matches the overlay's colours, and a greyed
map for a model whose OOD check flagged the image."""
import dataclasses

import numpy as np
import pytest

from _app_zoo import packaged_examples
from ui.heatmaps import heatmap_for_display
from zoo import inference
from zoo.images import load_image

FLAGGED = {"score": 0.41, "threshold": 0.08, "flagged": True}


@pytest.fixture(scope="module")
def result(entries):
    """A real Grad-CAM column of the tiny digits LeNet on the packaged CT."""
    image = load_image(packaged_examples()["ct"]).image
    column = inference.run_model(entries["lenet5-scratch-digits"], image, inference.ModelCache(), cam=True)
    assert column.heatmap is not None, column.cam_error
    return column


def _saturation(picture: np.ndarray) -> int:
    return int((picture.max(axis=2).astype(int) - picture.min(axis=2)).max())


def test_the_legend_under_the_heatmap_uses_the_overlays_colours_from_blue_to_red(result):
    from pytorch_grad_cam.utils.image import show_cam_on_image

    shown = heatmap_for_display(result)
    height, width = result.heatmap.shape[:2]
    assert shown.shape[1] == width and shown.shape[0] > height  # the legend sits in a margin below the map
    assert np.array_equal(shown[:height], result.heatmap)  # the map itself is untouched
    bar = shown[height:][np.argmax(_row_saturations(shown[height:]))]
    # the overlay's own colour for a ramp of evidence from none to the strongest (on a black image, no blending)
    ramp = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    overlay_colours = show_cam_on_image(np.zeros((1, width, 3), np.float32), ramp, use_rgb=True, image_weight=0.0)[0]
    assert np.abs(bar.astype(int) - overlay_colours.astype(int)).max() <= 1
    assert bar[0, 2] > 100 and bar[0, 0] < 50 and bar[-1, 0] > 100 and bar[-1, 2] < 50  # blue (least) to red (most)
    below_bar = shown[height:][np.argmax(_row_saturations(shown[height:])) + 2:]
    assert (below_bar.min(axis=2) < 100).any()  # the words saying what the colours mean


def _row_saturations(rows: np.ndarray) -> np.ndarray:
    return (rows.max(axis=2).astype(int) - rows.min(axis=2)).mean(axis=1)


def test_a_flagged_models_heatmap_is_grey_and_an_unflagged_one_keeps_its_colours(result):
    assert _saturation(heatmap_for_display(result)) > 100
    flagged = heatmap_for_display(dataclasses.replace(result, ood=FLAGGED))
    assert flagged.shape == heatmap_for_display(result).shape and _saturation(flagged) == 0


def test_no_heatmap_when_the_comparison_made_none(result):
    assert heatmap_for_display(dataclasses.replace(result, heatmap=None)) is None



def test_heatmap_files_are_lossless_pngs_and_old_ones_go_at_most_once_a_minute(result, tmp_path):
    """/compare's heatmap files: the picture heatmap_for_display draws, losslessly; files older than the TTL are
    deleted when a new one is written, but the folder is scanned at most every SWEEP_EVERY_S (scanning it at every
    heatmap cost a stat per file and per heatmap under load)."""
    import os
    import time

    from PIL import Image

    from ui.heatmaps import HEATMAP_FILE_TTL_S, SWEEP_EVERY_S, heatmap_file, remove_old_files

    folder = tmp_path / "heatmaps"
    path = heatmap_file(result, folder)
    with Image.open(path) as picture:
        assert picture.format == "PNG" and np.array_equal(np.asarray(picture), heatmap_for_display(result))
    stale = folder / "stale.png"
    stale.write_bytes(b"old")
    old = time.time() - HEATMAP_FILE_TTL_S - 5
    os.utime(stale, (old, old))
    heatmap_file(result, folder)  # within a minute of the first scan: not scanned again
    assert stale.exists()
    assert remove_old_files(folder, now=time.time() + SWEEP_EVERY_S + 1) == 1 and not stale.exists()
    assert len(list(folder.glob("*.png"))) == 2  # the fresh files stay
