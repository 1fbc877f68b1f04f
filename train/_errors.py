"""Exceptions that `python -m train` turns into a one-line message and a non-zero exit status."""


class TrainError(ValueError):
    """A problem the user can fix: the message says what was wrong and what to do."""


class ConfigError(TrainError):
    """An option value or a config file is invalid; the message names it."""


class DataError(TrainError):
    """The data spec, a file, a folder or a column is unusable; the message names it."""


class NonFiniteError(TrainError):
    """A loss or a weight became NaN or infinite; the message names the epoch and step."""


class DiskFullError(TrainError):
    """A write found no room on the disk (ENOSPC, or EDQUOT: the quota); every file written is whole or absent, and
    the message says how to finish the run once there is room."""


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM stopped the run after a step; a checkpoint was saved for --resume."""

    def __init__(self, message: str, run_dir: str):
        super().__init__(message)
        self.run_dir = run_dir
