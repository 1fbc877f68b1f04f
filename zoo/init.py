"""Moved to zoo.weight_init (timm's name for it); this alias keeps ``from ..init import init_weights`` working.

zoo/archs/alexnet.py and zoo/archs/googlenet.py still import it from here; once they import
``..weight_init``, delete this file.
"""
from .weight_init import INIT_SCHEMES, init_weights

__all__ = ["INIT_SCHEMES", "init_weights"]
