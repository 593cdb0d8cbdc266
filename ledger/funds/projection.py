"""The projections of funded cohorts: what the appender writes for CohortEnrolled,
ContributionPaid and CohortEnded entries (checked first against :mod:`ledger.funds.rules`, in
the batch transaction, so a refused entry writes nothing), and the reads the coverage reader and
the FundService make. Rows are written as each entry is applied (not at the end of the batch),
so a later entry of the same batch sees them: a cohort enrolled in 100 events of one stream.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Row, Select, bindparam, insert, select, update

from ledger.errors import FailedPrecondition, FieldViolation
from ledger.funds import rules
from ledger.funds.rules import Cohort, Contribution
from ledger.funds.totals import CohortRecord, MemberRecord
from ledger.storage.tables import fund_cohort_members, fund_cohorts, fund_contributions
from ledger.v1 import events_pb2, types_pb2

__all__ = [
    "CohortMembership",
    "FundProjector",
    "cohort_of",
    "contributions_of",
    "memberships_of",
    "memberships_of_tokens",
    "totals_inputs",
]

_SELECT_COHORT = select(fund_cohorts).where(fund_cohorts.c.cohort_id == bindparam("cohort_id"))
_SELECT_CONTRIBUTIONS = (
    select(fund_contributions)
    .where(fund_contributions.c.cohort_id == bindparam("cohort_id"))
    .order_by(fund_contributions.c.period_start)
)
_SELECT_ENROLLED = select(fund_cohort_members.c.person_token).where(
    fund_cohort_members.c.cohort_id == bindparam("cohort_id"),
    fund_cohort_members.c.person_token.in_(bindparam("tokens", expanding=True)),
)


def _date(civil: types_pb2.CivilDate) -> dt.date:
    return dt.date(civil.year, civil.month, civil.day)


def _cohort(row: Any) -> Cohort:
    mapping = row._mapping
    return Cohort(
        cohort_id=str(mapping["cohort_id"]),
        funder_id=str(mapping["funder_id"]),
        fund_id=str(mapping["fund_id"]),
        period_start=mapping["period_start"],
        period_end=mapping["period_end"],
        currency_code=str(mapping["currency_code"]),
        monthly_minor=int(mapping["monthly_minor"]),
        ended_from=mapping["ended_from"],
    )


def _contribution(row: Any) -> Contribution:
    mapping = row._mapping
    return Contribution(
        period_start=mapping["period_start"],
        period_end=mapping["period_end"],
        amount_minor=int(mapping["amount_minor"]),
        beneficiary_count=int(mapping["beneficiary_count"]),
        leaf_index=int(mapping["leaf_index"]),
    )


def cohort_of(connection: Connection, cohort_id: str) -> tuple[Cohort, int, int] | None:
    """The cohort, its beneficiary count and its first entry's leaf, or None."""
    row = connection.execute(_SELECT_COHORT, {"cohort_id": cohort_id}).first()
    if row is None:
        return None
    return _cohort(row), int(row.beneficiaries), int(row.leaf_index)


def contributions_of(connection: Connection, cohort_id: str) -> list[Contribution]:
    """The cohort's contributions, by period."""
    return [
        _contribution(row)
        for row in connection.execute(_SELECT_CONTRIBUTIONS, {"cohort_id": cohort_id})
    ]


class FundProjector:
    """Checks and applies the funders' events on the appender's connection."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def apply(self, event: events_pb2.Event, leaf_index: int) -> list[str]:
        """Check and record ``event`` (one of the three funder events) as entry ``leaf_index``;
        return the subjects to index it under."""
        kind = event.WhichOneof("body")
        if kind == "cohort_enrolled":
            return self._enrolled(event, leaf_index)
        if kind == "contribution_paid":
            return self._contribution_paid(event, leaf_index)
        return self._ended(event, leaf_index)

    def _enrolled(self, event: events_pb2.Event, leaf_index: int) -> list[str]:
        body = event.cohort_enrolled
        field = "event.cohort_enrolled"
        proposed = Cohort(
            cohort_id=body.cohort_id,
            funder_id=event.insurer_id,
            fund_id=body.fund_id,
            period_start=_date(body.period_start),
            period_end=_date(body.period_end),
            currency_code=body.monthly_contribution.currency_code,
            monthly_minor=body.monthly_contribution.amount_minor,
        )
        found = cohort_of(self._connection, body.cohort_id)
        rules.check_enrolment_terms(found[0] if found else None, proposed, field)
        tokens = [entry.person_token for entry in body.beneficiaries]
        self._refuse_enrolled_twice(body.cohort_id, tokens, event.event_id, field)
        count = found[1] if found else 0
        if found is None:
            self._connection.execute(
                insert(fund_cohorts).values(
                    cohort_id=body.cohort_id,
                    funder_id=event.insurer_id,
                    fund_id=body.fund_id,
                    period_start=proposed.period_start,
                    period_end=proposed.period_end,
                    currency_code=proposed.currency_code,
                    monthly_minor=proposed.monthly_minor,
                    beneficiaries=len(tokens),
                    ended_from=None,
                    leaf_index=leaf_index,
                    end_leaf_index=None,
                )
            )
        else:
            self._connection.execute(
                update(fund_cohorts)
                .where(fund_cohorts.c.cohort_id == body.cohort_id)
                .values(beneficiaries=count + len(tokens))
            )
        self._connection.execute(
            insert(fund_cohort_members),
            [
                {
                    "cohort_id": body.cohort_id,
                    "person_token": entry.person_token,
                    "position": count + offset + 1,
                    "state_code": entry.state_code,
                    "leaf_index": leaf_index,
                }
                for offset, entry in enumerate(body.beneficiaries)
            ],
        )
        return [f"cohort:{body.cohort_id}", *(f"person:{token}" for token in tokens)]

    def _refuse_enrolled_twice(
        self, cohort_id: str, tokens: list[str], event_id: str, field: str
    ) -> None:
        """A person is in a cohort once (the event itself lists each once: validated)."""
        enrolled = set(
            self._connection.execute(
                _SELECT_ENROLLED, {"cohort_id": cohort_id, "tokens": tokens}
            ).scalars()
        )
        if not enrolled:
            return
        position = next(p for p, token in enumerate(tokens) if token in enrolled)
        raise FailedPrecondition(
            f"a beneficiary of event {event_id!r} is already in cohort {cohort_id!r}",
            reason="BENEFICIARY_ALREADY_ENROLLED",
            field_violations=[
                FieldViolation(
                    f"{field}.beneficiaries[{position}].person_token", "already enrolled"
                )
            ],
            metadata={"cohort_id": cohort_id, "person_token": tokens[position]},
        )

    def _own(self, cohort_id: str, funder_id: str, field: str) -> tuple[Cohort, int]:
        found = cohort_of(self._connection, cohort_id)
        cohort = rules.check_own(found[0] if found else None, cohort_id, funder_id, field)
        return cohort, found[1] if found else 0

    def _contribution_paid(self, event: events_pb2.Event, leaf_index: int) -> list[str]:
        body = event.contribution_paid
        field = "event.contribution_paid"
        cohort, count = self._own(body.cohort_id, event.insurer_id, f"{field}.cohort_id")
        paid = Contribution(
            period_start=_date(body.period_start),
            period_end=_date(body.period_end),
            amount_minor=body.amount.amount_minor,
            beneficiary_count=body.beneficiary_count,
            leaf_index=leaf_index,
        )
        earlier = contributions_of(self._connection, body.cohort_id)
        rules.check_contribution(
            cohort,
            paid,
            currency_code=body.amount.currency_code,
            beneficiaries=count,
            earlier=earlier,
            field=field,
        )
        self._connection.execute(
            insert(fund_contributions).values(
                leaf_index=leaf_index,
                cohort_id=body.cohort_id,
                period_start=paid.period_start,
                period_end=paid.period_end,
                currency_code=body.amount.currency_code,
                amount_minor=paid.amount_minor,
                beneficiary_count=paid.beneficiary_count,
            )
        )
        return [f"cohort:{body.cohort_id}"]

    def _ended(self, event: events_pb2.Event, leaf_index: int) -> list[str]:
        body = event.cohort_ended
        field = "event.cohort_ended"
        cohort, _ = self._own(body.cohort_id, event.insurer_id, f"{field}.cohort_id")
        effective = _date(body.effective_date)
        rules.check_end(
            cohort, effective, contributions_of(self._connection, body.cohort_id), field
        )
        self._connection.execute(
            update(fund_cohorts)
            .where(fund_cohorts.c.cohort_id == body.cohort_id)
            .values(ended_from=effective, end_leaf_index=leaf_index)
        )
        return [f"cohort:{body.cohort_id}"]


@dataclass(frozen=True)
class CohortMembership:
    """One person's place in one cohort, with what decides their coverage."""

    cohort: Cohort
    position: int
    leaf_indexes: tuple[int, ...]
    """The cohort's first entry, the member's enrolment, its end (if any)."""
    contributions: tuple[Contribution, ...]


_TOKENS_PER_STATEMENT = 100

_MEMBERSHIP_ROWS = (
    select(
        fund_cohorts,
        fund_cohort_members.c.position,
        fund_cohort_members.c.leaf_index.label("member_leaf_index"),
        fund_cohort_members.c.person_token,
    )
    .join(fund_cohort_members, fund_cohort_members.c.cohort_id == fund_cohorts.c.cohort_id)
    .order_by(fund_cohorts.c.period_start, fund_cohorts.c.cohort_id)
)
_SELECT_MEMBERSHIPS = _MEMBERSHIP_ROWS.where(
    fund_cohort_members.c.person_token == bindparam("token")
)


@lru_cache(maxsize=_TOKENS_PER_STATEMENT)
def _select_memberships_of(count: int) -> Select[Any]:
    """:data:`_SELECT_MEMBERSHIPS` for ``count`` people at once (a household; parameters
    ``token_<n>``), built once per count: the same SQL as an expanding IN, without its
    post-compilation on every call."""
    return _MEMBERSHIP_ROWS.where(
        fund_cohort_members.c.person_token.in_([bindparam(f"token_{n}") for n in range(count)])
    )


def memberships_of(connection: Connection, token: str) -> list[CohortMembership]:
    """Every cohort the person of ``token`` is a beneficiary of."""
    return [
        _membership(connection, row)
        for row in connection.execute(_SELECT_MEMBERSHIPS, {"token": token})
    ]


def memberships_of_tokens(
    connection: Connection, tokens: Sequence[str]
) -> dict[str, list[CohortMembership]]:
    """:func:`memberships_of` of each of ``tokens`` (none: absent), one statement per 100."""
    found: dict[str, list[CohortMembership]] = {}
    wanted = sorted(set(tokens))
    for start in range(0, len(wanted), _TOKENS_PER_STATEMENT):
        chunk = wanted[start : start + _TOKENS_PER_STATEMENT]
        parameters = {f"token_{n}": token for n, token in enumerate(chunk)}
        for row in connection.execute(_select_memberships_of(len(chunk)), parameters):
            found.setdefault(str(row.person_token), []).append(_membership(connection, row))
    return found


def _membership(connection: Connection, row: Row[Any]) -> CohortMembership:
    leaves = [int(row.leaf_index), int(row.member_leaf_index)]
    if row.end_leaf_index is not None:
        leaves.append(int(row.end_leaf_index))
    return CohortMembership(
        cohort=_cohort(row),
        position=int(row.position),
        leaf_indexes=tuple(sorted(set(leaves))),
        contributions=tuple(contributions_of(connection, str(row.cohort_id))),
    )


def totals_inputs(
    connection: Connection, funder_id: str | None
) -> tuple[list[CohortRecord], list[MemberRecord], dict[str, list[Contribution]]]:
    """The cohorts, beneficiaries and contributions of one funder (None: every funder), read
    in the caller's transaction, as :func:`ledger.funds.totals.fund_totals` takes them."""
    chosen = select(fund_cohorts.c.cohort_id)
    if funder_id is not None:
        chosen = chosen.where(fund_cohorts.c.funder_id == funder_id)
    cohorts = [
        CohortRecord(
            cohort=_cohort(row),
            leaf_index=int(row.leaf_index),
            end_leaf_index=None if row.end_leaf_index is None else int(row.end_leaf_index),
        )
        for row in connection.execute(
            select(fund_cohorts).where(fund_cohorts.c.cohort_id.in_(chosen))
        )
    ]
    members = [
        MemberRecord(
            str(row.cohort_id), int(row.position), str(row.state_code), int(row.leaf_index)
        )
        for row in connection.execute(
            select(
                fund_cohort_members.c.cohort_id,
                fund_cohort_members.c.position,
                fund_cohort_members.c.state_code,
                fund_cohort_members.c.leaf_index,
            ).where(fund_cohort_members.c.cohort_id.in_(chosen))
        )
    ]
    contributions: dict[str, list[Contribution]] = defaultdict(list)
    for row in connection.execute(
        select(fund_contributions)
        .where(fund_contributions.c.cohort_id.in_(chosen))
        .order_by(fund_contributions.c.period_start)
    ):
        contributions[str(row.cohort_id)].append(_contribution(row))
    return cohorts, members, dict(contributions)
