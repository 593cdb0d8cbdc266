"""The payments' own Prometheus series, registered by the server extension (payments.service
``install``) in the registry the ledger hands it (``ServerContext.metrics``).

``policy_ledger_payments{state}`` and ``policy_ledger_refunds{state}``: how many payments and
refunds stand in each state (payments.states), every state listed, zero included. They are
counted in the database at each scrape (one ``GROUP BY`` on the indexed state column each), so
every server sharing a database reports the same figures and a restart loses nothing. A scrape
while the database is unreachable leaves the two series out and logs why; the other series of
the scrape still answer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, Table, func, select
from sqlalchemy.exc import SQLAlchemyError

from payments.states import PaymentState, RefundState
from payments.tables import payments, refunds

__all__ = ["PaymentStateCollector"]

log = logging.getLogger(__name__)


class PaymentStateCollector(Collector):
    """Payments and refunds by state, counted in the database at each scrape."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def describe(self) -> Iterator[Metric]:
        """The two families without samples (registering must not query the database)."""
        yield GaugeMetricFamily("policy_ledger_payments", "Payments in each state.")
        yield GaugeMetricFamily("policy_ledger_refunds", "Refunds in each state.")

    def collect(self) -> Iterator[Metric]:
        try:
            with self._engine.connect() as connection:
                by_payment_state = _counts(connection, payments)
                by_refund_state = _counts(connection, refunds)
        except SQLAlchemyError as error:
            log.warning("payment state counts not scraped: %s", error)
            return
        payment_family = GaugeMetricFamily(
            "policy_ledger_payments", "Payments in each state.", labels=("state",)
        )
        for payment_state in PaymentState:
            payment_family.add_metric(
                (payment_state.value,), by_payment_state.get(payment_state.value, 0)
            )
        refund_family = GaugeMetricFamily(
            "policy_ledger_refunds", "Refunds in each state.", labels=("state",)
        )
        for refund_state in RefundState:
            refund_family.add_metric(
                (refund_state.value,), by_refund_state.get(refund_state.value, 0)
            )
        yield payment_family
        yield refund_family


def _counts(connection: Connection, table: Table) -> dict[str, int]:
    query = select(table.c.state, func.count()).group_by(table.c.state)
    rows = connection.execute(query).all()
    return {str(state): int(count) for state, count in rows}
