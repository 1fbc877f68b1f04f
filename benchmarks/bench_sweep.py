"""The sweep engines' cost: overhead per cell (sweep time minus the cells' own run times, one cell at a time) on
the local pool and on Ray, and the speed-up of 2 workers × 1 torch thread over 1 worker × 2 threads for a grid
of small cells (lenet5 on the bundled digits, 32 px, --no-onnx).

    python benchmarks/bench_sweep.py [--epochs 1] [--cells 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.sweep import SweepOptions, build_cells, run_sweep  # noqa: E402


def _grid(out: Path, cells: int, epochs: int):
    axes = {"arch": ["lenet5"], "mode": ["scratch"], "data": ["digits"], "img_size": [32], "seeds": list(range(cells))}
    return build_cells(axes, {"epochs": epochs, "quiet": True, "onnx": False}, out)


def _overhead(name: str, root: Path, cells: int, epochs: int, options: SweepOptions) -> None:
    out = root / name
    result = run_sweep(_grid(out, cells, epochs), out, options)
    own = sum(o.seconds for o in result.outcomes)
    print(f"{name}: {cells} cells one at a time in {result.seconds:.1f} s, their own run times {own:.1f} s: "
          f"overhead {(result.seconds - own) / cells:.2f} s per cell", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--cells", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _overhead("local", root, args.cells, args.epochs, SweepOptions(workers=1, threads=1))
        try:
            import ray
        except ImportError:
            print("ray: not installed (pip install 'medtl-zoo[sweep]'); skipped")
        else:
            start = time.perf_counter()
            ray.init(num_cpus=1, include_dashboard=False, logging_level="WARNING")  # one cell at a time
            print(f"ray.init on this machine: {time.perf_counter() - start:.1f} s (not counted below)")
            try:
                _overhead("ray", root, args.cells, args.epochs, SweepOptions(engine="ray", threads=1))
            finally:
                ray.shutdown()
        timings = {}
        for workers, threads in ((2, 1), (1, 2)):
            out = root / f"w{workers}t{threads}"
            timings[workers, threads] = run_sweep(_grid(out, 2 * args.cells, args.epochs), out,
                                                  SweepOptions(workers=workers, threads=threads)).seconds
            print(f"{workers} worker(s) × {threads} thread(s): {2 * args.cells} cells in "
                  f"{timings[workers, threads]:.1f} s", flush=True)
        print(f"speed-up of 2 workers × 1 thread over 1 worker × 2 threads: "
              f"{timings[1, 2] / timings[2, 1]:.2f}x")


if __name__ == "__main__":
    main()
