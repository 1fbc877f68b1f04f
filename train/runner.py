"""From a configuration to a complete run folder: data, model, training, evaluation, files.

``run_training`` is what ``python -m train`` calls; other tools (studies, the demo zoo builder)
call it from Python with a TrainConfig or keyword options.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import zoo
from zoo.fileio import atomic_target, atomic_write, is_disk_full
from zoo.run_layout import (CHECKPOINT_NAME, METRICS_NAME, ONNX_NAME, PLOT_FILES, RUN_CONFIG_NAME, RUN_FILES,
                            SKIPPED_NAME, SPLIT_NAME, run_is_complete)

from . import distributed
from ._errors import ConfigError, DataError, DiskFullError, TrainingInterrupted
from .augment import eval_transform, train_transform
from .card import CardData, CardOutcome, card_sections, run_facts
from .checkpoint import load_checkpoint, write_json
from .config import TrainConfig, config_to_yaml, load_yaml_config
from .data import (DataSource, ImageDataset, Sample, Splits, class_counts, data_fingerprint, load_source,
                   make_splits, split_record, verify_images)
from .engine import SplitData, Trainer
from .features import FeatureMemo, cache_key, load_cached, plan_cache, store_cached, weights_digest
from .logs import configure_logging
from .metrics import classification_metrics, flat_metrics
from .onnx_step import export_run_onnx
from .plots import plot_confusion_matrix, plot_curves, plot_roc
from .trust import TRUST_SECTION, TrustFit, fit_run_trust

__all__ = ["RunResult", "RunHooks", "HeldOutPredictions", "run_training", "RESUME_OPTIONS"]

_logger = logging.getLogger("train")

# options that may differ when resuming (they do not change the result)
RESUME_OPTIONS = ("quiet", "workers", "device", "push_to_hub", "private", "hub_revision",
                  "commit_message", "onnx")


@dataclass
class RunResult:
    """What a finished run produced."""

    run_dir: Path
    config: TrainConfig
    test: dict[str, Any]           # full test metrics (per class, confusion matrix, ...)
    metrics: dict[str, float]      # the flat headline test metrics (as in the model card)
    history: list[dict[str, Any]]
    best_epoch: int | None
    params: tuple[int, int]        # (total, trainable)
    timing: dict[str, Any]         # train_s, feature_extraction_s, device
    test_probs: np.ndarray | None = None   # (N, C) softmax of the test split, in its order
    test_labels: np.ndarray | None = None  # (N,)


@dataclass
class HeldOutPredictions:
    """Predictions for every image from models that did not train on it (cross-validation folds).

    Given to a run trained on all images, they replace its test split: metrics.json, the model card
    and the plots report them, and the trust fit (temperature, prediction sets, OOD), which needs
    held-out validation and test splits, is left out with ``trust_note`` saying why.
    """

    probs: np.ndarray      # (N, C)
    labels: np.ndarray     # (N,)
    protocol: str          # e.g. "5-fold stratified cross-validation (16 images)"
    card_text: str         # the model card's account of the evaluation
    trust_note: str
    extra_metrics: dict[str, Any] = field(default_factory=dict)  # added to metrics.json (intervals, ...)


@dataclass
class RunHooks:
    """What a caller that embeds training adds to a run (train/lesson.py); ``python -m train`` uses none.

    - ``source``: the already loaded and verified data (skips reading ``--data`` again).
    - ``split_indices``: {"train", "val", "test"} -> indices into ``source.samples`` instead of a random split.
    - ``features``: frozen features per image shared between runs (folds, learning-curve points).
    - ``write_run=False``: train and evaluate only; no run folder. ``checkpoints=False``: no checkpoint.pt.
    - ``on_epoch(record)``, ``should_stop()``: live curves and Cancel (see train.engine.Trainer).
    - ``held_out``: the evaluation of a run trained on all images (see HeldOutPredictions).
    - ``validate=False``: no per-epoch validation (the given val split is no held-out set); the last
      epoch's weights are kept.
    """

    source: DataSource | None = None
    split_indices: dict[str, list[int]] | None = None
    features: FeatureMemo | None = None
    write_run: bool = True
    checkpoints: bool = True
    on_epoch: Callable[[dict[str, Any]], None] | None = None
    should_stop: Callable[[], bool] | None = None
    held_out: HeldOutPredictions | None = None
    validate: bool = True


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: a few ops (e.g. some CUDA pooling backwards) have no deterministic kernel
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def _run_dir(cfg: TrainConfig, source_name: str | None = None) -> Path:
    if cfg.out:
        return Path(cfg.out)
    name = cfg.name or f"{cfg.arch}-{cfg.mode}-{source_name or Path(cfg.data).stem}"
    return Path("weights") / name


def _check_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse to touch an existing run folder without --overwrite (checked before any work)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} exists and is a file, not a folder")
    existing = [f for f in RUN_FILES if (run_dir / f).exists()]
    if not existing:
        return
    if not overwrite:
        # with or without a checkpoint: --resume restarts a run stopped before its first one
        started = (run_dir / CHECKPOINT_NAME).exists() or (run_dir / RUN_CONFIG_NAME).exists()
        hint = (f"; it holds an unfinished run: continue it with --resume {run_dir}"
                if started and not run_is_complete(run_dir) else "")
        raise ConfigError(f"run folder {run_dir} already holds a run ({', '.join(existing[:4])}"
                          f"{', ...' if len(existing) > 4 else ''}){hint}; pass --overwrite to replace "
                          "it or choose another --out/--name")


def _clear_run_files(run_dir: Path) -> None:
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_file():
            path.unlink()


def _metadata_schema(source: DataSource, splits: Splits) -> zoo.MetadataSchema:
    """A schema whose categories and age normalisation come from the training split."""
    if not source.metadata_fields:
        raise DataError(f"a metadata head needs metadata (age, sex, site) per image, but {source.spec} "
                        "has none; use a CSV with such columns (HAM10000_metadata.csv has age, sex, "
                        "localization) or drop --head metadata")
    fields = list(source.metadata_fields)
    age = next((f for f in fields if f.lower().startswith("age")), None)
    sex = next((f for f in fields if f.lower() in ("sex", "gender")), None)
    site = next((f for f in fields if f not in (age, sex)), None)
    if len([f for f in (age, sex, site) if f]) < len(fields):
        _logger.warning("metadata columns %s: only age, sex and one site column feed the metadata "
                        "head; using %s", fields, [f for f in (age, sex, site) if f])
    records = [s.metadata or {} for s in splits.train]

    def categories(field_name: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
        if field_name is None:
            return default
        values = sorted({str(r[field_name]) for r in records if r.get(field_name) is not None})
        return tuple(values) or default

    default = zoo.MetadataSchema()
    schema = zoo.MetadataSchema(sex=categories(sex, default.sex), site=categories(site, default.site),
                                age_field=age or "age", sex_field=sex or "sex",
                                site_field=site or "localization")
    return schema.fit(records)


def _apply_img_size(model: torch.nn.Module, size: int) -> None:
    """Train at a square input size other than the model's default; config.json records it."""
    cfg = dict(model.pretrained_cfg)
    if cfg.get("fixed_input_size"):
        raise ConfigError(f"--img-size {size}: {cfg.get('architecture')} only takes its fixed input "
                          f"size {cfg['input_size'][1:]}")
    minimum = cfg.get("min_input_size") or cfg["input_size"]
    if size < minimum[1] or size < minimum[2]:
        raise ConfigError(f"--img-size {size} is below this model's minimum input size "
                          f"{minimum[1]}x{minimum[2]}")
    cfg["input_size"] = (cfg["input_size"][0], size, size)
    cfg.pop("test_input_size", None)
    cfg.pop("test_crop_pct", None)
    model.pretrained_cfg = cfg


def _prepare(cfg: TrainConfig, progress: bool, hooks: RunHooks) -> tuple[DataSource, Splits]:
    source = hooks.source
    if source is None:
        source = load_source(cfg.data, image_dir=cfg.image_dir, image_col=cfg.image_col,
                             label_col=cfg.label_col, metadata_cols=cfg.metadata_cols)
        source = verify_images(source, strict=cfg.strict, progress=progress)
    if hooks.split_indices is not None:
        splits = _given_splits(source, hooks.split_indices)
    else:
        splits = make_splits(source, cfg.val_frac, cfg.test_frac, cfg.effective_split_seed)
    if cfg.synthetic:  # synthetic images join the training split only (train/synthetic.py)
        from .synthetic import add_synthetic
        splits = add_synthetic(source, splits, cfg.synthetic, cfg.target_balance,
                               needs_metadata=bool(cfg.head and "metadata" in cfg.head))
    return source, splits


def _given_splits(source: DataSource, indices: dict[str, list[int]]) -> Splits:
    """Splits from explicit sample indices (cross-validation folds); every split must hold images."""
    parts: dict[str, list[Sample]] = {}
    for name in ("train", "val", "test"):
        chosen = list(indices.get(name, ()))
        if not chosen or any(not 0 <= i < len(source.samples) for i in chosen):
            raise DataError(f"split_indices[{name!r}] of {source.spec} must be a non-empty list of indices "
                            f"below {len(source.samples)}; got {chosen[:10]}")
        parts[name] = [source.samples[i] for i in chosen]
    return Splits(parts["train"], parts["val"], parts["test"], predefined=True)


def run_training(cfg: TrainConfig | None = None, *, resume: str | Path | None = None,
                 on_step: Callable[[Trainer, int, int], None] | None = None,
                 resume_overrides: dict[str, Any] | None = None, hooks: RunHooks | None = None,
                 **options: Any) -> RunResult:
    """Train, evaluate and write a run folder; returns its metrics.

    Pass a TrainConfig, or options as keywords (``run_training(arch="lenet5", data="digits")``).
    ``resume`` continues the run in that folder with its saved configuration. ``on_step(trainer,
    epoch, step)`` is called after every training step (progress hooks, tests). Under torchrun
    (WORLD_SIZE > 1) every process calls this; rank 0 alone writes the run folder and logs progress.
    ``hooks`` (RunHooks) serve callers that embed training: given splits, shared features, live curves, Cancel.
    """
    hooks = hooks or RunHooks()
    if resume is not None and (hooks.source or hooks.split_indices or hooks.held_out or not hooks.write_run):
        raise ConfigError("resume continues a run of python -m train; it takes no source, split_indices, "
                          "held_out or write_run=False hooks")
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / RUN_CONFIG_NAME).is_file():
            raise ConfigError(f"--resume {run_dir}: no {RUN_CONFIG_NAME} there, so there is no interrupted "
                              "run to continue (a run writes it when it starts); start a new run instead")
        cfg = TrainConfig.from_dict(load_yaml_config(run_dir / RUN_CONFIG_NAME))
        cfg = replace(cfg, out=str(run_dir), **(resume_overrides or {}))
    elif cfg is None:
        cfg = TrainConfig.from_dict(options)
    elif options:
        cfg = replace(cfg, **options)
    cfg = replace(cfg).validate()
    main_process = distributed.is_main_process()
    configure_logging(cfg.quiet)
    if not main_process:  # one process speaks for all; the others only report errors
        _logger.setLevel(logging.ERROR)
    progress = not cfg.quiet and main_process

    if resume is None and (cfg.out or cfg.name) and hooks.write_run:
        _check_run_dir(_run_dir(cfg), cfg.overwrite)  # fail before the slow work
    _seed_everything(cfg.seed, cfg.deterministic)
    device, joined = distributed.setup(cfg.device)
    try:
        return _run(cfg, resume, on_step, device, progress, hooks)
    finally:
        distributed.teardown(joined)


def _run(cfg: TrainConfig, resume: str | Path | None, on_step, device: torch.device, progress: bool,
         hooks: RunHooks) -> RunResult:
    source, splits = _prepare(cfg, progress, hooks)
    run_dir = _run_dir(cfg, source.name)
    try:
        return _train_in(run_dir, cfg, source, splits, resume, on_step, device, progress, hooks)
    except OSError as e:
        if not is_disk_full(e):
            raise
        raise DiskFullError(_disk_full_message(e, run_dir)) from None


def _disk_full_message(error: OSError, run_dir: Path) -> str:
    """What a full disk did to the run in `run_dir` and how to finish it once there is room."""
    what = (error.strerror or str(error)) + (f" writing {atomic_target(error.filename)}" if error.filename else "")
    if (run_dir / RUN_CONFIG_NAME).is_file():
        todo = (f"free some space, then finish the run with python -m train --resume {run_dir} (it continues from "
                f"its last checkpoint and writes what is missing; no --overwrite needed)")
    else:
        todo = "free some space, then run the same command again"
    return (f"the disk is full ({what}); every file written so far is whole (a file that did not fit was not "
            f"written), so nothing is lost: {todo}")


def _train_in(run_dir: Path, cfg: TrainConfig, source: DataSource, splits: Splits, resume: str | Path | None,
              on_step, device: torch.device, progress: bool, hooks: RunHooks) -> RunResult:
    """Train in (or resume) the run folder `run_dir` and write it; see run_training."""
    main_process = distributed.is_main_process() and hooks.write_run  # who writes files (no one without a folder)
    checkpoint = None
    if resume is None and hooks.write_run:
        _check_run_dir(run_dir, cfg.overwrite)
    else:
        if run_is_complete(run_dir):
            missing_onnx = (f"; its {ONNX_NAME} is missing: export it with python -m zoo export {run_dir}"
                            if cfg.onnx and not (run_dir / ONNX_NAME).is_file() else "")
            raise ConfigError(f"{run_dir} is a finished run (its weights, config, card and metrics exist); nothing "
                              f"to resume{missing_onnx}")
        if (run_dir / CHECKPOINT_NAME).is_file():
            checkpoint = load_checkpoint(run_dir / CHECKPOINT_NAME, required=("model", "optimizer", "rng", "state"))
            if checkpoint["state"].get("finished"):  # stopped in its final writes (a full disk, a kill)
                _logger.info("%s finished training; writing what its run folder lacks from its checkpoint", run_dir)
        else:  # stopped (killed, out of memory, SIGTERM while extracting features) before its first checkpoint
            _logger.info("%s has no %s: the run stopped before its first checkpoint, so it restarts from "
                         "its %s", run_dir, CHECKPOINT_NAME, RUN_CONFIG_NAME)
        saved = _saved_split(run_dir)
        current = split_record(source, splits, cfg.effective_split_seed, cfg.val_frac, cfg.test_frac)
        if saved is not None and saved != current:
            raise DataError(f"the data of {cfg.data} changed since {run_dir} started (its split differs "
                            "from split.json); resuming would mix two datasets. Start a new run")

    with distributed.main_process_first():  # the first use may store offline weights in the zoo's cache
        model, data_config, schema = _create_model(cfg, source, splits)
    in_chans = data_config["input_size"][0]
    # publishing happens after the run (train/cli.py) and is no part of what --config repeats
    cfg = replace(cfg, pretrained=cfg.use_pretrained, out=str(run_dir), name=run_dir.name,
                  push_to_hub=None, private=False, hub_revision=None, commit_message=None)

    # every check passed (on every rank: none writes before all have looked): the run folder may change
    distributed.barrier()
    if main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume is None:
            _clear_run_files(run_dir)
            with atomic_write(run_dir / RUN_CONFIG_NAME, "w") as f:
                f.write(config_to_yaml(cfg))
        if checkpoint is None:  # a new run, or a restarted one (which may have been killed before this)
            write_json(run_dir / SPLIT_NAME,
                       split_record(source, splits, cfg.effective_split_seed, cfg.val_frac, cfg.test_frac))
        write_json(run_dir / SKIPPED_NAME,
                   [{"file": s.key, "reason": s.reason} for s in source.skipped])
    _logger.info("resolved configuration (%s):\n%s", run_dir / RUN_CONFIG_NAME, config_to_yaml(cfg).rstrip())
    if source.skipped:
        _logger.warning("%d file(s) skipped (listed in %s)", len(source.skipped), run_dir / SKIPPED_NAME)

    total, trainable = zoo.count_params(model)
    _logger.info("data: %s; %d train / %d val / %d test images, %d classes", source.description,
                 len(splits.train), len(splits.val), len(splits.test), source.num_classes)
    if distributed.world_size() > 1:
        _logger.info("distributed: %d processes (%s), batch size %d per process, %d in all",
                     distributed.world_size(), "NCCL" if device.type == "cuda" else "gloo",
                     cfg.batch_size, cfg.batch_size * distributed.world_size())
    _logger.info("model: %s, mode %s, %s parameters, %s trainable (%.2f%%); input %s",
                 cfg.arch, cfg.mode, f"{total:,}", f"{trainable:,}", 100.0 * trainable / max(total, 1),
                 data_config["input_size"])

    split_data = _split_data(cfg, source, splits, data_config, in_chans, schema)
    plan = plan_cache(model, cfg.mode, cfg.cache, cfg.augment, sum(len(p) for _, p in splits.items()),
                      tuple(data_config["input_size"]))
    _logger.info("feature cache: %s", plan.reason)
    workers = cfg.workers if cfg.workers is not None else (
        0 if source.in_memory else min(4, max(1, (os.cpu_count() or 1) - 1)))
    trainer = Trainer(model, cfg, split_data, source.num_classes, run_dir, device, plan,
                      workers=workers, progress=progress, on_step=on_step, on_epoch=hooks.on_epoch,
                      should_stop=hooks.should_stop, checkpoints=hooks.checkpoints and hooks.write_run,
                      validate=hooks.validate)
    if plan.level is not None and cfg.cache == "disk":
        _use_disk_cache(cfg, trainer, source, splits, data_config)
    if plan.level is not None and hooks.features is not None:
        hooks.features.share(trainer, source, data_config)
    else:
        trainer.prepare_features()

    start = time.perf_counter()
    try:
        state = trainer.fit(source.label_names, checkpoint=checkpoint)
        train_s = time.perf_counter() - start + _trained_before_s(checkpoint)
        test, probs, labels = trainer.evaluate("test", source.label_names)  # every rank: the whole test split
    finally:
        trainer.close()
    test_probs, test_labels = probs, labels
    if hooks.held_out is not None:  # the caller's held-out predictions are this run's evaluation
        probs, labels = hooks.held_out.probs, hooks.held_out.labels
        test = classification_metrics(labels, probs, source.label_names)
    flat = flat_metrics(test)
    timing = {"train_s": train_s, "feature_extraction_s": trainer.feature_extraction_s,
              "device": str(device), "processes": distributed.world_size()}
    if main_process:
        _write_outputs(cfg, run_dir, trainer, source, splits, data_config, in_chans, test, probs, labels,
                       flat, plan, timing, hooks.held_out)
        if cfg.onnx:
            export_run_onnx(run_dir, trainer.model, split_data["test"])
    distributed.barrier()
    _logger.info("test: %s", "  ".join(f"{k} {v:.4f}" for k, v in flat.items()))
    if hooks.write_run:
        _logger.info("run folder: %s", run_dir)
    return RunResult(run_dir=run_dir, config=cfg, test=test, metrics=flat, history=state.history,
                     best_epoch=state.best_epoch, params=zoo.count_params(trainer.model), timing=timing,
                     test_probs=test_probs, test_labels=test_labels)


def _trained_before_s(checkpoint: dict[str, Any] | None) -> float:
    """Seconds of training a resumed run did before its checkpoint (its epochs and the started one)."""
    if checkpoint is None:
        return 0.0
    state = checkpoint["state"]
    return (sum(float(h.get("time_s", 0.0)) for h in state.get("history", ()))
            + float(state.get("partial", {}).get("time_s", 0.0)))


def _saved_split(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / SPLIT_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _create_model(cfg: TrainConfig, source: DataSource, splits: Splits):
    schema = _metadata_schema(source, splits) if cfg.head and "metadata" in cfg.head else None
    kwargs = {} if cfg.drop_rate is None else {"drop_rate": cfg.drop_rate}
    if cfg.use_pretrained and zoo.get_architecture(cfg.arch).offline_weights:
        # the first use imports the weights by building a throw-away model, which draws from the
        # global RNG; do it outside the seeded sequence so the first run equals every later one
        with torch.random.fork_rng(devices=[]):
            zoo.offline_imagenet_weights(cfg.arch)
    torch.manual_seed(cfg.seed)  # initialisation depends on the seed only, not on what ran before
    model = zoo.create_model(cfg.arch, num_classes=source.num_classes, mode=cfg.mode,
                             pretrained=cfg.use_pretrained, in_chans=cfg.in_chans, head=cfg.head,
                             metadata_schema=schema, init=cfg.init,
                             trainable_stages=cfg.trainable_stages, **kwargs)
    if cfg.img_size is not None:
        _apply_img_size(model, cfg.img_size)
    return model, zoo.resolve_data_config(model), schema


def _split_data(cfg: TrainConfig, source: DataSource, splits: Splits, data_config: dict[str, Any],
                in_chans: int, schema: Any) -> dict[str, SplitData]:
    out = {}
    for name, samples in splits.items():
        transform = (train_transform(data_config, cfg.augment, in_chans) if name == "train"
                     else eval_transform(data_config))
        metadata = schema.encode([s.metadata for s in samples]) if schema is not None else None
        out[name] = SplitData(name=name, dataset=ImageDataset(source, samples, transform, in_chans),
                              labels=torch.tensor([s.label for s in samples], dtype=torch.long),
                              metadata=metadata)
    return out


def _use_disk_cache(cfg: TrainConfig, trainer: Trainer, source: DataSource, splits: Splits,
                    data_config: dict[str, Any]) -> None:
    """Fill the splits' features from the disk cache, or extract now and store them."""
    key = cache_key(cfg.arch, trainer.plan.level, weights_digest(trainer.model), data_config,
                    {name: data_fingerprint(source, part) for name, part in splits.items()})
    cached = load_cached(cfg.cache_dir, cfg.arch, key) or {}
    for name, data in trainer.splits.items():  # a stopped extraction stored the splits it finished
        if len(cached.get(name, ())) == len(data.labels):
            data.features = cached[name]

    def store(_split: str) -> None:  # after each split: a stopped or killed extraction keeps what is done
        if distributed.is_main_process():
            store_cached(cfg.cache_dir, cfg.arch, key,
                         {n: d.features for n, d in trainer.splits.items() if d.features is not None})

    try:
        trainer.prepare_features(on_split=store)
    except TrainingInterrupted as e:
        kept = [n for n, d in trainer.splits.items() if d.features is not None]
        note = (f"; the features of the {', '.join(kept)} split(s) are kept in the disk cache {cfg.cache_dir}, "
                "so it extracts only the rest" if kept else "")
        raise TrainingInterrupted(f"{e}{note}", e.run_dir) from None


def _write_outputs(cfg: TrainConfig, run_dir: Path, trainer: Trainer, source: DataSource,
                   splits: Splits, data_config: dict[str, Any], in_chans: int, test: dict[str, Any],
                   probs: np.ndarray, labels: np.ndarray, flat: dict[str, float], plan,
                   timings: dict[str, Any], held_out: HeldOutPredictions | None = None) -> None:
    state, names = trainer.state, source.label_names
    title = f"{cfg.arch} ({cfg.mode}) on {source.name}"
    evaluated_on = held_out.protocol if held_out is not None else "test split"
    plot_curves(state.history, run_dir / PLOT_FILES["curves"], monitor=cfg.monitor, title=title)
    plot_confusion_matrix(test["confusion_matrix"], names, run_dir / PLOT_FILES["confusion_matrix"],
                          title=f"{title}: {evaluated_on}")
    plot_roc(labels, probs, names, run_dir / PLOT_FILES["roc"], title=f"ROC, {evaluated_on}: {title}")
    if held_out is None:
        # temperature, conformal threshold, OOD statistics (train/trust.py): fitted on train/val, reported on test
        trust = fit_run_trust(trainer.model, source, splits, data_config, in_chans,
                              {n: d.metadata for n, d in trainer.splits.items()} if trainer.uses_metadata else {},
                              trainer.device, cfg.batch_size, trainer.workers, run_dir, title,
                              cached=trainer.cached_outputs, ood_method_name=cfg.ood_method)
    else:
        trust = TrustFit(metrics={"evaluation": {"protocol": held_out.protocol, **held_out.extra_metrics},
                                  "trust": held_out.trust_note},
                         card_section=held_out.trust_note, zoo_config={})
    params = zoo.count_params(trainer.model)
    cache_note = plan.reason + (f" ({trainer.feature_extraction_s:.1f} s to extract)"
                                if plan.level and trainer.feature_extraction_s else "")
    write_json(run_dir / METRICS_NAME, {
        "test": test, "headline": flat, "monitor": cfg.monitor, "best_epoch": state.best_epoch,
        "best_val": state.best_value, "epochs_run": len(state.history),
        "stopped_early": state.stopped_early, "params": {"total": params[0], "trainable": params[1]},
        "feature_cache": {"level": plan.level, "reason": plan.reason,
                          "extraction_s": trainer.feature_extraction_s},
        "timing": timings, **trust.metrics, "history": state.history,
    })
    card_data = CardData(source, splits, data_config, in_chans)
    sections = card_sections(cfg, card_data,
                             CardOutcome(params, test, state.history, state.best_epoch, state.best_value,
                                         state.stopped_early, cache_note, timings))
    if held_out is not None:
        _held_out_sections(sections, source, held_out)
    extra = {"training": {"run": run_dir.name, "data": cfg.data, "loss": cfg.loss, "augment": cfg.augment,
                          "sampler": cfg.sampler, "epochs_run": len(state.history),
                          "best_epoch": state.best_epoch, "seed": cfg.seed},
             "test_metrics": flat, "medical": source.medical, **trust.zoo_config,
             "facts": run_facts(card_data, test, evaluated_on)}
    sections[TRUST_SECTION] = trust.card_section
    if cfg.synthetic:
        from .synthetic import synthetic_counts
        extra["training"]["synthetic_images"] = synthetic_counts(splits.train, names)
    trainer.model.cpu()
    zoo.save_pretrained(trainer.model, run_dir, label_names=list(names), dataset=source.name,
                        metrics=flat, card_sections=sections, extra_config=extra)


def _held_out_sections(sections: dict[str, str], source: DataSource, held_out: HeldOutPredictions) -> None:
    """Model-card sections of a model trained on all images and evaluated by held-out predictions (CV)."""
    n = len(source.samples)
    per_class = ", ".join(f"{name} {count}" for name, count in
                          zip(source.label_names, class_counts(source.samples, source.num_classes)))
    data = sections["Training data and split"].split("\n\n| class |")[0]  # the per-split table says nothing here
    data = re.sub(r"^- Split: .*$", f"- Split: none held out: all {n} images trained this model, and "
                  f"{held_out.protocol} evaluated its recipe (see Evaluation)", data, count=1, flags=re.M)
    sections["Training data and split"] = re.sub(
        r"^- Images: .*$", f"- Images: {n}, every one used for training ({per_class})", data, count=1, flags=re.M)
    sections["Training recipe"] = re.sub(
        r"^- Reproduce: .*$", "- Reproduce: this model and its evaluation came from train/lesson.py (cross-"
        "validation, then one run on all images); `run_config.yaml` holds the recipe, which `python -m train "
        "--config` repeats with its usual train/validation/test split instead", sections["Training recipe"],
        count=1, flags=re.M)
    sections["Evaluation"] = held_out.card_text + "\n\n" + sections["Evaluation"].split("\n", 1)[1]
    sections["Limitations of this run"] = (
        f"- Trained on all {n} images of {source.name}; the evaluation above comes from {held_out.protocol}, "
        "whose models never saw the images they were scored on. With so few images the intervals are wide; "
        "expect different results on images from other scanners, sites or populations.")
