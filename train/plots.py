"""PNG plots of a run: training curves, the confusion matrix, ROC curves (matplotlib, Agg).

Other plots of train (GAN losses, study reports) draw with this module's ``plt``, which is pyplot on
the file-only Agg backend, and write with ``save_figure``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import auc, roc_curve  # noqa: E402

from zoo.fileio import atomic_write  # noqa: E402
from zoo.run_layout import PLOT_FILES  # noqa: E402

from .metrics import METRIC_TITLES  # noqa: E402

__all__ = ["plot_curves", "plot_confusion_matrix", "plot_roc", "save_figure", "plt", "PLOT_FILES"]


def plot_curves(history: Sequence[dict[str, Any]], path: str | Path, monitor: str = "balanced_accuracy",
                title: str = "") -> Path:
    """Training and validation loss, validation metrics and learning rate per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    axes[0].plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    if "val_loss" in history[0]:  # runs without a validation split (train/lesson.py's folds) have none
        axes[0].plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    axes[0].set(title="Loss", xlabel="epoch")
    metric_names = ["accuracy", "balanced_accuracy", "f1_macro"]
    if monitor not in metric_names and monitor != "loss":
        metric_names.append(monitor)
    for name in metric_names if "val_loss" in history[0] else ():
        values = [h.get(f"val_{name}") for h in history]
        values = [np.nan if v is None else v for v in values]
        axes[1].plot(epochs, values, "o-", label=METRIC_TITLES.get(name, name))
    if "train_accuracy" in history[0]:
        axes[1].plot(epochs, [h["train_accuracy"] for h in history], "--", label="train accuracy")
    axes[1].set(title="Validation metrics", xlabel="epoch", ylim=(0, 1.02))
    axes[2].plot(epochs, [h["lr"] for h in history], "o-")
    axes[2].set(title="Learning rate", xlabel="epoch", yscale="log")
    for ax in axes[:2]:
        ax.legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], label_names: Sequence[str],
                          path: str | Path, title: str = "") -> Path:
    """Counts and row-normalised (per true class) confusion matrices side by side."""
    counts = np.asarray(matrix, dtype=np.int64)
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    n = len(label_names)
    size = max(4.0, 0.45 * n + 2.5)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, values, name, fmt in ((axes[0], counts, "counts", "d"),
                                  (axes[1], normalised, "fraction of true class", ".2f")):
        image = ax.imshow(values, cmap="Blues", vmin=0)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true",
               title=f"Confusion matrix ({name})")
        ax.set_xticklabels(label_names, rotation=45, ha="right", fontsize=8)
        ax.set_yticklabels(label_names, fontsize=8)
        if n <= 20:
            threshold = values.max() / 2 if values.max() > 0 else 1
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, format(values[i, j], fmt), ha="center", va="center", fontsize=7,
                            color="white" if values[i, j] > threshold else "black")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_roc(y_true: Sequence[int], probs: np.ndarray, label_names: Sequence[str],
             path: str | Path, title: str = "") -> Path:
    """One-vs-rest ROC curve per class (one curve for two classes)."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs)
    fig, ax = plt.subplots(figsize=(6, 5.5))
    classes = [1] if len(label_names) == 2 else range(len(label_names))
    for c in classes:
        positives = y_true == c
        if not 0 < positives.sum() < len(y_true):
            continue  # ROC undefined without both positives and negatives
        fpr, tpr, _ = roc_curve(positives, probs[:, c])
        name = f"{label_names[1]} vs {label_names[0]}" if len(label_names) == 2 else label_names[c]
        ax.plot(fpr, tpr, lw=1.3, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
    ax.set(xlabel="false positive rate (1 - specificity)", ylabel="true positive rate (sensitivity)",
           title=title or "ROC curves (one-vs-rest)", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="lower right", ncol=2 if len(label_names) > 8 else 1)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG (tight layout, 110 dpi) and close it; returns the path."""
    path = Path(path)
    fig.tight_layout()
    try:
        with atomic_write(path) as f:  # a full disk or a kill leaves no torn PNG
            fig.savefig(f, format="png", dpi=110)
    finally:
        plt.close(fig)
    return path

