"""Is the database corrupt, or did a read fail? Telling a damaged file from a passing fault.

SQLite answers CORRUPT ("database disk image is malformed") both when a page on disk is damaged
and when a failed or short read handed it a wrong page: libfiu runs show the second clears with
the fault. Answering "retry" to both leaves a damaged file answering "retry" for ever, with
health SERVING. So on an error that says corruption (:func:`ledger.storage.faults.is_corruption`)
the :class:`IntegrityWatch` of the server's engine checks the file itself, in the thread that hit
the error (a read-pool or the writer thread, never the event loop), at most one *round* per
``limits.integrity_check_interval_seconds`` however many calls fail meanwhile.

A check run while the disk fails reads proves nothing: libfiu's EIO on pread makes
``PRAGMA quick_check`` raise an I/O error, report "Page N: unable to get the page. error
code=8458" (IOERR_CORRUPTFS) for a different page each time, or raise "malformed" itself; and a
confirmed corruption holds until a restart. So a round confirms only on this evidence:

1. the disk was quiet: the engine (whose ``handle_error`` sees every error) saw no I/O fault
   (:func:`ledger.storage.faults.is_io_fault`: IOERR, a full disk, a failed open) for
   ``limits.integrity_io_fault_quiet_seconds`` before the round; else it runs no check;
2. ``limits.integrity_check_confirmations`` checks in a row, each
   ``PRAGMA quick_check(limits.integrity_check_findings_max)`` on a connection opened for it (not
   one of the pool's, which may hold a wrong page in its cache), found the *same* thing, and
   none of them raised an error or named an I/O error code: a damaged page is found again, a
   read fault moves, clears or shows itself as one;
3. the disk stayed quiet while the checks ran (a fault another thread met meanwhile counts).

Anything else leaves the error as it was (``STORAGE_UNAVAILABLE``: retry) with a WARNING line
saying why, and the next corruption error after the interval may run a round again. A round that
confirms makes the error, and every later corruption error, ``STORAGE_CORRUPT``
(:func:`ledger.storage.faults.storage_corrupt`; met during COMMIT, the appender answers
``COMMIT_OUTCOME_UNKNOWN`` with ``storage_corrupt=true`` instead); a CRITICAL line says which
file, what the checks found and what to do, and the listeners are told once (the server turns
its health NOT_SERVING; the metrics show ``policy_ledger_storage_corrupt`` 1). The cost stays
bounded: one round per interval; an intact file is read once a round (the first check passes), a
failing disk not at all or until its first error, and only a file every check finds damaged is read
``integrity_check_confirmations`` times (each check stops at its first finding). Under
``serve --workers N`` each process watches its own engine, and a confirmation by the sequencer
process reaches every worker's watch through the supervisor
(:meth:`IntegrityWatch.confirmed_elsewhere`; ledger/rpc/children.py).

A confirmed corruption holds until the process restarts, even if a later read succeeds: a file
restored in place under a running server is not one the server should trust without reopening
it, and an operator who restored it restarts ``serve`` (docs/operations.md, "Storage faults").

On PostgreSQL there is no cheap check of the whole database, and none is needed: data_corrupted
and index_corrupted (XX001, XX002) are raised after the server verified a page and found it
damaged (an I/O error is a state of its own), so the error itself is each check's finding; the
quiet-disk rule still applies (PostgreSQL's own io_error or disk_full seen by the engine vetoes).
The read standby (``serve --read-database``, always PostgreSQL) has a watch of its own
(``standby=True``): its confirmation names the read standby, and the read router bypasses it
for good (:mod:`ledger.storage.read_routing`); health and ``policy_ledger_storage_corrupt`` stay
the primary's, which still answers every read.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, event
from sqlalchemy.engine import ExceptionContext

from ledger import limits
from ledger.storage.faults import is_corruption, is_io_fault, is_io_fault_code, storage_corrupt
from ledger.storage.wal import served_sqlite_file

__all__ = ["IntegrityWatch", "quick_check"]

log = logging.getLogger(__name__)

_CONFIRMED = (
    "STORAGE CORRUPT: the database %s failed its integrity check %d times in a row on a quiet "
    "disk (%s; the error was %r). Every call that reads the damaged part answers UNAVAILABLE "
    "STORAGE_CORRUPT and health is NOT_SERVING until serve restarts. Stop serve, restore the "
    "database from a backup, check the log with `policy-ledger audit verify --database URL`, "
    'then start serve again (docs/operations.md, "Storage faults and crashes").'
)
_STANDBY_CONFIRMED = (
    "STORAGE CORRUPT: the read standby %s failed its integrity check %d times in a row on a "
    "quiet disk (%s; the error was %r). Reads no longer go to it: the primary answers them "
    "(health stays SERVING) until serve restarts. Rebuild the standby from the primary (a new "
    'base backup), then restart serve (docs/operations.md, "Read standby").'
)

Listener = Callable[[str], None]
"""Told the finding (the check's first message) once, in the thread that confirmed it."""

_ERROR_CODE = re.compile(r"error code\s*=?\s*(\d+)")
"""How quick_check names the result code of a page it could not get ("Page 5: unable to get the
page. error code=8458"; a damaged page says "btreeInitPage() returns error code 11")."""


def quick_check(path: Path, findings_max: int = limits.integrity_check_findings_max) -> str | None:
    """The first finding of ``PRAGMA quick_check`` on the SQLite file at ``path`` (None: intact).

    An error that says corruption (a header so damaged the file does not open as a database) is
    itself a finding; any other error (an I/O error, a lock) proves nothing, and is raised. One
    call proves nothing either while reads fail (:class:`IntegrityWatch` asks several times)."""
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
    """Watches one engine's errors for corruption and confirms it by checks of the file.

    ``check`` is given the error and returns the finding or None (default: :func:`quick_check`
    of the engine's SQLite file, the error itself on PostgreSQL, None for an in-memory
    database); ``monotonic`` is the clock of the interval and of the quiet disk (tests pass their
    own); ``confirmations`` and ``io_quiet_seconds`` are the rule's two limits (the module doc).
    ``standby``: the engine is the read standby (``serve --read-database``), not the database
    the log is written to: its confirmation (same rule) makes reads bypass it, and its CRITICAL
    line names it and says to rebuild it (:attr:`engine_name`).
    :meth:`confirm` is what a corruption error runs; tests may call it directly.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        check: Callable[[str], str | None] | None = None,
        interval_seconds: float = limits.integrity_check_interval_seconds,
        confirmations: int = limits.integrity_check_confirmations,
        io_quiet_seconds: float = limits.integrity_io_fault_quiet_seconds,
        monotonic: Callable[[], float] = time.monotonic,
        standby: bool = False,
    ) -> None:
        if confirmations < 1:
            raise ValueError(f"confirmations must be at least 1: {confirmations} < 1")
        self._engine = engine
        self._path = served_sqlite_file(engine)
        self._check = check if check is not None else self._check_file
        self._interval = interval_seconds
        self._confirmations = confirmations
        self._io_quiet = io_quiet_seconds
        self._monotonic = monotonic
        self.standby = standby
        self.engine_name = "read standby" if standby else "database"
        """Which engine this watch watches, as its log lines name it."""
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._io_fault_at: float | None = None
        """When the engine (or a check) last met an I/O fault (a float: set from any thread)."""
        self.finding: str | None = None
        """What the checks found, once a round confirmed a corruption (None until then)."""
        self.checks = 0
        """Checks run so far (the interval keeps a burst of errors to one round)."""
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
        to raise the error as it is. An I/O fault is noted: it vetoes confirmation a while."""
        error = context.original_exception
        if is_io_fault(error):
            self.saw_io_fault()
            return None
        if not is_corruption(error):
            return None
        return storage_corrupt() if self.confirm(str(error)) else None

    def saw_io_fault(self) -> None:
        """Note that the disk just failed a read, a write, a sync or an open (the engine's
        errors are noted by the watch itself)."""
        self._io_fault_at = self._monotonic()

    def confirm(self, error: str = "") -> bool:
        """Whether the database is corrupt: a round of checks now, unless one ran less than the
        interval ago (then it was not confirmed, and stays so until the interval is over).
        ``error`` is what the caller saw."""
        with self._lock:  # a burst of failing calls waits for one round, then reads its answer
            if self.finding is not None:
                return True
            now = self._monotonic()
            if self._checked_at is not None and now - self._checked_at < self._interval:
                return False
            self._checked_at = now
            finding = self._round(error, now)
            if finding is None:
                return False
            self.finding = finding
        where = str(self._path) if self._path is not None else self._engine.url.render_as_string()
        log.critical(
            _STANDBY_CONFIRMED if self.standby else _CONFIRMED,
            where,
            self._confirmations,
            finding,
            error,
        )
        self._tell(finding)
        return True

    def _round(self, error: str, began: float) -> str | None:
        """The finding a round of checks confirms, or None (logged with the reason), by the
        module doc's rule: (1) a quiet disk before, (2) the same finding from every check, each
        on a connection of its own, (3) a quiet disk throughout."""
        # (1): a disk that just failed explains the error; checking it would prove nothing.
        if self._disk_failed_since(began):
            log.warning(
                "database reported %r while the disk was failing (an I/O error within %.0f s): "
                "an I/O problem, not proven corruption; not checked",
                error,
                self._io_quiet,
            )
            return None
        # (2): the same finding every time, or nothing is proven.
        first = self._check_once(error)
        for _ in range(self._confirmations - 1):
            if first is None:
                return None
            again = self._check_once(error)
            if again is not None and again != first:
                log.warning(
                    "database integrity checks after %r found %r, then %r: a read fault, not "
                    "a damaged page; not confirmed",
                    error,
                    first,
                    again,
                )
                return None
            first = again
        if first is None:
            return None
        # (3): a fault met meanwhile (by another thread, or between checks) vetoes too.
        if self._disk_failed_since(began):
            log.warning(
                "database integrity checks after %r found %r, but the disk failed meanwhile: "
                "an I/O problem, not proven corruption",
                error,
                first,
            )
            return None
        return first

    def _check_once(self, error: str) -> str | None:
        """One check's finding, or None (logged) if it passed, failed or could not read."""
        self.checks += 1
        try:
            finding = self._check(error)
        except Exception as failure:  # an I/O error or a lock: the check proves nothing
            if is_io_fault(failure):
                self.saw_io_fault()
            log.warning("database integrity check after %r failed: %s", error, failure)
            return None
        if finding is None:
            log.warning("database reported %r, but its integrity check passed", error)
        elif _names_io_fault(finding):
            self.saw_io_fault()
            log.warning(
                "database integrity check after %r could not read the file (%s): the disk is "
                "failing reads, an I/O problem, not proven corruption",
                error,
                finding,
            )
            return None
        return finding

    def _disk_failed_since(self, began: float) -> bool:
        """Whether an I/O fault came within the quiet period before ``began``, or after it."""
        failed_at = self._io_fault_at
        return failed_at is not None and failed_at >= began - self._io_quiet

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
            "STORAGE CORRUPT: the %s confirmed the database corrupt (%s); this process answers "
            "STORAGE_CORRUPT, and its health where it serves one is NOT_SERVING, until serve "
            "restarts (that process's own CRITICAL line says what to do)",
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


def _names_io_fault(finding: str) -> bool:
    """Whether a check's finding is a page it could not read for an I/O fault ("unable to get
    the page. error code=8458", IOERR_CORRUPTFS), not a page it read and found damaged."""
    return any(is_io_fault_code(int(code)) for code in _ERROR_CODE.findall(finding))
