"""What every study shares: its options (a frozen dataclass that also drives the command line), the one
split, the training runs, the report folder, the summary statistics and the curves of the plots."""
from __future__ import annotations

import gc
import math
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence, TypeVar

import numpy as np
import yaml

from .._errors import ConfigError
from ..checkpoint import atomic_write, write_json
from ..config import TrainConfig
from ..data import DataSource, class_counts, load_source, make_splits, verify_images

__all__ = ["STUDIES_DIR", "StudyConfig", "option", "restate", "chosen", "begin",
           "prepare_folder", "train_run", "run_variants", "write_report", "setup_lines", "still_improving",
           "mean_std", "test_means", "runs_of", "fmt", "table", "mean_curve", "say"]

STUDIES_DIR = Path("weights") / "studies"
REPORT_FILES = ("report.md", "results.json", "study_config.yaml")
RUN_FOLDERS = ("runs", "gan", "synthetic")
NOT_IN_COMMAND = ("out", "overwrite", "verbose")  # where and how loudly; the results do not depend on them


def option(help_text: str, default: Any, *, flags: Sequence[str] = (), **argparse_kwargs: Any) -> Any:
    """A study option: a dataclass field whose metadata is its command-line help, short flags and any
    argparse settings (nargs, choices, metavar, type) that its default does not imply."""
    return field(default=default, metadata={"help": help_text, "flags": tuple(flags), "argparse": argparse_kwargs})


def restate(config: type, name: str, default: Any) -> Any:
    """The option ``name`` of ``config`` with a study's own default (same help and flags)."""
    base = next(f for f in fields(config) if f.name == name)
    return field(default=default, metadata=base.metadata)


def chosen(value: Sequence[str] | None, allowed: Sequence[str], flag: str) -> tuple[str, ...]:
    """The names chosen for ``flag`` (None or empty: all of ``allowed``), refusing unknown ones."""
    names = tuple(value or allowed)
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ConfigError(f"{flag} {unknown} unknown; choose from {list(allowed)}")
    return names


@dataclass(frozen=True, kw_only=True)
class StudyConfig:
    """The options every study takes, with defaults for a small from-scratch model on the bundled digits;
    a study restates (see :func:`restate`) those whose default it changes."""

    study: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str] = ""  # the command line's description, when more than the title

    data: str = option("as python -m train --data", "digits")
    arch: str = option("zoo architecture", "lenet5")
    img_size: int | None = option("input size", 32, type=int)
    epochs: int = option("epochs per run", 8)
    batch_size: int = option("batch size", 32, flags=("-b",))
    lr: float = option("Adam learning rate", 1e-3)
    seeds: int = option("runs per variant, seeds 0..N-1", 1)
    split_seed: int = option("seed of the one split", 42)
    val_frac: float = option("validation fraction", 0.15)
    test_frac: float = option("test fraction", 0.15)
    out: str | Path | None = option(f"report folder (default: {STUDIES_DIR}/<study>)", None)
    overwrite: bool = option("replace an existing report folder", False)
    device: str = option("auto, cpu, cuda", "auto")
    verbose: bool = option("show every run's own progress and logs", False, flags=("-v",))

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {self.seeds}")

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out is not None else STUDIES_DIR / self.study

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds))

    def train_config(self) -> TrainConfig:
        """The training options every run of the study shares; each variant replaces a few."""
        return TrainConfig(arch=self.arch, data=self.data, img_size=self.img_size, epochs=self.epochs,
                           batch_size=self.batch_size, lr=self.lr, split_seed=self.split_seed,
                           val_frac=self.val_frac, test_frac=self.test_frac, device=self.device,
                           quiet=not self.verbose, overwrite=True, monitor="balanced_accuracy")

    def recorded(self) -> dict[str, Any]:
        """The resolved options as saved in results.json and study_config.yaml (seeds listed)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("out", "overwrite")}
        values["seeds"] = self.seed_list
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    def command(self, argv: Sequence[str] | None = None) -> str:
        """The command line that reproduces the study: ``argv`` as typed, else built from the options."""
        if argv is not None:
            return "python -m train.study " + shlex.join([self.study, *argv])
        parts = [self.study]
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in NOT_IN_COMMAND or value is None or (value is False and f.default is False):
                continue
            flag = "--" + f.name.replace("_", "-")
            if isinstance(value, bool):
                parts.append(flag if value else "--no-" + flag[2:])
            elif isinstance(value, (list, tuple)):
                parts += [flag, *map(str, value)]
            else:
                parts += [flag, str(value)]
        return "python -m train.study " + shlex.join(parts)


Config = TypeVar("Config", bound=StudyConfig)


def begin(config_class: type[Config], config: Config | None, options: dict[str, Any]
          ) -> tuple[Config, DataSource, dict[str, dict[str, int]]]:
    """A ``run_*_study`` call's options (``config`` or the study's defaults, with the keyword ``options``),
    its data and the images per class in each part of the one split every run uses."""
    cfg = replace(config, **options) if config is not None else config_class(**options)
    source = verify_images(load_source(cfg.data))
    splits = make_splits(source, cfg.val_frac, cfg.test_frac, cfg.split_seed)
    counts = {name: dict(zip(source.label_names, class_counts(part, source.num_classes)))
              for name, part in splits.items()}
    return cfg, source, counts


def say(text: str) -> None:
    """Print a line of the study's progress without breaking a tqdm progress bar."""
    from tqdm import tqdm
    tqdm.write(text, file=sys.stdout)


def prepare_folder(cfg: StudyConfig) -> Path:
    """Refuse an existing report without overwrite; with it, remove only what a study writes."""
    out = cfg.out_dir
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not cfg.overwrite:
            raise ConfigError(f"{out} already holds a study report; pass --overwrite to replace it or choose "
                              "another --out")
        for name in RUN_FOLDERS:
            if (out / name).is_dir():
                shutil.rmtree(out / name)
        for path in out.glob("*"):
            if path.is_file() and (path.name in REPORT_FILES or path.suffix == ".png"):
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def train_run(cfg: TrainConfig, variant: str, seed: int, out: Path, extra: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    """One run of a study; returns its raw result (test metrics, validation history, parameters, time)."""
    from ..runner import run_training
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


def run_variants(cfg: StudyConfig, variants: Sequence[str],
                 train_one: Callable[[str, int], dict[str, Any]]) -> list[dict[str, Any]]:
    """``train_one(variant, seed)`` for every variant and seed, with a progress bar and a line per run."""
    from tqdm import tqdm
    plan = [(variant, seed) for variant in variants for seed in cfg.seed_list]
    bar = tqdm(total=len(plan), desc=f"{cfg.study} study", unit="run", dynamic_ncols=True, leave=False)
    runs = []
    for i, (variant, seed) in enumerate(plan, start=1):
        run = train_one(variant, seed)
        runs.append(run)
        bar.update(1)
        say(_run_line(i, len(plan), run))
    bar.close()
    return runs


def _run_line(index: int, total: int, run: dict[str, Any]) -> str:
    t = run["test"]
    return (f"[{index}/{total}] {run['variant']} seed {run['seed']}: test balanced accuracy "
            f"{t.get('balanced_accuracy', float('nan')):.4f}, macro F1 {t.get('f1_macro', float('nan')):.4f} "
            f"(best validation {run['best_val_balanced_accuracy']:.4f} at epoch {run['best_epoch']}), "
            f"{run['train_s']:.0f} s")


def write_report(cfg: StudyConfig, command: str, runs: list[dict[str, Any]], summary: list[dict[str, Any]],
                 plots: list[str], markdown: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """study_config.yaml, results.json and report.md in the report folder; returns the study's result."""
    out, options = cfg.out_dir, cfg.recorded()
    (out / "study_config.yaml").write_text(yaml.safe_dump({"study": cfg.study, "command": command, **options},
                                                          sort_keys=False), encoding="utf-8")
    write_json(out / "results.json", {
        "study": cfg.study, "title": cfg.title, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command, "config": options, "summary": summary, "runs": runs, "plots": plots,
        "report": "report.md", **(extra or {})})
    with atomic_write(out / "report.md", "w") as f:
        f.write(markdown)
    say(f"report: {out / 'report.md'}")
    return {"out": out, "summary": summary, "runs": runs, **(extra or {})}


def setup_lines(cfg: StudyConfig, source_description: str, counts: dict[str, dict[str, int]]) -> list[str]:
    """The report's setup: data, split, model, seeds and how the reported weights were selected."""
    seeds = cfg.seed_list
    return [
        f"- Data: `{cfg.data}`: {source_description}",
        f"- Split: one split for every run (split seed {cfg.split_seed}); training counts {counts['train']}, "
        f"validation {sum(counts['val'].values())} images, test {sum(counts['test'].values())} images",
        f"- Model: `{cfg.arch}` at {cfg.img_size or 'its default'} px; at most {cfg.epochs} epoch(s), batch "
        f"{cfg.batch_size}, Adam, reduce-on-plateau on validation balanced accuracy",
        f"- Seeds: {', '.join(map(str, seeds))} (initialisation and order; the split stays fixed); values are "
        f"mean ± sample standard deviation over the seeds" if len(seeds) > 1 else
        f"- Seed: {seeds[0]} (one seed: no spread is shown; run with --seeds 3 or more to see it)",
        "- Selection: every run keeps the weights of its best **validation** epoch (balanced accuracy); the test "
        "split is scored once per run, after training, and never used to choose anything",
    ]


def still_improving(summary: list[dict[str, Any]], epochs: int) -> list[str]:
    """A note naming the variants whose best validation epoch was the last one, if any."""
    late = [row["variant"] for row in summary if any(e == epochs for e in row["best_epoch"])]
    if not late:
        return []
    return [f"Still improving at the last epoch ({epochs}) for {', '.join(late)}: their best validation epoch was the "
            "last one, so longer training could change the ranking; these numbers are a reduced, "
            "fixed-budget comparison.", ""]


def runs_of(runs: list[dict[str, Any]], variant: str) -> list[dict[str, Any]]:
    """The runs of one variant (one remedy, mode or initialisation) of a study."""
    return [r for r in runs if r["variant"] == variant]


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the finite values (None where there are too few)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def test_means(runs: list[dict[str, Any]], metrics: Sequence[str]) -> dict[str, tuple[float | None, float | None]]:
    """Mean and spread over ``runs`` of each test metric."""
    return {m: mean_std([r["test"].get(m) for r in runs]) for m in metrics}


def fmt(mean: float | None, std: float | None, digits: int = 3) -> str:
    """"mean ± std" rounded to `digits` places ("n/a" without a mean, no "±" without a std)."""
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table of these rows under this header."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def mean_curve(runs: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """A validation curve averaged over runs, up to the shortest run's last epoch."""
    length = min(len(r["history"]) for r in runs)
    epochs = [runs[0]["history"][i]["epoch"] for i in range(length)]
    values = [float(np.mean([r["history"][i][key] if r["history"][i][key] is not None else np.nan for r in runs]))
              for i in range(length)]
    return epochs, values
