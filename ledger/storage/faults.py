"""Storage faults: which errors mean "the disk or the database failed", and what each one tells a
client about its submission.

An I/O error, a full disk or a lost database connection is an operating error, not a bug: the
client is told UNAVAILABLE with a retry hint. What the answer says about a write depends on when
the fault came:

- before COMMIT was sent: the transaction rolled back, nothing was written
  (``STORAGE_UNAVAILABLE``);
- during COMMIT: the database may have made the batch durable or not, and we cannot tell
  (``COMMIT_OUTCOME_UNKNOWN``). SQLite can fail an fsync of a WAL frame that a later open still
  replays; PostgreSQL can lose the connection after it committed. Never answer "not committed";
- after COMMIT, while building receipts: the batch is durable, only its receipt is missing
  (``RECEIPT_UNAVAILABLE``; new entries' receipts are built in memory, so this is a duplicate's
  first receipt, read from the store, or a node the batch did not hold).

In every case resubmitting the same event is safe: an event id already in the log answers its
first receipt (see :mod:`ledger.storage.append`, step (4)).

A corruption error (:func:`is_corruption`) is a fault of its own kind: a failed or short read
makes SQLite see a malformed page and clears with the fault, but a file that *is* damaged stays
so. :mod:`ledger.storage.integrity` tells the two apart with checks of the file; a confirmed
corruption answers ``STORAGE_CORRUPT`` (:func:`storage_corrupt`) instead of "retry", except
during COMMIT: there the outcome is still unknown, so the answer stays ``COMMIT_OUTCOME_UNKNOWN``
with metadata ``storage_corrupt=true`` (:func:`commit_outcome_unknown`). An I/O fault
(:func:`is_io_fault`: the disk failed a read or a write) is what makes a sound file look
malformed, so one seen near a corruption error keeps it from being confirmed.
"""

from __future__ import annotations

import sqlite3

import psycopg
from sqlalchemy import exc

from ledger.errors import Unavailable

__all__ = [
    "STORAGE_CORRUPT_METADATA",
    "commit_outcome_unknown",
    "is_corruption",
    "is_io_fault",
    "is_io_fault_code",
    "is_storage_corrupt",
    "is_storage_fault",
    "receipt_unavailable",
    "storage_corrupt",
    "storage_unavailable",
]

STORAGE_CORRUPT_METADATA = "storage_corrupt"
"""The ErrorInfo metadata key of a COMMIT_OUTCOME_UNKNOWN whose fault was a confirmed
corruption (value ``true``): the outcome is unknown *and* this server's storage is corrupt."""

_SQLITE_FAULT_CODES = frozenset({5, 6, 10, 11, 13, 14, 15, 26})
"""Primary SQLite result codes that come from the file system, not from the statement: BUSY,
LOCKED, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB. CORRUPT is here because a failed or
short read makes SQLite see a malformed page (libfiu runs show it clears with the fault); a
database that stays corrupt is told apart by :mod:`ledger.storage.integrity`."""
_SQLITE_CORRUPTION_CODES = frozenset({11, 26})
"""CORRUPT and NOTADB: the file's content is wrong (or was read wrong)."""
_SQLITE_CORRUPTION_MESSAGES = ("disk image is malformed", "file is not a database")
"""The same by message, for errors raised without a result code."""
_SQLITE_IO_FAULT_CODES = frozenset({10, 13, 14})
"""IOERR, FULL and CANTOPEN: the disk failed a read, a write, a sync or an open. Not BUSY or
LOCKED (another connection holds the file, the disk is fine), not CORRUPT or NOTADB (what an I/O
fault can *look like*, the question :mod:`ledger.storage.integrity` answers)."""
_SQLITE_IO_FAULT_MESSAGES = ("disk i/o error", "database or disk is full", "unable to open")
"""The same by message, for errors raised without a result code."""
_POSTGRES_IO_FAULT_STATES = frozenset({"58000", "58030", "58P01", "53100"})
"""PostgreSQL's system_error, io_error, undefined_file and disk_full: its disk failed."""
POSTGRES_CORRUPTION_STATES = frozenset({"XX001", "XX002"})
"""PostgreSQL's data_corrupted and index_corrupted: the server verified a page and found it
damaged (an I/O error is 58030 instead), so the state is itself the finding."""
_SQLITE_FAULT_MESSAGES = (
    "disk i/o error",
    "database or disk is full",
    "unable to open",
    "disk image is malformed",
)
"""The same faults by message, for errors raised without a result code."""


def is_storage_fault(error: BaseException) -> bool:
    """Whether ``error`` is the disk or the database failing (retry later), not a bug."""
    if isinstance(error, exc.DBAPIError):
        return (
            error.connection_invalidated
            or isinstance(error, (exc.OperationalError, exc.InterfaceError))
            or (error.orig is not None and is_storage_fault(error.orig))
        )
    if isinstance(
        error,
        (exc.DisconnectionError, OSError, sqlite3.OperationalError, psycopg.OperationalError),
    ):
        return True
    if isinstance(error, sqlite3.DatabaseError):
        code = getattr(error, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in _SQLITE_FAULT_CODES
        message = str(error).lower()
        return any(fault in message for fault in _SQLITE_FAULT_MESSAGES)
    return _is_postgres_corruption(error)


def is_corruption(error: BaseException) -> bool:
    """Whether ``error`` says the database's content is damaged (SQLite CORRUPT or NOTADB,
    PostgreSQL data_corrupted or index_corrupted): a storage fault that may or may not last."""
    if isinstance(error, exc.DBAPIError):
        return error.orig is not None and is_corruption(error.orig)
    if isinstance(error, sqlite3.DatabaseError):
        code = getattr(error, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in _SQLITE_CORRUPTION_CODES
        message = str(error).lower()
        return any(corrupt in message for corrupt in _SQLITE_CORRUPTION_MESSAGES)
    return _is_postgres_corruption(error)


def is_io_fault(error: BaseException) -> bool:
    """Whether ``error`` is the disk failing a read, a write, a sync or an open (SQLite IOERR,
    FULL, CANTOPEN; an OSError; PostgreSQL's class 58 or disk_full): a storage fault that says
    nothing about the database's content, but while it lasts reads may come back wrong."""
    if isinstance(error, exc.DBAPIError):
        return error.orig is not None and is_io_fault(error.orig)
    if isinstance(error, OSError):
        return True
    if isinstance(error, sqlite3.DatabaseError):
        code = getattr(error, "sqlite_errorcode", None)
        if code is not None:
            return is_io_fault_code(code)
        message = str(error).lower()
        return any(fault in message for fault in _SQLITE_IO_FAULT_MESSAGES)
    return isinstance(error, psycopg.Error) and error.sqlstate in _POSTGRES_IO_FAULT_STATES


def is_io_fault_code(code: int) -> bool:
    """Whether the SQLite result code ``code`` (primary or extended, e.g. 8458
    IOERR_CORRUPTFS) is an I/O fault."""
    return code & 0xFF in _SQLITE_IO_FAULT_CODES


def _is_postgres_corruption(error: BaseException) -> bool:
    return isinstance(error, psycopg.Error) and error.sqlstate in POSTGRES_CORRUPTION_STATES


def storage_unavailable() -> Unavailable:
    """A fault before anything was committed: nothing was written."""
    return Unavailable(
        "storage is unavailable (an I/O error, a full disk or a lost database connection); "
        "nothing was written; retry",
        reason="STORAGE_UNAVAILABLE",
    )


def storage_corrupt() -> Unavailable:
    """A corruption the check of the file confirmed: retrying here will not help.

    Still UNAVAILABLE (another instance, or a restored database, may answer), never INTERNAL;
    the message makes no claim about a submission beyond what is always true."""
    return Unavailable(
        "storage is corrupt: the database failed an integrity check and an operator must "
        "restore it; retrying on this server will not succeed until then; resubmitting the "
        "same event later, or to another instance of the log, is safe",
        reason="STORAGE_CORRUPT",
    )


def commit_outcome_unknown(error: BaseException | None = None) -> Unavailable:
    """A fault during COMMIT (``error``): the batch may or may not be in the log.

    Still ``COMMIT_OUTCOME_UNKNOWN`` when the fault is a confirmed corruption
    (:func:`is_storage_corrupt`): what a client must act on is that its event may be in the log
    (a client that reads STORAGE_CORRUPT as "not written" would be wrong), so the reason stays,
    and metadata ``storage_corrupt=true`` with the message say the rest (docs/operations.md)."""
    if error is not None and is_storage_corrupt(error):
        return Unavailable(
            "storage failed while committing: the event may or may not be in the log; "
            "storage is corrupt: the database failed an integrity check and an operator must "
            "restore it; retrying on this server will not succeed until then; resubmitting the "
            "same event later, or to another instance of the log, is safe (it answers the "
            "first receipt if it was committed)",
            reason="COMMIT_OUTCOME_UNKNOWN",
            metadata={STORAGE_CORRUPT_METADATA: "true"},
        )
    return Unavailable(
        "storage failed while committing: the event may or may not be in the log; "
        "resubmitting the same event is safe (it answers the first receipt if it was committed)",
        reason="COMMIT_OUTCOME_UNKNOWN",
    )


def is_storage_corrupt(error: BaseException) -> bool:
    """Whether ``error`` is a confirmed corruption (:func:`storage_corrupt`, raised by
    :class:`ledger.storage.integrity.IntegrityWatch` in place of the database's error)."""
    return isinstance(error, Unavailable) and error.details.reason == "STORAGE_CORRUPT"


def receipt_unavailable() -> Unavailable:
    """A fault after COMMIT: the event is in the log, its receipt could not be read."""
    return Unavailable(
        "the event was committed but its receipt could not be read; "
        "resubmit the same event to get its receipt",
        reason="RECEIPT_UNAVAILABLE",
    )
