"""The ledger not answering in time while a captured fee is recorded: UNAVAILABLE with a retry
hint (outcome unknown, resubmitting is safe), the payment ``recording``, and the next call or
reconcile resolves it by the entry's event id: recorded once, or returned when refused for good
(a late entry of a returned payment is refused, never appended)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ledger.errors import Unavailable
from ledger.storage.tables import log_entries
from payments.gateway import PaymentStatus
from payments.service import LedgerRecorder
from payments.tables import payment_history
from tests.payments.support import Stack, family_request


def _entries(stack: Stack) -> int:
    with stack.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(log_entries)).scalar_one())


def _timed_out_start(stack: Stack, fault: str, household: int = 1) -> str:
    quote = stack.renewals.quote(family_request(household, 2))
    stack.recorder.next = fault
    with pytest.raises(Unavailable) as raised:
        stack.renewals.start_payment(quote.quote_id, f"key-timeout-{household}", "simulated")
    assert raised.value.reason == "RECORD_PENDING"
    assert raised.value.retry_delay_ms > 0
    assert "retrying" in raised.value.message and "safe" in raised.value.message
    payment_id = raised.value.details.metadata["payment_id"]
    assert stack.renewals.get_payment(payment_id).state == "recording"
    assert stack.gateway.snapshot()[payment_id].status is PaymentStatus.CAPTURED
    return payment_id


def test_a_record_whose_answer_is_lost_after_it_was_appended_is_found_and_answered(
    tmp_path: Path,
) -> None:
    stack = Stack(tmp_path)
    before = _entries(stack)
    quote = stack.renewals.quote(family_request(1, 2))
    stack.recorder.next = "applied"
    payment = stack.renewals.start_payment(quote.quote_id, "key-applied-1", "simulated")
    assert payment.state == "recorded" and payment.leaf_index is not None
    assert _entries(stack) == before + 1 and stack.recorder.faults["applied"] == 1


def test_a_record_timeout_is_unavailable_and_the_next_call_records_it_once(
    tmp_path: Path,
) -> None:
    stack = Stack(tmp_path)
    before = _entries(stack)
    payment_id = _timed_out_start(stack, "lost")
    assert _entries(stack) == before
    # The portal retries with the same key: the entry is not in the ledger, so it is submitted
    # again (its event id derived from the payment: recorded at most once).
    quote_id = stack.renewals.get_payment(payment_id).quote_id
    payment = stack.renewals.start_payment(quote_id, "key-timeout-1", "simulated")
    assert payment.state == "recorded" and payment.leaf_index is not None
    assert _entries(stack) == before + 1
    assert stack.gateway.applied["purchase"] == 1
    with stack.engine.connect() as connection:
        moves = connection.execute(
            select(payment_history.c.from_state, payment_history.c.to_state)
            .where(payment_history.c.payment_id == payment_id)
            .order_by(payment_history.c.history_id)
        ).all()
    assert [tuple(move) for move in moves] == [
        ("started", "captured"),
        ("captured", "recording"),
        ("recording", "recorded"),
    ]


def test_reconcile_records_a_timed_out_record_that_landed_late(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    before = _entries(stack)
    payment_id = _timed_out_start(stack, "late")
    stack.recorder.land_late()  # the sequencer appends it after the saga stopped waiting
    assert stack.renewals.get_payment(payment_id).state == "recorded"  # on_append did it
    assert stack.renewals.reconcile(stale_after=dt.timedelta(0)) == []  # nothing unfinished
    assert _entries(stack) == before + 1


def test_a_timed_out_record_refused_for_good_on_resubmission_is_returned(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    payment_id = _timed_out_start(stack, "late")
    # Meanwhile another portal renews the same household: the record is now refused for good.
    other = stack.renewals.quote(family_request(1, 1))
    assert stack.renewals.start_payment(other.quote_id, "key-other-1", "simulated").state == (
        "recorded"
    )
    entries = _entries(stack)
    [item] = stack.renewals.reconcile(stale_after=dt.timedelta(0))
    assert (item.id, item.before, item.after) == (payment_id, "recording", "returned")
    assert not item.needs_person
    theirs = stack.gateway.snapshot()[payment_id]
    assert theirs.refunded_minor == theirs.captured_minor > 0
    # The first submission arrives at last: refused (the payment is returned), not appended.
    stack.recorder.land_late()
    assert stack.recorder.landed == 0
    assert _entries(stack) == entries
    assert stack.renewals.get_payment(payment_id).state == "returned"


def test_reconcile_leaves_a_record_the_ledger_still_does_not_answer_and_says_so(
    tmp_path: Path,
) -> None:
    stack = Stack(tmp_path)
    payment_id = _timed_out_start(stack, "lost")
    stack.recorder.next = "lost"
    [item] = stack.renewals.reconcile(stale_after=dt.timedelta(0))
    assert (item.id, item.after, item.needs_person) == (payment_id, "recording", True)
    assert item.action.startswith("left recording") and "in flight" in item.action
    [item] = stack.renewals.reconcile(stale_after=dt.timedelta(0))
    assert (item.after, item.needs_person) == ("recorded", False)


class _NeverAnswers:
    """A ledger whose admission never completes (a sequencer stuck behind a long batch)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    def admit_now(self, envelope: object) -> None:
        return None  # the key is not cached: the admission is left to the loop (admit)

    async def admit(self, envelope: object) -> object:
        await self.release.wait()
        raise AssertionError("released only at teardown")


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


def test_the_ledger_recorder_answers_unavailable_when_the_ledger_does_not_answer(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    stack = Stack(tmp_path)
    quote = stack.renewals.quote(family_request(1, 2))
    saga = stack.renewals.saga
    with saga.uow.write() as connection:
        event = saga.entries.fee_collected(
            connection,
            "pay-x",
            stack.renewals.get_quote(quote.quote_id),
            gateway="simulated",
            gateway_reference="",
        )
    ledger = _NeverAnswers()
    recorder = LedgerRecorder(ledger, loop, stack.authority, timeout_seconds=0.01)  # type: ignore[arg-type]
    with pytest.raises(Unavailable) as raised:
        recorder(event, lambda connection, leaf: None)
    assert raised.value.reason == "RECORD_OUTCOME_UNKNOWN"
    assert raised.value.details.metadata["event_id"] == event.event_id
    with pytest.raises(Unavailable) as raised:
        recorder.check(event)
    assert raised.value.reason == "ADMISSION_TIMEOUT"
