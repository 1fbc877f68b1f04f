"""Published results set beside the sweeps' own rows on the Leaderboard tab, marked as someone else's: a
``reference_results.csv`` the user puts in the weights folder (or in a sweep folder below it), e.g. the rows of
"MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image classification" (ResNet-18/50 at
28 and 224, auto-sklearn, AutoKeras, Google AutoML Vision; test ACC and AUC per 2-D data set).

No figures ship with the project: the paper's table could not be read from a verifiable copy here (no network),
and figures typed from memory are not a reference. Each row must name its source (an address)."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import zoo
from zoo.fileio import read_small_file

from .leaderboard_link import sweep_files

__all__ = ["REFERENCE_NAME", "REFERENCE_COLUMNS", "REFERENCE_HEADERS", "data_key", "read_reference",
           "reference_view"]

REFERENCE_NAME = "reference_results.csv"
REFERENCE_COLUMNS = ("data", "method", "img_size", "accuracy", "roc_auc", "source")
REFERENCE_HEADERS = ["data", "method (published, not ours)", "size", "accuracy", "ROC-AUC", "source"]
_MAX_BYTES = 1_000_000  # a table of a few hundred rows; a bigger file is not one


def data_key(spec: str) -> str:
    """What a data set is called whatever its input size: 'medmnist:pathmnist:64' -> 'medmnist:pathmnist'."""
    parts = spec.strip().lower().split(":")
    return ":".join(parts[:2]) if parts[0] == "medmnist" else spec.strip().lower()


def _fraction(text: str, column: str) -> float | None:
    if not text.strip():
        return None
    value = float(text)  # a ValueError names the text
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{column} {text!r} is not a fraction between 0 and 1 (write 0.907, not 90.7)")
    return value


def read_reference(path: Path, root: Path) -> tuple[list[dict[str, object]], list[str]]:
    """(the rows of a reference_results.csv, a problem per row left out); a file that cannot be used at all raises
    ValueError saying why."""
    try:
        text = read_small_file(path, _MAX_BYTES, root=root).decode("utf-8-sig")
    except (OSError, UnicodeDecodeError, zoo.ZooError) as e:
        raise ValueError(f"{path.name} cannot be read ({e}); it must be a UTF-8 CSV file") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in REFERENCE_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{path.name} lacks the columns {missing}; its first line must be "
                         f"{','.join(REFERENCE_COLUMNS)}")
    rows, problems = [], []
    for line, raw in enumerate(reader, start=2):
        values = {k: (raw.get(k) or "").strip() for k in REFERENCE_COLUMNS}
        try:
            if not values["data"] or not values["method"]:
                raise ValueError("data and method must not be empty")
            if not values["source"]:
                raise ValueError("source is empty: a published figure needs the address it was read from")
            figures = {k: _fraction(values[k], k) for k in ("accuracy", "roc_auc")}
        except ValueError as e:
            problems.append(f"{path.name} line {line} left out: {e}")
            continue
        rows.append({**values, **figures})
    return rows, problems


def reference_view(weights: Path, data: str | None) -> tuple[list[list[str]], str]:
    """(the rows published for the data set `data`, as the table shows them; a note saying where they come from
    and what was left out)."""
    files = sweep_files(Path(weights), REFERENCE_NAME)
    if not files:
        return [], (f"To set published results beside these rows (e.g. the MedMNIST v2 paper's), put a "
                    f"`{REFERENCE_NAME}` with the columns `{','.join(REFERENCE_COLUMNS)}` in the weights folder.")
    shown, problems = [], []
    for path in files:
        try:
            rows, left_out = read_reference(path, Path(weights))
        except ValueError as e:
            problems.append(str(e))
            continue
        problems += left_out
        shown += [[r["data"], r["method"], r["img_size"], *("" if r[k] is None else f"{r[k]:.3f}"
                                                             for k in ("accuracy", "roc_auc")), r["source"]]
                  for r in rows if data is not None and data_key(str(r["data"])) == data_key(data)]
    note = (f"{len(shown)} published result(s) for {data}, from {REFERENCE_NAME}: their figures, their protocol "
            "(not re-measured here)." if shown else f"No published result for {data} in {REFERENCE_NAME}.")
    return shown, note + "".join(f"\n- {p}" for p in problems[:10])
