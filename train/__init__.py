"""Training: turn a dataset into trained, evaluated, documented weights in the zoo's Hub layout.

    python -m train --arch lenet5 --data digits --epochs 15

or from Python::

    import train
    result = train.run_training(arch="lenet5", data="digits", epochs=15, out="weights/lenet5-digits")
    result.metrics["balanced_accuracy"]
"""
from ._errors import ConfigError, DataError, DiskFullError, NonFiniteError, TrainError, TrainingInterrupted
from .cli import main
from .config import TrainConfig, build_parser, parse_args
from .runner import RunResult, run_training

__all__ = ["TrainConfig", "RunResult", "run_training", "main", "build_parser", "parse_args",
           "TrainError", "ConfigError", "DataError", "DiskFullError", "NonFiniteError", "TrainingInterrupted"]
