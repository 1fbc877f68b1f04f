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

ONNX part (--part onnx, or all): the app's per-model prediction on the ONNX Runtime backend
(zoo.load_backend: to_model_mode + timm's eval transform + ONNX Runtime + softmax/top-k) against a bare timm
eager forward of the same weights on the same preprocessed tensor, interleaved in one loop, over resnet18,
efficientnet_lite0 and densenet121 at 224 px (run folders with a verified model.onnx, in a temporary folder)
and the run folders given with --runs. Prints medians, the speed-up (bare / ONNX app) and the top-1
agreement of the two on the images and the reference inputs. Target: median speed-up >= 2.0, none below 1.2.

    python benchmarks/bench_app_predict.py [--repeats 30] [--threads 2] [--weights weights]
    python benchmarks/bench_app_predict.py --part onnx [--runs weights/RUN ...]
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
from zoo.onnx_export import reference_inputs  # noqa: E402


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


def onnx_models(folder: Path) -> list[Path]:
    """resnet18, efficientnet_lite0 (ImageNet, feature extraction) and densenet121 at 224 px, as run folders
    with a verified model.onnx, as `python -m train` leaves them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = {"resnet18-224": zoo.create_model("resnet18", num_classes=10),
                  "efficientnet_lite0-224-fe": zoo.create_model("efficientnet_lite0", num_classes=10,
                                                                mode="feature-extraction", pretrained=True),
                  "densenet121-224": zoo.create_model("densenet121", num_classes=10)}
    runs = []
    for name, model in models.items():
        run = zoo.save_pretrained(model.eval(), folder / name, label_names=[str(i) for i in range(10)], dataset="none")
        zoo.export_onnx(run)
        runs.append(run)
    return runs


def onnx_app_predict(backend, transform, image, top_k: int = inference.DEFAULT_TOP_K):
    """The app's prediction on the ONNX backend: preprocess, forward, softmax and top-k."""
    from zoo.images import to_model_mode

    x = transform(to_model_mode(image, backend.io.input_size[0])).unsqueeze(0)  # (1, C, H, W)
    probs = backend.predict(x)[0].softmax(dim=-1)[0]  # (1, K) -> (K,)
    values, indices = probs.topk(min(top_k, probs.numel()))
    return [(backend.label_names[i], float(v)) for v, i in zip(values.tolist(), indices.tolist())]


def bench_onnx(run: Path, pictures: dict, repeats: int, threads: int) -> list[tuple]:
    """Per image: median ms of the ONNX app prediction and of the bare eager forward, interleaved; agreement."""
    backend = zoo.load_backend(run, "onnx", threads=threads)
    if backend.name != "onnx":
        print(f"{run.name}: no ONNX backend ({backend.fallback_reason}); skipped")
        return []
    transform = inference.build_transform(backend.data_config)
    model = backend.torch_model()
    rows = []
    for name, image in pictures.items():
        from zoo.images import to_model_mode

        x = transform(to_model_mode(image, backend.io.input_size[0])).unsqueeze(0)
        for _ in range(3):  # warm-up
            onnx_app_predict(backend, transform, image)
            with torch.inference_mode():
                model(x)
        app, pre, bare = [], [], []
        for _ in range(repeats):
            start = time.perf_counter()
            onnx_app_predict(backend, transform, image)
            app.append(time.perf_counter() - start)
            start = time.perf_counter()
            transform(to_model_mode(image, backend.io.input_size[0]))
            pre.append(time.perf_counter() - start)
            start = time.perf_counter()
            with torch.inference_mode():
                model(x)
            bare.append(time.perf_counter() - start)
        rows.append((run.name, name, 1000 * statistics.median(app), 1000 * statistics.median(pre),
                     1000 * statistics.median(bare)))
    inputs, _ = reference_inputs(model, num_random=16)
    inputs = torch.cat([inputs] + [transform(to_model_mode(i, backend.io.input_size[0])).unsqueeze(0)
                                   for i in pictures.values()])
    with torch.inference_mode():
        reference = model(inputs).numpy()
    got = backend.predict(inputs)[0].numpy()
    agreement = float((reference.argmax(1) == got.argmax(1)).mean())
    delta = float(np.abs(reference - got).max())
    return [(*row, agreement, delta, len(inputs)) for row in rows]


def main_onnx(args, folder: Path, pictures: dict) -> None:
    import onnxruntime

    runs = onnx_models(folder) + list(args.runs)
    print(f"\nONNX Runtime {onnxruntime.__version__} ({args.threads} intra-op threads) vs timm eager "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads); medians of {args.repeats} interleaved runs")
    print(f"{'model':34} {'image':>17} {'ONNX app ms':>12} {'(preproc)':>9} {'bare eager ms':>14} {'speed-up':>9} "
          f"{'top-1 agree':>12} {'max |Δ logit|':>14}")
    rows = []
    for run in runs:
        for model, image, app, pre, bare, agreement, delta, n in bench_onnx(Path(run), pictures, args.repeats,
                                                                          args.threads):
            rows.append((bare / app, model, image, agreement))
            print(f"{model:34} {image:>17} {app:12.2f} {pre:9.2f} {bare:14.2f} {bare / app:8.2f}x {agreement:11.0%} "
                  f"{delta:14.2g}   (agreement on {n} inputs)", flush=True)
    if rows:
        worst = min(rows)
        print(f"\nspeed-up of the ONNX app prediction over bare timm eager (target: median >= 2.0, none < 1.2): "
              f"median {statistics.median(r[0] for r in rows):.2f}x, slowest {worst[0]:.2f}x ({worst[1]}, {worst[2]}); "
              f"top-1 agreement {min(r[3] for r in rows):.0%} at worst")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=ROOT / "weights")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=min(2, torch.get_num_threads()))
    parser.add_argument("--part", choices=("app", "onnx", "all"), default="all",
                        help="app: the PyTorch app vs bare forward; onnx: the ONNX backend vs bare timm eager")
    parser.add_argument("--runs", type=Path, nargs="*", default=[],
                        help="run folders to add to the ONNX comparison (each needs, or gets once in the cache, "
                             "a verified model.onnx)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.part in ("onnx", "all"):
        with tempfile.TemporaryDirectory() as tmp:
            pictures = images()
            main_onnx(args, Path(tmp), {k: v for k, v in pictures.items() if not k.startswith("digit")})
    if args.part == "onnx":
        return
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
