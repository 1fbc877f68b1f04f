"""The registry's architectures as pytest parameters, for the tests that build, train a step, save and export each
one for real (tests/test_registry.py, tests/test_onnx_registry.py)."""
import pytest

import zoo

# The largest models (350-550 MB of weights: the VGGs' 7x7x512x4096 pre-logits convolution, NASNet-A Large):
# each costs 8-15 s on one core. CI runs them.
HEAVY = ("vgg11", "vgg16", "vgg19", "nasnetalarge")
# Deeper members of a family whose blocks, head and export path a smaller member already exercises in the same
# test: VGG-16 and VGG-19 are VGG-11 with more 3x3 convolutions per stage, ResNet-101/152 ResNet-50 with more
# bottleneck blocks, DenseNet-201 DenseNet-121 with more dense layers. They are deselected by default (pytest.ini:
# -m "not sibling"), which keeps CI under its time limit; `pytest -m sibling` runs them (about a minute).
SIBLINGS = {"vgg16": "vgg11", "vgg19": "vgg11", "resnet101": "resnet50", "resnet152": "resnet50",
            "densenet201": "densenet121"}


def registry_params() -> list:
    """Every registered architecture, marked heavy and/or sibling as above."""
    params = []
    for name in zoo.list_architectures():
        marks = ([pytest.mark.heavy] if name in HEAVY else []) + ([pytest.mark.sibling] if name in SIBLINGS else [])
        params.append(pytest.param(name, marks=marks))
    return params
