"""The Leaderboard tab: the sweeps (python -m train.sweep) found in the app's weights folder, their seeds
aggregated into one table (filterable by data set and transfer mode, best balanced accuracy first), published
results set beside them (ui.reference_results), the accuracy-vs-latency plot with its Pareto front, and a button
that sends the picked rows' models to the Compare tab (ui.leaderboard_link). Layout in ``build_leaderboard_tab``;
callbacks at module level and in ``LeaderboardLink``."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr

import zoo
from train.sweep import leaderboard, read_results
from train.sweep.plots import accuracy_vs_latency_figure
from train.sweep.results import KEY_COLUMNS, RESULTS_NAME

from .comparison import MIN_MODELS
from .leaderboard_link import compare_selection, row_label, sweep_files
from .reference_results import REFERENCE_HEADERS, reference_view
from .state import ComparisonApp
from .train_tab import session_of

__all__ = ["LEADERBOARD_HEADERS", "find_results", "leaderboard_view", "LeaderboardLink",
           "build_leaderboard_tab"]

LEADERBOARD_HEADERS = ["data", "arch", "mode", "size", "seeds", "balanced accuracy", "± std", "95% interval",
                       "accuracy", "ROC-AUC", "macro F1", "ECE after T", "ONNX ms"]


def find_results(weights: Path) -> list[dict[str, str]]:
    """The rows of every results.csv in `weights` (ui.leaderboard_link.sweep_files), each row's run_folder made the
    folder beside that results.csv (a sweep writes each cell's folder directly in its --out; the path recorded
    there may be relative to wherever the sweep ran, or from another machine)."""
    return [{**row, "run_folder": str(path.parent / Path(row["run_folder"]).name) if row.get("run_folder") else ""}
            for path in sweep_files(weights, RESULTS_NAME) for row in read_results(path)]


def _figure(value: Any, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _table(board: list[dict[str, Any]]) -> list[list[str]]:
    return [[e["data"], e["arch"], e["mode"], e["img_size"], str(e["seeds"]), _figure(e["balanced_accuracy_mean"]),
             _figure(e["balanced_accuracy_std"]),
             (f"{e['balanced_accuracy_ci95_low']:.3f}–{e['balanced_accuracy_ci95_high']:.3f}"
              if e["balanced_accuracy_ci95_low"] is not None else ""),
             _figure(e["accuracy_mean"]), _figure(e["roc_auc_mean"]), _figure(e["f1_macro_mean"]),
             _figure(e["ece_after_mean"]), _figure(e["onnx_latency_ms_mean"], 2)] for e in board]


def leaderboard_view(weights: str | Path, data: str | None, modes: list[str] | None):
    """(table rows, Pareto figure, data-set choices, mode choices, the data set shown, note, every row's label)
    for the chosen data set and modes."""
    board = leaderboard(find_results(Path(weights)))
    data_sets = sorted({e["data"] for e in board})
    all_modes = sorted({e["mode"] for e in board})
    data = data if data in data_sets else (data_sets[0] if data_sets else None)
    chosen = [e for e in board if e["data"] == data and (not modes or e["mode"] in modes)]
    note = (f"{len(chosen)} of {len(board)} configurations; mean over seeds, test split of each run."
            if board else f"No sweep results under {weights}: run `python -m train.sweep ... --out "
                          f"{Path(weights) / 'sweeps' / 'NAME'} --catalog {Path(weights) / 'catalog.json'}` and "
                          "press Rescan (--catalog: the Compare tab then offers the sweep's models).")
    figure = accuracy_vs_latency_figure(chosen) if board else None  # no sweeps: no figure to draw at start
    return _table(chosen), figure, data_sets, all_modes, data, note, [row_label(e) for e in board]


def _show(weights: str, data: str | None, modes: list[str] | None, picked: list[str] | None):
    rows, figure, data_sets, all_modes, data, note, labels = leaderboard_view(weights, data, modes)
    references, reference_note = reference_view(Path(weights), data)
    return (rows, figure, gr.Dropdown(choices=data_sets, value=data),
            gr.CheckboxGroup(choices=all_modes, value=[m for m in (modes or []) if m in all_modes]), note,
            gr.Dropdown(choices=labels, value=[p for p in (picked or []) if p in labels]), references, reference_note)


def _pick_row(picked: list[str] | None, event: gr.SelectData) -> list[str]:
    """A click on a table row adds that row to the rows to compare (a second click on it changes nothing: quick
    clicks never undo each other); the picker's own × removes one."""
    row = dict(zip(KEY_COLUMNS, event.row_value or []))  # the table's first columns
    label = row_label(row)
    return list(dict.fromkeys([*(picked or []), label])) if row.get("arch") else list(picked or [])


class LeaderboardLink:
    """The "Compare these models" button over one app's state."""

    def __init__(self, app: ComparisonApp):
        self.app = app

    def send(self, labels: list[str] | None, request: gr.Request) -> tuple[Any, Any, str]:
        """(the Compare tab's model picker, the tabs, the note): the picked rows' loadable models ticked and the
        Compare tab shown; with none loadable the page stays here and the note says why."""
        app = self.app
        if not labels:
            return gr.skip(), gr.skip(), ("Pick one or more rows first: click a row of the table, or choose it in "
                                          "**Rows to compare**.")
        chosen = compare_selection(labels, find_results(app.settings.weights), app.entries.values(),
                                   app.settings.weights)
        for model_id in list(chosen.ids):  # loadable, not only listed: a truncated weights file is said here
            try:
                app.cache.get(app.entries[model_id])
            except zoo.ZooError as e:
                chosen.ids.remove(model_id)
                chosen.notes.append(f"model {model_id} cannot be loaded: {e}")
        notes = "".join(f"\n- {app.public(note)}" for note in chosen.notes)
        if not chosen.ids:
            gr.Warning("None of the picked rows has a model the Compare tab can load; the note under the button "
                       "says why.", title="Nothing to compare")
            return gr.skip(), gr.skip(), f"**Nothing sent to the Compare tab.**{notes}"
        fewer = (f" Tick at least {MIN_MODELS - len(chosen.ids)} more model there to compare."
                 if len(chosen.ids) < MIN_MODELS else "")
        text = f"Sent to the Compare tab: {', '.join(chosen.ids)}.{fewer}" + (f"\n\nNot sent:{notes}" if notes else "")
        return (app.model_picker(chosen.ids, session_of(request)),
                gr.Tabs(selected="compare"), text)


def build_leaderboard_tab(weights: Path, limits: dict[str, Any]) -> SimpleNamespace:
    """The Leaderboard tab (inside the current gr.Tabs), reading the sweeps under `weights`; `limits` are the
    concurrency settings its handlers share with the other handlers that draw figures or load models. Returns the
    components app.py wires to the Compare tab: `picks` (the rows picked), `send` (the button), `sent` (its note)."""
    rows, figure, data_sets, all_modes, data, note, labels = leaderboard_view(weights, None, None)
    references, reference_note = reference_view(weights, data)
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
        with gr.Row():
            picks = gr.Dropdown(labels, value=[], multiselect=True, scale=3, elem_id="leaderboard-picks",
                                label="Rows to compare (click a row of the table, or choose it here)")
            send = gr.Button("Compare these models", variant="primary", scale=1, elem_id="leaderboard-send")
        sent = gr.Markdown(elem_id="leaderboard-sent")
        reference_text = gr.Markdown(reference_note, elem_id="leaderboard-reference-note")
        reference_table = gr.Dataframe(references, headers=REFERENCE_HEADERS, interactive=False, wrap=True,
                                       label="Published results (not ours)", elem_id="leaderboard-reference")
        plot = gr.Plot(figure, label="Accuracy vs latency (Pareto front dashed)")
        outputs = [table, plot, data_choice, mode_choice, summary, picks, reference_table, reference_text]
        for trigger in (data_choice.input, mode_choice.input, rescan.click):  # one listener per trigger
            trigger(_show, [folder, data_choice, mode_choice, picks], outputs, api_visibility="private", **limits)
        table.select(_pick_row, inputs=picks, outputs=picks, api_visibility="private")
    return SimpleNamespace(picks=picks, send=send, sent=sent)
