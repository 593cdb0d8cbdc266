"""Quotes: what a portal asks (QuoteRequest), and the stored quote as a typed value
(QuoteRecord with QuoteLine per member), parsed once from ``quotes.quote_json``."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ledger.clock import from_micros
from ledger.coverage.model import HouseholdVerdict
from ledger.errors import FailedPrecondition, FieldViolation
from ledger.v1 import types_pb2
from payments import fees

__all__ = [
    "MemberInput",
    "QuoteLine",
    "QuoteRecord",
    "QuoteRequest",
    "quote_record",
    "refuse_changed_schedule",
]


@dataclass(frozen=True)
class MemberInput:
    """A household member as the residence record states it."""

    person: types_pb2.PersonId
    relationship: fees.Relationship
    residence_category: fees.ResidenceCategory
    birth_date: dt.date | None = None
    domestic_worker_ordinal: int | None = None


@dataclass(frozen=True)
class QuoteRequest:
    """What a portal asks a quote for."""

    jurisdiction: str
    sponsor: types_pb2.PersonId
    sponsor_is_kuwaiti: bool
    members: tuple[MemberInput, ...]
    period_start: dt.date
    period_end: dt.date


@dataclass(frozen=True)
class QuoteLine:
    """One member's line of a quote, typed (stored as JSON in ``quotes.quote_json``, parsed
    once when the quote is read)."""

    person: types_pb2.PersonId
    person_key: str
    relationship: fees.Relationship
    schedule_version: str
    rule_id: str
    description: str
    amount_minor: int

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {
            "person": {
                "type": int(self.person.type),
                "value": self.person.value,
                "country_code": self.person.country_code,
            },
            "person_key": self.person_key,
            "relationship": self.relationship.value,
            "schedule_version": self.schedule_version,
            "rule_id": self.rule_id,
            "description": self.description,
            "amount_minor": self.amount_minor,
        }

    @classmethod
    def from_json(cls, stored: Mapping[str, Any]) -> QuoteLine:
        """The line a stored form describes."""
        return cls(
            person=types_pb2.PersonId(**stored["person"]),
            person_key=str(stored["person_key"]),
            relationship=fees.Relationship(stored["relationship"]),
            schedule_version=str(stored["schedule_version"]),
            rule_id=str(stored["rule_id"]),
            description=str(stored["description"]),
            amount_minor=int(stored["amount_minor"]),
        )


@dataclass(frozen=True)
class QuoteRecord:
    """A stored quote."""

    quote_id: str
    jurisdiction: str
    sponsor_key: str
    sponsor: types_pb2.PersonId
    currency: str
    total_minor: int
    lines: tuple[QuoteLine, ...]
    schedule_version: str
    period_start: dt.date
    period_end: dt.date
    expires_at: dt.datetime
    payable: bool
    """False for a private-insurance jurisdiction or a zero total: nothing to collect."""
    household: HouseholdVerdict | None
    """For a private-insurance jurisdiction: the household check the renewal depends on."""


def refuse_changed_schedule(
    quote_id: str, version: str, jurisdiction: str, now: dt.datetime
) -> None:
    """Refuse to collect a quote priced by a schedule no longer in force today."""
    try:
        in_force = fees.default_schedules().for_date(jurisdiction, now.date()).version
    except fees.FeeError as error:
        in_force = f"none ({error.message})"
    if in_force != version:
        raise FailedPrecondition(
            f"quote {quote_id!r} was priced by fee schedule {version}, but {in_force} is in "
            "force today: ask a new quote (nothing is charged)",
            reason="FEE_SCHEDULE_CHANGED",
            field_violations=[FieldViolation("quote_id", "priced by another schedule")],
            metadata={"schedule_version": version, "in_force": in_force},
        )


def quote_record(row: Any) -> QuoteRecord:
    """A ``quotes`` row as its typed record (the JSON parsed here, once)."""
    stored = json.loads(row.quote_json)
    return QuoteRecord(
        quote_id=row.quote_id,
        jurisdiction=row.jurisdiction,
        sponsor_key=row.sponsor_key,
        sponsor=types_pb2.PersonId(**stored["sponsor"]),
        currency=row.currency_code,
        total_minor=int(row.total_minor),
        lines=tuple(QuoteLine.from_json(line) for line in stored["lines"]),
        schedule_version=stored["schedule_version"],
        period_start=dt.date.fromisoformat(stored["period_start"]),
        period_end=dt.date.fromisoformat(stored["period_end"]),
        expires_at=from_micros(row.expires_at_us),
        payable=bool(stored["payable"]),
        household=None,
    )
