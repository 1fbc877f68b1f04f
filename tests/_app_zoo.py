"""A tiny zoo of run folders for the app's tests, and the good and bad input files they feed it.

Models are untrained (random weights, fixed seed): the tests check what the app does with them, not
what they know. Each run folder has what `python -m train` writes that the app reads: model.safetensors,
config.json, README.md (zoo.save_pretrained), metrics.json (train's layout), a verified model.onnx (where
onnxruntime is installed) and, for one model, the plots (training's and the reliability diagram).
"""
from __future__ import annotations

import importlib.util
import io
import json
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import JPEGLSLossless

import zoo
from zoo.run_layout import RELIABILITY_PLOT

DIGITS = [str(i) for i in range(10)]
LESIONS = ["benign", "malignant", "other"]
# id -> (architecture, mode, create_model kwargs, input size (H == W), label names, plots?)
TINY_MODELS = {
    "lenet5-scratch-digits": ("lenet5", "scratch", {}, 32, DIGITS, True),
    "lite0-fe-digits": ("efficientnet_lite0", "feature-extraction", {}, 32, DIGITS, False),
    "quadsnet-scratch-digits": ("quadsnet", "scratch", {}, 16, DIGITS, False),
    "lenet5-meta-lesions": ("lenet5", "scratch",
                            dict(head="metadata", metadata_hidden=8,
                                 metadata_schema=dict(sex=["female", "male"], site=["back", "face", "hand"])),
                            32, LESIONS, False),
}
BROKEN = "broken-weights"        # a run folder whose model.safetensors is truncated
UNFINISHED = "unfinished-run"    # a run folder of a training that has not finished


def metrics_json(seed: int, labels: list[str], params: tuple[int, int], epochs: int = 3) -> dict:
    """A metrics.json with the layout train.runner writes (headline, test, history, params, timing)."""
    rng = np.random.default_rng(seed)
    headline = {"accuracy": 0.8 + 0.01 * seed, "balanced_accuracy": 0.79 + 0.01 * seed,
                "precision_macro": 0.8, "sensitivity_macro": 0.79, "specificity_macro": 0.97,
                "f1_macro": 0.78 + 0.01 * seed, "roc_auc": 0.95 + 0.001 * seed}
    history = [{"epoch": e, "train_loss": float(2 / e), "val_loss": float(2.1 / e),
                "val_balanced_accuracy": float(min(1.0, 0.5 + 0.1 * e + rng.random() * 0.01))}
               for e in range(1, epochs + 1)]
    return {"test": {**headline, "label_names": labels, "num_samples": 100,
                     "confusion_matrix": np.eye(len(labels), dtype=int).tolist()},
            "headline": headline, "monitor": "balanced_accuracy", "best_epoch": epochs, "best_val": 0.8,
            "epochs_run": epochs, "stopped_early": False, "params": {"total": params[0], "trainable": params[1]},
            "feature_cache": {"level": None, "reason": "test", "extraction_s": 0.0},
            "timing": {"train_s": 10.0 * (seed + 1), "feature_extraction_s": 0.0, "device": "cpu"},
            "history": history}


def _plot_png(path: Path, colour: tuple[int, int, int]) -> None:
    Image.new("RGB", (64, 48), colour).save(path)


def zoo_of(folder: Path, *runs: Path) -> Path:
    """A weights folder holding copies of these run folders: a fixture that adds models to an app builds its own
    folder this way and never writes into a shared zoo (the medical zoo's tests read every model in it)."""
    folder.mkdir(parents=True, exist_ok=True)
    for run in runs:
        if not (folder / run.name).exists():
            shutil.copytree(run, folder / run.name)
    return folder


def build_tiny_zoo(weights: Path) -> Path:
    """Write the tiny run folders into `weights` (once; a marker file says it is complete)."""
    marker = weights / ".complete"
    if marker.is_file():
        return weights
    weights.mkdir(parents=True, exist_ok=True)
    for seed, (run, (arch, mode, kwargs, size, labels, plots)) in enumerate(TINY_MODELS.items()):
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # feature extraction without pretrained weights warns
            model = zoo.create_model(arch, num_classes=len(labels), mode=mode, **kwargs)
        cfg = dict(model.pretrained_cfg)
        cfg["input_size"] = (cfg["input_size"][0], size, size)  # as train's --img-size records it
        model.pretrained_cfg = cfg
        folder = weights / run
        params = zoo.count_params(model)
        metrics = metrics_json(seed, labels, params)
        zoo.save_pretrained(model.eval(), folder, label_names=labels,
                            dataset="lesions" if labels == LESIONS else "digits",
                            metrics=metrics["headline"], extra_config={"test_metrics": metrics["headline"]})
        (folder / "metrics.json").write_text(json.dumps(metrics))
        if importlib.util.find_spec("onnxruntime") is not None:
            zoo.export_onnx(folder)  # as python -m train does at the end of a run: the app answers from ONNX Runtime
        if plots:
            for name, colour in (("curves.png", (200, 0, 0)), ("confusion_matrix.png", (0, 200, 0)),
                                 ("roc.png", (0, 0, 200)), (RELIABILITY_PLOT, (200, 200, 0))):
                _plot_png(folder / name, colour)
    broken = weights / BROKEN
    shutil.copytree(weights / "lenet5-scratch-digits", broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    unfinished = weights / UNFINISHED
    unfinished.mkdir()
    (unfinished / "run_config.yaml").write_text("arch: lenet5\n")
    (weights / "catalog.json").write_text('{"models": []}\n')
    marker.write_text("ok")
    return weights


# --- inputs ---------------------------------------------------------------------------------------------

def packaged_examples() -> dict[str, Path]:
    """The real medical images that ship inside installed packages."""
    import skimage
    return {"retina": Path(skimage.__file__).parent / "data" / "retina.jpg",
            "ct": Path(get_testdata_file("CT_small.dcm", download=False)),
            "mr": Path(get_testdata_file("MR_small.dcm", download=False))}


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but holds no pixel data (a decompression-bomb shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def bad_inputs(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a phrase the error message must contain), for every input the app must refuse."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[Path, str]] = {}

    def put(name: str, data: bytes, phrase: str) -> None:
        path = folder / name
        path.write_bytes(data)
        files[name] = (path, phrase)

    good_png = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good_png, "PNG")
    put("truncated.png", good_png.getvalue()[: len(good_png.getvalue()) // 2], "truncated or corrupt")
    put("corrupt.jpg", b"\xff\xd8\xff\xe0" + b"\x00garbage" * 20, "corrupt")
    put("empty.png", b"", "empty (0 bytes)")
    put("notes.png", b"These are my notes, not an image.\n" * 5, "text file")
    put("page.jpg", b"<!DOCTYPE html><html><body>Sign in</body></html>", "HTML")
    put("bomb.png", _png_header_only(20_000, 20_000), "pixels")
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    del ds.PixelData
    buffer = io.BytesIO()
    ds.save_as(buffer)
    put("no_pixels.dcm", buffer.getvalue(), "no Pixel Data")
    ds = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm", download=False))
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless  # encapsulated data under a codec nothing installed decodes
    buffer = io.BytesIO()
    ds.save_as(buffer)
    put("jpegls.dcm", buffer.getvalue(), "JPEG-LS")
    return files


def convertible_inputs(folder: Path) -> dict[str, Path]:
    """name -> file, for unusual inputs the app must convert and classify."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    out = {}
    path = folder / "deep16.png"
    Image.fromarray(rng.integers(1000, 4000, (40, 40), dtype=np.uint16)).save(path)
    out["16-bit PNG"] = path
    path = folder / "cmyk.jpg"
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).convert("CMYK").save(path, "JPEG")
    out["CMYK JPEG"] = path
    path = folder / "palette.png"
    palette = Image.fromarray(rng.integers(0, 4, (40, 40), dtype=np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    palette.info["transparency"] = 0
    palette.save(path)
    out["palette with transparency"] = path
    path = folder / "rgba.png"
    Image.fromarray(rng.integers(0, 255, (40, 40, 4), dtype=np.uint8), mode="RGBA").save(path)
    out["RGBA PNG"] = path
    path = folder / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 255, (20, 40, 3), dtype=np.uint8)).save(path, "JPEG", exif=exif.tobytes())
    out["EXIF-rotated JPEG"] = path
    path = folder / "anim.gif"
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    out["animated GIF"] = path
    path = folder / "tiny.bmp"
    Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(path)
    out["BMP"] = path
    path = folder / "scan.tif"
    Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(path)
    out["TIFF"] = path
    raw = Path(get_testdata_file("CT_small.dcm", download=False)).read_bytes()
    path = folder / "no_preamble.dcm"
    path.write_bytes(raw[132:])
    out["DICOM without preamble"] = path
    return out
