"""Seed 003's DCGAN minority synthesis: one generator per class, trained on the training split only.

    python -m train.gan --data digits-imbalanced --classes 3 8 --image-size 32 --epochs 300 --out weights/gan-digits
    python -m train.gan generate weights/gan-digits --per-class 120 --out data/synthetic-digits
    python -m train.gan quality data/synthetic-digits --classifier weights/lenet5-scratch-digits-imbalanced
    python -m train --arch lenet5 --data digits-imbalanced --synthetic data/synthetic-digits

A GAN run folder holds ``gan_config.yaml``, ``train_split.json`` (the real images each generator
saw), ``generators/<class>/{model.safetensors, config.json}``, ``samples/<class>/epoch_NNNN.png``
(sample grids during training), ``losses.png``, ``gan_metrics.json``, ``checkpoints/<class>.pt``
and a ``README.md``. It has no top-level config.json, so the app never mistakes it for a classifier.
"""
from .fit import GanConfig, GanResult, train_gan
from .generate import GeneratorError, generate_images, list_generators, load_generator
from .model import DCGANDiscriminator, DCGANGenerator

__all__ = ["GanConfig", "GanResult", "train_gan", "generate_images", "load_generator", "list_generators",
           "GeneratorError", "DCGANGenerator", "DCGANDiscriminator", "main"]


def main(argv=None) -> int:
    """``python -m train.gan``: see its --help."""
    from .cli import main as cli_main
    return cli_main(argv)
