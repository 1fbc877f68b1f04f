"""The DCGAN generator and discriminator (Radford, Metz and Chintala, 2016), as seed 003 uses them.

# seed 003_1cb7b4f6374b6293.txt, section III.F and IV.A: a DCGAN per class synthesises images for
# that class. The design is the standard one: a transposed-convolution generator with batch norm
# and ReLU (tanh output), a strided-convolution discriminator with LeakyReLU(0.2) and batch norm
# (none on its first layer), weights from N(0, 0.02), no pooling and no fully connected layers.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "check_image_size", "init_dcgan_weights"]


def check_image_size(image_size: int) -> int:
    """The number of stride-2 stages for `image_size` (a power of two from 8 to 256)."""
    if not isinstance(image_size, int) or image_size < 8 or image_size > 256 or image_size & (image_size - 1):
        raise ValueError(f"DCGAN image size must be a power of two from 8 to 256 (e.g. 32 or 64), "
                         f"got {image_size!r}")
    return int(math.log2(image_size)) - 2  # stages between the 4x4 core and the image


class DCGANGenerator(nn.Module):
    """z (B, latent_dim) -> images (B, channels, image_size, image_size) in [-1, 1]."""

    def __init__(self, latent_dim: int = 100, image_size: int = 64, channels: int = 1, width: int = 64):
        super().__init__()
        stages = check_image_size(image_size)
        self.latent_dim, self.image_size, self.channels, self.width = latent_dim, image_size, channels, width
        ch = width * 2 ** (stages - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent_dim, ch, 4, 1, 0, bias=False),  # 1x1 -> 4x4
                                   nn.BatchNorm2d(ch), nn.ReLU(inplace=True)]
        for _ in range(stages - 1):  # each doubles the size and halves the width
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2),
                       nn.ReLU(inplace=True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])  # (B, Z) -> (B, Z, 1, 1) -> (B, C, S, S)


class DCGANDiscriminator(nn.Module):
    """images (B, channels, image_size, image_size) -> real/fake logits (B,)."""

    def __init__(self, image_size: int = 64, channels: int = 1, width: int = 64):
        super().__init__()
        stages = check_image_size(image_size)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1, bias=False),
                                   nn.LeakyReLU(0.2, inplace=True)]
        ch = width
        for _ in range(stages - 1):  # each halves the size and doubles the width
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2),
                       nn.LeakyReLU(0.2, inplace=True)]
            ch *= 2
        layers += [nn.Conv2d(ch, 1, 4, 1, 0, bias=False)]  # 4x4 -> 1x1 logit (sigmoid is in the loss)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()  # (B, 1, 1, 1) -> (B,)


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN's initialisation: conv weights N(0, 0.02), batch-norm scale N(1, 0.02), shift 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
