"""Refunds of recorded fees: partial and repeatable, once per idempotency key, serialized on
the payment's row so that what is left is never negative; each recorded as a FeeRefunded entry
(a refund of the whole fee ends the coverage it bought: ledger/coverage/projector.py)."""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from ledger.clock import to_micros
from ledger.errors import FailedPrecondition, FieldViolation, LedgerError, Unavailable
from ledger.v1 import events_pb2, types_pb2
from payments.gateway import GatewayOutcomeUnknown, GatewayRefused, GatewayResult, Money
from payments.limits import REFERENCE_CHARS_MAX, REFUND_REASON_CHARS_MAX
from payments.renewal import PaymentRecord, Renewals, write_transaction
from payments.states import PaymentState, RefundState, move_refund
from payments.tables import payments, refunds

__all__ = ["finish_refund", "refund"]


def refund(
    renewals: Renewals, payment_id: str, amount_minor: int, idempotency_key: str, reason: str = ""
) -> PaymentRecord:
    """Refund part of a recorded payment, once per idempotency key."""
    try:
        refund_id = open_refund(renewals, payment_id, amount_minor, idempotency_key, reason)
    except IntegrityError:
        # A concurrent call inserted first (PostgreSQL): this attempt wrote nothing.
        refund_id = open_refund(renewals, payment_id, amount_minor, idempotency_key, reason)
    finish_refund(renewals, refund_id, reason)
    return renewals.get_payment(payment_id)


def open_refund(
    renewals: Renewals, payment_id: str, amount_minor: int, idempotency_key: str, reason: str
) -> str:
    """Claim the key and save the refund as ``started`` (counting against what is left),
    under the payment's row lock, so concurrent refunds see each other; or return the
    refund an earlier call with this key saved."""
    request = {"payment_id": payment_id, "amount_minor": amount_minor, "reason": reason}
    refund_id = "rf" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
    with write_transaction(renewals._engine) as connection:
        payment = renewals._payment(connection, payment_id, lock=True)
        existing = renewals._claim_key(connection, idempotency_key, "refund", request)
        if existing is not None:
            return existing
        if payment.state is not PaymentState.RECORDED:
            raise FailedPrecondition(
                f"payment {payment_id!r} is {payment.state}: only a recorded fee is refunded",
                reason="PAYMENT_NOT_RECORDED",
                field_violations=[FieldViolation("payment_id", payment.state)],
            )
        available = refundable(renewals, connection, payment)
        if not 0 < amount_minor <= available:
            raise FailedPrecondition(
                f"a refund of {amount_minor} exceeds what is left ({available})",
                reason="REFUND_EXCEEDS_CAPTURED",
                field_violations=[FieldViolation("amount_minor", f"1..{available}")],
                metadata={"refundable_minor": str(available)},
            )
        connection.execute(
            insert(refunds).values(
                refund_id=refund_id,
                payment_id=payment_id,
                amount_minor=amount_minor,
                state=RefundState.STARTED.value,
                gateway_reference="",
                leaf_index=None,
                created_at_us=to_micros(renewals._clock.now()),
            )
        )
        renewals._store_key(connection, idempotency_key, "refund", request, refund_id)
    return refund_id


def refundable(renewals: Renewals, connection: Connection, payment: PaymentRecord) -> int:
    """What is left to refund: captured, less what is refunded and what is in flight (a
    refund counts from when it is started until it is recorded or fails). Never negative."""
    in_flight = sum(
        int(row.amount_minor)
        for row in connection.execute(
            select(refunds.c.amount_minor).where(
                refunds.c.payment_id == payment.payment_id,
                refunds.c.state == RefundState.STARTED,
            )
        )
    )
    return max(0, payment.captured_minor - payment.refunded_minor - in_flight)


def finish_refund(renewals: Renewals, refund_id: str, reason: str) -> None:
    """Refund at the gateway (the reference makes repeats apply once), then record it; a
    concurrent call finishing the same refund leaves one record, and both answer it."""
    with renewals._engine.connect() as connection:
        row = connection.execute(select(refunds).where(refunds.c.refund_id == refund_id)).one()
        payment = renewals._payment(connection, row.payment_id)
    if row.state == RefundState.RECORDED:
        return
    if row.state == RefundState.FAILED:
        raise FailedPrecondition(
            f"the gateway refused refund {refund_id!r}: nothing was refunded",
            reason="REFUND_REFUSED",
            metadata={"refund_id": refund_id},
        )
    adapter = renewals._gateway(payment.gateway)
    try:
        result = adapter.refund(
            payment.payment_id, Money(payment.currency, int(row.amount_minor)), refund_id
        )
    except GatewayOutcomeUnknown as error:
        raise Unavailable(
            f"refund outcome unknown ({error}); retry with the same idempotency key",
            reason="GATEWAY_UNAVAILABLE",
        ) from error
    except GatewayRefused as error:
        fail_refund(renewals, refund_id, str(error))
        raise FailedPrecondition(
            f"the gateway refused the refund: {error}; nothing was refunded",
            reason="REFUND_REFUSED",
            metadata={"refund_id": refund_id},
        ) from error
    renewals._crash("after_gateway_refund")
    record_refund(
        renewals,
        refund_id,
        payment=payment,
        amount_minor=int(row.amount_minor),
        reason=reason,
        result=result,
    )


def fail_refund(renewals: Renewals, refund_id: str, why: str) -> None:
    """The gateway refused the refund: it no longer counts against what is left."""
    with write_transaction(renewals._engine) as connection:
        move_refund(
            connection,
            refund_id,
            RefundState.FAILED,
            why=f"the gateway refused: {why}",
            now=renewals._clock.now(),
        )


def record_refund(
    renewals: Renewals,
    refund_id: str,
    *,
    payment: PaymentRecord,
    amount_minor: int,
    reason: str,
    result: GatewayResult,
) -> None:
    """Append the FeeRefunded entry and mark the refund recorded, in one ledger transaction."""
    event = events_pb2.Event(event_id=f"refund-{refund_id}", insurer_id=renewals._authority_id)
    event.occurred_at.FromDatetime(renewals._clock.now())
    body = event.fee_refunded
    body.renewal_id = payment.quote_id
    body.refund_reference = refund_id
    body.amount.CopyFrom(types_pb2.Money(currency_code=payment.currency, amount_minor=amount_minor))
    body.reason = reason[:REFUND_REASON_CHARS_MAX]
    body.gateway_reference = result.gateway_reference[:REFERENCE_CHARS_MAX]

    def mark(connection: Connection, leaf_index: int) -> None:
        if not move_refund(
            connection,
            refund_id,
            RefundState.RECORDED,
            why="FeeRefunded appended",
            now=renewals._clock.now(),
            gateway_reference=result.gateway_reference,
            leaf_index=leaf_index,
        ):
            raise Unavailable("refund changed while it was recorded", reason="REFUND_CHANGED")
        connection.execute(
            update(payments)
            .where(payments.c.payment_id == payment.payment_id)
            .values(refunded_minor=payments.c.refunded_minor + amount_minor)
        )

    try:
        renewals._record_event(event, mark)
    except LedgerError:
        with renewals._engine.connect() as connection:
            state = connection.execute(
                select(refunds.c.state).where(refunds.c.refund_id == refund_id)
            ).scalar_one()
        if state != RefundState.RECORDED:  # not recorded by a concurrent call for the same key
            raise
