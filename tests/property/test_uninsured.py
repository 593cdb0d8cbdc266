"""Uninsured periods (ledger/compliance/uninsured.py) against a day-by-day restatement of the
rule, and the obligation rules of ledger/compliance/obligations.py (task A, issue 10)."""

from __future__ import annotations

import datetime as dt
import itertools

from hypothesis import given
from hypothesis import strategies as st

from ledger.compliance import obligations, uninsured

BASE = dt.date(2026, 1, 1)
ONE_DAY = dt.timedelta(days=1)
days = st.integers(min_value=-60, max_value=60).map(lambda n: BASE + dt.timedelta(days=n))


@st.composite
def spans(draw: st.DrawFn) -> tuple[dt.date, dt.date]:
    first = draw(days)
    return first, first + dt.timedelta(days=draw(st.integers(min_value=0, max_value=40)))


runs = st.lists(spans().map(lambda span: uninsured.Run(*span)), max_size=5)
cuts = st.lists(
    st.tuples(spans(), st.sampled_from(uninsured.REASONS)).map(
        lambda item: uninsured.Cut(item[0][0], item[0][1], item[1])
    ),
    max_size=5,
)


def _day_state(
    day: dt.date, counting: list[uninsured.Run], cut_list: list[uninsured.Cut]
) -> tuple[bool, str]:
    """The rule for one day, restated plainly."""
    if any(run.first <= day <= run.last for run in counting):
        return True, ""
    for reason in uninsured.REASONS:
        if any(cut.first <= day <= cut.last and cut.reason == reason for cut in cut_list):
            return False, reason
    return False, uninsured.NO_COVERAGE


@given(spans(), runs, cuts)
def test_intervals_partition_the_obligation_and_state_each_day_as_the_rule_does(
    obligation: tuple[dt.date, dt.date],
    counting: list[uninsured.Run],
    cut_list: list[uninsured.Cut],
) -> None:
    first, last = obligation
    intervals = uninsured.obligation_intervals(first, last, counting, cut_list)
    assert intervals[0].first == first and intervals[-1].last == last
    for earlier, later in itertools.pairwise(intervals):
        assert later.first == earlier.last + ONE_DAY  # consecutive, no overlap, no hole
        assert (earlier.covered, earlier.reason) != (later.covered, later.reason)  # merged
    for interval in intervals:
        assert interval.first <= interval.last
        day = interval.first
        while day <= interval.last:
            assert _day_state(day, counting, cut_list) == (interval.covered, interval.reason)
            day += ONE_DAY
    expected = sum(
        1
        for offset in range((last - first).days + 1)
        if not _day_state(first + dt.timedelta(days=offset), counting, cut_list)[0]
    )
    assert uninsured.uninsured_days(intervals) == expected


@given(spans(), runs, cuts)
def test_an_empty_obligation_has_no_interval(
    obligation: tuple[dt.date, dt.date],
    counting: list[uninsured.Run],
    cut_list: list[uninsured.Cut],
) -> None:
    first, _ = obligation
    assert uninsured.obligation_intervals(first, first - ONE_DAY, counting, cut_list) == ()


@given(spans(), st.lists(spans(), max_size=5))
def test_coverage_that_holds_every_day_leaves_nothing_uninsured(
    obligation: tuple[dt.date, dt.date], cut_spans: list[tuple[dt.date, dt.date]]
) -> None:
    first, last = obligation
    whole = [uninsured.Run(first - ONE_DAY, last + ONE_DAY)]
    cut_list = [uninsured.Cut(a, b, uninsured.NON_PAYMENT) for a, b in cut_spans]
    intervals = uninsured.obligation_intervals(first, last, whole, cut_list)
    assert intervals == (uninsured.Interval(first, last, True, ""),)


@given(days, days)
def test_a_dependent_is_obligated_from_becoming_one_never_before_the_entry(
    entry: dt.date, since: dt.date
) -> None:
    start = obligations.member_obligated_from(entry, since)
    assert start >= entry and start >= since and start in (entry, since)


@given(days, st.none() | days)
def test_an_obligation_ends_with_the_permit_or_the_day_before_it_ended(
    last_day: dt.date, ended_from: dt.date | None
) -> None:
    until = obligations.obligation_until(last_day, ended_from)
    assert until <= last_day
    if ended_from is None:
        assert until == last_day
    else:
        assert until < ended_from and (until == last_day or until == ended_from - ONE_DAY)
