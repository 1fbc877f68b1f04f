"""Sweeps: every cell of a grid (data set × architecture × mode × input size × seed) trained as an ordinary
``python -m train`` run, on a local pool of processes or on Ray, then one table and a leaderboard.

    python -m train.sweep --arch lenet5 mobilenetv3_small_100 --mode scratch fine-tune --data digits \\
        --img-size 32 --seeds 0 1 2 --epochs 5 --out weights/sweeps/digits [--engine ray [--address auto]]

Sweep folder (``--out``)::

    <data>__<arch>__<mode>__img<size>__seed<k>/   each cell's run folder (python -m train's layout)
    results.csv          one row per cell: figures from its metrics.json / config.json, ONNX latency, status
    leaderboard.csv/.md  seeds aggregated: mean ± std and a 95% t-interval
    accuracy_vs_latency.png, transfer_modes.png

The run folders are the results: with Ray on a cluster, --out must be on a filesystem every node shares.
Modules: ``grid`` (cells, validation), ``cells`` (one cell: skip, resume or run), ``engines`` (local, ray),
``results`` and ``plots`` (tables and figures), ``cli`` (the command line and ``run_sweep``).
"""
from .cells import STATUSES, CellOutcome, run_is_complete
from .cli import SweepOptions, SweepResult, main, run_sweep
from .grid import MAX_CELLS, Cell, build_cells, validate_cells
from .plots import pareto_front
from .results import RESULT_COLUMNS, leaderboard, read_results

__all__ = ["STATUSES", "CellOutcome", "run_is_complete", "SweepOptions", "SweepResult", "main", "run_sweep",
           "MAX_CELLS", "Cell", "build_cells", "validate_cells", "RESULT_COLUMNS", "leaderboard", "pareto_front",
           "read_results"]
