"""The renewal saga's facade: quote the fee, collect it through a gateway, record it in the
ledger once, refund it, reconcile. Each use case lives in the module of its concern and gets
its dependencies (the unit of work among them) passed in as one :class:`payments.saga.Saga`:

* ``payments.quotes``: price a renewal and store the quote (refused before anything is written
  when the fee could not be recorded);
* ``payments.charges``: StartPayment and CompletePayment (the gateway's side);
* ``payments.recording``: record a captured fee once, or return it when refused for good;
* ``payments.refunds``: partial, repeatable refunds, each a FeeRefunded entry;
* ``payments.reconciliation``: settle what faults left unfinished, and say what it did;
* ``payments.fee_entries``: the FeeCollected / FeeRefunded entries themselves.

States of a payment (``payments.states``)::

    started --gateway--> pending (hosted page) --confirmed by get_status--> captured
    captured --> recording --> recorded, or --> returning --> returned (refused for good)
    started / pending --> declined, voided, failed, mismatch; a timeout --> unknown
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

from sqlalchemy import Engine, insert, select

from ledger.clock import Clock, to_micros
from ledger.coverage.reader import CoverageReader
from payments import charges, quotes, reconciliation, refunds
from payments.fee_entries import FeeEntries
from payments.gateway import Money, PaymentGateway
from payments.limits import QUOTE_TTL
from payments.quotes import (
    MemberInput,
    QuoteLine,
    QuoteRecord,
    QuoteRequest,
    quote_record,
)
from payments.saga import (
    Crash,
    PaymentRecord,
    Recorder,
    Saga,
    UnitOfWork,
    load_payment,
    load_quote,
)
from payments.tables import gateway_notifications, payments

__all__ = [
    "Crash",
    "MemberInput",
    "PaymentRecord",
    "QuoteLine",
    "QuoteRecord",
    "QuoteRequest",
    "Recorder",
    "Renewals",
]


class Renewals:
    """The renewal use cases. Synchronous (gateways are); the gRPC layer runs it in threads."""

    def __init__(
        self,
        engine: Engine,
        gateways: Mapping[str, PaymentGateway],
        recorder: Recorder,
        coverage: CoverageReader,
        clock: Clock,
        *,
        authority_id: str,
        quote_ttl: dt.timedelta = QUOTE_TTL,
        crash: Callable[[str], None] = lambda point: None,
        notification_base_url: str = "",
    ) -> None:
        self.notification_base_url = notification_base_url
        """Where gateways post results (``<base>/notify/<gateway>``, payments.notifications)."""
        self.saga = Saga(
            uow=UnitOfWork(engine),
            gateways=dict(gateways),
            recorder=recorder,
            coverage=coverage,
            clock=clock,
            authority_id=authority_id,
            entries=FeeEntries(authority_id, clock),
            quote_ttl=quote_ttl,
            crash=crash,
        )

    @property
    def gateways(self) -> dict[str, PaymentGateway]:
        """The configured adapters, by name."""
        return dict(self.saga.gateways)

    def quote(self, request: QuoteRequest) -> QuoteRecord:
        """Price the renewal (or, for a private-insurance jurisdiction, check the household)."""
        return quotes.quote(self.saga, request)

    def start_payment(
        self, quote_id: str, idempotency_key: str, gateway: str, return_url: str = ""
    ) -> PaymentRecord:
        """Start collecting a quote's fee; returns the payment (pending with a redirect URL,
        recorded, returned, declined or unknown)."""
        return charges.start_payment(
            self.saga, quote_id, idempotency_key, gateway, return_url, self.notification_base_url
        )

    def complete_payment(self, payment_id: str) -> PaymentRecord:
        """Confirm with the gateway itself, then record once (never on the portal's word)."""
        return charges.complete_payment(self.saga, payment_id)

    def refund(
        self, payment_id: str, amount_minor: int, idempotency_key: str, reason: str = ""
    ) -> PaymentRecord:
        """Refund part of a recorded payment, once per idempotency key."""
        return refunds.refund(self.saga, payment_id, amount_minor, idempotency_key, reason)

    def reconcile(
        self, *, stale_after: dt.timedelta = dt.timedelta(minutes=30)
    ) -> list[reconciliation.ReconcileItem]:
        """Compare every unfinished payment and refund last changed at least ``stale_after``
        ago (the only filter) with its gateway and repair it; one item per thing looked at."""
        return reconciliation.reconcile(self.saga, stale_after=stale_after)

    # Reads, and the portal's evidence.

    def get_payment(self, payment_id: str) -> PaymentRecord:
        """The payment as stored."""
        return self.saga.payment(payment_id)

    def get_quote(self, quote_id: str) -> QuoteRecord:
        """A stored quote (without the household verdict it may have carried)."""
        with self.saga.uow.read() as connection:
            return quote_record(load_quote(connection, quote_id))

    def ids_of(
        self, *, payment_id: str | None = None, quote_id: str | None = None
    ) -> tuple[str | None, str]:
        """(payment id or None, quote id) of a renewal known by either."""
        with self.saga.uow.read() as connection:
            if payment_id is not None:
                return payment_id, load_payment(connection, payment_id).quote_id
            assert quote_id is not None
            load_quote(connection, quote_id)
            row = connection.execute(
                select(payments.c.payment_id).where(payments.c.quote_id == quote_id)
            ).first()
        return (None if row is None else str(row.payment_id)), quote_id

    def amount_of(self, payment_id: str) -> Money | None:
        """What payment ``payment_id`` collects (KNET's inquiry needs the original amount)."""
        with self.saga.uow.read() as connection:
            row = connection.execute(
                select(payments.c.currency_code, payments.c.amount_minor).where(
                    payments.c.payment_id == payment_id
                )
            ).first()
        return None if row is None else Money(row.currency_code, int(row.amount_minor))

    def store_portal_hint(self, payment_id: str, raw: bytes) -> None:
        """Keep what the portal says the gateway answered (verbatim, unverified): evidence for
        disputes and reconciliation, never a reason to record a payment."""
        payment = self.get_payment(payment_id)
        with self.saga.uow.write() as connection:
            connection.execute(
                insert(gateway_notifications).values(
                    payment_id=payment_id,
                    gateway=payment.gateway,
                    verified="portal",
                    body=raw,
                    received_at_us=to_micros(self.saga.clock.now()),
                )
            )
