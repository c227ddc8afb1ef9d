"""Files that readers never see half-written: write a sibling, then rename it into place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


@contextmanager
def _sibling(path: Path) -> Iterator[Path]:
    """A temporary sibling of `path` that replaces `path` when the block succeeds.

    A rename within one folder is atomic, so a crash or an error leaves the old file (or
    none) and never half of the new one; readers such as a browser or the preview never
    see a partial file either.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def replacing_text(path: Path, encoding: str = "utf-8", newline: str = "") -> Iterator[TextIO]:
    """Write text to `path` through a handle; the file appears whole or not at all."""
    with _sibling(path) as tmp, tmp.open("w", encoding=encoding, newline=newline) as handle:
        yield handle


def write_bytes(path: Path, data: bytes) -> Path:
    with _sibling(path) as tmp:
        tmp.write_bytes(data)
    return path
