"""The torch Dataset over a source's samples: decoded with zoo.images, so training and the app read pixels alike."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from .samples import DataSource, Sample

__all__ = ["ImageDataset"]


class ImageDataset(Dataset):
    """Samples -> (image tensor, label, index), decoded and converted for the model's in_chans.

    An item may be ``(index, seed)``: the transform then runs under that seed, so random
    augmentation depends only on (seed, epoch, index) and not on worker count or resume point.
    """

    def __init__(self, source: DataSource, samples: Sequence[Sample], transform: Callable,
                 in_chans: int):
        self.source = source
        self.samples = list(samples)
        self.transform = transform
        self.in_chans = in_chans

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> Image.Image:
        """The sample's image as a PIL image in the model's mode (L for 1 channel, else RGB)."""
        from zoo.images import load_image, to_model_mode
        sample = self.samples[index]
        if isinstance(sample.ref, Path):
            image = load_image(sample.ref).image
        else:
            image = Image.fromarray(self.source.array[sample.ref])
        return to_model_mode(image, self.in_chans)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        image = self.load(index)
        if seed is None:
            x = self.transform(image)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                x = self.transform(image)
        return x, self.samples[index].label, index
