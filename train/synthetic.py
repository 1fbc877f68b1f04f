"""Synthetic images in training: reading a generated set, topping up the training split, quality.

``python -m train ... --synthetic DIR --target-balance R`` adds images from a set written by
``python -m train.gan generate`` to the **training split only**: validation and test stay real, so
every metric is measured on real images. Each class is topped up to R x the largest class's real
training count, as far as the set has images of that class. Synthetic samples carry keys starting
with ``synthetic:``, so ``split.json`` shows exactly which training images were synthetic.

The quality report (``python -m train.gan quality DIR --classifier RUN``) works offline: how often a
classifier trained on real data gives each synthetic image its intended class, and each synthetic
image's distance to its nearest real training image (small distances are a sign of copying).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from zoo.run_layout import METRICS_NAME

from ._errors import DataError
from .checkpoint import atomic_write, write_json
from .data import DataSource, Sample, Splits, class_counts
from .gan.generate import MANIFEST_FILE, MANIFEST_FORMAT, QUALITY_DIR

__all__ = ["SYNTHETIC_KEY_PREFIX", "SyntheticSet", "read_synthetic_set", "is_synthetic", "plan_top_up",
           "add_synthetic", "synthetic_counts", "quality_report"]

_logger = logging.getLogger("train")

SYNTHETIC_KEY_PREFIX = "synthetic:"


@dataclass
class SyntheticSet:
    """A checked synthetic image set: its manifest and its files per class, in manifest order."""

    folder: Path
    manifest: dict[str, Any]
    files: dict[str, list[str]]   # class name -> files relative to folder
    image_size: int
    channels: int


def read_synthetic_set(folder: str | Path, verify: bool = True) -> SyntheticSet:
    """Read and check ``folder/manifest.json``; with ``verify``, every file's hash, size and channels.

    A file whose size or channel count differs from the manifest's is an error, never resized.
    """
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise DataError(f"--synthetic {folder}: no {MANIFEST_FILE} there. Synthetic images must come with the "
                        "manifest python -m train.gan generate writes, which marks them as synthetic")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise DataError(f"{path} is not valid JSON ({e})") from None
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("synthetic") is not True:
        raise DataError(f"{path} is not a synthetic-image manifest (format {manifest.get('format')!r}, expected "
                        f"{MANIFEST_FORMAT!r} with \"synthetic\": true)")
    size, channels = int(manifest["image_size"]), int(manifest["channels"])
    mode = "L" if channels == 1 else "RGB"
    files: dict[str, list[str]] = {name: [] for name in manifest.get("classes", {})}
    for entry in manifest.get("files", []):
        relative, name = entry["file"], entry["class"]
        if entry.get("synthetic") is not True or not entry.get("generator"):
            raise DataError(f"{path}: entry {relative} is not marked synthetic with its generator")
        if name not in files:
            raise DataError(f"{path}: entry {relative} has class {name!r}, which the manifest's classes lack")
        file = folder / relative
        if not file.is_file():
            raise DataError(f"{path} lists {relative}, but {file} does not exist; regenerate the set")
        if verify:
            if hashlib.sha256(file.read_bytes()).hexdigest() != entry.get("sha256"):
                raise DataError(f"{file} changed after it was generated (its SHA-256 differs from the manifest's); "
                                "regenerate the set rather than editing it")
            with Image.open(file) as im:
                if im.size != (size, size) or im.mode != mode:
                    raise DataError(
                        f"{file} is {im.size[0]}x{im.size[1]} in mode {im.mode}, but the manifest says "
                        f"{size}x{size} with {channels} channel(s); synthetic images are never resized or "
                        "converted silently. Regenerate the set with python -m train.gan generate")
        files[name].append(relative)
    return SyntheticSet(folder=folder, manifest=manifest, files=files, image_size=size, channels=channels)


def is_synthetic(sample: Sample) -> bool:
    """Whether the sample is a synthetic (GAN-made) image added by add_synthetic, by its key's prefix."""
    return sample.key.startswith(SYNTHETIC_KEY_PREFIX)


def plan_top_up(real_counts: Sequence[int], available: Sequence[int], target_balance: float = 1.0) -> list[int]:
    """Synthetic images to add per class: up to ceil(R x largest real count), as far as available."""
    if not 0.0 < target_balance <= 1.0:
        raise ValueError(f"target balance must be in (0, 1], got {target_balance}")
    target = math.ceil(target_balance * max(real_counts))
    return [min(int(a), max(0, target - int(n))) for n, a in zip(real_counts, available)]


def add_synthetic(source: DataSource, splits: Splits, folder: str | Path, target_balance: float = 1.0,
                  needs_metadata: bool = False) -> Splits:
    """``splits`` with synthetic images from ``folder`` added to the training split (only there)."""
    sset = read_synthetic_set(folder)
    names = source.label_names
    unknown = [c for c in sset.files if c not in names]
    if unknown:
        raise DataError(f"--synthetic {folder} has images of class(es) {unknown}, which {source.spec} lacks "
                        f"(its classes: {names})")
    if needs_metadata:
        raise DataError("--synthetic with a metadata head: synthetic images have no age/sex/site metadata; "
                        "drop --head metadata or --synthetic")
    _check_no_leak(sset, source, splits)
    real = class_counts(splits.train, source.num_classes)
    available = [len(sset.files.get(n, [])) for n in names]
    plan = plan_top_up(real, available, target_balance)
    added = [Sample(key=f"{SYNTHETIC_KEY_PREFIX}{relative}", ref=sset.folder / relative, label=c)
             for c, n in enumerate(names) for relative in sset.files.get(n, [])[:plan[c]]]
    short = [n for c, n in enumerate(names)
             if available[c] and plan[c] < max(0, math.ceil(target_balance * max(real)) - real[c])]
    if short:
        _logger.warning("--synthetic %s has too few images of %s to reach --target-balance %s", folder,
                        short, target_balance)
    _logger.info("synthetic images added to the training split only: %s",
                 ", ".join(f"{n} +{k}" for n, k in zip(names, plan) if k) or "none (already balanced)")
    return Splits(train=list(splits.train) + added, val=splits.val, test=splits.test, predefined=splits.predefined)


def _check_no_leak(sset: SyntheticSet, source: DataSource, splits: Splits) -> None:
    """Refuse generators that saw images this run validates or tests on."""
    seen = sset.manifest.get("real_training_images") or {}
    if seen.get("data") != source.spec:
        _logger.warning("--synthetic %s: its generators were trained on %r, this run uses %r; cannot check "
                        "that they never saw this run's validation or test images", sset.folder,
                        seen.get("data"), source.spec)
        return
    trained_on = {key for keys in seen.get("classes", {}).values() for key in keys}
    held_out = [s.key for s in list(splits.val) + list(splits.test) if s.key in trained_on]
    if held_out:
        raise DataError(
            f"--synthetic {sset.folder}: its generators were trained on {len(held_out)} image(s) that are in this "
            f"run's validation or test split (e.g. {held_out[0]!r}), so the synthetic images would leak them. "
            f"Train the GAN with this run's split (generator split seed {seen.get('split_seed')}, val "
            f"{seen.get('val_frac')}, test {seen.get('test_frac')}; pass the same --split-seed/--seed and fractions)")


def synthetic_counts(samples: Sequence[Sample], label_names: Sequence[str]) -> dict[str, int]:
    """{class: synthetic images among samples}, every class listed."""
    counts = class_counts([s for s in samples if is_synthetic(s)], len(label_names))
    return dict(zip(label_names, counts))


# --- quality report -------------------------------------------------------------------------------

def quality_report(folder: str | Path, classifier: str | Path, out: str | Path | None = None,
                   batch_size: int = 128, progress: bool = True) -> dict[str, Any]:
    """Score a synthetic set: classifier agreement per class and nearest-real-image distances.

    Writes ``quality.json`` (per image and per class) and ``quality.md`` to ``out``
    (default ``folder/quality``); returns the JSON data.
    """
    import zoo
    sset = read_synthetic_set(folder)
    out = Path(out) if out is not None else sset.folder / QUALITY_DIR
    model = zoo.load_pretrained(classifier)
    label_names = list(model.pretrained_cfg.get("label_names") or [])
    missing = [c for c in sset.files if c not in label_names]
    if missing:
        raise DataError(f"classifier {classifier} does not know class(es) {missing} (its classes: {label_names}); "
                        "use a classifier trained on the real data the generators imitate")
    predictions = _classify(model, sset, batch_size, progress)
    reference = _classifier_recall(Path(classifier), label_names)
    distances, note = _nearest_real(sset)
    per_image, per_class = [], {}
    for name, files in sset.files.items():
        intended = label_names.index(name)
        probs = np.stack([predictions[f] for f in files]) if files else np.zeros((0, len(label_names)))
        predicted = probs.argmax(axis=1) if len(files) else np.zeros(0, dtype=int)
        nn = distances.get(name)
        for i, f in enumerate(files):
            per_image.append({"file": f, "class": name, "predicted": label_names[int(predicted[i])],
                              "p_intended": float(probs[i, intended]),
                              **({"nearest_real": nn["keys"][i], "nearest_real_rmse": float(nn["synthetic"][i])}
                                 if nn else {})})
        entry: dict[str, Any] = {
            "count": len(files),
            "agreement": float((predicted == intended).mean()) if len(files) else None,
            "mean_p_intended": float(probs[:, intended].mean()) if len(files) else None,
            "classifier_test_recall": reference.get(name),
        }
        if nn:
            real = nn["real"]
            threshold = float(np.percentile(real, 5)) if len(real) else None
            entry.update(
                num_real_images=nn["num_real"],
                synthetic_nn_rmse_median=float(np.median(nn["synthetic"])),
                synthetic_nn_rmse_min=float(np.min(nn["synthetic"])),
                real_nn_rmse_median=float(np.median(real)) if len(real) else None,
                near_copy_threshold=threshold,
                near_copies=int((nn["synthetic"] < threshold).sum()) if threshold is not None else None)
        per_class[name] = entry
    report = {"synthetic_set": str(sset.folder), "classifier": str(classifier), "classes": per_class,
              "images": per_image, "distance_note": note,
              "distance": "RMSE of pixel values in [0, 1] at the generator's resolution, to the nearest real "
                          "training image of the same class (the images the generator was trained on)"}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "quality.json", report)
    with atomic_write(out / "quality.md", "w") as f:
        f.write(quality_markdown(report))
    return report


def quality_markdown(report: dict[str, Any], heading: bool = True) -> str:
    """The per-class quality table as Markdown, with how to read it."""
    def fmt(v: Any, digits: int = 3) -> str:
        return "n/a" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))

    rows = ["| class | synthetic | classifier agrees | mean p(intended) | classifier recall on real test | "
            "NN RMSE synthetic (median / min) | NN RMSE real-real (median) | near copies |",
            "|---|---|---|---|---|---|---|---|"]
    for name, c in report["classes"].items():
        rows.append(f"| {name} | {c['count']} | {fmt(c['agreement'])} | {fmt(c['mean_p_intended'])} | "
                    f"{fmt(c['classifier_test_recall'])} | {fmt(c.get('synthetic_nn_rmse_median'))} / "
                    f"{fmt(c.get('synthetic_nn_rmse_min'))} | {fmt(c.get('real_nn_rmse_median'))} | "
                    f"{fmt(c.get('near_copies'))} |")
    intro = [f"Classifier `{report['classifier']}` (trained on real images) on the synthetic set "
             f"`{report['synthetic_set']}`.", ""] if heading else []
    return "\n".join([
        *intro,
        *rows, "",
        "- *classifier agrees*: share of synthetic images it assigns their intended class; compare with its recall "
        "on real test images of that class.",
        f"- *NN RMSE*: {report['distance']}. *real-real*: each real training image's distance to its nearest other "
        "real image of the class, the scale of ordinary similarity. *near copies*: synthetic images closer to a "
        "training image than 95 % of the training images are to their own nearest neighbour.",
        *([f"- {report['distance_note']}"] if report.get("distance_note") else []), "",
    ])


@torch.no_grad()
def _classify(model: torch.nn.Module, sset: SyntheticSet, batch_size: int, progress: bool) -> dict[str, np.ndarray]:
    import zoo
    from zoo.images import load_image, to_model_mode

    from .augment import eval_transform
    data_config = zoo.resolve_data_config(model)
    transform, in_chans = eval_transform(data_config), data_config["input_size"][0]
    files = [f for fs in sset.files.values() for f in fs]
    out: dict[str, np.ndarray] = {}
    from tqdm import tqdm
    for start in tqdm(range(0, len(files), batch_size), desc="classifying synthetic images", unit="batch",
                      disable=not progress, leave=False):
        chunk = files[start:start + batch_size]
        x = torch.stack([transform(to_model_mode(load_image(sset.folder / f).image, in_chans)) for f in chunk])
        probs = model(x).float().softmax(dim=1).numpy()  # (B, C, H, W) -> (B, K)
        out.update(zip(chunk, probs))
    return out


def _classifier_recall(run_dir: Path, label_names: Sequence[str]) -> dict[str, float]:
    path = run_dir / METRICS_NAME
    if not path.is_file():
        return {}
    per_class = json.loads(path.read_text(encoding="utf-8")).get("test", {}).get("per_class", {})
    return {n: per_class[n]["sensitivity"] for n in label_names if n in per_class}


def _nearest_real(sset: SyntheticSet) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Per class: each synthetic image's RMSE to its nearest real training image, and real-real NN RMSE."""
    from .data import load_source
    from .gan.fit import load_real_images
    seen = sset.manifest.get("real_training_images")
    if not seen:
        return {}, "no list of the generators' training images in the manifest: distances not computed"
    try:
        source = load_source(seen["data"])
    except Exception as e:  # moved or unreadable data: the agreement part of the report still stands
        return {}, f"the generators' training data {seen['data']!r} could not be loaded ({e}): distances not computed"
    by_key = {s.key: s for s in source.samples}
    result = {}
    for name, files in sset.files.items():
        keys = [k for k in seen.get("classes", {}).get(name, []) if k in by_key]
        if not keys or not files:
            continue
        real, _ = load_real_images(source, [by_key[k] for k in keys], sset.image_size, sset.channels)
        real_flat = real.flatten(1).double() / 255.0                               # (R, C*S*S)
        synthetic = np.stack([np.asarray(Image.open(sset.folder / f), dtype=np.uint8) for f in files])
        if synthetic.ndim == 4:
            synthetic = synthetic.transpose(0, 3, 1, 2)  # (N, S, S, C) -> (N, C, S, S), as the real tensor
        synthetic_flat = torch.from_numpy(synthetic.reshape(len(files), -1)).double() / 255.0  # (N, C*S*S)
        scale = math.sqrt(real_flat.shape[1])  # Euclidean distance -> RMSE per pixel value
        d = torch.cdist(synthetic_flat, real_flat) / scale                           # (N, R)
        nearest = d.min(dim=1)
        rr = torch.cdist(real_flat, real_flat) / scale
        rr.fill_diagonal_(math.inf)
        real_nn = rr.min(dim=1).values if len(keys) > 1 else torch.zeros(0)
        result[name] = {"synthetic": nearest.values.numpy(), "keys": [keys[i] for i in nearest.indices.tolist()],
                        "real": real_nn[torch.isfinite(real_nn)].numpy(), "num_real": len(keys)}
    return result, None
