"""ledger.storage.rows.insert_rows: the rows it writes, on each engine, whatever their number.

On PostgreSQL the rows go as multi-row INSERTs of up to ``_POSTGRES_ROWS_MAX`` rows; these check
that the statement boundaries lose, duplicate or alter nothing (NULLs and dates included), and
that a refused row writes nothing of its batch.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, select
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


def test_rows_chunk_boundary_is_crossed(engine: Engine) -> None:
    # The chunked path is taken on PostgreSQL at 2,500 rows (three statements): the bound is
    # what the test above crosses.
    assert rows_module._POSTGRES_ROWS_MAX == 1000


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
