"""Load saved generators and write synthetic images in ImageFolder layout with a manifest.

The manifest (``manifest.json``) marks every file as synthetic and names the generator that made
it, and carries the list of real training images the generators saw, so ``python -m train
--synthetic`` can refuse a run whose validation or test split holds one of them.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from zoo.run_layout import CONFIG_NAME, WEIGHTS_NAME

from .._errors import ConfigError, TrainError
from ..checkpoint import write_json
from .fit import GENERATOR_FORMAT, TRAIN_SPLIT_FILE, class_seed
from .model import DCGANGenerator

__all__ = ["GeneratorError", "load_generator", "generate_images", "list_generators", "sample_images",
           "MANIFEST_FILE", "MANIFEST_FORMAT", "QUALITY_DIR"]

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "zoo-synthetic-images/1"
QUALITY_DIR = "quality"  # where train.synthetic.quality_report writes, inside a synthetic set


class GeneratorError(TrainError):
    """A generator's files are missing, inconsistent, or it produced images of the wrong shape."""


def list_generators(run_dir: str | Path) -> dict[str, Path]:
    """{class name: generator folder} of a GAN run folder."""
    root = Path(run_dir) / "generators"
    if not root.is_dir():
        raise GeneratorError(f"{run_dir} has no generators/ folder; train one with python -m train.gan "
                             "--data SPEC --out FOLDER (or finish an interrupted run with --resume)")
    found = {}
    for folder in sorted(p for p in root.iterdir() if (p / CONFIG_NAME).is_file()):
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
        found[str(config.get("class_name", folder.name))] = folder
    if not found:
        raise GeneratorError(f"{root} holds no generator (no */config.json)")
    return found


def load_generator(folder: str | Path) -> tuple[DCGANGenerator, dict[str, Any]]:
    """A generator (eval mode) and its config from ``folder`` (model.safetensors + config.json)."""
    # Generators are not zoo classifiers (zoo/_hub.py loads those); they are read here with the
    # safetensors library directly. Only safetensors is ever loaded.
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_path.is_file() or not weights_path.is_file():
        raise GeneratorError(f"{folder} needs config.json and model.safetensors (a generator written by "
                             "python -m train.gan)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("format") != GENERATOR_FORMAT:
        raise GeneratorError(f"{config_path} is not a DCGAN generator config (format "
                             f"{config.get('format')!r}, expected {GENERATOR_FORMAT!r})")
    try:
        generator = DCGANGenerator(int(config["latent_dim"]), int(config["image_size"]),
                                   int(config["channels"]), int(config["width"]))
    except (KeyError, ValueError) as e:
        raise GeneratorError(f"{config_path}: invalid generator settings ({e})") from None
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as e:
        raise GeneratorError(f"{weights_path} is not a readable safetensors file ({e})") from None
    try:
        generator.load_state_dict(state)
    except RuntimeError as e:
        raise GeneratorError(f"{weights_path} does not match the generator its config.json describes "
                             f"({config['image_size']} px, {config['channels']} channel(s), width "
                             f"{config['width']}): {str(e).splitlines()[0]}") from None
    return generator.eval(), config


@torch.no_grad()
def sample_images(generator: DCGANGenerator, config: dict[str, Any], count: int, seed: int,
                  batch_size: int = 256) -> np.ndarray:
    """``count`` images as uint8 (count, S, S) or (count, S, S, 3); a wrong shape is an error."""
    expected = (int(config["channels"]), int(config["image_size"]), int(config["image_size"]))
    noise = torch.randn(count, generator.latent_dim, generator=torch.Generator().manual_seed(seed))
    device = next(generator.parameters()).device
    chunks = []
    for start in range(0, count, batch_size):
        images = generator(noise[start:start + batch_size].to(device)).cpu()  # (B, Z) -> (B, C, S, S)
        if tuple(images.shape[1:]) != expected:
            raise GeneratorError(
                f"generator for class {config.get('class_name')!r} produced images of shape "
                f"{tuple(images.shape[1:])} (C, H, W), but its config declares {expected}; synthetic images "
                "are never resized or converted silently. Re-train or fix the generator's config.json")
        chunks.append(((images.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8))
    pixels = torch.cat(chunks).permute(0, 2, 3, 1).numpy()  # (N, C, S, S) -> (N, S, S, C)
    return pixels[..., 0] if expected[0] == 1 else pixels


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def generate_images(run_dir: str | Path, per_class: int | dict[str, int], out: str | Path,
                    classes: Sequence[str] | None = None, seed: int = 0, overwrite: bool = False,
                    progress: bool = True) -> dict[str, Any]:
    """Write ``per_class`` images per class (or {class: count}) to ``out``/<class>/ with a manifest.

    Returns the manifest.
    """
    run_dir, out = Path(run_dir), Path(out)
    generators = list_generators(run_dir)
    wanted = list(classes) if classes else (list(per_class) if isinstance(per_class, dict) else list(generators))
    unknown = [c for c in wanted if c not in generators]
    if unknown:
        raise ConfigError(f"no generator for class(es) {unknown} in {run_dir}; it has {list(generators)}")
    counts = {c: int(per_class[c] if isinstance(per_class, dict) else per_class) for c in wanted}
    if any(k < 0 for k in counts.values()) or not any(counts.values()):
        raise ConfigError(f"--per-class must be at least 1, got {counts}")
    _prepare_out(out, overwrite)
    split_path = run_dir / TRAIN_SPLIT_FILE
    split = json.loads(split_path.read_text(encoding="utf-8")) if split_path.is_file() else None
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT, "synthetic": True,
        "note": "every image listed here was made by a DCGAN generator; none is a real image. Use them "
                "for training only, never for validation or testing",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "gan_run": str(run_dir.resolve()), "seed": seed,
        "real_training_images": split, "classes": {}, "files": [],
    }
    from tqdm import tqdm
    shapes = set()
    for index, name in enumerate(wanted):
        generator, config = load_generator(generators[name])
        shapes.add((config["channels"], config["image_size"]))
        folder = generators[name].name
        (out / folder).mkdir(parents=True, exist_ok=True)
        generator_path = str((generators[name] / WEIGHTS_NAME).resolve())
        pixels = sample_images(generator, config, counts[name], class_seed(seed, int(config["class_index"])))
        info = PngInfo()
        info.add_text("synthetic", "true")
        info.add_text("generator", generator_path)
        for i in tqdm(range(len(pixels)), desc=f"writing class {name}", unit="img", disable=not progress, leave=False):
            relative = f"{folder}/{folder}_synthetic_{i:05d}.png"
            Image.fromarray(pixels[i]).save(out / relative, pnginfo=info)
            manifest["files"].append({"file": relative, "class": name, "synthetic": True,
                                      "generator": generator_path, "sha256": _sha256(out / relative)})
        manifest["classes"][name] = {"count": counts[name], "folder": folder, "generator": generator_path,
                                     "generator_epochs": config.get("epochs"), "generator_steps": config.get("steps"),
                                     "num_real_images": config.get("num_real_images")}
    if len(shapes) > 1:
        raise GeneratorError(f"the generators of {run_dir} make images of different shapes {sorted(shapes)} "
                             "(channels, size); generate each shape into its own folder with --classes")
    channels, size = shapes.pop()
    manifest.update(image_size=int(size), channels=int(channels))
    write_json(out / MANIFEST_FILE, manifest)
    return manifest


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        manifest = out / MANIFEST_FILE
        if not overwrite:
            raise ConfigError(f"--out {out} is not empty; pass --overwrite to replace a previous synthetic set "
                              "there, or choose another folder")
        if not manifest.is_file():
            raise ConfigError(f"--out {out} is not empty and holds no {MANIFEST_FILE}, so it is not a synthetic "
                              "set this tool wrote; refusing to delete anything there. Choose another folder")
        previous = json.loads(manifest.read_text(encoding="utf-8"))
        for entry in previous.get("files", []):
            (out / entry["file"]).unlink(missing_ok=True)
        for folder in {Path(e["file"]).parent for e in previous.get("files", [])}:
            if (out / folder).is_dir() and not any((out / folder).iterdir()):
                shutil.rmtree(out / folder)
        manifest.unlink()
        if (out / QUALITY_DIR).is_dir():
            shutil.rmtree(out / QUALITY_DIR)  # it described the images just deleted
    out.mkdir(parents=True, exist_ok=True)
