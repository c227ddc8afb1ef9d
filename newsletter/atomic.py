"""Files that readers never see half-written: write a sibling, then rename it into place.

Files are private by default (0600, and the folders we create for them 0700): build
output and the outbox hold subscriber addresses, exports hold the whole list. Content
meant to be shared through git (rate snapshots) passes ``private=False`` and gets the
usual umask-governed modes.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, TextIO

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def make_dirs(directory: Path, private: bool = True) -> None:
    """`directory` and any missing parents; the ones created here are 0700 when private.

    (`Path.mkdir(mode, parents=True)` gives the mode to the last folder only.)
    """
    missing = []
    while not directory.exists():
        missing.append(directory)
        if directory.parent == directory:
            break
        directory = directory.parent
    for folder in reversed(missing):
        folder.mkdir(mode=PRIVATE_DIR if private else 0o777, exist_ok=True)


@contextmanager
def _sibling(path: Path, private: bool) -> Iterator[BinaryIO]:
    """A handle on a temporary sibling of `path` that replaces `path` when the block succeeds.

    A rename within one folder is atomic, so a crash or an error leaves the old file (or
    none) and never half of the new one; readers such as a browser or the preview never
    see a partial file either. The sibling is created fresh (O_EXCL, never through a
    symlink) with its final mode, so the content is never readable by others, not even
    for a moment.
    """
    make_dirs(path.parent, private)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)  # debris of a crash, possibly with a looser mode
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    handle = os.fdopen(os.open(tmp, flags, PRIVATE_FILE if private else 0o666), "wb")
    try:
        with handle:
            if private:
                os.fchmod(handle.fileno(), PRIVATE_FILE)  # whatever the umask
            yield handle
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def replacing_text(
    path: Path, encoding: str = "utf-8", newline: str = "", private: bool = True
) -> Iterator[TextIO]:
    """Write text to `path` through a handle; the file appears whole or not at all."""
    with _sibling(path, private) as raw, _text(raw, encoding, newline) as handle:
        yield handle


@contextmanager
def _text(raw: BinaryIO, encoding: str, newline: str) -> Iterator[TextIO]:
    handle = io.TextIOWrapper(raw, encoding=encoding, newline=newline)
    try:
        yield handle
    finally:
        handle.flush()
        handle.detach()  # the binary handle is closed by _sibling


def write_bytes(path: Path, data: bytes, private: bool = True) -> Path:
    with _sibling(path, private) as handle:
        handle.write(data)
    return path
