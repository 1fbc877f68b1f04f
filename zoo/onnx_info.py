"""onnx.json, the record beside a run's ONNX files, and the zoo's own verification records in its cache.

onnx.json names each ONNX file's and the weights' sha256 and the verification figures, one entry per file (fp32
and int8), for readers of a published run. A loader never takes it on the folder's word (anyone who can change
model.onnx can rewrite onnx.json's hashes too): it trusts only the verification records the zoo wrote itself, in
its own cache (``remember_verification``, keyed by the sha256 of both the ONNX file and the weights).

Each entry names its ``format_version`` (ONNX_INFO_VERSION). An entry that names none was written before versions
and reads as it always did; `info_version_problem` says what it may lack. An entry of a newer version is not read
(a warning says so and what to do) and is kept as it is when another file's entry is written.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _hub  # _hub.CACHE_DIR is read at call time: tests and ZOO_CACHE point it elsewhere
from ._errors import ZooError
from .fileio import atomic_write, check_file_size
from .run_layout import ONNX_INFO_NAME

__all__ = ["INFO_FORMAT", "ONNX_INFO_VERSION", "OnnxExport", "write_info", "read_onnx_info", "info_version_problem",
           "verification_record", "remember_verification"]

INFO_FORMAT = "zoo-onnx/1"  # each entry's "format": what kind of record it is
# each entry's "format_version": 2 names it and promises the `features` output's shape and verification figures
# (version 1, written before entries named a version, left them out where model.onnx predates that output); 3 adds the
# `feature_map` output (models whose last features are a 2-D map) and the Grad-CAM record (verification["cam"],
# zoo.onnx_cam): an older entry's file answers as before, its heatmaps come from PyTorch ("exported before feature
# maps")
ONNX_INFO_VERSION = 3


@dataclass
class OnnxExport:
    """A written, verified ONNX file and its record (the onnx.json entry)."""

    path: Path
    info: dict[str, Any]


def write_info(folder: Path, name: str, entry: dict[str, Any]) -> None:
    """Put `entry` into the folder's onnx.json as `name`'s record; the other files' entries stay as they are,
    whatever their version."""
    info = _read_entries(Path(folder) / ONNX_INFO_NAME)
    info[name] = entry
    with atomic_write(folder / ONNX_INFO_NAME) as f:
        f.write((json.dumps(info, indent=2) + "\n").encode())


def _record_path(digest: str, weights_sha256: str) -> Path:
    return Path(_hub.CACHE_DIR) / "onnx" / "verified" / f"{digest}-{weights_sha256}.json"


def verification_record(digest: str, weights_sha256: str | None) -> dict[str, Any] | None:
    """The verification the zoo recorded itself (in its cache) of the ONNX file with sha256 `digest` against
    the weights with sha256 `weights_sha256`; None when it has none (verify the file, then remember it)."""
    if not weights_sha256:
        return None
    try:
        record = json.loads(_record_path(digest, weights_sha256).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(record, dict) and record.get("sha256") == digest
            and record.get("weights_sha256") == weights_sha256 and isinstance(record.get("verification"), dict)):
        return None
    return record


def remember_verification(record: dict[str, Any]) -> None:
    """Record in the zoo's cache that the ONNX file record["sha256"] verified against the weights
    record["weights_sha256"] (figures in record["verification"]); nothing without the weights' hash."""
    if not record.get("weights_sha256"):
        return
    target = _record_path(record["sha256"], record["weights_sha256"])
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target) as f:
        f.write((json.dumps(record, indent=2) + "\n").encode())


def read_onnx_info(folder: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """onnx.json of a folder: {file name: record}; empty when there is none or it is unreadable. What the folder
    says about itself: descriptive, never proof that a file was verified (see verification_record).

    An entry of an older format version is returned as it is (`info_version_problem` says what it lacks); one of
    a newer version is left out, with a warning saying so: its fields may mean what this zoo does not know.
    """
    path = Path(folder) / ONNX_INFO_NAME
    entries = {}
    for name, entry in _read_entries(path).items():
        problem = info_version_problem(name, entry)
        if problem is not None and _version(entry) > ONNX_INFO_VERSION:
            warnings.warn(f"{path}: {problem}", stacklevel=2)
            continue
        entries[name] = entry
    return entries


def info_version_problem(name: str, entry: dict[str, Any]) -> str | None:
    """What an onnx.json entry written in another format version than this zoo's lacks or holds beyond it, in
    words with the fix; None for an entry of ONNX_INFO_VERSION."""
    version = _version(entry)
    if version == ONNX_INFO_VERSION:
        return None
    if version > ONNX_INFO_VERSION:
        return (f"the entry for {name} has format version {entry.get('format_version')!r}, newer than this zoo's "
                f"{ONNX_INFO_VERSION}: a newer medtl-zoo wrote it, and this one does not read it (upgrade medtl-zoo, "
                "or re-export the file with this one).")
    if version == 2:
        return (f"the entry for {name} has format version 2: {name} was exported before feature maps, so it has no "
                "`feature_map` output and its heatmaps come from PyTorch's Grad-CAM. Re-export it (python -m zoo "
                "export RUN) for heatmaps from ONNX Runtime.")
    return (f"the entry for {name} names no format version (version 1, written before entries named one): where "
            f"{name} was exported before it gave image features, it lacks the `features` output's shape and "
            "verification figures. Re-export it (python -m zoo export RUN) to write a complete entry.")


def _version(entry: dict[str, Any]) -> float:
    """An entry's format version: 1 where it names none; infinite where it names one this zoo cannot read."""
    if "format_version" not in entry:
        return 1
    version = entry["format_version"]
    return version if isinstance(version, int) and not isinstance(version, bool) and version >= 1 else float("inf")


def _read_entries(path: Path) -> dict[str, dict[str, Any]]:
    """Every {file name: entry} of the onnx.json at `path`, whatever its version; empty when unreadable."""
    try:
        check_file_size(path)
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, ZooError):
        return {}
    return {k: v for k, v in info.items() if isinstance(v, dict)} if isinstance(info, dict) else {}
