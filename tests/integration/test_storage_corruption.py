"""A database that stays corrupt is reported as such, not "retry" for ever
(``ledger.storage.integrity``).

A real SQLite file is damaged on disk under a running server: a read and a write answer
UNAVAILABLE STORAGE_CORRUPT, nothing is written, health turns NOT_SERVING, the gauge shows 1 and
a CRITICAL line says what to do. A corruption error that clears (injected once; the file is
intact) answers STORAGE_UNAVAILABLE as before, and health stays SERVING. One confirmed during
COMMIT answers COMMIT_OUTCOME_UNKNOWN saying the storage is corrupt too. The check's interval is
driven by a clock of the test's own, never by sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import grpc
import psycopg
import pytest
from google.rpc import code_pb2, error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_status import rpc_status
from sqlalchemy import Engine, create_engine, event, func, select

from clients.insurer import sign_event
from clients.samples import policy_issued, sample_events
from ledger import limits
from ledger.errors import Unavailable
from ledger.rpc.server import ServingSide, report_corruption
from ledger.rpc.status import status_of
from ledger.signing import Ed25519Signer
from ledger.storage.append import Appender, Receipt
from ledger.storage.db import sqlite_url
from ledger.storage.integrity import IntegrityWatch, quick_check
from ledger.storage.tables import log_entries
from ledger.v1 import ledger_service_pb2 as pb
from ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from tests import clock as test_clock
from tests.builders import tokens
from tests.conftest import (
    ServerHandle,
    licensed_appender,
    onboard,
    pending,
    start_server_thread,
)
from tests.sqlite_pages import damage_root_page, restore_root_page

INSURER = "gulf-health"
NOW = test_clock.now()
INTEGRITY_LOG = "ledger.storage.integrity"


@pytest.fixture
def file_server(log_signer: Ed25519Signer, tmp_path: Path) -> Iterator[ServerHandle]:
    """A server on a SQLite file, with metrics (port 0)."""
    url = sqlite_url(tmp_path / "ledger.db")
    handle = start_server_thread(url, log_signer, tmp_path, config_changes={"metrics_port": 0})
    yield handle
    handle.stop()


def _submit(channel: grpc.Channel, signer: Ed25519Signer, number: int) -> pb.SubmitEventResponse:
    event_ = policy_issued(number, INSURER, NOW, tokens=tokens)
    request = pb.SubmitEventRequest(envelope=sign_event(event_, signer))
    return pb_grpc.LedgerServiceStub(channel).SubmitEvent(request, timeout=30)


def _read_entries(channel: grpc.Channel) -> list[pb.GetEntriesResponse]:
    request = pb.GetEntriesRequest(start_index=0, end_index=100)
    return list(pb_grpc.LedgerServiceStub(channel).GetEntries(request, timeout=30))


def _refusal(call: Any) -> tuple[grpc.StatusCode, str, str]:
    """Code, reason and message of the RpcError ``call()`` raises."""
    with pytest.raises(grpc.RpcError) as raised:
        call()
    status = rpc_status.from_call(raised.value)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return raised.value.code(), info.reason, status.message  # type: ignore[attr-defined]


def _health(server: ServerHandle) -> set[int]:
    """The status health reports for "" and each service."""
    with server.channel("insurer", INSURER) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        names = ("", "ledger.v1.LedgerService", "ledger.v1.CoverageService")
        return {stub.Check(health_pb2.HealthCheckRequest(service=n)).status for n in names}


def _corrupt_gauge(server: ServerHandle) -> float | None:
    assert server.running.metrics is not None
    return server.running.metrics.registry.get_sample_value("policy_ledger_storage_corrupt")


def test_a_damaged_file_answers_storage_corrupt_and_turns_health_not_serving(
    file_server: ServerHandle,
    insurer_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    onboard(file_server, operator_signer, INSURER, insurer_signer)
    with file_server.channel("insurer", INSURER) as channel:
        _submit(channel, insurer_signer, 1)
        entries_before = sum(len(r.entries) for r in _read_entries(channel))
        tree_size = file_server.running.sequencer.tree_size
        assert _health(file_server) == {health_pb2.HealthCheckResponse.SERVING}
        assert _corrupt_gauge(file_server) == 0
        path = Path(file_server.running.engine.url.database or "")
        original = damage_root_page(path, "log_entries")
        # The pool's connections may hold the page in their caches: a damaged file is what a
        # connection opened now reads.
        file_server.running.engine.dispose()

        with caplog.at_level(logging.CRITICAL, logger=INTEGRITY_LOG):
            read = _refusal(lambda: _read_entries(channel))
        assert read[:2] == (grpc.StatusCode.UNAVAILABLE, "STORAGE_CORRUPT")
        assert "integrity check" in read[2] and "operator" in read[2]
        write = _refusal(lambda: _submit(channel, insurer_signer, 2))
        assert write[:2] == (grpc.StatusCode.UNAVAILABLE, "STORAGE_CORRUPT")

    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1
    line = critical[0].getMessage()
    assert str(path) in line and "restore the database from a backup" in line
    assert "audit verify" in line
    assert file_server.running.integrity is not None
    finding = file_server.running.integrity.finding
    assert finding is not None and finding in line
    assert _corrupt_gauge(file_server) == 1
    assert _health(file_server) == {health_pb2.HealthCheckResponse.NOT_SERVING}
    assert file_server.running.sequencer.tree_size == tree_size

    # Nothing was written: with the page put back, the file holds what it held.
    restore_root_page(path, "log_entries", original)
    with sqlite3.connect(path) as connection:
        (count,) = connection.execute("SELECT count(*) FROM log_entries").fetchone()
    connection.close()
    assert count == entries_before == tree_size


def test_a_corruption_error_that_clears_answers_storage_unavailable_and_health_stays_serving(
    file_server: ServerHandle,
    insurer_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
) -> None:
    onboard(file_server, operator_signer, INSURER, insurer_signer)
    engine = file_server.running.engine
    failures = [sqlite3.DatabaseError("database disk image is malformed")]

    def once(*arguments: Any) -> None:  # a short read: one statement sees a malformed page
        if "FROM log_entries" in str(arguments[2]) and failures:
            raise failures.pop()

    event.listen(engine, "before_cursor_execute", once)
    try:
        with file_server.channel("insurer", INSURER) as channel:
            code, reason, _ = _refusal(lambda: _read_entries(channel))
            assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "STORAGE_UNAVAILABLE")
            assert _read_entries(channel)  # the fault cleared
    finally:
        event.remove(engine, "before_cursor_execute", once)
    assert file_server.running.integrity is not None
    assert file_server.running.integrity.checks == 1
    assert not file_server.running.integrity.corrupt
    assert _corrupt_gauge(file_server) == 0
    assert _health(file_server) == {health_pb2.HealthCheckResponse.SERVING}


def _wait_for_health(server: ServerHandle, status: int) -> None:
    """Return once health says ``status`` for "" and each service (a bounded wait)."""
    with server.channel("insurer", INSURER) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", "ledger.v1.LedgerService", "ledger.v1.CoverageService"):
            request = health_pb2.HealthCheckRequest(service=name)
            answers = stub.Watch(request, timeout=60)
            assert any(answer.status == status for answer in answers)


def test_a_corruption_another_process_confirmed_turns_health_not_serving_for_good(
    file_server: ServerHandle, insurer_signer: Ed25519Signer, operator_signer: Ed25519Signer
) -> None:
    """What a worker of ``serve --workers N`` does when the supervisor relays the sequencer
    process's confirmation (its own reads found nothing): the same as its own check."""
    onboard(file_server, operator_signer, INSURER, insurer_signer)
    integrity = file_server.running.integrity
    assert integrity is not None
    assert _health(file_server) == {health_pb2.HealthCheckResponse.SERVING}
    assert integrity.confirmed_elsewhere("page 7: damaged", "sequencer process")
    _wait_for_health(file_server, health_pb2.HealthCheckResponse.NOT_SERVING)
    assert _corrupt_gauge(file_server) == 1
    assert integrity.finding == "page 7: damaged" and integrity.checks == 0
    assert not integrity.confirmed_elsewhere("page 9: damaged", "sequencer process")  # no news
    assert integrity.finding == "page 7: damaged"


def test_a_confirmation_made_elsewhere_tells_the_listeners_once_and_needs_no_check(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    def never(_error: str) -> str | None:
        raise AssertionError("a confirmation made elsewhere runs no check")

    told: list[str] = []
    watch = IntegrityWatch(engine, check=never, monotonic=Clock())
    watch.listeners.append(told.append)
    try:
        with caplog.at_level(logging.ERROR, logger=INTEGRITY_LOG):
            assert watch.confirmed_elsewhere("page 7: damaged", "sequencer process")
        assert watch.corrupt and told == ["page 7: damaged"]
        assert "the sequencer process confirmed the database corrupt" in caplog.text
        assert not watch.confirmed_elsewhere("page 7: damaged", "sequencer process")
        assert watch.confirm("malformed")  # every later corruption error: STORAGE_CORRUPT
        assert told == ["page 7: damaged"] and watch.checks == 0
    finally:
        watch.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_corruption_errors_runs_one_round_of_checks_per_interval(
    engine: Engine,
) -> None:
    """A round that passes is one check; the round that confirms is
    ``limits.integrity_check_confirmations`` checks finding the same damage
    (tests/unit/test_integrity_rule.py has the rule's other cases)."""
    clock, findings, told = Clock(), [None, None], []
    damaged = "page 7: btreeInitPage() returns error"
    watch = IntegrityWatch(
        engine,
        check=lambda _error: findings.pop(0) if findings else damaged,
        interval_seconds=60,
        monotonic=clock,
    )
    watch.listeners.append(told.append)
    try:
        assert [watch.confirm("malformed") for _ in range(5)] == [False] * 5
        assert watch.checks == 1
        clock.now += 59.9
        assert not watch.confirm("malformed") and watch.checks == 1
        clock.now += 0.1
        assert not watch.confirm("malformed") and watch.checks == 2  # passed again: cleared
        clock.now += 60
        assert watch.confirm("malformed")
        assert watch.checks == 2 + limits.integrity_check_confirmations
        # Confirmed for good (until a restart): no further check, the listeners told once.
        clock.now += 3600
        assert watch.confirm("malformed")
        assert watch.checks == 2 + limits.integrity_check_confirmations
        assert told == [damaged]
    finally:
        watch.close()


def test_a_check_that_fails_proves_nothing(engine: Engine) -> None:
    def failing(_error: str) -> str | None:
        raise sqlite3.OperationalError("disk I/O error")

    watch = IntegrityWatch(engine, check=failing, monotonic=Clock())
    try:
        assert not watch.confirm("malformed") and not watch.corrupt
    finally:
        watch.close()


def test_quick_check_finds_a_damaged_page_and_passes_an_intact_file(tmp_path: Path) -> None:
    path = tmp_path / "plain.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (x BLOB)")
        connection.executemany("INSERT INTO t VALUES (?)", [(b"x" * 500,) for _ in range(100)])
    connection.close()
    assert quick_check(path) is None
    damage_root_page(path, "t")
    finding = quick_check(path)
    assert finding is not None and finding != "ok"
    # A header so damaged the file is no database at all is a finding too, not an error.
    with path.open("r+b") as handle:
        handle.write(b"\0" * 100)
    assert quick_check(path) is not None


def test_a_confirmed_corruption_is_raised_as_storage_corrupt_on_either_engine(
    engine: Engine,
) -> None:
    """On PostgreSQL the server's data_corrupted (XX001) is itself the finding; on SQLite the
    check of an in-memory or intact file passes, so the same error stays STORAGE_UNAVAILABLE
    unless the check confirms (here: a check that finds)."""
    postgres = engine.dialect.name == "postgresql"
    watch = IntegrityWatch(
        engine, check=None if postgres else (lambda _error: "page 3: damaged"), monotonic=Clock()
    )

    def corrupt(*arguments: Any) -> None:
        if "FROM log_entries" in str(arguments[2]):
            if postgres:
                raise psycopg.errors.DataCorrupted("invalid page in block 3 of relation")
            raise sqlite3.DatabaseError("database disk image is malformed")

    with engine.connect() as connection:
        before = connection.execute(select(func.count()).select_from(log_entries)).scalar_one()
    event.listen(engine, "before_cursor_execute", corrupt)
    try:
        with pytest.raises(Unavailable) as raised, engine.connect() as connection:
            connection.execute(select(func.count()).select_from(log_entries))
        assert raised.value.reason == "STORAGE_CORRUPT"
        status = status_of(raised.value)
        assert status.code == code_pb2.UNAVAILABLE and "integrity check" in status.message
        assert watch.corrupt
    finally:
        event.remove(engine, "before_cursor_execute", corrupt)
        watch.close()
    with engine.connect() as connection:
        after = connection.execute(select(func.count()).select_from(log_entries)).scalar_one()
    assert after == before


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.DataCorrupted("invalid page in block 3 of relation base/1/2"),
        psycopg.errors.IndexCorrupted("index is corrupted"),
    ],
    ids=["XX001", "XX002"],
)
def test_postgres_corruption_without_a_watch_is_unavailable_never_internal(
    error: BaseException,
) -> None:
    status = status_of(error)
    info = error_details_pb2.ErrorInfo()
    assert status.code == code_pb2.UNAVAILABLE and status.details[0].Unpack(info)
    assert info.reason == "STORAGE_UNAVAILABLE"


def test_a_failing_listener_does_not_change_the_answer_and_the_others_are_told(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_finding: str) -> None:
        raise RuntimeError("event loop is closed")

    told: list[str] = []
    watch = IntegrityWatch(engine, check=lambda _error: "page 7: damaged", monotonic=Clock())
    watch.listeners.extend([broken, told.append])
    try:
        with caplog.at_level(logging.ERROR, logger=INTEGRITY_LOG):
            assert watch.confirm("malformed")  # still STORAGE_CORRUPT for the caller
        assert told == ["page 7: damaged"]
        assert "a listener of the database's corruption failed" in caplog.text
        other = IntegrityWatch(engine, check=lambda _error: None, monotonic=Clock())
        other.listeners.extend([broken, told.append])
        try:
            assert other.confirmed_elsewhere("page 9: damaged", "sequencer process")
            assert told == ["page 7: damaged", "page 9: damaged"]
        finally:
            other.close()
    finally:
        watch.close()


@pytest.mark.parametrize("committed", [False, True], ids=["lost", "durable"])
def test_a_corruption_confirmed_during_commit_says_the_outcome_is_unknown_and_storage_corrupt(
    engine: Engine,
    log_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
    committed: bool,
) -> None:
    """COMMIT fails with a corruption error (before the batch reached the database, or after):
    the watch runs its round and confirms it, and the answer still says the outcome is unknown
    (COMMIT_OUTCOME_UNKNOWN) and also that the storage is corrupt (metadata and message). The
    same error unconfirmed (the check passes) answers a plain COMMIT_OUTCOME_UNKNOWN."""
    postgres = engine.dialect.name == "postgresql"
    appender = licensed_appender(engine, log_signer, operator_signer, INSURER, insurer_signer, NOW)
    findings: list[str | None] = [None]  # the first round passes; the next confirms

    def check(_error: str) -> str | None:
        return findings.pop(0) if findings else "page 3: damaged"

    clock = Clock()
    watch = IntegrityWatch(
        engine, check=None if postgres else check, interval_seconds=60, monotonic=clock
    )
    do_commit = engine.dialect.do_commit

    def corrupt_commit(dbapi_connection: Any) -> None:
        if committed:
            do_commit(dbapi_connection)
        if postgres:
            raise psycopg.errors.DataCorrupted("invalid page in block 3 of relation")
        raise sqlite3.DatabaseError("database disk image is malformed")

    try:
        if not postgres:  # on SQLite a round can pass: then nothing is said of corruption
            plain = _commit_refused(engine, appender, insurer_signer, corrupt_commit, 10)
            assert plain.reason == "COMMIT_OUTCOME_UNKNOWN" and not plain.details.metadata
            assert not watch.corrupt and watch.checks == 1
            clock.now += 60
        checks_before = watch.checks
        refused = _commit_refused(engine, appender, insurer_signer, corrupt_commit, 20)
        assert watch.corrupt
        if not postgres:
            assert watch.checks - checks_before == limits.integrity_check_confirmations
    finally:
        engine.dialect.do_commit = do_commit  # type: ignore[method-assign]
        watch.close()
    assert refused.reason == "COMMIT_OUTCOME_UNKNOWN"
    assert refused.details.metadata == {"storage_corrupt": "true"}
    assert "may or may not be in the log" in refused.message
    assert "storage is corrupt" in refused.message and "operator" in refused.message
    status = status_of(refused)
    info = error_details_pb2.ErrorInfo()
    assert status.code == code_pb2.UNAVAILABLE and status.details[0].Unpack(info)
    assert info.reason == "COMMIT_OUTCOME_UNKNOWN" and dict(info.metadata) == {
        "storage_corrupt": "true"
    }


def _commit_refused(
    engine: Engine,
    appender: Appender,
    signer: Ed25519Signer,
    commit: Callable[[Any], None],
    first_number: int,
) -> Unavailable:
    """The refusal of a batch whose COMMIT runs ``commit``; checks what reached the log."""
    items = [  # the vault issues their tokens before COMMIT fails
        pending(signer, event)
        for event in sample_events(2, INSURER, NOW, first_number=first_number, tokens=tokens)
    ]
    before = _entry_count(engine)
    do_commit = engine.dialect.do_commit
    engine.dialect.do_commit = commit  # type: ignore[method-assign]
    try:
        with pytest.raises(Unavailable) as refused:
            appender.append_batch(items, NOW)
    finally:
        engine.dialect.do_commit = do_commit  # type: ignore[method-assign]
    written = _entry_count(engine) - before
    assert written in {0, len(items)}  # the whole batch or nothing
    # Resubmitting is safe, whatever the outcome: receipts (first ones if it was durable).
    outcomes = appender.append_batch(items, NOW)
    assert all(isinstance(o, Receipt) and o.duplicate == (written > 0) for o in outcomes)
    return refused.value


def _entry_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(log_entries)).scalar_one())


def test_a_server_whose_watch_confirmed_before_it_started_never_answers_serving() -> None:
    """A worker started after the sequencer process's confirmation (``serve --workers N``:
    the finding is its argument) takes it before its port opens: report_corruption turns
    health NOT_SERVING before it returns, not on a later turn of the loop. The health servicer
    is asked right after, with nothing awaited in between."""

    async def run() -> None:
        engine = create_engine("sqlite://")
        watch = IntegrityWatch(engine, check=lambda _error: None, monotonic=Clock())
        try:
            assert watch.confirmed_elsewhere("page 7: damaged", "sequencer process")
            health = health_aio.HealthServicer()
            services = ("ledger.v1.LedgerService", "ledger.v1.CoverageService")
            for name in ("", *services):
                await health.set(name, health_pb2.HealthCheckResponse.SERVING)
            side = cast(ServingSide, SimpleNamespace(health=health, services=services))
            await report_corruption(watch, side)
            for name in ("", *services):
                request = health_pb2.HealthCheckRequest(service=name)
                answer = await health.Check(request, None)
                assert answer is not None
                assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING, name
        finally:
            watch.close()
            engine.dispose()

    asyncio.run(run())
