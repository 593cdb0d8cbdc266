"""Payment and refund states, the one table of allowed transitions, and the one function that
changes a state: it checks the table, writes an append-only history row (from, to, why, gateway
reference, time, ledger leaf) and logs one structured JSON line, all on the caller's
transaction (so a change commits with whatever it belongs to, e.g. the ledger entry).

Payment::

    started --> pending --> captured --> recording --> recorded
       |  \\        \\                        \\-> returning --> returned   (the ledger refused
       |   \\        \\-> declined / voided            the record for good: the fee goes back)
       |    \\-> unknown (a timeout: only get_status tells) --> any outcome above
       \\-> failed / declined / mismatch

Refund: started --> recorded, or started --> failed (the gateway refused: nothing refunded).
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging

from sqlalchemy import Connection, bindparam, insert, select, update

from ledger.clock import to_micros
from ledger.storage.append_hooks import hold_in_batches
from payments.limits import MESSAGE_CHARS_MAX, REFERENCE_CHARS_MAX, URL_CHARS_MAX
from payments.tables import payment_history, payments, refunds

__all__ = [
    "PAYMENT_BY_ID",
    "PAYMENT_BY_ID_LOCKED",
    "PAYMENT_TRANSITIONS",
    "REFUND_TRANSITIONS",
    "PaymentState",
    "RefundState",
    "move_payment",
    "move_refund",
]

log = hold_in_batches(logging.getLogger("payments.states"))
"""Held during a ledger batch: a change made by an append hook (recording -> recorded) is logged
once its batch commits, and not at all when the batch rolls it back."""


class PaymentState(enum.StrEnum):
    """Where a payment stands (``payments.state``)."""

    STARTED = "started"
    PENDING = "pending"
    AUTHORIZED = "authorized"
    UNKNOWN = "unknown"
    CAPTURED = "captured"
    RECORDING = "recording"
    """The FeeCollected entry is submitted to the ledger and its outcome is not known yet (the
    ledger may still append it); only the entry's arrival, or a refusal of a resubmission,
    moves it on."""
    RECORDED = "recorded"
    DECLINED = "declined"
    VOIDED = "voided"
    FAILED = "failed"
    MISMATCH = "mismatch"
    RETURNING = "returning"
    RETURNED = "returned"


class RefundState(enum.StrEnum):
    """Where a refund stands (``refunds.state``)."""

    STARTED = "started"
    RECORDED = "recorded"
    FAILED = "failed"


_P = PaymentState
_OUTCOMES = frozenset({_P.PENDING, _P.CAPTURED, _P.DECLINED, _P.VOIDED, _P.MISMATCH})
PAYMENT_TRANSITIONS: dict[PaymentState, frozenset[PaymentState]] = {
    _P.STARTED: _OUTCOMES | {_P.UNKNOWN, _P.FAILED, _P.AUTHORIZED},
    _P.UNKNOWN: _OUTCOMES | {_P.AUTHORIZED},
    _P.PENDING: _OUTCOMES - {_P.PENDING} | {_P.UNKNOWN, _P.AUTHORIZED},
    _P.AUTHORIZED: frozenset({_P.CAPTURED, _P.UNKNOWN, _P.VOIDED, _P.MISMATCH}),
    _P.CAPTURED: frozenset({_P.RECORDING}),
    _P.RECORDING: frozenset({_P.RECORDED, _P.RETURNING}),
    _P.RETURNING: frozenset({_P.RETURNED}),
    _P.RECORDED: frozenset(),
    _P.RETURNED: frozenset(),
    _P.DECLINED: frozenset(),
    _P.VOIDED: frozenset(),
    _P.FAILED: frozenset(),
    _P.MISMATCH: frozenset(),
}
"""Allowed moves; anything else is not made (a late or stale gateway answer changes nothing)."""

UNFINISHED = frozenset(
    {
        _P.STARTED,
        _P.PENDING,
        _P.AUTHORIZED,
        _P.UNKNOWN,
        _P.CAPTURED,
        _P.RECORDING,
        _P.RETURNING,
        _P.MISMATCH,
    }
)
"""States reconciliation looks at (mismatch: to report it; a person decides)."""

REFUND_TRANSITIONS: dict[RefundState, frozenset[RefundState]] = {
    RefundState.STARTED: frozenset({RefundState.RECORDED, RefundState.FAILED}),
    RefundState.RECORDED: frozenset(),
    RefundState.FAILED: frozenset(),
}


# Statements built once: SQLAlchemy then generates each one's cache key once, instead of
# building and hashing a new statement per call (a renewal moves a payment four times).
PAYMENT_BY_ID = select(payments).where(payments.c.payment_id == bindparam("payment_id"))
"""The ``payments`` row of ``payment_id`` (a parameter)."""
PAYMENT_BY_ID_LOCKED = PAYMENT_BY_ID.with_for_update()
"""As :data:`PAYMENT_BY_ID`, its row locked until the transaction ends (PostgreSQL)."""
_MOVE_PAYMENT = update(payments).where(
    payments.c.payment_id == bindparam("where_payment_id"),
    payments.c.state == bindparam("where_state"),
)
"""The columns set are the parameters' other keys."""
_MOVE_REFUND = update(refunds).where(
    refunds.c.refund_id == bindparam("where_refund_id"),
    refunds.c.state == bindparam("where_state"),
)
_REFUND_BY_ID = select(refunds).where(refunds.c.refund_id == bindparam("refund_id"))
_HISTORY = insert(payment_history)


def move_payment(
    connection: Connection,
    payment_id: str,
    to: PaymentState,
    *,
    why: str,
    now: dt.datetime,
    gateway_reference: str = "",
    leaf_index: int | None = None,
    captured_minor: int | None = None,
    redirect_url: str = "",
    then: tuple[PaymentState, str] | None = None,
) -> bool:
    """Move ``payment_id`` to ``to`` if the table allows it from where it stands (read under the
    row's lock); True when it moved. Writes the history row and the log line. ``then``: (state,
    why) to move on to at once, in the same transaction, once it moved (the row is still locked
    and stands at ``to``, so it is not read again); the table must allow it from ``to``."""
    row = connection.execute(PAYMENT_BY_ID_LOCKED, {"payment_id": payment_id}).one()
    before = PaymentState(row.state)
    if to not in PAYMENT_TRANSITIONS[before]:
        return False
    if then is not None and then[0] not in PAYMENT_TRANSITIONS[to]:
        raise ValueError(f"a payment cannot move from {to} to {then[0]}")
    values: dict[str, object] = {"state": to.value, "updated_at_us": to_micros(now)}
    if why:
        values["message"] = why[:MESSAGE_CHARS_MAX]
    if gateway_reference:
        values["gateway_reference"] = gateway_reference[:REFERENCE_CHARS_MAX]
    if leaf_index is not None:
        values["leaf_index"] = leaf_index
    if captured_minor is not None:
        values["captured_minor"] = captured_minor
    if redirect_url:
        values["redirect_url"] = redirect_url[:URL_CHARS_MAX]
    moved = connection.execute(
        _MOVE_PAYMENT, {"where_payment_id": payment_id, "where_state": before.value, **values}
    ).rowcount
    if moved != 1:
        return False
    _history(connection, payment_id, "", before, to, why, gateway_reference, leaf_index, now)
    _log(row, "", before, to, why, leaf_index, int(row.amount_minor))
    if then is not None:
        after, then_why = then
        values = {"state": after.value, "updated_at_us": to_micros(now)}
        if then_why:
            values["message"] = then_why[:MESSAGE_CHARS_MAX]
        if (
            connection.execute(
                _MOVE_PAYMENT, {"where_payment_id": payment_id, "where_state": to.value, **values}
            ).rowcount
            != 1
        ):  # cannot happen: the row is locked by this transaction, which just moved it
            raise RuntimeError(f"payment {payment_id!r} left {to} under its own lock")
        _history(connection, payment_id, "", to, after, then_why, "", None, now)
        _log(row, "", to, after, then_why, None, int(row.amount_minor))
    return True


def move_refund(
    connection: Connection,
    refund_id: str,
    to: RefundState,
    *,
    why: str,
    now: dt.datetime,
    gateway_reference: str = "",
    leaf_index: int | None = None,
) -> bool:
    """As :func:`move_payment`, for a refund."""
    row = connection.execute(_REFUND_BY_ID, {"refund_id": refund_id}).one()
    before = RefundState(row.state)
    if to not in REFUND_TRANSITIONS[before]:
        return False
    values: dict[str, object] = {"state": to.value}
    if gateway_reference:
        values["gateway_reference"] = gateway_reference[:REFERENCE_CHARS_MAX]
    if leaf_index is not None:
        values["leaf_index"] = leaf_index
    moved = connection.execute(
        _MOVE_REFUND, {"where_refund_id": refund_id, "where_state": before.value, **values}
    ).rowcount
    if moved != 1:
        return False
    _history(
        connection, row.payment_id, refund_id, before, to, why, gateway_reference, leaf_index, now
    )
    payment = connection.execute(PAYMENT_BY_ID, {"payment_id": row.payment_id}).one()
    _log(payment, refund_id, before, to, why, leaf_index, int(row.amount_minor))
    return True


def _history(  # noqa: PLR0917
    connection: Connection,
    payment_id: str,
    refund_id: str,
    before: enum.StrEnum,
    to: enum.StrEnum,
    why: str,
    gateway_reference: str,
    leaf_index: int | None,
    now: dt.datetime,
) -> None:
    connection.execute(
        _HISTORY,
        {
            "payment_id": payment_id,
            "refund_id": refund_id,
            "from_state": before.value,
            "to_state": to.value,
            "why": why[:MESSAGE_CHARS_MAX],
            "gateway_reference": gateway_reference[:REFERENCE_CHARS_MAX],
            "leaf_index": leaf_index,
            "at_us": to_micros(now),
        },
    )


def _log(  # noqa: PLR0917
    payment: object,
    refund_id: str,
    before: enum.StrEnum,
    to: enum.StrEnum,
    why: str,
    leaf_index: int | None,
    amount_minor: int,
) -> None:
    """One JSON line per change of money's state (for people and log pipelines alike)."""
    line = {
        "event": "refund_state" if refund_id else "payment_state",
        "payment_id": payment.payment_id,  # type: ignore[attr-defined]
        "quote_id": payment.quote_id,  # type: ignore[attr-defined]
        "refund_id": refund_id or None,
        "amount_minor": amount_minor,
        "currency": payment.currency_code,  # type: ignore[attr-defined]
        "gateway": payment.gateway,  # type: ignore[attr-defined]
        "from": before.value,
        "to": to.value,
        "leaf_index": leaf_index,
        "why": why,
    }
    log.info("%s", json.dumps(line, sort_keys=True))
