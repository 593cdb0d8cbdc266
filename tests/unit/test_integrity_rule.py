"""When a round of integrity checks confirms a corruption (ledger/storage/integrity.py): only on a
quiet disk, and only if every check of the round, each on a connection of its own, found the same
thing. A transient I/O fault, which makes a sound file look malformed, must never confirm it:
the libfiu run (tests/durability/test_storage_fault_injection.py) is the end-to-end case.

Deterministic: the check and the clock are the test's own; an I/O fault is a real error raised
through the watched engine (its handle_error sees every error); nothing sleeps.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, event, text

from ledger import limits
from ledger.storage.faults import is_corruption, is_io_fault
from ledger.storage.integrity import IntegrityWatch

DAMAGED = "*** in database main ***\nPage 7: btreeInitPage() returns error code 11"
"""What quick_check says of a page it read and found damaged (CORRUPT, 11: not an I/O code)."""
UNREADABLE = "*** in database main ***\nPage {page}: unable to get the page. error code=8458"
"""What quick_check says under libfiu's EIO on pread (IOERR_CORRUPTFS), a different page each
time."""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Checks:
    """A check that answers the findings it was given in turn (the last one for ever), and may
    run something before answering (another thread meeting a fault meanwhile)."""

    def __init__(self, *findings: str | None) -> None:
        self.findings = list(findings)
        self.before: Any = None

    def __call__(self, _error: str) -> str | None:
        if self.before is not None:
            self.before()
        return self.findings.pop(0) if len(self.findings) > 1 else self.findings[0]


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = create_engine("sqlite://")
    yield engine
    engine.dispose()


def _watch(engine: Engine, check: Checks, clock: Clock) -> tuple[IntegrityWatch, list[str]]:
    watch = IntegrityWatch(engine, check=check, interval_seconds=60, monotonic=clock)
    told: list[str] = []
    watch.listeners.append(told.append)
    return watch, told


def _fail_a_read(engine: Engine, error: BaseException) -> None:
    """Raise ``error`` from a statement on ``engine``, as the disk (or a damaged page) would."""

    def fail(*_arguments: Any) -> None:
        raise error

    event.listen(engine, "before_cursor_execute", fail)
    try:
        with pytest.raises(Exception) as raised, engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        assert str(error) in str(raised.value)
    finally:
        event.remove(engine, "before_cursor_execute", fail)


def test_the_same_finding_from_every_check_on_a_quiet_disk_confirms(engine: Engine) -> None:
    watch, told = _watch(engine, Checks(DAMAGED), Clock())
    try:
        assert watch.confirm("database disk image is malformed")
        assert watch.checks == limits.integrity_check_confirmations == 3
        assert watch.finding == DAMAGED and told == [DAMAGED]
        assert watch.confirm("malformed") and watch.checks == 3 and told == [DAMAGED]
    finally:
        watch.close()


def test_a_finding_that_clears_on_the_next_check_is_not_confirmed(engine: Engine) -> None:
    watch, told = _watch(engine, Checks(DAMAGED, None), Clock())
    try:
        assert not watch.confirm("database disk image is malformed")
        assert watch.checks == 2 and not watch.corrupt and told == []
    finally:
        watch.close()


def test_a_finding_that_clears_on_the_last_check_is_not_confirmed(engine: Engine) -> None:
    watch, told = _watch(engine, Checks(DAMAGED, DAMAGED, None), Clock())
    try:
        assert not watch.confirm("malformed")
        assert watch.checks == 3 and not watch.corrupt and told == []
    finally:
        watch.close()


def test_different_findings_are_not_confirmed(engine: Engine) -> None:
    other = "*** in database main ***\nPage 9: btreeInitPage() returns error code 11"
    watch, told = _watch(engine, Checks(DAMAGED, other), Clock())
    try:
        assert not watch.confirm("malformed")
        assert watch.checks == 2 and not watch.corrupt and told == []
    finally:
        watch.close()


def test_an_io_error_the_engine_saw_before_vetoes_without_a_check(engine: Engine) -> None:
    clock = Clock()
    watch, told = _watch(engine, Checks(DAMAGED), clock)
    try:
        _fail_a_read(engine, sqlite3.OperationalError("disk I/O error"))
        clock.now += limits.integrity_io_fault_quiet_seconds - 0.1
        assert not watch.confirm("malformed")
        assert watch.checks == 0 and not watch.corrupt and told == []
        # The interval over and the disk quiet for the whole period: the damage is confirmed.
        clock.now += 60
        assert watch.confirm("malformed") and watch.checks == 3 and told == [DAMAGED]
    finally:
        watch.close()


def test_an_io_error_met_while_the_checks_run_vetoes(engine: Engine) -> None:
    check = Checks(DAMAGED)
    watch, told = _watch(engine, check, Clock())
    check.before = lambda: _fail_a_read(
        engine, sqlite3.OperationalError("database or disk is full")
    )
    try:
        assert not watch.confirm("malformed")
        assert watch.checks == 3 and not watch.corrupt and told == []
    finally:
        watch.close()


def test_a_check_that_cannot_read_a_page_vetoes_this_round_and_the_next(engine: Engine) -> None:
    """A libfiu EIO: the check names an I/O error code for a page; the next round within the
    quiet period is vetoed without a check."""
    clock = Clock()
    watch, _ = _watch(engine, Checks(UNREADABLE.format(page=355), DAMAGED), clock)
    try:
        assert not watch.confirm("malformed") and watch.checks == 1
        clock.now += 60  # the interval over, not the quiet period
        assert not watch.confirm("malformed") and watch.checks == 1
        clock.now += limits.integrity_io_fault_quiet_seconds + 0.1
        assert watch.confirm("malformed") and watch.finding == DAMAGED
    finally:
        watch.close()


def test_a_check_that_raises_an_io_error_vetoes_the_next_round(engine: Engine) -> None:
    clock, calls = Clock(), []

    def failing(_error: str) -> str | None:
        calls.append(1)
        if len(calls) == 1:
            error = sqlite3.OperationalError("disk I/O error")
            error.sqlite_errorcode = 8458  # type: ignore[attr-defined]
            raise error
        return DAMAGED

    watch = IntegrityWatch(engine, check=failing, interval_seconds=60, monotonic=clock)
    try:
        assert not watch.confirm("malformed") and watch.checks == 1
        clock.now += 60
        assert not watch.confirm("malformed") and watch.checks == 1  # still not quiet long enough
        clock.now += 60
        assert watch.confirm("malformed") and watch.checks == 4
    finally:
        watch.close()


def test_a_lock_vetoes_nothing(engine: Engine) -> None:
    """A lock says another connection holds the file, not that the disk fails."""
    watch, told = _watch(engine, Checks(DAMAGED), Clock())
    try:
        _fail_a_read(engine, sqlite3.OperationalError("database is locked"))
        assert watch.confirm("malformed") and watch.checks == 3 and told == [DAMAGED]
    finally:
        watch.close()


def _coded(error: sqlite3.Error, code: int) -> sqlite3.Error:
    error.sqlite_errorcode = code  # type: ignore[attr-defined]
    return error


@pytest.mark.parametrize(
    ("error", "io_fault"),
    [
        (_coded(sqlite3.OperationalError("disk I/O error"), 266), True),  # IOERR_READ
        (_coded(sqlite3.OperationalError("disk I/O error"), 8458), True),  # IOERR_CORRUPTFS
        (_coded(sqlite3.OperationalError("database or disk is full"), 13), True),
        (_coded(sqlite3.OperationalError("unable to open database file"), 14), True),
        (sqlite3.OperationalError("disk I/O error"), True),
        (OSError(5, "Input/output error"), True),
        (psycopg.errors.IoError("could not read block 3"), True),
        (psycopg.errors.DiskFull("could not extend file"), True),
        (_coded(sqlite3.DatabaseError("database disk image is malformed"), 11), False),
        (_coded(sqlite3.DatabaseError("file is not a database"), 26), False),
        (_coded(sqlite3.OperationalError("database is locked"), 5), False),
        (sqlite3.OperationalError("database is locked"), False),
        (psycopg.errors.DataCorrupted("invalid page in block 3"), False),
        (psycopg.OperationalError("connection refused"), False),
    ],
    ids=lambda value: value if isinstance(value, bool) else repr(value)[:60],
)
def test_which_errors_are_io_faults(error: BaseException, io_fault: bool) -> None:
    assert is_io_fault(error) is io_fault
    assert not (is_io_fault(error) and is_corruption(error))
