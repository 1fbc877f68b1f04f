"""A six-model comparison with Grad-CAM heatmaps: closed-form Grad-CAM on the ONNX feature map (zoo.onnx_cam, what
the app does now) against pytorch-grad-cam on the PyTorch models (what it did before), and the same comparison
without heatmaps, measured side by side in one run.

All three run the app's own loop (zoo.inference.run_models on an ONNX-backend ModelCache, one shared decoded image,
prediction + trust + heatmap + overlay); the PyTorch variant swaps only the heatmap for zoo.gradcam.grad_cam, as
every heatmap was made before. Models are loaded (and PyTorch built for the old path) before timing; the rounds
interleave the three variants so that other processes' load hits them alike; medians are compared. Also printed:
the first heatmap's cost of a freshly loaded model on each path (ONNX: reading the head's weights; PyTorch: building
the model), the maps' agreement, and the load average.

Models: six run folders from --weights (the demo zoo: the first six whose heatmap has the closed form), else six
built here into a temporary folder at small sizes (random weights: speed does not depend on them): LeNet-5 with the
mlp, metadata and Soft-Attention heads at 48 px, MobileNetV1 and ResNet-18 at 96 px, the mlp head on ResNet-18.

    OMP_NUM_THREADS=2 python benchmarks/bench_onnx_cam.py [--weights weights] [--repeats 15] [--image PATH]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import zoo  # noqa: E402
from zoo import gradcam, inference  # noqa: E402
from zoo.catalog import ModelEntry, discover_models  # noqa: E402
from zoo.images import load_image  # noqa: E402

SCHEMA = dict(sex=["female", "male"], site=["back", "face", "hand"])
BUILT = {  # run -> (architecture, create_model kwargs, input size)
    "lenet-mlp": ("lenet5", dict(head="mlp", mlp_hidden=64), 48),
    "lenet-metadata": ("lenet5", dict(head="metadata", metadata_hidden=8, metadata_schema=SCHEMA), 48),
    "lenet-attention": ("lenet5", dict(head="soft_attention", attention_heads=2), 48),
    "mobilenetv1": ("mobilenetv1_100", {}, 96),
    "resnet18": ("resnet18", {}, 96),
    "resnet18-mlp": ("resnet18", dict(head="mlp"), 96),
}


def build_runs(folder: Path) -> list[ModelEntry]:
    """BUILT as exported run folders (each verified, with its Grad-CAM record)."""
    for seed, (run, (arch, kwargs, size)) in enumerate(BUILT.items()):
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = zoo.create_model(arch, num_classes=3, mode="scratch", **kwargs)
        channels = model.pretrained_cfg["input_size"][0]
        model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (channels, size, size)}
        zoo.save_pretrained(model.eval(), folder / run, label_names=["a", "b", "c"], dataset="toy")
        zoo.export_onnx(folder / run)
    return discover_models(folder)


def closed_form_entries(entries: list[ModelEntry], cache: inference.ModelCache, image) -> list[ModelEntry]:
    """The first six entries whose heatmap has the closed form on this cache's backend."""
    chosen = []
    for entry in entries:
        if not entry.available:
            continue
        loaded = cache.get(entry)
        if loaded.backend.cam_head is not None:
            chosen.append(entry)
        else:
            print(f"  {entry.id}: not used ({loaded.backend.cam_reason})")
        if len(chosen) == 6:
            break
    return chosen


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def torch_heatmap(loaded, prediction, class_index=None) -> gradcam.Heatmap:
    """The heatmap as the app made every one before: pytorch-grad-cam on the PyTorch model."""
    return gradcam.Heatmap(gradcam.grad_cam(loaded, prediction, class_index), "torch", "benchmark", loaded.cam_layer)


def run(entries, cache, image, variant: str) -> list[inference.ModelResult]:
    if variant == "none":
        return inference.run_models(image, entries, cache, cam=False)
    if variant == "onnx":
        return inference.run_models(image, entries, cache, cam=True)
    with mock.patch.object(inference, "heatmap", torch_heatmap), \
            mock.patch.object(inference, "onnx_cam_ready", lambda loaded, prediction: False):
        return inference.run_models(image, entries, cache, cam=True)


def first_heatmap_costs(entries, image) -> None:
    """A freshly loaded model's first heatmap, on each path: ONNX reads the head's weights, PyTorch builds the model."""
    for entry in entries:
        onnx_cache = inference.ModelCache(max_models=8)
        onnx_cache.get(entry)
        first = run([entry], onnx_cache, image, "onnx")[0]
        torch_cache = inference.ModelCache(max_models=8)
        torch_cache.get(entry)
        old = run([entry], torch_cache, image, "torch")[0]
        print(f"  {entry.id}: ONNX {first.cam_ms:.0f} ms (load_ms {first.load_ms}), PyTorch "
              f"{old.cam_ms:.0f} ms + building the model {old.load_ms or 0:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, help="a zoo of run folders (default: six built here)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--image", type=Path, help="default: pydicom's CT_small.dcm")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 2)))
    if args.image is None:
        from pydicom.data import get_testdata_file
        args.image = Path(get_testdata_file("CT_small.dcm", download=False))
    image = load_image(args.image).image
    with tempfile.TemporaryDirectory() as tmp:
        print("building six run folders ..." if args.weights is None else f"models from {args.weights}")
        entries = discover_models(args.weights) if args.weights else build_runs(Path(tmp))
        cache = inference.ModelCache(max_models=12)
        entries = closed_form_entries(entries, cache, image)
        print(f"models ({len(entries)}): {', '.join(e.id for e in entries)}; image {args.image.name}")
        print("first heatmap of a freshly loaded model:")
        first_heatmap_costs(entries, image)
        variants = ("none", "onnx", "torch")
        for variant in variants:  # warm-up: PyTorch built, pytorch-grad-cam imported, head weights read
            run(entries, cache, image, variant)
        times = {v: [] for v in variants}
        for _ in range(args.repeats):
            for variant in variants:
                times[variant].append(timed(lambda variant=variant: run(entries, cache, image, variant)))
        medians = {v: statistics.median(t) for v, t in times.items()}
        onnx_maps, torch_maps = run(entries, cache, image, "onnx"), run(entries, cache, image, "torch")
        agreement = [_cosine(a.heatmap, b.heatmap) for a, b in zip(onnx_maps, torch_maps)]
    print(f"six-model comparison, median of {args.repeats} interleaved rounds (ms): without heatmaps "
          f"{medians['none']:.0f}, heatmaps from ONNX {medians['onnx']:.0f}, heatmaps from PyTorch "
          f"{medians['torch']:.0f}")
    print(f"ONNX-CAM vs torch-CAM: {medians['torch'] / medians['onnx']:.2f}x faster (target >= 3x); with ONNX heatmaps "
          f"vs without: {medians['onnx'] / medians['none']:.2f}x (target <= 1.5x)")
    print(f"overlays' lowest cosine ONNX vs PyTorch: {min(agreement):.6f}; load average {os.getloadavg()}")


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


if __name__ == "__main__":
    main()
