"""zoo.images: every supported input becomes the expected 8-bit pixels; every bad input a clear error.

Image files are made in tmp_path; DICOM files are pydicom's bundled test files, read from the
installed package (never downloaded: download=False) and modified copies of them in tmp_path.
"""
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import get_decoder
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, JPEGBaseline8Bit, JPEGExtended12Bit, \
    JPEGLSLossless

from _deflated_dicom import grayscale_dataset, write_deflated_dicom
from zoo._errors import ZooError
from zoo.images import (CHOSEN_WINDOW, DEFLATED_DICOM_HEADER_BYTES, MAX_ASPECT_RATIO, MAX_IMAGE_PIXELS,
                        MAX_IMAGE_SIDE, ImageLoadError, LoadedImage, load_image, to_model_mode)


def dicom_file(name: str) -> str:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} should ship inside the installed pydicom package"
    return path


def pixels(loaded: LoadedImage) -> np.ndarray:
    return np.asarray(loaded.image)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height but that holds no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    chunks = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


# ----------------------------------------------------------------------------------------------
# Ordinary image formats


@pytest.mark.parametrize(
    "fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg"), ("BMP", ".bmp"), ("TIFF", ".tif")]
)
def test_colour_formats_load_as_rgb(tmp_path, fmt, suffix):
    array = np.zeros((20, 30, 3), dtype=np.uint8)
    array[:, :15] = (200, 30, 30)
    array[:, 15:] = (30, 30, 200)
    path = tmp_path / f"img{suffix}"
    Image.fromarray(array).save(path, fmt, **({"quality": 95, "subsampling": 0} if fmt == "JPEG" else {}))
    loaded = load_image(path)
    assert loaded.image.mode == "RGB" and loaded.image.size == (30, 20)
    assert loaded.info["format"] == fmt and loaded.info["source"] == path.name
    error = np.abs(pixels(loaded).astype(int) - array)
    assert error.mean() < 4 and (fmt == "JPEG" or error.max() == 0)  # JPEG is lossy
    assert type(loaded.image) is Image.Image  # not tied to the (closed) file


def test_grayscale_stays_grayscale_and_bytes_match_path(tmp_path):
    array = np.arange(256, dtype=np.uint8).reshape(16, 16)
    path = tmp_path / "gray.png"
    Image.fromarray(array).save(path)
    from_path, from_bytes = load_image(path), load_image(path.read_bytes())
    assert from_path.image.mode == "L"
    np.testing.assert_array_equal(pixels(from_path), array)
    np.testing.assert_array_equal(pixels(from_bytes), array)
    assert from_bytes.info["source"] == "<bytes>"


def test_16bit_png_is_scaled_by_min_max_not_clipped(tmp_path):
    array = np.arange(4096, dtype=np.uint16).reshape(64, 64)  # 12-bit values 0..4095
    path = tmp_path / "xray16.png"
    Image.fromarray(array).save(path)
    loaded = load_image(path)
    out = pixels(loaded)
    assert loaded.info["original_mode"] == "I;16" and loaded.image.mode == "L"
    assert out.min() == 0 and out.max() == 255
    assert out.flat[0] == 0 and out.flat[2048] == 128 and out.flat[4095] == 255
    assert (out == 255).sum() < 10  # clipping to 8 bits would make almost every pixel white
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)


@pytest.mark.parametrize(
    "dtype, low, high", [(np.uint16, 100, 900), (np.int32, -5000, 70000), (np.float32, -1.5, 2.5)]
)
def test_high_depth_tiff_is_scaled_by_min_max(tmp_path, dtype, low, high):
    array = np.linspace(low, high, 100).reshape(10, 10).astype(dtype)
    path = tmp_path / "deep.tif"
    Image.fromarray(array).save(path)
    loaded = load_image(path)
    out = pixels(loaded)
    assert loaded.image.mode == "L"
    assert out[0, 0] == 0 and out[-1, -1] == 255 and out.min() == 0 and out.max() == 255


def test_rgba_is_composited_on_black(tmp_path):
    array = np.zeros((2, 2, 4), dtype=np.uint8)
    array[0, 0] = (255, 0, 0, 255)  # opaque red
    array[0, 1] = (255, 0, 0, 128)  # half-transparent red
    array[1, 0] = (255, 255, 255, 0)  # transparent white
    array[1, 1] = (0, 255, 0, 255)
    path = tmp_path / "rgba.png"
    Image.fromarray(array, mode="RGBA").save(path)
    loaded = load_image(path)
    out = pixels(loaded)
    assert loaded.image.mode == "RGB"
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[0, 1]) == (128, 0, 0)
    assert tuple(out[1, 0]) == (0, 0, 0)
    assert tuple(out[1, 1]) == (0, 255, 0)
    assert any("black" in note for note in loaded.info["notes"])


def test_la_becomes_l_composited(tmp_path):
    path = tmp_path / "la.png"
    Image.fromarray(np.array([[[200, 255], [200, 0]]], dtype=np.uint8), mode="LA").save(path)
    loaded = load_image(path)
    assert loaded.image.mode == "L"
    assert pixels(loaded).tolist() == [[200, 0]]


def test_cmyk_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.tif"
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(path)  # no cyan, full magenta + yellow = red
    loaded = load_image(path)
    assert loaded.info["original_mode"] == "CMYK" and loaded.image.mode == "RGB"
    assert tuple(pixels(loaded)[0, 0]) == (255, 0, 0)


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("GIF", ".gif")])
def test_palette_with_transparency_becomes_rgb_on_black(tmp_path, fmt, suffix):
    image = Image.new("P", (2, 1))
    image.putpalette([255, 255, 255, 0, 0, 255] + [0] * 762)
    image.putpixel((0, 0), 0)  # white, made transparent below
    image.putpixel((1, 0), 1)  # blue, opaque
    path = tmp_path / f"palette{suffix}"
    image.save(path, fmt, transparency=0)
    loaded = load_image(path)
    assert loaded.image.mode == "RGB"
    assert pixels(loaded)[0].tolist() == [[0, 0, 0], [0, 0, 255]]


def test_bilevel_becomes_l(tmp_path):
    path = tmp_path / "mask.png"
    Image.fromarray(np.array([[True, False]])).convert("1").save(path)
    loaded = load_image(path)
    assert loaded.info["original_mode"] == "1" and loaded.image.mode == "L"
    assert pixels(loaded).tolist() == [[255, 0]]


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :20] = (255, 0, 0)  # left half red
    array[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # stored image must be turned 90 degrees clockwise to display
    path = tmp_path / "phone.jpg"
    Image.fromarray(array).save(path, "JPEG", exif=exif.tobytes(), quality=95)
    loaded = load_image(path)
    out = pixels(loaded).astype(int)
    assert loaded.image.size == (20, 40) and loaded.info["exif_orientation"] == 6
    assert out[2, 10, 0] > 200 and out[2, 10, 2] < 50  # top is the former left (red)
    assert out[-3, 10, 2] > 200 and out[-3, 10, 0] < 50  # bottom is the former right (blue)


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    loaded = load_image(path)
    assert loaded.image.mode == "RGB"
    assert tuple(pixels(loaded)[4, 4]) == (255, 0, 0)
    assert any("first frame" in note for note in loaded.info["notes"])


def test_scikit_image_retina_loads_as_rgb():
    import skimage

    path = Path(skimage.__file__).parent / "data" / "retina.jpg"
    loaded = load_image(path)
    assert loaded.image.mode == "RGB" and loaded.info["format"] == "JPEG"
    assert min(loaded.image.size) > 500


# ----------------------------------------------------------------------------------------------
# Bad inputs


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageLoadError, match=r"empty\.png: the file is empty \(0 bytes\)"):
        load_image(path)


def test_html_named_png(tmp_path):
    path = tmp_path / "scan.png"
    path.write_text("<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>login</body></html>")
    with pytest.raises(ImageLoadError, match=r"scan\.png: looks like an HTML/XML document, not an image"):
        load_image(path)


@pytest.mark.parametrize("suffix", [".jpg", ".dcm"])
def test_text_file_named_as_image(tmp_path, suffix):
    path = tmp_path / f"notes{suffix}"
    path.write_text("patient 12, left eye, grade 2\nno further findings\n")
    with pytest.raises(ImageLoadError, match=r"looks like a text file, not an image"):
        load_image(path)


def test_git_lfs_pointer(tmp_path):
    path = tmp_path / "x.png"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    with pytest.raises(ImageLoadError, match="git lfs pull"):
        load_image(path)


def test_unrecognised_binary(tmp_path):
    path = tmp_path / "noise.png"
    path.write_bytes(bytes(range(1, 256)) * 4)
    with pytest.raises(ImageLoadError, match=r"noise\.png: not a recognised image"):
        load_image(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageLoadError, match="is a folder"):
        load_image(tmp_path)


def test_truncated_png(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)  # incompressible
    full = tmp_path / "full.png"
    Image.fromarray(noise).save(full)
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ImageLoadError, match=r"cut\.png: the PNG data are truncated or corrupt"):
        load_image(cut)


@pytest.mark.parametrize("keep", [8, 20, 33, 40])
def test_png_cut_inside_its_header_is_called_truncated(tmp_path, keep):
    full = tmp_path / "full.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(full)
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[:keep])
    with pytest.raises(ImageLoadError, match=r"cut\.png: .*(truncated or corrupt|corrupt image header)") as error:
        load_image(cut)
    assert "not a recognised image" not in str(error.value)


@pytest.mark.parametrize("width, height", [(300_000, 1), (1, 5_000_000), (2100, 100)])
def test_thin_strip_is_refused_from_its_header(tmp_path, width, height):
    path = tmp_path / "strip.png"
    path.write_bytes(png_header_only(width, height))  # no pixel data: decoding would fail, not refuse
    assert MAX_ASPECT_RATIO == 20
    with pytest.raises(ImageLoadError, match=rf"strip\.png: {width}x{height} pixels is a strip .* limit of 20:1"):
        load_image(path)
    Image.new("L", (2000, 100)).save(path)  # exactly 20:1 passes
    assert load_image(path).image.size == (2000, 100)


def test_large_image_is_downscaled_once_and_its_size_recorded(tmp_path):
    ramp = np.add.outer(np.arange(1500), np.arange(3000)) % 256  # (H, W)
    path = tmp_path / "wide.png"
    Image.fromarray(ramp.astype(np.uint8)).convert("RGBA").save(path)
    loaded = load_image(path)
    assert MAX_IMAGE_SIDE == 2048
    assert loaded.image.size == (2048, 1024) and loaded.image.mode == "RGB"
    assert loaded.info["original_size"] == (3000, 1500) and loaded.info["size"] == (2048, 1024)
    assert any("downscaled from 3000x1500 to 2048x1024" in n for n in loaded.info["notes"])
    assert load_image(path, max_side=None).image.size == (3000, 1500)
    jpeg = tmp_path / "big.jpg"  # decoded at a reduced scale, then resized to the limit
    Image.fromarray(ramp.astype(np.uint8)).save(jpeg)
    assert load_image(jpeg, max_side=700).image.size == (700, 350)
    dicom = load_image(dicom_file("CT_small.dcm"), max_side=64)
    assert dicom.image.size == (64, 64) and dicom.info["original_size"] == (128, 128)
    with pytest.raises(ImageLoadError, match="max_side"):
        load_image(path, max_side=0)


def test_high_depth_scaling_in_chunks_matches_the_whole_array_formula(tmp_path):
    # 1.5 Mpx: more than one chunk; NaN and inf pixels in a float image become 0
    values = np.linspace(-3.0, 5.0, 1000 * 1500, dtype=np.float32).reshape(1000, 1500)
    values[0, :10], values[-1, -5:] = np.nan, np.inf
    path = tmp_path / "float.tif"
    Image.fromarray(values, mode="F").save(path)
    loaded = load_image(path, max_side=None)
    finite = np.isfinite(values)
    low, high = values[finite].min(), values[finite].max()
    expected = np.round(np.where(finite, (values.astype(np.float64) - low) / (high - low), 0.0) * 255)
    assert np.array_equal(pixels(loaded), expected.astype(np.uint8))
    assert "15 NaN/infinite pixels set to 0" in loaded.info["notes"]


def test_huge_header_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(30000, 30000))
    start = time.perf_counter()
    with pytest.raises(ImageLoadError, match=r"bomb\.png: .*(decompression bomb|pixels)"):
        load_image(path)
    assert time.perf_counter() - start < 1.0


def test_max_pixels_is_configurable(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(png_header_only(100, 100))
    with pytest.raises(ImageLoadError, match=r"100x100 = 10,000 pixels is over the limit of 5,000"):
        load_image(path, max_pixels=5000)
    assert MAX_IMAGE_PIXELS == 40_000_000
    path_between = tmp_path / "between.png"  # over our cap, under Pillow's own bomb limit
    path_between.write_bytes(png_header_only(7000, 7000))
    with pytest.raises(ImageLoadError, match="49,000,000 pixels is over the limit of 40,000,000"):
        load_image(path_between)


def test_pillow_bomb_warning_is_an_error_without_changing_global_state(tmp_path):
    path = tmp_path / "warned.png"
    side = int((Image.MAX_IMAGE_PIXELS * 1.2) ** 0.5)  # between Pillow's warning and error limits
    path.write_bytes(png_header_only(side, side))
    filters_before, limit_before = list(warnings.filters), Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(path, max_pixels=10**10)
    assert warnings.filters == filters_before and Image.MAX_IMAGE_PIXELS == limit_before
    with pytest.warns(Image.DecompressionBombWarning):  # other code still gets Pillow's usual warning
        Image.open(path).close()


def test_bad_max_pixels():
    with pytest.raises(ImageLoadError, match="max_pixels"):
        load_image(b"x", max_pixels=0)


# ----------------------------------------------------------------------------------------------
# DICOM


def hounsfield(path: str) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window, written out here to check the loader against."""
    return np.round(np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0, 1) * 255)


def test_ct_small_without_window_uses_robust_min_max():
    path = dicom_file("CT_small.dcm")
    loaded = load_image(path)
    info, out = loaded.info, pixels(loaded)
    assert loaded.image.mode == "L" and loaded.image.size == (128, 128)
    assert info["format"] == "DICOM" and info["modality"] == "CT"
    assert info["window_source"].startswith("robust min-max")
    assert (info["rescale_slope"], info["rescale_intercept"]) == (1.0, -1024.0)
    assert info["transfer_syntax_uid"] == "1.2.840.10008.1.2.1" and info["number_of_frames"] == 1
    low, high = np.percentile(hounsfield(path), (0.5, 99.5))
    assert info["window_center"] == pytest.approx((low + high) / 2)
    expected = np.round(np.clip((hounsfield(path) - low) / (high - low), 0, 1) * 255)
    assert np.abs(out - expected).max() <= 1
    assert out.min() == 0 and out.max() == 255


def test_ct_window_from_file_is_used_first_value_when_multi_valued(tmp_path):
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    ds.WindowCenter, ds.WindowWidth = [40, 300], [400, 1500]  # soft tissue first, then bone
    path = tmp_path / "ct_window.dcm"
    ds.save_as(path)
    loaded = load_image(path)
    assert loaded.info["window_source"] == "file (Window Center/Width)"
    assert (loaded.info["window_center"], loaded.info["window_width"]) == (40.0, 400.0)
    expected = linear_window(hounsfield(dicom_file("CT_small.dcm")), 40, 400)
    assert np.abs(pixels(loaded) - expected).max() <= 1


def test_a_chosen_window_replaces_the_automatic_one_on_ct_small():
    path = dicom_file("CT_small.dcm")
    automatic = pixels(load_image(path))
    bone = load_image(path, window=(300, 1500))
    assert bone.info["window_source"] == CHOSEN_WINDOW
    assert (bone.info["window_center"], bone.info["window_width"]) == (300.0, 1500.0)
    assert np.abs(pixels(bone) - linear_window(hounsfield(path), 300, 1500)).max() <= 1
    soft_tissue = pixels(load_image(path, window=(40, 80)))
    assert np.abs(soft_tissue - linear_window(hounsfield(path), 40, 80)).max() <= 1
    # a narrow soft-tissue window saturates what a wide bone window still shades: the 8-bit pixels differ a lot
    assert (soft_tissue == 255).mean() > (pixels(bone) == 255).mean() + 0.2
    assert np.abs(pixels(bone) - automatic).mean() > 10


def test_the_files_windows_are_offered_as_presets_and_a_chosen_one_wins(tmp_path):
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    ds.WindowCenter, ds.WindowWidth = [40, 300], [400, 1500]
    ds.WindowCenterWidthExplanation = ["SOFT TISSUE", "BONE"]
    path = tmp_path / "ct_presets.dcm"
    ds.save_as(path)
    loaded = load_image(path, window=(300, 1500))
    assert loaded.info["window_presets"] == [{"center": 40.0, "width": 400.0, "explanation": "SOFT TISSUE"},
                                             {"center": 300.0, "width": 1500.0, "explanation": "BONE"}]
    assert np.abs(pixels(loaded) - linear_window(hounsfield(dicom_file("CT_small.dcm")), 300, 1500)).max() <= 1
    assert load_image(dicom_file("CT_small.dcm")).info["window_presets"] == []


@pytest.mark.parametrize("window", [(40, 0), (float("nan"), 400), ("soft", 400), (40,)])
def test_a_bad_window_is_refused_with_its_value(window):
    with pytest.raises(ImageLoadError, match="window"):
        load_image(dicom_file("CT_small.dcm"), window=window)


def test_a_window_on_a_png_is_reported_unused(tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(path)
    loaded = load_image(path, window=(40, 400))
    assert pixels(loaded).tolist() == np.arange(64).reshape(8, 8).tolist()
    assert any("window was not used" in note for note in loaded.info["notes"])


def test_mr_small_window_from_file():
    path = dicom_file("MR_small.dcm")
    loaded = load_image(path)
    assert loaded.info["window_source"] == "file (Window Center/Width)"
    center, width = loaded.info["window_center"], loaded.info["window_width"]
    assert (center, width) == (600.0, 1600.0)
    expected = linear_window(pydicom.dcmread(path).pixel_array.astype(float), center, width)
    assert np.abs(pixels(loaded) - expected).max() <= 1


def test_voi_lut_sequence_is_preferred_to_the_window(tmp_path):
    ds = pydicom.dcmread(dicom_file("MR_small.dcm"))  # also has Window Center/Width 600/1600
    ramp = np.round(np.clip((np.arange(4096) - 400) / 1200, 0, 1) * 4095).astype(int)  # 12-bit output
    item = pydicom.Dataset()
    item.add_new("LUTDescriptor", "US", [4096, 0, 12])
    item.add_new("LUTData", "US", ramp.tolist())
    ds.VOILUTSequence = pydicom.Sequence([item])
    path = tmp_path / "mr_voi_lut.dcm"
    ds.save_as(path)
    loaded = load_image(path)
    assert loaded.info["window_source"] == "file (VOI LUT Sequence)"
    expected = np.round(np.clip((ds.pixel_array - 400) / 1200, 0, 1) * 255)
    assert np.abs(pixels(loaded) - expected).max() <= 1


def test_monochrome1_is_inverted_relative_to_monochrome2(tmp_path):
    ds = pydicom.dcmread(dicom_file("MR_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    path = tmp_path / "mr_mono1.dcm"
    ds.save_as(path)
    mono1, mono2 = load_image(path), load_image(dicom_file("MR_small.dcm"))
    assert mono1.info["photometric_interpretation"] == "MONOCHROME1"
    difference = pixels(mono1).astype(int) - (255 - pixels(mono2).astype(int))
    assert np.abs(difference).max() <= 1
    assert np.abs(pixels(mono1).astype(int) - pixels(mono2)).mean() > 50


def test_a_multiframe_dicom_gives_its_middle_frame_as_a_volume_gives_its_middle_slice(tmp_path):
    multi = load_image(dicom_file("rtdose.dcm"))
    assert multi.info["number_of_frames"] == 15 and multi.info["frame_used"] == 7
    assert "frame 8 of 15 used, the middle one (zoo.images.load_volume reads every frame)" in multi.info["notes"]

    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    first = ds.pixel_array
    frames = [first, first[::-1].T, first[:, ::-1]]  # three different frames
    ds.NumberOfFrames = 3
    ds.PixelData = np.stack(frames).tobytes()
    ds.save_as(tmp_path / "ct_3frames.dcm")
    ds.NumberOfFrames = 1
    ds.PixelData = frames[1].tobytes()
    ds.save_as(tmp_path / "ct_frame2.dcm")
    from zoo.images import load_volume

    three = load_image(tmp_path / "ct_3frames.dcm")
    assert three.info["frame_used"] == 1 == load_volume(tmp_path / "ct_3frames.dcm").middle()
    np.testing.assert_array_equal(pixels(three), pixels(load_image(tmp_path / "ct_frame2.dcm")))
    assert not np.array_equal(pixels(three), pixels(load_image(dicom_file("CT_small.dcm"))))


def test_multiframe_colour_jpeg_dicom():
    decoder = get_decoder(JPEGBaseline8Bit)
    if not decoder.is_available:
        with pytest.raises(ImageLoadError, match="JPEG Baseline"):
            load_image(dicom_file("examples_ybr_color.dcm"))
        return
    loaded = load_image(dicom_file("examples_ybr_color.dcm"))  # 30 frames, YBR_FULL_422, JPEG baseline
    assert loaded.image.mode == "RGB" and loaded.image.size == (320, 240)
    assert loaded.info["number_of_frames"] == 30


def test_dicom_without_preamble_loads_the_same_pixels(tmp_path):
    raw = Path(dicom_file("CT_small.dcm")).read_bytes()
    assert raw[128:132] == b"DICM"
    reference = pixels(load_image(dicom_file("CT_small.dcm")))
    for name in ("no_preamble.dcm", "no_preamble_no_extension"):
        path = tmp_path / name
        path.write_bytes(raw[132:])
        np.testing.assert_array_equal(pixels(load_image(path)), reference)
    np.testing.assert_array_equal(pixels(load_image(raw[132:])), reference)


def test_dicom_detected_by_content_not_extension(tmp_path):
    path = tmp_path / "scan.bin"
    path.write_bytes(Path(dicom_file("CT_small.dcm")).read_bytes())
    assert load_image(path).info["format"] == "DICOM"


def test_dicom_without_pixel_data(tmp_path):
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    del ds.PixelData
    path = tmp_path / "no_pixels.dcm"
    ds.save_as(path)
    with pytest.raises(ImageLoadError, match=r"no_pixels\.dcm: is a 'CT Image Storage' object with no Pixel"):
        load_image(path)
    with pytest.raises(ImageLoadError, match=r"rtplan\.dcm: is a 'RT Plan Storage' object with no Pixel"):
        load_image(dicom_file("rtplan.dcm"))


def test_unsupported_compressed_transfer_syntax_is_named(tmp_path):
    ds = pydicom.dcmread(dicom_file("MR_small_RLE.dcm"))  # encapsulated data, relabelled as JPEG-LS
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    path = tmp_path / "mr_jpegls.dcm"
    ds.save_as(path)
    with pytest.raises(ImageLoadError) as caught:
        load_image(path)
    message = str(caught.value)
    assert "mr_jpegls.dcm" in message
    assert "JPEG-LS Lossless Image Compression" in message and "1.2.840.10008.1.2.4.80" in message
    if not get_decoder(JPEGLSLossless).is_available:
        assert "no installed package decodes it" in message
        assert "pylibjpeg" in message and "gdcm" in message


def test_bundled_jpeg_dicoms_decode_or_name_the_missing_decoder():
    # JPEG baseline (8-bit): pydicom's pillow plugin decodes it when Pillow is installed
    if get_decoder(JPEGBaseline8Bit).is_available:
        jpeg = load_image(dicom_file("SC_rgb_small_odd_jpeg.dcm"))
        plain = load_image(dicom_file("SC_rgb_small_odd.dcm"))
        assert jpeg.info["transfer_syntax"] == "JPEG Baseline (Process 1)" and jpeg.image.mode == "RGB"
        assert np.abs(pixels(jpeg).astype(int) - pixels(plain)).mean() < 10  # lossy copy of the same image
    # JPEG extended (12-bit): Pillow cannot; pylibjpeg-libjpeg or gdcm can
    extended = get_decoder(JPEGExtended12Bit)
    if {"pylibjpeg", "gdcm"} & set(extended.available_plugins):
        assert load_image(dicom_file("JPGExtended.dcm")).image.mode == "L"
    else:
        named = r"JPEG Extended \(Process 2 and 4\) \(1\.2\.840\.10008\.1\.2\.4\.51\).*pylibjpeg"
        with pytest.raises(ImageLoadError, match=named):
            load_image(dicom_file("JPGExtended.dcm"))


def test_rgb_and_palette_dicom_stay_colour():
    path = dicom_file("SC_rgb_small_odd.dcm")
    loaded = load_image(path)
    assert loaded.image.mode == "RGB"
    np.testing.assert_array_equal(pixels(loaded), pydicom.dcmread(path).pixel_array)
    palette = load_image(dicom_file("examples_palette.dcm"))
    assert palette.image.mode == "RGB" and palette.info["photometric_interpretation"] == "PALETTE COLOR"


def test_dicom_truncated_pixel_data_and_size_cap():
    with pytest.raises(ImageLoadError, match=r"MR_truncated\.dcm: the DICOM pixel data are truncated"):
        load_image(dicom_file("MR_truncated.dcm"))
    with pytest.raises(ImageLoadError, match=r"128x128 = 16,384 pixels is over the limit of 1,000"):
        load_image(dicom_file("CT_small.dcm"), max_pixels=1000)


# ----------------------------------------------------------------------------------------------
# Deflated DICOM (transfer syntax 1.2.840.10008.1.2.1.99): inflated no further than its image needs


def test_deflated_dicoms_load_the_same_pixels_as_their_uncompressed_copies(tmp_path):
    bundled = pydicom.dcmread(dicom_file("image_dfl.dcm"))  # pydicom's own deflated sample, 512x512
    assert bundled.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    written = pydicom.dcmread(dicom_file("CT_small.dcm"))  # 16-bit CT with a rescale, deflated by pydicom's writer
    written.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    written.save_as(tmp_path / "ct_deflated.dcm", enforce_file_format=True)
    for deflated, ds in ((dicom_file("image_dfl.dcm"), bundled), (tmp_path / "ct_deflated.dcm", written)):
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(tmp_path / "plain.dcm", enforce_file_format=True)
        loaded, plain = load_image(deflated), load_image(tmp_path / "plain.dcm")
        assert loaded.info["transfer_syntax_uid"] == "1.2.840.10008.1.2.1.99"
        np.testing.assert_array_equal(pixels(loaded), pixels(plain))
        assert pixels(loaded).std() > 10  # a real picture, not a blank


def test_the_streamed_test_files_are_real_deflated_dicoms(tmp_path):
    path = write_deflated_dicom(tmp_path / "zeros.dcm", grayscale_dataset(40, 30), 40 * 30)
    ds = pydicom.dcmread(path)  # pydicom's reader inflates it whole, as the standard describes
    assert ds.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian and ds.pixel_array.shape == (40, 30)
    assert load_image(path).image.size == (30, 40)


def _peak_traced_mb(function) -> float:
    """Peak Python allocation (MB) while `function` runs: what inflating a file costs, down to each bytes object."""
    import tracemalloc
    tracemalloc.start()
    try:
        function()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 1e6


def test_a_megabyte_of_deflated_zeros_is_refused_from_its_header_before_it_is_inflated(tmp_path):
    # 30000x30000 zeros: 0.9 MB on disk, 900 MB inflated (pydicom then copies the pixel data: 2.5 GB peak)
    huge = write_deflated_dicom(tmp_path / "huge.dcm", grayscale_dataset(30000, 30000), 30000 * 30000)
    # a header of 512x512 pixels whose Pixel Data declare 1 GB (the 1,044,158-byte file of the report)
    lying = write_deflated_dicom(tmp_path / "lying.dcm", grayscale_dataset(512, 512), 1 << 30)
    frames = grayscale_dataset(1000, 1000)
    frames.NumberOfFrames = 100  # each frame within the pixel limit, all of them (inflated together) not
    many = write_deflated_dicom(tmp_path / "frames.dcm", frames, 100 * 1000 * 1000)
    assert max(path.stat().st_size for path in (huge, lying, many)) < 1_100_000
    refusals = {huge: r"huge\.dcm: 30000x30000 = 900,000,000 pixels is over the limit of 40,000,000 pixels",
                lying: r"lying\.dcm: its deflated Pixel Data declare 1,073,741,824 bytes, but 1 frame\(s\) of "
                       r"512x512 pixels at 8 bits need 262,144 bytes; refused before inflating them",
                many: r"frames\.dcm: a deflated DICOM of 100 frames of 1000x1000 = 100,000,000 pixels in all, over "
                      r"the limit of 40,000,000 pixels \(max_pixels\)"}
    for path, message in refusals.items():
        def refused(path=path, message=message):
            with pytest.raises(ImageLoadError, match=message):
                load_image(path)
        assert _peak_traced_mb(refused) < 2.5 * DEFLATED_DICOM_HEADER_BYTES / 1e6


def test_deflated_header_larger_than_its_bound_is_refused(tmp_path):
    ds = grayscale_dataset(64, 64)
    ds.add_new(0x00090010, "LO", "ACME")  # a private block before the pixel data, inflating past the header bound
    ds.add_new(0x00091010, "OB", bytes(DEFLATED_DICOM_HEADER_BYTES + 2))
    path = write_deflated_dicom(tmp_path / "private.dcm", ds, 64 * 64)
    assert path.stat().st_size < 100_000
    with pytest.raises(ImageLoadError, match=r"private\.dcm: a deflated DICOM whose data elements before the Pixel "
                                             r"Data inflate to more than 16 MB; refused"):
        load_image(path)


def test_deflated_dicom_cut_short_is_called_truncated(tmp_path):
    path = write_deflated_dicom(tmp_path / "cut.dcm", grayscale_dataset(256, 256), 256 * 256)
    ds = pydicom.dcmread(path)
    ds.PixelData = np.random.default_rng(0).integers(0, 256, 256 * 256, dtype=np.uint8).tobytes()  # incompressible
    ds.save_as(path, enforce_file_format=True)
    path.write_bytes(path.read_bytes()[:-2000])
    with pytest.raises(ImageLoadError, match=r"cut\.dcm: the DICOM pixel data are truncated"):
        load_image(path)


# ----------------------------------------------------------------------------------------------
# to_model_mode


def test_to_model_mode():
    gray = Image.fromarray(np.array([[0, 128, 255]], dtype=np.uint8))
    colour = Image.fromarray(np.array([[[255, 0, 0], [0, 255, 0], [10, 10, 10]]], dtype=np.uint8))
    assert to_model_mode(gray, 1) is gray
    replicated = np.asarray(to_model_mode(gray, 3))
    assert replicated.shape == (1, 3, 3) and (replicated == np.asarray(gray)[..., None]).all()
    assert to_model_mode(colour, 3) is colour
    luma = to_model_mode(colour, 1)
    assert luma.mode == "L" and np.asarray(luma).tolist() == [[76, 150, 10]]  # ITU-R 601-2 weights
    with pytest.raises(ZooError, match="in_chans must be 1"):
        to_model_mode(gray, 4)
    with pytest.raises(ZooError, match="load_image"):
        to_model_mode(Image.new("I;16", (2, 2)), 1)
