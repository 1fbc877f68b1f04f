"""Files on disk: atomic writes (a crash, a full disk or Ctrl-C leaves the old file or the new one, never a torn
one) with ordinary permissions, safetensors reading with a clear error for a corrupt file, and reading a small
file of a run folder with a size cap, without following links out of the folder."""
from __future__ import annotations

import errno
import math
import os
import re
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

import torch
from safetensors import SafetensorError, safe_open

from ._errors import ZooError
from .run_layout import MAX_FILE_BYTES

__all__ = ["STALE_TEMPORARY_S", "atomic_target", "atomic_write", "check_file_size", "is_disk_full", "read_safetensors",
           "read_safetensors_metadata", "read_small_file",
           "remove_stale_temporary_files",
           "resolve_inside"]

# A temporary file of an atomic write this old was left by a writer that died (kill -9, a power cut): a live
# write (an ONNX export of the largest model, a download) finishes its file within a minute or two.
STALE_TEMPORARY_S = 600
TEMPORARY_PREFIX, TEMPORARY_SUFFIX = ".", ".tmp"  # atomic_write's temporary file: .<name>.<random>.tmp

# what the OS reports when a write finds no room: the disk (or the user's quota) is full
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})

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
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMPORARY_PREFIX}{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        _fsync(tmp, os.O_RDWR)  # by name: the data may have been written through another handle
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        refused = _os_error_in(e, tmp)
        if refused is not None:
            raise refused from e
        raise
    _fsync(path.parent, os.O_RDONLY, required=False)


# how Rust's std::io::Error shows an OS error (safetensors writes by file name in Rust): "... (os error 28)"
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def _os_error_in(error: BaseException, path: str) -> OSError | None:
    """The OSError a writer library reported as its own exception (safetensors' SafetensorError says "(os error
    28)"), so that a full disk reads as one wherever it happened; None for an OSError itself or anything else."""
    if isinstance(error, OSError):
        return None
    found = _RUST_OS_ERROR.search(str(error))
    if found is None:
        return None
    number = int(found.group(1))
    return OSError(number, os.strerror(number), path)


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` is the OS saying a write found no room (ENOSPC: the disk is full, or EDQUOT: the quota)."""
    return isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS


def atomic_target(path: str | os.PathLike) -> Path:
    """The file an atomic write's temporary file (``.<name>.<random>.tmp``) stands for; any other path as it is."""
    path = Path(path)
    name = path.name
    if name.startswith(TEMPORARY_PREFIX) and name.endswith(TEMPORARY_SUFFIX) and name.count(".") >= 3:
        return path.with_name(name[len(TEMPORARY_PREFIX):-len(TEMPORARY_SUFFIX)].rsplit(".", 1)[0])
    return path


def remove_stale_temporary_files(folder: str | os.PathLike, older_than_s: float = STALE_TEMPORARY_S) -> list[Path]:
    """Delete the temporary files of atomic writes (``.<name>.<anything>.tmp``) under `folder` that were last
    written more than `older_than_s` seconds ago, i.e. whose writer was killed; returns what was deleted.

    Only regular files are deleted (never a link, nor what it points to); a file that cannot be deleted is
    skipped: the next start tries again.
    """
    deadline = time.time() - older_than_s
    removed = []
    for root, _, names in os.walk(folder):  # os.walk does not descend into linked folders
        for name in names:
            if not (name.startswith(TEMPORARY_PREFIX) and name.endswith(TEMPORARY_SUFFIX)):
                continue
            path = Path(root) / name
            try:
                info = os.lstat(path)
                if stat.S_ISREG(info.st_mode) and info.st_mtime < deadline:
                    path.unlink()
                    removed.append(path)
            except OSError:
                continue
    return removed


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


def check_file_size(path: str | os.PathLike, kind: str | None = None) -> int:
    """The size of `path` (links followed), checked before anything reads it against the zoo's cap for a file of
    its kind (MAX_FILE_BYTES[kind], the kind being its name by default); a ZooError naming it when over."""
    path = Path(path)
    limit = MAX_FILE_BYTES[kind or path.name]
    size = os.stat(path).st_size
    if size > limit:
        raise ZooError(f"{path} is {size:,} bytes, over the zoo's limit of {limit:,} bytes for {kind or path.name}; "
                       "it was not read. It cannot be a file the zoo wrote: re-create it, or delete it.")
    return size


@contextmanager
def _open_safetensors(path: str | os.PathLike) -> Iterator[Any]:
    """safetensors' safe_open, with a corrupt or truncated file as a ZooError naming it."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            yield f
    except ZooError:
        raise  # the caller's own finding (a ValueError too), already naming the file
    except (SafetensorError, OSError, ValueError) as e:
        raise ZooError(f"{path} is not a readable safetensors file ({e}); it may be corrupt or truncated: "
                       "download or save it again.") from None


def read_safetensors(path: str | os.PathLike, max_elements: int | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; a corrupt or truncated file, or one holding more than `max_elements`
    numbers in all (counted from its header, before any tensor is read), is a ZooError naming it."""
    with _open_safetensors(path) as f:
        if max_elements is not None:
            total = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
            if total > max_elements:
                raise ZooError(f"{path} holds {total:,} parameters, over the zoo's limit of {max_elements:,}; "
                               "it was not read.")
        return {k: f.get_tensor(k) for k in f.keys()}


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file's header ({} when it has none), read without its tensors; a
    corrupt file is a ZooError naming it."""
    with _open_safetensors(path) as f:
        return dict(f.metadata() or {})


def resolve_inside(path: str | os.PathLike, root: str | os.PathLike) -> Path:
    """`path` with its symbolic links resolved; a ZooError if that leads outside the folder `root`."""
    path, root = Path(path), Path(root).resolve()
    resolved = path.resolve()
    if resolved != root and not resolved.is_relative_to(root):
        raise ZooError(f"{path} is a symbolic link to {resolved}, outside {root}; the zoo does not follow links "
                       "out of a model folder. Copy the file into the folder instead.")
    return resolved


def read_small_file(path: str | os.PathLike, max_bytes: int, root: str | os.PathLike | None = None) -> bytes:
    """The bytes of a regular file of at most `max_bytes`, read without following links outside `root`
    (default: the file's folder). A missing file raises FileNotFoundError; anything else it cannot use
    (a device such as /dev/zero, a pipe, a folder, a larger file) a ZooError naming it."""
    path = Path(path)
    resolved = resolve_inside(path, path.parent if root is None else root)
    # O_NONBLOCK: opening a named pipe must not wait for a writer; fstat then sees what was opened
    fd = os.open(resolved, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ZooError(f"{path} is not a regular file (a device, a pipe or a folder); put the file itself there.")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ZooError(f"{path} is {max(info.st_size, len(data)):,} bytes, over the {max_bytes:,}-byte limit for this "
                       "file; it cannot be one the zoo wrote.")
    return data
