"""SQLite's writers queue at a gate before BEGIN IMMEDIATE (ledger.storage.db._WriteGate):
this process's writers on a lock, other processes' on a file lock, so that none of them waits
in SQLite's busy handler (sleeps of up to 100 ms, which let later writers take the lock first:
the sequencer's batches waited 12 ms on average, p99 131 ms, at 16 renewal callers)."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from ledger.storage import db
from ledger.storage.db import WRITE_LOCK_OPTION, create_ledger_engine, sqlite_url
from ledger.storage.faults import is_storage_fault


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_ledger_engine(sqlite_url(tmp_path / "gate.db"))
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (writer TEXT)"))
    yield engine
    engine.dispose()


def _gate(engine: Engine) -> Any:
    return db._write_gate(engine.url.database)


def _begins_by_thread(engine: Engine) -> dict[str, list[str]]:
    """The BEGIN statements each thread ran on ``engine`` from now on."""
    seen: dict[str, list[str]] = {}

    @event.listens_for(engine, "before_cursor_execute")
    def _record(_c: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.startswith("BEGIN"):
            seen.setdefault(threading.current_thread().name, []).append(statement)

    return seen


def _write(engine: Engine, writer: str) -> None:
    with (
        engine.connect().execution_options(**{WRITE_LOCK_OPTION: True}) as connection,
        connection.begin(),
    ):
        connection.execute(text("INSERT INTO t VALUES (:w)"), {"w": writer})


def _writers(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return sorted(connection.execute(text("SELECT writer FROM t")).scalars())


class _ArrivalLock:
    """The gate's lock, saying when a thread arrives to wait for it."""

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        self.arrived = threading.Event()

    def acquire(self, timeout: float = -1) -> bool:
        if threading.current_thread().name == "second":
            self.arrived.set()
        return bool(self.lock.acquire(timeout=timeout))

    def release(self) -> None:
        self.lock.release()

    def locked(self) -> bool:
        return bool(self.lock.locked())


def test_a_writer_of_this_process_waits_at_the_gate_and_enters_when_the_holder_commits(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = _gate(engine)
    arrival = _ArrivalLock(gate._turn)
    monkeypatch.setattr(gate, "_turn", arrival)
    begins = _begins_by_thread(engine)
    second = threading.Thread(target=_write, args=(engine, "second"), name="second")
    with engine.connect().execution_options(**{WRITE_LOCK_OPTION: True}) as holder:
        with holder.begin():
            holder.execute(text("INSERT INTO t VALUES ('first')"))
            second.start()
            assert arrival.arrived.wait(60)
            # It waits at the gate: it has not asked SQLite for the lock.
            assert "second" not in begins
        # Committed, not yet returned to the pool: still the holder's turn.
        assert "second" not in begins
    second.join(60)
    assert begins["second"] == ["BEGIN IMMEDIATE"]
    assert _writers(engine) == ["first", "second"]
    assert not gate._turn.locked()


def test_a_writer_waits_for_another_processs_writer_at_the_file_lock(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    polled = threading.Event()
    real = db.time

    class _Time:
        monotonic = staticmethod(real.monotonic)

        @staticmethod
        def sleep(seconds: float) -> None:
            polled.set()  # the gate found the file lock taken and waits to try again
            real.sleep(seconds)

    monkeypatch.setattr(db, "time", _Time)
    begins = _begins_by_thread(engine)
    # Another process's writer: any other open file description of the lock file.
    lock_file = f"{Path(engine.url.database or '').resolve()}.write.lock"
    other = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(other, fcntl.LOCK_EX)
    second = threading.Thread(target=_write, args=(engine, "second"), name="second")
    try:
        second.start()
        assert polled.wait(60)
        assert "second" not in begins
    finally:
        os.close(other)
    second.join(60)
    assert begins["second"] == ["BEGIN IMMEDIATE"]
    assert _writers(engine) == ["second"]


def test_the_gate_opens_again_after_a_rollback_and_after_an_invalidated_connection(
    engine: Engine,
) -> None:
    gate = _gate(engine)
    with (
        pytest.raises(ZeroDivisionError),
        engine.connect().execution_options(**{WRITE_LOCK_OPTION: True}) as connection,
        connection.begin(),
    ):
        connection.execute(text("INSERT INTO t VALUES ('rolled back')"))
        assert gate._turn.locked()
        _ = 1 / 0
    assert not gate._turn.locked()
    connection = engine.connect().execution_options(**{WRITE_LOCK_OPTION: True})
    connection.begin()
    assert gate._turn.locked()
    connection.invalidate()  # as the appender does when COMMIT fails
    connection.close()
    assert not gate._turn.locked()
    _write(engine, "after")  # neither left the gate closed (nor the file lock held)
    assert _writers(engine) == ["after"]


def test_waiting_past_the_bound_is_database_locked_a_storage_fault(engine: Engine) -> None:
    gate = _gate(engine)
    held = gate.enter(1)
    try:
        with pytest.raises(sqlite3.OperationalError, match="database is locked") as raised:
            gate.enter(0)
        assert is_storage_fault(raised.value)
    finally:
        gate.leave(held)
    gate.leave(gate.enter(0))  # free again


def test_every_engine_of_a_file_shares_one_gate(engine: Engine, tmp_path: Path) -> None:
    again = create_ledger_engine(sqlite_url(tmp_path / "." / "gate.db"))
    try:
        assert db._write_gate(again.url.database) is _gate(engine)
        assert db._write_gate(str(tmp_path / "other.db")) is not _gate(engine)
    finally:
        again.dispose()


def test_a_forked_child_lets_go_of_the_gate_its_parent_holds(engine: Engine) -> None:
    """A child forked while a writer of the parent is inside: the child's gate starts free,
    and its copy of the file lock's descriptor is closed, so the parent's next writer does not
    wait for the child to exit."""
    gate = _gate(engine)
    held = gate.enter(1)
    ready_read, ready_write = os.pipe()
    go_read, go_write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child reports through the pipe)
        free = not gate._turn.locked() and gate._holder is None
        os.write(ready_write, b"1" if free else b"0")
        os.read(go_read, 1)
        os._exit(0)
    try:
        assert os.read(ready_read, 1) == b"1"
        gate.leave(held)
        gate.leave(gate.enter(0))  # the file lock is free while the child still lives
    finally:
        os.write(go_write, b"x")
        os.waitpid(child, 0)
        for descriptor in (ready_read, ready_write, go_read, go_write):
            os.close(descriptor)


def test_a_begin_that_fails_opens_the_gate_though_its_connection_is_kept(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write whose BEGIN IMMEDIATE fails (a disk fault, here a write hook that raises) began no
    transaction: the gate opens at once, not when the connection is returned, which a caller
    whose ``begin()`` raised may never do (the fault-injection test found a batch's connection
    left checked out holding the gate, and every other writer timed out)."""
    monkeypatch.setattr(db, "_SQLITE_BUSY_TIMEOUT_MS", 1)  # a held gate fails the next writer
    hooks = db.write_begin_hooks(engine)

    def fault() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    hooks.append(fault)
    kept = engine.connect().execution_options(**{WRITE_LOCK_OPTION: True})
    try:
        with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
            kept.begin()
        hooks.remove(fault)
        _write(engine, "next")  # the gate is open though `kept` is still checked out
        assert _writers(engine) == ["next"]
    finally:
        kept.close()


@pytest.mark.parametrize("end", ["commit", "rollback"])
def test_the_gate_opens_when_the_transaction_ends_not_when_the_connection_returns(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, end: str
) -> None:
    """A connection kept after its write transaction (checked out, not yet returned) does not
    keep other writers out."""
    monkeypatch.setattr(db, "_SQLITE_BUSY_TIMEOUT_MS", 1)  # a held gate fails the next writer
    with engine.connect().execution_options(**{WRITE_LOCK_OPTION: True}) as kept:
        transaction = kept.begin()
        kept.execute(text("INSERT INTO t VALUES ('kept')"))
        getattr(transaction, end)()
        _write(engine, "next")  # `kept` is still checked out
        transaction = kept.begin()  # and may write again
        kept.execute(text("INSERT INTO t VALUES ('again')"))
        transaction.commit()
    expected = ["again", "kept", "next"] if end == "commit" else ["again", "next"]
    assert _writers(engine) == expected
