"""Output files appear whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.atomic import replacing_text, write_bytes


def test_a_failed_write_leaves_the_old_file_and_no_debris(tmp_path: Path) -> None:
    target = tmp_path / "out" / "weekly.csv"
    write_bytes(target, b"old contents\n")

    def export_that_dies() -> None:
        with replacing_text(target) as handle:
            handle.write("half of the new")
            raise RuntimeError("the database went away mid-export")

    with pytest.raises(RuntimeError):
        export_that_dies()
    assert target.read_bytes() == b"old contents\n"
    assert [p.name for p in target.parent.iterdir()] == ["weekly.csv"]


def test_a_finished_write_replaces_the_file(tmp_path: Path) -> None:
    target = tmp_path / "weekly.csv"
    write_bytes(target, b"old\n")
    with replacing_text(target, encoding="utf-8-sig") as handle:
        handle.write("email\nana@example.org\n")
    assert target.read_bytes() == b"\xef\xbb\xbfemail\nana@example.org\n"
