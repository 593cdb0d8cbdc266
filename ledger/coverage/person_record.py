"""A person's own record (issue 11, item 4): their coverages and the declarations they made,
named by person tokens only, and whom a person may read.

A person (role beneficiary, principal = their person token) may read their own record and the
records of the people they declared whose declaration the fund accepted: :meth:`readable_by`
answers that set, which the authorization interceptor checks (``Limit.PERSON``,
ledger/rpc/authorization.py) before the servicer runs. Read-only; safe from many threads.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, select

from ledger.coverage.declarations import ACCEPTED
from ledger.coverage.projector import PERIOD_END
from ledger.storage.log_store import StoredCheckpoint, latest_checkpoint
from ledger.storage.tables import beneficiary_declarations, coverages, declared_beneficiaries

__all__ = [
    "DeclaredPerson",
    "PersonRecord",
    "PersonRecordReader",
    "RecordCoverage",
    "RecordDeclaration",
]


@dataclass(frozen=True)
class RecordCoverage:
    """One coverage period of the person."""

    insurer_id: str
    policy_id: str
    sponsor_token: str
    relationship: str
    """``coverages.relationship``: ``self``, ``spouse``, ``child``, ..."""
    start: dt.date
    end: dt.date
    end_reason: str


@dataclass(frozen=True)
class DeclaredPerson:
    """One person of a declaration, with the document references declared."""

    person_token: str
    relationship: str
    documents: tuple[tuple[str, str], ...]
    """(kind without its prefix, reference)."""


@dataclass(frozen=True)
class RecordDeclaration:
    """One declaration the person made, and where it stands."""

    declaration_id: str
    insurer_id: str
    policy_id: str
    status: str
    reason: str
    people: tuple[DeclaredPerson, ...]
    declared_leaf_index: int
    decided_leaf_index: int | None


@dataclass(frozen=True)
class PersonRecord:
    """What the ledger holds about one person, for that person, at one checkpoint."""

    person_token: str
    coverages: tuple[RecordCoverage, ...]
    declarations: tuple[RecordDeclaration, ...]
    head: StoredCheckpoint


class PersonRecordReader:
    """Reads person records and who may read them."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        connection = self._engine.connect()
        if connection.dialect.name != "sqlite":
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
        try:
            with connection.begin():
                yield connection
        finally:
            connection.close()

    def readable_by(self, person_token: str) -> frozenset[str]:
        """The tokens whose records ``person_token`` may read: their own, and each person of
        their accepted declarations."""
        query = (
            select(declared_beneficiaries.c.person_token)
            .join(
                beneficiary_declarations,
                (beneficiary_declarations.c.declared_by == declared_beneficiaries.c.declared_by)
                & (
                    beneficiary_declarations.c.declaration_id
                    == declared_beneficiaries.c.declaration_id
                ),
            )
            .where(
                declared_beneficiaries.c.declared_by == person_token,
                beneficiary_declarations.c.status == ACCEPTED,
            )
        )
        with self._engine.connect() as connection:
            declared = connection.execute(query).scalars().all()
        return frozenset({person_token, *declared})

    def insured_by(self, insurer_id: str, person_token: str) -> bool:
        """Whether ``insurer_id`` covers ``person_token`` as SELF today (a current coverage of
        one of its policies): the people a fund may issue enrolment codes for."""
        query = (
            select(coverages.c.person_key)
            .where(
                coverages.c.insurer_id == insurer_id,
                coverages.c.person_key == person_token,
                coverages.c.relationship == "self",
                coverages.c.end_reason == PERIOD_END,
            )
            .limit(1)
        )
        with self._engine.connect() as connection:
            return connection.execute(query).first() is not None

    def record(self, person_token: str) -> PersonRecord:
        """The record of ``person_token`` (empty lists for a token the ledger knows nothing of:
        an empty record says no more than a refusal would)."""
        with self._snapshot() as connection:
            head = latest_checkpoint(connection)
            rows = connection.execute(
                select(coverages)
                .where(coverages.c.person_key == person_token)
                .order_by(coverages.c.start_date, coverages.c.insurer_id, coverages.c.policy_id)
            ).all()
            declarations = _declarations(connection, person_token)
        return PersonRecord(
            person_token=person_token,
            coverages=tuple(
                RecordCoverage(
                    insurer_id=row.insurer_id,
                    policy_id=row.policy_id,
                    sponsor_token=row.sponsor_key,
                    relationship=row.relationship,
                    start=row.start_date,
                    end=row.end_date,
                    end_reason=row.end_reason,
                )
                for row in rows
            ),
            declarations=declarations,
            head=head,
        )


def _declarations(connection: Connection, person_token: str) -> tuple[RecordDeclaration, ...]:
    rows = connection.execute(
        select(beneficiary_declarations)
        .where(beneficiary_declarations.c.declared_by == person_token)
        .order_by(beneficiary_declarations.c.declared_leaf_index)
    ).all()
    people: dict[str, list[DeclaredPerson]] = {row.declaration_id: [] for row in rows}
    for person in connection.execute(
        select(declared_beneficiaries)
        .where(declared_beneficiaries.c.declared_by == person_token)
        .order_by(declared_beneficiaries.c.declaration_id, declared_beneficiaries.c.position)
    ):
        people[person.declaration_id].append(
            DeclaredPerson(
                person_token=person.person_token,
                relationship=person.relationship,
                documents=tuple((kind, ref) for kind, ref in json.loads(person.documents)),
            )
        )
    return tuple(
        RecordDeclaration(
            declaration_id=row.declaration_id,
            insurer_id=row.insurer_id,
            policy_id=row.policy_id,
            status=row.status,
            reason=row.reason,
            people=tuple(people[row.declaration_id]),
            declared_leaf_index=row.declared_leaf_index,
            decided_leaf_index=row.decided_leaf_index,
        )
        for row in rows
    )
