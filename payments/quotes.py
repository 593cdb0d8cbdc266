"""Quotes: what a portal asks (QuoteRequest), the use case that prices and stores it
(:func:`quote`: refused before anything is written when the fee could not be recorded), and the
stored quote as a typed value (QuoteRecord with QuoteLine per member), parsed once from
``quotes.quote_json``."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert

from ledger.clock import from_micros, to_micros
from ledger.coverage.model import HouseholdVerdict
from ledger.coverage.model import Relationship as CoverageRelationship
from ledger.coverage.projector import person_ref
from ledger.errors import FailedPrecondition, FieldViolation
from ledger.v1 import types_pb2
from payments import fees
from payments.erasure import stored_person
from payments.saga import Saga, payment_id_of, refuse_unrecordable, refuse_unrecordable_reading
from payments.tables import quotes

__all__ = [
    "PRIVATE_INSURANCE_JURISDICTIONS",
    "MemberInput",
    "QuoteLine",
    "QuoteRecord",
    "QuoteRequest",
    "quote",
    "quote_record",
    "refuse_changed_schedule",
]

PRIVATE_INSURANCE_JURISDICTIONS = frozenset({"SA"})
"""Where residents must hold private insurance instead of paying a fee (the Saudi model)."""


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
            person=stored_person(stored["person"]),
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
        sponsor=stored_person(stored["sponsor"]),
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


_STORE_QUOTE = insert(quotes)
"""Built once (its cache key generated once)."""


def quote(saga: Saga, request: QuoteRequest) -> QuoteRecord:
    """Price the renewal (or, for a private-insurance jurisdiction, check the household)."""
    now = saga.clock.now()
    sponsor_key = person_ref(request.sponsor).key
    household: HouseholdVerdict | None = None
    lines: list[QuoteLine] = []
    if request.jurisdiction in PRIVATE_INSURANCE_JURISDICTIONS:
        household = _household(saga, request)
        currency, total, version = "SAR", 0, "private-insurance"
    else:
        facts = [
            fees.MemberFacts(
                person_key=person_ref(member.person).key,
                relationship=member.relationship,
                residence_category=member.residence_category,
                birth_date=member.birth_date,
                sponsor_is_kuwaiti=request.sponsor_is_kuwaiti,
                domestic_worker_ordinal=member.domestic_worker_ordinal,
            )
            for member in request.members
        ]
        quote = fees.quote_fees(
            request.jurisdiction, now.date(), request.period_start, request.period_end, facts
        )
        for member, line in zip(request.members, quote.lines, strict=True):
            lines.append(
                QuoteLine(
                    person=member.person,
                    person_key=line.person_key,
                    relationship=member.relationship,
                    schedule_version=line.schedule_version,
                    rule_id=line.rule_id,
                    description=line.rule_description,
                    amount_minor=line.amount_minor,
                )
            )
        currency, total, version = quote.currency, quote.total_minor, quote.schedule_version
    record = QuoteRecord(
        quote_id=f"q-{secrets.token_hex(8)}",
        jurisdiction=request.jurisdiction,
        sponsor_key=sponsor_key,
        sponsor=request.sponsor,
        currency=currency,
        total_minor=total,
        lines=tuple(lines),
        schedule_version=version,
        period_start=request.period_start,
        period_end=request.period_end,
        expires_at=now + saga.quote_ttl,
        payable=household is None and total > 0,
        household=household,
    )
    stored = {
        "sponsor": {
            "type": int(request.sponsor.type),
            "value": request.sponsor.value,
            "country_code": request.sponsor.country_code,
        },
        "lines": [line.to_json() for line in lines],
        "schedule_version": version,
        "period_start": request.period_start.isoformat(),
        "period_end": request.period_end.isoformat(),
        "payable": record.payable,
    }
    serialized = json.dumps(stored, sort_keys=True)
    checked = saga.uow.writers_serialised and record.payable and _checked_beforehand(saga, record)
    with saga.uow.write() as connection:
        if record.payable and not checked:
            refuse_unrecordable(
                saga,
                connection,
                saga.entries.fee_collected(
                    connection,
                    payment_id_of(record.quote_id),
                    record,
                    gateway="quote",
                    gateway_reference="",
                ),
            )
        connection.execute(
            _STORE_QUOTE,
            {
                "quote_id": record.quote_id,
                "jurisdiction": request.jurisdiction,
                "sponsor_key": sponsor_key,
                "quote_json": serialized,
                "total_minor": total,
                "currency_code": currency,
                "created_at_us": to_micros(now),
                "expires_at_us": to_micros(record.expires_at),
            },
        )
    return record


def _checked_beforehand(saga: Saga, record: QuoteRecord) -> bool:
    """Check that the fee could be recorded (:func:`refuse_unrecordable`) before the write
    transaction, when the vault knows every person of the quote (a household renewing again):
    True when it passed; raises what it refuses. False, having refused nothing, when a person
    is new to the vault: the write transaction issues their token and checks there.

    Why: on SQLite every write transaction holds the database's one write lock (see
    ``payments.charges._checked_beforehand``, the same for StartPayment); a quote's check is
    advisory besides (StartPayment and the append check again), so a change between the check
    and the quote's insert is refused by them."""
    with saga.uow.read() as connection:
        event = saga.entries.fee_collected_if_known(
            connection,
            payment_id_of(record.quote_id),
            record,
            gateway="quote",
            gateway_reference="",
        )
    if event is None:
        return False
    refuse_unrecordable_reading(saga, event)
    return True


def _household(saga: Saga, request: QuoteRequest) -> HouseholdVerdict:
    members = [
        (person_ref(member.person), CoverageRelationship(member.relationship.value))
        for member in request.members
    ]
    return saga.coverage.check_household(
        person_ref(request.sponsor), members, request.period_start, request.period_end
    )
