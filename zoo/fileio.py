"""Atomic file writes: a crash, a full disk or Ctrl-C leaves the old file or the new one, never a torn one."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

__all__ = ["atomic_write"]


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Yield a file open on a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    A library that writes by file name (safetensors, timm's config writer) writes to ``f.name``, the
    temporary file: it is synced and renamed the same way. After the rename the folder is synced too, so
    the new name survives a power cut. On any error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        _fsync(tmp, os.O_RDWR)  # by name: the data may have been written through another handle
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync(path.parent, os.O_RDONLY, required=False)


def _fsync(path: str | Path, flags: int, required: bool = True) -> None:
    try:
        fd = os.open(path, flags)
    except OSError:
        if required:
            raise
        return  # platforms that cannot open a folder: the rename itself already happened
    try:
        os.fsync(fd)
    except OSError:
        if required:
            raise
    finally:
        os.close(fd)
