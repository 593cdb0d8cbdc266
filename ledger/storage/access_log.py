"""Access records: every answer that carried a person's data, who asked, why, and when.

One record per call (caller SPIFFE ID, method, purpose, the people asked about, the tree size
the answer was computed at), written before the answer leaves the server: no record, no
answer. Records are append-only (database triggers, migration 0006), like the log. The
operator lists them per person or per caller (``policy-ledger access list``).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Column, Engine, Index, PrimaryKeyConstraint, String, Table, select
from sqlalchemy.types import BigInteger

from ledger.storage.tables import metadata

__all__ = ["AccessLog", "AccessRecord", "access_record_people", "access_records"]

access_records = Table(
    "access_records",
    metadata,
    Column("record_id", String(32), primary_key=True),
    Column("recorded_at_us", BigInteger, nullable=False),
    Column("caller", String(300), nullable=False),
    Column("method", String(200), nullable=False),
    Column("purpose", String(40), nullable=False),
    Column("subject", String(300), nullable=False),
    Column("tree_size", BigInteger, nullable=False),
    Index("access_records_by_caller", "caller", "recorded_at_us"),
)
access_record_people = Table(
    "access_record_people",
    metadata,
    Column("record_id", String(32), nullable=False),
    Column("person_key", String(200), nullable=False),
    PrimaryKeyConstraint("record_id", "person_key"),
    Index("access_record_people_by_person", "person_key"),
)

_INSERT_RECORDS = access_records.insert()
_INSERT_PEOPLE = access_record_people.insert()
"""Built once (SQLAlchemy then reuses their compiled forms): every answer stores a record."""

_LISTED_MAX = 10_000
"""Records one listing returns at most (newest first)."""


@dataclass(frozen=True)
class AccessRecord:
    """One answer that carried people's data."""

    recorded_at: dt.datetime
    caller: str
    method: str
    purpose: str
    person_keys: tuple[str, ...]
    subject: str
    """What was asked about when it is not a person (a policy: ``insurer/policy``)."""
    tree_size: int


def _microseconds(instant: dt.datetime) -> int:
    return int(instant.timestamp() * 1_000_000)


class AccessLog:
    """Append and list access records."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def append(self, record: AccessRecord) -> None:
        """Store ``record`` (one transaction: the record and its people)."""
        self.append_many([record])

    def append_many(self, records: Sequence[AccessRecord]) -> None:
        """Store ``records`` in one transaction (each with its people): all or none."""
        if not records:
            return
        rows: list[dict[str, object]] = []
        links: list[dict[str, object]] = []
        for record in records:
            record_id = secrets.token_hex(16)
            rows.append(
                {
                    "record_id": record_id,
                    "recorded_at_us": _microseconds(record.recorded_at),
                    "caller": record.caller,
                    "method": record.method,
                    "purpose": record.purpose,
                    "subject": record.subject,
                    "tree_size": record.tree_size,
                }
            )
            links.extend(
                {"record_id": record_id, "person_key": key}
                for key in sorted(set(record.person_keys))
            )
        with self._engine.begin() as connection:
            connection.execute(_INSERT_RECORDS, rows)
            if links:
                connection.execute(_INSERT_PEOPLE, links)

    def list(self, *, person_key: str = "", caller: str = "") -> Sequence[AccessRecord]:
        """Records naming ``person_key`` and/or made by ``caller``, newest first."""
        query = select(access_records).order_by(access_records.c.recorded_at_us.desc())
        if person_key:
            query = query.where(
                access_records.c.record_id.in_(
                    select(access_record_people.c.record_id).where(
                        access_record_people.c.person_key == person_key
                    )
                )
            )
        if caller:
            query = query.where(access_records.c.caller == caller)
        with self._engine.connect() as connection:
            rows = connection.execute(query.limit(_LISTED_MAX)).all()
            ids = [row.record_id for row in rows]
            people: dict[str, list[str]] = {record_id: [] for record_id in ids}
            if ids:
                for link in connection.execute(
                    select(access_record_people).where(access_record_people.c.record_id.in_(ids))
                ):
                    people[link.record_id].append(link.person_key)
        return [
            AccessRecord(
                recorded_at=dt.datetime.fromtimestamp(row.recorded_at_us / 1_000_000, dt.UTC),
                caller=row.caller,
                method=row.method,
                purpose=row.purpose,
                person_keys=tuple(sorted(people[row.record_id])),
                subject=row.subject,
                tree_size=row.tree_size,
            )
            for row in rows
        ]
