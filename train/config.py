"""The training configuration: one flat dataclass, an argparse front end with groups, YAML defaults.

As in timm's train.py, values in a ``--config`` YAML file become the parser's defaults, so any option
given on the command line still wins. The resolved configuration is printed at start and saved in the
run folder as ``run_config.yaml``; passing that file back with ``--config`` repeats the run.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import yaml

from zoo import HEADS, MODES, TransferMode, ZooError, get_mode
from zoo.model_config import MAX_INPUT_SIDE
from zoo.ood import DEFAULT_OOD_METHOD, ood_method_names

from ._errors import ConfigError

__all__ = [
    "TrainConfig", "ConfigError", "AUGMENT_PRESETS", "LOSSES", "MONITOR_METRICS", "build_parser",
    "parse_args", "load_yaml_config", "config_to_yaml",
]

AUGMENT_PRESETS = {
    "none": "no augmentation: the same deterministic resize/crop/normalise as evaluation (Ali et al.'s QuadSNet paper "
            "trains QuadSNet this way); the only preset that lets feature extraction cache features",
    "medical-safe": "small rotations (±10°), shifts (5%), zoom (±10%), brightness/contrast (±10%); "
                    "no flips, because mirroring e.g. a chest X-ray moves the heart (Ali et al.'s QuadSNet paper)",
    "standard": "rotation (±20°), shifts (10%), zoom (±15%), horizontal and vertical flips (Do Hoang's Soft-Attention paper)",
}
LOSSES = {
    "ce": "cross-entropy (with --label-smoothing if set)",
    "weighted-ce": "class-weighted cross-entropy, W_c = N / (C * N_c) from the training split (Do Hoang's Soft-Attention paper)",
    "margin": "the weighted margin loss of Ali et al.'s QuadSNet paper (eq. 2, m+ 0.9, m- 0.1, lambda 0.5) on softmax "
              "probabilities, each sample weighted by W_c of its class",
}
SAMPLERS = {
    "shuffle": "every training image once per epoch, in a seeded random order",
    "balanced": "class-balanced oversampling: each class drawn equally often, with replacement",
}
MONITOR_METRICS = ("balanced_accuracy", "accuracy", "f1_macro", "roc_auc", "loss")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("plateau", "cosine", "none")
CACHE_MODES = ("auto", "memory", "disk", "off")


@dataclass
class TrainConfig:
    """Everything that defines a training run. Field names are the command-line option names."""

    # model
    arch: str = ""
    mode: str = "scratch"
    pretrained: bool | None = None  # None: True for the transfer modes, False for scratch
    head: str | None = None
    init: str | None = None
    trainable_stages: int = 1
    drop_rate: float | None = None
    in_chans: int | None = None
    img_size: int | None = None
    # data
    data: str = ""
    image_dir: str | None = None
    image_col: str | None = None
    label_col: str | None = None
    metadata_cols: list[str] | None = None
    val_frac: float = 0.15
    test_frac: float = 0.15
    split_seed: int | None = None  # None: the split uses --seed
    strict: bool = False
    workers: int | None = None
    # augmentation and imbalance
    augment: str = "none"
    loss: str = "ce"
    label_smoothing: float = 0.0
    sampler: str = "shuffle"
    synthetic: str | None = None     # folder written by python -m train.gan generate
    target_balance: float = 1.0
    # optimisation
    epochs: int = 10
    batch_size: int = 32
    opt: str = "adam"
    lr: float = 1e-3
    head_lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    l1: float = 0.0
    l2: float = 0.0
    clip_grad: float | None = None
    sched: str = "plateau"
    plateau_factor: float = 0.2
    plateau_patience: int = 3
    min_lr: float = 1e-7
    monitor: str = "balanced_accuracy"
    patience: int | None = None
    seed: int = 42
    deterministic: bool = False
    device: str = "auto"
    # feature cache
    cache: str = "auto"
    cache_dir: str = ".cache/features"
    # output
    out: str | None = None
    name: str | None = None
    overwrite: bool = False
    quiet: bool = False
    onnx: bool = True                # export model.onnx at the end, verified on the test split
    ood_method: str = DEFAULT_OOD_METHOD  # the out-of-distribution score fitted at the end (zoo/ood/)
    # publishing (after the run; does not change the result)
    push_to_hub: str | None = None   # OWNER/NAME
    private: bool = False
    hub_revision: str | None = None
    commit_message: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes other tools attach

    def validate(self) -> "TrainConfig":
        """Check values that argparse cannot; raise ConfigError naming the option."""
        if not self.arch:
            raise ConfigError("no architecture given: pass --arch NAME (list them with "
                              "python -c 'import zoo; print(zoo.list_architectures())')")
        if not self.data:
            raise ConfigError("no data given: pass --data SPEC (an image folder, a CSV file, a "
                              "MedMNIST .npz file, or 'digits')")
        try:
            get_mode(self.mode)
        except ZooError as e:
            raise ConfigError(f"--mode: {e}") from None
        if self.head is not None:
            _check_choice("head", self.head, HEADS)
        _check_choice("augment", self.augment, tuple(AUGMENT_PRESETS))
        _check_choice("loss", self.loss, tuple(LOSSES))
        _check_choice("sampler", self.sampler, tuple(SAMPLERS))
        _check_choice("opt", self.opt, OPTIMIZERS)
        _check_choice("sched", self.sched, SCHEDULERS)
        _check_choice("monitor", self.monitor, MONITOR_METRICS)
        _check_choice("cache", self.cache, CACHE_MODES)
        _check_choice("ood_method", self.ood_method, ood_method_names())
        for name in ("val_frac", "test_frac"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"--{_opt(name)} must be in [0, 1), got {value}")
        if self.val_frac + self.test_frac >= 1.0:
            raise ConfigError(f"--val-frac {self.val_frac} + --test-frac {self.test_frac} leave no "
                              "training data; make their sum smaller than 1")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{_opt(name)} must be at least 1, got {getattr(self, name)}")
        for f in fields(self):  # NaN passes every comparison below; refuse it (and inf) first
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"--{_opt(f.name)} must be a finite number, got {value}")
        for name in ("lr", "head_lr"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"--{_opt(name)} must be positive, got {getattr(self, name)}")
        for name in ("lr", "min_lr", "weight_decay", "l1", "l2", "label_smoothing", "momentum"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{_opt(name)} must not be negative, got {getattr(self, name)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.label_smoothing and self.loss == "margin":
            raise ConfigError("--label-smoothing applies to cross-entropy, not to --loss margin")
        if self.drop_rate is not None and not 0.0 <= self.drop_rate < 1.0:
            raise ConfigError(f"--drop-rate must be in [0, 1), got {self.drop_rate}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ConfigError(f"--clip-grad must be positive, got {self.clip_grad}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"--patience must be at least 1, got {self.patience}")
        if not 0.0 < self.target_balance <= 1.0:
            raise ConfigError(f"--target-balance must be in (0, 1] (1.0: every class topped up to the "
                              f"largest class's real count), got {self.target_balance}")
        if self.img_size is not None and not 8 <= self.img_size <= MAX_INPUT_SIDE:
            # the upper bound is the one the zoo's loader applies to config.json: a larger run could not be loaded
            raise ConfigError(f"--img-size must be from 8 to {MAX_INPUT_SIDE} pixels (the largest input the zoo "
                              f"loads), got {self.img_size}")
        if not isinstance(self.onnx, bool):
            raise ConfigError(f"--onnx must be true or false, got {self.onnx!r}")
        if self.onnx:
            missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
            if missing:
                raise ConfigError(f"exporting model.onnx at the end of the run needs {' and '.join(missing)}, which "
                                  "is not installed: pip install 'medtl-zoo[onnx]' (or -r requirements.txt), or "
                                  "pass --no-onnx to skip the export")
        return self

    @property
    def effective_split_seed(self) -> int:
        """The seed of the stratified split: --split-seed, else --seed."""
        return self.seed if self.split_seed is None else self.split_seed

    @property
    def transfer_mode(self) -> TransferMode:
        """The --mode with what it implies (frozen backbone, head learning rate, ...)."""
        return get_mode(self.mode)

    @property
    def use_pretrained(self) -> bool:
        return self.transfer_mode.needs_pretrained if self.pretrained is None else bool(self.pretrained)

    def to_dict(self) -> dict[str, Any]:
        """Every option as a plain dict (what run_config.yaml holds)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a dict (YAML or Python), rejecting keys that are not options."""
        values = {_key(k): v for k, v in values.items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown configuration key(s) {unknown}; valid keys are the long "
                              f"option names, e.g. {sorted(known)[:8]} (see python -m train --help)")
        return cls(**values)


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"--{_opt(name)} {value!r} is not one of {list(choices)}")


def _opt(name: str) -> str:
    return name.replace("_", "-")


def _key(name: str) -> str:
    return str(name).strip().lstrip("-").replace("-", "_")


_DEFAULTS = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
             for f in fields(TrainConfig)}


def _bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _none_or(kind):
    def parse(text: str):
        return None if str(text).lower() in ("none", "null", "") else kind(text)
    parse.__name__ = kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The `python -m train` parser; defaults are TrainConfig's."""
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description="Train a zoo model on a dataset and write evaluated, documented weights in the\n"
                    "Hub layout: model.safetensors, config.json, README.md (model card), metrics.json,\n"
                    "plots, split.json, run_config.yaml, skipped_files.json and checkpoint.pt.",
        formatter_class=_Formatter,
        epilog="Examples:\n"
               "  python -m train --arch lenet5 --data digits --epochs 15\n"
               "  python -m train --arch efficientnet_lite0 --mode feature-extraction --data "
               "data/chest_xray --img-size 128\n"
               "  python -m train --config weights/RUN/run_config.yaml   # repeat a run\n"
               "  python -m train --resume weights/RUN                   # continue an interrupted run",
    )
    parser.add_argument("-c", "--config", metavar="YAML", default=None,
                        help="YAML file whose keys (long option names) become the defaults; options "
                             "given on the command line override it")
    parser.add_argument("--resume", metavar="RUN", default=None,
                        help="continue the interrupted run in folder RUN with its saved configuration "
                             "and checkpoint; it ends with the metrics an uninterrupted run would have")
    for add_options in (_add_model_options, _add_data_options, _add_augmentation_options,
                        _add_optimisation_options, _add_cache_options, _add_output_options, _add_publishing_options):
        add_options(parser)
    parser.set_defaults(**{k: v for k, v in _DEFAULTS.items() if k != "extra"})
    return parser


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """The "model" options."""
    g = parser.add_argument_group("model")
    g.add_argument("--arch", help="zoo architecture name (zoo.list_architectures())")
    g.add_argument("--mode", choices=MODES,
                   help="transfer mode: train everything from random init (scratch), train only the "
                        "head on a frozen pretrained backbone (feature-extraction), train all with "
                        "a higher head lr (fine-tune), or the head plus the last --trainable-stages "
                        "stages (partial-fine-tune)")
    g.add_argument("--pretrained", type=_none_or(_bool), metavar="BOOL",
                   help="start from the zoo's offline ImageNet weights; default: yes for transfer "
                        "modes, no for scratch")
    g.add_argument("--head", type=_none_or(str), choices=HEADS + (None,),
                   help="attach a zoo head: soft attention (Do Hoang's Soft-Attention paper), metadata fusion (age/sex/site "
                        "from a CSV, Do Hoang's Soft-Attention paper) or both")
    g.add_argument("--init", type=_none_or(str),
                   help="weight initialisation for from-scratch layers, e.g. he_normal, he_uniform, "
                        "xavier_normal (Kariuki et al.'s survey); default: the architecture's own")
    g.add_argument("--trainable-stages", type=int, help="stages trained in partial-fine-tune")
    g.add_argument("--drop-rate", type=_none_or(float), help="dropout rate before the classifier")
    g.add_argument("--in-chans", type=_none_or(int),
                   help="input channels; default: the architecture's (grayscale sources are "
                        "replicated to 3 channels for 3-channel models)")
    g.add_argument("--img-size", type=_none_or(int),
                   help="override the square input size of the model's pretrained config (the "
                        "saved config.json records the size trained at); default: the model's own")


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    """The "data" options."""
    g = parser.add_argument_group("data")
    g.add_argument("--data", metavar="SPEC",
                   help="an ImageFolder directory (one subfolder per class, optionally inside "
                        "train/ val/ test/), a CSV of images and labels (HAM10000_metadata.csv "
                        "works as is), a MedMNIST .npz file (any size; medmnist:FLAG[:SIZE] fetches "
                        "one with the medmnist package when online), or a bundled dataset: "
                        "digits (scikit-learn's handwritten digits) or "
                        "digits-imbalanced[:FRACTION[:CLASSES]] (the digits whose training split keeps "
                        "only FRACTION of CLASSES; default 0.1 of 3,8; validation/test untouched)")
    g.add_argument("--image-dir", help="CSV only: folder searched for the images named in the CSV; "
                                       "default: the CSV's folder")
    g.add_argument("--image-col", help="CSV only: column with image paths or ids; default: the first "
                                       "of image, image_id, path, file, filename")
    g.add_argument("--label-col", help="CSV only: label column; default: the first of label, dx, "
                                       "class, target, diagnosis")
    g.add_argument("--metadata-cols", nargs="*",
                   help="CSV only: metadata columns for a metadata head; default: those of age, sex, "
                        "localization that exist")
    g.add_argument("--val-frac", type=float,
                   help="validation fraction of a stratified split (when the data has no split)")
    g.add_argument("--test-frac", type=float,
                   help="test fraction of a stratified split (when the data has no split)")
    g.add_argument("--split-seed", type=_none_or(int),
                   help="seed of the stratified split; default: --seed. Fix it to compare several "
                        "seeds on one split (python -m train.study does)")
    g.add_argument("--strict", action=argparse.BooleanOptionalAction,
                   help="stop at the first unreadable image instead of skipping and listing it")
    g.add_argument("--workers", type=_none_or(int),
                   help="data loader worker processes; default: 0 for in-memory data, else up to 4")


def _add_augmentation_options(parser: argparse.ArgumentParser) -> None:
    """The "augmentation and class imbalance" options."""
    g = parser.add_argument_group("augmentation and class imbalance")
    presets = "; ".join(f"'{k}': {v}" for k, v in AUGMENT_PRESETS.items()).replace("%", "%%")
    g.add_argument("--augment", choices=tuple(AUGMENT_PRESETS),
                   help="training augmentation preset: " + presets + ". Augmentation changes the "
                        "input every epoch, so feature extraction then runs the frozen backbone "
                        "every epoch instead of using the feature cache")
    g.add_argument("--loss", choices=tuple(LOSSES),
                   help="; ".join(f"'{k}': {v}" for k, v in LOSSES.items()))
    g.add_argument("--label-smoothing", type=float, help="label smoothing for cross-entropy losses")
    g.add_argument("--sampler", choices=tuple(SAMPLERS),
                   help="; ".join(f"'{k}': {v}" for k, v in SAMPLERS.items()))
    g.add_argument("--synthetic", type=_none_or(str), metavar="DIR",
                   help="add the synthetic images in DIR (written by python -m train.gan generate, "
                        "with its manifest.json) to the training split only, never to validation or "
                        "test; the model card lists how many of each class were used")
    g.add_argument("--target-balance", type=float, metavar="R",
                   help="with --synthetic: top each class up to R x the largest class's real training "
                        "count (1.0: balanced), as far as DIR has images of that class")


def _add_optimisation_options(parser: argparse.ArgumentParser) -> None:
    """The "optimisation" options."""
    g = parser.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="maximum number of epochs")
    g.add_argument("-b", "--batch-size", type=int, help="batch size (Ali et al.'s QuadSNet paper and Do Hoang's Soft-Attention paper use 32)")
    g.add_argument("--opt", choices=OPTIMIZERS, help="optimiser (SGD uses --momentum)")
    g.add_argument("--lr", type=float, help="learning rate (Ali et al.'s QuadSNet paper: 1e-4, Do Hoang's Soft-Attention paper: 1e-3)")
    g.add_argument("--head-lr", type=_none_or(float),
                   help="fine-tune modes: learning rate of the head parameter group; default: the "
                        "zoo's choice for the mode")
    g.add_argument("--momentum", type=float, help="SGD momentum")
    g.add_argument("--weight-decay", type=float, help="optimiser weight decay (decoupled for adamw)")
    g.add_argument("--l1", type=float, help="L1 penalty coefficient on trainable weights (Kariuki et al.'s survey)")
    g.add_argument("--l2", type=float, help="L2 penalty coefficient on trainable weights, added to "
                                            "the loss (Kariuki et al.'s survey)")
    g.add_argument("--clip-grad", type=_none_or(float), help="clip the gradient norm to this value")
    g.add_argument("--sched", choices=SCHEDULERS,
                   help="learning-rate schedule: reduce on plateau of --monitor (Do Hoang's Soft-Attention paper), cosine "
                        "annealing over --epochs, or constant")
    g.add_argument("--plateau-factor", type=float, help="plateau: lr multiplier (Do Hoang's Soft-Attention paper: 0.2)")
    g.add_argument("--plateau-patience", type=int, help="plateau: epochs without improvement")
    g.add_argument("--min-lr", type=float, help="lower bound of the learning rate")
    g.add_argument("--monitor", choices=MONITOR_METRICS,
                   help="validation metric for early stopping, the plateau schedule and the best "
                        "epoch whose weights are kept")
    g.add_argument("--patience", type=_none_or(int),
                   help="early stopping: epochs without improvement of --monitor; default: off")
    g.add_argument("--seed", type=int, help="global seed (split, initialisation, order, augmentation)")
    g.add_argument("--deterministic", action=argparse.BooleanOptionalAction,
                   help="use only deterministic PyTorch kernels (slower on GPU)")
    g.add_argument("--device", help="auto, cpu, cuda or cuda:N")


def _add_cache_options(parser: argparse.ArgumentParser) -> None:
    """The "feature-extraction cache" options."""
    g = parser.add_argument_group("feature-extraction cache")
    g.add_argument("--cache", choices=CACHE_MODES,
                   help="feature-extraction mode runs the frozen backbone once and trains the head "
                        "on cached pooled features. memory: keep them in RAM; disk: also store them "
                        "under --cache-dir keyed by architecture, weights, preprocessing and data so "
                        "later runs reuse them; auto: memory; off: run the backbone every epoch. "
                        "Any --augment other than none disables the cache (logged)")
    g.add_argument("--cache-dir", help="folder for disk feature caches")


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    """The "output" options."""
    g = parser.add_argument_group("output")
    g.add_argument("--out", help="run folder; default: weights/<name>")
    g.add_argument("--name", help="run name; default: <arch>-<mode>-<dataset>")
    g.add_argument("--overwrite", action=argparse.BooleanOptionalAction,
                   help="replace an existing run folder (never done without this flag)")
    g.add_argument("--onnx", action=argparse.BooleanOptionalAction,
                   help="after the run, export model.onnx (for ONNX Runtime, other runtimes and the app's fast "
                        "backend), verified against PyTorch on the test split before it is written; "
                        "--no-onnx skips it (default: export)")
    g.add_argument("--ood-method", choices=ood_method_names(),
                   help="the out-of-distribution score fitted at the end of the run, by its name in zoo/ood/ "
                        "(each method's module says what it computes)")
    g.add_argument("-q", "--quiet", action=argparse.BooleanOptionalAction,
                   help="no progress bars or per-epoch lines; warnings and the result still print")


def _add_publishing_options(parser: argparse.ArgumentParser) -> None:
    """The "publishing" options."""
    g = parser.add_argument_group("publishing")
    g.add_argument("--push-to-hub", type=_none_or(str), metavar="OWNER/NAME",
                   help="after the run, push the run folder's publishable files (weights, config.json, "
                        "model card, metrics, plots, split; never checkpoints or caches) to this Hub "
                        "model repo, created if missing. The token comes from HF_TOKEN or `hf auth "
                        "login`; the repo id and token are checked before training. A failed push "
                        "leaves the run folder complete: push it later with python -m train.push")
    g.add_argument("--private", action=argparse.BooleanOptionalAction,
                   help="with --push-to-hub: create the repo private")
    g.add_argument("--revision", dest="hub_revision", type=_none_or(str), metavar="BRANCH",
                   help="with --push-to-hub: push to this branch (created if missing) instead of main")
    g.add_argument("--commit-message", type=_none_or(str), metavar="MSG",
                   help="with --push-to-hub: the commit summary; default: 'Upload RUN: ARCH (MODE)'")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Shows a default only where it says something the help text does not already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, "", argparse.SUPPRESS) or action.nargs == 0:
            return text
        return text + " (default: %(default)s)"


def load_yaml_config(path: str | Path, option: str = "--config", extra_keys: Sequence[str] = ()) -> dict[str, Any]:
    """Read a YAML mapping of option names to values (dashes or underscores); ``extra_keys`` are also accepted
    (a sweep's grid axes) and ``option`` names the flag that gave the file in messages."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{option} file {str(path)!r} does not exist")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{option} file {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{option} file {str(path)!r} must hold a mapping of option: value, "
                          f"got a {type(values).__name__}")
    values = {_key(k): v for k, v in values.items()}
    known = set(_DEFAULTS) | set(extra_keys)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{option} file {str(path)!r} has unknown key(s) {unknown}; use the long "
                          "option names of python -m train --help" + (f" or {list(extra_keys)}" if extra_keys else ""))
    return values


def parse_args(argv: Sequence[str] | None = None) -> tuple[TrainConfig, str | None, set[str]]:
    """Parse the command line (YAML defaults first). Returns (config, resume folder, given keys).

    ``given keys`` are the options set explicitly on the command line, so --resume can refuse
    options that would silently be ignored.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("-c", "--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**load_yaml_config(known.config))
    args = parser.parse_args(argv)
    # a second parse with suppressed defaults tells which options the user typed
    silent = build_parser()
    silent._defaults.clear()
    for action in silent._actions:
        action.default = argparse.SUPPRESS
    given = set(vars(silent.parse_args(argv))) - {"config", "resume"}
    values = {k: v for k, v in vars(args).items() if k not in ("config", "resume")}
    extra = values.pop("extra", None)
    cfg = TrainConfig(**values)
    if isinstance(extra, dict):
        cfg.extra = extra
    return cfg, args.resume, given


def config_to_yaml(cfg: TrainConfig) -> str:
    """The resolved configuration as YAML (loadable again with --config)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)
