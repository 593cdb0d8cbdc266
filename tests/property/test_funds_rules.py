"""The funded-cohort rules (ledger/funds/rules.py) and totals (ledger/funds/totals.py), by
property: the day-by-day decision and the unpaid runs agree; totals add up to the payments."""

from __future__ import annotations

import datetime as dt
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.funds.rules import (
    Cohort,
    Contribution,
    NotCovered,
    coverage_on,
    first_of_month,
    last_of_month,
    months,
    months_between,
    unpaid_periods,
)
from ledger.funds.totals import CohortRecord, MemberRecord, fund_totals

START = dt.date(2026, 1, 1)


def _month(offset: int) -> dt.date:
    year, month = divmod(START.month - 1 + offset, 12)
    return dt.date(START.year + year, month + 1, 1)


@st.composite
def cohorts(draw: st.DrawFn) -> tuple[Cohort, list[Contribution], int]:
    """A cohort of 1..18 months, maybe ended, with non-overlapping contributions before its end,
    and a member position."""
    length = draw(st.integers(1, 18))
    end = last_of_month(_month(length - 1))
    ended_at = draw(st.none() | st.integers(0, length))
    ended_from = None if ended_at is None else _month(ended_at)
    cohort = Cohort("C", "zakat", "fund", START, end, "SDG", 1_000, ended_from)
    paid_until = length if ended_at is None else ended_at
    cuts = sorted(draw(st.sets(st.integers(0, paid_until), max_size=8)))
    contributions = []
    for first, last in itertools.pairwise(cuts):
        if draw(st.booleans()):
            count = draw(st.integers(1, 5))
            contributions.append(
                Contribution(
                    _month(first),
                    last_of_month(_month(last - 1)),
                    1_000 * count * (last - first),
                    count,
                    leaf_index=first,
                )
            )
    return cohort, contributions, draw(st.integers(1, 6))


@settings(max_examples=200, deadline=None)
@given(cohorts(), st.integers(-40, 600))
def test_coverage_on_a_day_is_exactly_not_an_unpaid_day(drawn: tuple, offset: int) -> None:
    cohort, contributions, position = drawn
    day = START + dt.timedelta(days=offset)
    decision = coverage_on(day, cohort, position, contributions)
    runs = unpaid_periods(cohort, position, contributions)
    in_window = cohort.period_start <= day <= cohort.last_covered_day
    unpaid = any(first <= day <= last for first, last in runs)
    if not in_window:
        assert not decision.covered
        assert decision.reason in (NotCovered.OUTSIDE_PERIOD, NotCovered.COHORT_ENDED)
        assert not unpaid
    else:
        assert decision.covered == (not unpaid)
        if not decision.covered:
            assert decision.reason in (NotCovered.NOT_PAID, NotCovered.ENROLLED_AFTER_PAYMENT)


@settings(max_examples=200, deadline=None)
@given(cohorts())
def test_unpaid_runs_are_ordered_disjoint_and_inside_the_window(drawn: tuple) -> None:
    cohort, contributions, position = drawn
    runs = unpaid_periods(cohort, position, contributions)
    for first, last in runs:
        assert cohort.period_start <= first <= last <= cohort.last_covered_day
    for (_, last), (first, _) in itertools.pairwise(runs):
        assert last + dt.timedelta(days=1) < first


@given(st.dates(dt.date(2000, 1, 1), dt.date(2100, 12, 1)), st.integers(0, 40))
def test_month_arithmetic(day: dt.date, extra: int) -> None:
    first = first_of_month(day)
    last = last_of_month(day)
    assert first.day == 1 and (last + dt.timedelta(days=1)).day == 1 and first <= day <= last
    end = last_of_month(first + dt.timedelta(days=31 * extra))
    assert months_between(first, end) == len(list(months(first, end)))


@settings(max_examples=150, deadline=None)
@given(cohorts(), st.integers(1, 6), st.integers(0, 20))
def test_totals_add_up_to_the_payments_and_enrolments(
    drawn: tuple, members: int, today_offset: int
) -> None:
    cohort, contributions, _ = drawn
    contributions = [
        Contribution(
            c.period_start,
            c.period_end,
            1_000
            * min(c.beneficiary_count, members)
            * months_between(c.period_start, c.period_end),
            min(c.beneficiary_count, members),
            c.leaf_index,
        )
        for c in contributions
    ]
    states = ["SD-KH", "SD-GZ"]
    rows = [MemberRecord("C", n, states[n % 2], 100 + n) for n in range(1, members + 1)]
    today = _month(today_offset)
    totals = fund_totals(
        [CohortRecord(cohort, 1)],
        rows,
        {"C": contributions},
        first_month=START,
        last_month=_month(24),
        today=today,
    )
    assert sum(t.paid_minor for t in totals) == sum(c.amount_minor for c in contributions)
    for month in {t.month for t in totals}:
        of_month = [t for t in totals if t.month == month]
        assert sum(t.enrolled for t in of_month) == members
        for total in of_month:
            assert total.covered <= total.enrolled
            due = (total.enrolled - total.covered) * 1_000 if month <= today else 0
            assert total.owed_minor == due


@settings(max_examples=150, deadline=None)
@given(cohorts(), st.integers(1, 6))
def test_covered_totals_are_the_members_coverage_on_covers(drawn: tuple, members: int) -> None:
    """The totals' covered count for a month is the number of beneficiaries
    :func:`coverage_on` says are covered on the month's first day."""
    cohort, contributions, _ = drawn
    rows = [MemberRecord("C", n, "SD-KH", n) for n in range(1, members + 1)]
    totals = fund_totals(
        [CohortRecord(cohort, 0)],
        rows,
        {"C": contributions},
        first_month=START,
        last_month=_month(24),
        today=START,
    )
    for total in totals:
        expected = sum(
            coverage_on(total.month, cohort, row.position, contributions).covered for row in rows
        )
        assert total.covered == expected
