"""The reader's split of a coverage record around non-payment periods
(``ledger.coverage.reader._pieces``), against the days restated one by one: a day counts when
the record holds it, its insurer is not suspended by then, and no non-payment period holds it."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from ledger.coverage.model import CoverageRecord, PersonRef, Relationship
from ledger.coverage.reader import _pieces, _Span, _Unpaid

BASE = dt.date(2026, 1, 1)
ONE_DAY = dt.timedelta(days=1)
offsets = st.integers(min_value=0, max_value=120)
PERSON = PersonRef("RESIDENCE_ID", "2123456789", "SA")


def _day(offset: int) -> dt.date:
    return BASE + dt.timedelta(days=offset)


@st.composite
def unpaid_periods(draw: st.DrawFn) -> tuple[_Unpaid, ...]:
    """Merged, ordered periods with a day between each (as rules.non_payment_periods returns
    them); the last may be open."""
    cuts = sorted(set(draw(st.lists(offsets, max_size=8))))
    periods: list[_Unpaid] = []
    last_day: dt.date | None = None
    for first, last in zip(cuts[::2], cuts[1::2], strict=False):
        if last_day is None or _day(first) > last_day + ONE_DAY:
            periods.append(_Unpaid(_day(first), _day(last)))
            last_day = _day(last)
    if draw(st.booleans()):
        periods.append(_Unpaid(_day(0) if last_day is None else last_day + 2 * ONE_DAY, None))
    return tuple(periods)


@given(offsets, st.integers(0, 90), st.none() | offsets, unpaid_periods())
def test_pieces_are_the_days_the_record_counts(
    start: int, length: int, suspension: int | None, periods: tuple[_Unpaid, ...]
) -> None:
    record = CoverageRecord(
        person=PERSON,
        sponsor=PERSON,
        relationship=Relationship.SELF,
        insurer_id="gulf-health",
        policy_id="P1",
        plan="CCHI-BASIC",
        start=_day(start),
        end=_day(start + length),
        cancelled=False,
        end_reason="PERIOD_END",
        leaf_indexes=(3,),
    )
    suspended_from = None if suspension is None else _day(suspension)
    counts_until = (
        record.end if suspended_from is None else min(record.end, suspended_from - ONE_DAY)
    )
    span = _Span(record, counts_until, suspended_from, None, counts_from=record.start)
    pieces = _pieces(span, periods)
    counted = [
        piece.counts_from + dt.timedelta(days=n)
        for piece in pieces
        for n in range((piece.counts_until - piece.counts_from).days + 1)
    ]
    expected = [
        record.start + dt.timedelta(days=n)
        for n in range((counts_until - record.start).days + 1)
        if not any(p.holds(record.start + dt.timedelta(days=n)) for p in periods)
    ]
    assert counted == expected  # in order, each day once
    assert pieces and all(piece.record is record for piece in pieces)
    for day in expected:
        assert all(piece.unpaid_on(day) is None for piece in pieces)
