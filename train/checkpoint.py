"""JSON files and the training checkpoint (our own file, never published), both written atomically.

The checkpoint is written with torch.save and read back with ``torch.load(weights_only=True)``:
it holds only tensors, numbers, strings and containers, so no pickled code is ever executed.
"""
from __future__ import annotations

import json
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.fileio import atomic_write

from ._errors import TrainError

__all__ = ["atomic_write", "write_json", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]


def write_json(path: str | Path, data: Any) -> Path:
    """JSON, atomically; NaN/inf are refused (allow_nan=False) so files stay standard JSON."""
    text = json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False)
    with atomic_write(path, "w") as f:
        f.write(text + "\n")
    return Path(path)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) generator states, in weights_only-loadable form."""
    np_state = np.random.get_state()
    state = {
        "python": _tuples_to_lists(random.getstate()),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the Python, NumPy and torch (CPU, and CUDA where available) generator states that rng_state
    recorded, so a resumed run draws the same numbers as an uninterrupted one."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state((np_state["name"], np_state["keys"].numpy().astype(np.uint32),
                         np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples_to_lists(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_tuples_to_lists(v) for v in value]
    return value


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """torch.save ``state`` atomically, after checking that every tensor in it is finite."""
    _check_finite(state, "checkpoint")
    with atomic_write(path, "wb") as f:
        sink = _WriteErrors(f)
        try:
            torch.save(state, sink)
        except RuntimeError:
            if sink.error is not None:  # torch's zip writer reports a refused write as "unexpected pos ..."
                raise OSError(sink.error.errno, sink.error.strerror, f.name) from None
            raise
    return Path(path)


class _WriteErrors:
    """A binary file for torch.save that keeps the OSError of a refused write (ENOSPC: the disk is full)."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.file.flush()


def load_checkpoint(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a checkpoint written by save_checkpoint (weights_only: no code is unpickled).

    A truncated, damaged or foreign file (one holding other Python objects, which weights_only refuses
    without running them), or one without the `required` keys, raises TrainError naming the file.
    """
    advice = "It cannot be resumed: start the run again with the same options and --overwrite."
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" not in str(e).lower():  # no foreign class/function named: zeroed or random bytes
            raise TrainError(f"checkpoint {path} is unreadable or corrupt (not a torch.save file). {advice}") from None
        # PyTorch's message suggests weights_only=False, i.e. running the file's code: never pass that on
        raise TrainError(f"checkpoint {path} is not one this trainer wrote: it holds Python objects other than "
                         f"tensors and plain data; it was refused without running any of it. {advice}") from None
    except Exception as e:  # a truncated zip (a full disk, a copy cut short), ...
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        if "weights_only" in reason:
            reason = type(e).__name__
        raise TrainError(f"checkpoint {path} is unreadable or corrupt ({reason}), e.g. truncated. {advice}") from None
    missing = [k for k in required if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise TrainError(f"checkpoint {path} is not a checkpoint of this trainer (it has no {missing}). {advice}")
    return checkpoint


def _check_finite(value: Any, where: str) -> None:
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise FloatingPointError(f"non-finite values in {where}; refusing to write them")
    elif isinstance(value, dict):
        for k, v in value.items():
            if k != "rng":
                _check_finite(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite(v, f"{where}[{i}]")
