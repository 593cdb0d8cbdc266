"""Per-funder, per-state, per-month totals of funded cohorts: a pure function over plain values,
so the FundService (from the projections) and an auditor (from the raw log entries, replayed
through :class:`FundLog`) compute them with the same code and can compare (docs/funds.md).

For a month M, a funder F and a state S, over F's cohorts whose covered days meet M:

* ``enrolled``: their beneficiaries living in S;
* ``covered``: of those, the ones the contribution for M pays for (:mod:`ledger.funds.rules`);
* ``paid``: monthly contribution x covered (the contribution for M, split by state);
* ``owed``: once M has begun (its first day on or before ``today``), monthly contribution x
  (enrolled - covered); before that, nothing is owed yet.

Each total names the entries it was computed from: the cohort's first entry, its end, the
enrolments of its beneficiaries in S, and the contribution for M.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ledger.funds.rules import Cohort, Contribution, contribution_for, first_of_month, months

__all__ = ["CohortRecord", "FundTotal", "MemberRecord", "fund_totals"]


@dataclass(frozen=True)
class CohortRecord:
    """A cohort, with the entries that made it (its first CohortEnrolled, its CohortEnded)."""

    cohort: Cohort
    leaf_index: int
    end_leaf_index: int | None = None


@dataclass(frozen=True)
class MemberRecord:
    """A beneficiary as the totals count them: no token (totals name nobody)."""

    cohort_id: str
    position: int
    state_code: str
    leaf_index: int


@dataclass(frozen=True)
class FundTotal:
    """One funder's beneficiaries in one state for one month."""

    funder_id: str
    state_code: str
    month: dt.date
    """The month's first day."""
    enrolled: int
    covered: int
    paid_minor: int
    owed_minor: int
    currency_code: str
    leaf_indexes: tuple[int, ...]


@dataclass
class _Sum:
    enrolled: int = 0
    covered: int = 0
    paid_minor: int = 0
    owed_minor: int = 0
    currency_code: str = ""
    leaves: set[int] = field(default_factory=set)


def fund_totals(
    cohorts: Iterable[CohortRecord],
    members: Iterable[MemberRecord],
    contributions: Mapping[str, Sequence[Contribution]],
    *,
    first_month: dt.date,
    last_month: dt.date,
    today: dt.date,
    state_code: str = "",
) -> list[FundTotal]:
    """The totals for the months ``first_month``..``last_month`` (any day of each), by funder,
    state and month; only rows with a beneficiary enrolled (see the module doc)."""
    by_id = {record.cohort.cohort_id: record for record in cohorts}
    asked = list(months(first_month, last_month))
    sums: dict[tuple[str, str, dt.date], _Sum] = defaultdict(_Sum)
    for member in members:
        record = by_id.get(member.cohort_id)
        if record is None or (state_code and member.state_code != state_code):
            continue
        cohort = record.cohort
        paid_for = contributions.get(cohort.cohort_id, ())
        for month in asked:
            if not _runs_in(cohort, month):
                continue
            total = sums[(cohort.funder_id, member.state_code, month)]
            total.currency_code = cohort.currency_code
            total.enrolled += 1
            total.leaves.update({record.leaf_index, member.leaf_index})
            if record.end_leaf_index is not None:
                total.leaves.add(record.end_leaf_index)
            paying = contribution_for(month, paid_for)
            if paying is not None:
                total.leaves.add(paying.leaf_index)
            if paying is not None and member.position <= paying.beneficiary_count:
                total.covered += 1
                total.paid_minor += cohort.monthly_minor
            elif month <= today:
                total.owed_minor += cohort.monthly_minor
    return [
        FundTotal(
            funder_id=funder_id,
            state_code=state,
            month=month,
            enrolled=total.enrolled,
            covered=total.covered,
            paid_minor=total.paid_minor,
            owed_minor=total.owed_minor,
            currency_code=total.currency_code,
            leaf_indexes=tuple(sorted(total.leaves)),
        )
        for (funder_id, state, month), total in sorted(sums.items())
    ]


def _runs_in(cohort: Cohort, month: dt.date) -> bool:
    """Whether the cohort covers any day of ``month`` (periods and ends are whole months)."""
    month = first_of_month(month)
    return cohort.period_start <= month <= cohort.last_covered_day
