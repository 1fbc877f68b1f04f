"""``python -m train.sweep``: parse the grid, check it whole, run its cells on an engine, write the tables."""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import zoo

from .._errors import ConfigError, TrainError
from ..config import parse_args
from .catalog import add_to_catalog, check_catalog
from .cells import CellOutcome
from .engines import ENGINES, plan_threads, run_local, run_ray
from .grid import GRID_KEYS, MAX_CELLS, Cell, build_cells, load_grid_file, validate_cells
from .results import RESULTS_NAME, result_row, write_results

__all__ = ["SweepOptions", "SweepResult", "build_parser", "run_sweep", "main"]


@dataclass
class SweepOptions:
    """How to run a grid: the engine and its resources."""

    engine: str = "local"
    workers: int | None = None      # local: worker processes (default: cores // threads)
    threads: int | None = None      # torch threads per cell (default 1)
    address: str | None = None      # ray: the cluster to join (default: start Ray on this machine)
    gpus: float = 0.0               # ray: GPUs per cell
    max_retries: int = 2            # ray: retries of a cell whose worker was lost
    yes: bool = False               # run a grid bigger than MAX_CELLS
    catalog: str | None = None      # a catalog.json to list the finished cells in (the app's Compare tab offers them)


@dataclass
class SweepResult:
    """What a sweep did: one outcome per cell, the rows of results.csv, the files written, the seconds."""

    outcomes: list[CellOutcome]
    rows: list[dict[str, Any]]
    files: list[Path]
    seconds: float


def build_parser() -> argparse.ArgumentParser:
    """The sweep's own options; any other option is python -m train's, shared by every cell."""
    parser = argparse.ArgumentParser(
        prog="python -m train.sweep", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train every cell of a grid (data set × architecture × mode × input size × seed), each an "
                    "ordinary python -m train run in its own folder under --out, then write results.csv, "
                    "leaderboard.csv/.md and two plots there. Re-running the same command skips finished cells "
                    "and resumes stopped ones. Other options (--epochs, --batch-size, ...) are python -m train's "
                    "and apply to every cell.",
        epilog="Examples:\n  python -m train.sweep --arch lenet5 resnet18 --mode scratch fine-tune --data digits "
               "--img-size 32 --seeds 0 1 2 --epochs 5 --out weights/sweeps/digits\n"
               "  python -m train.sweep --grid grid.yaml --engine ray --address auto --out /shared/sweep")
    parser.add_argument("--grid", metavar="YAML", help="a YAML file with the keys arch, mode, data, img_size, seeds "
                        "(a value or a list) and any python -m train option; the command line wins")
    parser.add_argument("--arch", nargs="+", help="architectures (zoo.list_architectures())")
    parser.add_argument("--mode", nargs="+", help="transfer modes (python -m train --mode)")
    parser.add_argument("--data", nargs="+", help="data sets, anything python -m train --data accepts")
    parser.add_argument("--img-size", nargs="+", type=int, help="input sizes (default: each model's own)")
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default: 0)")
    parser.add_argument("--out", required=True, help="sweep folder: one run folder per cell, results.csv, ...")
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help="local: a pool of worker processes here; ray: one Ray task per cell (pip install "
                             "'medtl-zoo[sweep]')")
    parser.add_argument("--workers", type=int, help="local: worker processes (default: cores // --threads). "
                        "Not python -m train's data-loader --workers, which cells leave at its default")
    parser.add_argument("--threads", type=int, help="torch threads (and Ray CPUs) per cell (default 1)")
    parser.add_argument("--address", help="ray: the cluster to join (e.g. auto, or ray://HEAD:10001); "
                                          "default: start Ray on this machine")
    parser.add_argument("--gpus", type=float, default=0.0, help="ray: GPUs per cell")
    parser.add_argument("--max-retries", type=int, default=2, help="ray: retries of a cell whose worker was lost")
    parser.add_argument("--yes", action="store_true", help=f"run a grid of more than {MAX_CELLS} cells")
    parser.add_argument("--catalog", metavar="JSON", help="list each finished cell in this catalog.json (e.g. "
                        "weights/catalog.json, with --out below weights/) so that the app's Compare tab offers its "
                        "model")
    return parser


def parse_sweep_args(argv: Sequence[str]) -> tuple[argparse.Namespace, dict[str, Any], dict[str, Any]]:
    """(sweep options, grid axes, shared train options) from the command line and the --grid file."""
    args, rest = build_parser().parse_known_args(list(argv))
    from_file = load_grid_file(args.grid) if args.grid else {}
    axes = {key: from_file.pop(key, None) for key in GRID_KEYS}
    axes.update({key: getattr(args, key) for key in GRID_KEYS if getattr(args, key) is not None})
    for refused in ("--config", "--resume"):
        if refused in rest:
            raise ConfigError(f"{refused} does not apply to a sweep: put shared options in the --grid file; "
                              "re-running the same sweep resumes its stopped cells")
    cfg, _, given = parse_args(rest)  # python -m train's parser: its names, types and choices
    shared = {**from_file, **{key: getattr(cfg, key) for key in given}}
    return args, axes, shared


def _report(outcome: CellOutcome) -> None:
    print(f"{outcome.status:11s} {outcome.name}" + (f"  ({outcome.seconds:.0f} s)" if outcome.seconds else "")
          + (f": {outcome.error}" if outcome.error else ""), flush=True)


def run_sweep(cells: Sequence[Cell], out: str | Path, options: SweepOptions | None = None) -> SweepResult:
    """Validate the cells as a whole, run them on the chosen engine, write the tables and plots into `out`."""
    options = options or SweepOptions()
    validate_cells(cells, yes=options.yes)
    if options.catalog:
        check_catalog(options.catalog)  # a catalog it could not add to is refused before any cell runs
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if options.engine == "ray":
        outcomes = run_ray(cells, options.threads or 1, _report, address=options.address, gpus=options.gpus,
                           max_retries=options.max_retries)
    elif options.engine == "local":
        workers, threads = plan_threads(options.workers, options.threads)
        outcomes = run_local(cells, min(workers, len(cells)), threads, _report)
    else:
        raise ConfigError(f"--engine {options.engine!r} is not one of {list(ENGINES)}")
    seconds = time.perf_counter() - start
    rows = [result_row(cell, outcome) for cell, outcome in zip(cells, outcomes)]
    files = write_results(out, rows)
    if options.catalog:
        added, skipped = add_to_catalog(options.catalog, cells)
        print(f"{options.catalog}: {len(added)} run folder(s) added"
              + "".join(f"\n  not added: {why}" for why in skipped), flush=True)
        files += [Path(options.catalog)] if added else []
    return SweepResult(outcomes, rows, files, seconds)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m train.sweep``; 0 all cells finished, 1 some failed, 2 bad input, 130 interrupted."""
    try:
        args, axes, shared = parse_sweep_args(sys.argv[1:] if argv is None else argv)
        shared.setdefault("quiet", True)  # cells run side by side: their progress bars would interleave
        cells = build_cells(axes, shared, args.out)
        options = SweepOptions(engine=args.engine, workers=args.workers, threads=args.threads, address=args.address,
                               gpus=args.gpus, max_retries=args.max_retries, yes=args.yes, catalog=args.catalog)
        print(f"sweep: {len(cells)} cells on the {args.engine} engine into {args.out}", flush=True)
        result = run_sweep(cells, args.out, options)
    except (TrainError, zoo.ZooError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    statuses = [o.status for o in result.outcomes]
    print(f"{Path(args.out) / RESULTS_NAME}: " + ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
          + f" in {result.seconds:.0f} s", flush=True)
    if "interrupted" in statuses:
        return 130
    return 1 if "failed" in statuses else 0
