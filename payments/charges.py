"""Collecting a quote's fee: StartPayment (claim the idempotency key, check the quote may be
paid and recorded, save the payment ``started``, charge through the gateway) and
CompletePayment (believe only the gateway's own answer, capture when due, then record).

Rules (ARCHITECTURE.md section 6): one payment per quote, whose merchant reference is derived
from the quote (``payment_id_of``), so retries never make a second charge; a result is believed
only when the gateway itself confirms it (``get_status``), never on the portal's or a
notification's word; a timeout is ``unknown``, never a failure; reconciliation resolves what is
left (``payments.reconciliation``). Every transaction is opened by the saga's unit of work.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from ledger.clock import from_micros, to_micros
from ledger.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    LedgerError,
    Unavailable,
)
from ledger.v1 import events_pb2
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
from payments.idempotency import claim_key, store_key
from payments.quotes import quote_record, refuse_changed_schedule
from payments.recording import Capture, record, return_fee
from payments.saga import (
    PaymentRecord,
    Saga,
    load_payment,
    load_quote,
    move,
    payment_id_of,
    refuse_unrecordable,
    refuse_unrecordable_reading,
)
from payments.states import PAYMENT_TRANSITIONS, PaymentState
from payments.tables import payments

__all__ = ["apply", "complete_payment", "start_payment"]

IN_FLIGHT = frozenset({PaymentState.STARTED, PaymentState.CAPTURED, PaymentState.RECORDING})
"""States a first StartPayment passes through; a repeat meanwhile does not answer them."""


def start_payment(  # noqa: PLR0917 (the request's fields)
    saga: Saga,
    quote_id: str,
    idempotency_key: str,
    gateway: str,
    return_url: str = "",
    notification_base_url: str = "",
) -> PaymentRecord:
    """Start collecting a quote's fee; returns the payment (pending with a redirect URL,
    recorded, declined or unknown)."""
    try:
        return _start_payment(
            saga, quote_id, idempotency_key, gateway, return_url, notification_base_url
        )
    except IntegrityError:
        # A concurrent call with the same key or quote inserted first (PostgreSQL): this
        # attempt wrote nothing; the retry finds its row and answers like a repeat.
        return _start_payment(
            saga, quote_id, idempotency_key, gateway, return_url, notification_base_url
        )


def _start_payment(  # noqa: PLR0917 (the request's fields)
    saga: Saga,
    quote_id: str,
    idempotency_key: str,
    gateway: str,
    return_url: str,
    notification_base_url: str,
) -> PaymentRecord:
    request = {"quote_id": quote_id, "gateway": gateway, "return_url": return_url}
    now = saga.clock.now()
    payment_id = payment_id_of(quote_id)
    checked = (
        _checked_beforehand(saga, quote_id, idempotency_key, request, gateway, payment_id, now)
        if saga.uow.writers_serialised
        else None
    )
    with saga.uow.write() as connection:
        # The quote's row lock first: every call for this quote waits here for the one
        # before it to commit, and then sees its key and payment (several servers may
        # share the database, so no lock in this process would do).
        quote = load_quote(connection, quote_id, lock=True)
        # Checked beforehand: the key was new and the quote unpaid a moment ago. A call that
        # took either since fails this one's inserts on their unique keys (IntegrityError:
        # start_payment runs again, and answers it as a repeat or QUOTE_ALREADY_PAID).
        existing = (
            None
            if checked is not None
            else claim_key(connection, idempotency_key, "start_payment", request)
        )
        repeated = None if existing is None else load_payment(connection, existing)
        if repeated is None:
            adapter = saga.gateway(gateway)
            opened = _open_payment(
                saga,
                connection,
                quote,
                payment_id,
                gateway,
                now,
                recordable_checked=checked is not None,
            )
            store_key(connection, idempotency_key, "start_payment", request, payment_id, now)
    if repeated is not None:
        return _repeat_start(saga, repeated)
    saga.crash("after_start_saved")
    amount = Money(quote.currency_code, int(quote.total_minor))
    charge = PaymentRequest(
        merchant_reference=payment_id,
        amount=amount,
        description=f"residence renewal health-insurance fee, quote {quote_id}",
        return_url=return_url,
        notification_url=(
            f"{notification_base_url}/notify/{gateway}" if notification_base_url else ""
        ),
    )
    capabilities = adapter.capabilities()
    try:
        if Capability.PURCHASE in capabilities:
            result = adapter.purchase(charge)
        else:
            result = adapter.authorize(charge)
    except GatewayOutcomeUnknown as error:
        move(saga, payment_id, PaymentState.UNKNOWN, message=f"gateway outcome unknown: {error}")
        return saga.payment(payment_id)
    except GatewayRefused as error:
        move(saga, payment_id, PaymentState.FAILED, message=f"gateway refused: {error}")
        return saga.payment(payment_id)
    saga.crash("after_gateway_charge")
    return apply(saga, payment_id, result, opened=opened, entry=checked)


def _status_after_refused_capture(
    adapter: PaymentGateway, payment_id: str, refusal: GatewayRefused
) -> GatewayResult:
    """The payment's status once the gateway refused to capture it: captured meanwhile, which
    the gateway contract lets an adapter answer with a refusal (CMI captures when it reads our
    ``ACTION=POSTAUTH`` answer to its callback, while the confirmation that the answer started
    reads AUTHORIZED and sends its own PostAuth), or still not capturable, which is
    :class:`Unavailable`: nothing was written, the payment stays as it is, and a retry or
    reconciliation reads the gateway again."""
    try:
        status = adapter.get_status(payment_id)
    except GatewayOutcomeUnknown as error:
        raise Unavailable(
            f"the gateway refused to capture payment {payment_id} ({refusal}) and then did not "
            "answer an inquiry; the payment stays as it is: retry",
            reason="GATEWAY_UNAVAILABLE",
        ) from error
    if status.status is PaymentStatus.CAPTURED:
        return status
    raise Unavailable(
        f"the gateway refused to capture payment {payment_id} ({refusal}) and reports it "
        f"{status.status.value}; the payment stays as it is: retry, or reconcile",
        reason="GATEWAY_CAPTURE_REFUSED",
        metadata={"payment_id": payment_id, "gateway_status": status.status.value},
    ) from refusal


_PAYMENT_OF_QUOTE = select(payments.c.payment_id).where(
    payments.c.quote_id == bindparam("quote_id")
)
"""Built once (its cache key generated once), as :data:`_OPEN_PAYMENT`."""
_OPEN_PAYMENT = insert(payments)


def _checked_beforehand(  # noqa: PLR0917 (the request's fields)
    saga: Saga,
    quote_id: str,
    idempotency_key: str,
    request: dict[str, str],
    gateway: str,
    payment_id: str,
    now: dt.datetime,
) -> events_pb2.Event | None:
    """Check that the fee could be recorded (:func:`refuse_unrecordable`) before the write
    transaction, when this is a first StartPayment of a quote that may be paid and whose people
    the vault knows (the quote issued their tokens): the FeeCollected entry checked (its
    gateway reference still empty) when it passed; raises what it refuses. None, having
    refused nothing, in any other case: the write transaction then checks everything as
    before, in the same order (so a repeat, an unknown quote or key, a quote expired or
    already paid answer exactly as they did).

    Why: on SQLite every write transaction holds the database's one write lock, and renewals
    take turns on it; the check (the ledger's admission of the signed entry, the FeeCollected
    rules' reads) needs no lock. What changes: the rules are checked against the state a few
    statements before the payment is saved, not in the same transaction -- as they always
    were against the state at the append, after the gateway; a rule that fails in between is
    refused by the append, and the captured fee returned (:func:`payments.recording.record`)."""
    if gateway not in saga.gateways:
        return None
    with saga.uow.read() as connection:
        try:
            quote = load_quote(connection, quote_id)
            if claim_key(connection, idempotency_key, "start_payment", request) is not None:
                return None
            _refuse_unpayable(quote, now)
        except LedgerError:
            return None
        if connection.execute(_PAYMENT_OF_QUOTE, {"quote_id": quote_id}).first() is not None:
            return None
        event = saga.entries.fee_collected_if_known(
            connection, payment_id, quote_record(quote), gateway=gateway, gateway_reference=""
        )
    if event is None:
        return None
    refuse_unrecordable_reading(saga, event)
    return event


def _refuse_unpayable(quote: Any, now: dt.datetime) -> None:
    """Refuse a quote with nothing to collect, expired, or priced by another schedule."""
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


def _open_payment(  # noqa: PLR0917 (one row's facts)
    saga: Saga,
    connection: Connection,
    quote: Any,
    payment_id: str,
    gateway: str,
    now: dt.datetime,
    *,
    recordable_checked: bool,
) -> PaymentRecord:
    """Check that ``quote`` may be paid now, then save its payment as ``started`` (returned).
    ``recordable_checked``: :func:`_checked_beforehand` found that its fee could be recorded
    and that the quote had no payment (one saved since fails the insert on the unique
    quote id: see :func:`_start_payment`)."""
    quote_id = quote.quote_id
    _refuse_unpayable(quote, now)
    already = (
        None
        if recordable_checked
        else connection.execute(_PAYMENT_OF_QUOTE, {"quote_id": quote_id}).first()
    )
    if already is not None:
        raise AlreadyExists(
            f"quote {quote_id!r} already has payment {already.payment_id!r}",
            reason="QUOTE_ALREADY_PAID",
            field_violations=[FieldViolation("quote_id", "already has a payment")],
            metadata={"payment_id": already.payment_id},
        )
    if not recordable_checked:
        refuse_unrecordable(
            saga,
            connection,
            saga.entries.fee_collected(
                connection, payment_id, quote_record(quote), gateway=gateway, gateway_reference=""
            ),
        )
    connection.execute(
        _OPEN_PAYMENT,
        {
            "payment_id": payment_id,
            "quote_id": quote_id,
            "gateway": gateway,
            "state": PaymentState.STARTED.value,
            "currency_code": quote.currency_code,
            "amount_minor": quote.total_minor,
            "captured_minor": 0,
            "refunded_minor": 0,
            "gateway_reference": "",
            "redirect_url": "",
            "leaf_index": None,
            "message": "",
            "created_at_us": to_micros(now),
            "updated_at_us": to_micros(now),
        },
    )
    return PaymentRecord(
        payment_id=payment_id,
        quote_id=quote_id,
        gateway=gateway,
        state=PaymentState.STARTED,
        currency=quote.currency_code,
        amount_minor=int(quote.total_minor),
        captured_minor=0,
        refunded_minor=0,
        gateway_reference="",
        redirect_url="",
        leaf_index=None,
        message="",
    )


def _repeat_start(saga: Saga, payment: PaymentRecord) -> PaymentRecord:
    """The answer to a repeated StartPayment: the payment as it stands; while its first call
    is still under way (at the gateway, or being recorded) the gateway is asked and the
    payment recorded, and if that does not settle it, UNAVAILABLE: retry with the same key."""
    if payment.state not in IN_FLIGHT:
        return payment
    resumed = complete_payment(saga, payment.payment_id)
    if resumed.state in IN_FLIGHT:
        raise Unavailable(
            f"payment {payment.payment_id!r} is still in flight ({resumed.state}: at the "
            "gateway or being recorded); retry with the same key",
            reason="IN_FLIGHT",
            metadata={"payment_id": payment.payment_id},
        )
    return resumed


def complete_payment(saga: Saga, payment_id: str) -> PaymentRecord:
    """Confirm with the gateway itself, then record once (never on the portal's word)."""
    payment = saga.payment(payment_id)
    if not PAYMENT_TRANSITIONS[payment.state]:  # a final state
        return payment
    if payment.state is PaymentState.RETURNING:
        return_fee(saga, payment_id, payment.message)
        return saga.payment(payment_id)
    if payment.state in {PaymentState.CAPTURED, PaymentState.RECORDING}:
        record(saga, payment_id)  # the gateway has it: what is left is the ledger's part
        return saga.payment(payment_id)
    adapter = saga.gateway(payment.gateway)
    try:
        result = adapter.get_status(payment_id)
    except GatewayOutcomeUnknown as error:
        raise Unavailable(
            f"the gateway did not answer; the payment stays {payment.state}: retry",
            reason="GATEWAY_UNAVAILABLE",
        ) from error
    return apply(saga, payment_id, result)


def apply(
    saga: Saga,
    payment_id: str,
    result: GatewayResult,
    *,
    opened: PaymentRecord | None = None,
    entry: events_pb2.Event | None = None,
) -> PaymentRecord:
    """Move the payment to what the gateway says; capture and record when due. ``opened``:
    the payment as StartPayment saved it, whose gateway, currency and amount (all this reads
    of it; they never change) spare reading it again; ``entry``: its FeeCollected entry as
    checked before the charge (see :class:`payments.recording.Capture`)."""
    payment = saga.payment(payment_id) if opened is None else opened
    adapter = saga.gateway(payment.gateway)
    if result.status is PaymentStatus.AUTHORIZED:
        try:
            result = adapter.capture(payment_id, Money(payment.currency, payment.amount_minor))
        except GatewayOutcomeUnknown as error:
            move(
                saga, payment_id, PaymentState.UNKNOWN, message=f"capture outcome unknown: {error}"
            )
            return saga.payment(payment_id)
        except GatewayRefused as refusal:
            result = _status_after_refused_capture(adapter, payment_id, refusal)
        saga.crash("after_gateway_capture")
    if result.status is PaymentStatus.CAPTURED:
        if result.captured_minor != payment.amount_minor:
            move(
                saga,
                payment_id,
                PaymentState.MISMATCH,
                message=f"gateway captured {result.captured_minor}, expected "
                f"{payment.amount_minor}",
            )
            return saga.payment(payment_id)
        # Saved as captured and moved to recording in one transaction, then recorded.
        recorded = record(
            saga,
            payment_id,
            Capture(payment, result.captured_minor, result.gateway_reference, entry),
        )
        saga.crash("after_recorded")
        if recorded is not None:
            return recorded
    elif result.status is PaymentStatus.PENDING:
        move(
            saga,
            payment_id,
            PaymentState.PENDING,
            redirect_url=result.redirect_url,
            gateway_reference=result.gateway_reference,
        )
    elif result.status is PaymentStatus.DECLINED:
        move(saga, payment_id, PaymentState.DECLINED, message=result.message)
    elif result.status is PaymentStatus.VOIDED:
        move(saga, payment_id, PaymentState.VOIDED, message=result.message)
    return saga.payment(payment_id)
