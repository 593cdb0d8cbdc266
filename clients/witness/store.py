"""The witness's own state: per log origin, the latest checkpoint it cosigned, and the evidence of
every refused, validly signed checkpoint. One SQLite file (stdlib ``sqlite3``): a witness is a
small independent process, and its state is two tables.

The check of the old size and the update must be atomic (tlog-witness: otherwise two concurrent
requests can roll the recorded size back): :meth:`WitnessStore.advance` is a compare-and-set in
one transaction, and the caller holds one lock per witness around check and update.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Evidence", "LatestCheckpoint", "WitnessStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS latest_checkpoints (
    origin TEXT PRIMARY KEY,
    tree_size INTEGER NOT NULL,
    root_hash BLOB NOT NULL,
    note BLOB NOT NULL,            -- the checkpoint note as submitted, verbatim
    cosignature TEXT NOT NULL,     -- our cosignature line on it, verbatim
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evidence (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL,
    received_at TEXT NOT NULL,
    reason TEXT NOT NULL,
    old_size INTEGER NOT NULL,
    proof BLOB NOT NULL,           -- the consistency proof lines, verbatim
    submitted_note BLOB NOT NULL,  -- the refused checkpoint, verbatim
    cosigned_note BLOB             -- the checkpoint we had cosigned, verbatim (none: first)
);
"""


@dataclass(frozen=True)
class LatestCheckpoint:
    """The latest checkpoint cosigned for an origin."""

    origin: str
    tree_size: int
    root_hash: bytes
    note: bytes
    cosignature: str


@dataclass(frozen=True)
class Evidence:
    """A refused checkpoint that the log key had signed: possible proof of misbehaviour."""

    origin: str
    received_at: str
    reason: str
    old_size: int
    proof: bytes
    submitted_note: bytes
    cosigned_note: bytes | None


class WitnessStore:
    """The state file; safe to share between the threads of one witness process."""

    def __init__(self, path: str | Path) -> None:
        self._connection = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._connection.close()

    def latest(self, origin: str) -> LatestCheckpoint | None:
        """The latest checkpoint cosigned for ``origin``, if any."""
        with self._lock:
            row = self._connection.execute(
                "SELECT tree_size, root_hash, note, cosignature FROM latest_checkpoints "
                "WHERE origin = ?",
                (origin,),
            ).fetchone()
        if row is None:
            return None
        return LatestCheckpoint(origin, int(row[0]), bytes(row[1]), bytes(row[2]), str(row[3]))

    def advance(self, old_size: int, new: LatestCheckpoint) -> bool:
        """Record ``new`` as the latest of its origin if the recorded size is still ``old_size``
        (0: nothing recorded); False, and nothing written, if another request got there first."""
        now = dt.datetime.now(dt.UTC).isoformat()
        values = (new.tree_size, new.root_hash, new.note, new.cosignature, now, new.origin)
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                row = self._connection.execute(
                    "SELECT tree_size FROM latest_checkpoints WHERE origin = ?", (new.origin,)
                ).fetchone()
                if (0 if row is None else int(row[0])) != old_size:
                    self._connection.execute("ROLLBACK")
                    return False
                self._connection.execute(
                    "INSERT INTO latest_checkpoints "
                    "(tree_size, root_hash, note, cosignature, updated_at, origin) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (origin) DO UPDATE SET "
                    "tree_size = excluded.tree_size, root_hash = excluded.root_hash, "
                    "note = excluded.note, cosignature = excluded.cosignature, "
                    "updated_at = excluded.updated_at",
                    values,
                )
                self._connection.execute("COMMIT")
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
        return True

    def record_evidence(self, evidence: Evidence) -> None:
        """Keep a refused checkpoint, the proof that failed and what we had cosigned."""
        with self._lock:
            self._connection.execute(
                "INSERT INTO evidence (origin, received_at, reason, old_size, proof, "
                "submitted_note, cosigned_note) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    evidence.origin,
                    evidence.received_at,
                    evidence.reason,
                    evidence.old_size,
                    evidence.proof,
                    evidence.submitted_note,
                    evidence.cosigned_note,
                ),
            )

    def evidence(self, origin: str) -> list[Evidence]:
        """Every piece of evidence kept for ``origin``, oldest first."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT origin, received_at, reason, old_size, proof, submitted_note, "
                "cosigned_note FROM evidence WHERE origin = ? ORDER BY id",
                (origin,),
            ).fetchall()
        return [
            Evidence(
                str(row[0]),
                str(row[1]),
                str(row[2]),
                int(row[3]),
                bytes(row[4]),
                bytes(row[5]),
                None if row[6] is None else bytes(row[6]),
            )
            for row in rows
        ]
