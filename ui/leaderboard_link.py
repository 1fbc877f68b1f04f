"""From the Leaderboard to the Compare tab: the leaderboard rows a person picks (each a configuration: data set,
architecture, mode, input size; one run folder per seed) become the Compare tab's model selection.

A run folder is selected only when it is a model the app offers (its weights folder's run folders and its catalog,
ui.state.ComparisonApp.entries) and it loads; every other one is named with the reason and what to do."""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from train.sweep.results import KEY_COLUMNS
from zoo.catalog import ModelEntry

from .comparison import MAX_MODELS

__all__ = ["MAX_DEPTH", "CompareSelection", "sweep_files", "row_label", "compare_selection"]

MAX_DEPTH = 3  # weights/<sweep>/results.csv or weights/sweeps/<sweep>/results.csv: never the whole disk
_SEPARATOR = " · "


def sweep_files(weights: Path, name: str) -> list[Path]:
    """Every file called `name` in `weights` or at most MAX_DEPTH folders below it, shallowest first."""
    return [path for depth in range(MAX_DEPTH + 1) for path in sorted(weights.glob("/".join(["*"] * depth + [name])))]


def row_label(row: dict[str, Any]) -> str:
    """The name a person picks a leaderboard row by: 'digits · lenet5 · scratch · 32 px'."""
    data, arch, mode, size = (str(row.get(key) or "") for key in KEY_COLUMNS)
    return _SEPARATOR.join([data, arch, mode, f"{size} px" if size else "default size"])


@dataclass
class CompareSelection:
    """The model ids to tick in the Compare tab (at most MAX_MODELS) and, per run folder left out, why."""

    ids: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _resolved(path: str | Path) -> str:
    return os.path.realpath(path)


def _not_offered(where: str, folder: Path, weights: Path) -> str:
    try:
        shown = folder.resolve().relative_to(weights.resolve()).as_posix()
    except ValueError:  # outside the weights folder: only its name (the server's paths stay private)
        return (f"{where}: its run folder {folder.name} is not in the app's weights folder; move the sweep there "
                "and press Rescan")
    if not folder.is_dir():
        return f"{where}: its run folder {shown} does not exist (moved or deleted?); press Rescan on this tab"
    if "/" not in shown:
        return (f"{where}: its run folder {shown} is not among the Compare tab's models yet; press Rescan models "
                "on the Compare tab")
    return (f"{where}: its run folder {shown} is not a model the Compare tab offers (it offers the run folders "
            "directly in the weights folder and those its catalog.json lists). Re-run the same sweep with "
            "--catalog WEIGHTS/catalog.json (it adds the finished cells; nothing is trained again) or add "
            f"{{\"id\": \"{folder.name}\", \"source\": \"local\", \"path\": \"{shown}\"}} to catalog.json's "
            "\"models\", then press Rescan models on the Compare tab")


def compare_selection(labels: Sequence[str], rows: Sequence[dict[str, str]], entries: Iterable[ModelEntry],
                      weights: Path, limit: int = MAX_MODELS) -> CompareSelection:
    """The models of the picked leaderboard rows (`labels`, row_label's names): each row's run folders in seed
    order (`rows`: results.csv rows whose run_folder is where the folder is), matched to the app's `entries` by
    folder; an unfinished run, a folder the app does not offer or an unavailable model is a note, not an id."""
    offered = {_resolved(e.run_dir): e for e in entries if e.source == "local" and e.run_dir is not None}
    chosen = CompareSelection()
    for label in dict.fromkeys(labels):
        members = sorted((r for r in rows if row_label(r) == label), key=lambda r: int(r.get("seed") or 0))
        if not members:
            chosen.notes.append(f"{label[:200]}: not in the sweep results any more; press Rescan on the "
                                "Leaderboard tab")
        for row in members:
            where = f"{label}, seed {row.get('seed') or '?'}"
            folder = Path(row.get("run_folder") or "")
            if not row.get("balanced_accuracy") or not row.get("run_folder"):  # as the leaderboard counts runs
                error = f": {row['error'][:160]}" if row.get("error") else ""
                chosen.notes.append(f"{where}: its run did not finish (status {row.get('status') or 'unknown'}{error})")
                continue
            entry = offered.get(_resolved(folder))
            if entry is None:
                chosen.notes.append(_not_offered(where, folder, weights))
            elif not entry.available:
                chosen.notes.append(f"{where}: model {entry.id} cannot be used: {entry.reason}")
            elif entry.id not in chosen.ids:
                chosen.ids.append(entry.id)
    if len(chosen.ids) > limit:
        chosen.notes.append(f"the Compare tab takes at most {limit} models; left out: {', '.join(chosen.ids[limit:])}")
        del chosen.ids[limit:]
    return chosen
