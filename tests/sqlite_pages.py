"""Damage a SQLite file on disk, as a failing disk or a stray write would, and put it back.

Used by the corruption tests (tests/integration/test_storage_corruption.py,
tests/e2e/test_workers.py): the root page of a table or index is overwritten in the file, with
the WAL copied in first so that the page on disk is the one SQLite reads.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["damage_root_page", "restore_root_page"]

_GARBAGE = 0xA5


def _root_page(path: Path, name: str, *, checkpoint: bool) -> tuple[int, int]:
    """(offset, size) of the root page of the table or index ``name``; the WAL copied into the
    file first when ``checkpoint``."""
    connection = sqlite3.connect(path)
    try:
        if checkpoint:
            busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            assert busy == 0, "a reader kept the WAL from being copied into the file"
        (page_size,) = connection.execute("PRAGMA page_size").fetchone()
        (root,) = connection.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)
        ).fetchone()
    finally:
        connection.close()
    return (root - 1) * page_size, page_size


def damage_root_page(path: Path, name: str) -> bytes:
    """Overwrite the root page of the table or index ``name`` with garbage; its bytes as they
    were (for :func:`restore_root_page`)."""
    offset, size = _root_page(path, name, checkpoint=True)
    with path.open("r+b") as handle:
        handle.seek(offset)
        original = handle.read(size)
        handle.seek(offset)
        handle.write(bytes([_GARBAGE]) * size)
    return original


def restore_root_page(path: Path, name: str, original: bytes) -> None:
    """Put back the page :func:`damage_root_page` overwrote (an operator's restore)."""
    offset, _ = _root_page(path, name, checkpoint=False)
    with path.open("r+b") as handle:
        handle.seek(offset)
        handle.write(original)
