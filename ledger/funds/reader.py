"""The FundService's use case: per-funder, per-state, per-month totals from the projections,
in one snapshot with the checkpoint they were computed at (docs/funds.md)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Engine

from ledger import limits
from ledger.clock import Clock, SystemClock
from ledger.coverage.rules import ledger_date
from ledger.errors import FieldViolation, ResourceExhausted
from ledger.funds.projection import totals_inputs
from ledger.funds.totals import FundTotal, fund_totals
from ledger.storage.log_store import StoredCheckpoint, latest_checkpoint

__all__ = ["FundTotals", "FundTotalsReader"]


@dataclass(frozen=True)
class FundTotals:
    """The totals asked for, and the log state they were computed at."""

    totals: tuple[FundTotal, ...]
    checkpoint: StoredCheckpoint


class FundTotalsReader:
    """Read-only; safe from many threads."""

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        """``clock``: what "today" is (a month is owed once it has begun)."""
        self._engine = engine
        self._clock: Clock = clock or SystemClock()

    def totals(
        self,
        funder_id: str | None,
        first_month: dt.date,
        last_month: dt.date,
        state_code: str = "",
    ) -> FundTotals:
        """The totals of ``funder_id`` (None: every funder) for the months asked."""
        with self._engine.connect() as opened:
            # One snapshot: the totals and the checkpoint they are stamped with agree.
            connection = (
                opened
                if opened.dialect.name == "sqlite"
                else opened.execution_options(isolation_level="REPEATABLE READ")
            )
            with connection.begin():
                head = latest_checkpoint(connection)
                cohorts, members, contributions = totals_inputs(connection, funder_id)
        totals = fund_totals(
            cohorts,
            members,
            contributions,
            first_month=first_month,
            last_month=last_month,
            today=ledger_date(self._clock.now()),
            state_code=state_code,
        )
        if len(totals) > limits.fund_totals_rows_max:
            raise ResourceExhausted(
                f"the answer has {len(totals)} rows, over the limit of "
                f"{limits.fund_totals_rows_max}: ask for fewer months, one state or one funder",
                reason="FUND_TOTALS_TOO_MANY_ROWS",
                field_violations=[FieldViolation("to_month", "ask for fewer months")],
            )
        return FundTotals(tuple(totals), head)
