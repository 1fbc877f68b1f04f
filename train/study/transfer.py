"""The transfer study: one architecture trained in each of the zoo's transfer modes (Mukhlif et al.'s review) on the same
split, with trainable parameters, accuracy and training time side by side."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

import zoo

from .._errors import ConfigError
from .common import (StudyConfig, begin, chosen, fmt, mean_curve, mean_std, option, prepare_folder, restate,
                     run_variants, runs_of, setup_lines, still_improving, table, test_means, train_run, write_report)

__all__ = ["TRANSFER_MODES", "TransferConfig", "run_transfer_study"]

# The zoo's modes in the report's order: from scratch, then from the least to the most of the pretrained
# network trained (fine-tune last).
TRANSFER_MODES = zoo.MODE_ORDER


@dataclass(frozen=True, kw_only=True)
class TransferConfig(StudyConfig):
    """Options of ``python -m train.study transfer``."""

    study: ClassVar[str] = "transfer"
    title: ClassVar[str] = "Transfer learning: scratch, feature extraction, partial fine-tuning, fine-tuning"

    arch: str = restate(StudyConfig, "arch", "efficientnet_lite0")
    img_size: int | None = restate(StudyConfig, "img_size", 64)
    epochs: int = restate(StudyConfig, "epochs", 5)
    fine_tune_lr: float = option("backbone lr of fine-tune and partial-fine-tune; the head gets 10x", 1e-4)
    modes: tuple[str, ...] | None = option(f"some of {', '.join(TRANSFER_MODES)} (default: all)", None,
                                           nargs="+", choices=TRANSFER_MODES, metavar="MODE")
    pretrained: bool = option("transfer from the offline ImageNet weights (default: yes)", True)
    trainable_stages: int = option("partial-fine-tune stages", 1)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "modes", chosen(self.modes, TRANSFER_MODES, "--modes"))  # frozen
        info = zoo.get_architecture(self.arch)  # an unknown name fails here, before any data is read
        if self.pretrained and not info.offline_weights:
            raise ConfigError(f"{self.arch} has no offline ImageNet weights, so its transfer modes would start from "
                              "the Hub, which this study does not assume; use --arch efficientnet_lite0 or "
                              "--no-pretrained (transfer from random weights, for teaching only)")


def run_transfer_study(config: TransferConfig | None = None, /, *, argv: Sequence[str] | None = None,
                       **options: Any) -> dict[str, Any]:
    """Train one architecture in each transfer mode on the same split; write the report.
    Options: the fields of :class:`TransferConfig`, as ``config`` and/or keywords (see :func:`.common.begin`).
    """
    cfg, source, counts = begin(TransferConfig, config, options)
    out, command = prepare_folder(cfg), cfg.command(argv)
    base = cfg.train_config()

    def train_one(mode: str, seed: int) -> dict[str, Any]:
        transfer = zoo.get_mode(mode)
        settings: dict[str, Any] = {"mode": mode, "pretrained": cfg.pretrained and transfer.needs_pretrained,
                                    "trainable_stages": cfg.trainable_stages}
        if transfer.separate_head_lr:
            settings["lr"] = cfg.fine_tune_lr  # the backbone's; the head gets the zoo's 10x
        return train_run(replace(base, **settings), mode, seed, out, {"lr": settings.get("lr", cfg.lr)})

    runs = run_variants(cfg, cfg.modes, train_one)
    summary = [_summary_row(cfg, mode, runs_of(runs, mode)) for mode in cfg.modes]
    plots = [_plot(out / "transfer.png", runs, summary)]
    markdown = _markdown(cfg, command, source.description, counts, summary)
    return write_report(cfg, command, runs, summary, plots, markdown)


def _summary_row(cfg: TransferConfig, mode: str, mine: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "variant": mode, "seeds": [r["seed"] for r in mine], "params": mine[0]["params"],
        "initial_weights": "ImageNet" if cfg.pretrained and zoo.get_mode(mode).needs_pretrained else "random",
        "lr": mine[0]["lr"],
        **test_means(mine, ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc")),
        "train_s": mean_std([r["train_s"] for r in mine]),
        "feature_extraction_s": mean_std([r["feature_extraction_s"] for r in mine]),
        "s_per_epoch": mean_std([r["train_s"] / max(r["epochs_run"], 1) for r in mine]),
        "best_epoch": [r["best_epoch"] for r in mine],
    }


def _plot(path: Path, runs: list[dict[str, Any]], summary: list[dict[str, Any]]) -> str:
    from ..plots import plt, save_figure
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for row in summary:
        left.plot(*mean_curve(runs_of(runs, row["variant"]), "val_balanced_accuracy"), "o-", label=row["variant"])
    left.set(title="Validation balanced accuracy", xlabel="epoch", ylim=(0, 1.02))
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    x = np.arange(len(summary))
    times = [(row["train_s"][0] or 0.0) for row in summary]
    extraction = [(row["feature_extraction_s"][0] or 0.0) for row in summary]
    right.bar(x, times, label="training")
    right.bar(x, extraction, bottom=times, label="one-off feature extraction")
    for i, row in enumerate(summary):
        right.annotate(f"{row['params']['trainable']:,} trainable", (i, times[i] + extraction[i]),
                       ha="center", va="bottom", fontsize=8)
    right.set_xticks(x, [row["variant"] for row in summary])
    right.set_ylim(0, 1.2 * max([t + e for t, e in zip(times, extraction)] + [1e-3]))  # room for the labels
    right.set(title="Training time (s) and trainable parameters", ylabel="seconds")
    right.legend(fontsize=8)
    right.grid(axis="y", alpha=0.3)
    save_figure(fig, path)
    return path.name


def _markdown(cfg: TransferConfig, command: str, description: str, counts: dict[str, dict[str, int]],
              summary: list[dict[str, Any]]) -> str:
    header = ["mode", "initial weights", "lr", "trainable / total params", "test accuracy", "balanced accuracy",
              "macro F1", "ROC-AUC", "training time (s)", "s / epoch", "best epoch"]
    rows = []
    for row in summary:
        p = row["params"]
        time_text = fmt(*row["train_s"], digits=1)
        if row["feature_extraction_s"][0]:
            time_text += f" (+{row['feature_extraction_s'][0]:.1f} extraction)"
        rows.append([row["variant"], row["initial_weights"], f"{row['lr']:g}",
                     f"{p['trainable']:,} / {p['total']:,} ({100 * p['trainable'] / max(p['total'], 1):.1f} %)",
                     fmt(*row["accuracy"]), fmt(*row["balanced_accuracy"]), fmt(*row["f1_macro"]),
                     fmt(*row["roc_auc"]), time_text, fmt(*row["s_per_epoch"], digits=2),
                     ", ".join(map(str, row["best_epoch"]))])
    return "\n".join([
        f"# {cfg.title}", "",
        "Seed 001 compares feature extraction with fine-tuning; this study measures all four modes of the zoo "
        "on the same architecture, data and split.", "",
        "## Setup", "", *setup_lines(cfg, description, counts),
        f"- Modes: scratch (random weights, all trained, lr {cfg.lr:g}); feature-extraction (frozen "
        f"{'ImageNet' if cfg.pretrained else 'random'} backbone, only the head trained, lr {cfg.lr:g}, "
        f"features cached after one pass); partial-fine-tune (head + last {cfg.trainable_stages} stage(s), "
        f"backbone lr {cfg.fine_tune_lr:g}, head 10x); fine-tune (all trained, backbone lr "
        f"{cfg.fine_tune_lr:g}, head 10x). The learning rates were fixed before the study, not tuned on its "
        "results.", "",
        "## Results (test split)", "", table(header, rows), "",
        "![transfer modes](transfer.png)", "",
        "Training time is wall-clock time of the training loop on this machine (shared CPU: compare the modes, not "
        "the absolute seconds); feature extraction's one-off backbone pass is listed separately.", "",
        *still_improving(summary, cfg.epochs),
        "## Reproduce", "", f"```bash\n{command}\n```", "",
        "Raw per-run results: `results.json`; options: `study_config.yaml`; every run folder: `runs/`.", "",
    ])
