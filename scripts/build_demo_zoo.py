"""Build the demo zoo: five small models trained on the bundled digits data with `python -m train`'s code.

    python scripts/build_demo_zoo.py            # only when weights/ holds no run folder yet
    python scripts/build_demo_zoo.py --force    # (re)build the demo runs that are missing
    python scripts/build_demo_zoo.py --verbose  # with training's full log: resolved config, progress bars

Quiet by default: one line per run with its test balanced accuracy and time; each run's resolved
configuration and metrics stay in its folder (run_config.yaml, metrics.json).

The runs cover the transfer-learning modes, so every tab of the app has real content on a fresh machine
with no network: EfficientNet-Lite0 from its offline ImageNet weights as a frozen feature extractor and
fine-tuned, QuadSNet (seed 000_02ca16e809fb32d3.txt) and LeNet-5 from scratch, and MobileNetV3-Small from
scratch. Inputs are small and epochs few so the whole build takes a few minutes on 2 CPU cores.
Each run is a complete run folder (weights, config, model card, metrics.json, plots) under weights/.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class DemoRun:
    """One demo model: `python -m train` options (long names, as TrainConfig fields)."""

    arch: str
    mode: str
    options: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.arch}-{self.mode}-digits"

    def command(self) -> str:
        opts = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in self.options.items())
        return f"python -m train --arch {self.arch} --mode {self.mode} --data digits {opts}"


# Small inputs and few epochs keep the build to a few minutes on 2 CPU cores (depthwise convolutions,
# as in EfficientNet and MobileNet, train slowly on CPUs; feature extraction runs its backbone only once).
DEMO_RUNS = (
    DemoRun("efficientnet_lite0", "feature-extraction", dict(img_size=48, epochs=20, lr=3e-3)),
    DemoRun("efficientnet_lite0", "fine-tune", dict(img_size=48, epochs=2, lr=1e-3)),
    DemoRun("quadsnet", "scratch", dict(img_size=16, epochs=3, lr=1e-3)),
    DemoRun("lenet5", "scratch", dict(epochs=15, lr=2e-3)),
    DemoRun("mobilenetv3_small_100", "scratch", dict(img_size=48, epochs=4, lr=2e-3)),
)


def existing_runs(weights: Path) -> list[Path]:
    """Run folders (a config.json beside a model.safetensors) directly under `weights`."""
    if not weights.is_dir():
        return []
    return sorted(p for p in weights.iterdir() if (p / "config.json").is_file() and (p / "model.safetensors").is_file())


def build(weights: Path, runs: tuple[DemoRun, ...] = DEMO_RUNS, verbose: bool = False) -> list[Path]:
    """Train every run of `runs` whose folder under `weights` is not complete yet; returns the run folders.

    Prints one line per run (its name, then its test balanced accuracy and seconds); `verbose` adds
    training's own log (resolved configuration, data, model, per-epoch progress bars).
    """
    from train.runner import run_training  # noqa: PLC0415  (train's Python entry of `python -m train`)

    done, start = [], time.perf_counter()
    for i, run in enumerate(runs, 1):
        out = weights / run.name
        if (out / "model.safetensors").is_file():
            print(f"[{i}/{len(runs)}] {run.name}: already built, kept", flush=True)
            done.append(out)
            continue
        if verbose:
            print(f"\n[{i}/{len(runs)}] {run.name}  ({run.command()})", flush=True)
        else:  # the result completes this line (a warning from training may come in between)
            print(f"[{i}/{len(runs)}] {run.name} ...", end="", flush=True)
        run_start = time.perf_counter()
        # overwrite: an unfinished demo folder (e.g. an interrupted build) is ours to replace
        result = run_training(arch=run.arch, mode=run.mode, data="digits", out=str(out), overwrite=True,
                              quiet=not verbose, seed=42, **run.options)
        accuracy = result.metrics.get("balanced_accuracy", float("nan"))
        summary = f"test balanced accuracy {accuracy:.3f}, {time.perf_counter() - run_start:.0f} s"
        print(f"[{i}/{len(runs)}] {run.name}: {summary}" if verbose else f" {summary}", flush=True)
        done.append(out)
    print(f"demo zoo ready in {weights} ({time.perf_counter() - start:.0f} s); each run's configuration and "
          f"metrics are in its folder (run_config.yaml, metrics.json)", flush=True)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Runs:\n" + "\n".join(f"  {r.name}: {r.command()}" for r in DEMO_RUNS))
    parser.add_argument("--weights", type=Path, default=ROOT / "weights", help="folder of run folders")
    parser.add_argument("--force", action="store_true",
                        help="build the missing demo runs even when weights/ already holds other runs")
    parser.add_argument("--verbose", action="store_true",
                        help="print training's full log (resolved configuration, progress bars), not one line per run")
    args = parser.parse_args(argv)
    found = existing_runs(args.weights)
    if found and not args.force:
        print(f"{args.weights} already holds {len(found)} run folder(s) ({', '.join(p.name for p in found[:4])}"
              f"{', ...' if len(found) > 4 else ''}); not building the demo zoo (use --force to add it).")
        return 0
    from zoo import ZooError  # noqa: PLC0415
    from train._errors import TrainError  # noqa: PLC0415
    try:
        build(args.weights, verbose=args.verbose)
    except (TrainError, ZooError) as e:
        print(f"error: building the demo zoo failed: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: run this script again to finish the missing runs", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
