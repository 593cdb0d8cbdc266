"""Retention: how long the vault keeps a person after their last coverage ended, per jurisdiction.

Periods are dated data files (``ledger/identity/retention/<version>.json``, like the fee
schedules in payments/schedules/): a jurisdiction, the day the period applies from, the number of
days, and the legal basis recorded in each ``PersonErased`` entry. :func:`expired_people` lists
the people (by token) whose last coverage ended longer ago than their jurisdiction's period on
``today`` and who are not erased yet; ``policy-ledger erase --expired`` erases them. A person
the vault knows but no coverage names (tokenized, never covered) is not listed.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from importlib import resources

from sqlalchemy import Connection, func, select

from ledger.storage.tables import coverages
from ledger.storage.vault_store import person_tokens

__all__ = ["ExpiredPerson", "RetentionPeriod", "expired_people", "load_retention_periods"]


@dataclass(frozen=True)
class RetentionPeriod:
    """One dated retention period of one jurisdiction."""

    jurisdiction: str
    version: str
    effective_from: dt.date
    retention_days: int
    basis: str


@dataclass(frozen=True)
class ExpiredPerson:
    """A person to erase, by token, and why."""

    person_token: str
    jurisdiction: str
    last_covered_day: dt.date
    period: RetentionPeriod

    @property
    def why(self) -> str:
        """The basis recorded in the PersonErased entry."""
        return (
            f"{self.period.basis} ({self.period.version}: {self.period.retention_days} days "
            f"after the last covered day, {self.last_covered_day.isoformat()})"
        )


def load_retention_periods() -> list[RetentionPeriod]:
    """Every packaged period file, checked."""
    periods = []
    folder = resources.files("ledger.identity").joinpath("retention")
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if not entry.name.endswith(".json"):
            continue
        data = json.loads(entry.read_text(encoding="utf-8"))
        period = RetentionPeriod(
            jurisdiction=str(data["jurisdiction"]),
            version=str(data["version"]),
            effective_from=dt.date.fromisoformat(data["effective_from"]),
            retention_days=int(data["retention_days"]),
            basis=str(data["basis"]),
        )
        if period.retention_days <= 0 or entry.name != f"{period.version}.json":
            raise ValueError(f"retention file {entry.name}: bad version or retention_days")
        periods.append(period)
    return periods


def _period_on(
    periods: list[RetentionPeriod], jurisdiction: str, today: dt.date
) -> RetentionPeriod | None:
    applicable = [
        p for p in periods if p.jurisdiction == jurisdiction and p.effective_from <= today
    ]
    return max(applicable, key=lambda p: p.effective_from) if applicable else None


def expired_people(
    connection: Connection, today: dt.date, periods: list[RetentionPeriod] | None = None
) -> list[ExpiredPerson]:
    """The people not erased whose last coverage ended more than their period before
    ``today``, oldest first (a jurisdiction without a period keeps its people)."""
    periods = load_retention_periods() if periods is None else periods
    last_day = func.max(coverages.c.end_date).label("last_day")
    rows = connection.execute(
        select(person_tokens.c.token, person_tokens.c.country, last_day)
        .join(coverages, coverages.c.person_key == person_tokens.c.token)
        .where(person_tokens.c.erased_at_us.is_(None))
        .group_by(person_tokens.c.token, person_tokens.c.country)
        .order_by(last_day, person_tokens.c.token)
    )
    expired = []
    for row in rows:
        period = _period_on(periods, row.country, today)
        last = (
            row.last_day
            if isinstance(row.last_day, dt.date)
            else dt.date.fromisoformat(str(row.last_day))
        )
        if period is not None and last + dt.timedelta(days=period.retention_days) < today:
            expired.append(ExpiredPerson(row.token, row.country, last, period))
    return expired
