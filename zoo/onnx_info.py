"""onnx.json, the record beside a run's ONNX files, and the zoo's own verification records in its cache.

onnx.json names each ONNX file's and the weights' sha256 and the verification figures, one entry per file (fp32
and int8), for readers of a published run. A loader never takes it on the folder's word (anyone who can change
model.onnx can rewrite onnx.json's hashes too): it trusts only the verification records the zoo wrote itself, in
its own cache (``remember_verification``, keyed by the sha256 of both the ONNX file and the weights).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _hub  # _hub.CACHE_DIR is read at call time: tests and ZOO_CACHE point it elsewhere
from ._errors import ZooError
from .fileio import atomic_write, check_file_size
from .run_layout import ONNX_INFO_NAME

__all__ = ["INFO_FORMAT", "OnnxExport", "write_info", "read_onnx_info", "verification_record", "remember_verification"]

INFO_FORMAT = "zoo-onnx/1"


@dataclass
class OnnxExport:
    """A written, verified ONNX file and its record (the onnx.json entry)."""

    path: Path
    info: dict[str, Any]


def write_info(folder: Path, name: str, entry: dict[str, Any]) -> None:
    info = read_onnx_info(folder)
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
    says about itself: descriptive, never proof that a file was verified (see verification_record)."""
    path = Path(folder) / ONNX_INFO_NAME
    try:
        check_file_size(path)
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, ZooError):
        return {}
    return {k: v for k, v in info.items() if isinstance(v, dict)} if isinstance(info, dict) else {}
