"""The renewal saga: quote the fee, collect it through a gateway, record it in the ledger once.

States of a payment (``payments.state``)::

    started --gateway--> pending (hosted page) --confirmed by get_status--> captured --> recorded
           \\-> captured --> recorded            \\-> declined
           \\-> declined                          (timeout anywhere) --> unknown --get_status--> ...
           \\-> unknown (timeout: only get_status tells)

Rules (ARCHITECTURE.md section 6):

* one payment per quote, whose merchant reference (``payment_id``) is derived from the quote, so
  retries never make a second charge (letters and digits only: KNET's track id rules);
* every StartPayment / RefundPayment carries an idempotency key, stored with the SHA-256 of the
  canonical request for at least 30 days; the same key with another request is refused naming
  the differing field;
* a result is believed only when the gateway itself confirms it (``get_status``), never on the
  portal's or the notification's word;
* recording is one ledger transaction: the FeeCollected entry (which also issues the government
  coverage the fee buys) and the payment's move to ``recorded`` commit together
  (``PendingEntry.on_append``), and the entry's event id is derived from the payment, so a
  payment is recorded at most once whatever crashes and retries happen;
* a timeout is ``unknown``, never a failure; :meth:`Renewals.reconcile` resolves what is left.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy.exc import IntegrityError

from ledger.clock import Clock, from_micros, to_micros
from ledger.coverage.model import HouseholdVerdict
from ledger.coverage.model import Relationship as CoverageRelationship
from ledger.coverage.projector import check_fee_collected, person_ref
from ledger.coverage.reader import CoverageReader
from ledger.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    LedgerError,
    NotFound,
    Unavailable,
)
from ledger.events import civil_date
from ledger.identity.vault import tokens_in_transaction
from ledger.storage.append import Receipt
from ledger.storage.db import WRITE_LOCK_OPTION
from ledger.v1 import events_pb2, types_pb2
from payments import fees
from payments.gateway import (
    Capability,
    GatewayOutcomeUnknown,
    GatewayRefused,
    GatewayResult,
    Money,
    PaymentGateway,
    PaymentRequest,
    PaymentStatus,
)
from payments.limits import (
    IDEMPOTENCY_KEY_CHARS,
    QUOTE_TTL,
)
from payments.quotes import (
    MemberInput,
    QuoteLine,
    QuoteRecord,
    QuoteRequest,
    quote_record,
    refuse_changed_schedule,
)
from payments.states import (
    PAYMENT_TRANSITIONS,
    PaymentState,
    move_payment,
)
from payments.tables import gateway_notifications, idempotency_keys, payments, quotes

if TYPE_CHECKING:
    from payments.reconciliation import ReconcileItem

__all__ = [
    "MemberInput",
    "PaymentRecord",
    "QuoteLine",
    "QuoteRecord",
    "QuoteRequest",
    "Recorder",
    "Renewals",
    "write_transaction",
]

PRIVATE_INSURANCE_JURISDICTIONS = frozenset({"SA"})
"""Where residents must hold private insurance instead of paying a fee (the Saudi model)."""


class Recorder(Protocol):
    """Appends a signed event to the ledger; ``on_append`` runs in the same transaction."""

    def __call__(
        self, event: events_pb2.Event, on_append: Callable[[Connection, int], None]
    ) -> Receipt: ...

    def check(self, event: events_pb2.Event) -> None:
        """Raise what the ledger's admission would refuse in ``event`` signed now (its signing
        key unknown, revoked or expired; the event malformed), appending nothing."""


class Crash(Exception):
    """Raised by a crash hook to simulate the process dying at a step (fault-injection tests)."""


@dataclass(frozen=True)
class PaymentRecord:
    """A payment's state, as stored."""

    payment_id: str
    quote_id: str
    gateway: str
    state: PaymentState
    currency: str
    amount_minor: int
    captured_minor: int
    refunded_minor: int
    gateway_reference: str
    redirect_url: str
    leaf_index: int | None
    message: str


_IN_FLIGHT = frozenset({PaymentState.STARTED, PaymentState.CAPTURED})
"""States a first StartPayment passes through; a repeat meanwhile does not answer them."""


def _payment_id(quote_id: str) -> str:
    """A quote's payment id: the merchant reference, derived so retries never charge twice."""
    return "pay" + hashlib.sha256(quote_id.encode()).hexdigest()[:24]


def _return_reference(payment_id: str) -> str:
    """The gateway refund reference of a payment's compensation (one per payment)."""
    return "rt" + payment_id.removeprefix("pay")


def _fingerprint(request: Mapping[str, Any]) -> tuple[bytes, str]:
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest(), canonical


_RELATIONSHIPS = {
    fees.Relationship.SELF: events_pb2.RELATIONSHIP_SELF,
    fees.Relationship.SPOUSE: events_pb2.RELATIONSHIP_SPOUSE,
    fees.Relationship.CHILD: events_pb2.RELATIONSHIP_CHILD,
    fees.Relationship.PARENT: events_pb2.RELATIONSHIP_PARENT,
    fees.Relationship.DOMESTIC_WORKER: events_pb2.RELATIONSHIP_DOMESTIC_WORKER,
    fees.Relationship.OTHER: events_pb2.RELATIONSHIP_OTHER,
}


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that takes the database's write lock first (SQLite ``BEGIN IMMEDIATE``):
    a read-then-write transaction would otherwise fail with "database is locked" when another
    writer committed after its first read. PostgreSQL: an ordinary transaction; a concurrent
    duplicate insert fails on the primary key and the caller retries."""
    with (
        engine.connect().execution_options(**{WRITE_LOCK_OPTION: True}) as connection,
        connection.begin(),
    ):
        yield connection


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
        self._engine = engine
        self._gateways = dict(gateways)
        self._record_event = recorder
        self._coverage = coverage
        self._clock = clock
        self._authority_id = authority_id
        self._quote_ttl = quote_ttl
        self._crash = crash

    @property
    def gateways(self) -> dict[str, PaymentGateway]:
        """The configured adapters, by name."""
        return dict(self._gateways)

    # Quotes.

    def quote(self, request: QuoteRequest) -> QuoteRecord:
        """Price the renewal (or, for a private-insurance jurisdiction, check the household)."""
        now = self._clock.now()
        sponsor_key = person_ref(request.sponsor).key
        household: HouseholdVerdict | None = None
        lines: list[QuoteLine] = []
        if request.jurisdiction in PRIVATE_INSURANCE_JURISDICTIONS:
            household = self._household(request)
            currency, total, version = "SAR", 0, "private-insurance"
        else:
            facts = [
                fees.MemberFacts(
                    person_key=person_ref(member.person).key,
                    relationship=member.relationship,
                    residence_category=member.residence_category,
                    birth_date=member.birth_date,
                    sponsor_is_kuwaiti=request.sponsor_is_kuwaiti,
                    domestic_worker_ordinal=member.domestic_worker_ordinal,
                )
                for member in request.members
            ]
            quote = fees.quote_fees(
                request.jurisdiction, now.date(), request.period_start, request.period_end, facts
            )
            for member, line in zip(request.members, quote.lines, strict=True):
                lines.append(
                    QuoteLine(
                        person=member.person,
                        person_key=line.person_key,
                        relationship=member.relationship,
                        schedule_version=line.schedule_version,
                        rule_id=line.rule_id,
                        description=line.rule_description,
                        amount_minor=line.amount_minor,
                    )
                )
            currency, total, version = quote.currency, quote.total_minor, quote.schedule_version
        record = QuoteRecord(
            quote_id=f"q-{secrets.token_hex(8)}",
            jurisdiction=request.jurisdiction,
            sponsor_key=sponsor_key,
            sponsor=request.sponsor,
            currency=currency,
            total_minor=total,
            lines=tuple(lines),
            schedule_version=version,
            period_start=request.period_start,
            period_end=request.period_end,
            expires_at=now + self._quote_ttl,
            payable=household is None and total > 0,
            household=household,
        )
        stored = {
            "sponsor": {
                "type": int(request.sponsor.type),
                "value": request.sponsor.value,
                "country_code": request.sponsor.country_code,
            },
            "lines": [line.to_json() for line in lines],
            "schedule_version": version,
            "period_start": request.period_start.isoformat(),
            "period_end": request.period_end.isoformat(),
            "payable": record.payable,
        }
        serialized = json.dumps(stored, sort_keys=True)
        with write_transaction(self._engine) as connection:
            if record.payable:
                self._refuse_unrecordable(
                    connection,
                    self._fee_event(
                        connection,
                        _payment_id(record.quote_id),
                        record,
                        gateway="quote",
                        gateway_reference="",
                    ),
                )
            connection.execute(
                insert(quotes).values(
                    quote_id=record.quote_id,
                    jurisdiction=request.jurisdiction,
                    sponsor_key=sponsor_key,
                    quote_json=serialized,
                    total_minor=total,
                    currency_code=currency,
                    created_at_us=to_micros(now),
                    expires_at_us=to_micros(record.expires_at),
                )
            )
        return record

    def _household(self, request: QuoteRequest) -> HouseholdVerdict:
        members = [
            (person_ref(member.person), CoverageRelationship(member.relationship.value))
            for member in request.members
        ]
        return self._coverage.check_household(
            person_ref(request.sponsor), members, request.period_start, request.period_end
        )

    def _quote(self, connection: Connection, quote_id: str, *, lock: bool = False) -> Any:
        """The quote row; ``lock``: held until the transaction ends (PostgreSQL ``FOR UPDATE``;
        SQLite's write transaction already serializes every writer)."""
        query = select(quotes).where(quotes.c.quote_id == quote_id)
        row = connection.execute(query.with_for_update() if lock else query).first()
        if row is None:
            raise NotFound(
                f"no quote {quote_id!r}",
                reason="QUOTE_NOT_FOUND",
                field_violations=[FieldViolation("quote_id", "unknown")],
            )
        return row

    # Idempotency.

    def _claim_key(
        self, connection: Connection, key: str, operation: str, request: Mapping[str, Any]
    ) -> str | None:
        """The result id stored under ``key``, or None after claiming it for this request."""
        if len(key) not in IDEMPOTENCY_KEY_CHARS or not key.isprintable():
            raise InvalidArgument(
                "idempotency_key must be 8 to 128 printable characters",
                reason="IDEMPOTENCY_KEY_INVALID",
                field_violations=[FieldViolation("idempotency_key", "8 to 128 characters")],
            )
        digest, canonical = _fingerprint({"operation": operation, **request})
        row = connection.execute(
            select(idempotency_keys).where(idempotency_keys.c.idempotency_key == key)
        ).first()
        if row is None:
            return None
        if bytes(row.fingerprint) != digest:
            first = json.loads(row.request_json)
            again = json.loads(canonical)
            differing = sorted(
                k for k in first.keys() | again.keys() if first.get(k) != again.get(k)
            )
            raise AlreadyExists(
                f"idempotency key already used for another request ({', '.join(differing)} differ)",
                reason="IDEMPOTENCY_KEY_REUSED",
                field_violations=[
                    FieldViolation(name, "differs from the first request") for name in differing
                ],
            )
        return str(row.result_id)

    def _store_key(
        self,
        connection: Connection,
        key: str,
        operation: str,
        request: Mapping[str, Any],
        result_id: str,
    ) -> None:
        digest, canonical = _fingerprint({"operation": operation, **request})
        connection.execute(
            insert(idempotency_keys).values(
                idempotency_key=key,
                operation=operation,
                fingerprint=digest,
                request_json=canonical,
                result_id=result_id,
                created_at_us=to_micros(self._clock.now()),
            )
        )

    # Payments.

    def start_payment(
        self, quote_id: str, idempotency_key: str, gateway: str, return_url: str = ""
    ) -> PaymentRecord:
        """Start collecting a quote's fee; returns the payment (pending with a redirect URL,
        recorded, declined or unknown)."""
        try:
            return self._start_payment(quote_id, idempotency_key, gateway, return_url)
        except IntegrityError:
            # A concurrent call with the same key or quote inserted first (PostgreSQL): this
            # attempt wrote nothing; the retry finds its row and answers like a repeat.
            return self._start_payment(quote_id, idempotency_key, gateway, return_url)

    def _start_payment(
        self, quote_id: str, idempotency_key: str, gateway: str, return_url: str
    ) -> PaymentRecord:
        request = {"quote_id": quote_id, "gateway": gateway, "return_url": return_url}
        now = self._clock.now()
        payment_id = _payment_id(quote_id)
        with write_transaction(self._engine) as connection:
            # The quote's row lock first: every call for this quote waits here for the one
            # before it to commit, and then sees its key and payment (several servers may
            # share the database, so no lock in this process would do).
            quote = self._quote(connection, quote_id, lock=True)
            existing = self._claim_key(connection, idempotency_key, "start_payment", request)
            repeated = None if existing is None else self._payment(connection, existing)
            if repeated is None:
                adapter = self._gateway(gateway)
                self._open_payment(connection, quote, payment_id, gateway, now)
                self._store_key(connection, idempotency_key, "start_payment", request, payment_id)
        if repeated is not None:
            return self._repeat_start(repeated)
        self._crash("after_start_saved")
        amount = Money(quote.currency_code, int(quote.total_minor))
        charge = PaymentRequest(
            merchant_reference=payment_id,
            amount=amount,
            description=f"residence renewal health-insurance fee, quote {quote_id}",
            return_url=return_url,
            notification_url=(
                f"{self.notification_base_url}/notify/{gateway}"
                if self.notification_base_url
                else ""
            ),
        )
        capabilities = adapter.capabilities()
        try:
            if Capability.PURCHASE in capabilities:
                result = adapter.purchase(charge)
            else:
                result = adapter.authorize(charge)
        except GatewayOutcomeUnknown as error:
            self._set_state(
                payment_id, PaymentState.UNKNOWN, message=f"gateway outcome unknown: {error}"
            )
            return self.get_payment(payment_id)
        except GatewayRefused as error:
            self._set_state(payment_id, PaymentState.FAILED, message=f"gateway refused: {error}")
            return self.get_payment(payment_id)
        self._crash("after_gateway_charge")
        return self._apply(payment_id, result)

    def _open_payment(
        self, connection: Connection, quote: Any, payment_id: str, gateway: str, now: dt.datetime
    ) -> None:
        """Check that ``quote`` may be paid now, then save its payment as ``started``."""
        quote_id = quote.quote_id
        stored = json.loads(quote.quote_json)
        if not stored["payable"]:
            raise FailedPrecondition(
                f"quote {quote_id!r} has nothing to collect",
                reason="QUOTE_NOT_PAYABLE",
                field_violations=[FieldViolation("quote_id", "nothing to collect")],
            )
        if from_micros(quote.expires_at_us) <= now:
            raise FailedPrecondition(
                f"quote {quote_id!r} expired at {from_micros(quote.expires_at_us).isoformat()}",
                reason="QUOTE_EXPIRED",
                field_violations=[FieldViolation("quote_id", "expired: ask a new quote")],
            )
        refuse_changed_schedule(quote_id, stored["schedule_version"], quote.jurisdiction, now)
        already = connection.execute(
            select(payments.c.payment_id).where(payments.c.quote_id == quote_id)
        ).first()
        if already is not None:
            raise AlreadyExists(
                f"quote {quote_id!r} already has payment {already.payment_id!r}",
                reason="QUOTE_ALREADY_PAID",
                field_violations=[FieldViolation("quote_id", "already has a payment")],
                metadata={"payment_id": already.payment_id},
            )
        self._refuse_unrecordable(
            connection,
            self._fee_event(
                connection, payment_id, quote_record(quote), gateway=gateway, gateway_reference=""
            ),
        )
        connection.execute(
            insert(payments).values(
                payment_id=payment_id,
                quote_id=quote_id,
                gateway=gateway,
                state=PaymentState.STARTED.value,
                currency_code=quote.currency_code,
                amount_minor=quote.total_minor,
                captured_minor=0,
                refunded_minor=0,
                gateway_reference="",
                redirect_url="",
                leaf_index=None,
                message="",
                created_at_us=to_micros(now),
                updated_at_us=to_micros(now),
            )
        )

    def _repeat_start(self, payment: PaymentRecord) -> PaymentRecord:
        """The answer to a repeated StartPayment: the payment as it stands; while its first call
        is still under way (at the gateway, or being recorded) the gateway is asked and the
        payment recorded, and if that does not settle it, UNAVAILABLE: retry with the same key."""
        if payment.state not in _IN_FLIGHT:
            return payment
        resumed = self.complete_payment(payment.payment_id)
        if resumed.state in _IN_FLIGHT:
            raise Unavailable(
                f"payment {payment.payment_id!r} is still at the gateway; retry with the same key",
                reason="IN_FLIGHT",
                metadata={"payment_id": payment.payment_id},
            )
        return resumed

    def complete_payment(self, payment_id: str) -> PaymentRecord:
        """Confirm with the gateway itself, then record once (never on the portal's word)."""
        payment = self.get_payment(payment_id)
        if not PAYMENT_TRANSITIONS[payment.state]:  # a final state
            return payment
        if payment.state is PaymentState.RETURNING:
            self._return(payment_id, payment.message)
            return self.get_payment(payment_id)
        adapter = self._gateway(payment.gateway)
        try:
            result = adapter.get_status(payment_id)
        except GatewayOutcomeUnknown as error:
            raise Unavailable(
                f"the gateway did not answer; the payment stays {payment.state}: retry",
                reason="GATEWAY_UNAVAILABLE",
            ) from error
        return self._apply(payment_id, result)

    def _apply(self, payment_id: str, result: GatewayResult) -> PaymentRecord:
        """Move the payment to what the gateway says; capture and record when due."""
        payment = self.get_payment(payment_id)
        adapter = self._gateway(payment.gateway)
        if result.status is PaymentStatus.AUTHORIZED:
            try:
                result = adapter.capture(payment_id, Money(payment.currency, payment.amount_minor))
            except GatewayOutcomeUnknown as error:
                self._set_state(
                    payment_id, PaymentState.UNKNOWN, message=f"capture outcome unknown: {error}"
                )
                return self.get_payment(payment_id)
            self._crash("after_gateway_capture")
        if result.status is PaymentStatus.CAPTURED:
            if result.captured_minor != payment.amount_minor:
                self._set_state(
                    payment_id,
                    PaymentState.MISMATCH,
                    message=f"gateway captured {result.captured_minor}, expected "
                    f"{payment.amount_minor}",
                )
                return self.get_payment(payment_id)
            self._set_state(
                payment_id,
                PaymentState.CAPTURED,
                captured=result.captured_minor,
                gateway_reference=result.gateway_reference,
            )
            self._crash("after_captured_saved")
            self._record(payment_id)
            self._crash("after_recorded")
        elif result.status is PaymentStatus.PENDING:
            self._set_state(
                payment_id,
                PaymentState.PENDING,
                redirect_url=result.redirect_url,
                gateway_reference=result.gateway_reference,
            )
        elif result.status is PaymentStatus.DECLINED:
            self._set_state(payment_id, PaymentState.DECLINED, message=result.message)
        elif result.status is PaymentStatus.VOIDED:
            self._set_state(payment_id, PaymentState.VOIDED, message=result.message)
        return self.get_payment(payment_id)

    def _fee_event(
        self,
        connection: Connection,
        payment_id: str,
        quote: QuoteRecord,
        *,
        gateway: str,
        gateway_reference: str,
    ) -> events_pb2.Event:
        """The FeeCollected entry that records ``quote``'s fee (its event id is derived from the
        payment, so it is recorded at most once). It names people by the identity vault's
        tokens, resolved (issued for people new to the ledger) in ``connection``'s write
        transaction: the same household gives the same tokens, so a rebuilt event is the same."""
        now = self._clock.now()
        people = [person_ref(quote.sponsor), *(person_ref(line.person) for line in quote.lines)]
        sponsor_token, *line_tokens = tokens_in_transaction(connection, people, now)
        event = events_pb2.Event(event_id=f"fee-{payment_id}", insurer_id=self._authority_id)
        event.occurred_at.FromDatetime(now)
        body = event.fee_collected
        body.renewal_id = quote.quote_id
        body.sponsor_token = sponsor_token
        body.period_start.CopyFrom(civil_date(quote.period_start))
        body.period_end.CopyFrom(civil_date(quote.period_end))
        for line, token in zip(quote.lines, line_tokens, strict=True):
            body.lines.add(
                person_token=token,
                relationship=_RELATIONSHIPS[line.relationship],
                schedule_version=line.schedule_version,
                rule_id=line.rule_id,
                amount=types_pb2.Money(
                    currency_code=quote.currency, amount_minor=line.amount_minor
                ),
            )
        body.total.CopyFrom(
            types_pb2.Money(currency_code=quote.currency, amount_minor=quote.total_minor)
        )
        body.merchant_reference = payment_id
        body.gateway = gateway
        body.gateway_reference = gateway_reference
        return event

    def _refuse_unrecordable(self, connection: Connection, event: events_pb2.Event) -> None:
        """Refuse (FAILED_PRECONDITION, the rule's reason) what recording would refuse now: the
        ledger's admission of the signed entry (authority key valid, event well-formed) and the
        FeeCollected rules against current state (authority licensed, nobody in the household
        already covered by it for the period) -- the very function the append runs."""
        try:
            self._record_event.check(event)
            check_fee_collected(connection, event)
        except Unavailable:
            raise
        except LedgerError as error:
            raise FailedPrecondition(
                f"this renewal cannot be recorded, so nothing is charged: {error.message}",
                reason=error.details.reason or error.code,
                field_violations=list(error.details.field_violations),
                metadata=dict(error.details.metadata),
            ) from error

    def _record(self, payment_id: str) -> None:
        """Append FeeCollected and mark the payment recorded, in one ledger transaction; when
        the ledger refuses it for good, return the fee through the gateway."""
        with self._engine.connect() as connection:
            payment = connection.execute(
                select(payments).where(payments.c.payment_id == payment_id)
            ).one()
            quote = self._quote(connection, payment.quote_id)
        if payment.state != PaymentState.CAPTURED:
            return
        with write_transaction(self._engine) as connection:  # the tokens it may issue
            event = self._fee_event(
                connection,
                payment_id,
                quote_record(quote),
                gateway=payment.gateway,
                gateway_reference=payment.gateway_reference,
            )

        def mark_recorded(connection: Connection, leaf_index: int) -> None:
            if not move_payment(
                connection,
                payment_id,
                PaymentState.RECORDED,
                why="FeeCollected appended",
                now=self._clock.now(),
                leaf_index=leaf_index,
            ):
                raise Unavailable(
                    f"payment {payment_id!r} changed while it was recorded; retry",
                    reason="PAYMENT_CHANGED",
                )

        try:
            # A duplicate receipt means an earlier attempt recorded it (its answer was lost):
            # that transaction moved the payment to recorded together with the entry.
            self._record_event(event, mark_recorded)
        except Unavailable as error:
            if self.get_payment(payment_id).state is PaymentState.RECORDED:
                return
            raise Unavailable(
                f"the fee was captured but could not be recorded yet: {error.message}; "
                "retry CompletePayment, or reconcile will record it",
                reason="RECORD_PENDING",
                metadata={"payment_id": payment_id},
            ) from error
        except LedgerError as error:
            if self.get_payment(payment_id).state is PaymentState.RECORDED:
                return
            self._crash("before_return")
            self._return(payment_id, f"the ledger refused the record: {error.message}")

    def _return(self, payment_id: str, why: str) -> None:
        """Compensation: a captured fee the ledger refused for good is refunded in full.
        ``returning`` is saved first, so a crash or a gateway timeout leaves a refund in flight
        that reconciliation finishes (the refund reference is derived from the payment, so the
        gateway applies it once)."""
        self._set_state(
            payment_id,
            PaymentState.RETURNING,
            message=why,
        )
        payment = self.get_payment(payment_id)
        why = payment.message
        if payment.state is not PaymentState.RETURNING:
            return
        adapter = self._gateway(payment.gateway)
        try:
            result = adapter.refund(
                payment_id,
                Money(payment.currency, payment.captured_minor),
                _return_reference(payment_id),
            )
        except (GatewayOutcomeUnknown, GatewayRefused):
            return  # still returning: CompletePayment or reconciliation retries the same refund
        self._crash("after_gateway_return")
        self._set_state(
            payment_id,
            PaymentState.RETURNED,
            message=f"{why}; refunded in full by the gateway",
            gateway_reference=result.gateway_reference,
        )

    def _set_state(
        self,
        payment_id: str,
        state: PaymentState,
        *,
        message: str = "",
        captured: int | None = None,
        gateway_reference: str = "",
        redirect_url: str = "",
    ) -> None:
        """Move the payment if the transition table allows it (see payments.states)."""
        with write_transaction(self._engine) as connection:
            move_payment(
                connection,
                payment_id,
                state,
                why=message,
                now=self._clock.now(),
                captured_minor=captured,
                gateway_reference=gateway_reference,
                redirect_url=redirect_url,
            )

    def _gateway(self, name: str) -> PaymentGateway:
        adapter = self._gateways.get(name)
        if adapter is None:
            raise InvalidArgument(
                f"unknown gateway {name!r}; configured: {', '.join(sorted(self._gateways))}",
                reason="GATEWAY_UNKNOWN",
                field_violations=[FieldViolation("gateway", "not configured")],
            )
        return adapter

    def _payment(
        self, connection: Connection, payment_id: str, *, lock: bool = False
    ) -> PaymentRecord:
        query = select(payments).where(payments.c.payment_id == payment_id)
        row = connection.execute(query.with_for_update() if lock else query).first()
        if row is None:
            raise NotFound(
                f"no payment {payment_id!r}",
                reason="PAYMENT_NOT_FOUND",
                field_violations=[FieldViolation("payment_id", "unknown")],
            )
        return PaymentRecord(
            payment_id=row.payment_id,
            quote_id=row.quote_id,
            gateway=row.gateway,
            state=PaymentState(row.state),
            currency=row.currency_code,
            amount_minor=int(row.amount_minor),
            captured_minor=int(row.captured_minor),
            refunded_minor=int(row.refunded_minor),
            gateway_reference=row.gateway_reference,
            redirect_url=row.redirect_url,
            leaf_index=None if row.leaf_index is None else int(row.leaf_index),
            message=row.message,
        )

    def get_payment(self, payment_id: str) -> PaymentRecord:
        """The payment as stored."""
        with self._engine.connect() as connection:
            return self._payment(connection, payment_id)

    def store_portal_hint(self, payment_id: str, raw: bytes) -> None:
        """Keep what the portal says the gateway answered (verbatim, unverified): evidence for
        disputes and reconciliation, never a reason to record a payment."""
        payment = self.get_payment(payment_id)
        with write_transaction(self._engine) as connection:
            connection.execute(
                insert(gateway_notifications).values(
                    payment_id=payment_id,
                    gateway=payment.gateway,
                    verified="portal",
                    body=raw,
                    received_at_us=to_micros(self._clock.now()),
                )
            )

    def amount_of(self, payment_id: str) -> Money | None:
        """What payment ``payment_id`` collects (KNET's inquiry needs the original amount)."""
        with self._engine.connect() as connection:
            row = connection.execute(
                select(payments.c.currency_code, payments.c.amount_minor).where(
                    payments.c.payment_id == payment_id
                )
            ).first()
        return None if row is None else Money(row.currency_code, int(row.amount_minor))

    def ids_of(
        self, *, payment_id: str | None = None, quote_id: str | None = None
    ) -> tuple[str | None, str]:
        """(payment id or None, quote id) of a renewal known by either."""
        with self._engine.connect() as connection:
            if payment_id is not None:
                return payment_id, self._payment(connection, payment_id).quote_id
            assert quote_id is not None
            self._quote(connection, quote_id)
            row = connection.execute(
                select(payments.c.payment_id).where(payments.c.quote_id == quote_id)
            ).first()
        return (None if row is None else str(row.payment_id)), quote_id

    def get_quote(self, quote_id: str) -> QuoteRecord:
        """A stored quote (without the household verdict it may have carried)."""
        with self._engine.connect() as connection:
            return quote_record(self._quote(connection, quote_id))

    # Refunds (payments.refunds).

    def refund(
        self, payment_id: str, amount_minor: int, idempotency_key: str, reason: str = ""
    ) -> PaymentRecord:
        """Refund part of a recorded payment, once per idempotency key."""
        from payments.refunds import refund  # noqa: PLC0415 (it imports this module)

        return refund(self, payment_id, amount_minor, idempotency_key, reason)

    # Reconciliation (payments.reconciliation).

    def reconcile(
        self, *, stale_after: dt.timedelta = dt.timedelta(minutes=30)
    ) -> list[ReconcileItem]:
        """Compare every unfinished payment and refund last changed at least ``stale_after``
        ago (the only filter) with its gateway and repair it; one item per thing looked at."""
        from payments.reconciliation import reconcile  # noqa: PLC0415 (it imports this module)

        return reconcile(self, stale_after=stale_after)
