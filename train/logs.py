"""The "train" logger's output: INFO lines to stdout, warnings to stderr, printed around the progress bars.

Every entry point (python -m train, train.gan, train.push) calls ``configure_logging`` once at start.
"""
from __future__ import annotations

import logging
import sys

__all__ = ["configure_logging"]

_logger = logging.getLogger("train")


class _TqdmHandler(logging.Handler):
    """Log lines that do not tear the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm
        try:
            tqdm.write(self.format(record), file=sys.stdout if record.levelno < logging.WARNING else sys.stderr)
        except Exception:
            self.handleError(record)


def configure_logging(quiet: bool = False) -> None:
    """INFO lines to stdout (WARNING and up only with quiet), once per process."""
    if not any(isinstance(h, _TqdmHandler) for h in _logger.handlers):
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        _logger.addHandler(handler)
        _logger.propagate = False
    _logger.setLevel(logging.WARNING if quiet else logging.INFO)
