"""Reconciliation: compare every unfinished payment and refund with its gateway, repair the
difference, and say what was seen and done (``policy-ledger payments reconcile``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select

from ledger.clock import to_micros
from ledger.errors import LedgerError, Unavailable
from payments.charges import apply
from payments.gateway import (
    Capability,
    GatewayOutcomeUnknown,
    GatewayRefused,
    GatewayResult,
    PaymentStatus,
)
from payments.recording import record, return_fee
from payments.refunds import finish_refund
from payments.saga import Crash, Saga, move
from payments.states import UNFINISHED, PaymentState, RefundState
from payments.tables import payments, refunds

__all__ = ["ReconcileItem", "reconcile"]


def reconcile(saga: Saga, *, stale_after: dt.timedelta) -> list[ReconcileItem]:
    """Compare every unfinished payment and refund last changed at least ``stale_after``
    ago (the only filter) with its gateway and repair it; one item per thing looked at."""
    cutoff = to_micros(saga.clock.now() - stale_after)
    with saga.uow.read() as connection:
        open_payments = connection.execute(
            select(payments.c.payment_id)
            .where(payments.c.state.in_(sorted(UNFINISHED)), payments.c.updated_at_us <= cutoff)
            .order_by(payments.c.created_at_us, payments.c.payment_id)
        ).all()
        open_refunds = connection.execute(
            select(refunds.c.refund_id)
            .where(refunds.c.state == RefundState.STARTED, refunds.c.created_at_us <= cutoff)
            .order_by(refunds.c.created_at_us, refunds.c.refund_id)
        ).all()
    items = [_reconcile_payment(saga, row.payment_id) for row in open_payments]
    return items + [_reconcile_refund(saga, row.refund_id) for row in open_refunds]


def _reconcile_payment(saga: Saga, payment_id: str) -> ReconcileItem:
    before = saga.payment(payment_id)
    adapter = saga.gateway(before.gateway)

    def item(said: str, action: str) -> ReconcileItem:
        after = saga.payment(payment_id).state
        return ReconcileItem(
            kind="payment",
            id=payment_id,
            before=before.state.value,
            after=after.value,
            gateway_said=said,
            action=action,
            needs_person=after in _NEEDS_A_PERSON,
        )

    try:
        status = adapter.get_status(payment_id)
    except GatewayOutcomeUnknown as error:
        return item(
            "no answer",
            f"left {before.state.value}: the gateway did not answer ({error}); run again",
        )
    said = _said(status)
    try:
        if before.state is PaymentState.RETURNING:
            return_fee(saga, payment_id, before.message)
        elif before.state in {PaymentState.CAPTURED, PaymentState.RECORDING}:
            if status.status is not PaymentStatus.CAPTURED:
                return item(said, f"needs a person: captured here, but the gateway says {said}")
            # The entry is looked up by its event id, else submitted again (recorded once);
            # a refusal for good returns the fee.
            record(saga, payment_id)
        else:
            apply(saga, payment_id, status)
    except (Unavailable, Crash) as error:
        return item(said, f"left {saga.payment(payment_id).state.value}: {error}")
    after = saga.payment(payment_id)
    if after.state in {PaymentState.PENDING, PaymentState.STARTED} and (
        status.status is PaymentStatus.NOT_FOUND
        or (Capability.VOID in adapter.capabilities() and status.status is PaymentStatus.AUTHORIZED)
    ):
        if status.status is PaymentStatus.AUTHORIZED:
            adapter.void(payment_id)
        move(saga, payment_id, PaymentState.VOIDED, message="stale: voided by reconcile")
    return item(said, _ACTIONS.get(saga.payment(payment_id).state, "left as it is"))


def _reconcile_refund(saga: Saga, refund_id: str) -> ReconcileItem:
    def item(said: str, action: str, *, person: bool) -> ReconcileItem:
        with saga.uow.read() as connection:
            state = connection.execute(
                select(refunds.c.state).where(refunds.c.refund_id == refund_id)
            ).scalar_one()
        return ReconcileItem("refund", refund_id, "started", state, said, action, person)

    try:
        finish_refund(saga, refund_id, "completed by reconcile")
    except GatewayOutcomeUnknown as error:
        return item("no answer", f"left started: {error}; run again", person=False)
    except Unavailable as error:
        return item("no answer", f"left started: {error.message}", person=False)
    except (GatewayRefused, LedgerError, Crash) as error:
        return item("refused", f"needs a person: {error}", person=True)
    return item("refunded", "refund recorded", person=False)


@dataclass(frozen=True)
class ReconcileItem:
    """One unfinished payment or refund reconciliation looked at: what the gateway said and
    what was done."""

    kind: str
    """``payment`` or ``refund``."""
    id: str
    before: str
    after: str
    gateway_said: str
    action: str
    needs_person: bool
    """Money is held and this run could not settle it (a mismatch, a return or a record the
    gateway or the ledger keeps refusing)."""


_NEEDS_A_PERSON = frozenset(
    {PaymentState.MISMATCH, PaymentState.RETURNING, PaymentState.CAPTURED, PaymentState.RECORDING}
)
_ACTIONS = {
    PaymentState.RECORDED: "recorded in the ledger",
    PaymentState.RETURNED: "returned: the ledger refused the record, the gateway refunded it",
    PaymentState.RETURNING: "needs a person: the refund of a refused fee is not confirmed",
    PaymentState.CAPTURED: "needs a person: captured but not recorded",
    PaymentState.RECORDING: "needs a person if it stays: captured, the ledger has not answered",
    PaymentState.MISMATCH: "needs a person: the gateway captured another amount",
    PaymentState.DECLINED: "declined: nothing was charged",
    PaymentState.VOIDED: "voided: nothing was charged",
    PaymentState.FAILED: "failed: nothing was charged",
    PaymentState.PENDING: "left pending: the customer has not finished",
    PaymentState.UNKNOWN: "left unknown: the gateway has not decided",
    PaymentState.STARTED: "left started",
    PaymentState.AUTHORIZED: "left authorized",
}


def _said(status: GatewayResult) -> str:
    words = status.status.value
    if status.captured_minor or status.refunded_minor:
        words += f" (captured {status.captured_minor}, refunded {status.refunded_minor})"
    return words
