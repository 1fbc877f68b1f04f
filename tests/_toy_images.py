"""Tiny learnable toy images and image folders for the training, GAN, synthetic-data and study tests."""
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("left", "top", "centre")


def toy_image(kind: int, seed: int, size: int = 16) -> np.ndarray:
    """A noisy grayscale image whose bright half (left, top) or centre marks its class."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, size=(size, size), dtype=np.uint8)
    h = size // 2
    if kind == 0:
        x[:, :h] += 150
    elif kind == 1:
        x[:h, :] += 150
    else:
        x[size // 4:3 * size // 4, size // 4:3 * size // 4] += 150
    return x


def make_folder(root: Path, counts=(20, 20, 10), size: int = 16) -> Path:
    """ImageFolder root/<class>/<i>.png with `counts` images per class (imbalanced by default)."""
    for c, (name, n) in enumerate(zip(CLASSES, counts)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(toy_image(c, 1000 * c + i, size)).save(root / name / f"{i}.png")
    return root
