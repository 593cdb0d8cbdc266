"""A person's erasure clears the reasons of the operator's grants to them (docs/privacy.md,
"Erasure"; migration 0021), on SQLite and PostgreSQL: through the appender, a PersonErased
entry clears every reason of the person's grants (raw rows read back) and nothing else (the
amounts, who, when, request ids, the count and the bound, another person's grants); an erasure
refused by an erasure hook, or whose batch fails after the projector, leaves the reasons in
place with everything else; a grant left open on the person makes the erasure wait, which,
retried after the commit, clears that grant's reason too; a retry of a grant made before the
erasure is still answered, its reason no longer compared. The database lets through only the
clearing of a reason not yet cleared: every other UPDATE (each column of the table changed along
with it, a reason set to another text, a cleared reason cleared again), every DELETE and a
TRUNCATE are refused, writing nothing. Migration 0021 goes down and up again."""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, Integer, select, text
from sqlalchemy.exc import DBAPIError, OperationalError

from ledger.errors import AlreadyExists, FailedPrecondition, LedgerError
from ledger.identity.erasure import ErasedPerson, ErasureHooks
from ledger.signing import Ed25519Signer
from ledger.storage import db
from ledger.storage.append import Appender, Receipt
from ledger.storage.db import WRITE_LOCK_OPTION, is_sqlite
from ledger.storage.migrate import downgrade, upgrade
from ledger.storage.resolution_grants import (
    ERASED_REASON,
    ResolutionGrant,
    beneficiary_resolution_grants,
)
from ledger.storage.tables import checkpoints, log_entries
from ledger.storage.vault_store import (
    VaultStore,
    erase_token,
    grant_resolutions_in,
    person_identities,
    person_tokens,
)
from tests.builders import erased, person, token
from tests.conftest import pending

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
OPERATOR = "spiffe://policy-ledger.local/operator/operator"
REASON = "family of nine: court order 2026/114"
"""Personal data about the person, as an operator would write it."""
TABLE = beneficiary_resolution_grants.name
CLEAR = f"UPDATE {TABLE} SET reason = ''"


def _grant(additional: int, request_id: str, reason: str = REASON) -> ResolutionGrant:
    return ResolutionGrant(
        additional=additional,
        reason=reason,
        granted_by=OPERATOR,
        granted_at=NOW,
        request_id=request_id,
    )


def _rows(engine: Engine) -> list[dict[str, Any]]:
    """Every grant row, raw, as the database holds it."""
    table = beneficiary_resolution_grants
    with engine.connect() as connection:
        rows = connection.execute(
            select(table).order_by(table.c.beneficiary_token, table.c.grant_number)
        )
        return [dict(row._mapping) for row in rows]


def _reasons(rows: list[dict[str, Any]]) -> dict[tuple[str, int], str]:
    """Each grant's reason, by (person, grant number)."""
    return {(row["beneficiary_token"], row["grant_number"]): row["reason"] for row in rows}


def _without_reasons(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{name: value for name, value in row.items() if name != "reason"} for row in rows]


def _log_and_vault(engine: Engine) -> dict[str, Any]:
    """What an erasure writes besides the grants: the log, the checkpoints and the vault."""
    with engine.connect() as connection:
        return {
            table.name: sorted((tuple(row) for row in connection.execute(select(table))), key=repr)
            for table in (log_entries, checkpoints, person_identities, person_tokens)
        }


@pytest.fixture
def people(engine: Engine) -> tuple[str, str]:
    """Two people the vault knows (the person, their neighbour), each granted twice (the
    person) or once (the neighbour), with reasons."""
    me, neighbour = token(person(100)), token(person(200))
    vault = VaultStore(engine)
    vault.grant_resolutions(me, _grant(2, "ticket-4411-1"))
    vault.grant_resolutions(me, _grant(3, "ticket-4411-2", "second: slots spent on typos"))
    vault.grant_resolutions(neighbour, _grant(1, "ticket-5000-1", "the neighbour's own reason"))
    return me, neighbour


def _appender(
    engine: Engine,
    log_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
    hooks: ErasureHooks | None = None,
) -> Appender:
    appender = Appender(
        engine, log_signer, log_signer.name, operator_signer.public_key, erasure_hooks=hooks
    )
    appender.initialize(NOW)
    return appender


def _erase(appender: Appender, operator_signer: Ed25519Signer, who: str) -> Receipt | LedgerError:
    [outcome] = appender.append_batch([pending(operator_signer, erased(who))], NOW)
    return outcome


def test_an_erasure_clears_the_persons_grant_reasons_and_nothing_else(
    engine: Engine,
    log_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
    people: tuple[str, str],
) -> None:
    me, neighbour = people
    vault = VaultStore(engine)
    before, resolutions = _rows(engine), vault.resolutions(me)
    assert _reasons(before) == {
        (me, 0): REASON,
        (me, 1): "second: slots spent on typos",
        (neighbour, 0): "the neighbour's own reason",
    }
    appender = _appender(engine, log_signer, operator_signer)
    assert isinstance(_erase(appender, operator_signer, me), Receipt)
    after = _rows(engine)
    assert _without_reasons(after) == _without_reasons(before)  # amounts, who, when, ids
    assert _reasons(after) == {
        (me, 0): ERASED_REASON,
        (me, 1): ERASED_REASON,
        (neighbour, 0): "the neighbour's own reason",
    }
    now = vault.resolutions(me)
    assert (now.erased, now.resolved, now.granted, now.allowed) == (
        True,
        resolutions.resolved,
        resolutions.granted,
        resolutions.allowed,
    )
    assert [grant.reason for grant in now.grants] == [ERASED_REASON] * 2
    assert vault.resolutions(neighbour).grants[0].reason == "the neighbour's own reason"


def test_an_erasure_refused_by_a_hook_leaves_the_reasons(
    engine: Engine,
    log_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
    people: tuple[str, str],
) -> None:
    me, _ = people

    def refuse(connection: Connection, erased_person: ErasedPerson) -> None:
        raise FailedPrecondition("the extension cannot forget this one", reason="HELD")

    hooks = ErasureHooks()
    hooks.add(refuse)
    appender = _appender(engine, log_signer, operator_signer, hooks)
    before, written = _rows(engine), _log_and_vault(engine)
    outcome = _erase(appender, operator_signer, me)
    assert isinstance(outcome, LedgerError) and outcome.reason == "HELD"
    assert _rows(engine) == before
    assert _log_and_vault(engine) == written


def test_an_erasure_whose_batch_fails_after_the_projector_leaves_the_reasons(
    engine: Engine,
    log_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
    people: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reasons were cleared in the batch's transaction, then the checkpoint cannot be
    written: the entry, the vault's change and the cleared reasons are rolled back together."""
    me, _ = people
    appender = _appender(engine, log_signer, operator_signer)
    before, written = _rows(engine), _log_and_vault(engine)
    cleared: list[str] = []

    def fail_after_the_projector(connection: Connection, *args: object) -> None:
        cleared.extend(
            connection.execute(
                select(beneficiary_resolution_grants.c.reason).where(
                    beneficiary_resolution_grants.c.beneficiary_token == me
                )
            ).scalars()
        )
        raise RuntimeError("the checkpoint could not be written")

    monkeypatch.setattr(appender, "_insert_checkpoint", fail_after_the_projector)
    with pytest.raises(RuntimeError, match="checkpoint"):
        _erase(appender, operator_signer, me)
    assert cleared == [ERASED_REASON] * 2  # cleared in the transaction, before it failed
    assert _rows(engine) == before
    assert _log_and_vault(engine) == written


def _writer(engine: Engine) -> Connection:
    """A connection whose transactions take SQLite's write lock at BEGIN (as the vault's)."""
    return engine.execution_options(**{WRITE_LOCK_OPTION: True}).connect()


def _no_waiting(connection: Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``connection``'s next wait for a lock fail at once (see
    tests/integration/test_beneficiary_resolutions.py, which waits the same way)."""
    if is_sqlite(connection):
        monkeypatch.setattr(db, "_SQLITE_BUSY_TIMEOUT_MS", 0)
        connection.connection.driver_connection.execute("PRAGMA busy_timeout=0")  # type: ignore[union-attr]
    else:
        connection.exec_driver_sql("SET LOCAL lock_timeout = 1")


def test_a_grant_being_made_and_the_erasure_take_turns(
    engine: Engine, people: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grant is written and not committed (it found the person not erased): the erasure
    cannot clear the reasons until it ends (its wait fails at once here; on PostgreSQL at the
    person's lock, on SQLite at the one writer's). Retried after the commit, the erasure
    clears the new grant's reason too: no reason outlives the person."""
    me, _ = people
    with _writer(engine) as first, _writer(engine) as other:
        if is_sqlite(other):
            _no_waiting(other, monkeypatch)
        with first.begin():
            grant_resolutions_in(first, me, _grant(1, "ticket-4411-3", "made meanwhile"))
            with pytest.raises((OperationalError, sqlite3.OperationalError)), other.begin():
                if not is_sqlite(other):
                    _no_waiting(other, monkeypatch)
                erase_token(other, me, NOW)
        with other.begin():
            erase_token(other, me, NOW)
    mine = [row for row in _rows(engine) if row["beneficiary_token"] == me]
    assert [(row["additional"], row["reason"]) for row in mine] == [
        (2, ERASED_REASON),
        (3, ERASED_REASON),
        (1, ERASED_REASON),
    ]


def test_a_grant_retried_after_the_erasure_is_answered_without_its_reason(
    engine: Engine, people: tuple[str, str]
) -> None:
    """The reason is gone, so a retry's cannot be compared; the person and the amount are."""
    me, neighbour = people
    with engine.begin() as connection:
        erase_token(connection, me, NOW)
    vault = VaultStore(engine)
    before = _rows(engine)
    repeated = vault.grant_resolutions(me, _grant(2, "ticket-4411-1"))
    assert (repeated.erased, repeated.granted) == (True, 5)
    assert vault.grant_resolutions(me, _grant(2, "ticket-4411-1", "retyped")) == repeated
    for additional, who, fields in ((4, me, ["additional"]), (2, neighbour, ["person_token"])):
        with pytest.raises(AlreadyExists) as caught:
            vault.grant_resolutions(who, _grant(additional, "ticket-4411-1"))
        assert caught.value.details.reason == "REQUEST_ID_REUSED"
        assert [violation.field for violation in caught.value.details.field_violations] == fields
    assert _rows(engine) == before


def _other_value(column: str) -> str:
    """An SQL expression giving ``column`` another value than it holds (never null)."""
    if isinstance(beneficiary_resolution_grants.c[column].type, Integer):
        return f"{column} + 1"
    return f"COALESCE({column}, '') || 'x'"


_EVERY_OTHER_COLUMN = [c.name for c in beneficiary_resolution_grants.columns if c.name != "reason"]


@pytest.mark.parametrize(
    "statement",
    [
        f"UPDATE {TABLE} SET additional = 24",
        f"UPDATE {TABLE} SET reason = 'another reason'",
        f"UPDATE {TABLE} SET reason = NULL",
        f"DELETE FROM {TABLE}",
        *(f"{CLEAR}, {column} = {_other_value(column)}" for column in _EVERY_OTHER_COLUMN),
        f"{CLEAR}, rowid = rowid + 100",  # SQLite only (skipped on PostgreSQL)
        f"TRUNCATE {TABLE}",  # PostgreSQL only (skipped on SQLite)
    ],
)
def test_the_database_refuses_every_other_change(
    engine: Engine, people: tuple[str, str], statement: str
) -> None:
    sqlite = is_sqlite(engine)
    if "rowid" in statement and not sqlite:
        pytest.skip("a rowid is SQLite's")
    if statement.startswith("TRUNCATE") and sqlite:
        pytest.skip("TRUNCATE exists only on PostgreSQL")
    before = _rows(engine)
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
        connection.execute(text(statement))
    assert _rows(engine) == before


def test_a_cleared_reason_is_not_cleared_again(engine: Engine, people: tuple[str, str]) -> None:
    me, _ = people
    with engine.begin() as connection:
        erase_token(connection, me, NOW)
    before = _rows(engine)
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
        connection.execute(text(f"{CLEAR} WHERE beneficiary_token = :me"), {"me": me})
    assert _rows(engine) == before


def test_migration_0021_goes_down_and_up_again(engine: Engine, people: tuple[str, str]) -> None:
    """Before 0021 the database refuses the clearing too; after it, it takes it; down again,
    the cleared reasons stay cleared and every UPDATE is refused once more."""
    me, neighbour = people
    only_mine = f"{CLEAR} WHERE beneficiary_token = :who"
    before = _rows(engine)
    downgrade(engine, "0020")
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
        connection.execute(text(only_mine), {"who": me})
    assert _rows(engine) == before
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text(only_mine), {"who": me})
    cleared = _rows(engine)
    assert _without_reasons(cleared) == _without_reasons(before)
    assert [row["reason"] for row in cleared if row["beneficiary_token"] == me] == ["", ""]
    downgrade(engine, "0020")
    for statement in (only_mine, f"DELETE FROM {TABLE} WHERE beneficiary_token = :who"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
            connection.execute(text(statement), {"who": neighbour})
    assert _rows(engine) == cleared
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text(only_mine), {"who": neighbour})
    assert {row["reason"] for row in _rows(engine)} == {ERASED_REASON}
