"""`python -m train`: parse the command line, run, turn user errors into one clear line."""
from __future__ import annotations

import sys
from typing import Sequence

from ._errors import TrainError, TrainingInterrupted
from .config import parse_args
from .runner import RESUME_OPTIONS, run_training

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run `python -m train` with `argv`; returns the exit status (0 ok, 2 bad input, 130 stopped)."""
    from zoo import ZooError
    try:
        cfg, resume, given = parse_args(argv)
        if resume is not None:
            ignored = sorted(given - set(RESUME_OPTIONS))
            if ignored:
                raise TrainError(f"--resume continues {resume} with its saved run_config.yaml; options "
                                 f"{['--' + k.replace('_', '-') for k in ignored]} would be ignored. "
                                 f"Only {['--' + k for k in RESUME_OPTIONS]} may be given with --resume")
            result = run_training(resume=resume,
                                  resume_overrides={k: getattr(cfg, k) for k in given & set(RESUME_OPTIONS)})
        else:
            result = run_training(cfg)
    except TrainingInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("aborted by a second Ctrl-C: the last checkpoint (end of the previous epoch or the "
              "previous interruption) is intact", file=sys.stderr)
        return 130
    except (TrainError, ZooError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    m = result.metrics
    print(f"done: {result.run_dir}  test accuracy {m.get('accuracy', float('nan')):.4f}, balanced accuracy "
          f"{m.get('balanced_accuracy', float('nan')):.4f}, macro F1 {m.get('f1_macro', float('nan')):.4f}"
          + (f", ROC-AUC {m['roc_auc']:.4f}" if "roc_auc" in m else ""))
    return 0
