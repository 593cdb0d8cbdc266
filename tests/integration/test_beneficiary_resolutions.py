"""The bound on the people a beneficiary resolves (ledger/storage/vault_store.py), in the
database, on SQLite and PostgreSQL: it survives a new engine (a restart, another worker), two
transactions of one beneficiary at once cannot both pass it (interleaved by hand, no timing),
and erasure keeps the count (the table holds tokens only). The operator's grants raise one
person's bound, survive a new engine, take turns with the person's resolutions and with each
other under the same lock, and cannot be changed or deleted; a grant is made once per request
id (a repeat writes nothing, a reuse for another grant is refused, the loser of a race for one
id answers as a repeat), and migration 0020 gives the grants made before it a null id."""

from __future__ import annotations

import datetime as dt
import itertools
import sqlite3
from collections.abc import Iterator, Sequence

import pytest
from sqlalchemy import Connection, Engine, inspect, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from ledger import limits
from ledger.coverage.model import PersonRef
from ledger.errors import AlreadyExists, ResourceExhausted
from ledger.storage import db, vault_store
from ledger.storage.db import WRITE_LOCK_OPTION, create_ledger_engine, is_sqlite
from ledger.storage.migrate import downgrade, upgrade
from ledger.storage.resolution_grants import (
    RequestedGrant,
    ResolutionGrant,
    beneficiary_resolution_grants,
    grants_of,
)
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


_REQUEST_NUMBERS = itertools.count(1)


def _grant(
    additional: int, request_id: str | None = None, reason: str = "a test grant"
) -> ResolutionGrant:
    """A grant of ``additional`` people, with ``request_id`` or else a new one."""
    return ResolutionGrant(
        additional=additional,
        reason=reason,
        granted_by="spiffe://policy-ledger.local/operator/operator",
        granted_at=NOW,
        request_id=request_id or f"test-grant-{next(_REQUEST_NUMBERS):04d}",
    )


def _grant_rows(engine: Engine) -> list[tuple[str, int, int, str | None]]:
    """Every grant row: (person, grant number, additional, request id)."""
    table = beneficiary_resolution_grants
    with engine.connect() as connection:
        rows = connection.execute(select(table).order_by(table.c.grant_number)).all()
    return [(r.beneficiary_token, r.grant_number, r.additional, r.request_id) for r in rows]


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


def test_a_repeated_request_id_grants_once_and_answers_the_resolutions_as_they_are(
    engine: Engine, me: str
) -> None:
    vault = VaultStore(engine)
    first = vault.grant_resolutions(me, _grant(2, "ticket-4411-1"))
    assert _grant_rows(engine) == [(me, 0, 2, "ticket-4411-1")]
    # The retry after a lost answer (a later clock, another operator: the request is the same).
    retried = ResolutionGrant(
        additional=2,
        reason="a test grant",
        granted_by="spiffe://policy-ledger.local/operator/night-shift",
        granted_at=NOW + dt.timedelta(minutes=5),
        request_id="ticket-4411-1",
    )
    assert vault.grant_resolutions(me, retried) == first
    assert _grant_rows(engine) == [(me, 0, 2, "ticket-4411-1")]
    # Once more after another grant and a resolution: the resolutions as they are now, the
    # grant among them (not the last any more); still written once.
    vault.grant_resolutions(me, _grant(1, "ticket-4502-1"))
    vault.tokens_for(_people([2]), NOW, [BORN], beneficiary=me)
    again = vault.grant_resolutions(me, _grant(2, "ticket-4411-1"))
    assert (again.resolved, again.granted, again.allowed) == (1, 3, LIMIT + 3)
    assert [grant.request_id for grant in again.grants] == ["ticket-4411-1", "ticket-4502-1"]
    assert len(_grant_rows(engine)) == 2


def test_a_repeat_is_answered_even_once_the_person_is_erased_or_the_total_reached(
    engine: Engine, me: str
) -> None:
    """A repeat answers before the checks a new grant must pass: what happened since the first
    call does not turn the retry of a grant that was made into a refusal."""
    vault = VaultStore(engine)
    vault.grant_resolutions(me, _grant(GRANTED_MAX, "ticket-4411-1"))
    with engine.begin() as connection:
        erase_token(connection, me, NOW)
    repeated = vault.grant_resolutions(me, _grant(GRANTED_MAX, "ticket-4411-1"))
    assert (repeated.erased, repeated.granted) == (True, GRANTED_MAX)
    assert len(_grant_rows(engine)) == 1


@pytest.mark.parametrize(
    ("additional", "reason", "another_person", "fields"),
    [
        (3, "a test grant", False, ["additional"]),
        (2, "another reason", False, ["reason"]),
        (2, "a test grant", True, ["person_token"]),
        (1, "another reason", True, ["person_token", "additional", "reason"]),
    ],
)
def test_a_request_id_reused_for_another_grant_is_refused_writing_nothing(
    engine: Engine,
    me: str,
    additional: int,
    reason: str,
    another_person: bool,
    fields: list[str],
) -> None:
    vault = VaultStore(engine)
    vault.grant_resolutions(me, _grant(2, "ticket-4411-1"))
    [neighbour] = vault.tokens_for([_person(9)], NOW, [BORN])
    before = _grant_rows(engine)
    person = neighbour if another_person else me
    with pytest.raises(AlreadyExists) as caught:
        vault.grant_resolutions(person, _grant(additional, "ticket-4411-1", reason))
    details = caught.value.details
    assert (details.reason, details.metadata) == (
        "REQUEST_ID_REUSED",
        {"request_id": "ticket-4411-1"},
    )
    assert [violation.field for violation in details.field_violations] == fields
    assert _grant_rows(engine) == before


@pytest.mark.parametrize("loser", ["the same grant", "another person's grant"])
def test_the_loser_of_a_race_for_a_request_id_answers_as_a_repeat(
    engine: Engine, second: Engine, me: str, monkeypatch: pytest.MonkeyPatch, loser: str
) -> None:
    """Two calls with one request id, the winner committing between the loser's look-up of the
    id and its insert (the two do not share the person's lock when they name two people, or
    should it be missed). Deterministic: the loser's first look-up is made to find nothing, as
    if it ran before the winner committed, and the winner's grant is committed by then. The
    unique request id refuses the loser's row; retried, the loser finds the winner's grant:
    answered as a repeat, or refused as a reuse for another person. One grant in all."""
    [neighbour] = VaultStore(engine).tokens_for([_person(9)], NOW, [BORN])
    winner = VaultStore(second).grant_resolutions(me, _grant(2, "ticket-4411-1"))
    look_ups: list[RequestedGrant | None] = []
    real_look_up = vault_store.grant_of_request

    def looked_up_before_the_winner_committed(
        connection: Connection, request_id: str
    ) -> RequestedGrant | None:
        found = real_look_up(connection, request_id)
        look_ups.append(found)
        return None if len(look_ups) == 1 else found

    monkeypatch.setattr(vault_store, "grant_of_request", looked_up_before_the_winner_committed)
    vault = VaultStore(engine)
    if loser == "the same grant":
        assert vault.grant_resolutions(me, _grant(2, "ticket-4411-1")) == winner
    else:
        with pytest.raises(AlreadyExists) as caught:
            vault.grant_resolutions(neighbour, _grant(2, "ticket-4411-1"))
        assert caught.value.details.reason == "REQUEST_ID_REUSED"
    assert len(look_ups) == 2 and look_ups[0] is not None  # the insert failed, then the retry
    assert _grant_rows(engine) == [(me, 0, 2, "ticket-4411-1")]


def test_two_grants_with_one_request_id_cannot_both_be_stored(engine: Engine, me: str) -> None:
    """The database's own guard, below the look-up: the request id is unique where present."""
    with engine.begin() as connection:
        connection.execute(
            beneficiary_resolution_grants.insert(),
            [
                {
                    "beneficiary_token": me,
                    "grant_number": number,
                    "additional": 1,
                    "reason": "r",
                    "granted_by": "spiffe://policy-ledger.local/operator/operator",
                    "granted_at_us": 0,
                    "request_id": request_id,
                }
                for number, request_id in enumerate([None, None, "ticket-4411-1"])
            ],
        )
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(
            beneficiary_resolution_grants.insert(),
            {
                "beneficiary_token": me,
                "grant_number": 3,
                "additional": 1,
                "reason": "r",
                "granted_by": "spiffe://policy-ledger.local/operator/operator",
                "granted_at_us": 0,
                "request_id": "ticket-4411-1",
            },
        )
    assert [row[3] for row in _grant_rows(engine)] == [None, None, "ticket-4411-1"]


def test_migration_0020_gives_earlier_grants_a_null_request_id_and_keeps_them_append_only(
    engine: Engine, me: str
) -> None:
    downgrade(engine, "0019")
    columns = {
        column["name"] for column in inspect(engine).get_columns("beneficiary_resolution_grants")
    }
    assert "request_id" not in columns
    with engine.begin() as connection:
        for number in (0, 1):
            connection.execute(
                text(
                    "INSERT INTO beneficiary_resolution_grants (beneficiary_token, grant_number, "
                    "additional, reason, granted_by, granted_at_us) "
                    "VALUES (:token, :number, 1, 'before 0020', 'spiffe://x/operator/o', 0)"
                ),
                {"token": me, "number": number},
            )
    upgrade(engine)
    with engine.connect() as connection:
        assert [grant.request_id for grant in grants_of(connection, me)] == [None, None]
    granted = VaultStore(engine).grant_resolutions(me, _grant(1, "ticket-4411-1"))
    assert [grant.request_id for grant in granted.grants] == [None, None, "ticket-4411-1"]
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
        connection.execute(text("UPDATE beneficiary_resolution_grants SET request_id = 'x'"))
    assert [row[3] for row in _grant_rows(engine)] == [None, None, "ticket-4411-1"]
