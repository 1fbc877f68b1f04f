"""The sweep's tables and plots, read from its run folders: results.csv (one row per cell), leaderboard.csv and
leaderboard.md (seeds aggregated: mean ± std and a 95% t-interval), accuracy_vs_latency.png (Pareto front
marked) and transfer_modes.png (the transfer modes side by side per architecture)."""
from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import stats

from zoo.fileio import atomic_write
from zoo.onnx_export import OnnxIO, check_onnx_file, onnx_session
from zoo.run_layout import CONFIG_NAME, METRICS_NAME, ONNX_NAME, RUN_CONFIG_NAME

from ..config import load_yaml_config
from .cells import CellOutcome, run_is_complete
from .grid import Cell
from .plots import plot_accuracy_vs_latency, plot_transfer_modes

__all__ = ["RESULT_COLUMNS", "LEADERBOARD_METRICS", "RESULTS_NAME", "LEADERBOARD_NAME", "LEADERBOARD_MD",
           "PARETO_PLOT", "MODES_PLOT", "result_row", "write_results", "read_results", "leaderboard",
           "leaderboard_columns", "leaderboard_markdown", "onnx_latency_ms"]

RESULTS_NAME, LEADERBOARD_NAME, LEADERBOARD_MD = "results.csv", "leaderboard.csv", "leaderboard.md"
PARETO_PLOT, MODES_PLOT = "accuracy_vs_latency.png", "transfer_modes.png"
KEY_COLUMNS = ("data", "arch", "mode", "img_size")
RESULT_COLUMNS = (*KEY_COLUMNS, "seed", "epochs", "accuracy", "balanced_accuracy", "f1_macro", "roc_auc",
                  "ece_before", "ece_after", "coverage_90", "mean_set_size_90", "ood_auroc", "params_total",
                  "params_trainable", "train_s", "onnx_latency_ms", "run_folder", "status", "error")
LEADERBOARD_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "ece_after", "onnx_latency_ms")
_LATENCY_RUNS = 30


def onnx_latency_ms(folder: Path) -> float | None:
    """Median ONNX Runtime CPU latency (1 thread, batch 1) of the run's checked model.onnx; None without one."""
    path = folder / ONNX_NAME
    if not path.is_file():
        return None
    config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    session = onnx_session(check_onnx_file(path, config), threads=1)
    feeds = {name: np.zeros([1 if d == "batch" else int(d) for d in shape], np.float32)
             for name, shape in OnnxIO.from_config(config).expected().items()}
    for _ in range(3):  # warm-up: the first runs allocate
        session.run(None, feeds)
    times = []
    for _ in range(_LATENCY_RUNS):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def _metrics_of(folder: Path) -> dict[str, Any]:
    metrics = json.loads((folder / METRICS_NAME).read_text(encoding="utf-8"))
    config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    headline, calibration = metrics.get("headline", {}), metrics.get("calibration", {})
    conformal, ood = metrics.get("conformal", {}), metrics.get("ood", {})
    return {
        "img_size": (config.get("pretrained_cfg") or {}).get("input_size", [None, None])[1],
        **{k: headline.get(k) for k in ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc")},
        "ece_before": (calibration.get("before") or {}).get("ece"),
        "ece_after": (calibration.get("after") or {}).get("ece"),
        # the sets are calibrated for 90% coverage (alpha 0.1); another alpha leaves the columns empty
        "coverage_90": conformal.get("test_coverage") if conformal.get("alpha") == 0.1 else None,
        "mean_set_size_90": conformal.get("test_mean_set_size") if conformal.get("alpha") == 0.1 else None,
        "ood_auroc": ood.get("auroc"),  # measured only where a run had OOD images to score; else empty
        "params_total": metrics.get("params", {}).get("total"),
        "params_trainable": metrics.get("params", {}).get("trainable"),
        "train_s": metrics.get("timing", {}).get("train_s"),
        "onnx_latency_ms": onnx_latency_ms(folder),
    }


def result_row(cell: Cell, outcome: CellOutcome) -> dict[str, Any]:
    """The results.csv row of a cell: its coordinates, its run folder's figures when complete, its status."""
    row: dict[str, Any] = dict.fromkeys(RESULT_COLUMNS, None)
    row.update(data=cell.data, arch=cell.arch, mode=cell.mode, img_size=cell.img_size, seed=cell.seed,
               epochs=cell.config.epochs, run_folder=str(cell.folder), status=outcome.status, error=outcome.error)
    if run_is_complete(cell.folder) and outcome.status not in ("failed",):
        row.update(_metrics_of(cell.folder))
        row["epochs"] = load_yaml_config(cell.folder / RUN_CONFIG_NAME).get("epochs", cell.config.epochs)
    return row


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """The table, atomically: a second Ctrl-C or a full disk leaves the previous results.csv, never a torn one."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows({k: _text(row.get(k)) for k in columns} for row in rows)
    with atomic_write(path) as f:
        f.write(text.getvalue().encode("utf-8"))


def read_results(path: str | Path) -> list[dict[str, str]]:
    """The rows of a results.csv (or leaderboard.csv) as strings, empty cells as ''."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def leaderboard(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Seeds aggregated per (data, arch, mode, img_size): n, mean, std and the 95% t-interval of each metric;
    sorted by data set, then mean balanced accuracy, best first. Only finished cells count."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        if _number(row.get("balanced_accuracy")) is not None:
            groups.setdefault(tuple(str(row[k]) for k in KEY_COLUMNS), []).append(row)
    board = []
    for key, members in groups.items():
        entry: dict[str, Any] = dict(zip(KEY_COLUMNS, key), seeds=len(members))
        for metric in LEADERBOARD_METRICS:
            values = np.array([v for v in (_number(r.get(metric)) for r in members) if v is not None])
            mean = float(values.mean()) if len(values) else None
            std = float(values.std(ddof=1)) if len(values) > 1 else None
            half = (float(stats.t.ppf(0.975, len(values) - 1) * std / math.sqrt(len(values)))
                    if std is not None else None)
            entry.update({f"{metric}_mean": mean, f"{metric}_std": std,
                          f"{metric}_ci95_low": None if half is None else mean - half,
                          f"{metric}_ci95_high": None if half is None else mean + half})
        board.append(entry)
    return sorted(board, key=lambda e: (e["data"], -(e["balanced_accuracy_mean"] or 0.0)))


def leaderboard_columns() -> list[str]:
    """The columns of leaderboard.csv: the cell's key columns, the number of seeds, and each metric's mean, std
    and 95% t-interval bounds."""
    return [*KEY_COLUMNS, "seeds", *(f"{m}_{s}" for m in LEADERBOARD_METRICS for s in ("mean", "std", "ci95_low",
                                                                                       "ci95_high"))]


def _cell(entry: dict[str, Any], metric: str, digits: int) -> str:
    mean, std = entry[f"{metric}_mean"], entry[f"{metric}_std"]
    if mean is None:
        return "–"
    text = f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")
    low, high = entry[f"{metric}_ci95_low"], entry[f"{metric}_ci95_high"]
    return text + (f" [{low:.{digits}f}, {high:.{digits}f}]" if low is not None else "")


def leaderboard_markdown(board: Sequence[dict[str, Any]]) -> str:
    """The leaderboard as a Markdown table: mean ± std [95% t-interval] over seeds."""
    lines = ["| data | arch | mode | size | seeds | balanced accuracy | accuracy | macro F1 | ECE (after T) | "
             "ONNX ms (batch 1) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for e in board:
        lines.append(f"| {e['data']} | {e['arch']} | {e['mode']} | {e['img_size']} | {e['seeds']} | "
                     f"{_cell(e, 'balanced_accuracy', 3)} | {_cell(e, 'accuracy', 3)} | {_cell(e, 'f1_macro', 3)} | "
                     f"{_cell(e, 'ece_after', 3)} | {_cell(e, 'onnx_latency_ms', 2)} |")
    return ("Mean ± standard deviation over seeds, [95% t-interval of the mean] (scipy.stats.t; none with one seed). "
            "Test split of each run; latency: ONNX Runtime, CPU, 1 thread, batch 1, median of "
            f"{_LATENCY_RUNS} runs.\n\n" + "\n".join(lines) + "\n")


def write_results(out: Path, rows: Sequence[dict[str, Any]]) -> list[Path]:
    """results.csv, leaderboard.csv/.md and the two plots in `out`; returns the files written."""
    _write_csv(out / RESULTS_NAME, RESULT_COLUMNS, rows)
    board = leaderboard(rows)
    _write_csv(out / LEADERBOARD_NAME, leaderboard_columns(), board)
    with atomic_write(out / LEADERBOARD_MD, "w") as f:
        f.write(leaderboard_markdown(board))
    written = [out / RESULTS_NAME, out / LEADERBOARD_NAME, out / LEADERBOARD_MD]
    if board:
        written.append(plot_accuracy_vs_latency(board, out / PARETO_PLOT))
        written.append(plot_transfer_modes(board, out / MODES_PLOT))
    return written
