"""Ctrl-C during a real `python -m train.sweep`, then the same command again.

The sweep runs in its own process group and gets SIGINT there, as a terminal's Ctrl-C reaches the driver and its pool
worker together, once its first cell is finished and its second has written a checkpoint. It must stop cleanly
(exit 130, no traceback, the running cell checkpointed and left resumable, the cell not yet started never begun, a
results.csv whose rows say so with no figures), and the same command must then skip the finished cell, resume the
stopped one, run the missing one, and write a complete results.csv.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from train.sweep import build_cells, read_results
from zoo.run_layout import CHECKPOINT_NAME, RUN_CONFIG_NAME, run_is_complete

ROOT = Path(__file__).resolve().parents[1]
GRID = ["--arch", "lenet5", "--mode", "scratch", "--data", "digits", "--img-size", "32", "--seeds", "0", "1", "2"]
SHARED = ["--epochs", "3", "--batch-size", "16", "--no-onnx", "--pretrained", "false"]


def _start(out: Path) -> tuple[subprocess.Popen, list[str]]:
    """The sweep as a user starts it (one worker: the cells run one after another), its output collected."""
    process = subprocess.Popen([sys.executable, "-m", "train.sweep", *GRID, "--workers", "1", "--out", str(out),
                                *SHARED], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(iter(process.stdout.readline, "")), daemon=True).start()
    return process, output


def _wait_for(process: subprocess.Popen, output: list[str], ready, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert process.poll() is None, f"the sweep ended before {what}: {''.join(output)[-3000:]}"
        assert time.time() < deadline, f"timed out waiting for {what}: {''.join(output)[-3000:]}"
        time.sleep(0.005)


@pytest.mark.heavy
def test_ctrl_c_stops_the_sweep_cleanly_and_the_same_command_finishes_only_what_is_missing(tmp_path):
    out = tmp_path / "sweep"
    finished, stopped, waiting = (c.folder for c in build_cells(
        {"arch": ["lenet5"], "mode": ["scratch"], "data": ["digits"], "img_size": [32], "seeds": [0, 1, 2]}, {}, out))
    process, output = _start(out)
    _wait_for(process, output, lambda: run_is_complete(finished) and (stopped / CHECKPOINT_NAME).is_file(),
              "its second cell's first checkpoint")
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group, driver and worker
    code = process.wait(timeout=180)
    text = "".join(output)
    assert code == 130, text
    assert "Traceback" not in text, text
    assert "Ctrl-C: waiting for the running cells to save their checkpoints" in text

    assert run_is_complete(finished)
    assert (stopped / CHECKPOINT_NAME).is_file() and (stopped / RUN_CONFIG_NAME).is_file()
    assert not run_is_complete(stopped)  # stopped half-way, resumable, not passed off as a result
    assert not waiting.exists()  # the cell that had not started was not begun
    for folder in (finished, stopped):
        assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    rows = {r["seed"]: r for r in read_results(out / "results.csv")}
    assert [rows[s]["status"] for s in "012"] == ["done", "interrupted", "interrupted"]
    assert rows["0"]["accuracy"] and not rows["1"]["accuracy"] and not rows["2"]["accuracy"]
    checkpoint_before = (stopped / CHECKPOINT_NAME).stat().st_mtime_ns
    finished_weights = (finished / "model.safetensors").stat().st_mtime_ns

    process, output = _start(out)
    code = process.wait(timeout=600)
    text = "".join(output)
    assert code == 0, text
    statuses = {line.split()[1]: line.split()[0] for line in text.splitlines() if "__seed" in line}
    assert statuses == {finished.name: "skipped", stopped.name: "resumed", waiting.name: "done"}, text
    assert (finished / "model.safetensors").stat().st_mtime_ns == finished_weights  # not trained again
    assert (stopped / CHECKPOINT_NAME).stat().st_mtime_ns != checkpoint_before
    rows = read_results(out / "results.csv")
    assert [r["seed"] for r in rows] == ["0", "1", "2"]
    assert [r["status"] for r in rows] == ["skipped", "resumed", "done"]
    assert all(r["accuracy"] and r["balanced_accuracy"] and r["train_s"] for r in rows)
    assert all(run_is_complete(c) for c in (finished, stopped, waiting))
