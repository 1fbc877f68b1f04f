"""Transfer-learning modes, written once over the timm model interface.

- scratch: every parameter trains from its initialisation.
- feature-extraction: the backbone is frozen, batch-norm statistics included; only the head trains.
- fine-tune: every parameter trains; `param_groups` gives the head a larger learning rate.
- partial-fine-tune: the last N stages of the backbone (timm's coarse `group_matcher` groups) and the
  head train; the earlier stages are frozen, their batch norms too.

"The head" is `model.get_classifier()` plus, for zoo variants, the modules in `model.zoo_head_modules`
(Soft-Attention, metadata encoder). seed 001_0f58f971053e01d7.txt, 2.1, contrasts the first two modes.

Each mode is declared once, as a `TransferMode` carrying what it implies; `MODES` and `MODE_ORDER` are
derived from that declaration, and `get_mode` is the one check of a mode's name.
"""
from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass

from timm.models import group_parameters
from torch import nn

from ._errors import ZooError

__all__ = ["BackboneTraining", "HEAD_LR_MULTIPLIER", "MODES", "MODE_ORDER", "TransferMode", "apply_mode",
           "backbone_stages", "count_params", "get_mode", "head_modules", "head_parameters", "param_groups"]

# The new head starts from random weights while the pretrained backbone only needs nudging, so the
# fine-tuning modes give the head a learning rate this many times the backbone's.
HEAD_LR_MULTIPLIER = 10.0


class BackboneTraining(enum.Enum):
    """How much of the backbone a mode trains, from the least to the most (the head always trains)."""

    NONE = 0          # the backbone is frozen, batch norms included
    LAST_STAGES = 1   # the last `trainable_stages` stages; the earlier ones are frozen
    ALL = 2           # every parameter


@dataclass(frozen=True)
class TransferMode:
    """One transfer-learning mode and what it implies. `name` is its spelling in files, CLIs and the API."""

    name: str
    backbone: BackboneTraining
    needs_pretrained: bool          # False: trains from initialisation, so pretrained weights contradict it
    head_lr_multiplier: float = 1.0  # the head's learning rate over the backbone's (1.0: one parameter group)

    @property
    def frozen_backbone(self) -> bool:
        """Only the head trains: the backbone's features never change, so they can be cached."""
        return self.backbone is BackboneTraining.NONE

    @property
    def freezes(self) -> bool:
        """Some of the backbone is frozen."""
        return self.backbone is not BackboneTraining.ALL

    @property
    def uses_trainable_stages(self) -> bool:
        """The number of trained backbone stages (`trainable_stages`) applies."""
        return self.backbone is BackboneTraining.LAST_STAGES

    @property
    def separate_head_lr(self) -> bool:
        """The optimizer gets a backbone and a head parameter group, at different learning rates."""
        return self.head_lr_multiplier != 1.0


_DECLARED = (
    TransferMode("scratch", BackboneTraining.ALL, needs_pretrained=False),
    TransferMode("feature-extraction", BackboneTraining.NONE, needs_pretrained=True),
    TransferMode("fine-tune", BackboneTraining.ALL, needs_pretrained=True, head_lr_multiplier=HEAD_LR_MULTIPLIER),
    TransferMode("partial-fine-tune", BackboneTraining.LAST_STAGES, needs_pretrained=True,
                 head_lr_multiplier=HEAD_LR_MULTIPLIER),
)
_BY_NAME = {m.name: m for m in _DECLARED}
MODES = tuple(_BY_NAME)
# The order to show them in: from scratch first, then the transfer modes from the fewest trained
# parameters of the pretrained network to all of them.
MODE_ORDER = tuple(m.name for m in sorted(_DECLARED, key=lambda m: (m.needs_pretrained, m.backbone.value)))


def get_mode(mode: str | TransferMode) -> TransferMode:
    """The mode of this name; an unknown name raises ZooError naming it and the choices."""
    if isinstance(mode, TransferMode):
        return mode
    found = _BY_NAME.get(mode) if isinstance(mode, str) else None
    if found is None:
        raise ZooError(f"Unknown mode {mode!r:.80}; choose one of the transfer modes: {', '.join(MODES)}.")
    return found


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


def apply_mode(model: nn.Module, mode: str | TransferMode, trainable_stages: int = 1,
               pretrained: bool = True) -> nn.Module:
    """Set requires_grad and frozen batch norms for `mode`; returns the model."""
    mode = get_mode(mode)
    for m in model.modules():  # undo an earlier mode
        for h in [k for k, fn in m._forward_pre_hooks.items() if fn is _keep_eval]:
            del m._forward_pre_hooks[h]
    for p in model.parameters():
        p.requires_grad_(True)
    if isinstance(getattr(model, "zoo_cfg", None), dict):
        model.zoo_cfg.update(mode=mode.name, trainable_stages=trainable_stages if mode.uses_trainable_stages else None)
    if not mode.freezes:
        return model

    if not pretrained:
        warnings.warn(f"mode={mode.name!r} freezes a backbone that has no pretrained weights: its frozen features "
                      "are random. Allowed for teaching; for real use train from scratch or use ImageNet weights.",
                      stacklevel=3)
    head_ids = {id(p) for p in head_parameters(model)}
    if mode.frozen_backbone:
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
    """Optimizer parameter groups: the backbone at `lr`, the head at `head_lr` (default HEAD_LR_MULTIPLIER x lr).

    Only trainable parameters are included; groups without any are dropped.
    """
    head_lr = lr * HEAD_LR_MULTIPLIER if head_lr is None else head_lr
    head_ids = {id(p) for p in head_parameters(model)}
    head = [p for p in model.parameters() if p.requires_grad and id(p) in head_ids]
    backbone = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    groups = [dict(params=backbone, lr=lr, weight_decay=weight_decay, name="backbone"),
              dict(params=head, lr=head_lr, weight_decay=weight_decay, name="head")]
    return [g for g in groups if g["params"]]
