"""Classification metrics, computed with scikit-learn (seed 001's and seed 002's metric set)."""
from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

__all__ = ["classification_metrics", "flat_metrics", "HEADLINE_METRICS", "METRIC_TITLES"]

# the flat, single-number test metrics (model card model-index, app columns, early stopping)
HEADLINE_METRICS = ("accuracy", "balanced_accuracy", "precision_macro", "sensitivity_macro",
                    "specificity_macro", "f1_macro", "roc_auc")
METRIC_TITLES = {
    "accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy",
    "precision_macro": "Precision (macro)", "sensitivity_macro": "Sensitivity / recall (macro)",
    "specificity_macro": "Specificity (macro)", "f1_macro": "F1 (macro)",
    "roc_auc": "ROC-AUC (one-vs-rest, macro)", "loss": "Loss",
}


def classification_metrics(y_true: Sequence[int], probs: np.ndarray,
                           label_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class and macro precision/sensitivity/specificity/F1,
    ROC-AUC (one-vs-rest for more than two classes) and the confusion matrix.

    ``probs`` is (N, C) class probabilities; predictions are their arg-max. Values that are
    undefined on this data (e.g. ROC-AUC when the split holds one class) are None, never NaN.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    num_classes = len(label_names)
    if probs.ndim != 2 or probs.shape != (len(y_true), num_classes):
        raise ValueError(f"probs must have shape (N={len(y_true)}, C={num_classes}), got {probs.shape}")
    labels = list(range(num_classes))
    y_pred = probs.argmax(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        precision, recall, f1, support = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=None, zero_division=0)
        balanced = balanced_accuracy_score(y_true, y_pred)
    # scikit-learn has no specificity function: TN / (TN + FP) per class from its one-vs-rest
    # confusion matrices, laid out [[TN, FP], [FN, TP]]
    mcm = multilabel_confusion_matrix(y_true, y_pred, labels=labels)
    tn, fp = mcm[:, 0, 0].astype(np.float64), mcm[:, 0, 1].astype(np.float64)
    specificity = np.divide(tn, tn + fp, out=np.zeros_like(tn), where=(tn + fp) > 0)
    present = [c for c in labels if support[c] > 0]
    macro = lambda values: float(np.mean([values[c] for c in present])) if present else None  # noqa: E731
    auc, per_class_auc = _roc_auc(y_true, probs, labels)
    per_class = {
        name: {"precision": float(precision[c]), "sensitivity": float(recall[c]),
               "specificity": float(specificity[c]), "f1": float(f1[c]), "support": int(support[c]),
               "roc_auc": per_class_auc[c]}
        for c, name in enumerate(label_names)
    }
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced),
        # macro averages over the classes present in y_true, as balanced_accuracy does
        "precision_macro": macro(precision),
        "sensitivity_macro": macro(recall),
        "specificity_macro": macro(specificity),
        "f1_macro": macro(f1),
        "roc_auc": auc,
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "label_names": list(label_names),
        "num_samples": int(len(y_true)),
    }


def _roc_auc(y_true: np.ndarray, probs: np.ndarray, labels: list[int]
             ) -> tuple[float | None, list[float | None]]:
    present = sorted(set(y_true.tolist()))
    per_class: list[float | None] = []
    for c in labels:  # one-vs-rest, defined when class c and some other class are both present
        positives = y_true == c
        per_class.append(float(roc_auc_score(positives, probs[:, c]))
                         if 0 < positives.sum() < len(y_true) else None)
    if len(present) < 2:
        return None, per_class
    if len(labels) == 2:
        return float(roc_auc_score(y_true, probs[:, 1])), per_class
    if len(present) == len(labels):
        return float(roc_auc_score(y_true, probs, multi_class="ovr", average="macro",
                                   labels=labels)), per_class
    # a class missing from y_true: the macro one-vs-rest average over the classes present
    return float(np.mean([per_class[c] for c in present])), per_class


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The headline metrics as {name: float}, leaving out undefined (None/NaN) values."""
    out = {}
    for name in HEADLINE_METRICS:
        value = metrics.get(name)
        if value is not None and math.isfinite(float(value)):
            out[name] = float(value)
    return out
