"""Train one DCGAN per selected class on the training split only, with grids, curves and resume.

One generator per class, as Ismail et al.'s DCGAN paper (section III.F: "DCGAN ... to create synthetic images for each
class") does, rather than one class-conditional model: a minority class's generator then learns
from that class alone, so the majority classes cannot dominate its gradients, and each class's
generator can be trained, extended, inspected and replaced on its own.

Reproducibility: each class's initialisation, epoch order and noise come from seeds derived from
(seed, class, epoch, step) with train.loop.mix_seed, never from a running generator, so ``--resume``
from any saved point ends with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import json
import logging
import math
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torchvision import transforms as T

from zoo.run_layout import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME

from .._errors import ConfigError, DataError, NonFiniteError
from ..checkpoint import load_checkpoint, save_checkpoint, write_json
from ..data import DataSource, Sample, load_source, make_splits, verify_images
from ..logs import configure_logging
from ..loop import StopRequest, interrupted, mix_seed
from .model import DCGANDiscriminator, DCGANGenerator, check_image_size, init_dcgan_weights

__all__ = ["GanConfig", "GanResult", "train_gan", "load_real_images", "class_folder", "class_seed",
           "GAN_CONFIG_FILE", "TRAIN_SPLIT_FILE", "GENERATOR_FORMAT"]

_logger = logging.getLogger("train")

GAN_CONFIG_FILE = "gan_config.yaml"
TRAIN_SPLIT_FILE = "train_split.json"
METRICS_FILE = "gan_metrics.json"
GENERATOR_FORMAT = "zoo-dcgan-generator/1"
_RUN_ENTRIES = (GAN_CONFIG_FILE, TRAIN_SPLIT_FILE, METRICS_FILE, "losses.png", CARD_NAME,
                "generators", "samples", "checkpoints")
GRID_SAMPLES = 64


@dataclass
class GanConfig:
    """Everything that defines a DCGAN run; field names are the command-line option names."""

    data: str = ""
    classes: list[str] | None = None      # None: every class
    image_size: int = 64
    channels: int | None = None           # None: 1 if every training image is grayscale, else 3
    latent_dim: int = 100
    width: int = 64                       # feature maps of the generator's last / discriminator's first layer
    epochs: int = 100                     # passes over each class's training images
    batch_size: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    seed: int = 42
    split_seed: int | None = None         # None: --seed (as python -m train)
    val_frac: float = 0.15
    test_frac: float = 0.15
    image_dir: str | None = None
    image_col: str | None = None
    label_col: str | None = None
    sample_every: int | None = None       # None: epochs // 10 (at least 1)
    out: str = ""
    overwrite: bool = False
    quiet: bool = False
    device: str = "auto"

    def validate(self) -> "GanConfig":
        """This configuration, checked: a missing or out-of-range option raises ConfigError naming it."""
        if not self.data:
            raise ConfigError("no data given: pass --data SPEC (as for python -m train)")
        if not self.out:
            raise ConfigError("no output folder given: pass --out weights/gan-RUN")
        try:
            check_image_size(self.image_size)
        except ValueError as e:
            raise ConfigError(f"--image-size: {e}") from None
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"--channels must be 1, 3 or auto, got {self.channels}")
        for name in ("latent_dim", "width", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ConfigError(f"--batch-size must be at least 2 (batch norm), got {self.batch_size}")
        if self.lr <= 0 or not 0.0 <= self.beta1 < 1.0:
            raise ConfigError(f"--lr must be positive and --beta1 in [0, 1), got {self.lr}, {self.beta1}")
        if self.sample_every is not None and self.sample_every < 1:
            raise ConfigError(f"--sample-every must be at least 1, got {self.sample_every}")
        return self

    @property
    def grid_every(self) -> int:
        return self.sample_every or max(1, self.epochs // 10)

    @property
    def effective_split_seed(self) -> int:
        return self.seed if self.split_seed is None else self.split_seed

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "GanConfig":
        """A configuration from option names and values; an unknown name raises ConfigError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown GAN option(s) {unknown}; valid: {sorted(known)}")
        return cls(**values)


@dataclass
class GanResult:
    """A finished GAN run: its folder, its configuration and, per class, what its generator's training recorded."""

    run_dir: Path
    config: GanConfig
    classes: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> generator, epochs, steps, ...


# --- data -----------------------------------------------------------------------------------------

def class_folder(name: str, index: int) -> str:
    """A file-system-safe folder name for a class (index appended when the name had to change)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "class"
    return safe if safe == name else f"{safe}_{index}"


def load_real_images(source: DataSource, samples: Sequence[Sample], image_size: int,
                     channels: int | None) -> tuple[torch.Tensor, int]:
    """Real images as the GAN sees them: (N, C, S, S) uint8 after resize and centre crop, and C.

    ``channels`` None picks 1 when every image is grayscale, else 3.
    """
    from zoo.images import load_image, to_model_mode
    images = []
    for s in samples:
        images.append(load_image(s.ref).image if isinstance(s.ref, Path) else Image.fromarray(source.array[s.ref]))
    if channels is None:
        channels = 1 if all(im.mode == "L" for im in images) else 3
    resize = T.Compose([T.Resize(image_size, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
                        T.CenterCrop(image_size)])
    out = torch.empty((len(images), channels, image_size, image_size), dtype=torch.uint8)
    for i, im in enumerate(images):
        pixels = np.array(resize(to_model_mode(im, channels)), dtype=np.uint8)  # a writable copy
        out[i] = torch.from_numpy(pixels.reshape(image_size, image_size, channels)).permute(2, 0, 1)
    return out, channels


def _training_split(cfg: GanConfig, progress: bool) -> tuple[DataSource, dict[int, list[Sample]]]:
    source = load_source(cfg.data, image_dir=cfg.image_dir, image_col=cfg.image_col, label_col=cfg.label_col)
    source = verify_images(source, progress=progress)
    splits = make_splits(source, cfg.val_frac, cfg.test_frac, cfg.effective_split_seed)
    names = source.label_names
    wanted = cfg.classes or list(names)
    unknown = [c for c in wanted if c not in names]
    if unknown:
        raise ConfigError(f"--classes {unknown} are not classes of {cfg.data}; its classes are {names}")
    by_class = {names.index(c): [s for s in splits.train if s.label == names.index(c)] for c in wanted}
    too_few = [names[i] for i, members in by_class.items() if len(members) < 2]
    if too_few:
        raise DataError(f"class(es) {too_few} have fewer than 2 training images; a GAN cannot learn from "
                        "them (batch norm needs 2 images per batch)")
    return source, by_class


def _split_record(cfg: GanConfig, source: DataSource, by_class: dict[int, list[Sample]]) -> dict[str, Any]:
    return {"data": source.spec, "split_seed": cfg.effective_split_seed, "val_frac": cfg.val_frac,
            "test_frac": cfg.test_frac, "label_names": source.label_names,
            "note": "the real images each generator was trained on: all from the training split",
            "classes": {source.label_names[c]: [s.key for s in members] for c, members in by_class.items()}}


# --- the run folder -------------------------------------------------------------------------------

def _check_out(run_dir: Path, overwrite: bool) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} exists and is a file, not a folder")
    existing = [e for e in _RUN_ENTRIES if (run_dir / e).exists()]
    if existing and not overwrite:
        raise ConfigError(f"{run_dir} already holds a GAN run ({', '.join(existing[:3])}); continue it with "
                          f"--resume {run_dir}, replace it with --overwrite, or choose another --out")


def _clear(run_dir: Path) -> None:
    for entry in _RUN_ENTRIES:
        path = run_dir / entry
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} asked for CUDA, but no CUDA GPU is available; use --device cpu")
    return device


# --- training -------------------------------------------------------------------------------------

def class_seed(seed: int, class_index: int) -> int:
    """The seed of one class's generator: its draws are mix_seed(class_seed, epoch, position), epoch 0 for
    the initialisation (position 0) and the fixed grid noise (position 1), as the classifier's loop does."""
    return mix_seed(seed, 0, class_index)


def _networks(cfg: GanConfig, channels: int, class_index: int) -> tuple[DCGANGenerator, DCGANDiscriminator]:
    with torch.random.fork_rng(devices=[]):  # initialisation depends on (seed, class) only
        torch.manual_seed(mix_seed(class_seed(cfg.seed, class_index), 0, 0))
        generator = DCGANGenerator(cfg.latent_dim, cfg.image_size, channels, cfg.width)
        discriminator = DCGANDiscriminator(cfg.image_size, channels, cfg.width)
        init_dcgan_weights(generator)
        init_dcgan_weights(discriminator)
    return generator, discriminator


def _fixed_noise(cfg: GanConfig, class_index: int) -> torch.Tensor:
    return torch.randn(GRID_SAMPLES, cfg.latent_dim, generator=torch.Generator().manual_seed(
        mix_seed(class_seed(cfg.seed, class_index), 0, 1)))


def train_class(cfg: GanConfig, run_dir: Path, name: str, class_index: int, real: torch.Tensor,
                device: torch.device, stop: StopRequest, progress: bool) -> dict[str, Any]:
    """Train (or continue) one class's DCGAN; writes its grids, checkpoint and generator."""
    folder = class_folder(name, class_index)
    channels = real.shape[1]
    generator, discriminator = _networks(cfg, channels, class_index)
    generator, discriminator = generator.to(device), discriminator.to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    ckpt_path = run_dir / "checkpoints" / f"{folder}.pt"
    state = {"next_epoch": 1, "next_step": 0, "history": [], "partial": _empty_partial()}
    if ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path)
        generator.load_state_dict(ckpt["generator"])
        discriminator.load_state_dict(ckpt["discriminator"])
        opt_g.load_state_dict(ckpt["opt_g"])
        opt_d.load_state_dict(ckpt["opt_d"])
        state = ckpt["state"]
        if state["next_epoch"] > cfg.epochs:
            _logger.info("class %s: already trained for %d epochs", name, state["next_epoch"] - 1)
    n = len(real)
    seed = class_seed(cfg.seed, class_index)
    batch = min(cfg.batch_size, n)
    steps_per_epoch = math.ceil(n / batch)
    fixed = _fixed_noise(cfg, class_index).to(device)
    samples_dir = run_dir / "samples" / folder
    samples_dir.mkdir(parents=True, exist_ok=True)

    def save(finished: bool) -> None:
        save_checkpoint(ckpt_path, {
            "format": 1, "class": name, "generator": _cpu(generator.state_dict()),
            "discriminator": _cpu(discriminator.state_dict()), "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(), "state": state, "finished": finished})

    from tqdm import tqdm
    done = (state["next_epoch"] - 1) * steps_per_epoch + state["next_step"]
    bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=min(done, cfg.epochs * steps_per_epoch),
               desc=f"GAN class {name}", unit="step", disable=not progress, leave=False, dynamic_ncols=True)
    start = time.perf_counter()
    ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        while state["next_epoch"] <= cfg.epochs:
            epoch = state["next_epoch"]
            order = torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(seed, epoch, 0)))
            batches = np.array_split(order.numpy(), steps_per_epoch)  # near-equal sizes: never a batch of 1
            partial = state["partial"]
            generator.train()
            discriminator.train()
            for step in range(state["next_step"], steps_per_epoch):
                x = real[torch.from_numpy(batches[step])].to(device).float().div_(127.5).sub_(1.0)  # uint8 -> [-1, 1]
                z = torch.randn(len(x), cfg.latent_dim, generator=torch.Generator().manual_seed(
                    mix_seed(seed, epoch, step + 1))).to(device)
                stats = _gan_step(generator, discriminator, opt_g, opt_d, x, z)
                if not all(math.isfinite(v) for v in stats.values()):
                    raise NonFiniteError(f"GAN class {name}: a loss became non-finite at epoch {epoch}, step "
                                         f"{step + 1}/{steps_per_epoch} ({stats}); the last checkpoint is "
                                         f"intact. Lower --lr (now {cfg.lr})")
                for k, v in stats.items():
                    partial[k] += v * len(x)
                partial["seen"] += len(x)
                state["next_step"] = step + 1
                bar.update(1)
                bar.set_postfix(d_loss=f"{stats['d_loss']:.3f}", g_loss=f"{stats['g_loss']:.3f}",
                                img_s=f"{(bar.n - done) * batch / max(time.perf_counter() - start, 1e-9):.0f}")
                if stop.reason and state["next_step"] < steps_per_epoch:
                    save(False)
                    raise interrupted(stop.reason, run_dir, ckpt_path, "python -m train.gan", epoch,
                                      state["next_step"], steps_per_epoch, what=f"GAN class {name} ")
            seen = max(partial["seen"], 1)
            state["history"].append({"epoch": epoch, **{k: partial[k] / seen for k in _STATS},
                                     "steps": steps_per_epoch})
            state.update(next_epoch=epoch + 1, next_step=0, partial=_empty_partial())
            last = epoch == cfg.epochs
            if epoch % cfg.grid_every == 0 or last or stop.reason:
                grid = _save_grid(generator, fixed, samples_dir / f"epoch_{epoch:04d}.png")
                save(last)
                h = state["history"][-1]
                elapsed = time.perf_counter() - start
                _logger.info("GAN class %s: epoch %d/%d  D loss %.3f  G loss %.3f  D(x) %.2f  D(G(z)) %.2f  "
                             "%.0fs  samples %s", name, epoch, cfg.epochs, h["d_loss"], h["g_loss"],
                             h["d_real"], h["d_fake"], elapsed, grid)
                if stop.reason and not last:
                    raise interrupted(stop.reason, run_dir, ckpt_path, "python -m train.gan", epoch,
                                      what=f"GAN class {name} ")
    finally:
        bar.close()
    generator_dir = _save_generator(cfg, run_dir, generator, name, class_index, channels, n, state)
    return {"generator": str(generator_dir.relative_to(run_dir)), "folder": folder,
            "num_real_images": n, "epochs": len(state["history"]),
            "steps": sum(h["steps"] for h in state["history"]), "history": state["history"]}


_STATS = ("d_loss", "g_loss", "d_real", "d_fake")


def _empty_partial() -> dict[str, float]:
    return {**{k: 0.0 for k in _STATS}, "seen": 0}


def _cpu(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state_dict.items()}


def _gan_step(generator, discriminator, opt_g, opt_d, x: torch.Tensor, z: torch.Tensor) -> dict[str, float]:
    """One DCGAN step: the discriminator on real and fake, then the generator (non-saturating loss)."""
    ones, zeros = torch.ones(len(x), device=x.device), torch.zeros(len(x), device=x.device)
    fake = generator(z)                                              # (B, Z) -> (B, C, S, S)
    real_logits, fake_logits = discriminator(x), discriminator(fake.detach())
    d_loss = (F.binary_cross_entropy_with_logits(real_logits, ones)
              + F.binary_cross_entropy_with_logits(fake_logits, zeros))
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    g_loss = F.binary_cross_entropy_with_logits(discriminator(fake), ones)  # maximise log D(G(z))
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    return {"d_loss": float(d_loss.detach()), "g_loss": float(g_loss.detach()),
            "d_real": float(real_logits.detach().sigmoid().mean()),
            "d_fake": float(fake_logits.detach().sigmoid().mean())}


@torch.no_grad()
def _save_grid(generator: DCGANGenerator, noise: torch.Tensor, path: Path) -> Path:
    from torchvision.utils import save_image
    was_training = generator.training
    generator.eval()  # what `generate` produces: batch-norm running statistics
    images = generator(noise).cpu()
    generator.train(was_training)
    save_image(images, path, nrow=8, normalize=True, value_range=(-1, 1), padding=1)
    return path


def _save_generator(cfg: GanConfig, run_dir: Path, generator: DCGANGenerator, name: str, class_index: int,
                    channels: int, num_real: int, state: dict[str, Any]) -> Path:
    # The generators are not zoo classifiers, so zoo/_hub.py (which writes classifier checkpoints)
    # does not handle them; this module writes them with the safetensors library directly.
    from safetensors.torch import save_file
    folder = run_dir / "generators" / class_folder(name, class_index)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in _cpu(generator.state_dict()).items()}
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    write_json(folder / CONFIG_NAME, {
        "format": GENERATOR_FORMAT, "architecture": "dcgan_generator",
        "class_name": name, "class_index": class_index,
        "latent_dim": cfg.latent_dim, "image_size": cfg.image_size, "channels": channels,
        "width": cfg.width, "value_range": [-1, 1],
        "epochs": len(state["history"]), "steps": sum(h["steps"] for h in state["history"]),
        "num_real_images": num_real, "data": cfg.data, "seed": cfg.seed,
        "split_seed": cfg.effective_split_seed, "batch_size": cfg.batch_size, "lr": cfg.lr, "beta1": cfg.beta1,
        "trained_by": "python -m train.gan (the DCGAN of Ismail et al.'s paper, one generator per class)",
    })
    return folder


# --- the run --------------------------------------------------------------------------------------

def train_gan(cfg: GanConfig | None = None, *, resume: str | Path | None = None,
              epochs: int | None = None, **options: Any) -> GanResult:
    """Train a DCGAN per class of ``cfg.classes`` on the training split of ``cfg.data``.

    ``resume`` continues the run in that folder with its saved configuration (``epochs`` may
    extend it). Returns where each class's generator was written.
    """
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / GAN_CONFIG_FILE).is_file():
            raise ConfigError(f"--resume {run_dir}: no {GAN_CONFIG_FILE} there, so there is no GAN run to continue")
        saved = yaml.safe_load((run_dir / GAN_CONFIG_FILE).read_text(encoding="utf-8"))
        cfg = GanConfig.from_dict({**saved, **options, "out": str(run_dir)})
        if epochs is not None:
            cfg = replace(cfg, epochs=epochs)
    else:
        cfg = GanConfig.from_dict(options) if cfg is None else replace(cfg, **options)
    cfg = cfg.validate()
    configure_logging(cfg.quiet)
    progress = not cfg.quiet
    run_dir = Path(cfg.out)
    if resume is None:
        _check_out(run_dir, cfg.overwrite)
    device = _device(cfg.device)
    source, by_class = _training_split(cfg, progress)
    record = _split_record(cfg, source, by_class)
    if resume is not None:
        previous = json.loads((run_dir / TRAIN_SPLIT_FILE).read_text(encoding="utf-8"))
        if previous != record:
            raise DataError(f"the training images of {cfg.data} differ from those {run_dir} was trained on "
                            f"({TRAIN_SPLIT_FILE}); resuming would mix two datasets. Start a new run")
    reals = {c: load_real_images(source, members, cfg.image_size, cfg.channels) for c, members in by_class.items()}
    channels = {ch for _, ch in reals.values()}
    if cfg.channels is None:  # one channel count for all classes: RGB if any class has colour
        cfg = replace(cfg, channels=max(channels))
        reals = {c: (t if t.shape[1] == cfg.channels else t.expand(-1, cfg.channels, -1, -1).contiguous(), cfg.channels)
                 for c, (t, _) in reals.items()}
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume is None:
        _clear(run_dir)
    (run_dir / GAN_CONFIG_FILE).write_text(yaml.safe_dump(asdict(replace(cfg, overwrite=False)), sort_keys=False),
                                           encoding="utf-8")
    write_json(run_dir / TRAIN_SPLIT_FILE, record)
    _logger.info("DCGAN per class on the training split of %s: %s; %dx%d px, %d channel(s), %d epochs",
                 source.description, ", ".join(f"{source.label_names[c]} ({len(m)} images)" for c, m in by_class.items()),
                 cfg.image_size, cfg.image_size, cfg.channels, cfg.epochs)
    result = GanResult(run_dir=run_dir, config=cfg)
    stop = StopRequest()
    with stop.installed():
        for c in by_class:
            name = source.label_names[c]
            result.classes[name] = train_class(cfg, run_dir, name, c, reals[c][0], device, stop, progress)
            _write_summary(cfg, run_dir, result, source)
    _logger.info("generators: %s", ", ".join(f"{run_dir / v['generator']}" for v in result.classes.values()))
    return result


def _write_summary(cfg: GanConfig, run_dir: Path, result: GanResult, source: DataSource) -> None:
    from .report import plot_losses, write_gan_card
    write_json(run_dir / METRICS_FILE, {"classes": result.classes, "config": asdict(cfg)})
    plot_losses({n: v["history"] for n, v in result.classes.items()}, run_dir / "losses.png")
    write_gan_card(cfg, run_dir, result, source)
