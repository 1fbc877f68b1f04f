"""Cold start: from `python app.py` in a fresh process to the first /compare answer, with local weights.

Each run starts the app as a new process on a free port (fresh example folder, empty model cache), waits
until the page answers, then asks /compare for two models through gradio_client, which loads both
from their run folders. Reported per run: seconds until the server answers, and until the first
prediction is back (both from the process start), which backend answered (the app's ZOO_APP_BACKEND, from
this process's environment: ONNX Runtime by default) and the load average. Target: first prediction <= 10 s.

    python benchmarks/bench_cold_start.py [--runs 3] [--weights weights] [--models ID ID ...]
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with status {process.returncode}:\n{process.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def one_run(weights: Path, models: list[str], image: Path) -> tuple[float, float, list[str]]:
    from gradio_client import Client, handle_file  # imported before the clock starts

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory() as examples:
        env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1",
                   GRADIO_ANALYTICS_ENABLED="False", ZOO_APP_WEIGHTS=str(weights), ZOO_APP_EXAMPLES=examples)
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_until_up(url, process)
            up = time.perf_counter() - start
            records = Client(url, verbose=False).predict(handle_file(str(image)), models, None, "", "", 5,
                                                         api_name="/compare")
            first = time.perf_counter() - start
        finally:
            process.terminate()
            process.wait(timeout=30)
    failed = [r for r in records if r["error"]]
    if failed:
        raise RuntimeError(f"/compare failed: {failed}")
    return up, first, sorted({r["backend"] for r in records})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=ROOT / "weights")
    parser.add_argument("--models", nargs="+", default=None, help="default: the first two available run folders")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from zoo.catalog import discover_models
    from pydicom.data import get_testdata_file

    available = [e.id for e in discover_models(args.weights) if e.available]
    models = args.models or available[:2]
    if len(models) < 2:
        raise SystemExit(f"{args.weights} holds {len(available)} usable run folder(s); build the demo zoo first: "
                         "python scripts/build_demo_zoo.py")
    image = Path(get_testdata_file("CT_small.dcm", download=False))
    print(f"models {models}, image {image.name}, {args.runs} runs; load average {os.getloadavg()[0]:.1f}")
    firsts = []
    for i in range(args.runs):
        up, first, backends = one_run(args.weights, models, image)
        firsts.append(first)
        print(f"run {i + 1}: server answers after {up:.1f} s, first prediction after {first:.1f} s "
              f"(answered by {', '.join(backends)}); load average {os.getloadavg()[0]:.1f}", flush=True)
    print(f"cold start to first prediction: median {statistics.median(firsts):.1f} s, worst {max(firsts):.1f} s "
          f"(target <= 10 s)")


if __name__ == "__main__":
    main()
