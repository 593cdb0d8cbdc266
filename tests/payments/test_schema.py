"""The payments own their schema: their own Alembic branch (payments/migrations/versions),
applied with the ledger's on a fresh database and on one migrated while the payments' tables
were still in the ledger's revisions; ``payment_history`` is append-only in the database itself
(triggers), on both engines."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.exc import DBAPIError

from ledger.storage.db import create_ledger_engine
from ledger.storage.migrate import downgrade, upgrade, version_locations
from payments.migrations import VERSIONS
from payments.tables import APPEND_ONLY_TABLES, metadata, payment_history, payments

_PAYMENT = {
    "payment_id": "pay0123456789abcdef01234567",
    "quote_id": "q-0123456789abcdef",
    "gateway": "simulated",
    "state": "recorded",
    "currency_code": "KWD",
    "amount_minor": 100_000,
    "captured_minor": 100_000,
    "refunded_minor": 0,
    "gateway_reference": "sim-1",
    "redirect_url": "",
    "leaf_index": 7,
    "message": "",
    "created_at_us": 1,
    "updated_at_us": 1,
}
_HISTORY = {
    "payment_id": _PAYMENT["payment_id"],
    "refund_id": "",
    "from_state": "recording",
    "to_state": "recorded",
    "why": "FeeCollected appended",
    "gateway_reference": "",
    "leaf_index": 7,
    "at_us": 1,
}


def _versions(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())


def _history_rows(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(select(func.count()).select_from(payment_history)).scalar_one()
        )


def test_the_payments_have_their_own_version_location_and_branch(engine: Engine) -> None:
    assert VERSIONS in version_locations()
    assert VERSIONS.parent.parent.name == "payments"
    assert "payments_0001" in _versions(engine)  # the payments' branch head, beside the ledger's
    assert len(_versions(engine)) == 2


@pytest.mark.parametrize("table", APPEND_ONLY_TABLES)
@pytest.mark.parametrize("statement", ["UPDATE {table} SET why = 'changed'", "DELETE FROM {table}"])
def test_payment_history_refuses_update_and_delete(
    engine: Engine, table: str, statement: str
) -> None:
    with engine.begin() as connection:
        connection.execute(insert(payment_history).values(**_HISTORY))
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
        connection.execute(text(statement.format(table=table)))
    with engine.connect() as connection:
        assert connection.execute(select(payment_history.c.why)).scalars().all() == [
            "FeeCollected appended"
        ]


@pytest.mark.postgres
def test_payment_history_refuses_truncate_on_postgres(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("TRUNCATE exists only on PostgreSQL")
    with engine.begin() as connection:
        connection.execute(insert(payment_history).values(**_HISTORY))
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
        connection.execute(text("TRUNCATE payment_history"))
    assert _history_rows(engine) == 1


def test_a_database_migrated_before_the_move_keeps_its_payments_and_gains_the_triggers(
    database_url: str,
) -> None:
    """A database whose payments' tables the ledger's revisions created (0003, 0005): the
    payments' branch keeps them and their rows, and adds only what is missing."""
    engine = create_ledger_engine(database_url)
    try:
        upgrade(engine, "0008")  # the ledger's branch only
        metadata.create_all(engine)  # what the ledger's 0003 and 0005 created then: no triggers
        with engine.begin() as connection:
            connection.execute(insert(payments).values(**_PAYMENT))
            connection.execute(insert(payment_history).values(**_HISTORY))
            connection.execute(text("UPDATE payment_history SET why = why"))  # not refused yet
        assert "payments_0001" not in _versions(engine)
        upgrade(engine)
        assert "payments_0001" in _versions(engine)
        with engine.connect() as connection:
            assert connection.execute(select(payments.c.payment_id)).scalars().all() == [
                _PAYMENT["payment_id"]
            ]
        assert _history_rows(engine) == 1
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
            connection.execute(text("DELETE FROM payment_history"))
        assert _history_rows(engine) == 1
    finally:
        engine.dispose()


def test_the_payments_branch_goes_down_and_up_alone(engine: Engine) -> None:
    downgrade(engine, "payments@base")
    with engine.connect() as connection:
        names = set(engine.dialect.get_table_names(connection))
    assert not names & set(metadata.tables) and "log_entries" in names
    upgrade(engine)
    with engine.connect() as connection:
        assert set(metadata.tables) <= set(engine.dialect.get_table_names(connection))
