"""`python -m train`: parse the command line, run, turn user errors into one clear line."""
from __future__ import annotations

import sys
from typing import Sequence

from ._errors import DiskFullError, TrainError, TrainingInterrupted
from .config import parse_args
from .distributed import is_main_process
from .logs import configure_logging
from .runner import RESUME_OPTIONS, run_training

__all__ = ["main"]


def _option(key: str) -> str:
    return "--revision" if key == "hub_revision" else "--" + key.replace("_", "-")


def main(argv: Sequence[str] | None = None) -> int:
    """Run `python -m train` with `argv`; returns the exit status (0 ok, 1 push failed, 2 bad input, 3 the disk is
    full, 130 stopped)."""
    from zoo import ZooError
    from zoo.fileio import is_disk_full
    try:
        cfg, resume, given = parse_args(argv)
        if cfg.push_to_hub:  # a bad repo id or a missing token fails now, not after the run
            from .push import check_push_target
            check_push_target(cfg.push_to_hub, revision=cfg.hub_revision)
        if resume is not None:
            ignored = sorted(given - set(RESUME_OPTIONS))
            if ignored:
                raise TrainError(f"--resume continues {resume} with its saved run_config.yaml; options "
                                 f"{[_option(k) for k in ignored]} would be ignored. "
                                 f"Only {[_option(k) for k in RESUME_OPTIONS]} may be given with --resume")
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
    except DiskFullError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (TrainError, ZooError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk outside a run folder (the zoo's cache, the feature cache)
        if not is_disk_full(e):
            raise
        print(f"error: the disk is full ({e}); free some space and run the command again", file=sys.stderr)
        return 3
    if not is_main_process():  # under torchrun rank 0 reports and pushes
        return 0
    m = result.metrics
    print(f"done: {result.run_dir}  test accuracy {m.get('accuracy', float('nan')):.4f}, balanced accuracy "
          f"{m.get('balanced_accuracy', float('nan')):.4f}, macro F1 {m.get('f1_macro', float('nan')):.4f}"
          + (f", ROC-AUC {m['roc_auc']:.4f}" if "roc_auc" in m else ""))
    if cfg.push_to_hub:  # the options as typed: the saved run configuration holds no publishing options
        return _push(result.run_dir, cfg)
    return 0


def _push(run_dir, cfg) -> int:
    from .push import PushFailedError, push_run
    configure_logging(cfg.quiet)
    try:
        push_run(run_dir, cfg.push_to_hub, private=cfg.private, revision=cfg.hub_revision,
                 commit_message=cfg.commit_message)
    except PushFailedError as e:
        print(f"error: push failed: {e}\nthe run folder {run_dir} is complete; push it later with "
              f"python -m train.push {run_dir} {cfg.push_to_hub}", file=sys.stderr)
        return 1
    except TrainError as e:
        print(f"error: push refused: {e}\nthe run folder {run_dir} is complete", file=sys.stderr)
        return 2
    return 0
