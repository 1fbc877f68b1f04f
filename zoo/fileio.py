"""Files on disk: atomic writes (a crash, a full disk or Ctrl-C leaves the old file or the new one, never a torn
one) with ordinary permissions, and safetensors reading with a clear error for a corrupt file."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

import torch
from safetensors import SafetensorError, safe_open

from ._errors import ZooError

__all__ = ["atomic_write", "read_safetensors"]

# mkstemp creates owner-only (0600) files; a finished file gets what open() would have given it (0666 less the
# umask, usually 0644), so other users and web servers can read published runs. Read once: os.umask can only
# be read by setting it, which is not safe to do while other threads create files.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


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
        os.chmod(tmp, _FILE_MODE)
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


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; a corrupt or truncated file is a ZooError naming it."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ZooError(f"{path} is not a readable safetensors file ({e}); it may be corrupt or truncated: "
                       "download or save it again.") from None
