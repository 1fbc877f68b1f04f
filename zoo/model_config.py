"""config.json as a whole, checked before anything is built from it: types, ranges and the allowed model_args.

A run folder's config.json decides what ``load_pretrained`` builds and what the catalog shows, so one bad
file must be refused with its reason, cheaply (no model is built, nothing of the file's sizes is allocated):

- every field the zoo or timm reads has the type it needs, and sizes have upper bounds (``MAX_CLASSES``,
  ``MAX_INPUT_SIDE``, ``MAX_PARAMS``, ``MAX_HIDDEN``) so that no file can make the app allocate gigabytes;
- ``model_args`` (keyword arguments of ``timm.create_model``) may hold only the keys the zoo writes
  (``MODEL_ARGS``): a key such as ``checkpoint_path`` or ``pretrained_cfg_overlay`` would make timm open a
  file (and ``torch.load`` a pickle), so it is refused with its name;
- ``pretrained_cfg``'s weight-source keys (``PRETRAINED_SOURCE_KEYS``: file, url, hf_hub_id, ...) are never
  followed: models are built with ``pretrained=False`` and the keys are dropped before the build.

The "zoo" block is parsed by ``zoo_config.ZooConfig`` (which also refuses a block of a newer format version);
this module adds the checks of its ranges.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import timm

from ._errors import ZooError
from ._registry import get_architecture, list_architectures
from .archs.metadata import MetadataSchema, hidden_sizes
from .archs.variant import HEADS
from .modes import get_mode
from .zoo_config import ZooConfig

__all__ = ["check_model_config", "MODEL_ARGS", "PRETRAINED_SOURCE_KEYS", "MAX_CLASSES", "MAX_INPUT_SIDE",
           "MAX_PARAMS", "MAX_HIDDEN"]

MAX_CLASSES = 10_000          # outputs of a classifier
MAX_INPUT_SIDE = 1024         # pixels per side of a model's input (timm's largest ImageNet inputs are 800)
MAX_PARAMS = 500_000_000      # parameters of one model (2 GB in float32; the zoo's largest, VGG-16, has 138 M)
MAX_HIDDEN = 16_384           # width of a head's hidden layer (metadata encoder, MLP head)
MAX_ATTENTION_HEADS = 256
CHANNELS = (1, 3)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
CROP_MODES = ("center", "squash", "border")
CROP_PCT_RANGE = (0.25, 1.0)
POOL_TYPES = ("", "avg", "max", "avgmax", "catavgmax", "fast", "fastavg", "fastmax", "fastavgmax", "fastcatavgmax")
# pretrained_cfg keys that tell timm where to fetch weights from: never used (pretrained=False), dropped at load
PRETRAINED_SOURCE_KEYS = ("file", "url", "hf_hub_id", "hf_hub_filename", "hf_hub_revision", "source", "state_dict")

FIX = "fix config.json or save the model again with zoo.save_pretrained"


def _fail(source: str, what: str, problem: str) -> None:
    raise ZooError(f"{source}: {what} {problem}; {FIX}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # true is no count


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _int_in(source: str, what: str, value: Any, low: int, high: int) -> int:
    if not _is_int(value):
        _fail(source, what, f"must be a whole number, got {value!r:.80}")
    if not low <= value <= high:
        _fail(source, what, f"must be between {low:,} and {high:,}, got {value:,}")
    return value


def _number_in(source: str, what: str, value: Any, low: float, high: float) -> float:
    if not _is_number(value) or not low <= value <= high:
        _fail(source, what, f"must be a number between {low:g} and {high:g}, got {value!r:.80}")
    return float(value)


def _choice(source: str, what: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        _fail(source, what, f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r:.80}")
    return value


def _image_size(source: str, what: str, value: Any) -> tuple[int, int, int]:
    """A (channels, height, width) list: 1 or 3 channels, sides from 1 to MAX_INPUT_SIDE pixels."""
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(_is_int(v) for v in value):
        _fail(source, what, f"must be [channels, height, width] (three whole numbers), got {value!r:.80}")
    _check_channels(source, f"{what}[0] (channels)", value[0])
    for side in value[1:]:
        if not 1 <= side <= MAX_INPUT_SIDE:
            _fail(source, what, f"must have sides from 1 to {MAX_INPUT_SIDE} pixels (the zoo's limit), got "
                                f"{list(value)}")
    return tuple(value)


def _check_channels(source: str, what: str, value: Any, config: Mapping | None = None) -> None:
    if not _is_int(value) or value not in CHANNELS:
        _fail(source, what, f"must be 1 (grayscale) or 3 (colour), got {value!r:.80}")


def _names(source: str, what: str, value: Any) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        _fail(source, what, f"must be a layer name or a list of them, got {value!r:.80}")


# --- model_args: the keyword arguments the zoo's models are rebuilt with ---------------------------------

def _zoo_backbones() -> tuple[str, ...]:
    return tuple(sorted({get_architecture(name).timm_name for name in list_architectures()}))


def _check_backbone(source: str, what: str, value: Any, config: Mapping) -> None:
    # a plain registered name: "hf-hub:..." or "local-dir:..." would make timm fetch or open a config
    if not isinstance(value, str) or value not in _zoo_backbones():
        _fail(source, what, f"must be one of the zoo's architectures (python -m zoo list), got {value!r:.80}")


def _check_img_size(source: str, what: str, value: Any, config: Mapping) -> None:
    sides = value if isinstance(value, (list, tuple)) else [value]
    if len(sides) not in (1, 2):
        _fail(source, what, f"must be a size or [height, width], got {value!r:.80}")
    for side in sides:
        _int_in(source, what, side, 1, MAX_INPUT_SIDE)


def _check_metadata_schema(source: str, what: str, value: Any, config: Mapping) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        _fail(source, what, f"must be an object (fields and categories), got {value!r:.80}")
    try:
        MetadataSchema.from_dict(value)
    except ZooError as e:
        _fail(source, what, f"is invalid ({e})")


def _check_hidden_sizes(source: str, what: str, value: Any, config: Mapping) -> None:
    """One width or a list of them (a metadata encoder's dense stack), each within MAX_HIDDEN."""
    try:
        sizes = hidden_sizes(value)
    except ZooError as e:
        _fail(source, what, f"is invalid ({e})")
    for size in sizes:
        _int_in(source, what, size, 1, MAX_HIDDEN)


def _arg(check: Callable[..., Any], *bounds: Any) -> Callable[[str, str, Any, Mapping], None]:
    return lambda source, what, value, config: check(source, what, value, *bounds)


def _same_as_top(source: str, what: str, value: Any, config: Mapping) -> None:
    if value != config.get("num_classes") or isinstance(value, bool):
        _fail(source, what, f"({value!r:.40}) must equal the top-level num_classes ({config.get('num_classes')!r:.40})")


def _flag(source: str, what: str, value: Any) -> None:
    if not isinstance(value, bool):
        _fail(source, what, f"must be true or false, got {value!r:.80}")


# Every key zoo.save_pretrained (through timm's save_config_for_hf) writes for the zoo's models, found by
# saving each architecture with each head: num_classes, in_chans, global_pool for all; backbone, head,
# probe_size, metadata_schema, metadata_hidden, mlp_hidden, attention_heads for zoo_variant; plus the
# constructor options create_model passes on (drop rates, GoogLeNet's aux_logits, timm's img_size).
MODEL_ARGS: dict[str, Callable[[str, str, Any, Mapping], None]] = {
    "num_classes": _same_as_top,
    "in_chans": _check_channels,
    "global_pool": _arg(_choice, POOL_TYPES),
    "img_size": _check_img_size,
    "drop_rate": _arg(_number_in, 0.0, 1.0),
    "drop_path_rate": _arg(_number_in, 0.0, 1.0),
    "aux_logits": _arg(_flag),
    "backbone": _check_backbone,
    "head": _arg(_choice, HEADS),
    "metadata_schema": _check_metadata_schema,
    "metadata_hidden": _check_hidden_sizes,
    "mlp_hidden": _arg(_int_in, 1, MAX_HIDDEN),
    "image_hidden": _arg(_int_in, 0, MAX_HIDDEN),
    "image_drop_rate": _arg(_number_in, 0.0, 1.0),
    "fusion_batch_norm": _arg(_flag),
    "attention_heads": _arg(_int_in, 1, MAX_ATTENTION_HEADS),
    "probe_size": _arg(_int_in, 8, MAX_INPUT_SIDE),
    # a VGG's fc6 width as a fraction of 4096 (timm's own argument) under a head on its fc6/fc7 (zoo.onnx_import)
    "mlp_ratio": _arg(_number_in, 1 / 4096, 1.0),
    "backbone_pre_logits": _arg(_flag),
}


def _check_model_args(config: Mapping, source: str) -> None:
    model_args = config.get("model_args")
    if model_args is None:
        return
    if not isinstance(model_args, Mapping):
        _fail(source, "model_args", f"must be an object of keyword arguments, got {type(model_args).__name__} "
                                    f"{model_args!r:.80}")
    for key, value in model_args.items():
        if key not in MODEL_ARGS:
            raise ZooError(f"{source}: model_args key {key!r} is not one the zoo writes or accepts (allowed: "
                           f"{', '.join(MODEL_ARGS)}); it could make timm open a file, so the model is refused. "
                           "Remove the key, or save the model again with zoo.save_pretrained.")
        if value is not None:  # timm drops None arguments
            MODEL_ARGS[key](source, f"model_args.{key}", value, config)


# --- pretrained_cfg: preprocessing and layer names --------------------------------------------------------

def _check_pretrained_cfg(config: Mapping, source: str) -> None:
    cfg = config.get("pretrained_cfg")
    if cfg is None:
        return
    if not isinstance(cfg, Mapping):
        _fail(source, "pretrained_cfg", f"must be an object, got {type(cfg).__name__} {cfg!r:.80}")
    channels = None
    for key in ("input_size", "min_input_size", "test_input_size"):
        if cfg.get(key) is not None:
            size = _image_size(source, f"pretrained_cfg.{key}", cfg[key])
            channels = channels or size[0]
    in_chans = (config.get("model_args") or {}).get("in_chans")
    if channels is not None and in_chans is not None and in_chans != channels:
        _fail(source, "pretrained_cfg.input_size", f"has {channels} channels but model_args.in_chans is {in_chans}")
    for key, low in (("mean", -1e6), ("std", 1e-6)):
        values = cfg.get(key)
        if values is None:
            continue
        if not isinstance(values, (list, tuple)) or not all(_is_number(v) and low <= v <= 1e6 for v in values):
            above = " above 0" if key == "std" else ""
            _fail(source, f"pretrained_cfg.{key}", f"must be a list of finite numbers{above}, got {values!r:.80}")
        if channels is not None and len(values) != channels:
            _fail(source, f"pretrained_cfg.{key}", f"has {len(values)} values for {channels}-channel input")
    for key in ("crop_pct", "test_crop_pct"):
        if cfg.get(key) is not None:
            _number_in(source, f"pretrained_cfg.{key}", cfg[key], *CROP_PCT_RANGE)
    if cfg.get("interpolation") is not None:
        _choice(source, "pretrained_cfg.interpolation", cfg["interpolation"], INTERPOLATIONS)
    if cfg.get("crop_mode") is not None:
        _choice(source, "pretrained_cfg.crop_mode", cfg["crop_mode"], CROP_MODES)
    if cfg.get("fixed_input_size") is not None:
        _flag(source, "pretrained_cfg.fixed_input_size", cfg["fixed_input_size"])
    for key in ("first_conv", "classifier"):
        if cfg.get(key) is not None:
            _names(source, f"pretrained_cfg.{key}", cfg[key])
    if cfg.get("num_classes") is not None:
        _int_in(source, "pretrained_cfg.num_classes", cfg["num_classes"], 0, MAX_CLASSES)


# --- the whole file ------------------------------------------------------------------------------------

def check_model_config(config: Any, source: str) -> None:
    """Raise ZooError naming the first field of config.json (`config`, read from `source`) that the zoo cannot
    use: a wrong type, a value out of range (with the bound), a model_args key it does not allow, label names
    that do not match the classes, an unknown architecture. Builds nothing."""
    if not isinstance(config, Mapping):
        raise ZooError(f"{source} must hold a JSON object, got {type(config).__name__}; {FIX}.")
    for key in ("architecture", "num_classes"):
        if key not in config:
            raise ZooError(f"{source} lacks the {key!r} field that timm and the zoo need; {FIX}.")
    arch = config["architecture"]
    if not isinstance(arch, str) or ":" in arch or not timm.is_model(arch):
        raise ZooError(f"{source} names architecture {arch!r:.80}, which neither timm nor the zoo "
                       "knows. `import zoo` registers the zoo's native ones; a newer timm may know it.")
    num_classes = _int_in(source, "num_classes", config["num_classes"], 1, MAX_CLASSES)
    if config.get("num_features") is not None:  # informational (timm writes it), but typed all the same
        _int_in(source, "num_features", config["num_features"], 0, MAX_PARAMS)
    if config.get("global_pool") is not None:
        _choice(source, "global_pool", config["global_pool"], POOL_TYPES)
    labels = config.get("label_names")
    if labels is not None:
        if not isinstance(labels, list) or not all(isinstance(name, str) for name in labels):
            _fail(source, "label_names", f"must be a list of {num_classes} strings (one per class), "
                                         f"got {labels!r:.80}")
        if len(labels) != num_classes:
            _fail(source, "label_names", f"has {len(labels):,} names for {num_classes:,} classes")
    _check_model_args(config, source)
    if arch == "zoo_variant" and not isinstance((config.get("model_args") or {}).get("backbone"), str):
        _fail(source, "model_args.backbone", "is needed by a zoo_variant model (the architecture under its head)")
    _check_pretrained_cfg(config, source)
    zoo_config = ZooConfig.from_dict(config.get("zoo"), source=source)
    for name in ("params_total", "params_trainable"):
        value = getattr(zoo_config, name)
        if value is not None and not 0 <= value <= MAX_PARAMS:
            _fail(source, f"zoo field {name!r}",
                  f"must be between 0 and {MAX_PARAMS:,} (the zoo's limit), got {value:,}")
    if zoo_config.mode is not None:
        try:
            get_mode(zoo_config.mode)
        except ZooError as e:
            raise ZooError(f"{source}: zoo field 'mode': {e} {FIX.capitalize()}.") from None
    if zoo_config.head is not None:
        _choice(source, "zoo field 'head'", zoo_config.head, HEADS)
    if zoo_config.trainable_stages is not None:
        _int_in(source, "zoo field 'trainable_stages'", zoo_config.trainable_stages, 0, 1000)
