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

import dataclasses
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, select

from ledger.errors import FailedPrecondition, LedgerError, Unavailable
from ledger.storage.append_hooks import AppendHook, batch_now, register_append_hook
from ledger.storage.tables import log_entries
from ledger.v1 import events_pb2
from payments.gateway import GatewayOutcomeUnknown, GatewayRefused, Money
from payments.limits import REFERENCE_CHARS_MAX
from payments.quotes import quote_record
from payments.saga import PaymentRecord, Saga, load_payment, load_quote, move
from payments.states import PaymentState, move_payment

__all__ = ["MARK_RECORDED", "Capture", "mark_recorded", "record", "return_fee"]

MARK_RECORDED = "payments.mark_recorded"
"""The append hook's name (:func:`mark_recorded`; the argument is the payment id)."""


@dataclass(frozen=True)
class Capture:
    """What the gateway captured, for :func:`record` to save in its first transaction (the
    payment moves ``captured`` then ``recording`` at once: one transaction, not two)."""

    payment: PaymentRecord
    """The payment as it stood before the capture (StartPayment's as it opened it, or as
    CompletePayment and reconciliation read it): its quote, gateway, currency and amount, which
    never change."""
    captured_minor: int
    gateway_reference: str
    entry: events_pb2.Event | None = None
    """The FeeCollected entry as checked before the charge (its people's tokens resolved, its
    gateway reference still empty), when it was: it is then filled in and submitted, not built
    again (the quote is still read: a person erased since is refused, as when it is built)."""


SUBMITTED = "FeeCollected submitted"
APPENDED = "FeeCollected appended"
"""The payment's message once the FeeCollected entry is submitted / appended."""


def record(saga: Saga, payment_id: str, capture: Capture | None = None) -> PaymentRecord | None:
    """Append FeeCollected and mark the payment recorded, in one ledger transaction; when the
    ledger refuses it for good, return the fee through the gateway. ``capture``: what the
    gateway just captured, saved first in the same transaction as the move to recording.
    Returns the payment as this call recorded it, when that is known without reading it (an
    entry appended by this call), else None."""
    prepared = _start_recording(saga, payment_id, capture)
    if capture is not None:
        saga.crash("after_captured_saved")
    if isinstance(prepared, FailedPrecondition):
        # The entry cannot even be built: refused for good, like a refusal by the ledger,
        # so the fee goes back.
        return_fee(saga, payment_id, f"the record is refused for good: {prepared.message}")
        return None
    if prepared is None:
        return None
    saga.crash("before_record")
    return _submit(saga, payment_id, *prepared)


def _start_recording(
    saga: Saga, payment_id: str, capture: Capture | None
) -> tuple[PaymentRecord, events_pb2.Event] | FailedPrecondition | None:
    """:func:`record`'s write transaction: the payment (recording) and its entry to submit; the
    refusal when the entry cannot be built; None when there is nothing to submit (recorded,
    found in the ledger, or no longer captured)."""
    # 1-3 in one write transaction: the move to recording, the look-up of an earlier
    # submission's entry, and the entry's tokens. Nothing between them calls out (no gateway,
    # no ledger), and a crash anywhere in it leaves the payment as it was (captured, or at the
    # gateway's last answer with ``capture``: this is retried whole) or, once it commits,
    # recording: the state every later step starts from, since the event id is derived from
    # the payment (recorded once, or returned).
    with saga.uow.write() as connection:
        now = saga.clock.now()
        # 1. The record is in flight from now on (a captured payment only).
        if capture is not None and move_payment(
            connection,
            payment_id,
            PaymentState.CAPTURED,
            why="",
            now=now,
            captured_minor=capture.captured_minor,
            gateway_reference=capture.gateway_reference,
            then=(PaymentState.RECORDING, SUBMITTED),
        ):
            # Captured only now, so no entry of it was ever submitted: nothing to look up.
            payment = dataclasses.replace(
                capture.payment,
                state=PaymentState.RECORDING,
                captured_minor=capture.captured_minor,
                gateway_reference=capture.gateway_reference[:REFERENCE_CHARS_MAX],
                message=SUBMITTED,
            )
            entry = capture.entry
        else:
            move_payment(connection, payment_id, PaymentState.RECORDING, why=SUBMITTED, now=now)
            payment = load_payment(connection, payment_id)
            if payment.state is not PaymentState.RECORDING:
                return None
            entry = None
            # 2. An earlier submission whose answer was lost may have been appended.
            leaf_index = _recorded_leaf(saga, connection, payment_id)
            if leaf_index is not None:
                move_payment(
                    connection,
                    payment_id,
                    PaymentState.RECORDED,
                    why="found in the ledger",
                    now=now,
                    leaf_index=leaf_index,
                )
                return None
        quote = quote_record(load_quote(connection, payment.quote_id))
        try:  # the tokens it may issue, in this same transaction
            event = (
                saga.entries.fee_collected(
                    connection,
                    payment_id,
                    quote,
                    gateway=payment.gateway,
                    gateway_reference=payment.gateway_reference,
                )
                if entry is None
                else saga.entries.fee_collected_again(
                    entry, quote, gateway_reference=payment.gateway_reference
                )
            )
        except FailedPrecondition as error:
            # Raised before anything is written (a person of the quote was erased since the
            # capture): the move to recording above still commits.
            return error
    return payment, event


def _submit(
    saga: Saga, payment_id: str, payment: PaymentRecord, event: events_pb2.Event
) -> PaymentRecord | None:
    """Submit the entry; it moves the payment to recorded in its own transaction. Returns the
    payment as recorded, when this call appended the entry."""
    try:
        # A duplicate receipt means an earlier attempt recorded it (its answer was lost):
        # that transaction moved the payment to recorded together with the entry.
        receipt = saga.recorder(event, AppendHook(MARK_RECORDED, payment_id))
    except Unavailable as error:
        # 4a. Outcome unknown: stays recording; retrying is safe.
        if saga.payment(payment_id).state is PaymentState.RECORDED:
            return None
        raise Unavailable(
            f"the fee was captured and its record is in flight: {error.message}; the "
            f"outcome is not known yet, and retrying (CompletePayment, or StartPayment with "
            f"the same key) is safe: it is recorded once or returned",
            reason="RECORD_PENDING",
            metadata={"payment_id": payment_id, "state": PaymentState.RECORDING.value},
        ) from error
    except LedgerError as error:
        # 4b. Refused for good: the fee goes back.
        if saga.payment(payment_id).state is not PaymentState.RECORDED:
            saga.crash("before_return")
            return_fee(saga, payment_id, f"the ledger refused the record: {error.message}")
        return None
    if receipt.duplicate:
        return None  # recorded by an earlier attempt, whose transaction says how
    # The entry's own transaction moved it (mark_recorded): recorded at the receipt's leaf.
    return dataclasses.replace(
        payment, state=PaymentState.RECORDED, leaf_index=receipt.leaf_index, message=APPENDED
    )


def mark_recorded(connection: Connection, leaf_index: int, payment_id: str) -> None:
    """The append hook ``payments.mark_recorded``: in the FeeCollected entry's own transaction,
    move the payment ``recording -> recorded``; refuse the entry when it is no longer
    ``recording`` (it is being returned). A named hook, not a closure, so that a sequencer in
    another process runs it (:mod:`ledger.storage.append_hooks`); "now" is the batch's time."""
    if not move_payment(
        connection,
        payment_id,
        PaymentState.RECORDED,
        why=APPENDED,
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
