"""Reading a ledger's SQLite file directly (stdlib ``sqlite3``), for an offline audit.

An auditor holding a copy of the database can audit it without running (or trusting) the
server: entries, every stored checkpoint and the key registry are read straight from the file.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from clients.offline.audit import AuditItem, StoredCopies
from clients.offline.merkle import VerificationFailure

__all__ = ["SqliteLedger"]


def _instant(micros: int | None) -> dt.datetime | None:
    if micros is None:
        return None
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=int(micros))


class SqliteLedger:
    """A ledger database file, opened read-only."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise VerificationFailure(f"no database file at {path}")
        self.path = path
        try:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as error:
            raise VerificationFailure(
                f"{path} is not a readable SQLite database: {error}"
            ) from None

    def close(self) -> None:
        """Close the file."""
        self._db.close()

    def _query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as error:
            raise VerificationFailure(f"the database cannot be read: {error}") from None

    def checkpoint_rows(self) -> list[tuple[int, bytes, bytes]]:
        """(tree size, root hash, note) of every stored checkpoint, by size: read from the table
        itself (by rowid, not through an index), so the stored copies can be checked against
        the signed note."""
        rows = self._query(
            "SELECT tree_size, root_hash, note_bytes FROM checkpoints ORDER BY rowid"
        )
        cosignatures = self._cosignature_lines()
        return sorted(
            (int(size), bytes(root), bytes(note) + cosignatures.get(int(size), b""))
            for size, root, note in rows
        )

    def _cosignature_lines(self) -> dict[int, bytes]:
        """Witness cosignature lines per tree size, as the server appends them when it serves a
        checkpoint (docs/witness.md); none in a file older than the table."""
        if not self._query(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'checkpoint_cosignatures'"
        ):
            return {}
        lines: dict[int, bytes] = {}
        for size, line in self._query(
            "SELECT tree_size, signature_line FROM checkpoint_cosignatures "
            "ORDER BY tree_size, witness_name, key_id"
        ):
            lines[int(size)] = lines.get(int(size), b"") + bytes(line)
        return lines

    def entries(self, tree_size: int, page: int = 1000) -> StoredEntries:
        """(index, entry bytes, stored copies) of the first ``tree_size`` entries, in stored
        order (an iterable that the parallel audit's workers can also read by range, each from
        the file itself: :mod:`clients.offline.audit_ranges`)."""
        return StoredEntries(
            self.path, tree_size, lambda: self._entries(tree_size, page), self._key_event_hints
        )

    def _key_event_hints(self) -> set[int]:
        """The positions the file's key table says registered or revoked a key (a hint for the
        parallel audit, which checks it: the auditor learns keys from the entries alone)."""
        if not self._query(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'insurer_keys'"
        ):
            return set()
        rows = self._query(
            "SELECT leaf_index FROM insurer_keys UNION "
            "SELECT revoked_leaf_index FROM insurer_keys WHERE revoked_leaf_index IS NOT NULL"
        )
        return {int(position) for (position,) in rows if isinstance(position, int)}

    def _entries(self, tree_size: int, page: int) -> Iterator[AuditItem]:
        """The rows of :meth:`entries`.

        Read from the table itself (by rowid, no index: an index holds its own copy of the
        columns it covers, which could hide a damaged row). The stored copies (leaf hash,
        payload digest, insurer and event id) go with each entry, and the audit checks them
        against the entry bytes (in its worker processes).
        """
        last_rowid = 0
        yielded = 0
        while yielded < tree_size:
            rows = self._query(
                "SELECT rowid, leaf_index, entry_bytes, leaf_hash, payload_sha256, insurer_id, "
                "event_id FROM log_entries WHERE rowid > ? ORDER BY rowid LIMIT ?",
                last_rowid,
                page,
            )
            if not rows:
                return
            for rowid, index, data, stored_leaf, digest, insurer_id, event_id in rows:
                copies = StoredCopies(bytes(stored_leaf), bytes(digest), insurer_id, event_id)
                yield int(index), bytes(data), copies
                yielded += 1
                last_rowid = int(rowid)
                if yielded >= tree_size:
                    return


class StoredEntries:
    """The first ``tree_size`` entries of a database file: iterable in stored order, and
    readable by range (``path``, ``tree_size``, ``key_event_hints``) by the parallel audit."""

    def __init__(
        self,
        path: Path,
        tree_size: int,
        rows: Callable[[], Iterator[AuditItem]],
        hints: Callable[[], set[int]],
    ) -> None:
        self.path = path
        self.tree_size = tree_size
        self._rows = rows
        self._hints = hints

    def __iter__(self) -> Iterator[AuditItem]:
        return self._rows()

    def key_event_hints(self) -> set[int]:
        """Positions that may hold key events (from the file's key table; checked)."""
        return self._hints()
