"""Private mode's speed: each model's forward pass in the browser (onnxruntime-web, WebAssembly, Chromium)
against the server's ONNX Runtime (zoo.load_backend, 2 intra-op threads), batch 1, same ONNX file.

Prints per model the median forward time of each and the ratio browser / server, then compares every model on
each image in the page and through /compare (at most six at a time): the parity of their answers (probabilities,
top-1, prediction set, OOD flag) and each one's whole latency (preprocessing + forward + postprocessing).
The browser gets threads when the page is cross-origin isolated (the app sends the headers), at most 4.

    python benchmarks/bench_private.py [--weights weights] [--runs 30] [--image A.jpg B.dcm ...] [--threads 1]

Without run folders on offer in --weights (no model.onnx), it builds the test suite's tiny zoo (random
weights: the timing does not depend on what a model knows) in a temporary folder.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402

import app  # noqa: E402
import zoo  # noqa: E402
from _private_zoo import build_private_zoo  # noqa: E402
from _serve import CHROMIUM, CHROMIUM_ARGS, serve  # noqa: E402
from ui.private import PrivateOffer  # noqa: E402


def server_forward_ms(folder: Path, runs: int) -> float:
    backend = zoo.load_backend(folder, "onnx", export_missing=False)
    c, h, w = backend.io.input_size
    x = np.random.default_rng(0).uniform(-1, 1, (1, c, h, w)).astype(np.float32)
    backend.predict(x)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        backend.predict(x)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=ROOT / "weights")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--image", type=Path, nargs="+", default=None,
                        help="images to compare on (default: scikit-image's retina.jpg)")
    parser.add_argument("--threads", type=int, default=None, help="browser threads (default: up to 4 when isolated)")
    args = parser.parse_args()
    weights = args.weights
    if not PrivateOffer(weights).listing()["models"]:
        weights = build_private_zoo(Path(tempfile.mkdtemp(prefix="bench-private-")) / "zoo")
        print(f"no model on offer in {args.weights}: using the test suite's tiny zoo in {weights}")
    import skimage

    images = args.image or [Path(skimage.__file__).parent / "data" / "retina.jpg"]
    settings = app.Settings(weights=weights, examples_dir=Path(tempfile.mkdtemp(prefix="bench-examples-")))
    demo, url = serve(settings)
    from gradio_client import Client, handle_file
    from playwright.sync_api import sync_playwright

    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page()
        page.set_default_timeout(300_000)
        page.goto(url + "private/" + (f"?threads={args.threads}" if args.threads else ""))
        page.wait_for_function("document.body.dataset.state === 'ready'")
        print(page.locator("#runtime").inner_text())
        ids = page.evaluate("window.zooPrivate.listing.models.map(m => m.id)")
        print(f"\nforward pass, batch 1, median of {args.runs}")
        print(f"{'model':32s} {'browser ms':>11s} {'server ms':>10s} {'browser/server':>15s}")
        ratios = []
        for model in ids:
            browser_ms = page.evaluate("([id, runs]) => window.zooPrivate.timeForward(id, runs)", [model, args.runs])
            server_ms = server_forward_ms(weights / model, args.runs)
            ratios.append(browser_ms / server_ms)
            print(f"{model:32s} {browser_ms:11.2f} {server_ms:10.2f} {browser_ms / server_ms:14.2f}x")
        print(f"median ratio browser/server: {statistics.median(ratios):.2f}x")

        groups = [ids[i:i + 6] for i in range(0, len(ids), 6)]
        if len(groups[-1]) < 2:  # a comparison needs two models
            groups[-1] = ids[-2:]
        results = {}
        for path in images:
            page.locator("#image").set_input_files(str(path))
            for chosen in groups:
                for box in page.locator("#models input").all():
                    box.set_checked(box.get_attribute("value") in chosen)
                page.evaluate("document.body.dataset.state = 'ready'")
                page.locator("#compare").click()
                page.wait_for_function("document.body.dataset.state === 'done'")
                results[(path, tuple(chosen))] = page.evaluate("window.zooPrivate.results")
        browser.close()
    client = Client(url, verbose=False)
    worst, mismatches = 0.0, []
    print(f"\nparity, page vs /compare (calibrated probabilities where the model has a temperature, prediction set, "
          f"OOD flag), {len(ids)} models x {len(images)} images")
    for (path, chosen), mine in results.items():
        records = client.predict(image=handle_file(str(path)), models=list(chosen), api_name="/compare")
        for record in records:
            ours = mine[record["model"]]
            key = "calibrated_top_k" if record.get("calibrated_top_k") else "top_k"
            theirs_p = {p["label"]: p["probability"] for p in record[key]}
            ours_p = {p["label"]: p["probability"] for p in ours[key]}
            worst = max([worst] + [abs(ours_p[k] - v) for k, v in theirs_p.items() if k in ours_p])
            same = (ours[key][0]["label"] == record[key][0]["label"]
                    and ours.get("prediction_set") == record.get("prediction_set")
                    and (ours.get("ood") or {}).get("flagged") == (record.get("ood") or {}).get("flagged"))
            if not same:
                mismatches.append(f"{record['model']} on {path.name}")
            print(f"  {record['model']:44s} {path.name:32s} top-1 {record[key][0]['label']:>12s} "
                  f"{'same' if same else 'DIFFERENT'}; OOD {(record.get('ood') or {}).get('flagged')}; "
                  f"page {ours['latency_ms']:.1f} ms, /compare {record['latency_ms']:.1f} ms")
    print(f"largest |probability difference| {worst:.2e} (tolerance 1e-3); top-1, set and OOD flag identical: "
          f"{'all' if not mismatches else 'not for ' + ', '.join(mismatches)}")
    demo.close()


if __name__ == "__main__":
    main()
