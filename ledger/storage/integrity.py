"""Is the database corrupt, or did a read fail? Telling a damaged file from a passing fault.

SQLite answers CORRUPT ("database disk image is malformed") both when a page on disk is damaged
and when a failed or short read handed it a wrong page: libfiu runs show the second clears with
the fault. Answering "retry" to both leaves a damaged file answering "retry" for ever, with
health SERVING. So on an error that says corruption (:func:`ledger.storage.faults.is_corruption`)
the :class:`IntegrityWatch` of the server's engine checks the file itself:
``PRAGMA quick_check(limits.integrity_check_findings_max)`` on a connection of its own (not one
of the pool's, which may hold a wrong page in its cache), in the thread that hit the error (a
read-pool or the writer thread, never the event loop), at most once per
``limits.integrity_check_interval_seconds`` however many calls fail meanwhile. A check that
finds nothing leaves the error as it was (``STORAGE_UNAVAILABLE``: retry); one that finds damage
is *confirmed*: the error, and every later corruption error, is raised as ``STORAGE_CORRUPT``
(:func:`ledger.storage.faults.storage_corrupt`), a CRITICAL line says which file, what the check
found and what to do, and the listeners are told once (the server turns its health NOT_SERVING;
the metrics show ``policy_ledger_storage_corrupt`` 1). Under ``serve --workers N`` each process
watches its own engine, and a confirmation by the sequencer process reaches every worker's watch
through the supervisor (:meth:`IntegrityWatch.confirmed_elsewhere`; ledger/rpc/children.py).

A confirmed corruption holds until the process restarts, even if a later read succeeds: a file
restored in place under a running server is not one the server should trust without reopening
it, and an operator who restored it restarts ``serve`` (docs/operations.md, "Storage faults").

On PostgreSQL there is no cheap check of the whole database, and none is needed: data_corrupted
and index_corrupted (XX001, XX002) are raised after the server verified a page and found it
damaged (an I/O error is a state of its own), so the state is itself the confirmation.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, event
from sqlalchemy.engine import ExceptionContext

from ledger import limits
from ledger.storage.faults import is_corruption, storage_corrupt
from ledger.storage.wal import served_sqlite_file

__all__ = ["IntegrityWatch", "quick_check"]

log = logging.getLogger(__name__)

Listener = Callable[[str], None]
"""Told the finding (the check's first message) once, in the thread that confirmed it."""


def quick_check(path: Path, findings_max: int = limits.integrity_check_findings_max) -> str | None:
    """The first finding of ``PRAGMA quick_check`` on the SQLite file at ``path`` (None: intact).

    An error that says corruption (a header so damaged the file does not open as a database) is
    itself a finding; any other error (an I/O error, a lock) proves nothing, and is raised."""
    connection = sqlite3.connect(
        f"file:{path}?mode=ro",
        uri=True,
        timeout=limits.integrity_check_busy_ms / 1000,
        check_same_thread=False,
    )
    try:
        rows = connection.execute(f"PRAGMA quick_check({int(findings_max)})").fetchall()
    except sqlite3.DatabaseError as error:
        if is_corruption(error):
            return str(error)
        raise
    finally:
        connection.close()
    messages = [str(row[0]) for row in rows]
    return None if messages == ["ok"] else (messages[0] if messages else "no answer")


class IntegrityWatch:
    """Watches one engine's errors for corruption and confirms it by a check of the file.

    ``check`` is given the error and returns the finding or None (default: :func:`quick_check`
    of the engine's SQLite file, the error itself on PostgreSQL, None for an in-memory
    database); ``monotonic`` is the clock of the interval (tests pass their own).
    :meth:`confirm` is what an error runs; tests may call it directly.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        check: Callable[[str], str | None] | None = None,
        interval_seconds: float = limits.integrity_check_interval_seconds,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._path = served_sqlite_file(engine)
        self._check = check if check is not None else self._check_file
        self._interval = interval_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self.finding: str | None = None
        """What the check found, once it confirmed a corruption (None until then)."""
        self.checks = 0
        """Checks run so far (the interval keeps a burst of errors to one)."""
        self.listeners: list[Listener] = []
        event.listen(engine, "handle_error", self._on_error)

    @property
    def corrupt(self) -> bool:
        return self.finding is not None

    def close(self) -> None:
        """Stop watching the engine's errors."""
        event.remove(self._engine, "handle_error", self._on_error)

    def _on_error(self, context: ExceptionContext) -> BaseException | None:
        """SQLAlchemy's handle_error hook: the error to raise instead (STORAGE_CORRUPT), or None
        to raise the error as it is."""
        error = context.original_exception
        if not is_corruption(error):
            return None
        return storage_corrupt() if self.confirm(str(error)) else None

    def confirm(self, error: str = "") -> bool:
        """Whether the database is corrupt: checked now, unless a check ran less than the
        interval ago (then the last check's answer stands). ``error`` is what the caller saw."""
        with self._lock:  # a burst of failing calls waits for one check, then reads its answer
            if self.finding is not None:
                return True
            now = self._monotonic()
            if self._checked_at is not None and now - self._checked_at < self._interval:
                return False
            self._checked_at = now
            self.checks += 1
            try:
                finding = self._check(error)
            except Exception as failure:  # an I/O error or a lock: the check proves nothing
                log.warning("database integrity check after %r failed: %s", error, failure)
                return False
            if finding is None:
                log.warning("database reported %r, but its integrity check passed", error)
                return False
            self.finding = finding
        where = str(self._path) if self._path is not None else self._engine.url.render_as_string()
        log.critical(
            "STORAGE CORRUPT: the database %s failed its integrity check (%s; the error was %r). "
            "Every call that reads the damaged part answers UNAVAILABLE STORAGE_CORRUPT and "
            "health is NOT_SERVING until serve restarts. Stop serve, restore the database from "
            "a backup, check the log with `policy-ledger audit verify --database URL`, then "
            'start serve again (docs/operations.md, "Storage faults and crashes").',
            where,
            finding,
            error,
        )
        self._tell(finding)
        return True

    def confirmed_elsewhere(self, finding: str, by: str) -> bool:
        """Take a confirmation another process made of the same database (``by`` says which:
        ``serve --workers N``'s sequencer process, whose writes found it): as if this watch's
        own check had found ``finding``, so the listeners are told (health NOT_SERVING, the
        gauge 1) and every later corruption error is STORAGE_CORRUPT, until a restart. Whether
        it was news (False once this watch had confirmed, by itself or so)."""
        with self._lock:
            if self.finding is not None:
                return False
            self.finding = finding
        log.error(
            "STORAGE CORRUPT: the %s confirmed the database corrupt (%s); health is "
            "NOT_SERVING until serve restarts (its own CRITICAL line says what to do)",
            by,
            finding,
        )
        self._tell(finding)
        return True

    def _tell(self, finding: str) -> None:
        """Tell every listener; one that fails is logged and the others are still told (the
        caller's answer, STORAGE_CORRUPT, must not turn into the listener's error)."""
        for listener in self.listeners:
            try:
                listener(finding)
            except Exception:
                log.exception("a listener of the database's corruption failed")

    def _check_file(self, error: str) -> str | None:
        if self._path is not None:
            return quick_check(self._path)
        if self._engine.dialect.name == "postgresql":
            # The server verified the page before it raised XX001/XX002 (the module doc).
            return error
        return None  # an in-memory database: nothing on disk to check
