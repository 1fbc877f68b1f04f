"""``--catalog``: the sweep's finished run folders listed in the app's catalog.json, so that its Compare tab offers
them as models (the app offers the run folders directly in its weights folder and those its catalog lists; a sweep
writes its cells one folder deeper, under --out)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import zoo
from zoo.catalog import read_catalog
from zoo.fileio import atomic_write

from .._errors import ConfigError
from .cells import run_is_complete
from .grid import Cell

__all__ = ["check_catalog", "add_to_catalog"]


def check_catalog(catalog: str | Path) -> list:
    """The entries of `catalog` ([] when it does not exist yet); a file that is not a catalog raises ConfigError."""
    try:
        return read_catalog(catalog)
    except zoo.ZooError as e:
        raise ConfigError(f"--catalog: {e}") from None


def add_to_catalog(catalog: str | Path, cells: Sequence[Cell]) -> tuple[list[str], list[str]]:
    """Add each cell whose run folder is complete to `catalog` (created if missing) as a local entry named by the
    cell, its path relative to the catalog's folder. Returns (ids added, why others were not); an id already there
    for the same folder is kept as it is, one for another folder is left alone and said."""
    catalog = Path(catalog)
    entries = check_catalog(catalog)
    by_id = {e.get("id"): e for e in entries if isinstance(e, dict)}
    added, skipped = [], []
    for cell in cells:
        if not run_is_complete(cell.folder):
            continue  # a failed or stopped cell: nothing to offer yet
        path = Path(os.path.relpath(cell.folder.resolve(), catalog.resolve().parent)).as_posix()
        if path.startswith("../"):
            skipped.append(f"{cell.name}: its folder is not below {catalog.parent}; the app reads a catalog's "
                           "local models from the folder the catalog is in")
            continue
        known = by_id.get(cell.name)
        if known is not None:
            if known.get("path") != path:
                skipped.append(f"{cell.name}: {catalog} already has this id for {known.get('path')!r}")
            continue
        entry = {"id": cell.name, "source": "local", "path": path,
                 "description": f"sweep cell: {cell.data}, {cell.arch}, {cell.mode}, seed {cell.seed}"}
        entries.append(entry)
        by_id[cell.name] = entry
        added.append(cell.name)
    if added:
        catalog.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(catalog, "w") as f:
            json.dump({"models": entries}, f, indent=2)
            f.write("\n")
    return added, skipped
