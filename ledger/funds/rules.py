"""The rules of funded cohorts, as pure functions over plain values (no SQL, no gRPC).

A funder (a third-party payer such as the Zakat chamber, docs/funds.md) enrols beneficiaries in
a cohort with a fund for a period of whole months, at a monthly contribution per beneficiary in
SDG. Contributions are paid for whole months; a contribution pays for every beneficiary enrolled
when it is recorded. So:

* a beneficiary is **covered on a day** when the day lies in the cohort's period, before the
  cohort's end (if ended), and a contribution whose months hold the day pays for them (their
  enrolment position is at most its ``beneficiary_count``): :func:`coverage_on`;
* a contribution is for whole months inside the cohort's period (before its end), overlaps no
  earlier contribution of the cohort, counts exactly the cohort's beneficiaries, and amounts to
  monthly contribution x beneficiaries x months, in the cohort's currency:
  :func:`check_contribution`;
* a cohort is ended once, on the first day of a month within its period (or the day after it),
  not before a month already paid for: :func:`check_end`.

Each refusal is a :class:`~ledger.errors.LedgerError` naming the rule (its ``reason``).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ledger.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    NotFound,
    PermissionDenied,
)

__all__ = [
    "COHORT_ENDED",
    "FUNDED_COHORT_PLAN",
    "Cohort",
    "Contribution",
    "CoverageDecision",
    "NotCovered",
    "check_contribution",
    "check_end",
    "check_enrolment_terms",
    "check_own",
    "contribution_for",
    "coverage_on",
    "first_of_month",
    "last_of_month",
    "months",
    "months_between",
    "unpaid_periods",
]

FUNDED_COHORT_PLAN = "FUNDED-COHORT"
"""The plan a cohort's coverage shows (GetCoverage, CheckHousehold)."""
COHORT_ENDED = "COHORT_ENDED"
"""The end reason of a cohort's coverage once the funder ended the cohort."""

_ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Cohort:
    """What the rules know of a cohort."""

    cohort_id: str
    funder_id: str
    fund_id: str
    period_start: dt.date
    period_end: dt.date
    currency_code: str
    monthly_minor: int
    """The monthly contribution per beneficiary, in minor units."""
    ended_from: dt.date | None = None
    """The first day without coverage, once ended."""

    @property
    def last_covered_day(self) -> dt.date:
        """The last day any beneficiary may be covered: the period's end, or the day before
        the end's effective date."""
        if self.ended_from is None:
            return self.period_end
        return min(self.period_end, self.ended_from - _ONE_DAY)


@dataclass(frozen=True)
class Contribution:
    """A recorded contribution of a cohort."""

    period_start: dt.date
    period_end: dt.date
    amount_minor: int
    beneficiary_count: int
    leaf_index: int = 0


class NotCovered(enum.Enum):
    """Why a beneficiary is not covered on a day (None in a decision: covered)."""

    OUTSIDE_PERIOD = "outside_period"
    COHORT_ENDED = "cohort_ended"
    NOT_PAID = "not_paid"
    """No contribution pays for the month."""
    ENROLLED_AFTER_PAYMENT = "enrolled_after_payment"
    """The month's contribution was recorded before the beneficiary was enrolled."""


@dataclass(frozen=True)
class CoverageDecision:
    """Whether a beneficiary is covered on a day, and why not."""

    covered: bool
    reason: NotCovered | None
    contribution: Contribution | None
    """The contribution that pays for the day (or, ENROLLED_AFTER_PAYMENT, the one that does
    not include the beneficiary)."""


def first_of_month(day: dt.date) -> dt.date:
    """The first day of ``day``'s month."""
    return day.replace(day=1)


def last_of_month(day: dt.date) -> dt.date:
    """The last day of ``day``'s month."""
    following = (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return following - _ONE_DAY


def months_between(start: dt.date, end: dt.date) -> int:
    """How many months ``start``..``end`` spans (both in the count; 0 when end < start)."""
    count = (end.year - start.year) * 12 + end.month - start.month + 1
    return max(count, 0)


def months(start: dt.date, end: dt.date) -> Iterator[dt.date]:
    """The first day of every month from ``start``'s to ``end``'s."""
    cursor = first_of_month(start)
    while cursor <= end:
        yield cursor
        cursor = last_of_month(cursor) + _ONE_DAY


def contribution_for(day: dt.date, contributions: Sequence[Contribution]) -> Contribution | None:
    """The contribution whose months hold ``day`` (contributions never overlap)."""
    return next((c for c in contributions if c.period_start <= day <= c.period_end), None)


def coverage_on(
    day: dt.date, cohort: Cohort, position: int, contributions: Sequence[Contribution]
) -> CoverageDecision:
    """Whether the beneficiary at enrolment ``position`` (1-based) of ``cohort`` is covered on
    ``day`` (see the module doc)."""
    if not cohort.period_start <= day <= cohort.period_end:
        return CoverageDecision(False, NotCovered.OUTSIDE_PERIOD, None)
    if cohort.ended_from is not None and day >= cohort.ended_from:
        return CoverageDecision(False, NotCovered.COHORT_ENDED, None)
    paying = contribution_for(day, contributions)
    if paying is None:
        return CoverageDecision(False, NotCovered.NOT_PAID, None)
    if position > paying.beneficiary_count:
        return CoverageDecision(False, NotCovered.ENROLLED_AFTER_PAYMENT, paying)
    return CoverageDecision(True, None, paying)


def unpaid_periods(
    cohort: Cohort, position: int, contributions: Sequence[Contribution]
) -> list[tuple[dt.date, dt.date]]:
    """The runs of days (first, last, inclusive) from the cohort's start to its last covered
    day on which the beneficiary at ``position`` is not paid for, in order: exactly the days
    :func:`coverage_on` answers NOT_PAID or ENROLLED_AFTER_PAYMENT."""
    paid = sorted(
        (c.period_start, c.period_end) for c in contributions if position <= c.beneficiary_count
    )
    runs: list[tuple[dt.date, dt.date]] = []
    cursor = cohort.period_start
    last = cohort.last_covered_day
    for start, end in paid:
        if cursor > last:
            break
        if start > cursor:
            runs.append((cursor, min(start - _ONE_DAY, last)))
        cursor = max(cursor, end + _ONE_DAY)
    if cursor <= last:
        runs.append((cursor, last))
    return runs


def check_own(cohort: Cohort | None, cohort_id: str, funder_id: str, field: str) -> Cohort:
    """The cohort, once it exists and is ``funder_id``'s: NOT_FOUND, else PERMISSION_DENIED."""
    if cohort is None:
        raise NotFound(
            f"cohort {cohort_id!r} is not enrolled",
            reason="COHORT_NOT_FOUND",
            field_violations=[FieldViolation(field, "no such cohort")],
            metadata={"cohort_id": cohort_id},
        )
    if cohort.funder_id != funder_id:
        raise PermissionDenied(
            f"cohort {cohort_id!r} is funded by {cohort.funder_id!r}, not {funder_id!r}",
            reason="COHORT_NOT_OWN",
            field_violations=[FieldViolation(field, "another funder's cohort")],
            metadata={"cohort_id": cohort_id, "funder": cohort.funder_id},
        )
    return cohort


def _check_not_ended(cohort: Cohort, field: str) -> None:
    if cohort.ended_from is not None:
        raise FailedPrecondition(
            f"cohort {cohort.cohort_id!r} ended on {cohort.ended_from}",
            reason="COHORT_ENDED",
            field_violations=[FieldViolation(field, "the cohort has ended")],
            metadata={"cohort_id": cohort.cohort_id, "ended_from": str(cohort.ended_from)},
        )


def check_enrolment_terms(existing: Cohort | None, proposed: Cohort, field: str) -> None:
    """An enrolment in an existing cohort: the funder's own, not ended, with the same terms."""
    if existing is None:
        return
    check_own(existing, proposed.cohort_id, proposed.funder_id, f"{field}.cohort_id")
    _check_not_ended(existing, f"{field}.cohort_id")
    differing = [
        name
        for name in ("fund_id", "period_start", "period_end", "currency_code", "monthly_minor")
        if getattr(existing, name) != getattr(proposed, name)
    ]
    if differing:
        raise FailedPrecondition(
            f"cohort {proposed.cohort_id!r} was enrolled with other terms: {', '.join(differing)}",
            reason="COHORT_TERMS_DIFFER",
            field_violations=[FieldViolation(f"{field}.{differing[0]}", "differs from the cohort")],
            metadata={"cohort_id": proposed.cohort_id},
        )


def check_contribution(
    cohort: Cohort,
    paid: Contribution,
    *,
    currency_code: str,
    beneficiaries: int,
    earlier: Sequence[Contribution],
    field: str,
) -> None:
    """A contribution of ``cohort`` (which has ``beneficiaries`` now), against the rules."""
    if currency_code != cohort.currency_code:
        raise FailedPrecondition(
            f"cohort {cohort.cohort_id!r} is paid in {cohort.currency_code}, not {currency_code}",
            reason="CURRENCY_MISMATCH",
            field_violations=[
                FieldViolation(f"{field}.amount.currency_code", f"must be {cohort.currency_code}")
            ],
        )
    if paid.period_start < cohort.period_start or paid.period_end > cohort.period_end:
        raise FailedPrecondition(
            f"the months paid for ({paid.period_start}..{paid.period_end}) are outside cohort "
            f"{cohort.cohort_id!r} ({cohort.period_start}..{cohort.period_end})",
            reason="PERIOD_OUTSIDE_COHORT",
            field_violations=[FieldViolation(f"{field}.period_start", "outside the cohort")],
        )
    if cohort.ended_from is not None and paid.period_end >= cohort.ended_from:
        _check_not_ended(cohort, f"{field}.period_end")
    clash = next(
        (
            c
            for c in earlier
            if c.period_start <= paid.period_end and paid.period_start <= c.period_end
        ),
        None,
    )
    if clash is not None:
        raise AlreadyExists(
            f"cohort {cohort.cohort_id!r} is already paid for {clash.period_start}.."
            f"{clash.period_end} (entry {clash.leaf_index})",
            reason="CONTRIBUTION_PERIOD_OVERLAPS",
            field_violations=[FieldViolation(f"{field}.period_start", "overlaps a payment")],
            metadata={"leaf_index": str(clash.leaf_index)},
        )
    if paid.beneficiary_count != beneficiaries:
        raise FailedPrecondition(
            f"cohort {cohort.cohort_id!r} has {beneficiaries} beneficiaries, the contribution "
            f"pays for {paid.beneficiary_count}",
            reason="BENEFICIARY_COUNT_MISMATCH",
            field_violations=[
                FieldViolation(f"{field}.beneficiary_count", f"must be {beneficiaries}")
            ],
        )
    due = cohort.monthly_minor * beneficiaries * months_between(paid.period_start, paid.period_end)
    if paid.amount_minor != due:
        raise FailedPrecondition(
            f"the contribution is {paid.amount_minor}, the months paid for cost {due}",
            reason="CONTRIBUTION_AMOUNT_MISMATCH",
            field_violations=[FieldViolation(f"{field}.amount.amount_minor", f"must be {due}")],
            metadata={"due_minor": str(due)},
        )


def check_end(
    cohort: Cohort, effective: dt.date, contributions: Sequence[Contribution], field: str
) -> None:
    """Ending ``cohort`` from ``effective``: once, within its period, not before a paid month."""
    _check_not_ended(cohort, f"{field}.cohort_id")
    if not cohort.period_start <= effective <= cohort.period_end + _ONE_DAY:
        raise FailedPrecondition(
            f"an end on {effective} is outside cohort {cohort.cohort_id!r} "
            f"({cohort.period_start}..{cohort.period_end})",
            reason="END_OUTSIDE_COHORT",
            field_violations=[FieldViolation(f"{field}.effective_date", "outside the cohort")],
        )
    paid_after = [c for c in contributions if c.period_end >= effective]
    if paid_after:
        raise FailedPrecondition(
            f"cohort {cohort.cohort_id!r} is paid for through {paid_after[0].period_end}",
            reason="END_BEFORE_PAID_MONTHS",
            field_violations=[
                FieldViolation(f"{field}.effective_date", "before the end of a paid month")
            ],
        )
