"""Volumes: NIfTI (the MNI template, and volumes built here with nibabel) and multi-frame DICOM read as slices in
canonical orientation, their limits and messages, the app's slice controls and "all slices" plot, /compare with a
volume, and the page driven in Chromium."""
import gzip
import os
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import nibabel as nib  # noqa: E402

from _serve import QueueRequests, browser, needs_chromium, served_app  # noqa: E402,F401
from zoo import images as zoo_images  # noqa: E402
from zoo.assets import ASSET_PACKAGES, asset_file  # noqa: E402
from zoo.images import ImageLoadError, load_image, load_volume  # noqa: E402
from zoo.images.decoded import Limits  # noqa: E402

DIGIT_MODELS = ["lenet5-scratch-digits", "lite0-fe-digits"]
LIMITS = Limits(zoo_images.MAX_IMAGE_PIXELS, zoo_images.MAX_IMAGE_SIDE, zoo_images.MAX_ASPECT_RATIO)
EMRI = ("data/emri_small.dcm", "151233ec63f64ebb63b979df51aa827cd612a53422c073f6ef341770c7bc9a56")  # 10-frame MR


def mni_path() -> Path:
    from ui.examples import mni_template
    found = mni_template()
    assert found is not None, "nilearn's MNI template is missing: pip install --no-deps -r requirements-assets.txt"
    return found[0]


def oblique_volume(tmp_path: Path, marker=(1, 3, 2)) -> Path:
    """A 4x5x6 volume stored I-R-P (array axis i runs to Inferior, j to Right, k to Posterior) with 2, 1 and 3 mm
    voxels, turned 15 degrees about the vertical: one bright voxel at `marker`, the rest 0."""
    data = np.zeros((4, 5, 6), dtype=np.int16)
    data[marker] = 1000
    turn = np.radians(15)
    rotation = np.array([[np.cos(turn), -np.sin(turn), 0], [np.sin(turn), np.cos(turn), 0], [0, 0, 1]])
    axes = np.array([[0, 1, 0], [0, 0, -3], [-2, 0, 0]], dtype=float)  # columns: where i, j, k point (x, y, z)
    affine = np.eye(4)
    affine[:3, :3] = rotation @ axes
    path = tmp_path / "oblique.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def header_only_nifti(tmp_path: Path, shape, name="bomb.nii.gz", dtype=np.uint8) -> Path:
    """A gzipped NIfTI whose header announces `shape` but which carries 1 KB of voxels."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header["vox_offset"] = 352
    raw = header.binaryblock + b"\x00" * 4 + b"\x00" * 1024
    path = tmp_path / name
    path.write_bytes(gzip.compress(raw))
    return path


# --- reading -------------------------------------------------------------------------------------------------------

def test_mni_template_is_read_as_slices_with_its_window_stated():
    volume = load_volume(mni_path())
    assert volume.voxels.shape == (197, 233, 189) and volume.info["orientation"] == "RAS"
    assert volume.info["window_source"].startswith("percentile window over the volume (0.5th-99.5th")
    assert [volume.num_slices(axis) for axis in zoo_images.AXES] == [197, 233, 189]
    axial = volume.slice("axial", 94, LIMITS)
    assert axial.image.size == (197, 233) and axial.image.mode == "L"  # x across, y down
    assert axial.info["axis"] == "axial" and axial.info["slice_index"] == 94 and axial.info["num_slices"] == 189
    assert any(note.startswith("intensity window 0 to ") for note in axial.info["notes"])
    pixels = np.asarray(axial.image)
    assert pixels[116, 98] > 60 and pixels[0, 0] == 0  # brain in the middle, background black at the corner
    # the brain is taller front-to-back than it is wide: on the axial slice the head is an upright oval
    rows, columns = np.nonzero(pixels > 30)
    assert np.ptp(rows) > np.ptp(columns)
    assert volume.slice("sagittal", 98, LIMITS).image.size == (233, 189)
    assert volume.slice("coronal", 116, LIMITS).image.size == (197, 189)
    as_image = load_image(mni_path())  # every existing caller: the middle axial slice, said so
    assert np.array_equal(np.asarray(as_image.image), pixels)
    assert "a volume: the middle axial slice was used" in " ".join(as_image.info["notes"])


def test_an_oblique_volume_is_reoriented_to_canonical_ras(tmp_path):
    volume = load_volume(oblique_volume(tmp_path))
    assert volume.info["original_orientation"] == "IRP"
    assert "reoriented from IRP to canonical RAS" in " ".join(volume.info["notes"])
    # canonical (x, y, z): x is the old j, y the old k reversed, z the old i reversed
    assert volume.voxels.shape == (5, 6, 4) and volume.spacing == (1.0, 3.0, 2.0)
    assert np.unravel_index(np.argmax(volume.voxels), volume.voxels.shape) == (3, 6 - 1 - 2, 4 - 1 - 1)
    axial = volume.slice("axial", 2, LIMITS)
    # rows are 3 mm apart, columns 1 mm: the slice is stretched to square pixels, anterior (high y) on top
    assert axial.image.size == (5, 18)
    row, column = np.unravel_index(np.argmax(np.asarray(axial.image)), (18, 5))
    assert column == 3 and 6 <= row <= 8  # y = 3 of 0..5, counted from the top: the third 3-pixel band
    with pytest.raises(ImageLoadError, match=r"slice 4 is not among the 4 axial slices \(0 to 3\)"):
        volume.slice("axial", 4, LIMITS)
    with pytest.raises(ImageLoadError, match="axis must be one of sagittal, coronal, axial, got 'oblique'"):
        volume.slice("oblique", 0, LIMITS)


def test_multi_frame_dicom_is_a_volume_of_its_frames():
    path = asset_file(ASSET_PACKAGES["pydicom_data"], *EMRI)
    import pydicom
    frames = pydicom.dcmread(path).pixel_array  # (10, 64, 64)
    assert zoo_images.is_volume(path)
    volume = load_volume(path)
    assert volume.voxels.shape == (64, 64, 10)
    third = np.asarray(volume.slice("axial", 3, LIMITS).image).astype(float)
    assert np.corrcoef(third.ravel(), frames[3].astype(float).ravel())[0, 1] > 0.98  # the frame, as stored
    assert "10 frames read as the axial slices" in " ".join(volume.info["notes"])
    with pytest.raises(ImageLoadError, match="a DICOM of one frame is an image, not a volume"):
        from pydicom.data import get_testdata_file
        load_volume(get_testdata_file("CT_small.dcm", download=False))


def test_corrupt_and_truncated_volumes_get_one_clear_message(tmp_path):
    garbage = tmp_path / "scan.nii.gz"
    garbage.write_bytes(gzip.compress(os.urandom(600)))
    with pytest.raises(ImageLoadError, match=r"scan.nii.gz: not a NIfTI file \(no NIfTI-1 or NIfTI-2 magic"):
        load_volume(garbage)
    whole = tmp_path / "whole.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(40, 50, 30)).astype(np.float32), np.eye(4)),
             whole)
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    for read in (load_volume, load_image):
        with pytest.raises(ImageLoadError, match=r"cut.nii.gz: the NIfTI voxel data are truncated or corrupt .*"
                                                 r"Re-export or re-download it"):
            read(cut)
    not_gzip = tmp_path / "broken.nii.gz"
    not_gzip.write_bytes(b"\x1f\x8b" + os.urandom(500))
    with pytest.raises(ImageLoadError, match="broken.nii.gz: .*(truncated or corrupt|not a NIfTI)"):
        load_volume(not_gzip)


def test_oversized_volumes_are_refused_from_the_header_before_inflating(tmp_path):
    bomb = header_only_nifti(tmp_path, (4000, 4000, 4000))  # 64 G voxels announced in a file of ~1 KB
    start = time.perf_counter()
    with pytest.raises(ImageLoadError, match=r"bomb.nii.gz: a volume of 4000 x 4000 x 4000 = 64,000,000,000 "
                                             r"voxels, over the limit of 40,000,000 voxels \(max_voxels\); refused "
                                             "before reading its data"):
        load_volume(bomb)
    assert time.perf_counter() - start < 2
    wide = header_only_nifti(tmp_path, (300, 300, 300), "wide.nii.gz", np.float64)  # 27 M voxels of 8 bytes
    with pytest.raises(ImageLoadError, match="wide.nii.gz: its 27,000,000 voxels at 8 bytes each"):
        load_volume(wide)
    with pytest.raises(ImageLoadError, match="over the limit of 1,000 voxels"):
        load_volume(header_only_nifti(tmp_path, (20, 20, 20), "small.nii.gz"), max_voxels=1000)
    with pytest.raises(ImageLoadError, match=r"a file of [\d,]+ bytes, over the limit of 100 bytes for a volume"):
        load_volume(oblique_volume(tmp_path), max_file_bytes=100)


def test_four_d_volumes_give_their_first_volume_and_five_d_is_refused(tmp_path):
    series = np.zeros((4, 5, 6, 3), dtype=np.float32)
    series[..., 0] = 1.0
    series[1, 1, 1, 0] = 9.0
    series[2, 2, 2, 1:] = 50.0  # only in the later volumes
    path = tmp_path / "fmri.nii.gz"
    nib.save(nib.Nifti1Image(series, np.eye(4)), path)
    volume = load_volume(path)
    assert volume.voxels.shape == (4, 5, 6)
    assert np.unravel_index(np.argmax(volume.voxels), volume.voxels.shape) == (1, 1, 1)
    assert "4-D file (3 volumes, e.g. time points): the first volume was used" in volume.info["notes"]
    five = tmp_path / "five.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 2, 2), dtype=np.uint8), np.eye(4)), five)
    with pytest.raises(ImageLoadError, match=r"five.nii.gz: a 5-D NIfTI \(4x5x6x2x2\); volumes of 3 \(or 4"):
        load_volume(five)


def test_images_are_not_volumes(tmp_path):
    png = tmp_path / "a.png"
    from PIL import Image
    Image.new("L", (8, 8)).save(png)
    assert not zoo_images.is_volume(png)
    with pytest.raises(ImageLoadError, match=r"a.png: not a volume; volumes are DICOM or NIfTI files"):
        load_volume(png)


# --- the app -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(weights, tmp_path_factory):
    """(demo, url, client) over the tiny zoo."""
    with served_app(weights, tmp_path_factory.mktemp("volume-examples")) as served:
        yield served


def test_the_slice_controls_preview_and_compare_the_chosen_slice(served, tmp_path):
    from ui.volume_events import VolumeEvents
    demo, _, _ = served
    state = demo.zoo_app
    path = str(mni_path())
    events = VolumeEvents(state)
    group, axis, slider, view, window_group, _, _ = events.uploaded(path)
    assert group.visible and axis == "axial" and view == ("axial", 94) and window_group.visible is False
    assert (slider.maximum, slider.value) == (188, 94) and "(0 to 188)" in slider.label
    shown = state.read_image(path, None, view).image
    assert np.array_equal(np.asarray(state.read_image(path).image), np.asarray(shown))  # the middle, as uploaded
    slider, view, picture, text = events.axis_chosen(path, "coronal")
    assert view == ("coronal", 116) and slider.maximum == 232 and "coronal slice 116 of 233" in text
    view, picture, text = events.slice_chosen(path, "coronal", 40)
    assert view == ("coronal", 40) and "coronal slice 40 of 233" in text
    comparison = state.compare(path, DIGIT_MODELS, cam=False, view=view)
    assert comparison.image_info["axis"] == "coronal" and comparison.image_info["slice_index"] == 40
    assert all(r.error is None and r.top_k for r in comparison.results)
    png = tmp_path / "plain.png"
    from PIL import Image
    Image.new("L", (8, 8)).save(png)
    hidden, _, _, view, *_ = events.uploaded(str(png))
    assert hidden.visible is False and view is None


def test_all_slices_runs_every_model_along_the_plane_and_plots_it(served):
    from ui import volume
    demo, _, _ = served
    state = demo.zoo_app
    vol = state.volumes.get(str(mni_path()))
    entries = state.selected_entries(DIGIT_MODELS)
    run = volume.run_all_slices(vol, "axial", entries, state.cache, None, state.settings.max_pixels)
    assert run.indices == list(range(0, 189, 3)) and len(run.indices) <= volume.MAX_ALL_SLICES
    assert set(run.answers) == set(DIGIT_MODELS) and all(len(a) == 63 for a in run.answers.values())
    assert all(a is not None and 0 < a[1] <= 1 for answers in run.answers.values() for a in answers)
    # one slice answered again by the normal comparison: the same top class and probability
    again = state.compare(str(mni_path()), DIGIT_MODELS, cam=False, view=("axial", 30))
    assert [(r.top_k[0][0], round(r.top_k[0][1], 5)) for r in again.results] == \
           [(run.answers[m][10][0], round(run.answers[m][10][1], 5)) for m in DIGIT_MODELS]
    figure = volume.all_slices_figure(run)
    lines = figure.axes[0].get_lines()
    assert [line.get_label() for line in lines] == DIGIT_MODELS and len(lines[0].get_xdata()) == 63
    assert "one in 3 of its 189 axial slices (63 slices" in volume.all_slices_markdown(run)
    # OOD-flagged slices are marked: one cross per flagged slice, in the model's colour
    run.answers["lenet5-scratch-digits"][5] = ("3", 0.4, True)
    run.answers["lenet5-scratch-digits"][9] = ("3", 0.5, True)
    figure = volume.all_slices_figure(run)
    crosses = [c for c in figure.axes[0].collections if c.get_label().endswith("OOD-flagged slice")]
    assert len(crosses) == 1 and crosses[0].get_offsets().tolist() == [[15, 0.4], [27, 0.5]]
    assert "2 slices OOD-flagged" in volume.all_slices_markdown(run)


def test_compare_api_takes_a_volume_and_a_slice(served, tmp_path):
    from gradio_client import handle_file
    _, _, client = served
    path = handle_file(str(oblique_volume(tmp_path)))

    def call(**kwargs):
        return client.predict(image=path, models=DIGIT_MODELS, api_name="/compare", **kwargs)

    records = call()
    assert [r["slice"] for r in records] == [{"axis": "axial", "index": 2, "num_slices": 4}] * 2
    assert all(r["error"] is None and r["top_k"] for r in records)
    records = call(axis="sagittal", slice=4)
    assert records[0]["slice"] == {"axis": "sagittal", "index": 4, "num_slices": 5}
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError, match=r"slice 9 is not among the 6 coronal slices .*\(0 to 5\)"):
        call(axis="coronal", slice=9)
    png = tmp_path / "plain.png"
    from PIL import Image
    Image.new("L", (8, 8)).save(png)
    with pytest.raises(AppError, match="the file is an image, not a volume"):
        client.predict(image=handle_file(str(png)), models=DIGIT_MODELS, slice=2, api_name="/compare")
    plain = client.predict(image=handle_file(str(png)), models=DIGIT_MODELS, api_name="/compare")
    assert "slice" not in plain[0]


def test_the_mni_template_is_an_example(served):
    demo, _, _ = served
    example = next(e for e in demo.zoo_app.examples if e.path.endswith(".nii.gz"))
    assert "brain MRI volume (NIfTI" in example.caption and example.true_label is None


@needs_chromium
def test_page_uploads_a_volume_moves_the_slider_and_runs_all_slices(served, browser, tmp_path):
    from playwright.sync_api import expect

    demo, url, _ = served
    volume = tmp_path / "phantom.nii.gz"
    data = np.zeros((20, 24, 16), dtype=np.float32)
    data[5:15, 6:18, :] = np.linspace(1, 100, 16)[None, None, :]  # brighter towards the top
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), volume)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    requests = QueueRequests(page)
    page.goto(url)
    page.locator("#models input[type=checkbox]").first.wait_for()
    for box in page.locator("#models label").all():  # exactly the two digit models
        ticked = box.locator("input").is_checked()
        if ticked != any(box.inner_text().strip() == m for m in DIGIT_MODELS):
            box.click()
    requests.settle(page)
    page.locator("#image-file input[type=file]").set_input_files(str(volume))
    requests.settle(page)
    expect(page.locator("#volume-axis")).to_be_visible()
    expect(page.locator("#image-info")).to_contain_text("axial slice 8 of 16")
    number = page.locator("#volume-slice input[type=number]")
    number.fill("3")
    number.press("Tab")  # blur: the slider's release event
    requests.settle(page)
    expect(page.locator("#image-info")).to_contain_text("axial slice 3 of 16")
    page.locator("#all-slices").click()
    requests.settle(page, limit_s=120)
    expect(page.locator("#all-slices-plot")).to_be_visible()
    text = page.locator("#all-slices-text").inner_text()
    assert "all 16 axial slices of phantom.nii.gz" in text
    assert all(f"{m}: top class" in text for m in DIGIT_MODELS), text
    page.locator("#compare-button").click()
    requests.settle(page)
    assert "Every model read axial slice 3 (0 to 15) of the volume phantom.nii.gz" in \
        page.locator("#summary").inner_text()
    page.close()


def test_a_training_folder_and_a_csv_of_ids_find_gzipped_nifti_volumes(tmp_path):
    """`.nii.gz` is a compound suffix: a training folder lists those volumes (their middle slice is what a model
    reads, as load_image gives it) and a CSV may name one by its id without the suffix."""
    from train.data import load_csv, load_image_folder
    from zoo.images import image_stem, is_image_name

    assert is_image_name("Case7.NII.GZ") and not is_image_name("notes.gz") and image_stem("case7.nii.gz") == "case7"
    assert image_stem("x.PNG") == "x" and image_stem("readme") == "readme"
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    for label in ("healthy", "lesion"):
        for i in range(2):
            (tmp_path / "scans" / label).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(data + i, np.eye(4)), tmp_path / "scans" / label / f"{label}{i}.nii.gz")
    source = load_image_folder(tmp_path / "scans")
    assert sorted(Path(s.ref).name for s in source.samples) == ["healthy0.nii.gz", "healthy1.nii.gz",
                                                                 "lesion0.nii.gz", "lesion1.nii.gz"]
    assert load_image(source.samples[0].ref).info["format"].startswith("NIfTI")
    table = tmp_path / "labels.csv"
    table.write_text("image,label\nhealthy0,healthy\nlesion1.nii.gz,lesion\n")
    listed = load_csv(table, image_dir=str(tmp_path / "scans"))
    assert sorted(Path(s.ref).name for s in listed.samples) == ["healthy0.nii.gz", "lesion1.nii.gz"]
