"""ledger.storage.rows.insert_rows: the rows it writes, on each engine, whatever their number;
and insert_tables, several tables' rows at once.

On PostgreSQL the rows go as multi-row INSERTs of up to ``_POSTGRES_ROWS_MAX`` rows (several
tables' in one statement, as WITH queries); these check that the statement boundaries lose,
duplicate or alter nothing (NULLs and dates included), and that a refused row writes nothing of
its batch.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, Table, event, select
from sqlalchemy.exc import IntegrityError

from ledger.storage import rows as rows_module
from ledger.storage.rows import insert_rows, insert_tables
from ledger.storage.tables import checkpoints, policies, subject_entries, tree_nodes


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


def _tables(policy_count: int, node_count: int) -> list[tuple[Table, list[dict[str, Any]]]]:
    return [
        (policies, [_policy(number) for number in range(policy_count)]),
        (subject_entries, []),
        (
            tree_nodes,
            [{"node_key": key, "hash": bytes([key % 256]) * 32} for key in range(node_count)],
        ),
        (
            checkpoints,
            [{"tree_size": 7, "root_hash": b"r" * 32, "note_bytes": b"note", "created_at_us": 1}],
        ),
    ]


def _stored(engine: Engine, table: Table) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(select(table))]


@pytest.mark.parametrize(
    ("policy_count", "node_count", "postgres_statements"),
    # A table past _POSTGRES_ROWS_MAX rows goes in statements of its own (1001 policies: two;
    # 4,000 nodes: four), the others together in one.
    [(1, 1, 1), (3, 40, 1), (1001, 5, 3), (2, 4000, 5)],
)
def test_several_tables_rows_are_stored_as_given_in_one_statement_on_postgres_when_they_fit(
    engine: Engine, policy_count: int, node_count: int, postgres_statements: int
) -> None:
    statements: list[str] = []
    wanted = _tables(policy_count, node_count)

    def count(*arguments: Any) -> None:
        statements.append(str(arguments[2]))

    event.listen(engine, "before_cursor_execute", count)
    try:
        with engine.begin() as connection:
            insert_tables(connection, wanted)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    for table, rows in wanted:
        keys = [column.name for column in table.primary_key.columns]

        def by_key(row: dict[str, Any], keys: list[str] = keys) -> list[Any]:
            return [row[key] for key in keys]

        assert sorted(_stored(engine, table), key=by_key) == sorted(rows, key=by_key)
    inserts = [statement for statement in statements if "INSERT" in statement]
    if engine.dialect.name != "postgresql":
        assert len(inserts) == 3  # one a table with rows, in the order given
    else:
        assert len(inserts) == postgres_statements
        assert inserts[-1].startswith("WITH ")


@pytest.mark.parametrize("table_refusing", ["policies", "checkpoints"])
def test_a_refused_row_in_any_table_writes_nothing_of_any(
    engine: Engine, table_refusing: str
) -> None:
    wanted = _tables(3, 10)
    for table, rows in wanted:
        if table.name == table_refusing:
            rows.append(dict(rows[0]))  # the same key twice
    with pytest.raises(IntegrityError), engine.begin() as connection:
        insert_tables(connection, wanted)
    for table, _ in wanted:
        assert _stored(engine, table) == []
