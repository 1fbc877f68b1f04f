"""The Leaderboard tab: the sweeps (python -m train.sweep) found in the app's weights folder, their seeds
aggregated into one table (filterable by data set and transfer mode, best balanced accuracy first) and the
accuracy-vs-latency plot with its Pareto front. Layout in ``build_leaderboard_tab``; callbacks at module level."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from train.sweep import leaderboard, read_results
from train.sweep.plots import accuracy_vs_latency_figure
from train.sweep.results import RESULTS_NAME

__all__ = ["LEADERBOARD_HEADERS", "find_results", "leaderboard_view", "build_leaderboard_tab"]

LEADERBOARD_HEADERS = ["data", "arch", "mode", "size", "seeds", "balanced accuracy", "± std", "95% interval",
                       "accuracy", "macro F1", "ECE after T", "ONNX ms"]
_MAX_DEPTH = 3  # weights/<sweep>/results.csv or weights/sweeps/<sweep>/results.csv: never the whole disk


def find_results(weights: Path) -> list[dict[str, str]]:
    """The rows of every results.csv at most _MAX_DEPTH folders below `weights`."""
    rows: list[dict[str, str]] = []
    for depth in range(_MAX_DEPTH + 1):
        for path in sorted(weights.glob("/".join(["*"] * depth + [RESULTS_NAME]))):
            rows += read_results(path)
    return rows


def _figure(value: Any, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _table(board: list[dict[str, Any]]) -> list[list[str]]:
    return [[e["data"], e["arch"], e["mode"], e["img_size"], str(e["seeds"]), _figure(e["balanced_accuracy_mean"]),
             _figure(e["balanced_accuracy_std"]),
             (f"{e['balanced_accuracy_ci95_low']:.3f}–{e['balanced_accuracy_ci95_high']:.3f}"
              if e["balanced_accuracy_ci95_low"] is not None else ""),
             _figure(e["accuracy_mean"]), _figure(e["f1_macro_mean"]), _figure(e["ece_after_mean"]),
             _figure(e["onnx_latency_ms_mean"], 2)] for e in board]


def leaderboard_view(weights: str | Path, data: str | None, modes: list[str] | None):
    """(table rows, Pareto figure, data-set choices, mode choices, note) for the chosen data set and modes."""
    board = leaderboard(find_results(Path(weights)))
    data_sets = sorted({e["data"] for e in board})
    all_modes = sorted({e["mode"] for e in board})
    data = data if data in data_sets else (data_sets[0] if data_sets else None)
    chosen = [e for e in board if e["data"] == data and (not modes or e["mode"] in modes)]
    note = (f"{len(chosen)} of {len(board)} configurations; mean over seeds, test split of each run."
            if board else f"No sweep results under {weights}: run `python -m train.sweep ... --out "
                          f"{Path(weights) / 'sweeps' / 'NAME'}` and press Rescan.")
    figure = accuracy_vs_latency_figure(chosen) if board else None  # no sweeps: no figure to draw at start
    return _table(chosen), figure, data_sets, all_modes, data, note


def _show(weights: str, data: str | None, modes: list[str] | None):
    rows, figure, data_sets, all_modes, data, note = leaderboard_view(weights, data, modes)
    return (rows, figure, gr.update(choices=data_sets, value=data),
            gr.update(choices=all_modes, value=[m for m in (modes or []) if m in all_modes]), note)


def build_leaderboard_tab(weights: Path, limits: dict[str, Any]) -> None:
    """The Leaderboard tab (inside the current gr.Tabs), reading the sweeps under `weights`; `limits` are the
    concurrency settings its handler shares with the other handlers that draw figures."""
    rows, figure, data_sets, all_modes, data, note = leaderboard_view(weights, None, None)
    with gr.Tab("Leaderboard", id="leaderboard"):
        folder = gr.State(str(weights))
        with gr.Row():
            data_choice = gr.Dropdown(data_sets, value=data, label="Data set", elem_id="leaderboard-data")
            mode_choice = gr.CheckboxGroup(all_modes, value=[], label="Transfer modes (none ticked: all)",
                                           elem_id="leaderboard-modes")
            rescan = gr.Button("Rescan", size="sm", elem_id="leaderboard-rescan")
        summary = gr.Markdown(note, elem_id="leaderboard-note")
        table = gr.Dataframe(rows, headers=LEADERBOARD_HEADERS, interactive=False, wrap=True, label="Leaderboard",
                             elem_id="leaderboard-table")
        plot = gr.Plot(figure, label="Accuracy vs latency (Pareto front dashed)")
        outputs = [table, plot, data_choice, mode_choice, summary]
        for trigger in (data_choice.input, mode_choice.input, rescan.click):  # one listener per trigger
            trigger(_show, [folder, data_choice, mode_choice], outputs, api_visibility="private", **limits)
