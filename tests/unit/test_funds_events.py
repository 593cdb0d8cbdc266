"""The structure of the funders' events (ledger/events.py, task D): each malformed field is
refused INVALID_ARGUMENT naming it, and the well-formed twin passes."""

from __future__ import annotations

import datetime as dt

import pytest

from ledger import limits
from ledger.errors import InvalidArgument
from ledger.events import validate_event
from ledger.funds.states import STATES_SOURCE, sudan_states
from ledger.v1 import events_pb2
from tests.builders import cohort_ended, cohort_enrolled, contribution_paid, sdg, sudanese

NOW = dt.datetime(2026, 6, 2, tzinfo=dt.UTC)
JAN1, DEC31 = dt.date(2026, 1, 1), dt.date(2026, 12, 31)


def _violations(event: events_pb2.Event) -> list[str]:
    with pytest.raises(InvalidArgument) as raised:
        validate_event(event, NOW)
    return [f"{v.field}: {v.description}" for v in raised.value.details.field_violations]


def _enrolled(count: int = 2) -> events_pb2.Event:
    return cohort_enrolled(
        "zakat", "Z-1", [(sudanese(n), "SD-KH") for n in range(count)], JAN1, DEC31
    )


def test_the_18_states_come_from_iso_3166_2_sd() -> None:
    states = sudan_states()
    assert len(states) == 18
    assert states["SD-KH"] == "Khartoum"
    assert all(code.startswith("SD-") and len(code) == 5 for code in states)
    assert "ISO 3166-2:SD" in STATES_SOURCE


def test_well_formed_funder_events_pass() -> None:
    for event in (
        _enrolled(),
        contribution_paid("zakat", "Z-1", JAN1, dt.date(2026, 1, 31), sdg(2_000), 2),
        cohort_ended("zakat", "Z-1", dt.date(2026, 6, 1)),
    ):
        assert validate_event(event, NOW).kind == event.WhichOneof("body")


def test_a_cohort_enrolment_over_the_limit_is_refused_at_the_limit_accepted() -> None:
    validate_event(_enrolled(limits.cohort_beneficiaries_per_event_max), NOW)
    found = _violations(_enrolled(limits.cohort_beneficiaries_per_event_max + 1))
    assert any("over the limit of 250" in v for v in found), found


def test_malformed_enrolments_name_the_field() -> None:
    event = _enrolled()
    event.cohort_enrolled.beneficiaries[1].person_token = event.cohort_enrolled.beneficiaries[
        0
    ].person_token
    event.cohort_enrolled.beneficiaries[0].state_code = "SD-XX"
    event.cohort_enrolled.monthly_contribution.currency_code = "SAR"
    event.cohort_enrolled.period_start.day = 2
    event.cohort_enrolled.period_end.day = 30
    found = _violations(event)
    assert "event.cohort_enrolled.beneficiaries[1].person_token: listed twice" in found
    assert any(v.startswith("event.cohort_enrolled.beneficiaries[0].state_code") for v in found)
    assert any("monthly_contribution.currency_code" in v and "SDG" in v for v in found)
    assert "event.cohort_enrolled.period_start: not the first day of a month" in found
    assert "event.cohort_enrolled.period_end: not the last day of a month" in found
    empty = _enrolled()
    del empty.cohort_enrolled.beneficiaries[:]
    assert "event.cohort_enrolled.beneficiaries: at least one is required" in _violations(empty)
    long = cohort_enrolled("zakat", "Z-1", [(sudanese(1), "SD-KH")], JAN1, dt.date(2031, 12, 31))
    assert any("more than 60 months" in v for v in _violations(long))


def test_malformed_contributions_and_ends_name_the_field() -> None:
    paid = contribution_paid("zakat", "Z-1", dt.date(2026, 1, 2), dt.date(2026, 1, 31), sdg(0), 0)
    found = _violations(paid)
    assert "event.contribution_paid.period_start: not the first day of a month" in found
    assert "event.contribution_paid.amount.amount_minor: must be positive" in found
    assert "event.contribution_paid.beneficiary_count: must be positive" in found
    ended = cohort_ended("zakat", "Z-1", dt.date(2026, 6, 2), reason="")
    found = _violations(ended)
    assert "event.cohort_ended.effective_date: not the first day of a month" in found
    assert "event.cohort_ended.reason: required" in found
