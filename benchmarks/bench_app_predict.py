"""The app's per-model prediction time vs a bare timm forward of the same model, and Grad-CAM's extra time.

App: `zoo.inference.predict` on an already decoded image (the file is decoded once per comparison and
shared by every model): to_model_mode + timm's eval transform from the model's config + forward under
inference_mode + softmax/top-k. Bare: `model(x)` under inference_mode on the tensor the app's
preprocessing made, same model object, same thread count. Both run interleaved in the same loop so that
load from other processes hits them alike; medians are compared. Target: app <= 1.15x bare.
Grad-CAM (map + overlay) is timed separately; it is not part of the prediction time.

Models: the demo zoo's run folders in weights/ (at the sizes they were trained at), plus
efficientnet_lite0 (offline ImageNet weights) and resnet18 at their default 224 px, saved as run folders
in a temporary folder. Images: a digit from the demo data (8x8), pydicom's CT_small.dcm (128x128) and
scikit-image's retina.jpg (1411x1411).

    python benchmarks/bench_app_predict.py [--repeats 30] [--threads 2] [--weights weights]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import zoo  # noqa: E402
from zoo import inference  # noqa: E402
from zoo.catalog import ModelEntry, discover_models  # noqa: E402
from zoo.images import load_image  # noqa: E402


def extra_models(folder: Path) -> list[ModelEntry]:
    """224-px models as run folders: efficientnet_lite0 (ImageNet, feature extraction) and resnet18."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = {"lite0-224-fe": zoo.create_model("efficientnet_lite0", num_classes=10, mode="feature-extraction",
                                                   pretrained=True),
                  "resnet18-224-scratch": zoo.create_model("resnet18", num_classes=10)}
    for name, model in models.items():
        zoo.save_pretrained(model.eval(), folder / name, label_names=[str(i) for i in range(10)], dataset="none")
    return [e for e in discover_models(folder) if e.available]


def images() -> dict[str, object]:
    import skimage
    from pydicom.data import get_testdata_file
    from sklearn.datasets import load_digits
    from PIL import Image

    digit = Image.fromarray(np.rint(load_digits().images[1090] * (255 / 16)).astype(np.uint8), mode="L")
    return {"digit 8x8": digit,
            "CT_small 128x128": load_image(get_testdata_file("CT_small.dcm", download=False)).image,
            "retina 1411x1411": load_image(Path(skimage.__file__).parent / "data" / "retina.jpg").image}


def bench(loaded: inference.LoadedModel, image, repeats: int) -> dict[str, float]:
    """Median ms of the app's predict, its preprocessing alone, the bare forward and Grad-CAM, interleaved."""
    x = inference.preprocess(loaded, image)
    model = loaded.model
    for _ in range(3):  # warm-up
        inference.predict(loaded, image)
        with torch.inference_mode():
            model(x)
    app, pre, bare = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        inference.predict(loaded, image)
        app.append(time.perf_counter() - start)
        start = time.perf_counter()
        inference.preprocess(loaded, image)
        pre.append(time.perf_counter() - start)
        start = time.perf_counter()
        with torch.inference_mode():
            model(x)
        bare.append(time.perf_counter() - start)
    prediction = inference.predict(loaded, image)
    inference.cam_overlay(loaded, prediction, inference.grad_cam(loaded, prediction))  # warm-up
    cam = []
    for _ in range(max(3, repeats // 3)):
        start = time.perf_counter()
        inference.cam_overlay(loaded, prediction, inference.grad_cam(loaded, prediction))
        cam.append(time.perf_counter() - start)
    return {k: 1000 * statistics.median(v) for k, v in (("app", app), ("pre", pre), ("bare", bare), ("cam", cam))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=ROOT / "weights")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=min(2, torch.get_num_threads()))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache = inference.ModelCache(max_models=16)
    with tempfile.TemporaryDirectory() as tmp:
        entries = [e for e in discover_models(args.weights) if e.available] + extra_models(Path(tmp))
        pictures = images()
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
              f"medians of {args.repeats} interleaved runs")
        print(f"{'model':46} {'input':>9} {'image':>17} {'app ms':>8} {'(preproc)':>9} {'bare ms':>8} "
              f"{'ratio':>6} {'excl. preproc':>13} {'Grad-CAM ms':>12}")
        rows = []
        for entry in entries:
            loaded = cache.get(entry)
            size = "x".join(map(str, loaded.data_config["input_size"]))
            for name, image in pictures.items():
                t = bench(loaded, image, args.repeats)
                rows.append((t["app"] / t["bare"], (t["app"] - t["pre"]) / t["bare"], t["bare"], entry.id, name))
                print(f"{entry.id:46} {size:>9} {name:>17} {t['app']:8.2f} {t['pre']:9.2f} {t['bare']:8.2f} "
                      f"{t['app'] / t['bare']:6.2f} {(t['app'] - t['pre']) / t['bare']:13.2f} {t['cam']:12.1f}",
                      flush=True)
    worst = max(rows)
    print(f"\napp/bare (target <= 1.15): median {statistics.median(r[0] for r in rows):.2f}, worst {worst[0]:.2f} "
          f"({worst[3]}, {worst[4]})")
    print(f"app/bare without the preprocessing (the app's own overhead): median "
          f"{statistics.median(r[1] for r in rows):.2f}, worst {max(r[1] for r in rows):.2f}")
    heavy = [r for r in rows if r[2] >= 10.0]
    if heavy:
        print(f"where the forward takes >= 10 ms: app/bare median {statistics.median(r[0] for r in heavy):.2f}, "
              f"worst {max(heavy)[0]:.2f}")


if __name__ == "__main__":
    main()
