"""One cell of a sweep, as a worker process (local pool or Ray task) runs it: skip it when its run folder is
complete, resume it when it was stopped half-way, else start it; report what happened, never raise."""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.run_layout import RUN_CONFIG_NAME, run_is_complete

from .._errors import TrainingInterrupted
from ..config import TrainConfig, load_yaml_config

__all__ = ["STATUSES", "CellOutcome", "run_is_complete", "run_cell"]

STATUSES = ("done", "resumed", "skipped", "failed", "interrupted", "not run")
# options a resumed cell may take from the sweep without changing its result (python -m train's RESUME_OPTIONS)
_NOT_COMPARED = ("out", "name", "quiet", "workers", "device", "onnx", "overwrite", "pretrained", "extra",
                 "push_to_hub", "private", "hub_revision", "commit_message")


@dataclass
class CellOutcome:
    """What running one cell did: its status (one of STATUSES), the error if it failed, the seconds it took."""

    name: str
    status: str
    error: str = ""
    seconds: float = 0.0


def _conflict(folder: Path, config: TrainConfig) -> str:
    """Why the run already in `folder` is not this cell's run ('' when it is)."""
    saved = load_yaml_config(folder / RUN_CONFIG_NAME)
    wanted = config.to_dict()
    differ = sorted(k for k, v in wanted.items() if k not in _NOT_COMPARED and k in saved and saved[k] != v)
    if not differ:
        return ""
    changes = ", ".join(f"{k}: {saved[k]!r} there, {wanted[k]!r} now" for k in differ[:4])
    return (f"{folder} already holds a run with other options ({changes}); delete that folder or sweep into "
            "another --out")


def run_cell(name: str, config: dict[str, Any], threads: int) -> CellOutcome:
    """Run the cell whose TrainConfig is `config` with `threads` torch threads; returns its CellOutcome."""
    import torch
    from ..runner import run_training

    torch.set_num_threads(max(1, threads))
    cfg = TrainConfig.from_dict(config)
    folder = Path(cfg.out)
    start = time.perf_counter()
    try:
        started = (folder / RUN_CONFIG_NAME).is_file()
        conflict = _conflict(folder, cfg) if started else ""
        if conflict:
            return CellOutcome(name, "failed", conflict)
        if run_is_complete(folder):
            return CellOutcome(name, "skipped")
        if started:
            run_training(resume=folder, resume_overrides={"quiet": cfg.quiet, "device": cfg.device, "onnx": cfg.onnx})
        else:
            run_training(cfg)
        return CellOutcome(name, "resumed" if started else "done", seconds=time.perf_counter() - start)
    except (TrainingInterrupted, KeyboardInterrupt) as e:
        return CellOutcome(name, "interrupted", str(e) or "Ctrl-C", time.perf_counter() - start)
    except Exception as e:  # any failure is this cell's, recorded in results.csv; the other cells go on
        last = traceback.extract_tb(e.__traceback__)[-1:] if not isinstance(e, ValueError) else []
        where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
        return CellOutcome(name, "failed", f"{type(e).__name__}: {e}{where}", time.perf_counter() - start)
