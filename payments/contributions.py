"""A Moroccan insured person's contribution status (issue 11, item 5): paid through, owed.

Contributions are priced by the jurisdiction's dated schedule (``payments/schedules/ma-*.json``:
MAD, 2 decimals, the insured's monthly share; declared spouses and children are exempt) and
settled through the renewal saga (QuoteRenewal for the months owed, StartPayment with the CMI
adapter): each settled contribution is one ``FeeCollected`` entry, recorded exactly once, whose
government coverage of the insured *is* the record of the months it paid. So the status is read
from the ledger's projections, never from the payments tables:

  (1) ``insured_since``: the first day the person is covered as SELF by a policy that is not a
      contribution (the fund's own policy); none: NOT_FOUND, the person is not insured;
  (2) ``paid_through``: the last day of the contribution coverage (plan ``GOVERNMENT-HEALTH``,
      relationship SELF, in the schedule's currency) that still runs to its period's end, of a
      contribution not refunded in full (a full refund, before or after the period, means it was
      not paid: it no longer counts; a partial refund leaves it counting);
  (3) ``owed``: the schedule's price of the months from the day after ``paid_through`` (or from
      ``insured_since``) through the end of the month of ``as_of``; zero when paid ahead.
docs/beneficiaries.md, "Contributions", explains it with its sources.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, and_, func, select

from ledger.coverage.projector import GOVERNMENT_PLAN, PERIOD_END
from ledger.errors import NotFound
from ledger.storage.log_store import StoredCheckpoint, latest_checkpoint
from ledger.storage.tables import coverages, fee_refunds, policies
from payments import fees

__all__ = ["ContributionStatus", "contribution_status", "month_end"]

_SELF = "self"


@dataclass(frozen=True)
class ContributionStatus:
    """What an insured person has paid and owes, at one checkpoint."""

    person_token: str
    insured_since: dt.date
    paid_through: dt.date | None
    owed_minor: int
    currency: str
    owed_through: dt.date
    schedule_version: str
    head: StoredCheckpoint


def month_end(day: dt.date) -> dt.date:
    """The last day of ``day``'s month."""
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def contribution_status(
    connection: Connection, person_token: str, jurisdiction: str, as_of: dt.date
) -> ContributionStatus:
    """Steps (1)-(3) of the module doc, on one connection (one snapshot)."""
    head = latest_checkpoint(connection)
    insured_since = connection.execute(  # (1)
        select(func.min(coverages.c.start_date))
        .select_from(coverages.join(policies, _policy_of_coverage()))
        .where(
            coverages.c.person_key == person_token,
            coverages.c.relationship == _SELF,
            policies.c.plan != GOVERNMENT_PLAN,
        )
    ).scalar()
    if insured_since is None:
        raise NotFound(
            "the person is not insured as SELF by any policy: no contribution is due",
            reason="NOT_INSURED",
            metadata={"person_token": person_token},
        )
    schedule = fees.default_schedules().for_date(jurisdiction, as_of)
    paid_through = _paid_through(connection, person_token, schedule.currency)  # (2)
    owed_through = month_end(as_of)  # (3)
    first_owed = max(
        insured_since, paid_through + dt.timedelta(days=1) if paid_through else insured_since
    )
    owed = 0
    if first_owed <= owed_through:
        quote = fees.quote_fees(
            jurisdiction,
            as_of,
            first_owed,
            owed_through,
            [
                fees.MemberFacts(
                    person_token,
                    fees.Relationship.SELF,
                    fees.ResidenceCategory.OTHER,
                    None,
                    sponsor_is_kuwaiti=False,
                )
            ],
        )
        owed = quote.total_minor
    return ContributionStatus(
        person_token=person_token,
        insured_since=insured_since,
        paid_through=paid_through,
        owed_minor=owed,
        currency=schedule.currency,
        owed_through=owed_through,
        schedule_version=schedule.version,
        head=head,
    )


def _paid_through(connection: Connection, person_token: str, currency: str) -> dt.date | None:
    """The last day of the person's contribution coverage still running to its end, of a
    contribution not refunded in full (a refund after the period leaves the coverage as it was,
    but the contribution was not paid: it does not count)."""
    refunded = (
        select(
            fee_refunds.c.insurer_id,
            fee_refunds.c.policy_id,
            func.sum(fee_refunds.c.amount_minor).label("refunded_minor"),
        )
        .group_by(fee_refunds.c.insurer_id, fee_refunds.c.policy_id)
        .subquery()
    )
    rows = connection.execute(
        select(coverages.c.end_date, policies.c.annual_premium_minor, refunded.c.refunded_minor)
        .select_from(
            coverages.join(policies, _policy_of_coverage()).outerjoin(
                refunded,
                and_(
                    refunded.c.insurer_id == policies.c.insurer_id,
                    refunded.c.policy_id == policies.c.policy_id,
                ),
            )
        )
        .where(
            coverages.c.person_key == person_token,
            coverages.c.relationship == _SELF,
            coverages.c.end_reason == PERIOD_END,
            policies.c.plan == GOVERNMENT_PLAN,
            policies.c.currency_code == currency,
        )
    ).all()
    paid = [
        row.end_date
        for row in rows
        if row.refunded_minor is None or row.refunded_minor < row.annual_premium_minor
    ]
    return max(paid, default=None)


def _policy_of_coverage() -> ColumnElement[bool]:
    return and_(
        policies.c.insurer_id == coverages.c.insurer_id,
        policies.c.policy_id == coverages.c.policy_id,
    )
