"""A sweep's results.csv as the Leaderboard tab reads it, written by the tests from a few rows (the other
columns empty), so that the table and the links can be tested without running a sweep."""
import csv
from pathlib import Path


def write_results_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    """`rows` (column -> text) as a results.csv with every column of train.sweep.RESULT_COLUMNS, in `path`."""
    from train.sweep import RESULT_COLUMNS

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(RESULT_COLUMNS))
        writer.writeheader()
        writer.writerows({**dict.fromkeys(RESULT_COLUMNS, ""), **row} for row in rows)
    return path
