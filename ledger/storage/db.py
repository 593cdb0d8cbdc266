"""Engine set-up: the one place that knows how to open a database, with explicit options.

SQLite: WAL journal, ``synchronous=FULL`` (a commit is durable once acknowledged), a busy timeout,
and transactions begun explicitly so the sequencer can take the write lock up front with
``BEGIN IMMEDIATE``; a server's engines turn SQLite's automatic WAL checkpoint off
(``auto_checkpoint=False``: the process that writes the log checkpoints on a thread of its own,
:mod:`ledger.storage.wal`), the tools keep it. PostgreSQL: psycopg 3, pre-ping, a pool of
the size this process was given (:class:`PoolShare`: ``serve`` divides its configured totals
over its processes, see :meth:`ledger.config.ServerConfig.database_pool_shares`).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url

from ledger.errors import FailedPrecondition, check

__all__ = [
    "POOL_SHARE_DEFAULT",
    "POOL_SHARE_ENVIRONMENT",
    "WRITE_LOCK_OPTION",
    "PoolShare",
    "create_ledger_engine",
    "is_sqlite",
    "lock_sqlite_for_serving",
    "sqlite_url",
    "write_begin_hooks",
]

WRITE_LOCK_OPTION = "ledger_write_lock"
"""Execution option: on SQLite, begin the transaction with BEGIN IMMEDIATE (take the write lock)."""

_SQLITE_BUSY_TIMEOUT_MS = 30_000

_WRITE_BEGIN_HOOKS: weakref.WeakKeyDictionary[Engine, list[Callable[[], None]]] = (
    weakref.WeakKeyDictionary()
)

POOL_SHARE_ENVIRONMENT = "POLICY_LEDGER_DATABASE_POOL_SHARE"
"""Set by ``serve --workers N`` for each process it starts: ``SIZE+OVERFLOW``, that process's
share of the configured totals (``--database-pool-size`` and ``--database-pool-overflow``).
Internal: operators set the totals, never this."""


@dataclass(frozen=True)
class PoolShare:
    """One process's PostgreSQL connection pool: ``size`` connections kept open, and up to
    ``overflow`` more opened under load and closed when returned. A process opens at most
    ``size + overflow`` connections to the database."""

    size: int
    overflow: int

    @property
    def connections_max(self) -> int:
        """The most connections the process opens to the database."""
        return self.size + self.overflow

    def __str__(self) -> str:
        return f"{self.size}+{self.overflow}"

    @classmethod
    def parse(cls, text: str) -> PoolShare:
        """``SIZE+OVERFLOW`` (what :data:`POOL_SHARE_ENVIRONMENT` holds); ValueError if not."""
        size, plus, overflow = text.strip().partition("+")
        if not (plus and size.isdigit() and overflow.isdigit() and int(size) >= 1):
            raise ValueError(f"{POOL_SHARE_ENVIRONMENT}={text!r}: not SIZE+OVERFLOW, SIZE >= 1")
        return cls(int(size), int(overflow))

    @classmethod
    def from_environment(cls, environment: Mapping[str, str] | None = None) -> PoolShare:
        """The share ``serve`` gave this process, or :data:`POOL_SHARE_DEFAULT` when none."""
        env = os.environ if environment is None else environment
        text = env.get(POOL_SHARE_ENVIRONMENT, "")
        return cls.parse(text) if text else POOL_SHARE_DEFAULT


POOL_SHARE_DEFAULT = PoolShare(size=8, overflow=8)
"""The pool of a process that was given no share: the command-line tools, the tests, and a
process that is not started by ``serve``."""


def sqlite_url(path: Path | str) -> str:
    """The SQLAlchemy URL of a SQLite database file."""
    return f"sqlite+pysqlite:///{Path(path)}"


def is_sqlite(engine: Engine | Connection) -> bool:
    """Whether the engine (or connection) talks to SQLite."""
    return engine.dialect.name == "sqlite"


def create_ledger_engine(
    url: str,
    *,
    echo: bool = False,
    pool: PoolShare | None = None,
    auto_checkpoint: bool = True,
) -> Engine:
    """Open the database at ``url`` with the options the ledger relies on.

    A SQLite file's parent folder is created if needed. ``pool`` sizes a PostgreSQL engine's
    connection pool; None: the share ``serve`` gave this process in its environment
    (:data:`POOL_SHARE_ENVIRONMENT`), else :data:`POOL_SHARE_DEFAULT`. ``auto_checkpoint``
    False (a server's engines): SQLite's connections never checkpoint the WAL inside a commit
    (``PRAGMA wal_autocheckpoint=0``); a :class:`ledger.storage.wal.WalCheckpointer` must then
    run in one process writing to the file. Other engines ignore it.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _create_sqlite_engine(
            url, parsed.database, echo=echo, auto_checkpoint=auto_checkpoint
        )
    share = PoolShare.from_environment() if pool is None else pool
    return create_engine(
        url,
        echo=echo,
        pool_pre_ping=True,
        pool_size=share.size,
        max_overflow=share.overflow,
    )


def write_begin_hooks(engine: Engine) -> list[Callable[[], None]]:
    """What a SQLite engine calls, on the writer's thread, just before each ``BEGIN IMMEDIATE``
    (:data:`WRITE_LOCK_OPTION`); add to it, remove from it. The WAL checkpointer's (see
    :mod:`ledger.storage.wal`). KeyError for an engine :func:`create_ledger_engine` did not
    make on SQLite."""
    return _WRITE_BEGIN_HOOKS[engine]


def _create_sqlite_engine(
    url: str, database: str | None, *, echo: bool, auto_checkpoint: bool
) -> Engine:
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        echo=echo,
        connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Take transaction control away from pysqlite so BEGIN is ours (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        if not auto_checkpoint:
            # The copy of the WAL into the file (and its fsync) leaves the commit path; it does
            # not change what a commit makes durable (ledger.storage.wal says why).
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Deleted content (an erased person's identifier, docs/privacy.md) is overwritten with
        # zeros, not left in free pages.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    _begin_explicitly(engine, _write_gate(database))
    return engine


def _begin_explicitly(engine: Engine, gate: _WriteGate) -> None:
    """BEGIN on SQLite is ours (pysqlite's transaction control is off): ``BEGIN IMMEDIATE``
    for a write (:data:`WRITE_LOCK_OPTION`), through ``gate`` and the write hooks."""

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # The sequencer asks for the write lock at BEGIN, so two writers never interleave and
        # a reader's snapshot never upgrades to a writer half way through.
        if not connection.get_execution_options().get(WRITE_LOCK_OPTION, False):
            connection.exec_driver_sql("BEGIN")
            return
        # Writers queue at the gate first (see _WriteGate), held until the transaction ends.
        info = cast("dict[str, Any] | None", connection.connection.record_info)
        check(info is not None, "a write transaction on a connection outside the pool")
        assert info is not None
        held = info[_GATE_HELD] = gate.enter(_SQLITE_BUSY_TIMEOUT_MS / 1000)
        try:
            # Then the hooks (the WAL checkpointer's copy of the last pages before the WAL
            # starts over): inside the gate, so no other writer of ours comes between.
            for hook in write_hooks:
                hook()
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            # No transaction began (a disk fault at BEGIN, say): the gate opens now, not when
            # the connection is returned, which a caller whose ``begin()`` raised may never do.
            del info[_GATE_HELD]
            gate.leave(held)
            raise

    write_hooks: list[Callable[[], None]] = []
    _WRITE_BEGIN_HOOKS[engine] = write_hooks

    # The gate opens when the transaction ends: just after its COMMIT or ROLLBACK (the
    # dialect's, wrapped below; SQLAlchemy's own commit and rollback events come before them),
    # not when the connection is returned to the pool, which a caller may do much later (a
    # connection kept after its transaction would keep every other writer out). Returning or
    # invalidating a connection that still holds it opens it too.
    dialect = engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def _leave(proxied: Any) -> None:
        info = getattr(proxied, "record_info", None)
        if info is not None and _GATE_HELD in info:
            gate.leave(info.pop(_GATE_HELD))

    def _do_commit(proxied: Any) -> None:
        try:
            commit(proxied)
        finally:
            _leave(proxied)

    def _do_rollback(proxied: Any) -> None:
        try:
            rollback(proxied)
        finally:
            _leave(proxied)

    dialect.do_commit = _do_commit  # type: ignore[method-assign,assignment]
    dialect.do_rollback = _do_rollback  # type: ignore[method-assign,assignment]

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: object, record: Any) -> None:
        _leave(record)

    @event.listens_for(engine, "invalidate")
    def _on_invalidate(_dbapi_connection: object, record: Any, _error: object) -> None:
        _leave(record)


_GATE_HELD = "ledger_write_gate"
"""The connection record's key for the write gate it holds (a file descriptor, or None)."""

_GATE_POLL_SECONDS = 0.0005
"""How often a writer waiting for another process's writer tries the gate's file lock again."""


class _WriteGate:
    """Where a SQLite database's writers queue before ``BEGIN IMMEDIATE``.

    SQLite's own wait for its write lock is its busy handler, which sleeps 1, 2, 5, 10, ... up
    to 100 ms between tries: a writer that arrives while another holds the lock, and keeps
    missing it, waits tens of milliseconds after the lock is free, while writers that arrive
    later take it first (measured at 16 renewal callers: the sequencer's batches waited 12 ms on
    average for BEGIN IMMEDIATE, p99 131 ms, as the saga's writers took the lock 85% of the
    time). Here this process's writers wait on a lock (woken as soon as it is released, with
    a bound of the busy timeout), then for other processes' writers (``serve --workers N``, the
    command-line tools) on an exclusive ``flock`` of ``<file>.write.lock``, tried every
    :data:`_GATE_POLL_SECONDS`; the holder releases both when its transaction ends (just after
    COMMIT or ROLLBACK), or its connection is returned to the pool or invalidated first. A
    writer that does not use the gate (another program) still meets SQLite's lock, as before.
    Waiting longer than the busy timeout is "database is locked", as SQLite says it
    (UNAVAILABLE)."""

    def __init__(self, lock_file: Path | None) -> None:
        self._turn = threading.Lock()
        self._lock_file = lock_file
        self._holder: _GateHeld | None = None
        """Who is inside (at most one: the lock), so that a forked child can let go."""

    def enter(self, timeout_seconds: float) -> _GateHeld:
        """Wait for the gate; returns what :meth:`leave` is given."""
        deadline = time.monotonic() + timeout_seconds
        if not self._turn.acquire(timeout=timeout_seconds):
            raise sqlite3.OperationalError("database is locked")
        try:
            held = _GateHeld(None if self._lock_file is None else _flock(self._lock_file, deadline))
        except BaseException:
            self._turn.release()
            raise
        self._holder = held
        return held

    def leave(self, held: _GateHeld) -> None:
        """Open the gate again (``held``: what :meth:`enter` returned; one from before a fork
        is ignored in the child, which let go of it then)."""
        if held is not self._holder:
            return
        self._holder = None
        if held.descriptor is not None:
            os.close(held.descriptor)  # drops the flock
        self._turn.release()

    def forked(self) -> None:
        """In a forked child: the parent's holder is not this process's; the child's copy of
        its file descriptor would keep the file lock held until the child exits, so it is
        closed, and the gate starts free."""
        holder, self._holder = self._holder, None
        if holder is not None and holder.descriptor is not None:
            os.close(holder.descriptor)
        self._turn = threading.Lock()


@dataclass(frozen=True, eq=False)
class _GateHeld:
    """One writer's way through the gate: the file lock's descriptor (None in memory)."""

    descriptor: int | None


def _flock(path: Path, deadline: float) -> int:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise sqlite3.OperationalError("database is locked") from None
                time.sleep(_GATE_POLL_SECONDS)
            else:
                return descriptor
    except BaseException:
        os.close(descriptor)
        raise


_GATES: dict[str, _WriteGate] = {}
_GATES_LOCK = threading.Lock()


def _gates_forked() -> None:
    for gate in _GATES.values():
        gate.forked()
    global _GATES_LOCK  # noqa: PLW0603 (a lock another thread may have held at the fork)
    _GATES_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_gates_forked)


def _write_gate(database: str | None) -> _WriteGate:
    """The one gate of this process for a database file (every engine on it shares it)."""
    if not database or database == ":memory:":
        return _WriteGate(None)
    path = Path(database).resolve()
    with _GATES_LOCK:
        gate = _GATES.get(str(path))
        if gate is None:
            gate = _GATES[str(path)] = _WriteGate(Path(f"{path}.write.lock"))
        return gate


def lock_sqlite_for_serving(url: str) -> IO[str] | None:
    """Take the serving lock of a SQLite file (``<file>.serve.lock``); keep the handle open.

    Two servers on one SQLite file would each run a sequencer: SQLite's own lock keeps their
    transactions apart, but two processes would sign checkpoints for one log from two queues.
    The lock is an exclusive ``flock``: the kernel drops it when the process ends, even on
    SIGKILL; a second server in the same process is refused too (``flock`` locks belong to
    an open file, not a process). The file's path is resolved first, so another spelling of it
    (relative, with ``..``, through a symlink) finds the same lock. Raises FAILED_PRECONDITION
    when another server holds it; returns None for other engines (PostgreSQL replicas share a
    database by design).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(f"{Path(parsed.database).resolve()}.serve.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise FailedPrecondition(
            f"the database {parsed.database} is already served by another server "
            f"(it holds {path}); stop that server first",
            reason="DATABASE_IN_USE",
        ) from None
    return handle
