"""Structural checks of the penalty-decision events (task B): each malformed case refused with
its field, and the accepted twins."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from ledger import limits
from ledger.errors import InvalidArgument
from ledger.events import decode_event, person_tokens_of, validate_event
from ledger.v1 import events_pb2, types_pb2
from tests.builders import (
    objection_filed,
    objection_rejected,
    penalty_assessed,
    penalty_paid,
    penalty_withdrawn,
    person,
    sar,
)

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
CCHI = "cchi"


def _assessed() -> events_pb2.Event:
    return penalty_assessed(
        CCHI, "D1", "7001234567", [(person(1), 90, 150_000, 50_000), (person(2), 9, 900, 0)]
    )


def _refused(event: events_pb2.Event) -> list[str]:
    with pytest.raises(InvalidArgument) as raised:
        validate_event(decode_event(event.SerializeToString()), NOW)
    return [violation.field for violation in raised.value.details.field_violations]


def _mutated(change: Callable[[events_pb2.Event], object]) -> events_pb2.Event:
    event = _assessed()
    change(event)
    return event


LINES = "event.penalty_assessed.lines"
CASES: dict[str, tuple[Callable[[], events_pb2.Event], str]] = {
    "total not the sum": (
        lambda: _mutated(lambda e: setattr(e.penalty_assessed.total, "amount_minor", 1)),
        "event.penalty_assessed.total.amount_minor",
    ),
    "a line in another currency": (
        lambda: _mutated(
            lambda e: e.penalty_assessed.lines[1].fine.CopyFrom(
                types_pb2.Money(currency_code="KWD", amount_minor=0)
            )
        ),
        f"{LINES}[1].fine.currency_code",
    ),
    "no uninsured days": (
        lambda: _mutated(lambda e: setattr(e.penalty_assessed.lines[0], "uninsured_days", 0)),
        f"{LINES}[0].uninsured_days",
    ),
    "more days than the period": (
        lambda: _mutated(lambda e: setattr(e.penalty_assessed.lines[0], "uninsured_days", 182)),
        f"{LINES}[0].uninsured_days",
    ),
    "a person twice": (
        lambda: _mutated(
            lambda e: setattr(
                e.penalty_assessed.lines[1],
                "person_token",
                e.penalty_assessed.lines[0].person_token,
            )
        ),
        f"{LINES}[1].person_token",
    ),
    "an identifier, not a token": (
        lambda: _mutated(lambda e: setattr(e.penalty_assessed.lines[0], "person_token", "2000")),
        f"{LINES}[0].person_token",
    ),
    "no lines": (lambda: _mutated(lambda e: e.penalty_assessed.ClearField("lines")), LINES),
    "too many lines": (
        lambda: penalty_assessed(
            CCHI,
            "D1",
            "7001234567",
            [(person(n), 1, 1, 0) for n in range(limits.penalty_lines_max + 1)],
        ),
        LINES,
    ),
    "no decision id": (
        lambda: _mutated(lambda e: setattr(e.penalty_assessed, "decision_id", "")),
        "event.penalty_assessed.decision_id",
    ),
    "period backwards": (
        lambda: penalty_assessed(
            CCHI,
            "D1",
            "7001234567",
            [(person(1), 1, 1, 0)],
            period=(dt.date(2026, 6, 30), dt.date(2026, 1, 1)),
        ),
        "event.penalty_assessed.period_end",
    ),
    "objection without a stage": (
        lambda: objection_filed(CCHI, "D1", events_pb2.OBJECTION_STAGE_UNSPECIFIED),
        "event.objection_filed.stage",
    ),
    "rejection of an unknown stage": (
        lambda: objection_rejected(CCHI, "D1", 9),
        "event.objection_rejected.stage",
    ),
    "a payment of nothing": (
        lambda: penalty_paid(CCHI, "D1", sar(0)),
        "event.penalty_paid.amount.amount_minor",
    ),
    "a withdrawal without a reason": (
        lambda: penalty_withdrawn(CCHI, "D1", ""),
        "event.penalty_withdrawn.reason",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_decision_events_are_refused_with_their_field(case: str) -> None:
    make, field = CASES[case]
    assert field in _refused(make())


def test_decision_events_accepted_twins() -> None:
    for event in (
        _assessed(),
        objection_filed(CCHI, "D1", reference="OBJ-1"),
        objection_filed(CCHI, "D1", events_pb2.OBJECTION_STAGE_GRIEVANCE),
        objection_rejected(CCHI, "D1"),
        penalty_paid(CCHI, "D1", sar(1)),
        penalty_withdrawn(CCHI, "D1"),
    ):
        validate_event(decode_event(event.SerializeToString()), NOW)


def test_a_decision_names_its_people_by_token_for_the_vault_check() -> None:
    event = _assessed()
    named = person_tokens_of(event)
    assert [field for _, field in named] == [f"{LINES}[0].person_token", f"{LINES}[1].person_token"]
    assert [token for token, _ in named] == [
        line.person_token for line in event.penalty_assessed.lines
    ]
