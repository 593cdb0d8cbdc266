"""Inserting many rows of one table with one prepared statement, for the sequencer's batches.

SQLAlchemy's ``connection.execute(table.insert(), rows)`` does per-row Python work (building each
row's parameters from the compiled statement) that costs more than SQLite's own insert: a batch
of 64 events writes some 900 rows over six tables. :func:`insert_rows` writes the same values with
the same SQL through ``exec_driver_sql``: one ``executemany`` of positional tuples, each value
passed through the column type's own bind processor for the dialect (so a ``Date`` is stored on
SQLite exactly as SQLAlchemy stores it), on the caller's connection and transaction. It stays a
SQLAlchemy execution: engine events (tracing, the tests' fault injection) see the statement, and a
driver error is raised as SQLAlchemy's ``DBAPIError`` with its disconnect handling.

On PostgreSQL the rows go as one multi-row ``INSERT ... VALUES (...), (...)`` (up to
:data:`_POSTGRES_ROWS_MAX` rows a statement) instead: psycopg runs an ``executemany`` as a
pipeline of one Bind/Execute a row, and its per-row pipeline work (sending, polling for each
row's result) cost the sequencer 35-60 µs of CPU a row, more than the row's own insert
(docs/benchmarks.md, "The PostgreSQL sequencer's write path"). Same rows, in the same order, in
the same transaction; a constraint violation still fails the whole statement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.engine import Dialect

__all__ = ["insert_rows"]

_Processor = Callable[[Any], Any] | None


def insert_rows(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (column name to value; every row names the same columns, as the first
    one does) into ``table`` in one ``executemany`` on ``connection``'s transaction."""
    if not rows:
        return
    columns = tuple(rows[0])
    sql, processors = _prepared(connection.dialect, table, columns)
    if any(processor is not None for processor in processors):
        parameters = [
            tuple(
                value if processor is None or value is None else processor(value)
                for value, processor in zip(
                    (row[column] for column in columns), processors, strict=True
                )
            )
            for row in rows
        ]
    else:
        parameters = [tuple(row[column] for column in columns) for row in rows]
    if connection.dialect.name != "postgresql":
        connection.exec_driver_sql(sql, parameters)
        return
    # PostgreSQL's protocol carries at most 65,535 parameters a statement.
    rows_max = max(1, min(_POSTGRES_ROWS_MAX, _POSTGRES_PARAMETERS_MAX // len(columns)))
    for start in range(0, len(parameters), rows_max):
        chunk = parameters[start : start + rows_max]
        connection.exec_driver_sql(
            _multi_row(sql, len(columns), len(chunk)),
            tuple(value for row in chunk for value in row),
        )


_POSTGRES_ROWS_MAX = 1000
"""Rows in one PostgreSQL INSERT at most (fewer for a table so wide that 1,000 rows would pass
:data:`_POSTGRES_PARAMETERS_MAX`)."""
_POSTGRES_PARAMETERS_MAX = 65_535
"""The most bind parameters one PostgreSQL statement takes (the protocol's 16-bit count)."""


@lru_cache(maxsize=256)
def _multi_row(sql: str, width: int, count: int) -> str:
    """``sql`` (one row's INSERT, as :func:`_prepared` built it) for ``count`` rows."""
    one = f"({', '.join('%s' for _ in range(width))})"
    return sql[: sql.rindex(" VALUES ")] + " VALUES " + ", ".join(one for _ in range(count))


@lru_cache(maxsize=64)
def _prepared(
    dialect: Dialect, table: Table, columns: tuple[str, ...]
) -> tuple[str, tuple[_Processor, ...]]:
    """The INSERT statement in the driver's placeholder style, and each column's bind
    processor for ``dialect`` (None where the driver takes the value as it is)."""
    marker = "?" if dialect.paramstyle == "qmark" else "%s"
    quote = dialect.identifier_preparer.quote
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(column) for column in columns)}) "
        f"VALUES ({', '.join(marker for _ in columns)})"
    )
    processors = tuple(table.c[column].type.bind_processor(dialect) for column in columns)
    return sql, processors
