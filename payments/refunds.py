"""Refunds of recorded fees: partial and repeatable, once per idempotency key, serialized on
the payment's row so that what is left is never negative; each recorded as a FeeRefunded entry
(a refund of the whole fee ends the coverage it bought: ledger/coverage/projector.py)."""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from ledger.clock import to_micros
from ledger.errors import FailedPrecondition, FieldViolation, LedgerError, Unavailable
from ledger.storage.append_hooks import AppendHook, batch_now, register_append_hook
from payments.gateway import GatewayOutcomeUnknown, GatewayRefused, GatewayResult, Money
from payments.idempotency import claim_key, store_key
from payments.saga import PaymentRecord, Saga, load_payment
from payments.states import PaymentState, RefundState, move_refund
from payments.tables import payments, refunds

__all__ = ["MARK_REFUND_RECORDED", "finish_refund", "mark_refund_recorded", "refund"]

MARK_REFUND_RECORDED = "payments.mark_refund_recorded"
"""The append hook's name (:func:`mark_refund_recorded`)."""


def refund(
    saga: Saga, payment_id: str, amount_minor: int, idempotency_key: str, reason: str = ""
) -> PaymentRecord:
    """Refund part of a recorded payment, once per idempotency key."""
    try:
        refund_id = open_refund(saga, payment_id, amount_minor, idempotency_key, reason)
    except IntegrityError:
        # A concurrent call inserted first (PostgreSQL): this attempt wrote nothing.
        refund_id = open_refund(saga, payment_id, amount_minor, idempotency_key, reason)
    finish_refund(saga, refund_id, reason)
    return saga.payment(payment_id)


def open_refund(
    saga: Saga, payment_id: str, amount_minor: int, idempotency_key: str, reason: str
) -> str:
    """Claim the key and save the refund as ``started`` (counting against what is left),
    under the payment's row lock, so concurrent refunds see each other; or return the
    refund an earlier call with this key saved."""
    request = {"payment_id": payment_id, "amount_minor": amount_minor, "reason": reason}
    refund_id = "rf" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
    with saga.uow.write() as connection:
        payment = load_payment(connection, payment_id, lock=True)
        existing = claim_key(connection, idempotency_key, "refund", request)
        if existing is not None:
            return existing
        if payment.state is not PaymentState.RECORDED:
            raise FailedPrecondition(
                f"payment {payment_id!r} is {payment.state}: only a recorded fee is refunded",
                reason="PAYMENT_NOT_RECORDED",
                field_violations=[FieldViolation("payment_id", payment.state)],
            )
        available = refundable(connection, payment)
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
                created_at_us=to_micros(saga.clock.now()),
            )
        )
        store_key(
            connection,
            idempotency_key,
            "refund",
            request,
            refund_id,
            saga.clock.now(),
        )
    return refund_id


def refundable(connection: Connection, payment: PaymentRecord) -> int:
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


def finish_refund(saga: Saga, refund_id: str, reason: str) -> None:
    """Refund at the gateway (the reference makes repeats apply once), then record it; a
    concurrent call finishing the same refund leaves one record, and both answer it."""
    with saga.uow.read() as connection:
        row = connection.execute(select(refunds).where(refunds.c.refund_id == refund_id)).one()
        payment = load_payment(connection, row.payment_id)
    if row.state == RefundState.RECORDED:
        return
    if row.state == RefundState.FAILED:
        raise FailedPrecondition(
            f"the gateway refused refund {refund_id!r}: nothing was refunded",
            reason="REFUND_REFUSED",
            metadata={"refund_id": refund_id},
        )
    adapter = saga.gateway(payment.gateway)
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
        fail_refund(saga, refund_id, str(error))
        raise FailedPrecondition(
            f"the gateway refused the refund: {error}; nothing was refunded",
            reason="REFUND_REFUSED",
            metadata={"refund_id": refund_id},
        ) from error
    saga.crash("after_gateway_refund")
    record_refund(
        saga,
        refund_id,
        payment=payment,
        amount_minor=int(row.amount_minor),
        reason=reason,
        result=result,
    )


def mark_refund_recorded(connection: Connection, leaf_index: int, argument: str) -> None:
    """The append hook ``payments.mark_refund_recorded``: in the FeeRefunded entry's own
    transaction, move the refund to ``recorded`` and count it on its payment. ``argument`` is
    JSON ``{"refund_id", "gateway_reference"}``; a named hook, not a closure, so that a
    sequencer in another process runs it (:mod:`ledger.storage.append_hooks`)."""
    named = json.loads(argument)
    refund_id, gateway_reference = str(named["refund_id"]), str(named["gateway_reference"])
    if not move_refund(
        connection,
        refund_id,
        RefundState.RECORDED,
        why="FeeRefunded appended",
        now=batch_now(),
        gateway_reference=gateway_reference,
        leaf_index=leaf_index,
    ):
        raise Unavailable("refund changed while it was recorded", reason="REFUND_CHANGED")
    row = connection.execute(
        select(refunds.c.payment_id, refunds.c.amount_minor).where(refunds.c.refund_id == refund_id)
    ).one()
    connection.execute(
        update(payments)
        .where(payments.c.payment_id == row.payment_id)
        .values(refunded_minor=payments.c.refunded_minor + int(row.amount_minor))
    )


register_append_hook(MARK_REFUND_RECORDED, mark_refund_recorded)


def fail_refund(saga: Saga, refund_id: str, why: str) -> None:
    """The gateway refused the refund: it no longer counts against what is left."""
    with saga.uow.write() as connection:
        move_refund(
            connection,
            refund_id,
            RefundState.FAILED,
            why=f"the gateway refused: {why}",
            now=saga.clock.now(),
        )


def record_refund(
    saga: Saga,
    refund_id: str,
    *,
    payment: PaymentRecord,
    amount_minor: int,
    reason: str,
    result: GatewayResult,
) -> None:
    """Append the FeeRefunded entry and mark the refund recorded, in one ledger transaction."""
    event = saga.entries.fee_refunded(
        refund_id,
        renewal_id=payment.quote_id,
        currency=payment.currency,
        amount_minor=amount_minor,
        reason=reason,
        result=result,
    )

    argument = json.dumps(
        {"refund_id": refund_id, "gateway_reference": result.gateway_reference}, sort_keys=True
    )
    try:
        saga.recorder(event, AppendHook(MARK_REFUND_RECORDED, argument))
    except LedgerError:
        with saga.uow.read() as connection:
            state = connection.execute(
                select(refunds.c.state).where(refunds.c.refund_id == refund_id)
            ).scalar_one()
        if state != RefundState.RECORDED:  # not recorded by a concurrent call for the same key
            raise
