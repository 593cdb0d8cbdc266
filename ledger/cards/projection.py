"""The rules and the projection of the card events (docs/cards.md, "Rules").

:class:`ledger.coverage.projector.Projector` dispatches ``card_issued``, ``card_replaced`` and
``card_revoked`` here. Every check runs before anything is written (the appender has no
savepoint per entry): a refused card event writes nothing.

* ``CardIssued``: the number is unused (ever: numbers are never reused); the signer is a
  licensed, unsuspended insurer covering the person on the entry's ledger date or later (a
  coverage of that insurer not ended before it); the person holds no current card of that
  insurer (replace it instead); ``valid_until`` is on or after the ledger date and at most
  ``limits.card_validity_days_max`` days after it.
* ``CardReplaced``: the old card exists, the signer issued it, it is current (not replaced, not
  revoked; an expired card may be replaced: that is its renewal); the new number and
  ``valid_until`` as for ``CardIssued``; the insurer still covers the person.
* ``CardRevoked``: the card exists, the signer issued it, it is current.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update

from ledger import limits
from ledger.errors import AlreadyExists, FailedPrecondition, FieldViolation, NotFound
from ledger.storage.tables import cards, coverages
from ledger.v1 import events_pb2, types_pb2

if TYPE_CHECKING:
    from ledger.coverage.projector import Projector

__all__ = ["CURRENT", "REPLACED", "REVOKED", "card_handlers"]

CURRENT = "CURRENT"
REPLACED = "REPLACED"
REVOKED = "REVOKED"


def card_handlers(
    projector: Projector,
) -> dict[str, Callable[[events_pb2.Event, int], None]]:
    """The projector's handlers of the card event bodies."""
    return {
        "card_issued": lambda event, leaf: _card_issued(projector, event, leaf),
        "card_replaced": lambda event, leaf: _card_replaced(projector, event, leaf),
        "card_revoked": lambda event, leaf: _card_revoked(projector, event, leaf),
    }


def _to_date(civil: types_pb2.CivilDate) -> dt.date:
    return dt.date(civil.year, civil.month, civil.day)


def _card(projector: Projector, number: str) -> Any:
    return projector.connection.execute(select(cards).where(cards.c.card_number == number)).first()


def _check_unused(projector: Projector, number: str, field: str) -> None:
    if _card(projector, number) is not None:
        raise AlreadyExists(
            f"card number {number} was already issued (numbers are never reused)",
            reason="CARD_NUMBER_USED",
            field_violations=[FieldViolation(field, "already issued")],
            metadata={"card_number": number},
        )


def _check_valid_until(valid_until: dt.date, today: dt.date, field: str) -> None:
    latest = today + dt.timedelta(days=limits.card_validity_days_max)
    if not today <= valid_until <= latest:
        raise FailedPrecondition(
            f"valid_until {valid_until} must be between the ledger date {today} and {latest} "
            f"({limits.card_validity_days_max} days)",
            reason="CARD_VALIDITY_INVALID",
            field_violations=[FieldViolation(field, f"between {today} and {latest}")],
            metadata={"ledger_date": today.isoformat(), "latest": latest.isoformat()},
        )


def _check_covered(
    projector: Projector, insurer_id: str, token: str, today: dt.date, field: str
) -> None:
    projector.flush()  # this batch's new coverages, written so the query sees them
    covered = projector.connection.execute(
        select(coverages.c.policy_id)
        .where(
            coverages.c.person_key == token,
            coverages.c.insurer_id == insurer_id,
            coverages.c.end_date >= today,
            coverages.c.end_date >= coverages.c.start_date,
        )
        .limit(1)
    ).first()
    if covered is None:
        raise FailedPrecondition(
            f"insurer {insurer_id!r} does not cover this person on {today} or later: only the "
            "insurer (fund) covering a person issues their card",
            reason="CARD_PERSON_NOT_COVERED",
            field_violations=[FieldViolation(field, f"not covered by {insurer_id} from {today}")],
            metadata={"insurer_id": insurer_id, "ledger_date": today.isoformat()},
        )


def _current_card_of(projector: Projector, number: str, insurer_id: str, field: str) -> Any:
    row = _card(projector, number)
    if row is None:
        raise NotFound(
            f"no card numbered {number}",
            reason="CARD_NOT_FOUND",
            field_violations=[FieldViolation(field, "no such card")],
            metadata={"card_number": number},
        )
    if row.insurer_id != insurer_id:
        raise FailedPrecondition(
            f"card {number} was issued by another insurer: only its issuer replaces or revokes it",
            reason="CARD_OF_ANOTHER_INSURER",
            field_violations=[FieldViolation(field, "issued by another insurer")],
            metadata={"card_number": number},
        )
    if row.status != CURRENT:
        raise FailedPrecondition(
            f"card {number} is {row.status.lower()} (leaf {row.status_leaf}): only a current "
            "card is replaced or revoked",
            reason=f"CARD_{row.status}",
            field_violations=[FieldViolation(field, row.status.lower())],
            metadata={"card_number": number, "leaf_index": str(row.status_leaf)},
        )
    return row


def _insert(
    projector: Projector,
    *,
    number: str,
    insurer_id: str,
    token: str,
    valid_until: dt.date,
    leaf_index: int,
) -> None:
    projector.connection.execute(
        insert(cards).values(
            card_number=number,
            insurer_id=insurer_id,
            person_key=token,
            issued_on=projector.ledger_date,
            valid_until=valid_until,
            issued_leaf=leaf_index,
            status=CURRENT,
            status_leaf=None,
            replaced_by=None,
        )
    )


def _card_issued(projector: Projector, event: events_pb2.Event, leaf_index: int) -> None:
    body = event.card_issued
    field = "event.card_issued"
    insurer_id = event.insurer_id
    today = projector.ledger_date
    projector.require_licensed(insurer_id)
    _check_unused(projector, body.card_number, f"{field}.card_number")
    valid_until = _to_date(body.valid_until)
    _check_valid_until(valid_until, today, f"{field}.valid_until")
    _check_covered(projector, insurer_id, body.person_token, today, f"{field}.person_token")
    held = projector.connection.execute(
        select(cards.c.card_number).where(
            cards.c.person_key == body.person_token,
            cards.c.insurer_id == insurer_id,
            cards.c.status == CURRENT,
        )
    ).first()
    if held is not None:
        raise FailedPrecondition(
            f"the person already holds current card {held.card_number} of {insurer_id!r}: "
            "replace it (CardReplaced)",
            reason="CARD_ALREADY_HELD",
            field_violations=[FieldViolation(f"{field}.person_token", "holds a current card")],
            metadata={"card_number": held.card_number},
        )
    _insert(
        projector,
        number=body.card_number,
        insurer_id=insurer_id,
        token=body.person_token,
        valid_until=valid_until,
        leaf_index=leaf_index,
    )
    projector.index(
        leaf_index,
        [f"insurer:{insurer_id}", f"person:{body.person_token}", f"card:{body.card_number}"],
    )


def _card_replaced(projector: Projector, event: events_pb2.Event, leaf_index: int) -> None:
    body = event.card_replaced
    field = "event.card_replaced"
    insurer_id = event.insurer_id
    today = projector.ledger_date
    projector.require_licensed(insurer_id)
    old = _current_card_of(projector, body.old_card_number, insurer_id, f"{field}.old_card_number")
    _check_unused(projector, body.new_card_number, f"{field}.new_card_number")
    valid_until = _to_date(body.valid_until)
    _check_valid_until(valid_until, today, f"{field}.valid_until")
    _check_covered(projector, insurer_id, old.person_key, today, f"{field}.old_card_number")
    projector.connection.execute(
        update(cards)
        .where(cards.c.card_number == body.old_card_number)
        .values(status=REPLACED, status_leaf=leaf_index, replaced_by=body.new_card_number)
    )
    _insert(
        projector,
        number=body.new_card_number,
        insurer_id=insurer_id,
        token=old.person_key,
        valid_until=valid_until,
        leaf_index=leaf_index,
    )
    projector.index(
        leaf_index,
        [
            f"insurer:{insurer_id}",
            f"person:{old.person_key}",
            f"card:{body.old_card_number}",
            f"card:{body.new_card_number}",
        ],
    )


def _card_revoked(projector: Projector, event: events_pb2.Event, leaf_index: int) -> None:
    body = event.card_revoked
    field = "event.card_revoked"
    insurer_id = event.insurer_id
    old = _current_card_of(projector, body.card_number, insurer_id, f"{field}.card_number")
    projector.connection.execute(
        update(cards)
        .where(cards.c.card_number == body.card_number)
        .values(status=REVOKED, status_leaf=leaf_index)
    )
    projector.index(
        leaf_index,
        [f"insurer:{insurer_id}", f"person:{old.person_key}", f"card:{body.card_number}"],
    )
