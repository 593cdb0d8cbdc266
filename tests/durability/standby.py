"""A test-owned PostgreSQL primary and its streaming-replication hot standby.

The primary is ``initdb``'d into a temp dir (``wal_level=replica``, its own port); the standby is
``pg_basebackup -R`` of it into another temp dir, started as a second postgres on another port,
in hot-standby mode. Neither is the machine's shared server.

The primary names the standby synchronous (``synchronous_standby_names='*'``, at its default
``synchronous_commit=on``): a commit waits until the standby has the WAL on disk, not until it
replays it, so pausing replay (``pg_wal_replay_pause()``) leaves the primary writing while the
standby's answers stay behind. :meth:`StandbyPair.caught_up` is the tests' barrier: one
transaction committed with ``synchronous_commit=remote_apply`` returns once the standby has
replayed it, and so everything before it (replay is in WAL order). No test sleeps or polls.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import create_engine, text

from tests.durability.processes import PostgresInstance, postgres_binaries, postgres_program

__all__ = ["StandbyPair", "standby_pair", "standby_unavailable"]

_PRIMARY_SETTINGS = (
    "wal_level=replica",
    "max_wal_senders=4",
    "synchronous_standby_names=*",
)
_STANDBY_SETTINGS = ("hot_standby=on",)


def standby_unavailable() -> str | None:
    """Why no standby can be started here (a skip message), or None."""
    binaries = postgres_binaries()
    if binaries is None:
        return "no initdb/postgres binaries (PATH or /usr/lib/postgresql/*/bin)"
    if postgres_program(binaries, "pg_basebackup") is None:
        return f"no pg_basebackup beside {binaries / 'initdb'}"
    return None


@dataclass
class StandbyPair:
    """A started primary and its started hot standby."""

    primary: PostgresInstance
    standby: PostgresInstance

    def database(self) -> tuple[str, str]:
        """A new empty database on the primary (replicated to the standby): its URL on each."""
        name = f"ledger_{secrets.token_hex(6)}"
        admin = create_engine(self.primary.url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            admin.dispose()
        self.caught_up()
        return _with_database(self.primary.url, name), _with_database(self.standby.url, name)

    def caught_up(self) -> None:
        """Return once the standby has replayed everything the primary committed so far."""
        self.standby_sql("SELECT pg_wal_replay_resume()")
        engine = create_engine(self.primary.url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.exec_driver_sql("SET synchronous_commit = remote_apply")
                # An xid makes the transaction write a commit record, which then waits for apply.
                connection.exec_driver_sql("SELECT txid_current()")
        finally:
            engine.dispose()

    def pause_replay(self) -> None:
        """Stop the standby replaying (it still receives WAL): its answers stay where they are."""
        self.standby_sql("SELECT pg_wal_replay_pause()")

    def standby_sql(self, statement: str) -> object:
        engine = create_engine(self.standby.url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                return connection.execute(text(statement)).scalar()
        finally:
            engine.dispose()


def _with_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


@contextlib.contextmanager
def standby_pair() -> Iterator[StandbyPair]:
    """A started primary and hot standby, both removed afterwards."""
    binaries = postgres_binaries()
    if binaries is None:
        raise RuntimeError("no initdb on the PATH or under /usr/lib/postgresql/*/bin")
    primary = PostgresInstance(binaries, settings=_PRIMARY_SETTINGS)
    try:
        primary.start()
        standby = PostgresInstance(binaries, settings=_STANDBY_SETTINGS, standby_of=primary)
        try:
            standby.start()
            pair = StandbyPair(primary, standby)
            pair.caught_up()  # the standby streams (the synchronous one) before any test writes
            assert pair.standby_sql("SELECT pg_is_in_recovery()") is True
            yield pair
        finally:
            standby.remove()
    finally:
        primary.remove()
