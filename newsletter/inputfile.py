"""Open the files we are pointed at: regular files only, and never read past a byte cap.

An article that is a symlink to `/dev/zero` would be read until memory runs out, and a
FIFO would block a build for ever; `st_size` says nothing about either (it is 0 for both).
So a file is opened without blocking, the open descriptor (not the path, which can be
swapped in between) is checked to be a regular file, and reads stop one byte past the cap.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from newsletter.errors import UnreadableFileError

# An issue, article or snapshot is a few KB; a cap stops YAML bombs and runaway reads.
MAX_BYTES = 1_000_000


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading in binary, or UnreadableFileError saying why not.

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer; it has
    no effect on the regular files that pass the check.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        kind = _kind_at(path)  # a socket cannot even be opened (ENXIO): say what it is
        why = f"is {kind}, not a regular file; point to a file" if kind else "cannot read the file"
        raise UnreadableFileError(path, f"{why} ({exc.strerror})") from exc
    try:
        kind = _kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise UnreadableFileError(path, f"is {kind}, not a regular file; point to a file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_capped(path: Path, limit: int = MAX_BYTES) -> bytes:
    """The bytes of regular file `path`; UnreadableFileError when it holds more than `limit`."""
    with open_regular(path) as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise UnreadableFileError(path, f"cannot read the file ({exc.strerror})") from exc
    if len(data) > limit:
        raise UnreadableFileError(
            path, f"is larger than the {limit:,}-byte limit; is it the right file?"
        )
    return data


def read_text(path: Path, limit: int = MAX_BYTES) -> str:
    """`read_capped` decoded as UTF-8 (a BOM is dropped)."""
    data = read_capped(path, limit)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UnreadableFileError(
            path, f"line {line} is not UTF-8 text ({exc.reason}); save the file as UTF-8"
        ) from exc


def _kind_at(path: Path) -> str | None:
    try:
        return _kind(os.stat(path).st_mode)
    except OSError:
        return None


def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    kinds = [
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((name for test, name in kinds if test(mode)), "a special file")
