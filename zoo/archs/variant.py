"""Any zoo backbone with an attachable head: Soft-Attention, metadata fusion, both, or an MLP.

`metadata+mlp` is late fusion with dense layers on both sides: pooled image features [-> Dense(image_hidden)],
the metadata encoder's dense stack, concatenated, then the MLP head; `fusion_batch_norm` puts a batch norm after
every hidden dense layer. It is what the imported HAM10000 skin-lesion model (zoo.skin_import) is.

One model class serves every architecture (`create_model("densenet201", head="soft_attention")`), and it is
registered with timm as `zoo_variant`, so a saved variant's config.json reads
`{"architecture": "zoo_variant", "model_args": {"backbone": "densenet201", "head": "soft_attention", ...}}`
and stock `timm.create_model("local-dir:...")` rebuilds it after `import zoo`.
"""
from __future__ import annotations

import timm
import torch
from timm.layers import SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from .._errors import ZooError
from .metadata import DenseBlock, MetadataEncoder, MetadataSchema
from .mlp import MLPHead
from .soft_attention import SoftAttentionHead

__all__ = ["ZooVariant", "HEADS"]

HEADS = ("soft_attention", "metadata", "soft_attention+metadata", "mlp", "metadata+mlp")


def _prune_unused_by_features(backbone: nn.Module, in_chans: int, size: int) -> int:
    """Replace parameterised modules that forward_features never runs (a VGG's fc6/fc7, a MobileNetV3's
    conv_head, LeNet's F6) with Identity: the variant's head replaces them, and dead parameters would
    neither train nor get gradients. Found by running forward_features once on a tiny input."""
    ran: set[nn.Module] = set()
    hooks = [m.register_forward_hook(lambda m, i, o: ran.add(m)) for m in backbone.modules()]
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        backbone.forward_features(torch.zeros(1, in_chans, size, size))
    backbone.train(was_training)
    for h in hooks:
        h.remove()
    pruned = 0
    for name, module in list(backbone.named_modules()):
        if name and module not in ran and any(True for _ in module.parameters(recurse=False)):
            parent_name, _, child = name.rpartition(".")
            parent = backbone.get_submodule(parent_name) if parent_name else backbone
            if parent in ran or parent is backbone:
                setattr(parent, child, nn.Identity())
                pruned += 1
    return pruned


def _check_backbone_pre_logits(backbone: nn.Module, name: str, head: str) -> None:
    """backbone_pre_logits needs a backbone with its own pre-logits layers, and a head that starts from them."""
    if isinstance(getattr(backbone, "pre_logits", nn.Identity()), nn.Identity):
        raise ZooError(f"backbone_pre_logits=True needs a backbone with pre-logits layers between its features and "
                       f"its classifier (e.g. vgg16's fc6/fc7); {name} has none: use backbone_pre_logits=False.")
    if head != "mlp":
        raise ZooError(f"backbone_pre_logits=True works with head='mlp' (a dense head on the backbone's pre-logits), "
                       f"not {head!r}: Soft-Attention and metadata fusion start from the pooled feature map.")


class ZooVariant(nn.Module):
    """backbone.forward_features -> [Soft-Attention head] -> pool -> [concat metadata encoding] -> classifier."""

    def __init__(
            self,
            backbone: str = "resnet50",
            head: str = "soft_attention",
            num_classes: int = 1000,
            in_chans: int = 3,
            drop_rate: float = 0.5,
            attention_heads: int = 16,
            metadata_schema: dict | None = None,
            metadata_hidden: int | list[int] = 4096,
            mlp_hidden: int = 128,
            image_hidden: int = 0,
            image_drop_rate: float = 0.0,
            fusion_batch_norm: bool = False,
            global_pool: str = "avg",
            probe_size: int = 75,
            backbone_pre_logits: bool = False,
            **backbone_kwargs,
    ):
        super().__init__()
        if head not in HEADS:
            raise ZooError(f"Unknown head {head!r}; choose one of {', '.join(HEADS)} (or None for the plain model).")
        self.num_classes = num_classes
        self.head_name = head
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, in_chans=in_chans, **backbone_kwargs)
        # backbone_pre_logits keeps the backbone's own layers between its feature map and its classifier (a VGG's
        # fc6/fc7), so that a head trained on them (a Keras Flatten -> Dense top) is the head's input as it was
        self.backbone_pre_logits = backbone_pre_logits
        if backbone_pre_logits:
            _check_backbone_pre_logits(self.backbone, backbone, head)
        else:
            _prune_unused_by_features(self.backbone, in_chans, probe_size)
        with torch.no_grad():
            was_training = self.backbone.training
            feat_chs = self.backbone.eval().forward_features(torch.zeros(1, in_chans, probe_size, probe_size)).shape[1]
            self.backbone.train(was_training)

        self.attention = SoftAttentionHead(feat_chs, attention_heads, drop_rate) if "soft_attention" in head else None
        self.num_features = self.attention.out_chs if self.attention is not None else feat_chs
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        # (B, C') -> (B, image_hidden): the image side's own dense layer before the fusion, where asked
        self.image_projection = (DenseBlock(self.num_features, image_hidden, image_drop_rate, fusion_batch_norm)
                                 if image_hidden and "metadata" in head else None)
        image_size = image_hidden if self.image_projection is not None else self.num_features
        if "metadata" in head:
            self.metadata_schema = MetadataSchema.from_dict(metadata_schema)
            self.metadata_encoder = MetadataEncoder(self.metadata_schema, metadata_hidden,
                                                    batch_norm=fusion_batch_norm)
            self.head_hidden_size = image_size + self.metadata_encoder.out_features
        else:
            self.metadata_schema, self.metadata_encoder = None, None
            self.head_hidden_size = self.backbone.head_hidden_size if backbone_pre_logits else self.num_features
        # the mlp head drops out between its two layers (drop_rate), not before them; metadata+mlp drops out
        # before its first layer (as Keras's Dropout -> Dense(relu) -> BatchNormalization -> Dense)
        self.drop_rate, self.mlp_hidden, self.fusion_batch_norm = drop_rate, mlp_hidden, fusion_batch_norm
        self.head_drop = nn.Dropout(0.0 if self.attention is not None or head == "mlp" else drop_rate)
        self.fc = self._new_classifier(num_classes)

    def _new_classifier(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        if self.head_name == "mlp":  # (B, C') -> (B, mlp_hidden) -> (B, num_classes)
            return MLPHead(self.head_hidden_size, num_classes, self.mlp_hidden, self.drop_rate)
        if self.head_name == "metadata+mlp":
            return MLPHead(self.head_hidden_size, num_classes, self.mlp_hidden, 0.0, self.fusion_batch_norm)
        return nn.Linear(self.head_hidden_size, num_classes)

    @property
    def zoo_backbone(self) -> nn.Module:
        return self.backbone

    @property
    def zoo_head_modules(self) -> list[nn.Module]:
        return [m for m in (self.attention, self.image_projection, self.metadata_encoder, self.fc) if m is not None]

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^backbone", blocks=[(r"^attention|^image_projection|^metadata_encoder|^fc", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.fc = self._new_classifier(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.backbone.forward_features(x)  # (B, 3, H, W) -> (B, C, h, w)
        if self.attention is not None:
            x = self.attention(x)  # (B, C, h, w) -> (B, 2C, h/2, w/2)
        return x

    def forward_head(self, x: torch.Tensor, metadata: torch.Tensor | None = None, pre_logits: bool = False):
        if self.backbone_pre_logits:  # (B, C, h, w) -> the backbone's pre-logits (B, head_hidden_size), e.g. fc7's
            x = self.backbone.forward_head(x, pre_logits=True)
        else:
            x = self.global_pool(x)  # (B, C', h, w) -> (B, C')
        if self.image_projection is not None:
            x = self.image_projection(x)  # (B, C') -> (B, image_hidden)
        if self.metadata_encoder is not None:
            if metadata is None:  # no metadata given: every field unknown
                metadata = self.metadata_schema.encode([{}] * x.shape[0]).to(x.device, x.dtype)
            if metadata.shape != (x.shape[0], self.metadata_schema.num_features):
                raise ZooError(f"metadata tensor has shape {tuple(metadata.shape)}, expected "
                               f"({x.shape[0]}, {self.metadata_schema.num_features}); make it with "
                               "model.metadata_schema.encode(records).")
            x = torch.cat([x, self.metadata_encoder(metadata)], dim=1)  # (B, C') -> (B, C' + hidden[-1])
        x = self.head_drop(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x), metadata)


default_cfgs = generate_default_cfgs({
    "zoo_variant": dict(input_size=(3, 224, 224), pool_size=None, crop_pct=0.875, interpolation="bicubic",
                        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                        first_conv="backbone.conv1", classifier="fc"),
})


def _derived_cfg(backbone: str, in_chans: int) -> dict:
    """The variant preprocesses like its backbone: copy the backbone's pretrained_cfg fields."""
    from timm.models import get_pretrained_cfg  # noqa: PLC0415
    src = get_pretrained_cfg(backbone, allow_unregistered=True)
    src = src.to_dict() if src is not None else {}
    cfg = {k: src[k] for k in ("input_size", "min_input_size", "crop_pct", "interpolation", "mean", "std")
           if src.get(k) is not None}
    if "input_size" in cfg:
        cfg["input_size"] = (in_chans, *cfg["input_size"][1:])
    first_conv = src.get("first_conv")
    if isinstance(first_conv, str):
        cfg["first_conv"] = f"backbone.{first_conv}"
    elif first_conv:  # several first convolutions (QuadSNet's four streams)
        cfg["first_conv"] = tuple(f"backbone.{name}" for name in first_conv)
    cfg["classifier"] = "fc"
    return cfg


@register_model
def zoo_variant(pretrained: bool = False, **kwargs) -> ZooVariant:
    """A zoo backbone (model_args `backbone`, a timm name) with a `head` from zoo.archs.variant.HEADS."""
    overlay = kwargs.pop("pretrained_cfg_overlay", None) or {}
    if kwargs.get("pretrained_cfg") is None:  # a new model; a saved one brings its own config
        overlay = {**_derived_cfg(kwargs.get("backbone", "resnet50"), kwargs.get("in_chans", 3)), **overlay}
    return build_model_with_cfg(ZooVariant, "zoo_variant", pretrained, pretrained_cfg_overlay=overlay, **kwargs)
