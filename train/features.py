"""The feature-extraction cache: run the frozen backbone once, train the head on what it produced.

seed 001_0f58f971053e01d7.txt, 2.1: feature extraction freezes the pretrained layers and trains only
the new classifier, so the frozen part's output for an image never changes and can be computed once.
Three cache levels, from the cheapest to store:

- ``pre_logits``: plain models; ``forward_head(forward_features(x), pre_logits=True)``, (N, D).
  The head is the classifier (plus the model's dropout, which sits between the two in training).
- ``pooled``: zoo variants with a metadata head and no attention; the backbone's globally
  average-pooled features, (N, C); the metadata encoder and classifier train on them.
- ``maps``: zoo variants with Soft-Attention, whose attention works on spatial maps: the
  backbone's feature maps (N, C, h, w), only if they fit ``max_bytes``; otherwise no cache.

A disk cache (safetensors) is keyed by architecture, level, frozen weights, preprocessing and the
data of each split, so a second run with the same inputs reuses the features.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn
from safetensors.torch import load_file, save

from zoo.modes import get_mode

from .checkpoint import atomic_write
from .data import DataSource, data_fingerprint

__all__ = ["CachePlan", "FeatureMemo", "plan_cache", "extract_features", "cached_forward", "cache_key",
           "weights_digest", "load_cached", "store_cached", "DEFAULT_MAX_BYTES"]

_logger = logging.getLogger("train")
DEFAULT_MAX_BYTES = 2 * 1024 ** 3


@dataclass
class CachePlan:
    """Whether a run caches its frozen backbone's features, at which level, and why (plan_cache's answer)."""

    level: str | None   # pre_logits | pooled | maps | None (no cache)
    reason: str         # why this level, or why no cache (logged and written to the card)


def _is_variant(model: nn.Module) -> bool:
    return hasattr(model, "zoo_backbone") and hasattr(model, "zoo_head_modules")


def _feature_shape(model: nn.Module, level: str, input_size: tuple[int, int, int]) -> tuple[int, ...]:
    with torch.no_grad():
        was_training = model.training
        model.eval()
        probe = torch.zeros(1, *input_size, device=next(model.parameters()).device)
        out = _extract_batch(model, level, probe)
        model.train(was_training)
    return tuple(out.shape[1:])


def plan_cache(model: nn.Module, mode: str, cache: str, augment: str, num_images: int,
               input_size: tuple[int, int, int], max_bytes: int = DEFAULT_MAX_BYTES) -> CachePlan:
    """Decide whether and at which level features can be cached for this run."""
    if not get_mode(mode).frozen_backbone:
        return CachePlan(None, f"mode {mode!r} trains the backbone, so its features change every step")
    if cache == "off":
        return CachePlan(None, "--cache off: the frozen backbone runs on every batch of every epoch")
    if augment != "none":
        return CachePlan(None, f"--augment {augment} changes every image each epoch, so the frozen "
                               "backbone's features cannot be reused: it runs every epoch (use "
                               "--augment none to cache)")
    if not _is_variant(model):
        return CachePlan("pre_logits", "frozen backbone run once; the classifier trains on cached "
                                       "pre-logit features")
    attention = getattr(model, "attention", None)
    pool = getattr(getattr(model, "global_pool", None), "pool_type", None)
    if attention is None and pool == "avg":
        return CachePlan("pooled", "frozen backbone run once; the metadata head and classifier train "
                                   "on cached pooled features")
    shape = _feature_shape(model, "maps", input_size)
    size = num_images * 4 * int(torch.tensor(shape).prod())
    if size > max_bytes:
        return CachePlan(None, f"the head works on spatial feature maps {shape}, which would need "
                               f"{size / 1024 ** 3:.1f} GiB for {num_images} images (limit "
                               f"{max_bytes / 1024 ** 3:.1f} GiB): the frozen backbone runs every epoch")
    return CachePlan("maps", f"frozen backbone run once; the attention head trains on cached "
                             f"feature maps {shape} ({size / 1024 ** 2:.0f} MiB)")


def _extract_batch(model: nn.Module, level: str, x: torch.Tensor) -> torch.Tensor:
    if level == "pre_logits":
        return model.forward_head(model.forward_features(x), pre_logits=True)  # (B, D)
    maps = model.zoo_backbone.forward_features(x)  # (B, C, h, w)
    if level == "pooled":
        return maps.mean(dim=(2, 3))  # (B, C, h, w) -> (B, C), the variant's avg pool
    return maps


def extract_features(model: nn.Module, level: str, batches: Iterable[tuple[torch.Tensor, Any, Any]],
                     device: torch.device, total: int | None = None, desc: str = "features",
                     progress: bool = True) -> torch.Tensor:
    """Run the frozen part of the model over batches (in order); returns the stacked features on CPU."""
    from tqdm import tqdm
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for x, _, _ in tqdm(batches, total=total, desc=desc, unit="batch", disable=not progress,
                            leave=False):
            out.append(_extract_batch(model, level, x.to(device, non_blocking=True)).float().cpu())
    model.train(was_training)
    return torch.cat(out)


def head_dropout(model: nn.Module) -> float:
    """The dropout rate the full model applies between its pre-logit features and the classifier."""
    rate = getattr(model, "drop_rate", None)
    if isinstance(rate, (int, float)) and rate > 0:
        return float(rate)
    drop = getattr(model, "head_drop", None)
    return float(drop.p) if isinstance(drop, nn.Dropout) else 0.0


def cached_forward(model: nn.Module, level: str) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """logits = f(cached features, metadata) for a cache level; trains the same head parameters."""
    if level == "pre_logits":
        classifier = model.get_classifier()
        drop = nn.Dropout(head_dropout(model))

        def forward(features: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
            drop.train(model.training)
            return classifier(drop(features))  # (B, D) -> (B, num_classes)
        return forward
    if level == "pooled":
        def forward(features: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
            # a 1x1 map: the variant's average pool returns the cached vector unchanged
            return model.forward_head(features[:, :, None, None], metadata)
        return forward
    if level == "maps":
        def forward(features: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
            return model.forward_head(model.attention(features), metadata)
        return forward
    raise ValueError(f"unknown cache level {level!r}")


def weights_digest(model: nn.Module) -> str:
    """sha256 of the frozen (non-trainable) tensors, parameters and buffers, in state-dict order."""
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    h = hashlib.sha256()
    named = dict(model.named_parameters())
    for name, tensor in model.state_dict().items():
        param = named.get(name)
        if param is not None and id(param) in trainable:
            continue
        t = tensor.detach().cpu().reshape(-1).contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_key(arch: str, level: str, weights: str, data_config: dict[str, Any],
              data: dict[str, str]) -> str:
    """The disk cache key: architecture, level, frozen weights, preprocessing, data per split."""
    record = {"arch": arch, "level": level, "weights": weights, "version": 1,
              "preprocessing": {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()},
              "data": data}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


class FeatureMemo:
    """Frozen features per image, kept in memory and shared by runs on one backbone and preprocessing.

    Cross-validation folds and learning-curve points train many heads on subsets of the same images;
    with a memo each image goes through the frozen backbone once, whichever split it lands in. Entries
    are keyed like the disk cache (architecture, level, frozen weights, preprocessing) plus the image's
    own data fingerprint, so a different backbone, size or image never reuses a row.
    """

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def share(self, trainer: Any, source: DataSource, data_config: dict[str, Any]) -> None:
        """Fill a train.engine.Trainer's splits from the memo, extract what is missing, and remember it.

        (Typed Any: the engine imports this module, so naming Trainer here would close an import circle.)
        """
        model_key = cache_key(trainer.cfg.arch, trainer.plan.level, weights_digest(trainer.model), data_config, {})
        keys = {name: [(model_key, data_fingerprint(source, [sample])) for sample in data.dataset.samples]
                for name, data in trainer.splits.items()}

        def fill() -> None:
            for name, data in trainer.splits.items():
                if data.features is None and all(k in self._rows for k in keys[name]):
                    data.features = torch.stack([self._rows[k] for k in keys[name]])

        def remember(name: str) -> None:  # after each split: later splits of the same images need no pass
            self._rows.update(zip(keys[name], trainer.splits[name].features))
            fill()

        fill()
        trainer.prepare_features(on_split=remember)


def _cache_file(cache_dir: str | Path, arch: str, key: str) -> Path:
    return Path(cache_dir) / f"{arch}-{key[:24]}.safetensors"


def load_cached(cache_dir: str | Path, arch: str, key: str) -> dict[str, torch.Tensor] | None:
    """The cached features for this key, or None (a damaged file is ignored and reported)."""
    path = _cache_file(cache_dir, arch, key)
    if not path.is_file():
        return None
    try:
        start = time.perf_counter()
        features = load_file(str(path))
        _logger.info("feature cache: reused %s (%.1fs)", path, time.perf_counter() - start)
        return features
    except Exception as e:  # a truncated or foreign file: recompute rather than fail the run
        _logger.warning("feature cache %s is unreadable (%s); recomputing", path, e)
        return None


def store_cached(cache_dir: str | Path, arch: str, key: str, features: dict[str, torch.Tensor]) -> Path:
    """Write the features for this key to the cache folder as safetensors (atomically) and return the file."""
    path = _cache_file(cache_dir, arch, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        f.write(save({k: v.contiguous() for k, v in features.items()}, metadata={"key": key}))
    _logger.info("feature cache: stored %s", path)
    return path

