"""Time to a working app, the part after the install: the demo zoo build and the app's cold start to its first answer.

Builds the offline demo zoo (scripts/build_demo_zoo.py, what `bash run.sh` runs on a fresh clone) into a new
folder as a child process, and reports its wall time and CPU-seconds (user + system of the child, from
resource.getrusage(RUSAGE_CHILDREN)) with each run's line; then starts `python app.py` on that folder and times
the first /compare answer of the default (medical) models on a packaged chest X-ray (bench_cold_start.one_run).
The load average before and after is printed: on a shared machine the wall times grow with it, CPU-seconds less.
Targets (issue: first `bash run.sh` on an idle 2-core machine <= 8 min): demo zoo <= 3 min.

    OMP_NUM_THREADS=2 python benchmarks/bench_quickstart.py [--keep DIR] [--cold-runs 1]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

DEMO_ZOO_TARGET_S = 180.0


def build_demo_zoo(weights: Path) -> tuple[float, float, list[str]]:
    """(wall seconds, CPU-seconds, the builder's output lines) of building the demo zoo into `weights`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_demo_zoo.py"), "--weights", str(weights)],
                            cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"the demo zoo build failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, [line for line in result.stdout.splitlines() if line.startswith("[")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="build into this folder and keep it (default: a temporary one)")
    parser.add_argument("--cold-runs", type=int, default=1, help="cold starts to time (each a new app process)")
    args = parser.parse_args()
    from bench_cold_start import one_run  # noqa: PLC0415

    from ui.state import ComparisonApp  # noqa: PLC0415,F401  (imported here so its import is not timed)
    from zoo import assets  # noqa: PLC0415

    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {os.cpu_count()} CPUs; "
          f"load average before {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}", flush=True)
    weights = args.keep or Path(tempfile.mkdtemp(prefix="bench-quickstart-"))
    try:
        wall, cpu, lines = build_demo_zoo(weights)
        print("\n".join(f"  {line}" for line in lines))
        print(f"demo zoo: {wall:.0f} s wall, {cpu:.0f} CPU-seconds (target <= {DEMO_ZOO_TARGET_S:.0f} s on an idle "
              f"2-core machine); load average now {os.getloadavg()[0]:.1f}", flush=True)
        models = ["pneumonia-xception", "braintumor-xception"]
        image, _ = assets.medical_classifier("pneumonia").images()[-1]
        for i in range(args.cold_runs):
            up, first, backends = one_run(weights, models, image)
            print(f"cold start {i + 1}: server answers after {up:.1f} s, first /compare answer ({', '.join(models)} "
                  f"on {image.name}, backend {', '.join(backends)}) after {first:.1f} s", flush=True)
        print(f"load average after {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")
    finally:
        if args.keep is None:
            shutil.rmtree(weights, ignore_errors=True)


if __name__ == "__main__":
    main()
