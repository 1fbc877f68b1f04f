"""Fitted at the end of a run, from its own splits: temperature scaling, split-conformal prediction sets
and the statistics of the out-of-distribution (OOD) check that zoo/trust.py applies to a loaded model.

What is fitted where (the test split is never used for fitting, only for the reported figures):

- temperature and conformal threshold: the **validation** split's logits;
- OOD statistics (of the method --ood-method names, zoo/ood/): the **training** split's image features
  (evaluation transform, no augmentation);
  the OOD threshold: the score that 95% of the **validation** images pass.
  No OOD image takes part in fitting anything.

The validation split also chose the best epoch; reusing it for a one-parameter temperature and a
quantile is the usual practice and keeps the test split untouched.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from zoo import ZooError
from zoo.calibration import TemperatureScaling
from zoo.intervals import wilson_interval
from zoo.ood import DEFAULT_OOD_METHOD, ood_method, save_ood_statistics, threshold_at_pass_rate
from zoo.prediction_sets import ThresholdSets
from zoo.run_layout import OOD_NAME, RELIABILITY_PLOT
from zoo.trust import DEFAULT_ALPHA, OOD_PASS_RATE, TEMPERATURE_RANGE, features_and_logits

from .augment import eval_transform
from .data import DataSource, ImageDataset, Splits
from .plots import save_figure  # imported before pyplot: it selects matplotlib's file-only Agg backend

import matplotlib.pyplot as plt  # noqa: E402  (after train.plots chose the backend)

__all__ = ["ECE_BINS", "FEATURE_SPREAD_MIN", "OOD_VALIDATION_PASS", "TEMPERATURE_BOUNDS",
           "SplitOutputs", "TrustFit", "collect_outputs", "fit_temperature", "calibration_figures",
           "conformal_threshold", "coverage_interval", "prediction_sets", "plot_reliability", "fit_trust",
           "fit_run_trust", "ood_cannot_discriminate", "TRUST_SECTION"]

_logger = logging.getLogger("train")

ECE_BINS = 15                                 # equal-width confidence bins for ECE, MCE and the diagram
OOD_VALIDATION_PASS = OOD_PASS_RATE           # the OOD threshold lets this fraction of validation images pass
TEMPERATURE_BOUNDS = TEMPERATURE_RANGE       # the fit searches exactly the range a loaded model accepts
TRUST_SECTION = "Calibration, prediction sets and out-of-distribution check"   # the model card's title


@dataclass
class SplitOutputs:
    """One split's outputs from the final model: logits (N, K), image features (N, D), labels (N,)."""

    logits: torch.Tensor
    features: torch.Tensor
    labels: np.ndarray


@dataclass
class TrustFit:
    """What a run gains: metrics.json keys, a model-card section and config.json zoo-block keys."""

    metrics: dict[str, Any]
    card_section: str
    zoo_config: dict[str, Any]
    files: list[Path] = field(default_factory=list)


@torch.no_grad()
def collect_outputs(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 128,
                    metadata: torch.Tensor | None = None, workers: int = 0) -> SplitOutputs:
    """Logits and image features (zoo.trust.features_and_logits) of the whole `dataset` (items
    (image, label, index)), in order."""
    was_training = model.training
    model.eval()
    logits, features, labels = [], [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    for x, y, index in loader:
        meta = metadata[index].to(device) if metadata is not None else None
        f, z = features_and_logits(model, x.to(device), meta)  # (B, D), (B, K)
        features.append(f.double().cpu())
        logits.append(z.double().cpu())
        labels.append(y)
    model.train(was_training)
    return SplitOutputs(logits=torch.cat(logits), features=torch.cat(features),
                        labels=torch.cat(labels).numpy().astype(np.int64))


# --- calibration ----------------------------------------------------------------------------------

def fit_temperature(logits: torch.Tensor, labels: np.ndarray) -> float:
    """The temperature T that minimises the NLL of softmax(logits / T) on these (validation) logits.

    The NLL is convex in 1/T (a log-sum-exp of linear functions minus a linear one), so a bounded
    one-dimensional search (scipy's Brent) finds the global minimum; no learning rate or iteration
    count to tune, unlike LBFGS on a parameter. T is kept in TEMPERATURE_BOUNDS.
    """
    from scipy.optimize import minimize_scalar

    z = logits.double()
    y = torch.as_tensor(labels, dtype=torch.long)
    low, high = TEMPERATURE_BOUNDS

    def nll(inverse_t: float) -> float:
        return float(F.cross_entropy(z * inverse_t, y))

    result = minimize_scalar(nll, bounds=(1.0 / high, 1.0 / low), method="bounded",
                             options={"xatol": 1e-6})
    return float(1.0 / result.x)


def calibration_figures(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """ECE and MCE (torchmetrics, ECE_BINS equal-width bins of the top-1 confidence), NLL and Brier
    score (scikit-learn; Brier summed over all classes, range [0, 2], the same for every class count)."""
    from sklearn.metrics import brier_score_loss, log_loss
    from torchmetrics.functional.classification import multiclass_calibration_error

    classes = probs.shape[1]
    p, y = torch.as_tensor(probs, dtype=torch.float64), torch.as_tensor(labels, dtype=torch.long)
    ece = multiclass_calibration_error(p, y, num_classes=classes, n_bins=ECE_BINS, norm="l1")
    mce = multiclass_calibration_error(p, y, num_classes=classes, n_bins=ECE_BINS, norm="max")
    return {"ece": float(ece), "mce": float(mce),
            "nll": float(log_loss(labels, probs, labels=list(range(classes)))),
            "brier": float(brier_score_loss(labels, probs, labels=list(range(classes)), scale_by_half=False))}


def plot_reliability(before: np.ndarray, after: np.ndarray, labels: np.ndarray, path: str | Path,
                     temperature: float, title: str = "") -> Path:
    """Reliability diagrams of the top-1 confidence, raw and temperature-scaled, side by side."""
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharey=True)
    for ax, probs, name in ((axes[0], before, "raw softmax"), (axes[1], after, f"temperature T = {temperature:.3f}")):
        confidence, correct = probs.max(1), probs.argmax(1) == labels
        which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, ECE_BINS - 1)
        counts = np.bincount(which, minlength=ECE_BINS)
        accuracy = np.bincount(which, weights=correct, minlength=ECE_BINS) / np.maximum(counts, 1)
        mean_conf = np.bincount(which, weights=confidence, minlength=ECE_BINS) / np.maximum(counts, 1)
        filled = counts > 0
        centres, width = (edges[:-1] + edges[1:]) / 2, 1.0 / ECE_BINS
        ax.bar(centres[filled], accuracy[filled], width=width, edgecolor="black", lw=0.6, label="accuracy")
        ax.bar(centres[filled], (mean_conf - accuracy)[filled], bottom=accuracy[filled], width=width,
               fill=False, edgecolor="tab:red", hatch="//", lw=0.6, label="gap to mean confidence")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
        ece = float(np.sum(counts * np.abs(accuracy - mean_conf)) / max(len(labels), 1))
        ax.set(title=f"{name}: ECE {ece:.4f}", xlabel=f"top-1 confidence ({ECE_BINS} equal-width bins)",
               xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy in bin")
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(title or "Reliability diagram, test split")
    return save_figure(fig, path)


# --- prediction sets --------------------------------------------------------------------------------

def conformal_threshold(probs: np.ndarray, labels: np.ndarray, alpha: float = DEFAULT_ALPHA) -> float:
    """Split-conformal threshold on s = 1 - p(true class): the ceil((n+1)(1-alpha))-th smallest score.

    Written here rather than taken from MAPIE, crepes or TorchCP: the whole method is this order
    statistic (Angelopoulos and Bates, "A Gentle Introduction to Conformal Prediction ..."), and those
    libraries would add a dependency and an estimator wrapper around a model we already have. With
    too few calibration images for the level (k > n) the threshold is 1: every set holds every class.
    """
    scores = np.sort(1.0 - probs[np.arange(len(labels)), labels])
    n = len(scores)
    k = math.ceil((n + 1) * (1.0 - alpha))
    return 1.0 if k > n else float(scores[k - 1])


def coverage_interval(covered: int, n: int) -> list[float] | None:
    """The 95% Wilson interval of a coverage of covered/n (scipy): one test split's coverage is a sample. Split
    conformal promises the target on average over calibration and test draws; with a few hundred images one
    split's figure scatters by a few points around it (about 2.5 points for 270 + 270 digits)."""
    interval = wilson_interval(covered, n)
    return None if interval is None else list(interval)


def _interval_text(interval: list[float] | None) -> str:
    return f" (95% interval {interval[0]:.1%}-{interval[1]:.1%}, Wilson)" if interval else ""


def prediction_sets(probs: np.ndarray, threshold: float) -> np.ndarray:
    """(N, K) boolean membership: class c is in image i's set when 1 - p_ic <= threshold."""
    return (1.0 - probs) <= threshold


# --- all of it at the end of a run ------------------------------------------------------------------

def _softmax(logits: torch.Tensor, temperature: float = 1.0) -> np.ndarray:
    return (logits.double() / temperature).softmax(dim=1).numpy()


# Features whose spread across the training images is below this fraction of their size are one point for every
# distance-based score: every image, of any kind, then scores alike and the check tells nothing apart
FEATURE_SPREAD_MIN = 1e-3


def ood_cannot_discriminate(train_features: torch.Tensor, val_scores: np.ndarray, threshold: float) -> str | None:
    """Why an OOD check fitted on these features cannot tell images apart (a collapsed or untrained model), or None.

    Two signs: the training features are nearly constant (their mean standard deviation below FEATURE_SPREAD_MIN of
    their mean magnitude), or the validation scores do not spread at all (every one equal to the threshold)."""
    features = train_features.double()
    spread = float(features.std(dim=0).mean() / (features.abs().mean() + 1e-12)) if len(features) > 1 else 0.0
    if spread < FEATURE_SPREAD_MIN:
        return (f"the model's image features hardly vary across its training images (relative spread {spread:.1e}, "
                f"below {FEATURE_SPREAD_MIN:g}): every image, of any kind, gets nearly the same score, so this "
                "check cannot tell unfamiliar images from familiar ones; train longer or check the model")
    if len(val_scores) > 1 and float(np.ptp(val_scores)) <= 1e-9 * max(1.0, abs(threshold)):
        return (f"every validation image gets the same score ({threshold:.3g}): the threshold cannot separate "
                "anything, so this check cannot tell unfamiliar images from familiar ones")
    return None


def _fit_ood_check(train: SplitOutputs, val: SplitOutputs, test: SplitOutputs, run_dir: Path,
                   method_name: str = DEFAULT_OOD_METHOD) -> tuple[dict[str, Any], Path | None]:
    """Fit the named OOD method on the training features, set its threshold on the validation scores, write
    ood.safetensors; (metrics, file), or a reason and None."""
    method = ood_method(method_name)
    try:
        unset = method.fit(train.features, train.labels)
    except ZooError as e:
        _logger.warning("OOD check: %s", e)
        return {"method": method.name, "skipped": str(e)}, None
    val_scores = unset.scores(val.features).numpy()
    stats = unset.with_threshold(threshold_at_pass_rate(val_scores, OOD_VALIDATION_PASS))
    test_scores = stats.scores(test.features).numpy()
    ood_file = save_ood_statistics(run_dir, stats)
    warning = ood_cannot_discriminate(train.features, val_scores, stats.threshold)
    if warning:
        _logger.warning("OOD check: %s", warning)
    return {"method": method.name, **({"warning": warning} if warning else {}), "score": method.summary,
            "file": OOD_NAME, **stats.describe(),
            "fitted_on": "train", "n_fit": len(train.labels), "threshold": stats.threshold,
            "threshold_rule": f"{OOD_VALIDATION_PASS:.0%} of the validation images pass",
            "n_validation": len(val.labels), "validation_pass_rate": float((val_scores <= stats.threshold).mean()),
            "test_pass_rate": float((test_scores <= stats.threshold).mean()), "n_test": len(test.labels)}, ood_file


def fit_trust(outputs: dict[str, SplitOutputs], label_names: Sequence[str], dataset: str, run_dir: str | Path,
              title: str = "", alpha: float = DEFAULT_ALPHA, ood_method_name: str = DEFAULT_OOD_METHOD) -> TrustFit:
    """Fit temperature, conformal threshold and OOD statistics; write ood.safetensors and reliability.png.

    `outputs` holds "train", "val" and "test" (collect_outputs). Returns what goes into metrics.json
    (``calibration``, ``conformal``, ``ood``), the card section and the config.json zoo-block keys.
    """
    run_dir = Path(run_dir)
    train, val, test = outputs["train"], outputs["val"], outputs["test"]

    temperature = fit_temperature(val.logits, val.labels)
    at_bound = not TEMPERATURE_BOUNDS[0] * 1.001 < temperature < TEMPERATURE_BOUNDS[1] * 0.999
    raw_test, calibrated_test = _softmax(test.logits), _softmax(test.logits, temperature)
    before, after = calibration_figures(raw_test, test.labels), calibration_figures(calibrated_test, test.labels)
    reliability = plot_reliability(raw_test, calibrated_test, test.labels, run_dir / RELIABILITY_PLOT,
                                   temperature, title=f"Reliability, test split ({len(test.labels)} images): {title}")
    calibration = {"method": "temperature scaling", "temperature": temperature,
                   "temperature_at_bound": at_bound, "fitted_on": "validation", "n_fit": len(val.labels),
                   "evaluated_on": "test", "n_test": len(test.labels), "dataset": dataset,
                   "ece_bins": ECE_BINS, "before": before, "after": after}

    threshold = conformal_threshold(_softmax(val.logits, temperature), val.labels, alpha)
    sets = prediction_sets(calibrated_test, threshold)
    sizes = sets.sum(1)
    covered = int(sets[np.arange(len(test.labels)), test.labels].sum())
    conformal = {"alpha": alpha, "target_coverage": 1.0 - alpha, "threshold": threshold,
                 "n_calibration": len(val.labels), "calibrated_on": "validation", "n_test": len(test.labels),
                 "test_coverage": covered / max(len(test.labels), 1),
                 "test_coverage_ci95": coverage_interval(covered, len(test.labels)),
                 "test_mean_set_size": float(sizes.mean()), "test_empty_sets": float((sizes == 0).mean()),
                 "test_singletons": float((sizes == 1).mean())}

    ood, ood_file = _fit_ood_check(train, val, test, run_dir, ood_method_name)

    _logger.info("calibration: T %.3f (validation, %d images); test ECE %.4f -> %.4f, NLL %.4f -> %.4f; "
                 "%.0f%% sets: coverage %.3f, mean size %.2f; OOD check passes %.1f%% of the test images",
                 temperature, len(val.labels), before["ece"], after["ece"], before["nll"], after["nll"],
                 100 * (1 - alpha), conformal["test_coverage"], conformal["test_mean_set_size"],
                 100 * ood.get("test_pass_rate", float("nan")))
    return TrustFit(
        metrics={"calibration": calibration, "conformal": conformal, "ood": ood},
        card_section=_card_section(calibration, conformal, ood, dataset),
        # each piece writes its own keys, its method's name among them: what zoo/trust.py reads back by name
        zoo_config={**TemperatureScaling(temperature).to_config(),
                    **ThresholdSets(alpha=alpha, threshold=threshold, n_calibration=len(val.labels)).to_config(),
                    # threshold: in the file; a check that cannot discriminate says so beside every answer (its note)
                    **({"ood": {"method": ood["method"], "file": OOD_NAME,
                                **({"note": f"this OOD check cannot discriminate: {ood['warning']}"}
                                   if "warning" in ood else {})}} if ood_file else {}),
                    "calibration": {"test_ece_before": before["ece"], "test_ece_after": after["ece"],
                                    "n_test": len(test.labels), "ece_bins": ECE_BINS}},
        files=[f for f in (ood_file, reliability) if f is not None])


def fit_run_trust(model: nn.Module, source: DataSource, splits: Splits, data_config: dict[str, Any],
                  in_chans: int, metadata: dict[str, torch.Tensor | None], device: torch.device,
                  batch_size: int, workers: int, run_dir: str | Path, title: str = "",
                  cached: Callable[[str], tuple[torch.Tensor, torch.Tensor] | None] | None = None,
                  ood_method_name: str = DEFAULT_OOD_METHOD) -> TrustFit:
    """fit_trust for a finished run: every split through the evaluation transform (no augmentation).

    `cached(split)` -> (features, logits) from a frozen backbone's feature cache (train.engine.Trainer.
    cached_outputs) saves running the backbone over every split again: a third of a feature-extraction
    run's time. It is used only when it reproduces features_and_logits on the first validation images.
    """
    datasets = {name: ImageDataset(source, samples, eval_transform(data_config), in_chans)
                for name, samples in splits.items()}
    labels = {name: np.asarray([s.label for s in samples], dtype=np.int64) for name, samples in splits.items()}
    reused = cached is not None and _cache_reproduces(model, datasets["val"], cached("val"), device,
                                                      metadata.get("val"))
    outputs = {}
    for name, dataset in datasets.items():
        if reused:
            features, logits = cached(name)
            outputs[name] = SplitOutputs(logits=logits, features=features, labels=labels[name])
        else:
            outputs[name] = collect_outputs(model, dataset, device, batch_size, metadata.get(name), workers)
    return fit_trust(outputs, source.label_names, source.name, run_dir, title=title, ood_method_name=ood_method_name)


CACHE_CHECK_IMAGES = 8      # validation images run through the whole model to check the cached outputs
CACHE_CHECK_TOLERANCE = 1e-4  # relative to the largest value: float32 sums in another order differ by ~1e-6


def _cache_reproduces(model: nn.Module, val: Dataset, cached: tuple[torch.Tensor, torch.Tensor] | None,
                      device: torch.device, metadata: torch.Tensor | None) -> bool:
    """Whether the cache's (features, logits) equal the whole model's on the first validation images."""
    if cached is None or len(val) == 0:
        return False
    check = collect_outputs(model, Subset(val, range(min(CACHE_CHECK_IMAGES, len(val)))), device,
                            metadata=metadata)
    n = len(check.labels)
    for name, mine, theirs in (("features", cached[0][:n], check.features), ("logits", cached[1][:n], check.logits)):
        scale = 1.0 + float(theirs.abs().max())
        if mine.shape != theirs.shape or float((mine - theirs).abs().max()) > CACHE_CHECK_TOLERANCE * scale:
            _logger.info("trust: the feature cache's %s differ from the model's; running the model over every "
                         "split", name)
            return False
    _logger.info("trust: reusing the feature cache (checked on %d validation images)", n)
    return True


def _ood_text(ood: dict, dataset: str) -> str:
    """The card's OOD paragraph: the fitted method's own text, or why there is none."""
    if "skipped" in ood:
        return f"**Out-of-distribution check**: none for this model: {ood['skipped']}."
    text = ood_method(ood["method"]).card_text(ood, dataset)
    return text + (f"\n\n**⚠ This check cannot discriminate:** {ood['warning']}." if ood.get("warning") else "")


def _card_section(calibration: dict, conformal: dict, ood: dict, dataset: str) -> str:
    before, after = calibration["before"], calibration["after"]
    rows = [(name, before[key], after[key]) for name, key in
            (("Expected calibration error (ECE)", "ece"), ("Maximum calibration error (MCE)", "mce"),
             ("Negative log-likelihood (NLL)", "nll"), ("Brier score (summed over classes, 0-2)", "brier"))]
    bound = (" (at the edge of the searched range: the validation split may be too small or too easy "
             "to fit it well)" if calibration["temperature_at_bound"] else "")
    lines = [
        "Temperature scaling (\"On Calibration of Modern Neural Networks\", Guo et al., 2017): one "
        f"temperature **T = {calibration['temperature']:.4f}**{bound}, fitted by minimising the NLL on the "
        f"{calibration['n_fit']} validation images of {dataset}. `zoo.load_pretrained` applies it "
        "(`config.json`, `zoo.temperature`); stock timm gives the raw logits. Figures on the "
        f"{calibration['n_test']} test images of {dataset}, ECE and MCE over {calibration['ece_bins']} "
        "equal-width bins of the top-1 confidence:",
        "",
        "| figure | raw softmax | temperature-scaled |",
        "|---|---|---|",
        *[f"| {name} | {b:.4f} | {a:.4f} |" for name, b, a in rows],
        "",
        f"![Reliability diagram]({RELIABILITY_PLOT})",
        "",
        f"**Prediction sets** (split conformal prediction, \"A Gentle Introduction to Conformal Prediction "
        f"and Distribution-Free Uncertainty Quantification\"): a class joins an image's set when "
        f"1 - p(class) <= {conformal['threshold']:.4f}, the threshold calibrated on the "
        f"{conformal['n_calibration']} validation images for {conformal['target_coverage']:.0%} coverage. "
        f"On the {conformal['n_test']} test images the sets held the true class for "
        f"**{conformal['test_coverage']:.1%}** of them{_interval_text(conformal.get('test_coverage_ci95'))}, with "
        f"**{conformal['test_mean_set_size']:.2f}** "
        f"classes on average ({conformal['test_singletons']:.1%} single-class sets, "
        f"{conformal['test_empty_sets']:.1%} empty).",
        "",
        _ood_text(ood, dataset),
    ]
    return "\n".join(lines)
