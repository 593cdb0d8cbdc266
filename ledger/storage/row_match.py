"""Rows whose several key columns equal one of a list of value tuples, in a form both engines
answer from an index.

``tuple_(a, b).in_([...])`` (a row-value IN list) is what one would write, but SQLite answers
it by scanning the whole table (``EXPLAIN QUERY PLAN``: ``SCAN person_identities``, 3M rows at
the household benchmark's 1M policies), while ``(a = ? AND b = ?) OR (a = ? AND b = ?)`` is a
``MULTI-INDEX OR`` of index searches (PostgreSQL: a ``BitmapOr`` of index scans). The terms go
in chunks, so that SQLite's expression depth limit (1,000) is never reached.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, or_

__all__ = ["CHUNK", "any_row"]

CHUNK = 100
"""Value tuples per statement at most."""


def any_row(
    columns: Sequence[ColumnElement[Any]], rows: Sequence[Sequence[object]]
) -> Iterator[ColumnElement[bool]]:
    """One condition per chunk of ``rows`` (each as many values as ``columns``): true of a
    row whose columns equal one of the chunk's value tuples. No condition when ``rows`` is
    empty."""
    for start in range(0, len(rows), CHUNK):
        yield or_(
            *(
                and_(*(column == value for column, value in zip(columns, row, strict=True)))
                for row in rows[start : start + CHUNK]
            )
        )
