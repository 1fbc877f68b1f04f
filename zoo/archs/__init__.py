"""Natively implemented families. Importing a family module registers its models with timm."""
from . import alexnet, googlenet, lenet, nasnet_mobile, quadsnet, xception  # noqa: F401
