"""Batch classification throughput (zoo.batch.classify_batch: each model answers a chunk of images in one ONNX Runtime
forward pass) vs the same images through the comparison one by one, as the app's /compare endpoint runs it
(ui.comparison.compare without Grad-CAM, /compare's default), in-process and, with --http, over HTTP with
gradio_client against the app served on 127.0.0.1.

Models: the demo zoo's run folders in --weights (the test zoo's small digit models, tests/_app_zoo.py, when there is
none) plus, unless --no-224, efficientnet_lite0 at 224 px (offline ImageNet weights, feature extraction) as a run
folder with a verified model.onnx: at most six, /compare's limit. Images: --images digits of scikit-learn's set
written as PNG in class folders. Backend: ONNX Runtime on both sides, the models loaded and warm before timing.
Rounds alternate batch and one-by-one so that load from other processes hits both alike; medians are compared.
Prints images per second of each, the ratio, and the machine's load average (figures are upper bounds on a shared
machine).

    python benchmarks/bench_batch.py [--images 128] [--repeats 3] [--chunk 32] [--weights weights] [--http] [--no-224]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import zoo  # noqa: E402
from ui.comparison import MAX_MODELS, compare  # noqa: E402
from ui.examples import digits  # noqa: E402
from zoo.batch import DEFAULT_CHUNK, classify_batch  # noqa: E402
from zoo.catalog import ModelEntry, discover_models  # noqa: E402
from zoo.images import load_image  # noqa: E402
from zoo.inference import ModelCache  # noqa: E402

from _zoo import demo_or_test_zoo  # noqa: E402  (benchmarks/_zoo.py)


def models(folder: Path, weights: Path, with_224: bool) -> tuple[list[ModelEntry], str]:
    """The demo zoo's models (or the test zoo's), at most MAX_MODELS, and efficientnet_lite0 at 224 px where there
    is room; what they are, in words."""
    demo, note = demo_or_test_zoo(weights, folder, digits_only=True)
    if len(demo) > MAX_MODELS:
        demo, note = demo[:MAX_MODELS], f"{note}: its first {MAX_MODELS} models"
    if with_224 and len(demo) < MAX_MODELS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = zoo.create_model("efficientnet_lite0", num_classes=10, mode="feature-extraction", pretrained=True)
        zoo.export_onnx(zoo.save_pretrained(model.eval(), folder / "lite0-224-fe",
                                            label_names=[str(i) for i in range(10)], dataset="digits"))
        demo += [e for e in discover_models(folder) if e.id == "lite0-224-fe"]
        note += " + efficientnet_lite0 at 224 px"
    return demo, note


def write_images(folder: Path, count: int) -> list[Path]:
    """`count` digits as 8-bit PNG files in class folders (<digit>/<index>.png)."""
    images, targets = digits()
    paths = []
    for i in range(count):
        path = folder / str(int(targets[i])) / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.rint(images[i] * (255 / 16)).astype(np.uint8), mode="L").save(path)
        paths.append(path)
    return paths


def one_by_one_in_process(paths: list[Path], entries: list[ModelEntry], cache: ModelCache) -> float:
    start = time.perf_counter()
    for path in paths:  # as /compare: decode the upload, every model, no Grad-CAM
        compare(load_image(path), entries, cache, cam=False)
    return time.perf_counter() - start


def one_by_one_http(paths: list[Path], ids: list[str], client) -> float:
    from gradio_client import handle_file

    start = time.perf_counter()
    for path in paths:
        client.predict(handle_file(str(path)), ids, None, "", "", 1, api_name="/compare")
    return time.perf_counter() - start


def serve_app(weights_dir: Path, examples: Path):
    """The app on a free local port for these models, and a gradio_client for it."""
    sys.path.insert(0, str(ROOT / "tests"))
    from gradio_client import Client
    from _serve import serve

    import app

    demo, url = serve(app.Settings(weights=weights_dir, examples_dir=examples))
    return demo, Client(url, verbose=False)


def _ratios(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}x" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--weights", default=str(ROOT / "weights"))
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="images per forward pass")
    parser.add_argument("--http", action="store_true", help="also time /compare over HTTP (serves the app)")
    parser.add_argument("--no-224", dest="with_224", action="store_false", help="only the demo (or test) zoo's models")
    args = parser.parse_args()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        import zoo._hub

        zoo._hub.CACHE_DIR = tmp / "zoo-cache"  # ONNX exports and verifications stay in this run's folder
        entries, note = models(tmp / "models", Path(args.weights), args.with_224)
        paths = write_images(tmp / "images", args.images)
        cache = ModelCache(max_models=len(entries))
        classify_batch(paths[:2], entries, cache, progress_bar=False)  # load every model: not timed
        backends = {cache.get(e).backend.name for e in entries}
        compare(load_image(paths[0]), entries, cache, cam=False)
        client = demo = None
        if args.http:
            weights_dir = tmp / "served"
            weights_dir.mkdir()
            for entry in entries:  # the served app's weights folder: copies of the run folders
                shutil.copytree(entry.location, weights_dir / entry.id)
            demo, client = serve_app(weights_dir, tmp / "examples")
            one_by_one_http(paths[:1], [e.id for e in entries], client)  # the app loads its models: not timed
        times: dict[str, list[float]] = {"batch": [], "compare": [], "http": []}
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = classify_batch(tmp / "images", entries, cache, chunk=args.chunk, progress_bar=False)
            times["batch"].append(time.perf_counter() - start)
            assert len(result.rows) == len(paths) * len(entries) and not any(r.result.error for r in result.rows)
            times["compare"].append(one_by_one_in_process(paths, entries, cache))
            if client is not None:
                times["http"].append(one_by_one_http(paths, [e.id for e in entries], client))
        if demo is not None:
            demo.close()
    rate = {k: len(paths) / statistics.median(v) for k, v in times.items() if v}
    # per round, batch and one-by-one ran back to back: each round's ratio is printed too (the load drifts)
    rounds = {k: [t / b for t, b in zip(v, times["batch"])] for k, v in times.items() if v}
    print(f"models: {', '.join(e.id for e in entries)} ({note}); backend {', '.join(sorted(backends))}")
    print(f"images: {len(paths)} digits (8x8 PNG) x {len(entries)} models, {args.repeats} rounds, medians; "
          f"torch threads {__import__('torch').get_num_threads()}")
    print(f"batch (zoo.batch.classify_batch, chunks of {args.chunk}):      {rate['batch']:8.1f} images/s")
    print(f"one by one (ui.comparison.compare, as /compare runs): {rate['compare']:8.1f} images/s "
          f"-> batch is {rate['batch'] / rate['compare']:.2f}x (rounds: {_ratios(rounds['compare'])})")
    if "http" in rate:
        print(f"one by one over HTTP (/compare via gradio_client):   {rate['http']:8.1f} images/s "
              f"-> batch is {rate['batch'] / rate['http']:.2f}x (rounds: {_ratios(rounds['http'])})")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average: {load} (figures are upper bounds on a shared machine)")


if __name__ == "__main__":
    main()
