"""``python -m train.study``: the command line, built from each study's config dataclass."""
from __future__ import annotations

import argparse
import sys
from dataclasses import Field, fields
from typing import Any, Callable, Sequence

import zoo

from .._errors import TrainError, TrainingInterrupted
from .common import StudyConfig
from .imbalance import ImbalanceConfig, run_imbalance_study
from .init import InitConfig, run_init_study
from .transfer import TransferConfig, run_transfer_study

__all__ = ["STUDIES", "build_parser", "main"]

_RUNNERS: dict[str, tuple[type[StudyConfig], Callable[..., dict[str, Any]]]] = {
    config.study: (config, run) for config, run in ((ImbalanceConfig, run_imbalance_study),
                                                     (TransferConfig, run_transfer_study),
                                                     (InitConfig, run_init_study))}
STUDIES = {name: config.title for name, (config, _) in _RUNNERS.items()}


def _add_option(add_argument: Callable[..., argparse.Action], option: Field) -> None:
    """One ``--flag`` from a config field: its default, its help and the argparse settings in its metadata."""
    default = option.default
    kwargs: dict[str, Any] = dict(option.metadata["argparse"])
    help_text = option.metadata["help"]
    if isinstance(default, bool):
        kwargs["action"] = argparse.BooleanOptionalAction if default else "store_true"
    elif default is not None:
        kwargs.setdefault("type", type(default))
    if "default" not in help_text and default is not None and not isinstance(default, bool):
        help_text += " (default: %(default)s)"  # options whose default needs words say it in their help
    add_argument(*option.metadata["flags"], "--" + option.name.replace("_", "-"), default=default,
                 help=help_text, **kwargs)


def _add_options(parser: argparse.ArgumentParser, config: type[StudyConfig]) -> None:
    """The fields of ``config`` as options: first those every study shares, then the study's own."""
    shared = {f.name for f in fields(StudyConfig)}
    own = parser.add_argument_group(f"options of the {config.study} study")
    for option in fields(config):
        _add_option(parser.add_argument if option.name in shared else own.add_argument, option)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m train.study``: one subcommand per study."""
    parser = argparse.ArgumentParser(
        prog="python -m train.study", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Measured comparisons, each written as a report folder (report.md, results.json, "
                    "study_config.yaml, plots, runs/) under weights/studies/<study>/.\n\n"
                    + "\n".join(f"  {k:10s} {v}" for k, v in STUDIES.items()))
    sub = parser.add_subparsers(dest="study", required=True, metavar="{" + ",".join(STUDIES) + "}")
    for config, _ in _RUNNERS.values():
        _add_options(sub.add_parser(config.study, help=config.title,
                                    description=config.description or config.title), config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m train.study``; 0 ok, 2 bad input, 130 interrupted."""
    argv = list(sys.argv[1:] if argv is None else argv)
    options = vars(build_parser().parse_args(argv))
    config, run = _RUNNERS[options.pop("study")]
    try:
        run(config(**options), argv=argv[1:])
    except TrainingInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return 130
    except (TrainError, zoo.ZooError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
