"""SQLite's write-ahead log, checkpointed off the commit path (docs/operations.md, "SQLite's WAL").

A commit in WAL mode appends its pages to the ``-wal`` file and fsyncs it (``synchronous=FULL``);
a *checkpoint* copies them into the database file later. SQLite's automatic checkpoint runs inside
whichever commit takes the WAL past 1,000 pages, so that commit (a sequencer batch, an access
record, a saga write) also pays the copy and the database file's fsync: in process it doubled the
sequencer's commit p99 (30 ms against 15, docs/benchmarks.md). The server's connections turn it
off (``create_ledger_engine(..., auto_checkpoint=False)``) and the process that writes the log
runs a :class:`WalCheckpointer` on a thread of its own:

* after each of the sequencer's commits (:meth:`WalCheckpointer.notify`), and at least every
  ``limits.wal_check_interval_seconds`` (other processes write too), it reads how many pages the
  WAL holds and how many are copied from the wal-index header in the ``-shm`` file (a 136-byte
  read, :func:`read_wal_state`);
* past ``limits.wal_checkpoint_pages`` not yet copied it runs a PASSIVE checkpoint, which never
  waits for readers or writers: it copies what no reader still needs;
* SQLite starts the WAL again from its beginning only when a write transaction begins with every
  page copied, which a checkpoint on another thread, a batch or two behind the sequencer, never
  leaves. So once the WAL holds ``limits.wal_restart_pages``, the next write of this process
  copies that tail just before its ``BEGIN IMMEDIATE``
  (:func:`ledger.storage.db.write_begin_hooks`): a few milliseconds on the commit path once every
  10,000 pages, where SQLite's own checkpoint copied everything every 1,000;
* a reader holding an old snapshot keeps the WAL from starting again, and it then grows with
  every commit; past ``limits.wal_pages_max`` pages the checkpointer escalates to a TRUNCATE
  checkpoint, run before the next write (or on its thread if none comes by its next round),
  which holds the write lock while it waits (at most ``limits.wal_truncate_wait_ms_max``) for
  readers, copies everything and empties the file. One a reader kept from finishing is logged,
  counted, and tried again no sooner than ``limits.wal_truncate_retry_seconds`` later.

Durability does not change. A transaction is durable once its frames are in the WAL and the WAL
is fsynced, which the commit itself does (``synchronous=FULL``) whoever checkpoints and when. A
checkpoint fsyncs the WAL before copying, copies committed frames only, fsyncs the database file
before it records how far it got, and never resets or truncates the WAL before every frame is
in the fsynced database file: a crash (or SIGKILL) at any point of it leaves each committed
frame in the WAL or in the database file, and the next connection's recovery replays the WAL's
valid frames. Killing a process mid-checkpoint loses nothing (tests/durability/test_wal.py).

Tools keep SQLite's automatic checkpoint (a one-shot command writes alone); only one checkpointer
runs per served file: in the single process of ``serve --workers 0``, or in the sequencer process
of ``serve --workers N`` (its workers' connections have it off too, and write into the same WAL).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Protocol

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from ledger import limits
from ledger.storage.db import write_begin_hooks

__all__ = [
    "CheckpointMode",
    "CheckpointObserver",
    "CheckpointReport",
    "WalCheckpointer",
    "WalState",
    "read_wal_state",
    "served_sqlite_file",
]

log = logging.getLogger(__name__)

CheckpointMode = Literal["passive", "truncate"]

_WAL_INDEX_VERSION: Final = 3007000
"""The wal-index format every SQLite since 3.7.0 writes (https://www.sqlite.org/walformat.html,
"The WAL-Index Header"): two copies of a 48-byte header, then the checkpoint information."""
_WAL_INDEX_BYTES: Final = 136
_HEADER_BYTES: Final = 48
_MAX_FRAME_OFFSET: Final = 16
"""``mxFrame``: the last valid frame of the WAL (its pages since the last reset)."""
_BACKFILL_OFFSET: Final = 96
"""``nBackfill``: frames already copied into the database file."""


@dataclass(frozen=True)
class WalState:
    """What the WAL holds, in pages (frames): every page written since its last reset, and how
    many of those a checkpoint has copied into the database file."""

    pages: int
    checkpointed: int

    @property
    def pending(self) -> int:
        """Pages only the WAL holds (a checkpoint would copy them)."""
        return self.pages - self.checkpointed


@dataclass(frozen=True)
class CheckpointReport:
    """One checkpoint: its mode, whether it copied every page (``complete``; a reader or another
    checkpoint can hold some back), the WAL after it, and how long it took."""

    mode: CheckpointMode
    complete: bool
    wal: WalState
    seconds: float


class CheckpointObserver(Protocol):
    """Told what the checkpointer sees and does (the metrics, ``ledger.metrics``); called on the
    checkpointer's thread."""

    def wal_observed(self, state: WalState) -> None: ...

    def wal_checkpointed(self, report: CheckpointReport) -> None: ...


def read_wal_state(database: Path) -> WalState | None:
    """The WAL's pages and copied pages, from the wal-index header of ``database``'s ``-shm``
    file; None when there is none (or it cannot be read), it is not initialized, of another
    format, or was read while a commit rewrote it (its two copies differ). Read without a lock:
    the figure only decides whether to checkpoint, and the checkpoint's own answer is exact."""
    try:
        descriptor = os.open(f"{database}-shm", os.O_RDONLY)
    except OSError:  # none yet, or unreadable: the checkpoint's own answer will tell
        return None
    try:
        header = os.pread(descriptor, _WAL_INDEX_BYTES, 0)
    except OSError:
        return None
    finally:
        os.close(descriptor)
    if len(header) < _WAL_INDEX_BYTES or header[:_HEADER_BYTES] != header[_HEADER_BYTES:96]:
        return None
    (version,) = struct.unpack_from("=I", header, 0)
    initialized = header[12]
    if version != _WAL_INDEX_VERSION or not initialized:
        return None
    (pages,) = struct.unpack_from("=I", header, _MAX_FRAME_OFFSET)
    (checkpointed,) = struct.unpack_from("=I", header, _BACKFILL_OFFSET)
    return WalState(pages, min(checkpointed, pages))


def served_sqlite_file(engine: Engine) -> Path | None:
    """The database file of a SQLite engine; None for another database or an in-memory one."""
    url = make_url(str(engine.url))
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


class WalCheckpointer:
    """Checkpoints one SQLite file's WAL on a thread of its own (see the module doc).

    :meth:`check` does one round (the thread calls it; tests call it directly); :meth:`start`
    and :meth:`stop` run and end the thread, :meth:`stop` with a final checkpoint.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        observer: CheckpointObserver | None = None,
        checkpoint_pages: int = limits.wal_checkpoint_pages,
        restart_pages: int = limits.wal_restart_pages,
        pages_max: int = limits.wal_pages_max,
        truncate_wait_ms: int = limits.wal_truncate_wait_ms_max,
        truncate_retry_seconds: float = limits.wal_truncate_retry_seconds,
        check_interval_seconds: float = limits.wal_check_interval_seconds,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``engine``: a SQLite engine on a file (``create_ledger_engine``). ``monotonic``: the
        seconds clock the TRUNCATE retry delay is counted on (a test's own)."""
        database = served_sqlite_file(engine)
        if database is None:
            raise ValueError(f"{engine.url!r}: a checkpointer needs a SQLite database file")
        if not 1 <= checkpoint_pages <= restart_pages <= pages_max:
            raise ValueError(
                "want 1 <= checkpoint_pages <= restart_pages <= pages_max: "
                f"{checkpoint_pages}, {restart_pages}, {pages_max}"
            )
        self.database = database
        self._engine = engine
        self._observer = observer
        self._checkpoint_pages = checkpoint_pages
        self._restart_pages = restart_pages
        self._pages_max = pages_max
        self._truncate_wait_ms = truncate_wait_ms
        self._truncate_retry_seconds = truncate_retry_seconds
        self._check_interval_seconds = check_interval_seconds
        self._monotonic = monotonic
        self._truncate_next = float("-inf")
        self._armed: CheckpointMode | None = None
        """The checkpoint the next write of this process runs before its BEGIN."""
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one checkpoint at a time on the one connection
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.checked = threading.Event()
        """Set after each round of the thread (tests wait on it, never on a clock)."""
        write_begin_hooks(engine).append(self._before_write)

    def notify(self) -> None:
        """A commit happened (called on the sequencer's loop): wake the thread if the WAL may
        want a checkpoint. One 136-byte read of the wal-index, cheaper than waking a thread
        after every commit."""
        state = read_wal_state(self.database)
        if (
            state is None
            or state.pending >= self._checkpoint_pages
            or state.pages >= self._pages_max
        ):
            self._wake.set()

    def start(self) -> None:
        """Start the thread."""
        if self._thread is not None:
            raise RuntimeError("the checkpointer is started already")
        self._thread = threading.Thread(target=self._run, name="wal-checkpointer", daemon=True)
        self._thread.start()

    def stop(self) -> CheckpointReport | None:
        """End the thread, then checkpoint what is left (TRUNCATE, waiting at most
        ``truncate_wait_ms`` for readers: the sequencer has stopped writing) and close the
        connection. Returns that last checkpoint's report (None if it failed: logged)."""
        self._stopping = True
        self._wake.set()
        hooks = write_begin_hooks(self._engine)
        if self._before_write in hooks:
            hooks.remove(self._before_write)
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            final = self.checkpoint("truncate")
        except sqlite3.Error:
            log.exception("the final WAL checkpoint of %s failed", self.database)
            final = None
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
        return final

    def check(self) -> list[CheckpointReport]:
        """One round (the thread's; tests call it directly). Returns the checkpoints it ran.

        1. Read the WAL's state (no wal-index to read: a PASSIVE checkpoint's answer is it).
        2. Past ``checkpoint_pages`` not yet copied: a PASSIVE checkpoint, here.
        3. Past ``pages_max`` in the WAL (and the last blocked TRUNCATE ``truncate_retry_seconds``
           old): a TRUNCATE checkpoint, left to the next write of this process (before its
           BEGIN, so the writer it waits for is not this process's sequencer); run here if no
           write took it by the next round.
        4. Else past ``restart_pages`` in the WAL, after a PASSIVE checkpoint here: the next
           write copies the tail, so that SQLite starts the WAL again (see :meth:`_before_write`).
        """
        reports: list[CheckpointReport] = []
        state = read_wal_state(self.database)
        if state is None:
            reports.append(self.checkpoint("passive"))  # (1)
            state = reports[-1].wal
        elif self._observer is not None:
            self._observer.wal_observed(state)
        if not reports and state.pending >= self._checkpoint_pages:
            reports.append(self.checkpoint("passive"))  # (2)
            state = reports[-1].wal
        if state.pages >= self._pages_max and self._monotonic() >= self._truncate_next:
            if self._armed == "truncate":  # (3): no write took it
                self._armed = None
                reports.append(self.checkpoint("truncate"))
            else:
                log.warning(
                    "the WAL of %s holds %d pages (more than %d): a reader kept it from "
                    "starting again, or it was not checkpointed; a TRUNCATE checkpoint follows "
                    "(it may hold the writer %d ms)",
                    self.database,
                    state.pages,
                    self._pages_max,
                    self._truncate_wait_ms,
                )
                self._armed = "truncate"
        elif reports and state.pages >= self._restart_pages:
            self._armed = "passive"  # (4)
        return reports

    def checkpoint(self, mode: CheckpointMode) -> CheckpointReport:
        """Run one checkpoint now, on the checkpointer's own connection."""
        with self._lock:
            report = self._run_checkpoint(mode)
        self._reported(report)
        return report

    def _run_checkpoint(self, mode: CheckpointMode) -> CheckpointReport:
        """One checkpoint on the checkpointer's connection (the caller holds the lock)."""
        connection = self._connect()
        started = time.perf_counter()
        # fetchall: a statement left unfinished would keep a read transaction open.
        (row,) = connection.execute(f"PRAGMA wal_checkpoint({mode.upper()})").fetchall()
        seconds = time.perf_counter() - started
        busy, pages, checkpointed = (int(value) for value in row)
        pages, checkpointed = max(pages, 0), max(checkpointed, 0)  # -1, -1: not in WAL mode
        return CheckpointReport(
            mode, not busy and checkpointed == pages, WalState(pages, checkpointed), seconds
        )

    def _reported(self, report: CheckpointReport) -> None:
        if report.mode == "truncate":
            self._truncated(report)
        if self._observer is not None:
            self._observer.wal_checkpointed(report)
            self._observer.wal_observed(report.wal)

    def _before_write(self) -> None:
        """Called just before each write transaction of this process (``BEGIN IMMEDIATE``, on
        the writer's thread): runs the checkpoint :meth:`check` left to it, if any.

        SQLite starts the WAL again from its beginning only when a write transaction begins
        with every page copied; with the sequencer writing batch after batch, a checkpoint on
        the checkpointer's thread ends a batch or two behind, and the WAL would only grow. So
        once it holds ``restart_pages``, the next write first copies that tail (a batch or two's
        pages, and the database file's fsync: a few milliseconds once every ``restart_pages``,
        where SQLite's own checkpoint copied everything every 1,000). Skipped while the thread's
        own checkpoint runs (a write never waits for it); a failure is logged, never the
        write's."""
        mode = self._armed
        if mode is None or not self._lock.acquire(blocking=False):
            return
        self._armed = None
        try:
            report = self._run_checkpoint(mode)
        except sqlite3.Error:
            log.exception("a WAL checkpoint of %s before a write failed", self.database)
            return
        finally:
            self._lock.release()
        self._reported(report)

    def _truncated(self, report: CheckpointReport) -> None:
        if report.complete:
            self._truncate_next = float("-inf")
            return
        self._truncate_next = self._monotonic() + self._truncate_retry_seconds
        log.error(
            "a TRUNCATE checkpoint of %s was blocked by a reader for %d ms: the WAL still holds "
            "%d pages (%d copied); trying again in %.0f s",
            self.database,
            self._truncate_wait_ms,
            report.wal.pages,
            report.wal.checkpointed,
            self._truncate_retry_seconds,
        )

    def _connect(self) -> sqlite3.Connection:
        """The checkpointer's own connection, opened by the engine (WAL, ``synchronous=FULL``,
        which a checkpoint's fsyncs follow) and detached from its pool; its busy timeout is the
        TRUNCATE wait (a PASSIVE checkpoint never waits)."""
        if self._connection is None:
            proxied = self._engine.raw_connection()
            proxied.detach()
            connection = proxied.dbapi_connection
            if not isinstance(connection, sqlite3.Connection):
                raise TypeError(f"not a sqlite3 connection: {connection!r}")
            connection.execute(f"PRAGMA busy_timeout={int(self._truncate_wait_ms)}")
            self._connection = connection
        return self._connection

    def _run(self) -> None:
        while True:
            self._wake.wait(self._check_interval_seconds)
            self._wake.clear()
            if self._stopping:
                return
            try:
                self.check()
            except sqlite3.Error:
                # A disk or lock fault: the next commit or interval tries again; meanwhile the
                # WAL only grows (the commits themselves are unaffected).
                log.exception("checking the WAL of %s failed", self.database)
            self.checked.set()
