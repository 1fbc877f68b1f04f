"""Unpacking an uploaded .zip safely: the one set of checks every zip a user hands the project goes through (the
Train tab's data sets, train.intake; the batch classification of zoo.batch and the app's Batch tab).

Archives are treated as hostile. From the zip's directory alone, before anything inflates: symbolic links,
absolute paths, drive letters and ``..`` refuse the whole archive, as do more members than ``max_files``, more
declared bytes than ``max_total_bytes`` and a member over 1 MiB whose declared size is more than
``max_compression_ratio`` times its compressed size (a zip bomb); a member over ``max_member_bytes`` is skipped
with the reason. While inflating, the bytes are counted again (a header may lie). Hidden files and
operating-system clutter (``__MACOSX``, ``Thumbs.db``) are ignored without a word.

    limits = ArchiveLimits(max_files=2000, max_total_bytes=512 << 20, max_member_bytes=MAX_UPLOAD_BYTES)
    files, skipped = extract_zip("upload.zip", staging_folder, limits)   # {path in zip: unpacked file}, [(name, why)]
"""
from __future__ import annotations

import os
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath

from ._errors import ZooError

__all__ = ["ArchiveError", "ArchiveLimits", "IGNORED_NAMES", "RATIO_CHECKED_FROM_BYTES", "extract_members",
           "extract_zip", "is_ignored", "member_path", "plan_members", "too_large"]

RATIO_CHECKED_FROM_BYTES = 1 << 20  # smaller zip entries may compress well (a blank mask); they cannot hurt
IGNORED_NAMES = ("__MACOSX", "Thumbs.db", "desktop.ini")  # operating-system clutter in archives, never images

_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")


class ArchiveError(ZooError):
    """A zip archive refused as a whole; the message names the upload, the problem and what to do."""


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps on one archive: members, bytes once inflated (all of them, and each), and the inflation ratio."""

    max_files: int
    max_total_bytes: int
    max_member_bytes: int
    max_compression_ratio: int = 100  # a member over 1 MiB inflating more than this is a zip bomb

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ArchiveLimits.{item.name} must be a positive int, got {value!r}")


def too_large(size: int, limit: int) -> str:
    """Why a file of `size` bytes is skipped under a per-file `limit`."""
    return f"{size:,} bytes, over the per-image limit of {limit:,} bytes; downscale or re-compress it"


def member_path(name: str, upload: str) -> PurePosixPath:
    """An entry's path inside the archive; absolute paths, drive letters and '..' are refused."""
    text = name.replace("\\", "/")  # zips made on Windows may use backslashes
    parts = text.split("/")
    if text.startswith("/") or _DRIVE_LETTER.match(text) or ".." in parts or "\x00" in text:
        raise ArchiveError(f"{upload}: the entry {name!r} points outside the archive's folder (an absolute path, a "
                           "drive letter or '..'); such archives are refused. Zip the folders themselves and "
                           "upload again")
    return PurePosixPath(*[part for part in parts if part not in ("", ".")])


def is_ignored(relative: PurePosixPath) -> bool:
    """Hidden files and folders (.DS_Store, ._x) and operating-system clutter, skipped without a word."""
    return any(part.startswith(".") or part in IGNORED_NAMES for part in relative.parts)


def plan_members(archive: zipfile.ZipFile, upload: str, limits: ArchiveLimits
                 ) -> tuple[list[tuple[zipfile.ZipInfo, PurePosixPath]], list[tuple[str, str]]]:
    """The entries to unpack, from the zip's directory alone: links, paths out of the folder, too many files,
    too many bytes or a bomb's ratio refuse the whole archive (ArchiveError); a member over the byte cap is
    skipped, with the reason."""
    kept, skipped, files, declared = [], [], 0, 0
    for info in archive.infolist():
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ArchiveError(f"{upload}: the entry {info.filename!r} is a symbolic link; links are refused (they "
                               "can point outside the upload). Zip the files themselves and upload again")
        relative = member_path(info.filename, upload)
        if info.is_dir() or not relative.parts or is_ignored(relative):
            continue
        files += 1
        declared += info.file_size
        if files > limits.max_files:
            raise ArchiveError(f"{upload} holds more than {limits.max_files} files; upload at most "
                               f"{limits.max_files} images")
        if (info.file_size >= RATIO_CHECKED_FROM_BYTES
                and info.file_size > limits.max_compression_ratio * max(info.compress_size, 1)):
            raise ArchiveError(f"{upload}: the entry {info.filename!r} would inflate from {info.compress_size:,} "
                               f"to {info.file_size:,} bytes (over {limits.max_compression_ratio}x); this looks "
                               "like a zip bomb and was not unpacked. Upload the images themselves, zipped normally")
        if info.file_size > limits.max_member_bytes:
            skipped.append((info.filename, too_large(info.file_size, limits.max_member_bytes)))
            continue
        kept.append((info, relative))
    if declared > limits.max_total_bytes:
        raise ArchiveError(f"{upload} would inflate to {declared:,} bytes, over the limit of "
                           f"{limits.max_total_bytes:,}; nothing was unpacked. Upload fewer or smaller images")
    return kept, skipped


def extract_members(archive: zipfile.ZipFile, members: list[tuple[zipfile.ZipInfo, PurePosixPath]],
                    staging: Path, upload: str, limits: ArchiveLimits) -> dict[PurePosixPath, Path]:
    """Unpack the planned entries under `staging`, counting the bytes as they inflate (the header may lie)."""
    root = Path(staging).resolve()
    files: dict[PurePosixPath, Path] = {}
    total = 0
    for info, relative in members:
        target = Path(staging).joinpath(*relative.parts)
        if not target.resolve().is_relative_to(root):  # cannot happen after member_path; never trust one check
            raise ArchiveError(f"{upload}: the entry {info.filename!r} leads outside the upload; refused")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(target, "xb") as sink:
                written = 0
                while chunk := source.read(1 << 20):
                    written, total = written + len(chunk), total + len(chunk)
                    if written > min(info.file_size, limits.max_member_bytes) or total > limits.max_total_bytes:
                        raise ArchiveError(f"{upload}: the entry {info.filename!r} inflates past the "
                                           f"{info.file_size:,} bytes its header declares or past the limits; "
                                           "refused as a zip bomb")
                    sink.write(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError) as e:
            raise ArchiveError(f"{upload}: the entry {info.filename!r} cannot be unpacked ({type(e).__name__}: "
                               f"{e}); the archive is damaged, encrypted or uses an unusual compression. Zip the "
                               "files again (plain zip, no password) and upload again") from None
        files[relative] = target
    return files


def extract_zip(path: str | os.PathLike, staging: str | os.PathLike, limits: ArchiveLimits,
                upload: str | None = None) -> tuple[dict[PurePosixPath, Path], list[tuple[str, str]]]:
    """Check and unpack the zip at `path` under `staging`: ({path inside the zip: unpacked file}, [(member, why it
    was skipped)]). `upload` is the archive's name in messages (default: its file name). Refusals raise
    ArchiveError; the caller owns `staging` and removes it."""
    upload = upload or Path(path).name
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ArchiveError(f"{upload} is not a readable zip archive ({e}); zip the images again and upload the "
                           ".zip") from None
    with archive:
        members, skipped = plan_members(archive, upload, limits)
        return extract_members(archive, members, Path(staging), upload, limits), skipped
