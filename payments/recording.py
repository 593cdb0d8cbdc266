"""Recording a captured fee in the ledger, once; and returning it when the ledger refuses it
for good (compensation).

* Before the ``FeeCollected`` entry is submitted the payment moves ``captured -> recording``;
  the entry's own transaction (``on_append``) moves it ``recording -> recorded`` and refuses to
  append it if the payment is no longer ``recording``; its event id is derived from the payment.
  So a payment is recorded at most once whatever crashes, retries and late answers happen.
* The ledger not answering (a timeout) is UNAVAILABLE ``RECORD_PENDING``: the payment stays
  ``recording`` and the next call looks the entry up by its event id (recorded) or submits it
  again (recorded once, or refused for good: returned).
* A refusal for good returns the fee: ``returning`` is saved first, then the gateway refunds
  the capture under a reference derived from the payment (applied once), then ``returned``.
"""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, select

from ledger.errors import FailedPrecondition, LedgerError, Unavailable
from ledger.storage.append_hooks import AppendHook, batch_now, register_append_hook
from ledger.storage.tables import log_entries
from payments.gateway import GatewayOutcomeUnknown, GatewayRefused, Money
from payments.quotes import quote_record
from payments.saga import Saga, load_payment, load_quote, move
from payments.states import PaymentState, move_payment

__all__ = ["MARK_RECORDED", "mark_recorded", "record", "return_fee"]

MARK_RECORDED = "payments.mark_recorded"
"""The append hook's name (:func:`mark_recorded`; the argument is the payment id)."""


def record(saga: Saga, payment_id: str) -> None:
    """Append FeeCollected and mark the payment recorded, in one ledger transaction; when the
    ledger refuses it for good, return the fee through the gateway."""
    # 1-3 in one write transaction: the move to recording, the look-up of an earlier
    # submission's entry, and the entry's tokens. Nothing between them calls out (no gateway,
    # no ledger), and a crash anywhere in it leaves the payment as it was (captured: this is
    # retried whole) or, once it commits, recording: the state every later step starts from,
    # since the event id is derived from the payment (recorded once, or returned).
    refused: FailedPrecondition | None = None
    with saga.uow.write() as connection:
        # 1. The record is in flight from now on (a captured payment only).
        move_payment(
            connection,
            payment_id,
            PaymentState.RECORDING,
            why="FeeCollected submitted",
            now=saga.clock.now(),
        )
        payment = load_payment(connection, payment_id)
        if payment.state is not PaymentState.RECORDING:
            return
        quote = quote_record(load_quote(connection, payment.quote_id))
        # 2. An earlier submission whose answer was lost may have been appended.
        leaf_index = _recorded_leaf(saga, connection, payment_id)
        if leaf_index is not None:
            move_payment(
                connection,
                payment_id,
                PaymentState.RECORDED,
                why="found in the ledger",
                now=saga.clock.now(),
                leaf_index=leaf_index,
            )
            return
        try:  # the tokens it may issue, in this same transaction
            event = saga.entries.fee_collected(
                connection,
                payment_id,
                quote,
                gateway=payment.gateway,
                gateway_reference=payment.gateway_reference,
            )
        except FailedPrecondition as error:
            # Raised before anything is written (a person of the quote was erased since the
            # capture): the move to recording above still commits.
            refused = error
    if refused is not None:
        # The entry cannot even be built: refused for good, like a refusal by the ledger,
        # so the fee goes back.
        return_fee(saga, payment_id, f"the record is refused for good: {refused.message}")
        return
    saga.crash("before_record")
    # 3. Submit the entry; it moves the payment to recorded in its own transaction.
    try:
        # A duplicate receipt means an earlier attempt recorded it (its answer was lost):
        # that transaction moved the payment to recorded together with the entry.
        saga.recorder(event, AppendHook(MARK_RECORDED, payment_id))
    except Unavailable as error:
        # 4a. Outcome unknown: stays recording; retrying is safe.
        if saga.payment(payment_id).state is PaymentState.RECORDED:
            return
        raise Unavailable(
            f"the fee was captured and its record is in flight: {error.message}; the "
            f"outcome is not known yet, and retrying (CompletePayment, or StartPayment with "
            f"the same key) is safe: it is recorded once or returned",
            reason="RECORD_PENDING",
            metadata={"payment_id": payment_id, "state": PaymentState.RECORDING.value},
        ) from error
    except LedgerError as error:
        # 4b. Refused for good: the fee goes back.
        if saga.payment(payment_id).state is PaymentState.RECORDED:
            return
        saga.crash("before_return")
        return_fee(saga, payment_id, f"the ledger refused the record: {error.message}")


def mark_recorded(connection: Connection, leaf_index: int, payment_id: str) -> None:
    """The append hook ``payments.mark_recorded``: in the FeeCollected entry's own transaction,
    move the payment ``recording -> recorded``; refuse the entry when it is no longer
    ``recording`` (it is being returned). A named hook, not a closure, so that a sequencer in
    another process runs it (:mod:`ledger.storage.append_hooks`); "now" is the batch's time."""
    if not move_payment(
        connection,
        payment_id,
        PaymentState.RECORDED,
        why="FeeCollected appended",
        now=batch_now(),
        leaf_index=leaf_index,
    ):
        raise FailedPrecondition(
            f"payment {payment_id!r} is no longer being recorded (it is being returned)",
            reason="PAYMENT_NOT_RECORDING",
        )


register_append_hook(MARK_RECORDED, mark_recorded)


_LEAF_OF_EVENT = select(log_entries.c.leaf_index).where(
    log_entries.c.insurer_id == bindparam("insurer_id"),
    log_entries.c.event_id == bindparam("event_id"),
)
"""Built once (its cache key generated once)."""


def _recorded_leaf(saga: Saga, connection: Connection, payment_id: str) -> int | None:
    """The leaf of the payment's FeeCollected entry, if the ledger holds it."""
    leaf = connection.execute(
        _LEAF_OF_EVENT, {"insurer_id": saga.authority_id, "event_id": f"fee-{payment_id}"}
    ).scalar_one_or_none()
    return None if leaf is None else int(leaf)


def return_reference(payment_id: str) -> str:
    """The gateway refund reference of a payment's compensation (one per payment)."""
    return "rt" + payment_id.removeprefix("pay")


def return_fee(saga: Saga, payment_id: str, why: str) -> None:
    """Compensation: a captured fee the ledger refused for good is refunded in full.
    ``returning`` is saved first, so a crash or a gateway timeout leaves a refund in flight
    that reconciliation finishes (the refund reference is derived from the payment, so the
    gateway applies it once)."""
    move(saga, payment_id, PaymentState.RETURNING, message=why)
    payment = saga.payment(payment_id)
    if payment.state is not PaymentState.RETURNING:
        return
    try:
        result = saga.gateway(payment.gateway).refund(
            payment_id,
            Money(payment.currency, payment.captured_minor),
            return_reference(payment_id),
        )
    except (GatewayOutcomeUnknown, GatewayRefused):
        return  # still returning: CompletePayment or reconciliation retries the same refund
    saga.crash("after_gateway_return")
    move(
        saga,
        payment_id,
        PaymentState.RETURNED,
        message=f"{payment.message}; refunded in full by the gateway",
        gateway_reference=result.gateway_reference,
    )
