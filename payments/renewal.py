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
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from ledger.clock import Clock, from_micros, to_micros
from ledger.coverage.model import HouseholdVerdict
from ledger.coverage.model import Relationship as CoverageRelationship
from ledger.coverage.projector import person_key, person_ref
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
from payments.tables import gateway_notifications, idempotency_keys, payments, quotes, refunds

__all__ = [
    "MemberInput",
    "PaymentRecord",
    "QuoteRecord",
    "QuoteRequest",
    "Recorder",
    "Renewals",
]

IDEMPOTENCY_DAYS = 30
"""Idempotency keys are kept at least this long."""
PRIVATE_INSURANCE_JURISDICTIONS = frozenset({"SA"})
"""Where residents must hold private insurance instead of paying a fee (the Saudi model)."""


class Recorder(Protocol):
    """Appends a signed event to the ledger; ``on_append`` runs in the same transaction."""

    def __call__(
        self, event: events_pb2.Event, on_append: Callable[[Connection, int], None]
    ) -> Receipt: ...


class Crash(Exception):
    """Raised by a crash hook to simulate the process dying at a step (fault-injection tests)."""


@dataclass(frozen=True)
class MemberInput:
    """A household member as the residence record states it."""

    person: types_pb2.PersonId
    relationship: fees.Relationship
    residence_category: fees.ResidenceCategory
    birth_date: dt.date | None = None
    domestic_worker_ordinal: int | None = None


@dataclass(frozen=True)
class QuoteRequest:
    """What a portal asks a quote for."""

    jurisdiction: str
    sponsor: types_pb2.PersonId
    sponsor_is_kuwaiti: bool
    members: tuple[MemberInput, ...]
    period_start: dt.date
    period_end: dt.date


@dataclass(frozen=True)
class QuoteRecord:
    """A stored quote."""

    quote_id: str
    jurisdiction: str
    sponsor_key: str
    currency: str
    total_minor: int
    lines: tuple[dict[str, Any], ...]
    """person, person_key, relationship, schedule_version, rule_id, description, amount_minor."""
    schedule_version: str
    period_start: dt.date
    period_end: dt.date
    expires_at: dt.datetime
    payable: bool
    """False for a private-insurance jurisdiction or a zero total: nothing to collect."""
    household: HouseholdVerdict | None
    """For a private-insurance jurisdiction: the household check the renewal depends on."""


@dataclass(frozen=True)
class PaymentRecord:
    """A payment's state, as stored."""

    payment_id: str
    quote_id: str
    gateway: str
    state: str
    currency: str
    amount_minor: int
    captured_minor: int
    refunded_minor: int
    gateway_reference: str
    redirect_url: str
    leaf_index: int | None
    message: str


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
def _write_transaction(engine: Engine) -> Iterator[Connection]:
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
        quote_ttl: dt.timedelta = dt.timedelta(minutes=30),
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
        sponsor_key = person_key(request.sponsor)
        household: HouseholdVerdict | None = None
        lines: list[dict[str, Any]] = []
        if request.jurisdiction in PRIVATE_INSURANCE_JURISDICTIONS:
            household = self._household(request)
            currency, total, version = "SAR", 0, "private-insurance"
        else:
            facts = [
                fees.MemberFacts(
                    person_key=person_key(member.person),
                    relationship=member.relationship,
                    residence_category=member.residence_category,
                    birth_date=member.birth_date,
                    sponsor_is_kuwaiti=request.sponsor_is_kuwaiti,
                    domestic_worker_ordinal=member.domestic_worker_ordinal,
                )
                for member in request.members
            ]
            quote = fees.quote_fees(
                request.jurisdiction,
                now.date(),
                request.period_start,
                request.period_end,
                facts,
            )
            for member, line in zip(request.members, quote.lines, strict=True):
                lines.append(
                    {
                        "person": {
                            "type": int(member.person.type),
                            "value": member.person.value,
                            "country_code": member.person.country_code,
                        },
                        "person_key": line.person_key,
                        "relationship": member.relationship.value,
                        "schedule_version": line.schedule_version,
                        "rule_id": line.rule_id,
                        "description": line.rule_description,
                        "amount_minor": line.amount_minor,
                    }
                )
            currency, total, version = quote.currency, quote.total_minor, quote.schedule_version
        record = QuoteRecord(
            quote_id=f"q-{secrets.token_hex(8)}",
            jurisdiction=request.jurisdiction,
            sponsor_key=sponsor_key,
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
            "lines": lines,
            "schedule_version": version,
            "period_start": request.period_start.isoformat(),
            "period_end": request.period_end.isoformat(),
            "payable": record.payable,
        }
        with _write_transaction(self._engine) as connection:
            connection.execute(
                insert(quotes).values(
                    quote_id=record.quote_id,
                    jurisdiction=request.jurisdiction,
                    sponsor_key=sponsor_key,
                    quote_json=json.dumps(stored, sort_keys=True),
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

    def _quote(self, connection: Connection, quote_id: str) -> Any:
        row = connection.execute(select(quotes).where(quotes.c.quote_id == quote_id)).first()
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
        if not 8 <= len(key) <= 128 or not key.isprintable():
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
        payment_id = "pay" + hashlib.sha256(quote_id.encode()).hexdigest()[:24]
        with _write_transaction(self._engine) as connection:
            existing = self._claim_key(connection, idempotency_key, "start_payment", request)
            if existing is not None:
                return self._payment(connection, existing)
            adapter = self._gateway(gateway)
            quote = self._quote(connection, quote_id)
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
            connection.execute(
                insert(payments).values(
                    payment_id=payment_id,
                    quote_id=quote_id,
                    gateway=gateway,
                    state="started",
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
            self._store_key(connection, idempotency_key, "start_payment", request, payment_id)
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
            self._set_state(payment_id, "unknown", message=f"gateway outcome unknown: {error}")
            return self.get_payment(payment_id)
        except GatewayRefused as error:
            self._set_state(payment_id, "failed", message=f"gateway refused: {error}")
            return self.get_payment(payment_id)
        self._crash("after_gateway_charge")
        return self._apply(payment_id, result)

    def complete_payment(self, payment_id: str) -> PaymentRecord:
        """Confirm with the gateway itself, then record once (never on the portal's word)."""
        payment = self.get_payment(payment_id)
        if payment.state in {"recorded", "declined", "failed", "voided"}:
            return payment
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
                self._set_state(payment_id, "unknown", message=f"capture outcome unknown: {error}")
                return self.get_payment(payment_id)
            self._crash("after_gateway_capture")
        if result.status is PaymentStatus.CAPTURED:
            if result.captured_minor != payment.amount_minor:
                self._set_state(
                    payment_id,
                    "mismatch",
                    message=f"gateway captured {result.captured_minor}, expected "
                    f"{payment.amount_minor}",
                )
                return self.get_payment(payment_id)
            self._set_state(
                payment_id,
                "captured",
                captured=result.captured_minor,
                gateway_reference=result.gateway_reference,
                only_from={"started", "pending", "unknown", "authorized", "captured"},
            )
            self._crash("after_captured_saved")
            self._record(payment_id)
            self._crash("after_recorded")
        elif result.status is PaymentStatus.PENDING:
            self._set_state(
                payment_id,
                "pending",
                redirect_url=result.redirect_url,
                gateway_reference=result.gateway_reference,
                only_from={"started", "unknown", "pending"},
            )
        elif result.status is PaymentStatus.DECLINED:
            self._set_state(
                payment_id,
                "declined",
                message=result.message,
                only_from={"started", "pending", "unknown"},
            )
        elif result.status is PaymentStatus.VOIDED:
            self._set_state(payment_id, "voided", message=result.message)
        return self.get_payment(payment_id)

    def _record(self, payment_id: str) -> None:
        """Append FeeCollected and mark the payment recorded, in one ledger transaction."""
        with self._engine.connect() as connection:
            payment = connection.execute(
                select(payments).where(payments.c.payment_id == payment_id)
            ).one()
            quote = self._quote(connection, payment.quote_id)
        if payment.state == "recorded":
            return
        stored = json.loads(quote.quote_json)
        event = events_pb2.Event(event_id=f"fee-{payment_id}", insurer_id=self._authority_id)
        event.occurred_at.FromDatetime(self._clock.now())
        body = event.fee_collected
        body.renewal_id = payment.quote_id
        body.sponsor.CopyFrom(types_pb2.PersonId(**stored["sponsor"]))
        body.period_start.CopyFrom(civil_date(dt.date.fromisoformat(stored["period_start"])))
        body.period_end.CopyFrom(civil_date(dt.date.fromisoformat(stored["period_end"])))
        for line in stored["lines"]:
            body.lines.add(
                person=types_pb2.PersonId(**line["person"]),
                relationship=_RELATIONSHIPS[fees.Relationship(line["relationship"])],
                schedule_version=line["schedule_version"],
                rule_id=line["rule_id"],
                amount=types_pb2.Money(
                    currency_code=payment.currency_code, amount_minor=line["amount_minor"]
                ),
            )
        body.total.CopyFrom(
            types_pb2.Money(currency_code=payment.currency_code, amount_minor=payment.amount_minor)
        )
        body.merchant_reference = payment_id
        body.gateway = payment.gateway
        body.gateway_reference = payment.gateway_reference

        def mark_recorded(connection: Connection, leaf_index: int) -> None:
            moved = connection.execute(
                update(payments)
                .where(payments.c.payment_id == payment_id, payments.c.state == "captured")
                .values(
                    state="recorded",
                    leaf_index=leaf_index,
                    updated_at_us=to_micros(self._clock.now()),
                )
            ).rowcount
            if moved != 1:
                raise FailedPrecondition(
                    f"payment {payment_id!r} is not captured (or already recorded)",
                    reason="PAYMENT_NOT_CAPTURED",
                )

        try:
            # A duplicate receipt means an earlier attempt recorded it (its answer was lost):
            # that transaction moved the payment to recorded together with the entry.
            self._record_event(event, mark_recorded)
        except LedgerError as error:
            if self.get_payment(payment_id).state == "recorded":
                return
            raise Unavailable(
                f"the fee was captured but could not be recorded yet: {error.message}; "
                "reconcile will record it",
                reason="RECORD_PENDING",
            ) from error

    def _set_state(
        self,
        payment_id: str,
        state: str,
        *,
        message: str = "",
        captured: int | None = None,
        gateway_reference: str = "",
        redirect_url: str = "",
        only_from: set[str] | None = None,
    ) -> None:
        values: dict[str, Any] = {"state": state, "updated_at_us": to_micros(self._clock.now())}
        if message:
            values["message"] = message[:500]
        if captured is not None:
            values["captured_minor"] = captured
        if gateway_reference:
            values["gateway_reference"] = gateway_reference[:128]
        if redirect_url:
            values["redirect_url"] = redirect_url[:2000]
        statement = update(payments).where(payments.c.payment_id == payment_id)
        if only_from is not None:
            statement = statement.where(payments.c.state.in_(sorted(only_from)))
        with _write_transaction(self._engine) as connection:
            connection.execute(statement.values(**values))

    def _gateway(self, name: str) -> PaymentGateway:
        adapter = self._gateways.get(name)
        if adapter is None:
            raise InvalidArgument(
                f"unknown gateway {name!r}; configured: {', '.join(sorted(self._gateways))}",
                reason="GATEWAY_UNKNOWN",
                field_violations=[FieldViolation("gateway", "not configured")],
            )
        return adapter

    def _payment(self, connection: Connection, payment_id: str) -> PaymentRecord:
        row = connection.execute(
            select(payments).where(payments.c.payment_id == payment_id)
        ).first()
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
            state=row.state,
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
        with _write_transaction(self._engine) as connection:
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
            row = self._quote(connection, quote_id)
        stored = json.loads(row.quote_json)
        return QuoteRecord(
            quote_id=row.quote_id,
            jurisdiction=row.jurisdiction,
            sponsor_key=row.sponsor_key,
            currency=row.currency_code,
            total_minor=int(row.total_minor),
            lines=tuple(stored["lines"]),
            schedule_version=stored["schedule_version"],
            period_start=dt.date.fromisoformat(stored["period_start"]),
            period_end=dt.date.fromisoformat(stored["period_end"]),
            expires_at=from_micros(row.expires_at_us),
            payable=bool(stored["payable"]),
            household=None,
        )

    # Refunds.

    def refund(
        self, payment_id: str, amount_minor: int, idempotency_key: str, reason: str = ""
    ) -> PaymentRecord:
        """Refund part of a recorded payment, once per idempotency key."""
        try:
            return self._refund(payment_id, amount_minor, idempotency_key, reason)
        except IntegrityError:
            # A concurrent call with the same key inserted first (PostgreSQL): this attempt
            # wrote nothing; the retry finds the claimed key and answers like a repeat.
            return self._refund(payment_id, amount_minor, idempotency_key, reason)

    def _refund(
        self, payment_id: str, amount_minor: int, idempotency_key: str, reason: str
    ) -> PaymentRecord:
        request = {"payment_id": payment_id, "amount_minor": amount_minor, "reason": reason}
        refund_id = "rf" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
        with _write_transaction(self._engine) as connection:
            existing = self._claim_key(connection, idempotency_key, "refund", request)
            payment = self._payment(connection, payment_id)
            if existing is None:
                if payment.state != "recorded":
                    raise FailedPrecondition(
                        f"payment {payment_id!r} is {payment.state}: "
                        "only a recorded fee is refunded",
                        reason="PAYMENT_NOT_RECORDED",
                        field_violations=[FieldViolation("payment_id", payment.state)],
                    )
                available = (
                    payment.captured_minor
                    - payment.refunded_minor
                    - self._refunds_in_flight(connection, payment_id)
                )
                if not 0 < amount_minor <= available:
                    raise FailedPrecondition(
                        f"a refund of {amount_minor} exceeds what is left ({available})",
                        reason="REFUND_EXCEEDS_CAPTURED",
                        field_violations=[FieldViolation("amount_minor", f"1..{available}")],
                    )
                connection.execute(
                    insert(refunds).values(
                        refund_id=refund_id,
                        payment_id=payment_id,
                        amount_minor=amount_minor,
                        state="started",
                        gateway_reference="",
                        leaf_index=None,
                        created_at_us=to_micros(self._clock.now()),
                    )
                )
                self._store_key(connection, idempotency_key, "refund", request, refund_id)
        self._finish_refund(refund_id, reason)
        return self.get_payment(payment_id)

    def _refunds_in_flight(self, connection: Connection, payment_id: str) -> int:
        rows = connection.execute(
            select(refunds.c.amount_minor).where(
                refunds.c.payment_id == payment_id, refunds.c.state != "recorded"
            )
        )
        return sum(int(row.amount_minor) for row in rows)

    def _finish_refund(self, refund_id: str, reason: str) -> None:
        with self._engine.connect() as connection:
            row = connection.execute(select(refunds).where(refunds.c.refund_id == refund_id)).one()
            payment = self._payment(connection, row.payment_id)
        if row.state == "recorded":
            return
        adapter = self._gateway(payment.gateway)
        try:
            result = adapter.refund(
                payment.payment_id, Money(payment.currency, int(row.amount_minor)), refund_id
            )
        except GatewayOutcomeUnknown as error:
            raise Unavailable(
                f"refund outcome unknown ({error}); retry with the same idempotency key",
                reason="GATEWAY_UNAVAILABLE",
            ) from error
        self._crash("after_gateway_refund")
        event = events_pb2.Event(event_id=f"refund-{refund_id}", insurer_id=self._authority_id)
        # Dated when the refund was claimed, not now: concurrent finishers of one refund then
        # submit the same bytes, and the ledger answers the second with the first receipt.
        event.occurred_at.FromDatetime(from_micros(int(row.created_at_us)))
        body = event.fee_refunded
        body.renewal_id = payment.quote_id
        body.refund_reference = refund_id
        body.amount.CopyFrom(
            types_pb2.Money(currency_code=payment.currency, amount_minor=int(row.amount_minor))
        )
        body.reason = reason[:256]
        body.gateway_reference = result.gateway_reference[:128]

        def mark(connection: Connection, leaf_index: int) -> None:
            moved = connection.execute(
                update(refunds)
                .where(refunds.c.refund_id == refund_id, refunds.c.state != "recorded")
                .values(state="recorded", leaf_index=leaf_index)
            ).rowcount
            if moved != 1:
                raise FailedPrecondition("refund already recorded", reason="REFUND_RECORDED")
            connection.execute(
                update(payments)
                .where(payments.c.payment_id == payment.payment_id)
                .values(refunded_minor=payments.c.refunded_minor + int(row.amount_minor))
            )

        try:
            self._record_event(event, mark)
        except LedgerError:
            # A concurrent finisher of the same refund recorded it first: the answer is the same.
            if self._refund_state(refund_id) != "recorded":
                raise

    def _refund_state(self, refund_id: str) -> str:
        with self._engine.connect() as connection:
            return str(
                connection.execute(
                    select(refunds.c.state).where(refunds.c.refund_id == refund_id)
                ).scalar_one()
            )

    # Reconciliation.

    def reconcile(self, *, stale_after: dt.timedelta = dt.timedelta(minutes=30)) -> list[str]:
        """Compare every unfinished payment with its gateway and repair; return what was done."""
        actions: list[str] = []
        now = self._clock.now()
        with self._engine.connect() as connection:
            open_payments = connection.execute(
                select(payments.c.payment_id, payments.c.state, payments.c.updated_at_us).where(
                    payments.c.state.in_(
                        ["started", "pending", "unknown", "authorized", "captured"]
                    )
                )
            ).all()
            open_refunds = connection.execute(
                select(refunds.c.refund_id).where(refunds.c.state != "recorded")
            ).all()
        for row in open_payments:
            before = row.state
            try:
                after = self.complete_payment(row.payment_id)
            except (Unavailable, Crash) as error:
                actions.append(f"{row.payment_id}: {before}, still unresolved ({error})")
                continue
            stale = now - from_micros(row.updated_at_us) >= stale_after
            if after.state in {"pending", "started"} and stale:
                adapter = self._gateway(after.gateway)
                status = adapter.get_status(row.payment_id)
                if status.status is PaymentStatus.NOT_FOUND or (
                    Capability.VOID in adapter.capabilities()
                    and status.status is PaymentStatus.AUTHORIZED
                ):
                    if status.status is PaymentStatus.AUTHORIZED:
                        adapter.void(row.payment_id)
                    self._set_state(row.payment_id, "voided", message="stale: voided by reconcile")
                    after = self.get_payment(row.payment_id)
            if after.state != before:
                actions.append(f"{row.payment_id}: {before} -> {after.state}")
        for refund in open_refunds:
            try:
                self._finish_refund(refund.refund_id, "completed by reconcile")
                actions.append(f"{refund.refund_id}: refund recorded")
            except (Unavailable, GatewayRefused, LedgerError, Crash) as error:
                actions.append(f"{refund.refund_id}: refund still unresolved ({error})")
        return actions
