"""The app under load: 20 concurrent clients x 10 six-model comparisons each through the /compare API, with Grad-CAM
heatmaps from the ONNX feature map (zoo.onnx_cam, what the app does now), with heatmaps from pytorch-grad-cam on the
PyTorch models (what it did before), and without heatmaps.

Each variant runs in its own app server (a fresh interpreter: `--serve`), so that its peak RSS (the kernel's VmHWM
of that process, read at the end) is its own. The PyTorch variant swaps only the heatmap for zoo.gradcam.grad_cam,
as bench_onnx_cam.py does: predictions still come from ONNX Runtime, as they did before. One warm-up comparison per
server loads the models (and, for the PyTorch variant, builds them) before the clock starts. Clients are threads of
this process, each with its own gradio_client.Client, all started together; each times its calls end to end
(upload, queue, comparison, heatmap PNGs). Prints p50/p90/max latency, the wall time, the peak RSS, and the load
average beside them: on a shared machine the figures are upper bounds.

Models: six run folders from --weights whose heatmap has the closed form, else the six bench_onnx_cam.py builds
(random weights at small sizes: speed does not depend on the weights).

    OMP_NUM_THREADS=2 python benchmarks/bench_app_load.py [--weights weights] [--clients 20] [--calls 10]
        [--variants none,onnx,torch] [--image PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

CLIENT_TIMEOUT_S = 300  # httpx's default (5 s) times calls out while 20 clients queue for the app's workers
VARIANTS = {"none": "no heatmaps", "onnx": "heatmaps from the ONNX feature map (closed form)",
            "torch": "heatmaps from pytorch-grad-cam on the PyTorch models (before)"}


def serve(weights: Path, variant: str) -> None:
    """The app on a free port (printed as one JSON line), until stdin closes; for "torch" every heatmap comes from
    pytorch-grad-cam."""
    from unittest import mock

    import app
    from _serve import serve as serve_app
    from bench_onnx_cam import torch_heatmap
    from zoo import inference

    patches = ([mock.patch.object(inference, "heatmap", torch_heatmap),
                mock.patch.object(inference, "onnx_cam_ready", lambda loaded, prediction: False)]
               if variant == "torch" else [])
    for patch in patches:
        patch.start()
    settings = app.Settings(weights=weights, examples_dir=Path(tempfile.mkdtemp(prefix="bench-load-examples-")))
    demo, url = serve_app(settings)
    print(json.dumps({"url": url, "pid": os.getpid()}), flush=True)
    sys.stdin.read()  # the parent closes it when done
    demo.close()


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load_run(url: str, image: Path, models: list[str], heatmaps: bool, clients: int, calls: int) -> dict:
    """`clients` threads x `calls` comparisons each: every call's latency (s), the failures and the wall time."""
    from gradio_client import Client, handle_file

    latencies, failures, lock = [], [], threading.Lock()
    start_line = threading.Barrier(clients)

    def client_loop() -> None:
        client = Client(url, verbose=False, httpx_kwargs={"timeout": CLIENT_TIMEOUT_S})
        start_line.wait()
        for _ in range(calls):
            start = time.perf_counter()
            try:
                records = client.predict(image=handle_file(str(image)), models=models, heatmaps=heatmaps,
                                         api_name="/compare")
                problems = [r["error"] or (heatmaps and r.get("heatmap") is None and r.get("cam_error"))
                            for r in records]
                if any(problems):
                    raise RuntimeError(str([p for p in problems if p])[:300])
            except Exception as e:  # counted and shown, never silently dropped
                with lock:
                    failures.append(f"{type(e).__name__}: {e}"[:300])
                continue
            with lock:
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    wall = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"latencies": latencies, "failures": failures, "wall_s": time.perf_counter() - wall}


def measure(weights: Path, variant: str, image: Path, models: list[str], clients: int, calls: int) -> dict:
    """One variant in its own server: the load run's figures and the server's peak RSS."""
    from gradio_client import Client, handle_file

    server = subprocess.Popen([sys.executable, __file__, "--serve", str(weights), variant], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = ""
        while not line.startswith("{"):
            line = server.stdout.readline()
            if not line and server.poll() is not None:
                raise RuntimeError(f"the {variant} server exited with {server.returncode}")
        info = json.loads(line)
        warm = time.perf_counter()
        Client(info["url"], verbose=False).predict(image=handle_file(str(image)), models=models,
                                                   heatmaps=variant != "none", api_name="/compare")
        warm_s = time.perf_counter() - warm
        result = load_run(info["url"], image, models, variant != "none", clients, calls)
        result.update(peak_rss_mb=peak_rss_mb(info["pid"]), warm_s=warm_s, load=os.getloadavg())
        return result
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def closed_form_models(weights: Path, image: Path) -> list[str]:
    """Six available models of `weights` whose heatmap has the closed form (bench_onnx_cam's choice)."""
    from bench_onnx_cam import closed_form_entries
    from zoo import inference
    from zoo.catalog import discover_models
    from zoo.images import load_image

    entries = closed_form_entries(discover_models(weights), inference.ModelCache(max_models=12),
                                  load_image(image).image)
    return [e.id for e in entries]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", nargs=2, metavar=("WEIGHTS", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help="a zoo of run folders (default: six built here)")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--calls", type=int, default=10, help="comparisons per client")
    parser.add_argument("--variants", default="none,onnx,torch")
    parser.add_argument("--image", type=Path, help="default: pydicom's CT_small.dcm")
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), args.serve[1])
        return
    if args.image is None:
        from pydicom.data import get_testdata_file
        args.image = Path(get_testdata_file("CT_small.dcm", download=False))
    with tempfile.TemporaryDirectory() as tmp:
        if args.weights is None:
            from bench_onnx_cam import build_runs
            print("building six run folders ...", flush=True)
            build_runs(Path(tmp))
        weights = args.weights or Path(tmp)
        models = closed_form_models(weights, args.image)
        print(f"models ({len(models)}): {', '.join(models)}; image {args.image.name}; {args.clients} clients x "
              f"{args.calls} comparisons; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}", flush=True)
        for variant in args.variants.split(","):
            r = measure(weights, variant, args.image, models, args.clients, args.calls)
            lat = sorted(r["latencies"])
            p = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan"))
            print(f"{variant:>5} ({VARIANTS[variant]}): p50 {statistics.median(lat) if lat else float('nan'):.2f} s, "
                  f"p90 {p(0.9):.2f} s, max {max(lat, default=float('nan')):.2f} s over {len(lat)} comparisons "
                  f"({len(r['failures'])} failed{': ' + r['failures'][0] if r['failures'] else ''}); wall "
                  f"{r['wall_s']:.1f} s; server peak RSS {r['peak_rss_mb']:.0f} MB; warm-up {r['warm_s']:.1f} s; "
                  f"load average {tuple(round(v, 2) for v in r['load'])}", flush=True)


if __name__ == "__main__":
    main()
