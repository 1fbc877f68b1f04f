"""Where the cells run: ``local``, a bounded pool of spawned worker processes on this machine, or ``ray``, one
Ray task per cell on this machine or on a cluster. Both return one CellOutcome per cell, in the grid's order."""
from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

from .._errors import ConfigError
from .cells import CellOutcome, run_cell
from .grid import Cell

__all__ = ["ENGINES", "run_local", "run_ray", "plan_threads"]

Report = Callable[[CellOutcome], None]


def plan_threads(workers: int | None, threads: int | None) -> tuple[int, int]:
    """(worker processes, torch threads each) with workers × threads ≤ the cores (default: one thread each)."""
    cores = os.cpu_count() or 1
    threads = threads or 1
    workers = workers or max(1, cores // threads)
    if workers < 1 or threads < 1:
        raise ConfigError(f"--workers and --threads must be at least 1, got {workers} and {threads}")
    if workers * threads > cores:
        raise ConfigError(f"--workers {workers} × --threads {threads} = {workers * threads} exceeds this machine's "
                          f"{cores} cores; the cells would slow each other down. Lower one of them")
    return workers, threads


def _job(cell: Cell) -> tuple[str, dict]:
    return cell.name, asdict(cell.config)


# A pool worker's own record of Ctrl-C. The terminal sends SIGINT to the driver and every worker at once; the pool has
# already handed a worker its next cell (concurrent.futures queues one call ahead, out of reach of cancel_futures),
# so without it a worker whose cell stopped would start the next one and run it whole after Ctrl-C.
_WORKER = {"ctrl_c": False, "in_cell": False}


def _worker_sigint(signum, frame) -> None:
    """SIGINT in a pool worker: inside a cell it stops the cell (python -m train's own handler takes over while it
    trains); between cells it is remembered, so no further cell starts (and the idle worker does not die)."""
    _WORKER["ctrl_c"] = True
    if _WORKER["in_cell"]:
        raise KeyboardInterrupt


def _start_worker() -> None:
    signal.signal(signal.SIGINT, _worker_sigint)


def _local_cell(name: str, config: dict, threads: int) -> CellOutcome:
    """run_cell in a pool worker, unless Ctrl-C already reached this worker."""
    if _WORKER["ctrl_c"]:
        return CellOutcome(name, "interrupted", "Ctrl-C before it started")
    _WORKER["in_cell"] = True
    try:
        outcome = run_cell(name, config, threads)
    finally:
        _WORKER["in_cell"] = False
    if outcome.status == "interrupted":  # this worker got Ctrl-C
        _WORKER["ctrl_c"] = True
    return outcome


def run_local(cells: Sequence[Cell], workers: int, threads: int, report: Report) -> list[CellOutcome]:
    """Run the cells on a pool of `workers` spawned processes (fresh interpreters: no torch state shared).

    Ctrl-C: the running cells checkpoint and report "interrupted", and no further cell starts."""
    outcomes: dict[str, CellOutcome] = {}
    pool = futures.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_start_worker)
    pending = {pool.submit(_local_cell, *_job(cell), threads): cell.name for cell in cells}
    try:
        for future in futures.as_completed(pending):
            outcomes[pending[future]] = _result(future, pending[future])
            report(outcomes[pending[future]])
    except KeyboardInterrupt:  # the workers got the same SIGINT: running cells checkpoint and return
        print("Ctrl-C: waiting for the running cells to save their checkpoints ...", file=sys.stderr)
        pool.shutdown(wait=True, cancel_futures=True)
        for future, name in pending.items():
            if name not in outcomes:
                outcomes[name] = (_result(future, name) if future.done() and not future.cancelled()
                                  else CellOutcome(name, "interrupted", "Ctrl-C before it started"))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [outcomes.get(cell.name, CellOutcome(cell.name, "not run")) for cell in cells]


def _result(future: futures.Future, name: str) -> CellOutcome:
    try:
        return future.result()
    except futures.process.BrokenProcessPool as e:  # the worker process died (killed, out of memory)
        return CellOutcome(name, "failed", f"its worker process died ({e}); run the sweep again to resume it")
    except Exception as e:
        return CellOutcome(name, "failed", f"{type(e).__name__}: {e}")


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray, which is not installed: pip install 'medtl-zoo[sweep]' "
                          "(or use --engine local)") from None
    return ray


def run_ray(cells: Sequence[Cell], threads: int, report: Report, address: str | None = None, gpus: float = 0.0,
            max_retries: int = 2) -> list[CellOutcome]:
    """Run each cell as a Ray task asking for `threads` CPUs (and `gpus` GPUs); a lost worker's task is retried
    `max_retries` times, then recorded as failed. Without `address` Ray starts on this machine."""
    ray = _import_ray()
    # the workers import this package as the driver does: on a cluster it must be installed on every node
    root = str(Path(__file__).resolve().parents[2])
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}}
    started_here = not ray.is_initialized()
    if started_here:
        kwargs = {"address": address} if address else {"num_cpus": os.cpu_count() or 1}
        ray.init(runtime_env=env, include_dashboard=False, logging_level="WARNING", **kwargs)
    task = ray.remote(run_cell).options(num_cpus=threads, num_gpus=gpus, max_retries=max_retries)
    refs = {task.remote(*_job(cell), threads): cell.name for cell in cells}
    outcomes: dict[str, CellOutcome] = {}
    try:
        waiting = list(refs)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            name = refs[ready[0]]
            outcomes[name] = _ray_result(ray, ready[0], name)
            report(outcomes[name])
    except KeyboardInterrupt:
        print("Ctrl-C: stopping the running cells (each saves its checkpoint) ...", file=sys.stderr)
        for ref, name in refs.items():
            if name not in outcomes:
                ray.cancel(ref)  # a KeyboardInterrupt in the task: train checkpoints at its next step
                outcomes[name] = CellOutcome(name, "interrupted", "Ctrl-C")
    finally:
        if started_here:
            ray.shutdown()
    return [outcomes.get(cell.name, CellOutcome(cell.name, "not run")) for cell in cells]


def _ray_result(ray, ref, name: str) -> CellOutcome:
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:  # a worker or node lost more often than max_retries
        return CellOutcome(name, "failed", f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")


ENGINES = ("local", "ray")
