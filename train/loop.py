"""What every interruptible, resumable training loop here shares (the classifier's engine, the DCGAN's fit).

- ``mix_seed``: the seeds of a run derive from (run seed, epoch, position), never from a running
  generator, so a run resumed at any step draws exactly what an uninterrupted one draws.
- ``StopRequest``: while installed, SIGINT/SIGTERM ask the loop to stop after its current step; the
  loop saves a checkpoint and raises the exception ``interrupted`` builds. A second Ctrl-C aborts at once.
"""
from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ._errors import TrainingInterrupted

__all__ = ["StopRequest", "interrupted", "mix_seed"]

_logger = logging.getLogger("train")


def mix_seed(seed: int, epoch: int, position: int = 0) -> int:
    """A distinct, reproducible 63-bit seed per (run seed, epoch, position in the epoch)."""
    return (((seed * 1_000_003) ^ (epoch * 7_919)) * 2_654_435_761 + position) % (2 ** 63 - 1)


class StopRequest:
    """Why the loop should stop after its current step (``reason``), or None to go on."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def request(self, reason: str) -> None:
        """Stop after the current step, as SIGINT does (for callers that embed a loop, and other ranks)."""
        self.reason = reason

    @contextmanager
    def installed(self, then: str = "then saving a checkpoint") -> Iterator["StopRequest"]:
        """SIGINT/SIGTERM set ``reason`` while inside (main thread only; elsewhere signals stay as they are).

        ``then`` says what the loop does after its current step, in the warning a signal prints.
        """
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum, frame):
            if self.reason and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.reason = signal.Signals(signum).name
            _logger.warning("%s: finishing the current step, %s (press Ctrl-C again to abort at once)",
                            self.reason, then)

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def interrupted(reason: str, run_dir: str | Path, checkpoint: str | Path, command: str, epoch: int,
                step: int | None = None, num_steps: int | None = None, what: str = "") -> TrainingInterrupted:
    """The exception a loop raises once it has saved `checkpoint` after a stop request.

    `command` continues the run (``python -m train``); `what` names the part that stopped ("GAN class x ").
    """
    where = f"epoch {epoch}" if step is None else f"epoch {epoch}, step {step}/{num_steps}"
    return TrainingInterrupted(f"{reason} received: {what}stopped after {where} and saved {checkpoint}; "
                               f"continue with: {command} --resume {run_dir}", str(run_dir))
