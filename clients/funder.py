"""A funder's events (task D, issue 11; docs/funds.md): a cohort enrolled in events of at most
``limits.cohort_beneficiaries_per_event_max`` beneficiaries, a contribution for whole months,
and a cohort's end. Signed and submitted with :class:`clients.insurer.InsurerClient` (it signs
for whichever principal its key belongs to: here the funder).

events = cohort_events("zakat-chamber", "ZC-2026-KH", beneficiaries, start, end, sdg(1_000))
for receipt in funder.submit_stream(events): ...
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from ledger import limits
from ledger.events import civil_date
from ledger.funds.rules import months_between
from ledger.v1 import events_pb2, types_pb2

__all__ = ["cohort_ended", "cohort_events", "contribution_paid", "sdg"]


def sdg(amount_minor: int) -> types_pb2.Money:
    """Sudanese pounds in piastres (ISO 4217 SDG, 2 decimals)."""
    return types_pb2.Money(currency_code="SDG", amount_minor=amount_minor)


def _event(funder_id: str, event_id: str, occurred_at: dt.datetime) -> events_pb2.Event:
    event = events_pb2.Event(event_id=event_id, insurer_id=funder_id)
    event.occurred_at.FromDatetime(occurred_at)
    return event


def cohort_events(
    funder_id: str,
    cohort_id: str,
    beneficiaries: Sequence[tuple[str, str]],
    period: tuple[dt.date, dt.date],
    monthly: types_pb2.Money,
    *,
    fund_id: str,
    occurred_at: dt.datetime,
    per_event: int = limits.cohort_beneficiaries_per_event_max,
) -> list[events_pb2.Event]:
    """CohortEnrolled events for (person token, state code) pairs, ``per_event`` a piece; event
    ids ``<cohort>-enrol-<n>`` (so a resubmission is a duplicate, not a second enrolment)."""
    if not 1 <= per_event <= limits.cohort_beneficiaries_per_event_max:
        raise ValueError(f"per_event must be in 1..{limits.cohort_beneficiaries_per_event_max}")
    events = []
    for number, start in enumerate(range(0, len(beneficiaries), per_event)):
        event = _event(funder_id, f"{cohort_id}-enrol-{number}", occurred_at)
        body = event.cohort_enrolled
        body.cohort_id = cohort_id
        body.fund_id = fund_id
        body.period_start.CopyFrom(civil_date(period[0]))
        body.period_end.CopyFrom(civil_date(period[1]))
        body.monthly_contribution.CopyFrom(monthly)
        for token, state in beneficiaries[start : start + per_event]:
            body.beneficiaries.add(person_token=token, state_code=state)
        events.append(event)
    return events


def contribution_paid(
    funder_id: str,
    cohort_id: str,
    months: tuple[dt.date, dt.date],
    monthly: types_pb2.Money,
    beneficiary_count: int,
    *,
    occurred_at: dt.datetime,
    reference: str,
) -> events_pb2.Event:
    """ContributionPaid for the months ``months`` (first day of the first, last day of the
    last): monthly contribution x beneficiaries x months."""
    event = _event(funder_id, f"{cohort_id}-paid-{reference}", occurred_at)
    body = event.contribution_paid
    body.cohort_id = cohort_id
    body.period_start.CopyFrom(civil_date(months[0]))
    body.period_end.CopyFrom(civil_date(months[1]))
    body.amount.CopyFrom(
        types_pb2.Money(
            currency_code=monthly.currency_code,
            amount_minor=monthly.amount_minor
            * beneficiary_count
            * months_between(months[0], months[1]),
        )
    )
    body.beneficiary_count = beneficiary_count
    body.payment_reference = reference
    return event


def cohort_ended(
    funder_id: str, cohort_id: str, effective: dt.date, reason: str, *, occurred_at: dt.datetime
) -> events_pb2.Event:
    """CohortEnded from ``effective`` (the first day of a month)."""
    event = _event(funder_id, f"{cohort_id}-ended", occurred_at)
    body = event.cohort_ended
    body.cohort_id = cohort_id
    body.effective_date.CopyFrom(civil_date(effective))
    body.reason = reason
    return event
