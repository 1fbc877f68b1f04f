"""create_model: an architecture from the registry, ready for one transfer-learning mode."""
from __future__ import annotations

import warnings

import timm
from torch import nn

from ._errors import ZooError
from .eval_transform import RESIZE_KEY, TF_BILINEAR
from ._hub import check_hub_reachable, load_matching
from ._registry import get_architecture
from .archs.metadata import MetadataSchema
from .archs.variant import HEADS
from .input_guard import guard_input_size
from .modes import apply_mode, get_mode, head_modules
from .offline_weights import offline_pretrained_cfg
from .weight_init import init_weights
from .zoo_config import ZooConfig

__all__ = ["create_model", "resolve_data_config", "resolve_data_config_from_cfg"]


def _pretrained_kwargs(info) -> dict:
    """timm kwargs that make create_model load this architecture's ImageNet weights."""
    if info.offline_weights:
        return dict(pretrained=True, pretrained_cfg_overlay=offline_pretrained_cfg(info.name))
    if info.imagenet_tag is None:
        raise ZooError(f"{info.name} has no ImageNet weights (none exist in timm for it). Use pretrained=False "
                       f"with mode='scratch' (its recommended mode is {info.recommended_mode!r}).")
    check_hub_reachable(f"timm's {info.imagenet_tag} weights")
    return dict(pretrained=True, pretrained_cfg=info.imagenet_tag.split(".", 1)[1])


def create_model(
        name: str,
        num_classes: int = 1000,
        mode: str | None = None,
        pretrained: bool = False,
        in_chans: int | None = None,
        head: str | None = None,
        metadata_schema: MetadataSchema | dict | None = None,
        init: str | None = None,
        bias_init: str | float = "zeros",
        trainable_stages: int = 1,
        **kwargs,
) -> nn.Module:
    """An architecture from the zoo, built for a transfer-learning `mode`, with `num_classes` outputs.

    Defaults follow timm's: with no `mode`, pretrained=True loads the ImageNet weights and trains
    everything ("fine-tune"), pretrained=False trains from initialisation ("scratch"); only an explicit
    mode="scratch" with pretrained=True is a contradiction. num_classes=0 gives the pooled features
    and no classifier (timm's feature-extractor idiom); a `head` needs num_classes >= 1.
    pretrained=True loads ImageNet weights (timm's, or the offline ones where `offline_weights`);
    `in_chans` defaults to the architecture's (LeNet-5: 1, others: 3); `head` attaches Soft-Attention,
    metadata fusion or an MLP; `init` re-initialises the layers that are not pretrained (zoo.weight_init).
    Extra kwargs (drop_rate, aux_logits, ...) go to the model constructor.
    """
    info = get_architecture(name)
    mode = get_mode(("fine-tune" if pretrained else "scratch") if mode is None else mode)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ZooError(f"num_classes must be an integer >= 0 (0: pooled features, no classifier), "
                       f"got {num_classes!r}.")
    if head is not None and num_classes == 0:
        raise ZooError(f"head={head!r} is a classifier head and needs num_classes >= 1; for features without "
                       "a classifier use head=None with num_classes=0.")
    if head is not None and head not in HEADS:
        raise ZooError(f"Unknown head {head!r}; choose one of {', '.join(HEADS)} or None.")
    if metadata_schema is not None and (head is None or "metadata" not in head):
        raise ZooError("metadata_schema needs a metadata head: pass head='metadata' or 'soft_attention+metadata'.")
    if pretrained and not mode.needs_pretrained:
        raise ZooError(f"mode={mode.name!r} trains from initialisation, so pretrained=True contradicts it; "
                       "use mode='fine-tune' or 'feature-extraction' with pretrained weights.")
    in_chans = info.default_input_size[0] if in_chans is None else in_chans
    if in_chans not in (1, 3):
        raise ZooError(f"in_chans must be 1 (grayscale) or 3 (colour), got {in_chans!r}.")

    weight_kwargs = _pretrained_kwargs(info) if pretrained else {}
    if head is None:
        model = timm.create_model(info.timm_name, num_classes=num_classes, in_chans=in_chans,
                                  **weight_kwargs, **kwargs)
    else:
        schema = MetadataSchema.from_dict(metadata_schema).to_dict() if "metadata" in head else None
        probe = max(info.min_input_size[1:])
        model = timm.create_model("zoo_variant", backbone=info.timm_name, head=head, num_classes=num_classes,
                                  in_chans=in_chans, metadata_schema=schema, probe_size=max(probe, 32), **kwargs)
        if pretrained:
            source = timm.create_model(info.timm_name, num_classes=0, in_chans=in_chans, **weight_kwargs)
            load_matching(model.backbone, source.state_dict(), what=f"{info.name} ImageNet weights")
    if init is not None:
        init_weights(head_modules(model) if pretrained else model, init, bias=bias_init)
    elif bias_init != "zeros":
        raise ZooError("bias_init needs an init scheme (init=...).")
    if not pretrained and mode.needs_pretrained and not mode.freezes:  # a freezing mode warns in apply_mode
        warnings.warn(f"mode={mode.name!r} without pretrained weights trains {name} from scratch.", stacklevel=2)
    apply_mode(model, mode, trainable_stages=trainable_stages, pretrained=pretrained)
    model.zoo_cfg = ZooConfig(
        architecture=name, mode=mode.name, head=head, pretrained=bool(pretrained),
        weights=(info.imagenet_tag if not info.offline_weights else f"{name}.offline_in1k") if pretrained else None,
        init=init, trainable_stages=trainable_stages if mode.uses_trainable_stages else None).to_dict()
    model.pretrained_cfg = _cfg_for_channels(model.pretrained_cfg, in_chans, info.min_input_size)
    if not pretrained:  # initialised here: the default weights' tag, licence and source describe other weights
        model.pretrained_cfg = {k: v for k, v in model.pretrained_cfg.items() if k not in WEIGHTS_PROVENANCE}
    guard_input_size(model)
    return model


# pretrained_cfg keys that describe where a model's weights came from (timm's PretrainedCfg fields)
WEIGHTS_PROVENANCE = ("tag", "license", "url", "file", "hf_hub_id", "hf_hub_filename", "hf_hub_revision",
                      "origin_url", "notes", "custom_load")


def _cfg_for_channels(cfg: dict, in_chans: int, min_input_size: tuple[int, int, int]) -> dict:
    """pretrained_cfg describing this model's input: channels, and mean/std per channel (averaged for 1)."""
    cfg = dict(cfg)
    cfg["input_size"] = (in_chans, *cfg["input_size"][1:])
    cfg["min_input_size"] = (in_chans, *min_input_size[1:])
    for key in ("mean", "std"):
        values = tuple(cfg[key])
        if len(values) != in_chans:
            cfg[key] = (sum(values) / len(values),) * in_chans
    return cfg


def resolve_data_config(model: nn.Module) -> dict:
    """input_size, mean, std, interpolation, crop_pct for this model, from its pretrained_cfg (timm's rules).

    As timm returns them (tuples), also for a model loaded from config.json, whose JSON lists come back as lists.
    """
    return {**_as_tuples(timm.data.resolve_model_data_config(model)), **_zoo_resize(getattr(model, "zoo_cfg", None))}


def resolve_data_config_from_cfg(pretrained_cfg: dict, zoo_cfg: dict | None = None) -> dict:
    """What resolve_data_config gives for a model with this pretrained_cfg and zoo block (e.g. config.json's),
    without the model."""
    return {**_as_tuples(timm.data.resolve_data_config({}, pretrained_cfg=dict(pretrained_cfg))), **_zoo_resize(zoo_cfg)}


def _zoo_resize(zoo_cfg: dict | None) -> dict:
    """{"resize": "tf-bilinear"} for a model whose zoo block asks for TensorFlow's resize (zoo.eval_transform)."""
    value = zoo_cfg.get(RESIZE_KEY) if isinstance(zoo_cfg, dict) else None
    return {RESIZE_KEY: TF_BILINEAR} if value == TF_BILINEAR else {}


def _as_tuples(config: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
