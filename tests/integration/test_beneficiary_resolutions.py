"""The bound on the people a beneficiary resolves (ledger/storage/vault_store.py), in the
database, on SQLite and PostgreSQL: it survives a new engine (a restart, another worker), two
transactions of one beneficiary at once cannot both pass it (interleaved by hand, no timing),
and erasure keeps the count (the table holds tokens only). The operator's grants raise one
person's bound, survive a new engine, take turns with the person's resolutions and with each
other under the same lock, and cannot be changed or deleted."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator, Sequence

import pytest
from sqlalchemy import Connection, Engine, inspect, select, text
from sqlalchemy.exc import DBAPIError, OperationalError

from ledger import limits
from ledger.coverage.model import PersonRef
from ledger.errors import ResourceExhausted
from ledger.storage import db
from ledger.storage.db import WRITE_LOCK_OPTION, create_ledger_engine, is_sqlite
from ledger.storage.resolution_grants import ResolutionGrant, beneficiary_resolution_grants
from ledger.storage.vault_store import (
    VaultStore,
    beneficiary_resolutions,
    erase_token,
    grant_resolutions_in,
    people_resolved_by,
    tokens_for_in,
)

NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
BORN = dt.date(1980, 1, 1)
LIMIT = 3
"""The bound in these tests (patched: the point is the mechanism, not the figure)."""
GRANTED_MAX = 4
"""The most all of one person's grants may add, in these tests (patched likewise)."""


@pytest.fixture(autouse=True)
def _small_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "beneficiary_people_resolved_max", LIMIT)
    monkeypatch.setattr(limits, "beneficiary_resolutions_granted_max", GRANTED_MAX)


def _grant(additional: int) -> ResolutionGrant:
    return ResolutionGrant(
        additional=additional,
        reason="a test grant",
        granted_by="spiffe://policy-ledger.local/operator/operator",
        granted_at=NOW,
    )


def _person(number: int) -> PersonRef:
    return PersonRef(id_type="residence_id", value=f"2{number:09d}", country="SA")


def _people(numbers: Sequence[int]) -> list[PersonRef]:
    return [_person(number) for number in numbers]


@pytest.fixture
def me(engine: Engine) -> str:
    """A person known to the vault: their token is their beneficiary name."""
    [token] = VaultStore(engine).tokens_for([_person(1)], NOW, [BORN])
    return token


def _resolve(connection: Connection, beneficiary: str, numbers: Sequence[int]) -> list[str]:
    return tokens_for_in(
        connection, _people(numbers), NOW, [BORN] * len(numbers), beneficiary=beneficiary
    )


@pytest.fixture
def second(database_url: str) -> Iterator[Engine]:
    """Another engine on the same database: another worker, or the server after a restart."""
    engine = create_ledger_engine(database_url)
    yield engine
    engine.dispose()


def test_the_count_survives_a_new_engine(engine: Engine, second: Engine, me: str) -> None:
    VaultStore(engine).tokens_for(_people([2, 3]), NOW, [BORN] * 2, beneficiary=me)
    engine.dispose()
    again = VaultStore(second)
    assert again.people_resolved_by(me) == 2
    with pytest.raises(ResourceExhausted):
        again.tokens_for(_people([4, 5]), NOW, [BORN] * 2, beneficiary=me)
    again.tokens_for(_people([2, 3, 4, 1]), NOW, [BORN] * 4, beneficiary=me)
    assert again.people_resolved_by(me) == LIMIT


def _writer(engine: Engine) -> Connection:
    """A connection whose transactions take SQLite's write lock at BEGIN (as the vault's)."""
    return engine.execution_options(**{WRITE_LOCK_OPTION: True}).connect()


def _no_waiting(connection: Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``connection``'s next wait for a lock fail at once instead of waiting (in its
    transaction, on PostgreSQL; on SQLite, whose wait is at BEGIN: at this process's write
    gate, ledger.storage.db._WriteGate, and in SQLite's busy handler)."""
    if is_sqlite(connection):
        monkeypatch.setattr(db, "_SQLITE_BUSY_TIMEOUT_MS", 0)
        connection.connection.driver_connection.execute("PRAGMA busy_timeout=0")  # type: ignore[union-attr]
    else:
        connection.exec_driver_sql("SET LOCAL lock_timeout = 1")


def test_two_transactions_of_one_beneficiary_cannot_both_pass_the_bound(
    engine: Engine, second: Engine, me: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A and B each want two new people with room for three. A checks and writes, and has
    not committed: B cannot read the count until A ends (its wait fails at once here, where a
    server's would wait). Then B, retried, sees A's people and is refused."""
    with _writer(engine) as first, _writer(second) as other:
        if is_sqlite(other):
            _no_waiting(other, monkeypatch)
        with first.begin():
            _resolve(first, me, [2, 3])
            # SQLite: "database is locked" at the write gate (sqlite3's error, raised before
            # BEGIN IMMEDIATE); PostgreSQL: lock_not_available.
            with pytest.raises((OperationalError, sqlite3.OperationalError)), other.begin():
                if not is_sqlite(other):
                    _no_waiting(other, monkeypatch)
                _resolve(other, me, [4, 5])
        with pytest.raises(ResourceExhausted), other.begin():
            _resolve(other, me, [4, 5])
        with other.begin():
            assert people_resolved_by(other, me) == 2
            assert len(_resolve(other, me, [4])) == 1
    assert VaultStore(engine).people_resolved_by(me) == LIMIT


def test_two_beneficiaries_do_not_wait_for_each_other(
    engine: Engine, second: Engine, me: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the lock is the beneficiary's own: another person's call goes ahead while
    one's transaction is open (on SQLite every write waits for the one writer anyway)."""
    if is_sqlite(engine):
        pytest.skip("SQLite has one writer at a time: the write lock serializes every call")
    [neighbour] = VaultStore(engine).tokens_for([_person(9)], NOW, [BORN])
    with _writer(engine) as first, _writer(second) as other, first.begin():
        _resolve(first, me, [2])
        with other.begin():
            _no_waiting(other, monkeypatch)
            assert len(_resolve(other, neighbour, [3])) == 1


def test_a_beneficiary_needs_a_write_locked_transaction_on_sqlite(engine: Engine, me: str) -> None:
    if not is_sqlite(engine):
        pytest.skip("PostgreSQL takes its advisory lock in any transaction")
    with engine.begin() as connection, pytest.raises(ValueError, match="BEGIN IMMEDIATE"):
        _resolve(connection, me, [2])


def test_erasure_keeps_the_count_and_the_table_holds_tokens_only(engine: Engine, me: str) -> None:
    vault = VaultStore(engine)
    [spouse, child] = vault.tokens_for(_people([2, 3]), NOW, [BORN] * 2, beneficiary=me)
    with engine.begin() as connection:
        erase_token(connection, child, NOW)
    assert vault.people_resolved_by(me) == 2  # erasing frees no room under the bound
    columns = {column["name"] for column in inspect(engine).get_columns("beneficiary_resolutions")}
    assert columns == {"beneficiary_token", "person_token", "resolved_at_us"}
    with engine.connect() as connection:
        rows = {tuple(row) for row in connection.execute(select(beneficiary_resolutions))}
    assert {(b, p) for b, p, _ in rows} == {(me, spouse), (me, child)}
    # The erased identifier asked again gets a new token: a new person to the vault, counted.
    [reissued] = vault.tokens_for(_people([3]), NOW, [BORN], beneficiary=me)
    assert reissued != child and vault.people_resolved_by(me) == LIMIT


def test_a_grant_raises_one_persons_bound_and_survives_a_new_engine(
    engine: Engine, second: Engine, me: str
) -> None:
    VaultStore(engine).tokens_for(_people([2, 3, 4]), NOW, [BORN] * 3, beneficiary=me)
    with pytest.raises(ResourceExhausted):
        VaultStore(engine).tokens_for(_people([5]), NOW, [BORN], beneficiary=me)
    granted = VaultStore(engine).grant_resolutions(me, _grant(2))
    assert (granted.resolved, granted.allowed, granted.granted) == (LIMIT, LIMIT + 2, 2)
    engine.dispose()
    again = VaultStore(second)
    assert again.resolutions(me) == granted
    again.tokens_for(_people([5, 6]), NOW, [BORN] * 2, beneficiary=me)
    with pytest.raises(ResourceExhausted) as caught:
        again.tokens_for(_people([7]), NOW, [BORN], beneficiary=me)
    assert caught.value.details.metadata["limit"] == str(LIMIT + 2)
    [neighbour] = again.tokens_for([_person(9)], NOW, [BORN])
    assert again.resolutions(neighbour).allowed == LIMIT  # a grant is one person's


def test_a_grant_and_the_persons_resolution_take_turns(
    engine: Engine, second: Engine, me: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The person is at the bound; a grant is written and not committed: their call cannot read
    the count and the grants until it ends (its wait fails at once here). Retried after the
    commit, it sees the grant and is answered."""
    VaultStore(engine).tokens_for(_people([2, 3, 4]), NOW, [BORN] * 3, beneficiary=me)
    with _writer(engine) as first, _writer(second) as other:
        if is_sqlite(other):
            _no_waiting(other, monkeypatch)
        with first.begin():
            grant_resolutions_in(first, me, _grant(1))
            with pytest.raises((OperationalError, sqlite3.OperationalError)), other.begin():
                if not is_sqlite(other):
                    _no_waiting(other, monkeypatch)
                _resolve(other, me, [5])
        with other.begin():
            assert len(_resolve(other, me, [5])) == 1
    assert VaultStore(engine).resolutions(me).resolved == LIMIT + 1


def test_two_grants_at_once_cannot_both_pass_the_total(
    engine: Engine, second: Engine, me: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A and B each grant 3 with room for 4 in all: B cannot read the grants while A's is
    open; retried after A commits, B is refused."""
    with _writer(engine) as first, _writer(second) as other:
        if is_sqlite(other):
            _no_waiting(other, monkeypatch)
        with first.begin():
            grant_resolutions_in(first, me, _grant(3))
            with pytest.raises((OperationalError, sqlite3.OperationalError)), other.begin():
                if not is_sqlite(other):
                    _no_waiting(other, monkeypatch)
                grant_resolutions_in(other, me, _grant(3))
        with pytest.raises(ResourceExhausted) as caught, other.begin():
            grant_resolutions_in(other, me, _grant(3))
        assert caught.value.details.reason == "BENEFICIARY_GRANTS_LIMIT"
        with other.begin():
            assert grant_resolutions_in(other, me, _grant(1)).granted == GRANTED_MAX
    assert [grant.additional for grant in VaultStore(engine).resolutions(me).grants] == [3, 1]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE beneficiary_resolution_grants SET additional = 24",
        "DELETE FROM beneficiary_resolution_grants",
    ],
)
def test_a_grant_is_never_changed_or_deleted(engine: Engine, me: str, statement: str) -> None:
    VaultStore(engine).grant_resolutions(me, _grant(2))
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
        connection.execute(text(statement))
    with engine.connect() as connection:
        rows = connection.execute(select(beneficiary_resolution_grants)).all()
    assert [(row.beneficiary_token, row.grant_number, row.additional) for row in rows] == [
        (me, 0, 2)
    ]
