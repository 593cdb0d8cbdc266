"""The status of cards and signed documents, read from the projections (docs/cards.md, "Status").

A card is ``REVOKED`` or ``REPLACED`` from the entry that did it; else ``EXPIRED`` once its
``valid_until`` is before the ledger date; else ``CURRENT``. A coverage or registration
certificate is ``CANCELLED`` once the coverage it proves was ended before the last day it
states (a policy cancelled, a member removed, a fee refunded: the coverage row's end reason
is no longer the period's end, or its end moved before ``valid-until``), decided by the entry
that ended it; else ``EXPIRED`` or ``CURRENT`` as a card. The ledger date is today's UTC date
(``ledger.coverage.rules.ledger_date``) on the server's clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, select

from ledger.cards.document import DocumentFields
from ledger.cards.projection import CURRENT
from ledger.coverage.model import PersonRef
from ledger.errors import NotFound
from ledger.storage.log_store import StoredCheckpoint, latest_checkpoint
from ledger.storage.tables import cards, coverages
from ledger.storage.vault_store import identity_of

__all__ = ["CardReader", "CardRow", "DocumentState"]

_PERIOD_END = "PERIOD_END"
EXPIRED = "EXPIRED"
CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class DocumentState:
    """A document's status as of ``as_of`` and the entry that decided it."""

    status: str
    """CURRENT, EXPIRED, REPLACED, REVOKED or CANCELLED."""
    leaf_index: int
    valid_until: dt.date
    as_of: dt.date
    replaced_by: str = ""


@dataclass(frozen=True)
class CardRow:
    """A card as the projection holds it, with its holder's identifier (None once erased)."""

    card_number: str
    insurer_id: str
    person_token: str
    person: PersonRef | None
    issued_on: dt.date
    valid_until: dt.date
    issued_leaf: int
    status: str
    status_leaf: int | None
    replaced_by: str


def _card_state(row: Any, today: dt.date) -> DocumentState:
    if row.status != CURRENT:
        return DocumentState(
            row.status, row.status_leaf, row.valid_until, today, row.replaced_by or ""
        )
    status = EXPIRED if row.valid_until < today else CURRENT
    return DocumentState(status, row.issued_leaf, row.valid_until, today)


class CardReader:
    """Read-only queries over the cards and coverages projections; safe from many threads."""

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

    def card_status(self, number: str, today: dt.date) -> tuple[DocumentState, StoredCheckpoint]:
        """The status of card ``number`` on ``today``; NOT_FOUND for a number never issued."""
        with self._snapshot() as connection:
            head = latest_checkpoint(connection)
            row = _card_row(connection, number)
        return _card_state(row, today), head

    def card(self, number: str, today: dt.date) -> tuple[CardRow, DocumentState, StoredCheckpoint]:
        """A card, its holder's identifier, and its status on ``today``."""
        with self._snapshot() as connection:
            head = latest_checkpoint(connection)
            row = _card_row(connection, number)
            person = identity_of(connection, row.person_key)
        card = CardRow(
            card_number=row.card_number,
            insurer_id=row.insurer_id,
            person_token=row.person_key,
            person=person,
            issued_on=row.issued_on,
            valid_until=row.valid_until,
            issued_leaf=row.issued_leaf,
            status=row.status,
            status_leaf=row.status_leaf,
            replaced_by=row.replaced_by or "",
        )
        return card, _card_state(row, today), head

    def document_status(
        self, document: DocumentFields, today: dt.date
    ) -> tuple[DocumentState, StoredCheckpoint]:
        """The status of a document the log signed (see the module doc)."""
        if document.kind == "insurance card":
            return self.card_status(document.fields.get("card", ""), today)
        fields = document.fields
        with self._snapshot() as connection:
            head = latest_checkpoint(connection)
            rows = connection.execute(
                select(coverages).where(
                    coverages.c.insurer_id == fields.get("insurer", ""),
                    coverages.c.policy_id == fields.get("policy", ""),
                    coverages.c.person_key == fields.get("person-token", ""),
                )
            ).all()
        proven = str(document.leaf_index)
        row = next((r for r in rows if r.leaf_indexes.split(",")[0] == proven), None)
        if row is None:
            raise NotFound(
                "the ledger holds no coverage this document proves",
                reason="DOCUMENT_SUBJECT_NOT_FOUND",
                metadata={"leaf_index": proven},
            )
        if row.end_reason != _PERIOD_END or row.end_date < document.valid_until:
            last = int(row.leaf_indexes.split(",")[-1])
            return DocumentState(CANCELLED, last, document.valid_until, today), head
        status = EXPIRED if document.valid_until < today else CURRENT
        return DocumentState(status, document.leaf_index, document.valid_until, today), head


def _card_row(connection: Connection, number: str) -> Any:
    row = connection.execute(select(cards).where(cards.c.card_number == number)).first()
    if row is None:
        raise NotFound(
            f"no card numbered {number}",
            reason="CARD_NOT_FOUND",
            metadata={"card_number": number},
        )
    return row
