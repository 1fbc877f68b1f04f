"""The run-specific sections of the model card (the zoo writes the header, details, use and loading)."""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, Sequence

from zoo.model_facts import accuracy_with_interval, frequent_confusions
from zoo.run_layout import PLOT_FILES

from .config import SAMPLERS, TrainConfig
from .data import DataSource, Splits, class_counts
from .losses import class_weights

__all__ = ["CardData", "CardOutcome", "RUN_INTENDED_USE", "card_sections", "reproduce_command", "run_facts"]

RUN_INTENDED_USE = ("teaching and research: showing what transfer learning does on this data set; not for clinical "
                    "use (not validated on patients, not a medical device)")


_AUGMENT = {
    "none": "none (as Ali et al.'s QuadSNet paper trains QuadSNet)",
    "medical-safe": "medical-safe: rotation ±10°, shifts 5%, zoom ±10%, brightness/contrast ±10%, no flips",
    "standard": "standard (Do Hoang's Soft-Attention paper): rotation ±20°, shifts 10%, zoom ±15%, "
                "horizontal and vertical flips",
}


def _loss_text(cfg: TrainConfig, counts: Sequence[int], names: Sequence[str]) -> str:
    if cfg.loss == "ce":
        return "cross-entropy" + (f" with label smoothing {cfg.label_smoothing}" if cfg.label_smoothing else "")
    weights = ", ".join(f"{n} {w:.3f}" for n, w in zip(names, class_weights(counts).tolist()))
    if cfg.loss == "weighted-ce":
        return ("class-weighted cross-entropy, W_c = N / (C · N_c) "
                f"from the training split (Do Hoang's Soft-Attention paper)"
                + (f", label smoothing {cfg.label_smoothing}" if cfg.label_smoothing else "")
                + f"; weights: {weights}")
    return ("the weighted margin loss of Ali et al.'s QuadSNet paper (eq. 2: m⁺ 0.9, m⁻ 0.1, λ 0.5, on softmax "
            f"probabilities), samples weighted by W_c = N / (C · N_c); weights: {weights}")


def _synthetic_counts(cfg: TrainConfig, splits: Splits, names: Sequence[str]) -> dict[str, int] | None:
    if not cfg.synthetic:
        return None
    from .synthetic import synthetic_counts
    return synthetic_counts(splits.train, names)


def reproduce_command(cfg: TrainConfig) -> str:
    """The command that repeats this run from its saved configuration."""
    return f"python -m train --config {shlex.quote(str(cfg.out))}/run_config.yaml --out NEW_RUN_FOLDER"


def _fmt(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class CardData:
    """The data a run trained on, as the card describes it."""

    source: DataSource
    splits: Splits
    data_config: dict[str, Any]   # the model's resolved preprocessing (timm's data config)
    in_chans: int


@dataclass(frozen=True)
class CardOutcome:
    """What training gave, as the card reports it."""

    params: tuple[int, int]        # (total, trainable)
    test: dict[str, Any]           # train.metrics' test figures
    history: list[dict[str, Any]]  # one dict per epoch
    best_epoch: int | None
    best_value: float | None
    stopped_early: bool
    cache_note: str
    timings: dict[str, float]


def card_sections(cfg: TrainConfig, data: CardData, outcome: CardOutcome) -> dict[str, str]:
    """{title: markdown} for zoo.save_pretrained(card_sections=...)."""
    return {
        "Training data and split": _data_section(cfg, data),
        "Training recipe": _recipe_section(cfg, data, outcome),
        "Evaluation": _evaluation_section(cfg, data.source.label_names, outcome),
        "Plots": _plots_section(),
        "Limitations of this run": _limits_section(data),
    }


def _split_text(cfg: TrainConfig, splits: Splits) -> str:
    """How the images were split, in one sentence."""
    if splits.predefined:
        # a predefined split lacking val/test gets them carved from its training part (data.make_splits)
        carved = [name for name, part in (("validation", splits.val), ("test", splits.test))
                  if any(s.split == "train" for s in part)]
        return ("the split the data defines (its train/val/test folders or arrays)"
                + (f"; {' and '.join(carved)} carved from its training images, stratified, seed "
                   f"{cfg.effective_split_seed}" if carved else ""))
    return (f"a stratified split with seed {cfg.effective_split_seed}: "
            f"{1 - cfg.val_frac - cfg.test_frac:.0%} train, "
            f"{cfg.val_frac:.0%} validation, {cfg.test_frac:.0%} test"
            + (" (grouped by lesion_id so one lesion never spans two splits)"
               if any(s.group for s in splits.train) else ""))


def _preprocessing_text(data_config: dict[str, Any], in_chans: int) -> str:
    return (f"resize to {data_config['input_size'][1]}x{data_config['input_size'][2]} "
            f"({data_config.get('interpolation')}, crop_pct {data_config.get('crop_pct')}), "
            f"mean {tuple(round(m, 4) for m in data_config['mean'])}, "
            f"std {tuple(round(s, 4) for s in data_config['std'])}; "
            + ("grayscale input (colour images converted to luminance)" if in_chans == 1 else
               "3-channel input (grayscale images replicated to 3 channels)"))


def _class_table(cfg: TrainConfig, data: CardData, counts: dict[str, list[int]]) -> list[str]:
    """The per-class image counts per split (and the synthetic ones, when the run added any), with their note."""
    names, splits = data.source.label_names, data.splits
    synthetic = _synthetic_counts(cfg, splits, names)
    if synthetic is None:
        return ["", _table(["class", "train", "validation", "test"],
                           [[n, counts["train"][c], counts["val"][c], counts["test"][c]]
                            for c, n in enumerate(names)])]
    per_class = ", ".join(f"{n}: {k}" for n, k in synthetic.items() if k) or "none needed"
    return [f"- Synthetic images (DCGAN, as in Ismail et al.'s DCGAN paper) "
            f"from `{cfg.synthetic}`, added to the training split "
            f"only, up to {cfg.target_balance:g} x the largest class's real count: "
            f"{sum(synthetic.values())} in all ({per_class}); validation and test hold real images only. "
            "`split.json` lists them with keys starting `synthetic:`",
            "", _table(["class", "train (real)", "train (synthetic)", "validation", "test"],
                       [[n, counts["train"][c] - synthetic[n], synthetic[n], counts["val"][c],
                         counts["test"][c]] for c, n in enumerate(names)])]


def _data_section(cfg: TrainConfig, data: CardData) -> str:
    source, splits = data.source, data.splits
    counts = {name: class_counts(part, source.num_classes) for name, part in splits.items()}
    lines = [
        f"- Data: {source.description} (`--data {cfg.data}`)",
        f"- Split: {_split_text(cfg, splits)}; every image's split is listed in `split.json`",
        f"- Images: {len(splits.train)} train, {len(splits.val)} validation, {len(splits.test)} test"
        + (f"; {len(source.skipped)} unreadable or missing files skipped (`skipped_files.json`)"
           if source.skipped else ""),
        f"- Preprocessing (from the model's pretrained_cfg via timm): "
        f"{_preprocessing_text(data.data_config, data.in_chans)}",
        *_class_table(cfg, data, counts),
    ]
    return "\n".join(lines)


def _optimiser_text(cfg: TrainConfig, history: list[dict[str, Any]]) -> str:
    lr_text = f"{cfg.lr:g}"
    if cfg.transfer_mode.separate_head_lr and history and "head_lr" in history[0]:
        lr_text += f" (backbone), {history[0]['head_lr']:g} (head)"
    return (f"{cfg.opt}, lr {lr_text}, batch {cfg.batch_size}, weight decay {cfg.weight_decay:g}"
            + (f", momentum {cfg.momentum}" if cfg.opt == "sgd" else "")
            + (f", L1 {cfg.l1:g}" if cfg.l1 else "") + (f", L2 {cfg.l2:g}" if cfg.l2 else "")
            + (f", gradient clipping at {cfg.clip_grad:g}" if cfg.clip_grad else "")
            + (f", dropout {cfg.drop_rate}" if cfg.drop_rate is not None else ""))


def _schedule_text(cfg: TrainConfig, outcome: CardOutcome) -> tuple[str, str]:
    """(the learning-rate schedule, the epochs run and why they stopped)."""
    schedule = (cfg.sched
                + (f" on validation {cfg.monitor} (factor {cfg.plateau_factor}, patience {cfg.plateau_patience}, "
                   f"min lr {cfg.min_lr:g})" if cfg.sched == "plateau" else "")
                + (f" to {cfg.min_lr:g}" if cfg.sched == "cosine" else ""))
    epochs = (f"{len(outcome.history)} of at most {cfg.epochs}"
              + (f"; early stopping after {cfg.patience} epochs without improvement" if cfg.patience else "")
              + ("; stopped early" if outcome.stopped_early else "")
              + (f"; weights from the best validation {cfg.monitor} epoch ({outcome.best_epoch})"
                 if outcome.best_epoch else ""))
    return schedule, epochs


def _recipe_section(cfg: TrainConfig, data: CardData, outcome: CardOutcome) -> str:
    total, trainable = outcome.params
    train_counts = class_counts(data.splits.train, data.source.num_classes)
    timings = outcome.timings
    schedule, epochs = _schedule_text(cfg, outcome)
    lines = [
        f"- Transfer mode: **{cfg.mode}**"
        + (f" (last {cfg.trainable_stages} backbone stage(s) trained)" if cfg.mode == "partial-fine-tune" else "")
        + f"; initial weights: {'ImageNet (offline copy for efficientnet_lite0)' if cfg.use_pretrained else 'random'}"
        + (f", init {cfg.init}" if cfg.init else ""),
        f"- Parameters: {trainable:,} trained of {total:,} ({100.0 * trainable / max(total, 1):.2f}%)",
        f"- Loss: {_loss_text(cfg, train_counts, data.source.label_names)}",
        f"- Sampling: {SAMPLERS[cfg.sampler]}",
        f"- Augmentation: {_AUGMENT[cfg.augment]}",
        f"- Optimiser: {_optimiser_text(cfg, outcome.history)}",
        f"- Schedule: {schedule}",
        f"- Epochs: {epochs}",
        f"- Feature cache: {outcome.cache_note}",
        f"- Seed {cfg.seed}" + (", deterministic kernels" if cfg.deterministic else "")
        + f"; training took {timings.get('train_s', 0.0):.1f} s on {timings.get('device', 'cpu')}"
        + (f" (+{timings['feature_extraction_s']:.1f} s feature extraction)"
           if timings.get("feature_extraction_s") else ""),
        f"- Reproduce: `{reproduce_command(cfg)}` (the resolved options are in `run_config.yaml`)",
    ]
    return "\n".join(lines)


def _evaluation_section(cfg: TrainConfig, names: Sequence[str], outcome: CardOutcome) -> str:
    test = outcome.test
    per_class = test["per_class"]
    per_class_rows = [[n, _fmt(per_class[n]["precision"], 3), _fmt(per_class[n]["sensitivity"], 3),
                       _fmt(per_class[n]["specificity"], 3), _fmt(per_class[n]["f1"], 3),
                       _fmt(per_class[n]["roc_auc"], 3), per_class[n]["support"]] for n in names]
    matrix = test["confusion_matrix"]
    lines = [
        f"The test metrics above are on the held-out test split ({test['num_samples']} images), "
        "computed with scikit-learn; macro averages weight every class equally, specificity is "
        "TN / (TN + FP) per class and ROC-AUC is one-vs-rest for more than two classes. "
        f"Best validation {cfg.monitor}: {_fmt(outcome.best_value)} (epoch {outcome.best_epoch}).",
        "",
        "Per class:",
        "",
        _table(["class", "precision", "sensitivity", "specificity", "F1", "ROC-AUC", "support"],
               per_class_rows),
        "",
        "Confusion matrix (rows: true class, columns: predicted class):",
        "",
        _table(["true \\ predicted", *names], [[n, *matrix[i]] for i, n in enumerate(names)]),
    ]
    return "\n".join(lines)


def _plots_section() -> str:
    return "\n".join([
        f"![Training curves]({PLOT_FILES['curves']})",
        "",
        f"![Confusion matrix]({PLOT_FILES['confusion_matrix']})",
        "",
        f"![ROC curves]({PLOT_FILES['roc']})",
        "",
        "Per-epoch values are in `metrics.json` (`history`).",
    ])


def _limits_section(data: CardData) -> str:
    source = data.source
    lines = [
        f"- Trained and evaluated only on {source.name} ({len(data.splits.test)} test images); expect different "
        "results on images from other scanners, sites or populations.",
        "- Validation metrics chose the epoch and drove the schedule; the test split was used once, "
        "after training.",
    ]
    if source.kind == "bundled":
        lines.append("- The training data are not medical images: this model exists to demonstrate "
                     "the pipeline and transfer-learning modes.")
    return "\n".join(lines)


def run_facts(data: CardData, test: dict[str, Any], evaluated_on: str) -> dict[str, Any]:
    """config.json's "facts" (zoo/model_facts.py) of a run of python -m train: what it is for, what it learned
    from (with n), its test accuracy with n and Wilson interval measured by us, and what it never saw."""
    source, splits = data.source, data.splits
    evaluation = accuracy_with_interval(test, f"{evaluated_on} of {source.name}", by="ours")
    kind = {True: "medical images", False: "not medical images"}.get(source.medical, "images")
    return {
        "intended_use": RUN_INTENDED_USE,
        "training_data": (f"{source.name} ({kind}): {len(splits.train):,} training and {len(splits.val):,} "
                          f"validation images" + (f"; {source.description}" if source.description else "")),
        "training_data_license": None,  # the zoo records no licence for a data set; the description may name one
        "evaluation": [] if evaluation is None else [evaluation.to_dict()],
        "not_tested_on": [f"any image outside {source.name}: other hospitals, scanners, populations and "
                          "modalities than its training images"],
        "failure_modes": frequent_confusions(test["confusion_matrix"], source.label_names, "test"),
    }
