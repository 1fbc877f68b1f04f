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
(zoo.inference.predict on a model loaded with backend "onnx": to_model_mode + timm's eval transform + ONNX
Runtime + softmax/top-k) against a bare timm eager forward of the same weights on the same preprocessed tensor,
over the demo zoo's run folders (--weights; the test zoo's four small models, tests/_app_zoo.py, when there is
none) and resnet18, efficientnet_lite0 and densenet121 at 224 px (run folders with a verified model.onnx in a
temporary folder), plus those given with --runs. Images: CT_small (128 px), retina.jpg (1411 px) and the app's first
example, a packaged chest X-ray (1776x1416). Every (model, image) pair is timed in each round and the rounds
repeated, so load from other processes hits them alike. Prints medians, the speed-up (bare / ONNX app) with and
without the preprocessing, the top-1 agreement of the two on each run's test split (a digits run's split.json
re-read; an imported classifier's packaged images; reference inputs for the 224-px models) and the images, and the
machine's load average. Target: median speed-up >= 2.0, none below 1.2. Then a full comparison of six of these
models on a 224x224 image (ui.comparison.compare, as /compare runs it) on the ONNX backend and on PyTorch, without
and with Grad-CAM.

    python benchmarks/bench_app_predict.py [--repeats 30] [--threads 2] [--weights weights]
    python benchmarks/bench_app_predict.py --part onnx [--runs weights/RUN ...]
"""
from __future__ import annotations

import argparse
import json
import os
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
from ui.comparison import compare  # noqa: E402
from zoo import inference  # noqa: E402
from zoo.catalog import ModelEntry, discover_models  # noqa: E402
from zoo.images import LoadedImage, load_image  # noqa: E402
from zoo.onnx_export import reference_inputs  # noqa: E402
from zoo.run_layout import SPLIT_NAME  # noqa: E402

from _zoo import demo_or_test_zoo  # noqa: E402  (benchmarks/_zoo.py)


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

    from zoo.assets import MEDICAL_CLASSIFIERS

    digit = Image.fromarray(np.rint(load_digits().images[1090] * (255 / 16)).astype(np.uint8), mode="L")
    pictures = {"digit 8x8": digit,
                "CT_small 128x128": load_image(get_testdata_file("CT_small.dcm", download=False)).image,
                "retina 1411x1411": load_image(Path(skimage.__file__).parent / "data" / "retina.jpg").image}
    try:  # the app's own first example: a packaged chest X-ray
        xray = load_image(MEDICAL_CLASSIFIERS["pneumonia"].images()[0][0]).image
        pictures["chest X-ray {}x{}".format(*xray.size)] = xray
    except zoo.ZooError as e:
        print(f"no packaged chest X-ray: {e}")
    return pictures


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


def onnx_zoo(folder: Path, weights: Path) -> tuple[list[ModelEntry], str]:
    """The demo zoo's run folders in `weights` (each with, or given once in the zoo's cache, a verified model.onnx),
    and resnet18, efficientnet_lite0 (ImageNet, feature extraction) and densenet121 at 224 px as run folders with a
    verified model.onnx in `folder`. Without a demo zoo, the test zoo's four small models (tests/_app_zoo.py) stand
    in, and the second value says so."""
    demo, note = demo_or_test_zoo(weights, folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = {"resnet18-224": zoo.create_model("resnet18", num_classes=10),
                  "efficientnet_lite0-224-fe": zoo.create_model("efficientnet_lite0", num_classes=10,
                                                                mode="feature-extraction", pretrained=True),
                  "densenet121-224": zoo.create_model("densenet121", num_classes=10)}
    for name, model in models.items():
        zoo.export_onnx(zoo.save_pretrained(model.eval(), folder / name, label_names=[str(i) for i in range(10)],
                                            dataset="none"))
    entries = {e.id: e for e in discover_models(folder)}
    return demo + [entries[name] for name in models], note


def test_split(entry: ModelEntry, eager) -> tuple[torch.Tensor, str] | None:
    """(the run's test images as the model's input batch, what they are): a `python -m train` run's test split
    (split.json) re-read through train's own evaluation transform, or an imported classifier's packaged images;
    None for a run whose data cannot be had here."""
    run = Path(entry.run_dir)
    package = (zoo.ZooConfig.from_model(eager).extra.get("source") or {}).get("package")
    if package:
        from zoo.assets import MEDICAL_CLASSIFIERS
        from zoo.keras_import import packaged_inputs

        source = next((c for c in MEDICAL_CLASSIFIERS.values() if c.package == package), None)
        if source is not None:
            images, batch = packaged_inputs(eager, source)
            return batch, f"its {len(images)} packaged test images"
    if not (run / SPLIT_NAME).is_file():
        return None
    from train.augment import eval_transform
    from train.data import ImageDataset, load_source

    split = json.loads((run / SPLIT_NAME).read_text())
    try:
        source = load_source(split["data"])
    except Exception as e:  # a data set that is not on this machine
        print(f"{entry.id}: test split not available ({e})")
        return None
    by_key = {s.key: s for s in source.samples}
    samples = [by_key[key] for key, _ in split["test"]]
    dataset = ImageDataset(source, samples, eval_transform(zoo.resolve_data_config(eager)),
                           eager.pretrained_cfg["input_size"][0])
    return torch.stack([dataset[i][0] for i in range(len(dataset))]), f"its {len(samples)} test images"


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _load() -> str:
    return "load average " + " ".join(f"{v:.1f}" for v in os.getloadavg())


def bench_onnx(entries: list[ModelEntry], pictures: dict, repeats: int) -> list[tuple]:
    """Per (model, image): median ms of the app's prediction on the ONNX backend (zoo.inference.predict:
    preprocess + ONNX Runtime + softmax/top-k), its preprocessing alone and a bare timm eager forward of the
    same weights on the same tensor; every pair measured in each round, rounds repeated (interleaved)."""
    loaded = [inference.load_model(e, "onnx") for e in entries]
    pairs = []
    for m in loaded:
        if m.backend.name != "onnx":
            print(f"{m.entry.id}: no ONNX backend ({m.backend.fallback_reason}); skipped")
            continue
        eager = zoo.load_pretrained(m.entry.location)  # bare timm eager: its own model object, not the app's
        for name, image in pictures.items():
            pairs.append((m, eager, name, image, inference.preprocess(m, image)))
    times = {id(p): ([], [], []) for p in pairs}

    def bare(eager, x):
        with torch.inference_mode():
            eager(x)

    for _ in range(3):  # warm-up
        for m, eager, _, image, x in pairs:
            inference.predict(m, image)
            bare(eager, x)
    for _ in range(repeats):
        for pair in pairs:
            m, eager, _, image, x = pair
            app, pre, eager_ms = times[id(pair)]
            app.append(_timed(lambda: inference.predict(m, image)))
            pre.append(_timed(lambda: inference.preprocess(m, image)))
            eager_ms.append(_timed(lambda: bare(eager, x)))
    rows = []
    for pair in pairs:
        m, eager, name, image, x = pair
        app, pre, eager_ms = (1000 * statistics.median(t) for t in times[id(pair)])
        rows.append((m.entry.id, name, app, pre, eager_ms, *_agreement(m, eager, pictures)))
    return rows


def _agreement(loaded: inference.LoadedModel, eager, pictures: dict) -> tuple[float, float, int, str]:
    """Top-1 agreement and max |Δ logit| of the ONNX backend vs timm eager on the run's test split (or, without
    one, reference inputs) and the benchmark's images."""
    test = test_split(loaded.entry, eager) if loaded.entry.run_dir else None
    inputs, what = test if test is not None else (reference_inputs(eager, num_random=16)[0], "reference inputs")
    inputs = torch.cat([inputs] + [inference.preprocess(loaded, i) for i in pictures.values()])
    with torch.inference_mode():
        reference = torch.cat([eager(batch) for batch in inputs.split(64)]).numpy()
    got = np.concatenate([loaded.backend.predict(batch, None)[0].numpy() for batch in inputs.split(64)])
    return (float((reference.argmax(1) == got.argmax(1)).mean()), float(np.abs(reference - got).max()), len(inputs),
            what)


def bench_comparison(entries: list[ModelEntry], image, rounds: int) -> None:
    """A full comparison of the models on one image (ui.comparison.compare, as /compare runs it), on the ONNX
    backend and on PyTorch, without and with Grad-CAM; interleaved rounds, medians, and their ratio."""
    caches = {name: inference.ModelCache(max_models=16, backend=name) for name in ("onnx", "torch")}
    for cam in (False, True):
        times = {name: [] for name in caches}
        for _ in range(2):  # warm-up: loads, and for Grad-CAM the PyTorch model the ONNX backend builds then
            for cache in caches.values():
                compare(image, entries, cache, cam=cam)
        for _ in range(rounds):
            for name, cache in caches.items():
                times[name].append(_timed(lambda: compare(image, entries, cache, cam=cam)))
        onnx_ms, torch_ms = (1000 * statistics.median(times[n]) for n in ("onnx", "torch"))
        backends = sorted({r.backend for r in compare(image, entries, caches["onnx"], cam=False).results})
        print(f"{len(entries)}-model comparison, {'with' if cam else 'without'} Grad-CAM: ONNX backend {onnx_ms:.0f} ms "
              f"(answered by {', '.join(backends)}), PyTorch backend {torch_ms:.0f} ms: {torch_ms / onnx_ms:.2f}x "
              f"faster; medians of {rounds} interleaved rounds; {_load()}", flush=True)


def main_onnx(args, folder: Path, pictures: dict) -> None:
    import onnxruntime

    print(f"{_load()} at the start")
    entries, note = onnx_zoo(folder, args.weights)
    entries += [e for run in args.runs for e in discover_models(Path(run).parent)
                if e.run_dir and Path(e.run_dir) == Path(run)]
    print(f"models: {note}, and resnet18, efficientnet_lite0, densenet121 at 224 px")
    print(f"\nONNX Runtime {onnxruntime.__version__} ({args.threads} intra-op threads) vs timm eager "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads); medians of {args.repeats} interleaved "
          f"rounds (every model and image in each round)")
    rows = bench_onnx(entries, pictures, args.repeats)
    print(f"{'model':44} {'image':>22} {'ONNX app ms':>12} {'(preproc)':>9} {'bare eager ms':>14} {'speed-up':>9} "
          f"{'top-1 agree':>12} {'max |Δ logit|':>14}")
    for model, image, app, pre, bare, agreement, delta, n, what in rows:
        print(f"{model:44} {image:>22} {app:12.2f} {pre:9.2f} {bare:14.2f} {bare / app:8.2f}x {agreement:11.0%} "
              f"{delta:14.2g}   (agreement on {n} inputs: {what} and the images)")
    speedups = sorted((bare / app, model, image) for model, image, app, _, bare, *_ in rows)
    print(f"\nspeed-up of the app's ONNX prediction (preprocessing included) over a bare timm eager forward "
          f"(target: median >= 2.0, none below 1.2): median {statistics.median(s[0] for s in speedups):.2f}x, "
          f"slowest {speedups[0][0]:.2f}x ({speedups[0][1]}, {speedups[0][2]}); top-1 agreement "
          f"{min(r[5] for r in rows):.0%} at worst; {_load()}")
    forward = sorted((bare / (app - pre), model, image) for model, image, app, pre, bare, *_ in rows)
    print(f"the same without the app's preprocessing (ONNX Runtime + softmax/top-k vs eager forward): median "
          f"{statistics.median(s[0] for s in forward):.2f}x, slowest {forward[0][0]:.2f}x ({forward[0][1]}, "
          f"{forward[0][2]})")
    from PIL import Image
    square = pictures["retina 1411x1411"].resize((224, 224), Image.Resampling.LANCZOS)
    six = [e for e in entries if e.id != "lenet5-meta-lesions"][:6]
    print(f"\nfull comparison on a 224x224 image: {', '.join(e.id for e in six)}")
    bench_comparison(six, LoadedImage(square), max(5, args.repeats // 3))


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
    cache = inference.ModelCache(max_models=16, backend="torch")  # the app's own overhead on PyTorch
    with tempfile.TemporaryDirectory() as tmp:
        entries = [e for e in discover_models(args.weights) if e.available] + extra_models(Path(tmp))
        pictures = images()
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
              f"medians of {args.repeats} interleaved runs")
        print(f"{'model':46} {'input':>9} {'image':>22} {'app ms':>8} {'(preproc)':>9} {'bare ms':>8} "
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
