"""Transfer-learning modes, written once over the timm model interface.

- scratch: every parameter trains from its initialisation.
- feature-extraction: the backbone is frozen, batch-norm statistics included; only the head trains.
- fine-tune: every parameter trains; `param_groups` gives the head a larger learning rate.
- partial-fine-tune: the last N stages of the backbone (timm's coarse `group_matcher` groups) and the
  head train; the earlier stages are frozen, their batch norms too.

"The head" is `model.get_classifier()` plus, for zoo variants, the modules in `model.zoo_head_modules`
(Soft-Attention, metadata encoder). seed 001_0f58f971053e01d7.txt, 2.1, contrasts the first two modes.
"""
from __future__ import annotations

import warnings

from timm.models import group_parameters
from torch import nn

from ._errors import ZooError
from ._registry import MODES

__all__ = ["MODES", "apply_mode", "count_params", "head_modules", "head_parameters", "backbone_stages", "param_groups"]


def _backbone(model: nn.Module) -> nn.Module:
    return getattr(model, "zoo_backbone", model)


def head_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of the head: the classifier, a variant's heads, auxiliary classifiers (what pretraining lacks)."""
    mods = list(getattr(model, "zoo_head_modules", None) or [model.get_classifier()])
    mods += list(getattr(model, "zoo_aux_classifiers", ()))  # e.g. GoogLeNet's auxiliary heads
    return mods


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the head: what feature extraction trains."""
    seen, params = set(), []
    for m in head_modules(model):
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


def backbone_stages(model: nn.Module) -> list[list[nn.Parameter]]:
    """The backbone's parameters in stage order (stem first), from timm's coarse group_matcher."""
    backbone = _backbone(model)
    head_ids = {id(p) for p in head_parameters(model)}
    named = dict(backbone.named_parameters())
    groups = group_parameters(backbone, backbone.group_matcher(coarse=True))
    stages = [[named[n] for n in names if id(named[n]) not in head_ids] for names in groups.values()]
    return [s for s in stages if s]


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def _keep_eval(module: nn.Module, args) -> None:
    # forward pre-hook on a frozen norm layer: its running statistics must not move in model.train().
    module.training = False


def apply_mode(model: nn.Module, mode: str, trainable_stages: int = 1, pretrained: bool = True) -> nn.Module:
    """Set requires_grad and frozen batch norms for `mode`; returns the model."""
    if mode not in MODES:
        raise ZooError(f"Unknown mode {mode!r}; choose one of {', '.join(MODES)}.")
    for m in model.modules():  # undo an earlier mode
        for h in [k for k, fn in m._forward_pre_hooks.items() if fn is _keep_eval]:
            del m._forward_pre_hooks[h]
    for p in model.parameters():
        p.requires_grad_(True)
    if isinstance(getattr(model, "zoo_cfg", None), dict):
        model.zoo_cfg.update(mode=mode, trainable_stages=trainable_stages if mode == "partial-fine-tune" else None)
    if mode in ("scratch", "fine-tune"):
        return model

    if not pretrained:
        warnings.warn(f"mode={mode!r} freezes a backbone that has no pretrained weights: its frozen features "
                      "are random. Allowed for teaching; for real use train from scratch or use ImageNet weights.",
                      stacklevel=3)
    head_ids = {id(p) for p in head_parameters(model)}
    if mode == "feature-extraction":
        frozen = [p for p in model.parameters() if id(p) not in head_ids]
    else:
        stages = backbone_stages(model)
        if not isinstance(trainable_stages, int) or not 1 <= trainable_stages <= len(stages):
            raise ZooError(f"trainable_stages must be an integer from 1 to {len(stages)} for this model "
                           f"(it has {len(stages)} stages, stem included); got {trainable_stages!r}.")
        frozen = [p for stage in stages[:-trainable_stages] for p in stage]
    for p in frozen:
        p.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            own = list(m.parameters(recurse=False))
            if own and not any(p.requires_grad for p in own):
                m.register_forward_pre_hook(_keep_eval)
    return model


def param_groups(model: nn.Module, lr: float, head_lr: float | None = None,
                 weight_decay: float = 0.0) -> list[dict]:
    """Optimizer parameter groups: the backbone at `lr`, the head at `head_lr` (default 10x lr).

    Only trainable parameters are included; groups without any are dropped.
    """
    head_lr = lr * 10 if head_lr is None else head_lr
    head_ids = {id(p) for p in head_parameters(model)}
    head = [p for p in model.parameters() if p.requires_grad and id(p) in head_ids]
    backbone = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    groups = [dict(params=backbone, lr=lr, weight_decay=weight_decay, name="backbone"),
              dict(params=head, lr=head_lr, weight_decay=weight_decay, name="head")]
    return [g for g in groups if g["params"]]
