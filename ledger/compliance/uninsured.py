"""Uninsured periods: the days of an obligation to insure without valid coverage, and why.

A pure function in the style of :mod:`ledger.coverage.rules` (no SQL, no protobuf): the caller
gives one obligation (first and last day, from :mod:`ledger.compliance.obligations`), the runs
of days in which some coverage *counts* (the coverage projections, with the non-payment rule and
insurer suspensions already applied), and the *cuts*: runs of days in which a coverage exists
but does not count, or a replacement policy started late. The answer splits the obligation into
runs of covered and uninsured days; an uninsured run names its reason (docs/compliance.md
"Uninsured periods"):

* ``NON_PAYMENT``: a policy with an instalment unpaid past its grace period (it does not count
  from the due date until paid);
* ``INSURER_SUSPENDED``: the covering insurer's licence was suspended;
* ``TRANSFER_GAP``: between a policy and its replacement, which started later than the day
  after the old one's last covered day;
* ``NO_COVERAGE``: no policy at all.

When several cuts hold one day the first of that list names it.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "INSURER_SUSPENDED",
    "NON_PAYMENT",
    "NO_COVERAGE",
    "REASONS",
    "TRANSFER_GAP",
    "Cut",
    "Interval",
    "Run",
    "obligation_intervals",
    "uninsured_days",
]

NON_PAYMENT = "NON_PAYMENT"
INSURER_SUSPENDED = "INSURER_SUSPENDED"
TRANSFER_GAP = "TRANSFER_GAP"
NO_COVERAGE = "NO_COVERAGE"
REASONS = (NON_PAYMENT, INSURER_SUSPENDED, TRANSFER_GAP)
"""Cut reasons, strongest first: the first that holds a day names it."""

_ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Run:
    """Days ``first..last`` (inclusive) in which some coverage counts."""

    first: dt.date
    last: dt.date


@dataclass(frozen=True)
class Cut:
    """Days ``first..last`` (inclusive) that are uninsured for ``reason`` when no coverage
    counts on them."""

    first: dt.date
    last: dt.date
    reason: str


@dataclass(frozen=True)
class Interval:
    """A run of an obligation's days: covered, or uninsured for ``reason``."""

    first: dt.date
    last: dt.date
    covered: bool
    reason: str
    """Empty when covered."""

    @property
    def days(self) -> int:
        """How many days the run holds."""
        return (self.last - self.first).days + 1


def obligation_intervals(
    first: dt.date, last: dt.date, counting: Sequence[Run], cuts: Sequence[Cut]
) -> tuple[Interval, ...]:
    """The days ``first..last`` as consecutive runs, covered or uninsured and why.

    Requires nothing of ``counting`` and ``cuts`` (they may overlap, be empty, or lie outside
    ``first..last``). Returns () when ``last < first``. The runs are in order, cover every day
    of ``first..last`` exactly once, and no two neighbours have the same state and reason.
    """
    if last < first:
        return ()
    if any(run.first <= first and last <= run.last for run in counting):
        # (0): one run holds every day (the usual answer): what (1)-(3) would give, sooner.
        return (Interval(first, last, True, ""),)
    # (1): every day on which the answer may change: the bounds of each run and cut.
    points = {first, last + _ONE_DAY}
    bounds = [(run.first, run.last) for run in counting]
    bounds.extend((cut.first, cut.last) for cut in cuts)
    for span_first, span_last in bounds:
        for point in (span_first, span_last + _ONE_DAY):
            if first < point <= last:
                points.add(point)
    # (2): each elementary segment lies wholly inside or outside every run and cut.
    intervals: list[Interval] = []
    for start, after in itertools.pairwise(sorted(points)):
        end = after - _ONE_DAY
        covered = any(run.first <= start and end <= run.last for run in counting)
        reason = "" if covered else _reason(start, end, cuts)
        # (3): merge with the previous run when nothing changed.
        if intervals and intervals[-1].covered == covered and intervals[-1].reason == reason:
            previous = intervals[-1]
            intervals[-1] = Interval(previous.first, end, covered, reason)
        else:
            intervals.append(Interval(start, end, covered, reason))
    return tuple(intervals)


def _reason(start: dt.date, end: dt.date, cuts: Sequence[Cut]) -> str:
    holding = {cut.reason for cut in cuts if cut.first <= start and end <= cut.last}
    return next((reason for reason in REASONS if reason in holding), NO_COVERAGE)


def uninsured_days(intervals: Sequence[Interval]) -> int:
    """The uninsured days of ``intervals``."""
    return sum(interval.days for interval in intervals if not interval.covered)
