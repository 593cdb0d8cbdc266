"""Field checks of the card events (``CardIssued``, ``CardReplaced``, ``CardRevoked``): what
admission refuses with INVALID_ARGUMENT before any rule reads state (``ledger.events`` calls
these through its table of body checks)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from ledger.cards.number import card_number_problem
from ledger.errors import FieldViolation
from ledger.identity.tokens import is_person_token
from ledger.v1 import events_pb2, types_pb2

__all__ = ["CARD_BODY_CHECKS", "card_tokens_of"]


def _card_number(violations: list[FieldViolation], field: str, number: str) -> None:
    if not number:
        violations.append(FieldViolation(field, "required"))
        return
    problem = card_number_problem(number)
    if problem is not None:
        violations.append(FieldViolation(field, problem))


def _date(
    violations: list[FieldViolation], field: str, date: types_pb2.CivilDate, *, present: bool
) -> None:
    if not present:
        violations.append(FieldViolation(field, "required"))
        return
    try:
        dt.date(date.year, date.month, date.day)
    except ValueError:
        violations.append(
            FieldViolation(field, f"not a calendar date: {date.year}-{date.month}-{date.day}")
        )


def _reason(
    violations: list[FieldViolation], field: str, reason: events_pb2.CardReason.ValueType
) -> None:
    if reason == events_pb2.CARD_REASON_UNSPECIFIED:
        violations.append(FieldViolation(field, "required"))
    elif reason not in events_pb2.CardReason.values():
        violations.append(FieldViolation(field, "unknown value"))


def _check_card_issued(
    violations: list[FieldViolation], field: str, body: events_pb2.CardIssued
) -> None:
    _card_number(violations, f"{field}.card_number", body.card_number)
    if not body.person_token:
        violations.append(FieldViolation(f"{field}.person_token", "required"))
    elif not is_person_token(body.person_token):
        violations.append(
            FieldViolation(
                f"{field}.person_token", 'not a person token ("pt_" and 26 base32 characters)'
            )
        )
    _date(
        violations, f"{field}.valid_until", body.valid_until, present=body.HasField("valid_until")
    )


def _check_card_replaced(
    violations: list[FieldViolation], field: str, body: events_pb2.CardReplaced
) -> None:
    _card_number(violations, f"{field}.old_card_number", body.old_card_number)
    _card_number(violations, f"{field}.new_card_number", body.new_card_number)
    if body.old_card_number and body.old_card_number == body.new_card_number:
        violations.append(
            FieldViolation(f"{field}.new_card_number", "must differ from old_card_number")
        )
    _date(
        violations, f"{field}.valid_until", body.valid_until, present=body.HasField("valid_until")
    )
    _reason(violations, f"{field}.reason", body.reason)


def _check_card_revoked(
    violations: list[FieldViolation], field: str, body: events_pb2.CardRevoked
) -> None:
    _card_number(violations, f"{field}.card_number", body.card_number)
    _reason(violations, f"{field}.reason", body.reason)


CARD_BODY_CHECKS: dict[str, Callable[[list[FieldViolation], str, Any], None]] = {
    "card_issued": _check_card_issued,
    "card_replaced": _check_card_replaced,
    "card_revoked": _check_card_revoked,
}
"""The checks of the card event bodies, by ``Event.body`` field name."""


def card_tokens_of(event: events_pb2.Event) -> list[tuple[str, str]]:
    """(token, field) of the person a card event names (only CardIssued names one)."""
    if event.WhichOneof("body") == "card_issued":
        return [(event.card_issued.person_token, "event.card_issued.person_token")]
    return []
