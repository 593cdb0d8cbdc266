"""Storage faults answer honestly (issue 15, item 4), on SQLite and PostgreSQL.

Faults are injected into a real engine at three moments of a batch: before COMMIT (nothing is
written), during COMMIT (with and without the commit having reached the disk: the outcome is
unknown) and after COMMIT (the batch is durable, its receipt is missing). Each answer is
UNAVAILABLE with a retry hint, and resubmitting the same events gets receipts, never a conflict.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from google.rpc import code_pb2, error_details_pb2
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import IntegrityError, OperationalError

from clients.samples import sample_events
from ledger.errors import Unavailable
from ledger.rpc.status import status_of
from ledger.signing import Ed25519Signer
from ledger.storage.append import Appender, PendingEntry, Receipt
from ledger.storage.log_store import LogStore
from ledger.storage.tables import checkpoints, log_entries, tree_nodes
from tests import clock as test_clock
from tests.builders import tokens
from tests.conftest import licensed_appender, pending

NOW = test_clock.now()
INSURER = "gulf-health"


class FaultSwitch:
    """Makes the engine's statements or its COMMIT fail with an I/O error, on demand."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.fail_statements_matching: str | None = None
        self.fail_commit: str | None = None
        """None, "before" (COMMIT never runs), "after" (COMMIT runs, then the error) or
        "reads-after" (COMMIT runs, then every statement fails)."""
        self.fail_everything_after_commit = False
        event.listen(engine, "before_cursor_execute", self._before_execute)
        self._do_commit = engine.dialect.do_commit
        engine.dialect.do_commit = self._commit  # type: ignore[method-assign]

    def _before_execute(self, *arguments: Any) -> None:
        statement = str(arguments[2])
        if self.fail_everything_after_commit or (
            self.fail_statements_matching and self.fail_statements_matching in statement
        ):
            if self.engine.dialect.name == "sqlite":
                raise sqlite3.OperationalError("disk I/O error")
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    def _commit(self, dbapi_connection: Any) -> None:
        if self.fail_commit == "before":
            raise OSError(errno.EIO, "injected: the COMMIT's fsync failed")
        self._do_commit(dbapi_connection)
        if self.fail_commit == "reads-after":
            self.fail_everything_after_commit = True
        if self.fail_commit == "after":
            raise OSError(errno.ENOSPC, "injected: the connection failed after COMMIT")

    def heal(self) -> None:
        self.fail_statements_matching = None
        self.fail_commit = None
        self.fail_everything_after_commit = False

    def remove(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before_execute)
        self.engine.dialect.do_commit = self._do_commit  # type: ignore[method-assign]


@pytest.fixture
def faults(engine: Engine) -> Iterator[FaultSwitch]:
    switch = FaultSwitch(engine)
    yield switch
    switch.remove()


@pytest.fixture
def appender(
    engine: Engine,
    log_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
) -> Appender:
    return licensed_appender(engine, log_signer, operator_signer, INSURER, insurer_signer, NOW)


def _items(signer: Ed25519Signer, count: int, first_number: int = 0) -> list[PendingEntry]:
    return [
        pending(signer, event)
        for event in sample_events(count, INSURER, NOW, first_number=first_number, tokens=tokens)
    ]


def _counts(engine: Engine) -> tuple[int, int, int]:
    with engine.connect() as connection:
        return tuple(  # type: ignore[return-value]
            int(connection.execute(select(func.count()).select_from(table)).scalar_one())
            for table in (log_entries, tree_nodes, checkpoints)
        )


def _append_refused(appender: Appender, items: list[PendingEntry]) -> Unavailable:
    with pytest.raises(Unavailable) as refused:
        appender.append_batch(items, NOW)
    return refused.value


def _retry_delay_ms(error: Unavailable) -> int:
    status = status_of(error)
    assert status.code == code_pb2.UNAVAILABLE
    retry = error_details_pb2.RetryInfo()
    assert any(detail.Unpack(retry) for detail in status.details)
    return retry.retry_delay.ToMilliseconds()


def test_a_fault_before_commit_writes_nothing_and_says_so(
    appender: Appender, engine: Engine, faults: FaultSwitch, insurer_signer: Ed25519Signer
) -> None:
    before = _counts(engine)
    items = _items(insurer_signer, 3)
    faults.fail_statements_matching = "INSERT INTO tree_nodes"
    error = _append_refused(appender, items)
    assert error.reason == "STORAGE_UNAVAILABLE" and "nothing was written" in error.message
    assert _retry_delay_ms(error) > 0
    assert _counts(engine) == before
    faults.heal()
    outcomes = appender.append_batch(_items(insurer_signer, 3), NOW)
    assert all(isinstance(o, Receipt) and not o.duplicate for o in outcomes)


@pytest.mark.parametrize("committed", [False, True], ids=["lost", "durable"])
def test_a_fault_during_commit_says_the_outcome_is_unknown_and_a_resubmission_is_safe(
    appender: Appender,
    engine: Engine,
    faults: FaultSwitch,
    insurer_signer: Ed25519Signer,
    committed: bool,
) -> None:
    before = _counts(engine)
    items = _items(insurer_signer, 3)  # the vault issues their tokens before the fault
    faults.fail_commit = "after" if committed else "before"
    error = _append_refused(appender, items)
    assert error.reason == "COMMIT_OUTCOME_UNKNOWN"
    assert "may or may not" in error.message and "not be committed" not in error.message
    assert _retry_delay_ms(error) > 0
    faults.heal()
    assert (_counts(engine)[0] > before[0]) == committed
    outcomes = appender.append_batch(_items(insurer_signer, 3), NOW)
    assert all(isinstance(o, Receipt) and o.duplicate == committed for o in outcomes)
    assert _counts(engine)[0] == before[0] + 3


def test_a_fault_after_commit_says_the_event_is_in_the_log(
    appender: Appender, engine: Engine, faults: FaultSwitch, insurer_signer: Ed25519Signer
) -> None:
    """A duplicate's receipt is read after COMMIT (its first checkpoint and proof): a fault
    there answers that the batch was committed, and a retry gets every receipt."""
    stored = _items(insurer_signer, 1, first_number=40)
    appender.append_batch(stored, NOW)
    before = _counts(engine)
    items = [*_items(insurer_signer, 2), *stored]  # the vault issues tokens before the fault
    faults.fail_commit = "reads-after"
    error = _append_refused(appender, items)
    assert error.reason == "RECEIPT_UNAVAILABLE" and "was committed" in error.message
    faults.heal()
    assert _counts(engine)[0] == before[0] + 2
    outcomes = appender.append_batch(items, NOW)
    assert all(isinstance(o, Receipt) and o.duplicate for o in outcomes)


def test_new_entries_get_their_receipts_with_no_read_after_commit(
    appender: Appender, engine: Engine, faults: FaultSwitch, insurer_signer: Ed25519Signer
) -> None:
    """A batch of new entries builds its receipts from the nodes it holds in memory: reads
    failing once COMMIT returned change nothing, and each receipt is the one served later."""
    before = _counts(engine)
    items = _items(insurer_signer, 3)
    faults.fail_commit = "reads-after"
    outcomes = appender.append_batch(items, NOW)
    faults.heal()
    assert _counts(engine)[0] == before[0] + 3
    store = LogStore(engine)
    for outcome in outcomes:
        assert isinstance(outcome, Receipt) and not outcome.duplicate
        _, proof = store.inclusion_proof(outcome.leaf_index, outcome.tree_size)
        assert list(outcome.inclusion_proof) == proof
    assert [o.duplicate for o in appender.append_batch(items, NOW)] == [True] * 3  # type: ignore[union-attr]


def test_a_read_fault_answers_unavailable_with_a_retry_hint(
    appender: Appender, engine: Engine, faults: FaultSwitch
) -> None:
    size = LogStore(engine).latest_checkpoint().tree_size
    faults.fail_statements_matching = "FROM checkpoints"
    with pytest.raises(OperationalError) as raised:
        LogStore(engine).latest_checkpoint()
    status = status_of(raised.value)
    info = error_details_pb2.ErrorInfo()
    assert status.code == code_pb2.UNAVAILABLE and status.details[0].Unpack(info)
    assert info.reason == "STORAGE_UNAVAILABLE"
    faults.heal()
    assert LogStore(engine).latest_checkpoint().tree_size == size


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.EIO, "Input/output error"),
        OSError(errno.ENOSPC, "No space left on device"),
        sqlite3.OperationalError("disk I/O error"),
        sqlite3.DatabaseError("database or disk is full"),
        sqlite3.DatabaseError("database disk image is malformed"),
        OperationalError("SELECT 1", {}, sqlite3.OperationalError("database is locked")),
    ],
    ids=[
        "EIO",
        "ENOSPC",
        "sqlite-io",
        "sqlite-full",
        "sqlite-short-read",
        "sqlalchemy-operational",
    ],
)
def test_storage_faults_answer_unavailable_never_internal(error: BaseException) -> None:
    status = status_of(error)
    assert status.code == code_pb2.UNAVAILABLE and "retry" in status.message
    assert _retry_delay_ms(Unavailable("x")) > 0


def test_a_constraint_violation_is_still_a_bug_not_a_storage_fault() -> None:
    error = IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert status_of(error).code == code_pb2.INTERNAL
