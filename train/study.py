"""Studies that measure choices instead of asserting them (seed 001): imbalance remedies, transfer
modes and initialisation schemes, each trained with ``python -m train`` and reported as tables and plots.

    python -m train.study imbalance --data digits-imbalanced --arch lenet5 --img-size 32 --seeds 3
    python -m train.study transfer --data digits --arch efficientnet_lite0 --img-size 64
    python -m train.study init --data digits --arch lenet5 --img-size 32

Every run of a study uses the same split (``--split-seed``); seeds change only initialisation and
order. Each run keeps the weights of its best *validation* epoch; nothing is chosen on the test split,
which is scored once per run and reported as measured, including when a remedy does not help.

Report folder (default ``weights/studies/<study>/``, gitignored; the app's teaching tab lists the
folders under ``weights/studies/`` that hold a ``results.json``)::

    weights/studies/<study>/
      report.md          the report: what was compared and how, the measured tables, the plots, the command
      results.json       {"study", "title", "created", "command", "config", "summary": [row per variant],
                          "runs": [raw result per run], "plots": [file names], "report": "report.md"}
      study_config.yaml  the resolved options
      <study>.png        the plot(s) named in results.json["plots"]
      runs/<variant>-seed<k>/   each training run, in python -m train's run-folder layout
      gan/               (imbalance) the DCGAN run folder (python -m train.gan)
      synthetic/         (imbalance) its synthetic images, manifest.json and quality/quality.{md,json}
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import shlex
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import yaml

import zoo

from ._errors import ConfigError, TrainError, TrainingInterrupted
from .checkpoint import atomic_write, write_json
from .config import TrainConfig
from .data import class_counts, load_source, make_splits, verify_images
from .metrics import METRIC_TITLES

__all__ = ["STUDIES", "REMEDIES", "TRANSFER_MODES", "run_imbalance_study", "run_transfer_study",
           "run_init_study", "main", "STUDIES_DIR"]

STUDIES_DIR = Path("weights") / "studies"
REMEDIES = {
    "plain-ce": ("plain cross-entropy", {"loss": "ce"}),
    "weighted-ce": ("class-weighted cross-entropy (seed 002)", {"loss": "weighted-ce"}),
    "margin": ("weighted margin loss (seed 000, eq. 2)", {"loss": "margin"}),
    "oversampling": ("class-balanced oversampling", {"sampler": "balanced"}),
    "dcgan": ("DCGAN synthetic minority images (seed 003)", {"loss": "ce"}),
}
TRANSFER_MODES = ("scratch", "feature-extraction", "partial-fine-tune", "fine-tune")
STUDIES = {
    "imbalance": "Imbalanced data: five remedies on one split",
    "transfer": "Transfer learning: scratch, feature extraction, partial fine-tuning, fine-tuning",
    "init": "Weight initialisation schemes (seed 004) on a from-scratch model",
}
_REPORT_FILES = ("report.md", "results.json", "study_config.yaml")


# --- shared plumbing ------------------------------------------------------------------------------

def _say(text: str) -> None:
    from tqdm import tqdm
    tqdm.write(text, file=sys.stdout)


def _prepare_folder(out: Path, overwrite: bool) -> None:
    """Refuse an existing report without overwrite; with it, remove only what a study writes."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out} already holds a study report; pass --overwrite to replace it or choose "
                              "another --out")
        for name in ("runs", "gan", "synthetic"):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
        for path in out.glob("*"):
            if path.is_file() and (path.name in _REPORT_FILES or path.suffix == ".png"):
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _base_config(opts: dict[str, Any]) -> TrainConfig:
    return TrainConfig(arch=opts["arch"], data=opts["data"], img_size=opts.get("img_size"), epochs=opts["epochs"],
                       batch_size=opts["batch_size"], lr=opts["lr"], split_seed=opts["split_seed"],
                       val_frac=opts["val_frac"], test_frac=opts["test_frac"], device=opts["device"],
                       quiet=not opts["verbose"], overwrite=True, monitor="balanced_accuracy")


def _train(cfg: TrainConfig, variant: str, seed: int, out: Path, extra: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    """One run of a study; returns its raw result (test metrics, validation history, parameters, time)."""
    from .runner import run_training
    name = f"{variant}-seed{seed}"
    result = run_training(replace(cfg, seed=seed, out=str(out / "runs" / name), name=name))
    gc.collect()  # free the run's trainer now, and with it its data-loader worker processes
    test = result.test
    return {
        "variant": variant, "seed": seed, "run_dir": f"runs/{name}",
        "test": result.metrics,
        "test_recall": {n: v["sensitivity"] for n, v in test["per_class"].items()},
        "best_epoch": result.best_epoch, "epochs_run": len(result.history),
        "best_val_balanced_accuracy": max((h["val_balanced_accuracy"] for h in result.history), default=None),
        "history": [{k: h.get(k) for k in ("epoch", "train_loss", "val_loss", "val_accuracy",
                                            "val_balanced_accuracy", "val_f1_macro", "time_s")}
                    for h in result.history],
        "params": {"total": result.params[0], "trainable": result.params[1]},
        "train_s": result.timing["train_s"], "feature_extraction_s": result.timing["feature_extraction_s"],
        **(extra or {}),
    }


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def _fmt(mean: float | None, std: float | None, digits: int = 3) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _command(study: str, argv: Sequence[str] | None, opts: dict[str, Any]) -> str:
    if argv is not None:
        return "python -m train.study " + shlex.join([study, *argv])
    parts = [study]
    for key, value in opts.items():
        if value is None or value is False or key in ("overwrite", "verbose"):
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, (list, tuple)):
            parts += [flag, *map(str, value)]
        else:
            parts += [flag, str(value)]
    return "python -m train.study " + shlex.join(parts)


def _write_report(out: Path, study: str, opts: dict[str, Any], command: str, runs: list[dict[str, Any]],
                  summary: list[dict[str, Any]], plots: list[str], markdown: str,
                  extra: dict[str, Any] | None = None) -> Path:
    (out / "study_config.yaml").write_text(yaml.safe_dump({"study": study, "command": command, **opts},
                                                          sort_keys=False), encoding="utf-8")
    write_json(out / "results.json", {
        "study": study, "title": STUDIES[study], "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command, "config": opts, "summary": summary, "runs": runs, "plots": plots,
        "report": "report.md", **(extra or {})})
    with atomic_write(out / "report.md", "w") as f:
        f.write(markdown)
    return out / "report.md"


def _setup_lines(opts: dict[str, Any], source_description: str, counts: dict[str, dict[str, int]]) -> list[str]:
    seeds = opts["seeds"]
    return [
        f"- Data: `{opts['data']}`: {source_description}",
        f"- Split: one split for every run (split seed {opts['split_seed']}); training counts "
        f"{counts['train']}, validation {sum(counts['val'].values())} images, test {sum(counts['test'].values())} images",
        f"- Model: `{opts['arch']}` at {opts.get('img_size') or 'its default'} px; at most {opts['epochs']} epoch(s), batch "
        f"{opts['batch_size']}, Adam, reduce-on-plateau on validation balanced accuracy",
        f"- Seeds: {', '.join(map(str, seeds))} (initialisation and order; the split stays fixed); values are "
        f"mean ± sample standard deviation over the seeds" if len(seeds) > 1 else
        f"- Seed: {seeds[0]} (one seed: no spread is shown; run with --seeds 3 or more to see it)",
        "- Selection: every run keeps the weights of its best **validation** epoch (balanced accuracy); the test "
        "split is scored once per run, after training, and never used to choose anything",
    ]


def _split_counts(opts: dict[str, Any]):
    source = verify_images(load_source(opts["data"]))
    splits = make_splits(source, opts["val_frac"], opts["test_frac"], opts["split_seed"])
    counts = {name: dict(zip(source.label_names, class_counts(part, source.num_classes)))
              for name, part in splits.items()}
    return source, counts


def _progress(total: int, desc: str):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="run", dynamic_ncols=True, leave=False)


def _run_line(index: int, total: int, run: dict[str, Any]) -> str:
    t = run["test"]
    return (f"[{index}/{total}] {run['variant']} seed {run['seed']}: test balanced accuracy "
            f"{t.get('balanced_accuracy', float('nan')):.4f}, macro F1 {t.get('f1_macro', float('nan')):.4f} "
            f"(best validation {run['best_val_balanced_accuracy']:.4f} at epoch {run['best_epoch']}), "
            f"{run['train_s']:.0f} s")


# --- imbalance ------------------------------------------------------------------------------------

def run_imbalance_study(*, data: str = "digits-imbalanced", arch: str = "lenet5", img_size: int | None = 32,
                        epochs: int = 10, batch_size: int = 32, lr: float = 1e-3, seeds: int = 3,
                        split_seed: int = 42, val_frac: float = 0.15, test_frac: float = 0.15,
                        minority: Sequence[str] | None = None, remedies: Sequence[str] | None = None,
                        target_balance: float = 1.0, gan_epochs: int = 300, gan_width: int = 32,
                        gan_image_size: int | None = None, gan_batch_size: int = 64,
                        out: str | Path | None = None, overwrite: bool = False, verbose: bool = False,
                        device: str = "auto", argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train one architecture with each remedy on the same imbalanced split; write the report."""
    remedies = list(remedies or REMEDIES)
    unknown = [r for r in remedies if r not in REMEDIES]
    if unknown:
        raise ConfigError(f"--remedies {unknown} unknown; choose from {list(REMEDIES)}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    out = Path(out) if out is not None else STUDIES_DIR / "imbalance"
    opts = dict(data=data, arch=arch, img_size=img_size, epochs=epochs, batch_size=batch_size, lr=lr,
                seeds=list(range(seeds)), split_seed=split_seed, val_frac=val_frac, test_frac=test_frac,
                minority=list(minority) if minority else None, remedies=remedies, target_balance=target_balance,
                gan_epochs=gan_epochs, gan_width=gan_width, gan_image_size=gan_image_size,
                gan_batch_size=gan_batch_size, device=device, verbose=verbose)
    source, counts = _split_counts(opts)
    train_counts = counts["train"]
    names = source.label_names
    if minority:
        missing = [m for m in minority if m not in names]
        if missing:
            raise ConfigError(f"--minority {missing} are not classes of {data}; its classes are {names}")
        minority = list(minority)
    else:  # classes with fewer than half the largest class's training images, else the smallest one
        largest = max(train_counts.values())
        minority = [n for n in names if train_counts[n] < 0.5 * largest] or [min(names, key=train_counts.get)]
    opts["minority"] = minority
    _prepare_folder(out, overwrite)
    command = _command("imbalance", argv, {k: v for k, v in opts.items() if k != "seeds"} | {"seeds": seeds})
    base = _base_config(opts)
    extra: dict[str, Any] = {}
    if "dcgan" in remedies:
        extra["gan"] = _synthesise(opts, out, source, train_counts, minority, base)
    runs: list[dict[str, Any]] = []
    plan = [(r, s) for r in remedies for s in opts["seeds"]]
    bar = _progress(len(plan), "imbalance study")
    for i, (remedy, seed) in enumerate(plan, start=1):
        settings = dict(REMEDIES[remedy][1])
        if remedy == "dcgan":
            settings.update(synthetic=str(out / "synthetic"), target_balance=target_balance)
        run = _train(replace(base, **settings), remedy, seed, out)
        if remedy == "dcgan":
            cfg = json.loads((out / run["run_dir"] / "config.json").read_text(encoding="utf-8"))
            run["synthetic_images"] = cfg["zoo"]["training"].get("synthetic_images")
        runs.append(run)
        bar.update(1)
        _say(_run_line(i, len(plan), run))
    bar.close()
    if "dcgan" in remedies:
        extra["gan"]["quality"] = _gan_quality(out, runs)
    summary = _imbalance_summary(runs, remedies, minority)
    plots = [_plot_imbalance(out / "imbalance.png", summary, minority)]
    markdown = _imbalance_markdown(opts, command, source.description, counts, summary, runs, minority, extra)
    _write_report(out, "imbalance", opts, command, runs, summary, plots, markdown, extra)
    _say(f"report: {out / 'report.md'}")
    return {"out": out, "summary": summary, "runs": runs, **extra}


def _synthesise(opts: dict[str, Any], out: Path, source, train_counts: dict[str, int], minority: list[str],
                base: TrainConfig) -> dict[str, Any]:
    """Train the DCGAN on the minority classes' training images and generate the top-up images."""
    from .gan import GanConfig, generate_images, train_gan
    from .synthetic import plan_top_up
    size = opts["gan_image_size"]
    if size is None:  # the classifier's input size when it is a power of two, else 32
        model_size = opts.get("img_size") or zoo.get_architecture(opts["arch"]).default_input_size[1]
        size = model_size if model_size >= 8 and model_size & (model_size - 1) == 0 and model_size <= 256 else 32
    start = time.perf_counter()
    _say(f"DCGAN: one generator per minority class {minority}, {opts['gan_epochs']} epochs, {size} px")
    gan = train_gan(GanConfig(data=opts["data"], classes=minority, image_size=size, epochs=opts["gan_epochs"],
                              width=opts["gan_width"], batch_size=opts["gan_batch_size"], seed=opts["seeds"][0],
                              split_seed=opts["split_seed"], val_frac=opts["val_frac"], test_frac=opts["test_frac"],
                              out=str(out / "gan"), overwrite=True, quiet=not opts["verbose"],
                              device=opts["device"]))
    names = list(train_counts)
    need = plan_top_up([train_counts[n] for n in names], [10 ** 9 if n in minority else 0 for n in names],
                       opts["target_balance"])
    per_class = {n: k for n, k in zip(names, need) if k}
    if not per_class:
        raise ConfigError(f"the minority classes {minority} need no synthetic images at --target-balance "
                          f"{opts['target_balance']} (training counts {train_counts})")
    generate_images(out / "gan", per_class, out / "synthetic", seed=0, overwrite=True, progress=opts["verbose"])
    seconds = time.perf_counter() - start
    _say(f"DCGAN: {sum(per_class.values())} synthetic images ({per_class}) in {seconds:.0f} s")
    return {"run_dir": "gan", "synthetic_dir": "synthetic", "image_size": size, "epochs": opts["gan_epochs"],
            "width": opts["gan_width"], "seed": opts["seeds"][0], "generated": per_class, "seconds": seconds,
            "steps": {n: v["steps"] for n, v in gan.classes.items()},
            "num_real_images": {n: v["num_real_images"] for n, v in gan.classes.items()}}


def _gan_quality(out: Path, runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Quality of the synthetic set, judged by the plain cross-entropy run of the first seed."""
    from .synthetic import quality_report
    judge = next((r for r in runs if r["variant"] == "plain-ce"), None)
    if judge is None:
        return None
    report = quality_report(out / "synthetic", out / judge["run_dir"], progress=False)
    return {"classifier": judge["run_dir"], "report": "synthetic/quality/quality.md",
            "classes": report["classes"]}


def _imbalance_summary(runs: list[dict[str, Any]], remedies: list[str], minority: list[str]) -> list[dict[str, Any]]:
    rows = []
    plain = {r["seed"]: r for r in runs if r["variant"] == "plain-ce"}
    for remedy in remedies:
        mine = [r for r in runs if r["variant"] == remedy]
        row: dict[str, Any] = {"variant": remedy, "title": REMEDIES[remedy][0], "seeds": [r["seed"] for r in mine]}
        for metric in ("balanced_accuracy", "f1_macro", "accuracy"):
            row[metric] = _mean_std([r["test"].get(metric) for r in mine])
        row["val_balanced_accuracy"] = _mean_std([r["best_val_balanced_accuracy"] for r in mine])
        row["minority_recall"] = {m: _mean_std([r["test_recall"][m] for r in mine]) for m in minority}
        row["mean_minority_recall"] = _mean_std([float(np.mean([r["test_recall"][m] for m in minority])) for r in mine])
        row["train_s"] = _mean_std([r["train_s"] for r in mine])
        row["best_epoch"] = [r["best_epoch"] for r in mine]
        if remedy != "plain-ce" and plain:
            pairs = [(r["test"]["balanced_accuracy"], plain[r["seed"]]["test"]["balanced_accuracy"])
                     for r in mine if r["seed"] in plain]
            row["vs_plain_ce"] = {"mean_delta_balanced_accuracy": float(np.mean([a - b for a, b in pairs])),
                                  "better": sum(a > b for a, b in pairs), "worse": sum(a < b for a, b in pairs),
                                  "seeds": len(pairs)}
        rows.append(row)
    return rows


def _plot_imbalance(path: Path, summary: list[dict[str, Any]], minority: list[str]) -> str:
    from .plots import _save, plt
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
    _save(fig, path)
    return path.name


def _per_class(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in values.items())


def _imbalance_markdown(opts, command, description, counts, summary, runs, minority, extra) -> str:
    header = ["remedy", "balanced accuracy", "macro F1", *[f"recall of {m}" for m in minority],
              "best val. balanced accuracy", "train time (s)"]
    rows = [[f"{row['variant']}: {row['title']}", _fmt(*row["balanced_accuracy"]), _fmt(*row["f1_macro"]),
             *[_fmt(*row["minority_recall"][m]) for m in minority], _fmt(*row["val_balanced_accuracy"]),
             _fmt(*row["train_s"], digits=1)] for row in summary]
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
    gan_lines = []
    gan = extra.get("gan")
    if gan:
        gan_lines = [
            "## The DCGAN remedy", "",
            f"One DCGAN per minority class trained on that class's training images only "
            f"({_per_class(gan['num_real_images'])} images), {gan['epochs']} epochs "
            f"({_per_class(gan['steps'])} steps), {gan['image_size']} px, width {gan['width']}, seed {gan['seed']}; "
            f"{sum(gan['generated'].values())} synthetic images ({_per_class(gan['generated'])}) "
            f"topped the minority classes up to {opts['target_balance']:g} x the largest class, in the training split "
            f"only. The GAN was trained once ({gan['seconds']:.0f} s), so the spread over seeds covers the classifier "
            "only. Generator run: `gan/` (sample grids, losses); images and manifest: `synthetic/`.", "",
        ]
        quality = gan.get("quality")
        if quality:
            from .synthetic import quality_markdown
            gan_lines += ["Quality of the synthetic images (`synthetic/quality/`), judged by the plain cross-entropy "
                          f"classifier `{quality['classifier']}`:", "",
                          quality_markdown({"classifier": quality["classifier"], "synthetic_set": "synthetic",
                                            "classes": quality["classes"],
                                            "distance": "RMSE of pixel values in [0, 1] at the generator's resolution "
                                                        "to the nearest real training image of the class"},
                                           heading=False), ""]
    return "\n".join([
        f"# {STUDIES['imbalance']}", "",
        "Seeds 000, 002 and 003 propose different answers to small, imbalanced medical datasets; seed 001 asks "
        "for comparisons instead of assertions. This study trains one architecture with each remedy on the same "
        "split and reports what it measured.", "",
        "## Setup", "", *_setup_lines(opts, description, counts),
        f"- Minority classes (recall reported): {', '.join(minority)}", "",
        "## Results (test split)", "", _table(header, rows), "",
        "Recall is the sensitivity of a minority class on the (balanced) test split. Train time is wall-clock time "
        "on a shared CPU: it varies with the machine's load, compare it only roughly.", "",
        "![imbalance remedies](imbalance.png)", "",
        *_still_improving(summary, opts["epochs"]),
        *(["## Against plain cross-entropy (paired by seed)", "", *notes, ""] if notes else []),
        *gan_lines,
        "## Reproduce", "", f"```bash\n{command}\n```", "",
        "Raw per-run results (test metrics, per-class recall, validation history, time): `results.json`; "
        "options: `study_config.yaml`; every run folder: `runs/`.", "",
        "Bundled digits are not medical images: the study demonstrates the method and the remedies' behaviour "
        "on real but small data, not their clinical value.", "",
    ])


# --- transfer -------------------------------------------------------------------------------------

def run_transfer_study(*, data: str = "digits", arch: str = "efficientnet_lite0", img_size: int | None = 64,
                       epochs: int = 5, batch_size: int = 32, lr: float = 1e-3, fine_tune_lr: float = 1e-4,
                       seeds: int = 1, split_seed: int = 42, val_frac: float = 0.15, test_frac: float = 0.15,
                       modes: Sequence[str] | None = None, pretrained: bool = True, trainable_stages: int = 1,
                       out: str | Path | None = None, overwrite: bool = False, verbose: bool = False,
                       device: str = "auto", argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train one architecture in each transfer mode on the same split; write the report."""
    modes = list(modes or TRANSFER_MODES)
    unknown = [m for m in modes if m not in TRANSFER_MODES]
    if unknown:
        raise ConfigError(f"--modes {unknown} unknown; choose from {list(TRANSFER_MODES)}")
    info = zoo.get_architecture(arch)
    if pretrained and not info.offline_weights:
        raise ConfigError(f"{arch} has no offline ImageNet weights, so its transfer modes would start from the Hub, "
                          "which this study does not assume; use --arch efficientnet_lite0 or --no-pretrained "
                          "(transfer from random weights, for teaching only)")
    out = Path(out) if out is not None else STUDIES_DIR / "transfer"
    opts = dict(data=data, arch=arch, img_size=img_size, epochs=epochs, batch_size=batch_size, lr=lr,
                fine_tune_lr=fine_tune_lr, seeds=list(range(seeds)), split_seed=split_seed, val_frac=val_frac,
                test_frac=test_frac, modes=modes, pretrained=pretrained, trainable_stages=trainable_stages,
                device=device, verbose=verbose)
    source, counts = _split_counts(opts)
    _prepare_folder(out, overwrite)
    command = _command("transfer", argv, {k: v for k, v in opts.items() if k != "seeds"} | {"seeds": seeds})
    base = _base_config(opts)
    runs = []
    plan = [(m, s) for m in modes for s in opts["seeds"]]
    bar = _progress(len(plan), "transfer study")
    for i, (mode, seed) in enumerate(plan, start=1):
        settings: dict[str, Any] = {"mode": mode, "pretrained": pretrained and mode != "scratch",
                                    "trainable_stages": trainable_stages}
        if mode in ("fine-tune", "partial-fine-tune"):
            settings["lr"] = fine_tune_lr  # the backbone's; the head gets the zoo's 10x
        run = _train(replace(base, **settings), mode, seed, out, {"lr": settings.get("lr", lr)})
        runs.append(run)
        bar.update(1)
        _say(_run_line(i, len(plan), run))
    bar.close()
    summary = []
    for mode in modes:
        mine = [r for r in runs if r["variant"] == mode]
        summary.append({
            "variant": mode, "seeds": [r["seed"] for r in mine], "params": mine[0]["params"],
            "initial_weights": "ImageNet" if pretrained and mode != "scratch" else "random",
            "lr": mine[0]["lr"],
            **{m: _mean_std([r["test"].get(m) for r in mine])
               for m in ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc")},
            "train_s": _mean_std([r["train_s"] for r in mine]),
            "feature_extraction_s": _mean_std([r["feature_extraction_s"] for r in mine]),
            "s_per_epoch": _mean_std([r["train_s"] / max(r["epochs_run"], 1) for r in mine]),
            "best_epoch": [r["best_epoch"] for r in mine],
        })
    plots = [_plot_transfer(out / "transfer.png", runs, summary)]
    markdown = _transfer_markdown(opts, command, source.description, counts, summary)
    _write_report(out, "transfer", opts, command, runs, summary, plots, markdown)
    _say(f"report: {out / 'report.md'}")
    return {"out": out, "summary": summary, "runs": runs}


def _mean_curve(runs: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    length = min(len(r["history"]) for r in runs)
    epochs = [runs[0]["history"][i]["epoch"] for i in range(length)]
    values = [float(np.mean([r["history"][i][key] if r["history"][i][key] is not None else np.nan for r in runs]))
              for i in range(length)]
    return epochs, values


def _plot_transfer(path: Path, runs, summary) -> str:
    from .plots import _save, plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for row in summary:
        mine = [r for r in runs if r["variant"] == row["variant"]]
        left.plot(*_mean_curve(mine, "val_balanced_accuracy"), "o-", label=row["variant"])
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
    _save(fig, path)
    return path.name


def _still_improving(summary: list[dict[str, Any]], epochs: int) -> list[str]:
    """A note naming the variants whose best validation epoch was the last one, if any."""
    late = [row["variant"] for row in summary if any(e == epochs for e in row["best_epoch"])]
    if not late:
        return []
    return [f"Still improving at the last epoch ({epochs}) for {', '.join(late)}: their best validation epoch was the "
            "last one, so longer training could change the ranking; these numbers are a reduced, "
            "fixed-budget comparison.", ""]


def _transfer_markdown(opts, command, description, counts, summary) -> str:
    header = ["mode", "initial weights", "lr", "trainable / total params", "test accuracy", "balanced accuracy",
              "macro F1", "ROC-AUC", "training time (s)", "s / epoch", "best epoch"]
    rows = []
    for row in summary:
        p = row["params"]
        time_text = _fmt(*row["train_s"], digits=1)
        if row["feature_extraction_s"][0]:
            time_text += f" (+{row['feature_extraction_s'][0]:.1f} extraction)"
        rows.append([row["variant"], row["initial_weights"], f"{row['lr']:g}",
                     f"{p['trainable']:,} / {p['total']:,} ({100 * p['trainable'] / max(p['total'], 1):.1f} %)",
                     _fmt(*row["accuracy"]), _fmt(*row["balanced_accuracy"]), _fmt(*row["f1_macro"]),
                     _fmt(*row["roc_auc"]), time_text, _fmt(*row["s_per_epoch"], digits=2),
                     ", ".join(map(str, row["best_epoch"]))])
    return "\n".join([
        f"# {STUDIES['transfer']}", "",
        "Seed 001 compares feature extraction with fine-tuning; this study measures all four modes of the zoo "
        "on the same architecture, data and split.", "",
        "## Setup", "", *_setup_lines(opts, description, counts),
        f"- Modes: scratch (random weights, all trained, lr {opts['lr']:g}); feature-extraction (frozen "
        f"{'ImageNet' if opts['pretrained'] else 'random'} backbone, only the head trained, lr {opts['lr']:g}, "
        f"features cached after one pass); partial-fine-tune (head + last {opts['trainable_stages']} stage(s), "
        f"backbone lr {opts['fine_tune_lr']:g}, head 10x); fine-tune (all trained, backbone lr "
        f"{opts['fine_tune_lr']:g}, head 10x). The learning rates were fixed before the study, not tuned on its "
        "results.", "",
        "## Results (test split)", "", _table(header, rows), "",
        "![transfer modes](transfer.png)", "",
        "Training time is wall-clock time of the training loop on this machine (shared CPU: compare the modes, not "
        "the absolute seconds); feature extraction's one-off backbone pass is listed separately.", "",
        *_still_improving(summary, opts["epochs"]),
        "## Reproduce", "", f"```bash\n{command}\n```", "",
        "Raw per-run results: `results.json`; options: `study_config.yaml`; every run folder: `runs/`.", "",
    ])


# --- init -----------------------------------------------------------------------------------------

def run_init_study(*, data: str = "digits", arch: str = "lenet5", img_size: int | None = 32, epochs: int = 8,
                   batch_size: int = 32, lr: float = 1e-3, seeds: int = 1, split_seed: int = 42,
                   val_frac: float = 0.15, test_frac: float = 0.15, schemes: Sequence[str] | None = None,
                   out: str | Path | None = None, overwrite: bool = False, verbose: bool = False,
                   device: str = "auto", argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train a from-scratch model with each initialisation scheme of seed 004; write the report."""
    schemes = list(schemes or ["default", *zoo.INIT_SCHEMES])
    unknown = [s for s in schemes if s != "default" and s not in zoo.INIT_SCHEMES]
    if unknown:
        raise ConfigError(f"--schemes {unknown} unknown; choose from default, {', '.join(zoo.INIT_SCHEMES)}")
    out = Path(out) if out is not None else STUDIES_DIR / "init"
    opts = dict(data=data, arch=arch, img_size=img_size, epochs=epochs, batch_size=batch_size, lr=lr,
                seeds=list(range(seeds)), split_seed=split_seed, val_frac=val_frac, test_frac=test_frac,
                schemes=schemes, device=device, verbose=verbose)
    source, counts = _split_counts(opts)
    _prepare_folder(out, overwrite)
    command = _command("init", argv, {k: v for k, v in opts.items() if k != "seeds"} | {"seeds": seeds})
    base = replace(_base_config(opts), mode="scratch", pretrained=False)
    runs = []
    plan = [(s, k) for s in schemes for k in opts["seeds"]]
    bar = _progress(len(plan), "init study")
    for i, (scheme, seed) in enumerate(plan, start=1):
        run = _train(replace(base, init=None if scheme == "default" else scheme), scheme, seed, out)
        runs.append(run)
        bar.update(1)
        _say(_run_line(i, len(plan), run))
    bar.close()
    summary = []
    for scheme in schemes:
        mine = [r for r in runs if r["variant"] == scheme]
        first = [r["history"][0]["val_balanced_accuracy"] for r in mine]
        summary.append({
            "variant": scheme, "seeds": [r["seed"] for r in mine],
            "val_balanced_accuracy_epoch1": _mean_std(first),
            "best_val_balanced_accuracy": _mean_std([r["best_val_balanced_accuracy"] for r in mine]),
            "final_val_loss": _mean_std([r["history"][-1]["val_loss"] for r in mine]),
            "best_epoch": [r["best_epoch"] for r in mine],
            **{m: _mean_std([r["test"].get(m) for r in mine]) for m in ("accuracy", "balanced_accuracy", "f1_macro")},
        })
    plots = [_plot_init(out / "init.png", runs, summary)]
    markdown = _init_markdown(opts, command, source.description, counts, summary)
    _write_report(out, "init", opts, command, runs, summary, plots, markdown)
    _say(f"report: {out / 'report.md'}")
    return {"out": out, "summary": summary, "runs": runs}


def _plot_init(path: Path, runs, summary) -> str:
    from .plots import _save, plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    cmap = plt.get_cmap("tab20")
    for i, row in enumerate(summary):
        mine = [r for r in runs if r["variant"] == row["variant"]]
        style = dict(color=cmap(i % 20), label=row["variant"], marker="o", markersize=3)
        left.plot(*_mean_curve(mine, "val_balanced_accuracy"), **style)
        right.plot(*_mean_curve(mine, "val_loss"), **style)
    left.set(title="Validation balanced accuracy", xlabel="epoch", ylim=(0, 1.02))
    right.set(title="Validation loss", xlabel="epoch", yscale="log")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    right.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle("Initialisation schemes (seed 004), from scratch")
    _save(fig, path)
    return path.name


def _init_markdown(opts, command, description, counts, summary) -> str:
    header = ["scheme", "val. balanced accuracy after epoch 1", "best val. balanced accuracy", "best epoch",
              "final val. loss", "test accuracy", "test balanced accuracy", "test macro F1"]
    rows = [[row["variant"], _fmt(*row["val_balanced_accuracy_epoch1"]), _fmt(*row["best_val_balanced_accuracy"]),
             ", ".join(map(str, row["best_epoch"])), _fmt(*row["final_val_loss"]), _fmt(*row["accuracy"]),
             _fmt(*row["balanced_accuracy"]), _fmt(*row["f1_macro"])] for row in summary]
    return "\n".join([
        f"# {STUDIES['init']}", "",
        "Seed 004 (section III.D) surveys weight initialisation schemes and says the best choice depends on the "
        "network and the data, to be found by experiment. This study is that experiment for one from-scratch "
        "model: every conv and linear layer is re-initialised with the scheme (biases zero, batch norm 1/0); "
        "`default` is the architecture's own initialisation.", "",
        "## Setup", "", *_setup_lines(opts, description, counts), "",
        "## Results", "", _table(header, rows), "",
        "![initialisation schemes](init.png)", "",
        "Validation curves show how fast each scheme learns; the test columns are the weights of each run's "
        "best validation epoch. `zeros` makes every unit of a layer identical, so it is expected to fail "
        "(seed 004: \"neurons learn identical representations\").", "",
        *_still_improving(summary, opts["epochs"]),
        "## Reproduce", "", f"```bash\n{command}\n```", "",
        "Raw per-run results (with the per-epoch validation history): `results.json`; options: "
        "`study_config.yaml`; every run folder: `runs/`.", "",
    ])


# --- command line ---------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.study", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Measured comparisons, each written as a report folder (report.md, results.json, "
                    "study_config.yaml, plots, runs/) under weights/studies/<study>/.\n\n"
                    + "\n".join(f"  {k:10s} {v}" for k, v in STUDIES.items()))
    sub = parser.add_subparsers(dest="study", required=True, metavar="{imbalance,transfer,init}")

    def common(p: argparse.ArgumentParser, data: str, arch: str, img_size: int, epochs: int, seeds: int) -> None:
        p.add_argument("--data", default=data, help="as python -m train --data (default: %(default)s)")
        p.add_argument("--arch", default=arch, help="zoo architecture (default: %(default)s)")
        p.add_argument("--img-size", type=int, default=img_size, help="input size (default: %(default)s)")
        p.add_argument("--epochs", type=int, default=epochs, help="epochs per run (default: %(default)s)")
        p.add_argument("-b", "--batch-size", type=int, default=32, help="(default: %(default)s)")
        p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: %(default)s)")
        p.add_argument("--seeds", type=int, default=seeds,
                       help="runs per variant, seeds 0..N-1 (default: %(default)s)")
        p.add_argument("--split-seed", type=int, default=42, help="seed of the one split (default: %(default)s)")
        p.add_argument("--val-frac", type=float, default=0.15, help="(default: %(default)s)")
        p.add_argument("--test-frac", type=float, default=0.15, help="(default: %(default)s)")
        p.add_argument("--out", help="report folder (default: weights/studies/<study>)")
        p.add_argument("--overwrite", action="store_true", help="replace an existing report folder")
        p.add_argument("--device", default="auto", help="auto, cpu, cuda (default: %(default)s)")
        p.add_argument("-v", "--verbose", action="store_true", help="show every run's own progress and logs")

    p = sub.add_parser("imbalance", help=STUDIES["imbalance"], description=STUDIES["imbalance"] + ": "
                       + "; ".join(f"{k} = {v[0]}" for k, v in REMEDIES.items()))
    common(p, "digits-imbalanced", "lenet5", 32, 10, 3)
    p.add_argument("--minority", nargs="+", metavar="CLASS",
                   help="minority classes whose recall is reported and which the DCGAN synthesises; default: "
                        "classes with fewer than half the largest class's training images")
    p.add_argument("--remedies", nargs="+", choices=list(REMEDIES), default=None, metavar="REMEDY",
                   help=f"some of {', '.join(REMEDIES)} (default: all)")
    p.add_argument("--target-balance", type=float, default=1.0,
                   help="dcgan: top minority classes up to R x the largest class (default: %(default)s)")
    p.add_argument("--gan-epochs", type=int, default=300, help="DCGAN epochs per class (default: %(default)s)")
    p.add_argument("--gan-width", type=int, default=32, help="DCGAN width (default: %(default)s)")
    p.add_argument("--gan-image-size", type=int, default=None,
                   help="DCGAN image size; default: the model's input size if a power of two, else 32")
    p.add_argument("--gan-batch-size", type=int, default=64, help="(default: %(default)s)")

    p = sub.add_parser("transfer", help=STUDIES["transfer"], description=STUDIES["transfer"])
    common(p, "digits", "efficientnet_lite0", 64, 5, 1)
    p.add_argument("--fine-tune-lr", type=float, default=1e-4,
                   help="backbone lr of fine-tune and partial-fine-tune; the head gets 10x (default: %(default)s)")
    p.add_argument("--modes", nargs="+", choices=TRANSFER_MODES, default=None, metavar="MODE",
                   help=f"some of {', '.join(TRANSFER_MODES)} (default: all four)")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                   help="transfer from the offline ImageNet weights (default: yes)")
    p.add_argument("--trainable-stages", type=int, default=1, help="partial-fine-tune stages (default: %(default)s)")

    p = sub.add_parser("init", help=STUDIES["init"], description=STUDIES["init"])
    common(p, "digits", "lenet5", 32, 8, 1)
    p.add_argument("--schemes", nargs="+", default=None,
                   help=f"default: default (the architecture's own) and {', '.join(zoo.INIT_SCHEMES)}")
    return parser


_RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "imbalance": run_imbalance_study, "transfer": run_transfer_study, "init": run_init_study}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m train.study``; 0 ok, 2 bad input, 130 interrupted."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = vars(build_parser().parse_args(argv))
    study = args.pop("study")
    try:
        _RUNNERS[study](**args, argv=argv[1:])
    except TrainingInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return 130
    except (TrainError, zoo.ZooError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
