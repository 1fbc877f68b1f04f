"""The models an application can offer: run folders under ``weights/`` and the entries of ``weights/catalog.json``.

Every run folder directly under the weights folder (one holding ``config.json``) is a ``local`` model
whose id is the folder name. ``catalog.json`` adds models from elsewhere::

    {
      "models": [
        {"id": "ham10000-densenet201",          # unique id shown to users (required)
         "source": "hub",                        # "hub" or "local" (required)
         "repo_id": "owner/ham10000-densenet201",  # hub: the Hugging Face Hub repo (required)
         "revision": "main",                     # hub: branch, tag or commit (optional)
         "description": "Do Hoang's Soft-Attention paper's recipe"},    # optional, shown in the app
        {"id": "my-xray-run", "source": "local",
         "path": "../runs/xray-resnet50"}        # local: a run folder; relative paths start at the catalog's folder
      ]
    }

A model that cannot be used is listed as unavailable with the reason (an unfinished run, a Hub repo
that is neither cached nor reachable, a broken entry, a config.json with a field the zoo cannot use or
a size over its limits, a link out of the weights folder), never silently hidden. Nothing here loads
weights or builds a model: only ``config.json`` (checked field by field, zoo.model_config) and
``metrics.json`` are read, each with a size cap, so listing is fast whatever the files hold.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import ZooError
from ._hub import REPO_ID, check_hub_reachable, read_config, read_hub_cache, weights_path
from .fileio import read_small_file, resolve_inside
from .run_layout import (CHECKPOINT_NAME, CONFIG_NAME, MAX_FILE_BYTES, METRICS_NAME, PLOT_FILES, RELIABILITY_PLOT,
                         RUN_CONFIG_NAME, WEIGHTS_NAME)
from .model_facts import ModelFacts, known_facts
from .zoo_config import ZooConfig

__all__ = ["ModelEntry", "discover_models", "entry_for_folder", "read_catalog", "CATALOG_NAME", "METRICS_NAME",
           "PLOT_FILES"]

CATALOG_NAME = "catalog.json"
SOURCES = ("local", "hub")
MAX_CATALOG_BYTES = 1_000_000


@dataclass
class ModelEntry:
    """One model the app can offer, described from its config.json (and metrics.json) without loading it."""

    id: str
    source: str                     # "local" | "hub"
    location: str                   # run folder path, or Hub repo id
    revision: str | None = None
    available: bool = True
    reason: str | None = None       # why it is unavailable
    description: str = ""
    config: dict[str, Any] = field(default_factory=dict)   # config.json, when it could be read
    run_metrics: dict[str, Any] = field(default_factory=dict)  # metrics.json of a training run
    run_dir: Path | None = None     # local folder holding its files (a Hub entry: its cache folder, once cached)

    @property
    def zoo_config(self) -> ZooConfig:
        """config.json's "zoo" object, parsed (checked when the config was read, so this does not raise)."""
        return ZooConfig.from_dict(self.config.get("zoo"), source=f"{self.location} {CONFIG_NAME}")

    @property
    def architecture(self) -> str | None:
        model_args = self.config.get("model_args") or {}
        return self.zoo_config.architecture or model_args.get("backbone") or self.config.get("architecture")

    @property
    def mode(self) -> str | None:
        return self.zoo_config.mode

    @property
    def head(self) -> str | None:
        return self.zoo_config.head or (self.config.get("model_args") or {}).get("head")

    @property
    def dataset(self) -> str | None:
        return self.zoo_config.dataset

    @property
    def label_names(self) -> list[str]:
        names = self.config.get("label_names")
        if names:
            return [str(n) for n in names]
        return [str(i) for i in range(int(self.config.get("num_classes") or 0))]

    @property
    def params(self) -> tuple[int | None, int | None]:
        """(total, trainable) as recorded when the model was saved."""
        zoo_config = self.zoo_config
        return zoo_config.params_total, zoo_config.params_trainable

    @property
    def metadata_schema(self) -> dict | None:
        """The metadata head's schema (age/sex/site fields and categories), or None without one."""
        if not self.head or "metadata" not in self.head:
            return None
        from .archs.metadata import MetadataSchema  # noqa: PLC0415
        return MetadataSchema.from_dict((self.config.get("model_args") or {}).get("metadata_schema")).to_dict()

    @property
    def test_metrics(self) -> dict[str, float]:
        """Headline test metrics: metrics.json's, else those saved into config.json."""
        headline = self.run_metrics.get("headline")
        if isinstance(headline, dict) and headline:
            return {k: float(v) for k, v in headline.items() if isinstance(v, (int, float))}
        saved = self.zoo_config.test_metrics or {}
        return {k: float(v) for k, v in saved.items() if isinstance(v, (int, float))}

    @property
    def facts(self) -> ModelFacts:
        """What is known about the model: its config.json's facts, completed from its files where it states none."""
        zoo_config = self.zoo_config
        return known_facts(zoo_config.facts, zoo_config.dataset, zoo_config.medical, self.run_metrics)

    @property
    def plots(self) -> dict[str, Path]:
        """The plots present in its run folder, by kind (curves, confusion_matrix, roc, reliability); a plot
        that links outside the run folder is left out (the app sends plots to its users)."""
        if self.run_dir is None or not self.available:
            return {}
        kinds = {**PLOT_FILES, "reliability": RELIABILITY_PLOT}
        return {kind: self.run_dir / name for kind, name in kinds.items() if _inside(self.run_dir / name)}

    def summary(self) -> str:
        """One line: architecture, mode, dataset (or why it is unavailable)."""
        if not self.available:
            return f"unavailable: {self.reason}"
        parts = [self.architecture or "?", self.mode or "?"]
        if self.head:
            parts.append(f"head {self.head}")
        if self.dataset:
            parts.append(f"on {self.dataset}")
        return ", ".join(parts)


def _inside(path: Path, root: Path | None = None) -> bool:
    """Whether `path` is a regular file that does not lead, through a link, outside `root` (default: its folder)."""
    try:
        return resolve_inside(path, path.parent if root is None else root).is_file()
    except (ZooError, OSError):
        return False


def _read_metrics(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_small_file(folder / METRICS_NAME, MAX_FILE_BYTES[METRICS_NAME]))
    except (OSError, ValueError, RecursionError, ZooError):
        return {}  # the model is usable without its metrics; the app shows them as missing
    return data if isinstance(data, dict) else {}


def _local_entry(entry_id: str, folder: Path, description: str = "", root: Path | None = None) -> ModelEntry:
    """A run folder's entry; `root` is the folder its files must stay inside (the weights folder), default itself."""
    entry = ModelEntry(id=entry_id, source="local", location=str(folder), description=description, run_dir=folder)
    root = folder if root is None else root
    try:
        resolve_inside(folder, root)
    except ZooError:
        entry.available, entry.run_dir = False, None
        entry.reason = (f"{folder} is a symbolic link to a folder outside {root}; the app does not follow links out "
                        "of the weights folder. Move or copy the run folder into it.")
        return entry
    if not folder.is_dir():
        entry.available, entry.reason = False, f"folder {folder} does not exist"
        return entry
    has_weights = os.path.lexists(folder / WEIGHTS_NAME)
    if not has_weights and (folder / RUN_CONFIG_NAME).is_file():
        entry.available = False
        entry.reason = (f"training has not finished: {folder} has no {WEIGHTS_NAME} yet (continue it with "
                        f"python -m train --resume {folder}, or wait for the running training)")
        return entry
    try:
        entry.config = read_config(folder, root=root)
        weights_path(folder, str(folder), root=root)
    except ZooError as e:
        entry.available, entry.reason = False, str(e)
        return entry
    entry.run_metrics = _read_metrics(folder)
    return entry


def entry_for_folder(folder: str | os.PathLike) -> ModelEntry:
    """The entry of one run folder named on a command line (its id: the folder's name), unavailable with the reason
    when it cannot be used."""
    folder = Path(folder)
    return _local_entry(folder.resolve().name, folder)


def _hub_entry(entry_id: str, repo_id: str, revision: str | None, description: str,
               reachable: tuple[bool, str | None]) -> ModelEntry:
    entry = ModelEntry(id=entry_id, source="hub", location=repo_id, revision=revision, description=description)
    if revision is not None and not isinstance(revision, str):
        entry.available, entry.reason = False, f"\"revision\" must be a branch, a tag or a commit, got {revision!r:.80}"
        return entry
    try:
        cached = read_hub_cache(repo_id, revision)
    except ZooError as e:
        entry.available, entry.reason = False, str(e)
        return entry
    if cached is not None:
        entry.run_dir, entry.config = cached
        return entry
    ok, why = reachable
    if not ok:
        entry.available, entry.reason = False, f"not downloaded yet and the Hub cannot be reached: {why}"
    return entry


def _hub_reachability() -> tuple[bool, str | None]:
    try:
        check_hub_reachable("catalog models")
    except ZooError as e:
        return False, str(e)
    return True, None


def read_catalog(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The entries of a catalog.json file ([] when it does not exist); a malformed file raises ZooError."""
    path = Path(path)
    if not os.path.lexists(path):
        return []
    try:
        data = json.loads(read_small_file(path, MAX_CATALOG_BYTES, root=path.resolve().parent))
    except (OSError, ValueError, RecursionError) as e:
        raise ZooError(f"{path} is not valid JSON ({e}); fix it or reset it to {{\"models\": []}}.") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise ZooError(f"{path} must be an object with a \"models\" list, e.g. {{\"models\": []}}; "
                       f"got {type(data).__name__}{' without models' if isinstance(data, dict) else ''}.")
    return data["models"]


def _catalog_entry(raw: Any, index: int, catalog: Path, reachable) -> ModelEntry:
    where = f"{catalog} entry {index}"
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"].strip():
        return ModelEntry(id=f"catalog-entry-{index}", source="local", location="", available=False,
                          reason=f"{where} needs a non-empty string \"id\"; got {raw!r:.80}")
    entry_id, source = raw["id"].strip(), raw.get("source")
    description = str(raw.get("description") or "")
    if source == "hub":
        repo_id = raw.get("repo_id")
        if not isinstance(repo_id, str) or not REPO_ID.match(repo_id):
            return ModelEntry(id=entry_id, source="hub", location=str(repo_id), available=False,
                              reason=f"{where}: \"repo_id\" must look like OWNER/NAME, got {repo_id!r}")
        return _hub_entry(entry_id, repo_id, raw.get("revision"), description, reachable())
    if source == "local":
        path = raw.get("path")
        if not isinstance(path, str) or not path:
            return ModelEntry(id=entry_id, source="local", location="", available=False,
                              reason=f"{where}: a local entry needs a \"path\" to its run folder")
        folder = Path(path) if Path(path).is_absolute() else catalog.parent / path
        return _local_entry(entry_id, folder, description)
    return ModelEntry(id=entry_id, source=str(source), location="", available=False,
                      reason=f"{where}: \"source\" must be one of {', '.join(SOURCES)}, got {source!r}")


def discover_models(weights_dir: str | os.PathLike = "weights",
                    catalog: str | os.PathLike | None = None) -> list[ModelEntry]:
    """Every model on offer: the run folders of `weights_dir` (sorted by id), then catalog entries.

    `catalog` defaults to ``<weights_dir>/catalog.json``. An id that appears twice keeps its first entry;
    the later one is listed as unavailable.
    """
    weights_dir = Path(weights_dir)
    catalog = Path(catalog) if catalog is not None else weights_dir / CATALOG_NAME
    entries: list[ModelEntry] = []
    if weights_dir.is_dir():
        for folder in sorted(p for p in weights_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            # lexists: a config.json that is a link (to /dev/zero, or out of the folder) is listed, with the reason
            if any(os.path.lexists(folder / name) for name in (CONFIG_NAME, CHECKPOINT_NAME, RUN_CONFIG_NAME)):
                entries.append(_local_entry(folder.name, folder, root=weights_dir))
    reachability: list[tuple[bool, str | None]] = []

    def reachable() -> tuple[bool, str | None]:  # checked once, and only if a Hub entry needs it
        if not reachability:
            reachability.append(_hub_reachability())
        return reachability[0]

    try:
        raw_entries = read_catalog(catalog)
    except ZooError as e:
        entries.append(ModelEntry(id=CATALOG_NAME, source="local", location=str(catalog), available=False,
                                  reason=str(e)))
        raw_entries = []
    seen = {e.id for e in entries}
    for index, raw in enumerate(raw_entries):
        entry = _catalog_entry(raw, index, catalog, reachable)
        if entry.id in seen:
            entry = ModelEntry(id=f"{entry.id} (catalog entry {index})", source=entry.source,
                               location=entry.location, available=False,
                               reason=f"id {entry.id!r} is already used by another model; give it a unique id")
        seen.add(entry.id)
        entries.append(entry)
    return entries
