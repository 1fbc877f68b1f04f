"""The initialisation study: a from-scratch model trained with each weight initialisation scheme of
Kariuki et al.'s survey on the same split, with how fast each one learns."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Sequence

import zoo

from .common import (StudyConfig, begin, chosen, fmt, mean_curve, mean_std, option, prepare_folder, run_variants,
                     runs_of, setup_lines, still_improving, table, test_means, train_run, write_report)

__all__ = ["InitConfig", "run_init_study"]

DEFAULT_SCHEME = "default"  # the architecture's own initialisation


@dataclass(frozen=True, kw_only=True)
class InitConfig(StudyConfig):
    """Options of ``python -m train.study init``."""

    study: ClassVar[str] = "init"
    title: ClassVar[str] = "Weight initialisation schemes (Kariuki et al.'s survey) on a from-scratch model"

    # the shared defaults: lenet5 at 32 px on the bundled digits, 8 epochs, one seed
    schemes: tuple[str, ...] | None = option(
        f"some of {DEFAULT_SCHEME} (the architecture's own) and {', '.join(zoo.INIT_SCHEMES)} (default: all)",
        None, nargs="+", metavar="SCHEME")

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "schemes", chosen(self.schemes, (DEFAULT_SCHEME, *zoo.INIT_SCHEMES),
                                                   "--schemes"))  # frozen


def run_init_study(config: InitConfig | None = None, /, *, argv: Sequence[str] | None = None,
                   **options: Any) -> dict[str, Any]:
    """Train a from-scratch model with each initialisation scheme of Kariuki et al.'s survey; write the report.
    Options: the fields of :class:`InitConfig`, as ``config`` and/or keywords (see :func:`.common.begin`).
    """
    cfg, source, counts = begin(InitConfig, config, options)
    out, command = prepare_folder(cfg), cfg.command(argv)
    base = replace(cfg.train_config(), mode="scratch", pretrained=False)

    def train_one(scheme: str, seed: int) -> dict[str, Any]:
        return train_run(replace(base, init=None if scheme == DEFAULT_SCHEME else scheme), scheme, seed, out)

    runs = run_variants(cfg, cfg.schemes, train_one)
    summary = [_summary_row(scheme, runs_of(runs, scheme)) for scheme in cfg.schemes]
    plots = [_plot(out / "init.png", runs, summary)]
    markdown = _markdown(cfg, command, source.description, counts, summary)
    return write_report(cfg, command, runs, summary, plots, markdown)


def _summary_row(scheme: str, mine: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "variant": scheme, "seeds": [r["seed"] for r in mine],
        "val_balanced_accuracy_epoch1": mean_std([r["history"][0]["val_balanced_accuracy"] for r in mine]),
        "best_val_balanced_accuracy": mean_std([r["best_val_balanced_accuracy"] for r in mine]),
        "final_val_loss": mean_std([r["history"][-1]["val_loss"] for r in mine]),
        "best_epoch": [r["best_epoch"] for r in mine],
        **test_means(mine, ("accuracy", "balanced_accuracy", "f1_macro")),
    }


def _plot(path: Path, runs: list[dict[str, Any]], summary: list[dict[str, Any]]) -> str:
    from ..plots import plt, save_figure
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    cmap = plt.get_cmap("tab20")
    for i, row in enumerate(summary):
        mine = runs_of(runs, row["variant"])
        style = dict(color=cmap(i % 20), label=row["variant"], marker="o", markersize=3)
        left.plot(*mean_curve(mine, "val_balanced_accuracy"), **style)
        right.plot(*mean_curve(mine, "val_loss"), **style)
    left.set(title="Validation balanced accuracy", xlabel="epoch", ylim=(0, 1.02))
    right.set(title="Validation loss", xlabel="epoch", yscale="log")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    right.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle("Initialisation schemes (Kariuki et al.'s survey), from scratch")
    save_figure(fig, path)
    return path.name


def _markdown(cfg: InitConfig, command: str, description: str, counts: dict[str, dict[str, int]],
              summary: list[dict[str, Any]]) -> str:
    header = ["scheme", "val. balanced accuracy after epoch 1", "best val. balanced accuracy", "best epoch",
              "final val. loss", "test accuracy", "test balanced accuracy", "test macro F1"]
    rows = [[row["variant"], fmt(*row["val_balanced_accuracy_epoch1"]), fmt(*row["best_val_balanced_accuracy"]),
             ", ".join(map(str, row["best_epoch"])), fmt(*row["final_val_loss"]), fmt(*row["accuracy"]),
             fmt(*row["balanced_accuracy"]), fmt(*row["f1_macro"])] for row in summary]
    return "\n".join([
        f"# {cfg.title}", "",
        "Seed 004 (section III.D) surveys weight initialisation schemes and says the best choice depends on the "
        "network and the data, to be found by experiment. This study is that experiment for one from-scratch "
        "model: every conv and linear layer is re-initialised with the scheme (biases zero, batch norm 1/0); "
        "`default` is the architecture's own initialisation.", "",
        "## Setup", "", *setup_lines(cfg, description, counts), "",
        "## Results", "", table(header, rows), "",
        "![initialisation schemes](init.png)", "",
        "Validation curves show how fast each scheme learns; the test columns are the weights of each run's "
        "best validation epoch. `zeros` makes every unit of a layer identical, so it is expected to fail "
        "(Kariuki et al.'s survey: \"neurons learn identical representations\").", "",
        *still_improving(summary, cfg.epochs),
        "## Reproduce", "", f"```bash\n{command}\n```", "",
        "Raw per-run results (with the per-epoch validation history): `results.json`; options: "
        "`study_config.yaml`; every run folder: `runs/`.", "",
    ])
