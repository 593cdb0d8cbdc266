"""ledger.storage.rows.insert_rows: the rows it writes, on each engine, whatever their number.

On PostgreSQL the rows go as multi-row INSERTs of up to ``_POSTGRES_ROWS_MAX`` rows; these check
that the statement boundaries lose, duplicate or alter nothing (NULLs and dates included), and
that a refused row writes nothing of its batch.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, Table, select
from sqlalchemy.exc import IntegrityError

from ledger.storage import rows as rows_module
from ledger.storage.rows import insert_rows
from ledger.storage.tables import policies, tree_nodes


def _policy(number: int) -> dict[str, object]:
    return {
        "insurer_id": "ins",
        "policy_id": f"POL-{number:05d}",
        "sponsor_key": "sponsor",
        "holder_key": f"holder-{number}",
        "plan": "basic",
        "start_date": dt.date(2026, 1, 1) + dt.timedelta(days=number % 300),
        "end_date": dt.date(2027, 1, 1),
        "currency_code": "SAR",
        "annual_premium_minor": 1_000_000 + number,
        "cancelled_from": dt.date(2026, 6, 1) if number % 3 == 0 else None,
        "cancel_reason": "NON_PAYMENT" if number % 3 == 0 else None,
        "issued_leaf_index": number,
        "cancelled_leaf_index": None,
        "instalments": number % 12,
    }


@pytest.mark.parametrize("count", [1, 2, 999, 1000, 1001, 2500])
def test_every_row_is_stored_as_given(engine: Engine, count: int) -> None:
    wanted = [_policy(number) for number in range(count)]
    with engine.begin() as connection:
        insert_rows(connection, policies, wanted)
    with engine.connect() as connection:
        stored = [dict(row._mapping) for row in connection.execute(select(policies))]
    assert sorted(stored, key=lambda row: str(row["policy_id"])) == wanted


def test_a_wide_tables_rows_go_in_statements_within_postgres_parameter_bound(
    engine: Engine,
) -> None:
    """80 columns x 1,000 rows is 80,000 parameters, past the 65,535 one PostgreSQL statement
    carries: the rows go in smaller statements, all of them stored."""
    metadata = MetaData()
    wide = Table(
        "wide_rows",
        metadata,
        Column("row_id", Integer, primary_key=True),
        *(Column(f"c{number}", Integer) for number in range(79)),
    )
    metadata.create_all(engine)
    wanted = [
        {"row_id": row, **{f"c{number}": row * 100 + number for number in range(79)}}
        for row in range(rows_module._POSTGRES_ROWS_MAX)
    ]
    try:
        with engine.begin() as connection:
            insert_rows(connection, wide, wanted)
        with engine.connect() as connection:
            stored = [dict(row._mapping) for row in connection.execute(select(wide))]
        assert sorted(stored, key=lambda row: int(row["row_id"])) == wanted
    finally:
        metadata.drop_all(engine)


def test_an_empty_list_writes_nothing(engine: Engine) -> None:
    with engine.begin() as connection:
        insert_rows(connection, tree_nodes, [])
    with engine.connect() as connection:
        assert connection.execute(select(tree_nodes)).all() == []


@pytest.mark.parametrize("position", [0, 999, 1000, 1499])
def test_a_refused_row_writes_nothing_of_its_batch(engine: Engine, position: int) -> None:
    wanted = [{"node_key": key, "hash": bytes([key % 256]) * 32} for key in range(1500)]
    wanted.insert(position + 1, dict(wanted[position]))  # the same key twice
    with pytest.raises(IntegrityError), engine.begin() as connection:
        insert_rows(connection, tree_nodes, wanted)
    with engine.connect() as connection:
        assert connection.execute(select(tree_nodes)).all() == []
