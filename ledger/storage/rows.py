"""Inserting many rows of one table with one prepared statement, for the sequencer's batches.

SQLAlchemy's ``connection.execute(table.insert(), rows)`` does per-row Python work (building each
row's parameters from the compiled statement) that costs more than SQLite's own insert: a batch
of 64 events writes some 900 rows over six tables. :func:`insert_rows` writes the same values with
the same SQL through ``exec_driver_sql``: one ``executemany`` of positional tuples, each value
passed through the column type's own bind processor for the dialect (so a ``Date`` is stored on
SQLite exactly as SQLAlchemy stores it), on the caller's connection and transaction. It stays a
SQLAlchemy execution: engine events (tracing, the tests' fault injection) see the statement, and a
driver error is raised as SQLAlchemy's ``DBAPIError`` with its disconnect handling.
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
    connection.exec_driver_sql(sql, parameters)


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
