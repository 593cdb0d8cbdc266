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
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url

from ledger.errors import FailedPrecondition

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

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # The sequencer asks for the write lock at BEGIN, so two writers never interleave and
        # a reader's snapshot never upgrades to a writer half way through.
        immediate = connection.get_execution_options().get(WRITE_LOCK_OPTION, False)
        if immediate:
            for hook in write_hooks:
                hook()
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    write_hooks: list[Callable[[], None]] = []
    _WRITE_BEGIN_HOOKS[engine] = write_hooks
    return engine


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
