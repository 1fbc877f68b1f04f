"""An upload is decoded once for its preview, its model inputs and its comparisons, and each distinct resize among
the selected models is done once per comparison; the records are exactly those of each model reading the image on
its own."""
import shutil

import pytest
import torch
from torchvision import transforms

from _app_zoo import packaged_examples

from zoo import images as zoo_images
from zoo import inference
from zoo.images import load_image

# lenet5-scratch-digits and lenet5-meta-lesions read the same 1x32x32 input: one resize between them
SAME_SIZE = ["lenet5-scratch-digits", "lenet5-meta-lesions"]
MODELS = [*SAME_SIZE, "quadsnet-scratch-digits", "lite0-fe-digits"]
TIMINGS = ("latency_ms", "cam_ms", "load_ms")


@pytest.fixture(scope="module")
def state(weights, tmp_path_factory):
    from ui.settings import Settings
    from ui.state import ComparisonApp
    return ComparisonApp(Settings(weights=weights, examples_dir=tmp_path_factory.mktemp("examples")))


@pytest.fixture
def decodes(monkeypatch):
    """The files zoo.images.load_image decodes, in order."""
    calls, real = [], zoo_images.load_image
    monkeypatch.setattr(zoo_images, "load_image", lambda path, **kwargs: calls.append(path) or real(path, **kwargs))
    return calls


def test_an_upload_is_decoded_once_for_its_preview_inputs_and_comparisons(state, decodes, tmp_path):
    upload = tmp_path / "scan.dcm"
    shutil.copy(packaged_examples()["ct"], upload)
    path = str(upload)
    state.upload_preview(path)
    state.model_inputs(path, MODELS)
    first = state.compare(path, MODELS, cam=False)
    again = state.compare(path, MODELS[:2], cam=False)
    assert decodes == [path]
    assert all(r.error is None for r in first.results + again.results)
    state.window_preview(path, "300,1500", None, None)  # another DICOM window is another decoding
    state.compare(path, MODELS[:2], cam=False, window=(300.0, 1500.0))
    assert decodes == [path, path]
    upload.write_bytes(packaged_examples()["mr"].read_bytes())  # the file rewritten: decoded again
    assert state.compare(path, MODELS[:2], cam=False).image_info["modality"] == "MR"
    assert len(decodes) == 3


def test_a_comparison_resizes_once_per_distinct_input(state, monkeypatch):
    resizes, real = [], transforms.Resize.forward
    monkeypatch.setattr(transforms.Resize, "forward", lambda self, img: resizes.append(self.size) or real(self, img))
    state.compare(str(packaged_examples()["retina"]), MODELS, cam=False)
    # lenet5 x2 (1x32x32), lite0 (3x32x32: its own channels), quadsnet (16 px)
    assert len(resizes) == 3, resizes


@pytest.mark.parametrize("example", ["ct", "retina"])  # a grey DICOM and a colour photograph
def test_records_equal_each_model_reading_the_image_alone(state, entries, example):
    image = load_image(packaged_examples()[example])
    chosen = [entries[m] for m in MODELS]
    cache = inference.ModelCache()
    shared = inference.run_models(image.image, chosen, cache, top_k=3, cam=True)
    alone = [inference.run_model(entry, image.image, cache, top_k=3, cam=True) for entry in chosen]

    def untimed(result):
        return {k: v for k, v in result.record().items() if k not in TIMINGS}

    assert [untimed(r) for r in shared] == [untimed(r) for r in alone]
    assert all(r.error is None and r.heatmap is not None for r in shared)
    for a, b in zip(shared, alone):
        assert (a.heatmap == b.heatmap).all()
    grouped = inference.SharedImage(image.image)
    for entry in chosen:  # the tensors themselves, bit for bit, against the model's own transform
        loaded = cache.get(entry)
        expected = loaded.transform(zoo_images.to_model_mode(image.image, loaded.in_chans)).unsqueeze(0)
        assert torch.equal(inference.preprocess(loaded, grouped), expected)
