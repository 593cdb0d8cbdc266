"""The payment state machine: one transition table, every change through one function that
writes an append-only history row and one JSON log line."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
from sqlalchemy import select

from ledger.errors import LedgerError, Unavailable
from ledger.storage.append import Receipt
from payments.states import PAYMENT_TRANSITIONS, PaymentState, move_payment
from payments.tables import payment_history
from tests.conftest import pending
from tests.payments.support import Stack, family_request


def _history(stack: Stack, payment_id: str) -> list[tuple[str, str, int | None]]:
    with stack.engine.connect() as connection:
        rows = connection.execute(
            select(payment_history)
            .where(payment_history.c.payment_id == payment_id)
            .order_by(payment_history.c.history_id)
        ).all()
    return [(row.from_state, row.to_state, row.leaf_index) for row in rows]


def test_every_change_is_in_the_history_and_logged_as_json(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stack = Stack(tmp_path)
    quote = stack.renewals.quote(family_request(1, 2))
    with caplog.at_level(logging.INFO, logger="payments.states"):
        payment = stack.renewals.start_payment(quote.quote_id, "key-history1", "simulated")
    assert _history(stack, payment.payment_id) == [
        ("started", "captured", None),
        ("captured", "recording", None),
        ("recording", "recorded", payment.leaf_index),
    ]
    lines = [json.loads(record.getMessage()) for record in caplog.records]
    assert [(line["from"], line["to"]) for line in lines] == [
        ("started", "captured"),
        ("captured", "recording"),
        ("recording", "recorded"),
    ]
    assert lines[-1] == lines[-1] | {
        "payment_id": payment.payment_id,
        "quote_id": quote.quote_id,
        "amount_minor": quote.total_minor,
        "currency": "KWD",
        "gateway": "simulated",
        "leaf_index": payment.leaf_index,
    }


def test_a_payment_recorded_by_a_batch_that_ran_twice_is_logged_recorded_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stack = Stack(tmp_path)
    quote = stack.renewals.quote(family_request(1, 2))
    stack.recorder.next = "late"  # the FeeCollected entry is held back: appended below
    with pytest.raises(Unavailable) as raised:
        stack.renewals.start_payment(quote.quote_id, "key-history3", "simulated")
    payment_id = raised.value.details.metadata["payment_id"]
    [(event, on_append)] = stack.recorder.queued
    other = event.__deepcopy__()
    other.event_id = "fee-other"  # its hook finds the payment recorded already, and refuses
    items = [
        dataclasses.replace(pending(stack.authority, fee), on_append=on_append)
        for fee in (event, other)
    ]
    # The batch's first attempt moves the payment to recorded, then is rolled back when the
    # second hook refuses; the second attempt moves it again, and commits.
    with caplog.at_level(logging.INFO, logger="payments.states"):
        recorded, refused = stack.appender.append_batch(items, stack.clock.now())
    assert isinstance(recorded, Receipt)
    assert isinstance(refused, LedgerError) and refused.reason == "PAYMENT_NOT_RECORDING"
    assert _history(stack, payment_id)[-1] == ("recording", "recorded", recorded.leaf_index)
    lines = [json.loads(record.getMessage()) for record in caplog.records]
    assert [(line["from"], line["to"], line["leaf_index"]) for line in lines] == [
        ("recording", "recorded", recorded.leaf_index)
    ]


def test_a_transition_outside_the_table_changes_nothing(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    quote = stack.renewals.quote(family_request(1, 2))
    payment = stack.renewals.start_payment(quote.quote_id, "key-history2", "simulated")
    before = _history(stack, payment.payment_id)
    for late in (PaymentState.DECLINED, PaymentState.VOIDED, PaymentState.RETURNING):
        with stack.engine.begin() as connection:
            assert not move_payment(
                connection, payment.payment_id, late, why="late", now=stack.clock.now()
            )
    assert stack.renewals.get_payment(payment.payment_id) == payment
    assert _history(stack, payment.payment_id) == before


def test_the_table_only_leaves_captured_for_a_record_or_a_return() -> None:
    # Captured money leaves only through a record in flight, which ends recorded or returned.
    assert PAYMENT_TRANSITIONS[PaymentState.CAPTURED] == {PaymentState.RECORDING}
    assert PAYMENT_TRANSITIONS[PaymentState.RECORDING] == {
        PaymentState.RECORDED,
        PaymentState.RETURNING,
    }
    assert PAYMENT_TRANSITIONS[PaymentState.RETURNING] == {PaymentState.RETURNED}
    captured_from = {
        s for s, targets in PAYMENT_TRANSITIONS.items() if PaymentState.CAPTURED in targets
    }
    assert PaymentState.RECORDED not in captured_from and PaymentState.RETURNED not in captured_from
