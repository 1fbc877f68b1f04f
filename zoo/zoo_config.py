"""The zoo's block of config.json (and ``model.zoo_cfg``): how a model was made, typed and validated.

In the spirit of timm's ``PretrainedCfg``: a dataclass is the schema, the model and config.json carry
its plain-dict form (``model.zoo_cfg``, the ``"zoo"`` object), and every reader parses that dict with
``ZooConfig.from_dict``, which names the field, the bad value and the file. Keys it does not know are
kept in ``extra``.

The block states its format, ``format_version`` (``ZOO_FORMAT_VERSION`` of the zoo that wrote it;
``zoo.save_pretrained``, the one writer, sets it). A block without one was written before formats were
versioned and loads as it always has; a block of a newer format is refused with a message that names the
file, its version and ours, since this zoo cannot know what the newer fields mean. Raise the version when
a field changes meaning or becomes required, not when one is added: a new optional field is kept in
``extra`` by older readers.

Names across the project: ``zoo_cfg`` is always the plain dict (as timm's ``pretrained_cfg`` is), and
``zoo_config`` always a parsed ``ZooConfig``.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

from ._errors import ZooError
from .model_facts import ModelFacts

__all__ = ["ZooConfig", "ZOO_FORMAT_VERSION"]

ZOO_FORMAT_VERSION = 1  # the format of config.json's "zoo" block that this zoo writes and reads


@dataclass
class ZooConfig:
    """How a zoo model was built and trained. Every field may be absent from a file (None, or False)."""

    format_version: int | None = None     # ZOO_FORMAT_VERSION of the writer; None: written before versions
    architecture: str | None = None       # the zoo's name (zoo.list_architectures())
    mode: str | None = None               # transfer mode (zoo.MODES)
    head: str | None = None               # zoo.HEADS, or None for the plain classifier
    pretrained: bool = False              # started from ImageNet weights
    weights: str | None = None            # which ones, e.g. "resnet18.a1_in1k"
    init: str | None = None               # zoo.INIT_SCHEMES scheme of the layers not pretrained
    trainable_stages: int | None = None   # partial-fine-tune only
    dataset: str | None = None           # the data it was trained on, as users know it ("digits", "pneumoniamnist")
    dataset_id: str | None = None        # that data set's Hugging Face Hub id, when it has one
    medical: bool | None = None          # whether that data is medical images (None: not known)
    params_total: int | None = None
    params_trainable: int | None = None
    training: dict[str, Any] | None = None      # what python -m train records (run, data, loss, epochs, ...)
    test_metrics: dict[str, Any] | None = None  # headline test metrics {name: value}
    # intended use, training data, evaluation, ... (zoo/model_facts.py); malformed parts read as not stated, so
    # bad facts never make a model unusable
    facts: ModelFacts | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they are

    def to_dict(self) -> dict[str, Any]:
        """The plain form stored in config.json's "zoo" object and in ``model.zoo_cfg``."""
        known = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        if self.facts is not None:
            known["facts"] = self.facts.to_dict()
        return {**known, **{k: v for k, v in self.extra.items() if k not in known}}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, source: str = "the zoo config") -> "ZooConfig":
        """Parse a "zoo" object; a wrongly typed value raises ZooError naming the field, the value and `source`."""
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise ZooError(f"{source}: the \"zoo\" object must be a JSON object, got {type(values).__name__} "
                           f"{values!r:.80}; re-save the model with zoo.save_pretrained.")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        parsed = {k: v for k, v in values.items() if k in known}
        if parsed.get("facts") is not None:  # parsed leniently: never raises
            parsed["facts"] = ModelFacts.from_dict(parsed["facts"], source)
        for name, value in parsed.items():
            _check_type(name, value, source)
        _check_format_version(parsed.get("format_version"), source)
        return cls(**parsed, extra={k: v for k, v in values.items() if k not in known})

    @classmethod
    def from_model(cls, model: Any) -> "ZooConfig":
        """The parsed ``model.zoo_cfg`` (an empty config for a model the zoo did not build or load)."""
        return cls.from_dict(getattr(model, "zoo_cfg", None), source=f"{type(model).__name__}.zoo_cfg")


def _accepted(hint: Any) -> tuple[type, ...]:
    """The runtime types a field's annotation admits: `str | None` -> (str, NoneType), `dict[str, Any]` -> (dict,)."""
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return tuple(typing.get_origin(m) or m for m in members)


_TYPES = {name: _accepted(hint) for name, hint in typing.get_type_hints(ZooConfig).items() if name != "extra"}
_KIND = {str: "a string", int: "an integer", bool: "true or false", dict: "an object", type(None): "null"}


def _check_type(name: str, value: Any, source: str) -> None:
    expected = _TYPES[name]
    # bool is an int in Python, but a count of true is no count
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        kinds = " or ".join(_KIND[t] for t in expected)
        raise ZooError(f"{source}: zoo field {name!r} must be {kinds}, got {value!r:.80}; fix the file or "
                       "re-save the model with zoo.save_pretrained.")


def _check_format_version(version: int | None, source: str) -> None:
    """None (a block written before versions) and versions up to ours pass; a newer or invalid one raises."""
    if version is None or 1 <= version <= ZOO_FORMAT_VERSION:
        return
    if version < 1:
        raise ZooError(f"{source}: zoo field 'format_version' must be a version from 1, got {version}; fix the "
                       "file or re-save the model with zoo.save_pretrained.")
    raise ZooError(f"{source}: its zoo block has format version {version}, newer than the version {ZOO_FORMAT_VERSION} "
                   "this zoo reads, so its fields may mean what this version cannot know. Upgrade the zoo "
                   "(pip install -U medtl-zoo, or pull the newer code) to load this model.")
