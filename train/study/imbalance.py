"""The imbalance study: one architecture trained with each remedy for an imbalanced training split
(Ali et al.'s QuadSNet paper and Do Hoang's Soft-Attention paper and Ismail et al.'s DCGAN paper), on the same split, with the minority classes' recall reported."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

import zoo

from .._errors import ConfigError
from .common import (StudyConfig, begin, chosen, fmt, mean_std, option, prepare_folder, restate, run_variants, runs_of,
                     say, setup_lines, still_improving, table, test_means, train_run, write_report)

__all__ = ["REMEDIES", "ImbalanceConfig", "run_imbalance_study"]

REMEDIES = {
    "plain-ce": ("plain cross-entropy", {"loss": "ce"}),
    "weighted-ce": ("class-weighted cross-entropy (Do Hoang's Soft-Attention paper)", {"loss": "weighted-ce"}),
    "margin": ("weighted margin loss (Ali et al.'s QuadSNet paper, eq. 2)", {"loss": "margin"}),
    "oversampling": ("class-balanced oversampling", {"sampler": "balanced"}),
    "dcgan": ("DCGAN synthetic minority images (Ismail et al.'s DCGAN paper)", {"loss": "ce"}),
}


@dataclass(frozen=True, kw_only=True)
class ImbalanceConfig(StudyConfig):
    """Options of ``python -m train.study imbalance``."""

    study: ClassVar[str] = "imbalance"
    title: ClassVar[str] = "Imbalanced data: five remedies on one split"
    description: ClassVar[str] = f"{title}: " + "; ".join(f"{k} = {v[0]}" for k, v in REMEDIES.items())

    data: str = restate(StudyConfig, "data", "digits-imbalanced")
    epochs: int = restate(StudyConfig, "epochs", 10)
    seeds: int = restate(StudyConfig, "seeds", 3)
    minority: tuple[str, ...] | None = option(
        "minority classes whose recall is reported and which the DCGAN synthesises; default: classes with "
        "fewer than half the largest class's training images", None, nargs="+", metavar="CLASS")
    remedies: tuple[str, ...] | None = option(f"some of {', '.join(REMEDIES)} (default: all)", None, nargs="+",
                                              choices=tuple(REMEDIES), metavar="REMEDY")
    target_balance: float = option("dcgan: top minority classes up to R x the largest class", 1.0)
    gan_epochs: int = option("DCGAN epochs per class", 300)
    gan_width: int = option("DCGAN width", 32)
    gan_image_size: int | None = option("DCGAN image size; default: the model's input size if a power of two, "
                                        "else 32", None, type=int)
    gan_batch_size: int = option("DCGAN batch size", 64)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "remedies", chosen(self.remedies, tuple(REMEDIES), "--remedies"))  # frozen


def run_imbalance_study(config: ImbalanceConfig | None = None, /, *, argv: Sequence[str] | None = None,
                        **options: Any) -> dict[str, Any]:
    """Train one architecture with each remedy on the same imbalanced split; write the report.
    Options: the fields of :class:`ImbalanceConfig`, as ``config`` and/or keywords (see :func:`.common.begin`).
    """
    cfg, source, counts = begin(ImbalanceConfig, config, options)
    cfg = replace(cfg, minority=_minority(cfg, source.label_names, counts["train"]))
    out, command = prepare_folder(cfg), cfg.command(argv)
    base = cfg.train_config()
    extra: dict[str, Any] = {}
    if "dcgan" in cfg.remedies:
        extra["gan"] = _synthesise(cfg, out, counts["train"])

    def train_one(remedy: str, seed: int) -> dict[str, Any]:
        settings = dict(REMEDIES[remedy][1])
        if remedy == "dcgan":
            settings.update(synthetic=str(out / "synthetic"), target_balance=cfg.target_balance)
        run = train_run(replace(base, **settings), remedy, seed, out)
        if remedy == "dcgan":
            saved = json.loads((out / run["run_dir"] / "config.json").read_text(encoding="utf-8"))
            run["synthetic_images"] = saved["zoo"]["training"].get("synthetic_images")
        return run

    runs = run_variants(cfg, cfg.remedies, train_one)
    if "dcgan" in cfg.remedies:
        extra["gan"]["quality"] = _gan_quality(out, runs)
    summary = _summary(runs, cfg.remedies, cfg.minority)
    plots = [_plot(out / "imbalance.png", summary, cfg.minority)]
    markdown = _markdown(cfg, command, source.description, counts, summary, extra)
    return write_report(cfg, command, runs, summary, plots, markdown, extra)


def _minority(cfg: ImbalanceConfig, names: list[str], train_counts: dict[str, int]) -> tuple[str, ...]:
    """The classes given, else those with fewer than half the largest class's training images, else the smallest."""
    if cfg.minority:
        missing = [m for m in cfg.minority if m not in names]
        if missing:
            raise ConfigError(f"--minority {missing} are not classes of {cfg.data}; its classes are {names}")
        return tuple(cfg.minority)
    largest = max(train_counts.values())
    return tuple(n for n in names if train_counts[n] < 0.5 * largest) or (min(names, key=train_counts.get),)


def _gan_image_size(cfg: ImbalanceConfig) -> int:
    """--gan-image-size, else the classifier's input size when it is a power of two, else 32."""
    if cfg.gan_image_size is not None:
        return cfg.gan_image_size
    model_size = cfg.img_size or zoo.get_architecture(cfg.arch).default_input_size[1]
    return model_size if 8 <= model_size <= 256 and model_size & (model_size - 1) == 0 else 32


def _synthesise(cfg: ImbalanceConfig, out: Path, train_counts: dict[str, int]) -> dict[str, Any]:
    """Train the DCGAN on the minority classes' training images and generate the top-up images."""
    from ..gan import GanConfig, generate_images, train_gan
    from ..synthetic import plan_top_up
    size, minority, seed = _gan_image_size(cfg), list(cfg.minority), cfg.seed_list[0]
    start = time.perf_counter()
    say(f"DCGAN: one generator per minority class {minority}, {cfg.gan_epochs} epochs, {size} px")
    gan = train_gan(GanConfig(data=cfg.data, classes=minority, image_size=size, epochs=cfg.gan_epochs,
                              width=cfg.gan_width, batch_size=cfg.gan_batch_size, seed=seed,
                              split_seed=cfg.split_seed, val_frac=cfg.val_frac, test_frac=cfg.test_frac,
                              out=str(out / "gan"), overwrite=True, quiet=not cfg.verbose, device=cfg.device))
    names = list(train_counts)
    need = plan_top_up([train_counts[n] for n in names], [10 ** 9 if n in minority else 0 for n in names],
                       cfg.target_balance)
    per_class = {n: k for n, k in zip(names, need) if k}
    if not per_class:
        raise ConfigError(f"the minority classes {minority} need no synthetic images at --target-balance "
                          f"{cfg.target_balance} (training counts {train_counts})")
    generate_images(out / "gan", per_class, out / "synthetic", seed=0, overwrite=True, progress=cfg.verbose)
    seconds = time.perf_counter() - start
    say(f"DCGAN: {sum(per_class.values())} synthetic images ({per_class}) in {seconds:.0f} s")
    return {"run_dir": "gan", "synthetic_dir": "synthetic", "image_size": size, "epochs": cfg.gan_epochs,
            "width": cfg.gan_width, "seed": seed, "generated": per_class, "seconds": seconds,
            "steps": {n: v["steps"] for n, v in gan.classes.items()},
            "num_real_images": {n: v["num_real_images"] for n, v in gan.classes.items()}}


def _gan_quality(out: Path, runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Quality of the synthetic set, judged by the plain cross-entropy run of the first seed."""
    from ..synthetic import quality_report
    judge = next((r for r in runs if r["variant"] == "plain-ce"), None)
    if judge is None:
        return None
    report = quality_report(out / "synthetic", out / judge["run_dir"], progress=False)
    return {"classifier": judge["run_dir"], "report": "synthetic/quality/quality.md",
            "classes": report["classes"]}


def _summary(runs: list[dict[str, Any]], remedies: Sequence[str], minority: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    plain = {r["seed"]: r for r in runs if r["variant"] == "plain-ce"}
    for remedy in remedies:
        mine = runs_of(runs, remedy)
        row: dict[str, Any] = {"variant": remedy, "title": REMEDIES[remedy][0], "seeds": [r["seed"] for r in mine],
                               **test_means(mine, ("balanced_accuracy", "f1_macro", "accuracy"))}
        row["val_balanced_accuracy"] = mean_std([r["best_val_balanced_accuracy"] for r in mine])
        row["minority_recall"] = {m: mean_std([r["test_recall"][m] for r in mine]) for m in minority}
        row["mean_minority_recall"] = mean_std([float(np.mean([r["test_recall"][m] for m in minority])) for r in mine])
        row["train_s"] = mean_std([r["train_s"] for r in mine])
        row["best_epoch"] = [r["best_epoch"] for r in mine]
        if remedy != "plain-ce" and plain:
            pairs = [(r["test"]["balanced_accuracy"], plain[r["seed"]]["test"]["balanced_accuracy"])
                     for r in mine if r["seed"] in plain]
            row["vs_plain_ce"] = {"mean_delta_balanced_accuracy": float(np.mean([a - b for a, b in pairs])),
                                  "better": sum(a > b for a, b in pairs), "worse": sum(a < b for a, b in pairs),
                                  "seeds": len(pairs)}
        rows.append(row)
    return rows


def _plot(path: Path, summary: list[dict[str, Any]], minority: Sequence[str]) -> str:
    from ..plots import plt, save_figure
    metrics = [("balanced_accuracy", "balanced accuracy"), ("f1_macro", "macro F1"),
               ("mean_minority_recall", f"minority recall ({', '.join(minority)})")]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(summary) + 2), 4.2))
    width = 0.8 / len(metrics)
    x = np.arange(len(summary))
    for j, (key, label) in enumerate(metrics):
        means = [row[key][0] or 0.0 for row in summary]
        stds = [row[key][1] or 0.0 for row in summary]
        ax.bar(x + (j - (len(metrics) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=label)
    ax.set_xticks(x, [row["variant"] for row in summary])
    lows = [row[k][0] - (row[k][1] or 0.0) for row in summary for k, _ in metrics if row[k][0] is not None]
    ax.set(ylim=(max(0.0, min(lows, default=0.0) - 0.05), 1.0), ylabel="test split",
           title="Imbalance remedies (mean ± std over seeds)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=len(metrics))
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)
    return path.name


def _markdown(cfg: ImbalanceConfig, command: str, description: str, counts: dict[str, dict[str, int]],
              summary: list[dict[str, Any]], extra: dict[str, Any]) -> str:
    header = ["remedy", "balanced accuracy", "macro F1", *[f"recall of {m}" for m in cfg.minority],
              "best val. balanced accuracy", "train time (s)"]
    rows = [[f"{row['variant']}: {row['title']}", fmt(*row["balanced_accuracy"]), fmt(*row["f1_macro"]),
             *[fmt(*row["minority_recall"][m]) for m in cfg.minority], fmt(*row["val_balanced_accuracy"]),
             fmt(*row["train_s"], digits=1)] for row in summary]
    notes = _paired_notes(summary)
    return "\n".join([
        f"# {cfg.title}", "",
        "Seeds 000, 002 and 003 propose different answers to small, imbalanced medical datasets; Mukhlif et al.'s review asks "
        "for comparisons instead of assertions. This study trains one architecture with each remedy on the same "
        "split and reports what it measured.", "",
        "## Setup", "", *setup_lines(cfg, description, counts),
        f"- Minority classes (recall reported): {', '.join(cfg.minority)}", "",
        "## Results (test split)", "", table(header, rows), "",
        "Recall is the sensitivity of a minority class on the (balanced) test split. Train time is wall-clock time "
        "on a shared CPU: it varies with the machine's load, compare it only roughly.", "",
        "![imbalance remedies](imbalance.png)", "",
        *still_improving(summary, cfg.epochs),
        *(["## Against plain cross-entropy (paired by seed)", "", *notes, ""] if notes else []),
        *(_gan_section(cfg, extra["gan"]) if extra.get("gan") else []),
        "## Reproduce", "", f"```bash\n{command}\n```", "",
        "Raw per-run results (test metrics, per-class recall, validation history, time): `results.json`; "
        "options: `study_config.yaml`; every run folder: `runs/`.", "",
        "Bundled digits are not medical images: the study demonstrates the method and the remedies' behaviour "
        "on real but small data, not their clinical value.", "",
    ])


def _paired_notes(summary: list[dict[str, Any]]) -> list[str]:
    """One line per remedy: its test balanced accuracy against plain cross-entropy, seed by seed."""
    notes = []
    for row in summary:
        vs = row.get("vs_plain_ce")
        if not vs:
            continue
        equal = vs["seeds"] - vs["better"] - vs["worse"]
        verdict = ("higher than plain cross-entropy for every seed" if vs["better"] == vs["seeds"] else
                   "lower than plain cross-entropy for every seed" if vs["worse"] == vs["seeds"] else
                   f"higher for {vs['better']}, lower for {vs['worse']}, equal for {equal} of {vs['seeds']} "
                   "seed(s): no consistent effect")
        notes.append(f"- **{row['variant']}**: test balanced accuracy {vs['mean_delta_balanced_accuracy']:+.3f} "
                     f"vs plain cross-entropy on average; {verdict}.")
    return notes


def _per_class(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in values.items())


def _gan_section(cfg: ImbalanceConfig, gan: dict[str, Any]) -> list[str]:
    """The report's section on the DCGAN: how it was trained and the quality of its images."""
    lines = [
        "## The DCGAN remedy", "",
        f"One DCGAN per minority class trained on that class's training images only "
        f"({_per_class(gan['num_real_images'])} images), {gan['epochs']} epochs "
        f"({_per_class(gan['steps'])} steps), {gan['image_size']} px, width {gan['width']}, seed {gan['seed']}; "
        f"{sum(gan['generated'].values())} synthetic images ({_per_class(gan['generated'])}) "
        f"topped the minority classes up to {cfg.target_balance:g} x the largest class, in the training split "
        f"only. The GAN was trained once ({gan['seconds']:.0f} s), so the spread over seeds covers the classifier "
        "only. Generator run: `gan/` (sample grids, losses); images and manifest: `synthetic/`.", "",
    ]
    quality = gan.get("quality")
    if quality:
        from ..synthetic import quality_markdown
        lines += ["Quality of the synthetic images (`synthetic/quality/`), judged by the plain cross-entropy "
                  f"classifier `{quality['classifier']}`:", "",
                  quality_markdown({"classifier": quality["classifier"], "synthetic_set": "synthetic",
                                    "classes": quality["classes"],
                                    "distance": "RMSE of pixel values in [0, 1] at the generator's resolution "
                                                "to the nearest real training image of the class"},
                                   heading=False), ""]
    return lines
