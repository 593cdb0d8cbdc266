"""StartPayment answers with the receipt the sequencer gave for the entry it just appended,
rather than reading it back from the log: :meth:`LedgerRecorder.take_receipt` gives each kept
receipt once, keeps at most ``RECEIPTS_KEPT``, and never keeps a duplicate's; the answer falls
back to the log when there is none."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ledger.clock import FixedClock
from ledger.signing import Ed25519Signer
from ledger.storage.append import Receipt
from ledger.v1 import events_pb2
from payments import service
from payments.saga import PaymentRecord
from payments.service import RECEIPTS_KEPT, LedgerRecorder, RenewalServicer
from payments.states import PaymentState

NOW = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)


def _receipt(leaf_index: int, *, duplicate: bool = False) -> Receipt:
    return Receipt(
        event_id=f"fee-{leaf_index}",
        leaf_index=leaf_index,
        leaf_hash=b"h" * 32,
        entry=b"entry-%d" % leaf_index,
        checkpoint=b"checkpoint at %d\n" % (leaf_index + 1),
        tree_size=leaf_index + 1,
        inclusion_proof=(b"p" * 32,),
        duplicate=duplicate,
    )


class _Ledger:
    """Admits anything; the sequencer's outcome for each submission is the next receipt."""

    def __init__(self, loop: asyncio.AbstractEventLoop, receipts: Iterator[Receipt]) -> None:
        self._loop = loop
        self._receipts = receipts

    def admit_now(self, envelope: object) -> Any:
        return _Item()

    def enqueue(self, item: object) -> asyncio.Future[Receipt]:
        future: asyncio.Future[Receipt] = self._loop.create_future()
        future.set_result(next(self._receipts))
        return future


@dataclasses.dataclass
class _Item:
    on_append: object = None


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


def _recorder(loop: asyncio.AbstractEventLoop, receipts: list[Receipt]) -> LedgerRecorder:
    return LedgerRecorder(
        _Ledger(loop, iter(receipts)),  # type: ignore[arg-type]
        loop,
        Ed25519Signer.generate("kw-gov-health"),
    )


def _event(number: int) -> events_pb2.Event:
    return events_pb2.Event(event_id=f"fee-{number}", insurer_id="kw-gov-health")


def test_a_kept_receipt_is_taken_once(loop: asyncio.AbstractEventLoop) -> None:
    recorder = _recorder(loop, [_receipt(7)])
    assert recorder(_event(7), lambda *_: None) == _receipt(7)
    assert recorder.take_receipt(8) is None
    assert recorder.take_receipt(7) == _receipt(7)
    assert recorder.take_receipt(7) is None


def test_a_duplicates_receipt_is_not_kept(loop: asyncio.AbstractEventLoop) -> None:
    recorder = _recorder(loop, [_receipt(3, duplicate=True)])
    recorder(_event(3), lambda *_: None)
    assert recorder.take_receipt(3) is None


def test_at_most_receipts_kept_are_kept_the_oldest_dropped(
    loop: asyncio.AbstractEventLoop,
) -> None:
    count = RECEIPTS_KEPT + 3
    recorder = _recorder(loop, [_receipt(leaf) for leaf in range(count)])
    for leaf in range(count):
        recorder(_event(leaf), lambda *_: None)
    assert [recorder.take_receipt(leaf) for leaf in range(3)] == [None, None, None]
    assert all(recorder.take_receipt(leaf) is not None for leaf in range(3, count))


class _Log:
    """A log store that must not be read (or says what it read)."""

    def __init__(self) -> None:
        self.read: list[int] = []

    def entry_with_proof(self, leaf_index: int) -> tuple[Any, bytes, list[bytes]]:
        self.read.append(leaf_index)
        head = type("Head", (), {"note_bytes": b"latest checkpoint\n"})()
        return head, b"entry-%d" % leaf_index, [b"q" * 32]


def _recorded(leaf_index: int) -> PaymentRecord:
    return PaymentRecord(
        payment_id="pay0001",
        quote_id="q-0001",
        gateway="simulated",
        state=PaymentState.RECORDED,
        currency="KWD",
        amount_minor=10_000,
        captured_minor=10_000,
        refunded_minor=0,
        gateway_reference="sim-1",
        redirect_url="",
        leaf_index=leaf_index,
        message="FeeCollected appended",
    )


@pytest.mark.parametrize("kept", [True, False])
def test_the_answer_carries_the_kept_receipt_or_reads_the_log(kept: bool) -> None:
    log = _Log()
    taken: list[int] = []

    def take(leaf_index: int) -> Receipt | None:
        taken.append(leaf_index)
        return _receipt(leaf_index) if kept else None

    servicer = RenewalServicer(
        None,  # type: ignore[arg-type]
        log,  # type: ignore[arg-type]
        FixedClock(NOW),
        workers=1,
        receipts=take,
    )
    try:
        answer = servicer._payment(_recorded(41)).receipt
    finally:
        servicer._executor.shutdown()
    assert taken == [41] and answer.leaf_index == 41 and answer.event_id == "fee-pay0001"
    assert answer.leaf_hash == service.leaf_hash(answer.entry)
    if kept:
        assert log.read == []
        assert (answer.entry, answer.checkpoint, list(answer.inclusion_proof)) == (
            b"entry-41",
            b"checkpoint at 42\n",
            [b"p" * 32],
        )
    else:
        assert log.read == [41]
        assert (answer.checkpoint, list(answer.inclusion_proof)) == (
            b"latest checkpoint\n",
            [b"q" * 32],
        )
