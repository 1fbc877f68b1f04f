"""The training loop: fit -> train_one_epoch -> evaluate, with checkpoints, interruption and resume.

Reproducibility: the order of each epoch comes from a generator seeded by (seed, epoch), random
augmentation from a per-item seed, and the global torch RNG (dropout) is saved in every checkpoint,
so a run resumed from any step ends with the same weights as an uninterrupted one.

Under torchrun (train/distributed.py) every rank draws the same epoch order and takes its shard of it,
the model trains wrapped in DistributedDataParallel, and validation predictions are gathered so every
rank takes the same early-stopping and learning-rate decisions; only rank 0 writes checkpoints.

One cohesive thing, kept in one module past 500 lines: the Trainer and the state it saves. Its steps
(feed, forward, step, evaluate, checkpoint, stop) share that state, so splitting them would pass it
around instead; the pure pieces live beside it (train.epoch_order, train.loop, train.checkpoint).
"""
from __future__ import annotations

import logging
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from zoo.run_layout import CHECKPOINT_NAME
from zoo.zoo_config import ZooConfig

from . import distributed
from ._errors import ConfigError, NonFiniteError, TrainingInterrupted
from .checkpoint import rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .data import ImageDataset, class_counts
from .features import CachePlan, cached_forward, extract_features
from .epoch_order import EpochBatchSampler, epoch_batches
from .loop import StopRequest, interrupted
from .losses import build_loss, penalty
from .metrics import HEADLINE_METRICS, classification_metrics

__all__ = ["EpochBatchSampler", "SplitData", "Trainer", "TrainState", "build_optimizer",
           "build_scheduler", "epoch_batches"]

_logger = logging.getLogger("train")


def _ignore_stop_signals(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; loader workers must not die mid-step, because the
    # main process finishes the step, saves, and then shuts them down itself. SIGTERM stays
    # default: PyTorch's own worker shutdown falls back to it, and a worker ignoring it can keep the
    # interpreter from ever exiting.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# --- optimiser and schedule -----------------------------------------------------------------------

def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD; fine-tune modes get the zoo's head/backbone parameter groups."""
    import zoo
    mode = cfg.transfer_mode
    if mode.separate_head_lr:
        head_lr = cfg.lr * mode.head_lr_multiplier if cfg.head_lr is None else cfg.head_lr
        groups = zoo.param_groups(model, cfg.lr, head_lr=head_lr, weight_decay=cfg.weight_decay)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [dict(params=params, lr=cfg.lr, weight_decay=cfg.weight_decay, name="all")]
    if not any(g["params"] for g in groups):
        raise ConfigError(f"{cfg.arch} in mode {cfg.mode!r} has no trainable parameters, so training would "
                          "change nothing; choose another --mode (scratch and fine-tune train every parameter)")
    if cfg.opt == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.opt == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    """ReduceLROnPlateau on the monitored metric (seed 002: factor 0.2, minimum lr), cosine, or none."""
    if cfg.sched == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min" if cfg.monitor == "loss" else "max", factor=cfg.plateau_factor,
            patience=cfg.plateau_patience, min_lr=cfg.min_lr)
    if cfg.sched == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs, eta_min=cfg.min_lr)
    return None


# --- state ----------------------------------------------------------------------------------------

@dataclass
class TrainState:
    """Where the run is; saved in the checkpoint."""

    next_epoch: int = 1
    next_step: int = 0            # batches of next_epoch already done (mid-epoch checkpoint)
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    finished: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    partial: dict[str, float] = field(default_factory=lambda: {"loss_sum": 0.0, "seen": 0,
                                                               "correct": 0, "time_s": 0.0})


@dataclass
class SplitData:
    """One split, ready to feed: its dataset (images) and, once extracted, its cached features."""

    name: str
    dataset: ImageDataset
    labels: torch.Tensor              # (N,) int64
    metadata: torch.Tensor | None     # (N, F) encoded metadata for a metadata head
    features: torch.Tensor | None = None


# --- the trainer ----------------------------------------------------------------------------------

class Trainer:
    """Trains one model on train/val splits; the runner builds it and evaluates the test split."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, splits: dict[str, SplitData],
                 num_classes: int, run_dir: str | Path, device: torch.device, plan: CachePlan,
                 workers: int = 0, progress: bool = True,
                 on_step: Callable[["Trainer", int, int], None] | None = None,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, checkpoints: bool = True,
                 validate: bool = True):
        """``on_epoch(record)`` gets each epoch's history record; ``should_stop()`` is polled before every
        batch (training and feature extraction) and stops the run as SIGINT does; ``checkpoints=False``
        writes no checkpoint.pt (runs too short to resume: train/lesson.py's folds and curve points);
        ``validate=False`` skips the per-epoch validation (no held-out validation split exists): the
        history holds training figures only and the last epoch's weights are kept."""
        self.model, self.cfg, self.splits = model.to(device), cfg, splits
        self.on_epoch, self.should_stop, self.checkpoints = on_epoch, should_stop, checkpoints
        self.validate = validate
        self.num_classes, self.run_dir, self.device = num_classes, Path(run_dir), device
        self.plan, self.workers, self.progress, self.on_step = plan, workers, progress, on_step
        counts = class_counts(splits["train"].dataset.samples, num_classes)
        self.loss_fn = build_loss(cfg.loss, counts, cfg.label_smoothing).to(device)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.uses_metadata = "metadata" in (ZooConfig.from_model(model).head or "")
        self.state = TrainState()
        self.best_model: dict[str, torch.Tensor] | None = None
        self.feature_extraction_s = 0.0
        self.stop_request = StopRequest()
        self._head_forward = cached_forward(self.model, plan.level) if plan.level else None
        self._sampler = EpochBatchSampler(
            splits["train"].labels.tolist(), cfg.batch_size, cfg.seed, cfg.sampler,
            with_item_seeds=cfg.augment != "none" and plan.level is None,
            rank=distributed.rank(), world_size=distributed.world_size())
        self._loaders: dict[str, DataLoader] = {}
        self._ddp = self._wrap_distributed() if distributed.is_distributed() else None

    def _wrap_distributed(self) -> DistributedDataParallel:
        """DistributedDataParallel over what trains: the whole model, or the head on cached features."""
        if self.plan.level is None:
            if self.device.type == "cuda":
                synced = distributed.convert_trainable_batchnorm(self.model)
                if synced:
                    _logger.info("distributed: %d trainable batch norm layer(s) synchronised across ranks "
                                 "(SyncBatchNorm)", synced)
            elif any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.model.modules()):
                # torch's SyncBatchNorm runs on GPUs only
                _logger.warning("distributed on CPU: batch norm statistics are per process (SyncBatchNorm "
                                "needs GPUs)")
            module: nn.Module = self.model
        else:
            module = _CachedHead(self.model, self._head_forward)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # every trainable parameter takes part in each forward, so find_unused_parameters stays off
        return DistributedDataParallel(module, device_ids=device_ids)

    # -- data feeding --

    def _loader(self, split: str) -> DataLoader:
        """The training loader (epoch batches) for "train", a sequential one for "<split>/eval"."""
        if split not in self._loaders:
            name, _, purpose = split.partition("/")
            common = dict(num_workers=self.workers, persistent_workers=self.workers > 0,
                          pin_memory=self.device.type == "cuda",
                          worker_init_fn=_ignore_stop_signals if self.workers > 0 else None,
                          # its own generator: creating iterators never draws from the global RNG
                          generator=torch.Generator().manual_seed(self.cfg.seed))
            dataset = self.splits[name].dataset
            if purpose == "eval" and distributed.is_distributed():
                # each rank predicts its shard; predict() gathers them back into index order
                sampler = DistributedSampler(dataset, shuffle=False, drop_last=False)
                self._loaders[split] = DataLoader(dataset, batch_size=self.cfg.batch_size,
                                                  sampler=sampler, **common)
            elif purpose == "eval":
                self._loaders[split] = DataLoader(dataset, batch_size=self.cfg.batch_size,
                                                  shuffle=False, **common)
            else:
                self._loaders[split] = DataLoader(dataset, batch_sampler=self._sampler, **common)
        return self._loaders[split]

    def _metadata(self, data: SplitData, index: torch.Tensor) -> torch.Tensor | None:
        if not self.uses_metadata or data.metadata is None:
            return None
        return data.metadata[index].to(self.device, non_blocking=True)

    def _feed(self, split: str, train_order: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """(inputs, targets, metadata) batches on the device: images, or cached features."""
        data = self.splits[split]
        if data.features is not None:
            shard = distributed.shard_indices(len(data.labels))
            batches = (self._sampler if train_order else
                       [shard[i:i + self.cfg.batch_size] for i in range(0, len(shard), self.cfg.batch_size)])
            for batch in batches:
                index = torch.as_tensor(batch, dtype=torch.long)
                yield (data.features[index].to(self.device, non_blocking=True),
                       data.labels[index].to(self.device, non_blocking=True), self._metadata(data, index))
            return
        for x, y, index in self._loader(split if train_order else f"{split}/eval"):
            yield (x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True),
                   self._metadata(data, index))

    def _forward(self, x: torch.Tensor, metadata: torch.Tensor | None, cached: bool,
                 train: bool = False) -> torch.Tensor:
        if train and self._ddp is not None:  # through DDP, so the backward pass averages gradients
            return self._ddp(x, metadata) if cached or self.uses_metadata else self._ddp(x)
        if cached:
            return self._head_forward(x, metadata)
        return self.model(x, metadata) if self.uses_metadata else self.model(x)

    def prepare_features(self, on_split: Callable[[str], None] | None = None) -> None:
        """Run the frozen backbone once per split (or reuse the disk cache) when the plan allows.

        ``on_split(name)`` runs as each split's features are ready (the runner stores them on disk).
        SIGINT/SIGTERM stop it after the current batch with TrainingInterrupted; nothing has trained
        yet, so --resume restarts the run (reusing the features stored so far).
        """
        if self.plan.level is None:
            return
        with self.stop_request.installed(then="stopping; the features of finished splits are kept"):
            for name, data in self.splits.items():
                if data.features is None:
                    start = time.perf_counter()
                    loader = self._loader(f"{name}/eval")
                    features = extract_features(
                        self.model, self.plan.level, self._until_stopped(loader, name), self.device,
                        total=len(loader), desc=f"features {name}", progress=self.progress)
                    # each rank ran its shard; every rank trains on all of them
                    data.features = distributed.gather_rows(features.to(self.device), len(data.labels)).cpu()
                    self.feature_extraction_s += time.perf_counter() - start
                    _logger.info("feature cache: ran the frozen backbone over %d %s images (%s)",
                                 len(data.labels), name, _hms(time.perf_counter() - start))
                    if on_split is not None:
                        on_split(name)

    @torch.no_grad()
    def cached_outputs(self, split: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(pooled image features (N, D), logits (N, K)) of a split, in its order, computed from the feature
        cache by the final head (no backbone pass); None when the split has no cached features.

        The features are the cached vectors, or cached feature maps averaged over their positions. Whether
        they equal zoo.trust.features_and_logits' own (they do for the pooled and most pre-logits caches, not
        where timm's pre-logits adds layers after the pool) is the caller's check.
        """
        data = self.splits[split]
        if data.features is None or self._head_forward is None:
            return None
        was_training = self.model.training
        self.model.eval()
        features, logits = [], []
        for start in range(0, len(data.labels), self.cfg.batch_size):
            index = torch.arange(start, min(start + self.cfg.batch_size, len(data.labels)))
            cached = data.features[index].to(self.device)  # (B, D) or (B, C, h, w)
            features.append((cached if cached.ndim == 2 else cached.mean(dim=(2, 3))).double().cpu())
            logits.append(self._head_forward(cached, self._metadata(data, index)).double().cpu())
        self.model.train(was_training)
        return torch.cat(features), torch.cat(logits)

    def _until_stopped(self, batches: Iterable[Any], split: str) -> Iterator[Any]:
        """The batches, until a stop request (checked, on every rank alike, before each batch)."""
        for done, batch in enumerate(batches):
            if self._stop_agreed():
                raise TrainingInterrupted(
                    f"{self.stop_request.reason} received during feature extraction ({split} split, {done} batches done): "
                    f"no training step had run and no checkpoint was written; continue with: "
                    f"python -m train --resume {self.run_dir}", str(self.run_dir))
            yield batch

    # -- one epoch --

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        """Train over the epoch's batches (from the saved step when resuming); return its stats."""
        cfg, state = self.cfg, self.state
        num_batches = self._sampler.set_epoch(epoch, state.next_step)
        cached = self.splits["train"].features is not None
        self.model.train()
        partial = state.partial
        from tqdm import tqdm
        bar = tqdm(total=num_batches, initial=state.next_step, desc=f"epoch {epoch}/{cfg.epochs}",
                   unit="batch", disable=not self.progress, leave=False, dynamic_ncols=True)
        step, tick = state.next_step, time.perf_counter()
        try:
            for x, y, metadata in self._feed("train", train_order=True):
                step += 1
                logits = self._forward(x, metadata, cached, train=True)
                loss = self.loss_fn(logits, y)
                extra = penalty(self.trainable, cfg.l1, cfg.l2)
                total = loss if extra is None else loss + extra
                n, correct = len(y), (logits.detach().argmax(1) == y).sum()
                if self._ddp is None:
                    value, loss_sum, stop = float(total.detach()), float(loss.detach()) * n, False
                else:  # all ranks see the same loss, and stop together at the same step
                    value, loss_sum, n, correct, stop = self._sync_step(loss, total, n, correct)
                if not math.isfinite(value):
                    raise NonFiniteError(
                        f"the loss became {value} at epoch {epoch}, step {step}/{num_batches}; nothing "
                        f"was saved for this epoch and the last checkpoint is intact. Lower --lr "
                        f"(now {cfg.lr}), set --clip-grad, or check the data for broken images")
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                if cfg.clip_grad:
                    torch.nn.utils.clip_grad_norm_(self.trainable, cfg.clip_grad)
                self.optimizer.step()
                partial["loss_sum"] += loss_sum
                partial["seen"] += n
                partial["correct"] += int(correct)
                now = time.perf_counter()
                partial["time_s"] += now - tick
                tick = now
                bar.update(1)
                bar.set_postfix(loss=f"{partial['loss_sum'] / partial['seen']:.4f}",
                                img_s=f"{partial['seen'] / max(partial['time_s'], 1e-9):.0f}")
                if self.on_step is not None:
                    self.on_step(self, epoch, step)
                self._poll_should_stop()
                if (stop if self._ddp is not None else self.stop_request.reason) and step < num_batches:
                    state.next_epoch, state.next_step = epoch, step
                    self.save_checkpoint()
                    raise self._interrupted(epoch, step, num_batches)
        finally:
            bar.close()
        seen = max(partial["seen"], 1)
        stats = {"train_loss": partial["loss_sum"] / seen, "train_accuracy": partial["correct"] / seen,
                 "train_time_s": partial["time_s"], "images_per_s": partial["seen"] / max(partial["time_s"], 1e-9)}
        state.partial = TrainState().partial
        return stats

    def _sync_step(self, loss: torch.Tensor, total: torch.Tensor, n: int,
                   correct: torch.Tensor) -> tuple[float, float, int, int, bool]:
        """One all-reduce per step: (mean total loss, loss sum, images, correct, stop) over all ranks."""
        size = distributed.world_size()
        stats = distributed.all_sum(torch.stack([
            total.detach().float() / size, loss.detach().float() * n, correct.float(),
            torch.tensor(float(n), device=self.device),
            torch.tensor(1.0 if self.stop_request.reason else 0.0, device=self.device)]))
        value, loss_sum, correct_all, n_all, stop = stats.tolist()
        if stop and not self.stop_request.reason:
            self.stop_request.request("a stop request from another rank")
        return value, loss_sum, int(n_all), int(correct_all), bool(stop)

    def _poll_should_stop(self) -> None:
        if self.should_stop is not None and not self.stop_request.reason and self.should_stop():
            self.stop_request.request("a cancel request")

    def _stop_agreed(self) -> bool:
        """Whether any rank was asked to stop (all ranks agree)."""
        self._poll_should_stop()
        if self._ddp is None:
            return bool(self.stop_request.reason)
        flag = torch.tensor([1.0 if self.stop_request.reason else 0.0], device=self.device)
        if distributed.all_sum(flag).item() and not self.stop_request.reason:
            self.stop_request.request("a stop request from another rank")
        return bool(self.stop_request.reason)

    @torch.no_grad()
    def predict(self, split: str) -> tuple[np.ndarray, np.ndarray, float]:
        """(probabilities (N, C), labels (N,), mean loss) on a split, in eval mode.

        With several processes each rank predicts its shard and the logits of all ranks are gathered,
        so every rank returns the predictions for exactly the split, in its order.
        """
        data = self.splits[split]
        cached = data.features is not None
        self.model.eval()
        logits_parts, label_parts = [], []
        for x, y, metadata in self._feed(split, train_order=False):
            logits_parts.append(self._forward(x, metadata, cached).float())
            label_parts.append(y)
        n = len(data.labels)
        logits = distributed.gather_rows(torch.cat(logits_parts), n)  # (N, C)
        labels = distributed.gather_rows(torch.cat(label_parts), n)  # (N,)
        probs, loss_sum = [], 0.0
        for start in range(0, n, self.cfg.batch_size):  # the loss batch by batch, as evaluated
            chunk, y = logits[start:start + self.cfg.batch_size], labels[start:start + self.cfg.batch_size]
            loss_sum += float(self.loss_fn(chunk, y)) * len(y)
            probs.append(chunk.softmax(dim=1).cpu())
        probs_np = torch.cat(probs).double().numpy()
        return probs_np, labels.cpu().numpy(), loss_sum / max(n, 1)

    def evaluate(self, split: str, label_names: Sequence[str]) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        """(metrics with the mean loss, probabilities, labels) of the model on one split."""
        probs, labels, loss = self.predict(split)
        metrics = classification_metrics(labels, probs, label_names)
        metrics["loss"] = loss
        return metrics, probs, labels

    # -- the loop --

    def fit(self, label_names: Sequence[str], checkpoint: dict[str, Any] | None = None) -> TrainState:
        """Train until --epochs or early stopping; keeps the best validation weights in memory."""
        cfg = self.cfg
        self.prepare_features()
        if checkpoint is not None:
            self.restore(checkpoint)
            _logger.info("resuming at epoch %d, step %d", self.state.next_epoch, self.state.next_step)
        state = self.state
        fit_start = time.perf_counter() - sum(h.get("time_s", 0.0) for h in state.history)
        with self.stop_request.installed():
            while not state.finished and state.next_epoch <= cfg.epochs:
                epoch = state.next_epoch
                start = time.perf_counter() - state.partial["time_s"]
                stats = self.train_one_epoch(epoch)
                val = self.evaluate("val", label_names)[0] if self.validate else None
                record = {"epoch": epoch, **stats,
                          **({"val_loss": val["loss"], **{f"val_{k}": val[k] for k in HEADLINE_METRICS}}
                             if val is not None else {}),
                          "lr": self.optimizer.param_groups[0]["lr"],
                          **({"head_lr": self.optimizer.param_groups[-1]["lr"]}
                             if len(self.optimizer.param_groups) > 1 else {}),
                          "time_s": time.perf_counter() - start}
                improved = self._track_best(epoch, val) if val is not None else False
                if val is not None or not isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    self._step_scheduler(val)
                state.history.append(record)
                if self.on_epoch is not None:
                    self.on_epoch(dict(record))
                state.next_epoch, state.next_step = epoch + 1, 0
                if cfg.patience is not None and state.bad_epochs >= cfg.patience:
                    state.stopped_early, state.finished = True, True
                if state.next_epoch > cfg.epochs:
                    state.finished = True
                self.save_checkpoint()
                self._log_epoch(record, improved, time.perf_counter() - fit_start)
                if self._stop_agreed() and not state.finished:
                    raise self._interrupted(epoch)
                if state.stopped_early:
                    _logger.info("early stopping: validation %s did not improve for %d epochs "
                                 "(best %.4f at epoch %d)", cfg.monitor, cfg.patience,
                                 state.best_value, state.best_epoch)
        if self.best_model is not None:
            self.model.load_state_dict(self.best_model)
        return state

    def _monitor_value(self, val: dict[str, Any]) -> float:
        value = val.get(self.cfg.monitor)
        worst = math.inf if self.cfg.monitor == "loss" else -math.inf
        return worst if value is None or not math.isfinite(value) else float(value)

    def _track_best(self, epoch: int, val: dict[str, Any]) -> bool:
        value, state = self._monitor_value(val), self.state
        better = (state.best_value is None or
                  (value < state.best_value if self.cfg.monitor == "loss" else value > state.best_value))
        if better and math.isfinite(value):
            state.best_value, state.best_epoch, state.bad_epochs = value, epoch, 0
            self.best_model = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            return True
        state.bad_epochs += 1
        if state.best_value is None:  # first epochs without a defined value: keep the latest weights
            self.best_model = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            state.best_epoch = epoch
        return False

    def _step_scheduler(self, val: dict[str, Any]) -> None:
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            value = self._monitor_value(val)
            if math.isfinite(value):
                self.scheduler.step(value)
        elif self.scheduler is not None:
            self.scheduler.step()

    def _log_epoch(self, record: dict[str, Any], improved: bool, elapsed: float) -> None:
        cfg = self.cfg
        done = record["epoch"]
        per_epoch = elapsed / max(len(self.state.history), 1)
        remaining = 0 if self.state.finished else (cfg.epochs - done) * per_epoch
        if "val_loss" not in record:  # trained without validation (validate=False)
            _logger.info("epoch %d/%d  train loss %.4f acc %.3f  lr %.2e  %.1fs  elapsed %s  eta %s", done,
                         cfg.epochs, record["train_loss"], record["train_accuracy"], record["lr"], record["time_s"],
                         _hms(elapsed), _hms(remaining))
            return
        monitor = record.get(f"val_{cfg.monitor}") if cfg.monitor != "loss" else record["val_loss"]
        _logger.info(
            "epoch %d/%d  train loss %.4f acc %.3f  val loss %.4f acc %.3f bal.acc %.3f f1 %.3f  "
            "lr %.2e  %.1fs (%.0f img/s)  elapsed %s  eta %s%s",
            done, cfg.epochs, record["train_loss"], record["train_accuracy"], record["val_loss"],
            record["val_accuracy"], record["val_balanced_accuracy"], record["val_f1_macro"] or 0.0,
            record["lr"], record["time_s"], record["images_per_s"], _hms(elapsed), _hms(remaining),
            f"  * best {cfg.monitor} {monitor:.4f}" if improved and monitor is not None else "")

    # -- checkpoints --

    def save_checkpoint(self) -> Path:
        """Atomically write model, optimiser, scheduler, RNG and loop state to checkpoint.pt.

        With several processes rank 0 writes it (the weights, loop state and RNG states are the same on
        every rank) while the others check that their weights are finite, then all meet at a barrier.
        """
        path = self.run_dir / CHECKPOINT_NAME
        if not self.checkpoints:
            return path
        if not distributed.is_main_process():
            if not all(bool(torch.isfinite(t).all()) for t in self.model.state_dict().values()
                       if t.is_floating_point()):
                raise NonFiniteError(f"weights became non-finite by the end of epoch {self.state.next_epoch - 1}; "
                                     "the previous checkpoint is kept. Lower --lr or set --clip-grad")
            distributed.barrier()
            return path
        payload = {
            "format": 1,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": rng_state(),
            "state": asdict(self.state),
            "best_model": self.best_model,
        }
        try:
            save_checkpoint(path, payload)
        except FloatingPointError as e:
            raise NonFiniteError(f"weights became non-finite by the end of epoch "
                                 f"{self.state.next_epoch - 1} ({e}); the previous checkpoint is kept. "
                                 "Lower --lr or set --clip-grad") from None
        distributed.barrier()
        return path

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a checkpoint: the model, optimiser, scheduler, training state, best model and random
        generators as they were when it was written."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None and checkpoint.get("scheduler") is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.state = TrainState(**checkpoint["state"])
        self.best_model = checkpoint.get("best_model")
        set_rng_state(checkpoint["rng"])

    def close(self) -> None:
        """Let go of the data loaders, which stops their worker processes.

        Under torchrun this must happen before the process group goes: workers forked from a rank
        otherwise keep it from exiting.
        """
        self._loaders.clear()

    def request_stop(self, reason: str = "stop request") -> None:
        """Stop after the current step, as SIGINT does (for callers that embed the trainer)."""
        self.stop_request.request(reason)

    def _interrupted(self, epoch: int, step: int | None = None,
                     num_steps: int | None = None) -> TrainingInterrupted:
        return interrupted(self.stop_request.reason, self.run_dir, self.run_dir / CHECKPOINT_NAME,
                           "python -m train", epoch, step, num_steps)


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _CachedHead(nn.Module):
    """The trainable head on cached features as one module, so DistributedDataParallel can wrap it."""

    def __init__(self, model: nn.Module, forward: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]):
        super().__init__()
        self.model = model  # registers the head's parameters (the frozen ones take no part in DDP)
        self._head_forward = forward

    def forward(self, features: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        return self._head_forward(features, metadata)
