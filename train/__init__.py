"""Training: turn a dataset into trained, evaluated, documented weights in the zoo's Hub layout."""
from ._errors import ConfigError, DataError, NonFiniteError, TrainError, TrainingInterrupted
from .config import TrainConfig, build_parser, parse_args

__all__ = ["TrainConfig", "build_parser", "parse_args", "TrainError", "ConfigError", "DataError",
           "NonFiniteError", "TrainingInterrupted"]
