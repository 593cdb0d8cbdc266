"""The worker -> sequencer hand-off end to end, in one event loop: a real Sequencer on a real
ledger, its HandoffServer on a Unix socket in tmp_path, and a SequencerClient (what a worker's
Ledger gets instead of the Sequencer). Batch boundaries are driven with Sequencer.hold() and
wait_waiting(), connection changes are awaited through connection_listeners: nothing here
depends on timing."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, func, select

from ledger.clock import FixedClock
from ledger.errors import FailedPrecondition, LedgerError, Unavailable
from ledger.fair import caller_key
from ledger.handoff.client import SequencerClient
from ledger.handoff.server import HandoffServer
from ledger.merkle import leaf_hash
from ledger.merkle.verify import verify_inclusion
from ledger.sequencer import Sequencer, SequencerOptions
from ledger.service import KeyCache, Ledger
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer
from ledger.storage.append import Appender, Outcome, PendingEntry, Receipt
from ledger.storage.append_hooks import AppendHook, register_append_hook
from ledger.storage.key_store import KeyStore
from ledger.storage.log_store import LogStore
from ledger.storage.tables import log_entries
from payments.recording import MARK_RECORDED
from payments.refunds import MARK_REFUND_RECORDED
from payments.tables import refunds
from tests.builders import R, cancelled, issued, person
from tests.conftest import LOG_NAME, key_event, onboard_directly, pending
from tests.payments.support import Stack, family_request
from tests.statuses import unpacked_status

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
GULF = "gulf-health"
JAN1, DEC31 = dt.date(2026, 1, 1), dt.date(2026, 12, 31)
_T = TypeVar("_T")


@dataclass
class Rig:
    engine: Engine
    sequencer: Sequencer
    server: HandoffServer
    client: SequencerClient
    socket_path: Path
    insurer: Ed25519Signer

    def policy(self, number: int, event_id: str | None = None) -> PendingEntry:
        """A new PolicyIssued of the insurer (a distinct sponsor per number)."""
        sponsor = person(10_000 + number)
        event = issued(
            GULF,
            f"P{number}",
            sponsor,
            [(sponsor, R.RELATIONSHIP_SELF)],
            JAN1,
            DEC31,
            event_id=event_id or f"policy-{number}",
        )
        return pending(self.insurer, event)

    def entries(self) -> int:
        with self.engine.connect() as connection:
            return int(
                connection.execute(select(func.count()).select_from(log_entries)).scalar_one()
            )


@asynccontextmanager
async def _rig(
    engine: Engine,
    log_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
    tmp_path: Path,
    *,
    in_flight_max: int | None = None,
) -> AsyncIterator[Rig]:
    appender = Appender(engine, log_signer, LOG_NAME)
    appender.initialize(NOW)
    insurer = Ed25519Signer.generate(GULF)
    onboard_directly(engine, appender, operator_signer, GULF, insurer, NOW)
    sequencer = Sequencer(appender, FixedClock(NOW), SequencerOptions())
    await sequencer.start()
    socket_path = tmp_path / "sequencer.sock"
    server = HandoffServer(sequencer, socket_path)
    await server.start()
    client = (
        SequencerClient(socket_path)
        if in_flight_max is None
        else SequencerClient(socket_path, in_flight_max=in_flight_max)
    )
    await client.start(timeout=30)
    rig = Rig(engine, sequencer, server, client, socket_path, insurer)
    try:
        yield rig
    finally:
        await rig.client.stop()
        await rig.server.stop()
        await sequencer.stop()


def _run(
    engine: Engine,
    log_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
    tmp_path: Path,
    scenario: Callable[[Rig], Coroutine[Any, Any, _T]],
    **options: int,
) -> _T:
    async def main() -> _T:
        async with _rig(engine, log_signer, operator_signer, tmp_path, **options) as rig:
            return await scenario(rig)

    return asyncio.run(main())


def _check_in_log(engine: Engine, receipt: Receipt) -> None:
    """The receipt is what the log holds: its entry at its index, proven in its checkpoint."""
    store = LogStore(engine)
    checkpoint = store.checkpoint_at(receipt.tree_size)
    assert checkpoint is not None and checkpoint.note_bytes == receipt.checkpoint
    _, [entry] = store.entries(receipt.leaf_index, receipt.leaf_index + 1)
    assert entry == receipt.entry and leaf_hash(entry) == receipt.leaf_hash
    verify_inclusion(
        receipt.leaf_index,
        receipt.tree_size,
        receipt.leaf_hash,
        receipt.inclusion_proof,
        checkpoint.root_hash,
    )


def _same_refusal(got: Outcome, want: Outcome) -> None:
    assert isinstance(got, LedgerError) and isinstance(want, LedgerError)
    assert type(got) is type(want)
    assert got.message == want.message and got.details == want.details
    assert unpacked_status(got) == unpacked_status(want)


def test_receipts_through_the_client_are_what_the_log_holds_and_duplicates_answer_the_first(
    engine: Engine, log_signer: Ed25519Signer, operator_signer: Ed25519Signer, tmp_path: Path
) -> None:
    async def scenario(rig: Rig) -> tuple[list[Receipt], Receipt, int]:
        before = rig.entries()
        receipts = await asyncio.gather(*(rig.client.submit(rig.policy(n)) for n in range(5)))
        again = await rig.client.submit(rig.policy(2))
        assert rig.entries() == before + 5  # the duplicate wrote nothing
        return list(receipts), again, before

    receipts, again, before = _run(engine, log_signer, operator_signer, tmp_path, scenario)
    assert sorted(r.leaf_index for r in receipts) == list(range(before, before + 5))
    assert not any(r.duplicate for r in receipts)
    for receipt in receipts:
        _check_in_log(engine, receipt)
    first = receipts[2]
    assert again.duplicate and again.leaf_index == first.leaf_index
    assert again.entry == first.entry and again.checkpoint == first.checkpoint
    _check_in_log(engine, again)


def test_a_workers_ledger_admits_and_hands_off_through_the_client(
    engine: Engine, log_signer: Ed25519Signer, operator_signer: Ed25519Signer, tmp_path: Path
) -> None:
    async def scenario(rig: Rig) -> None:
        keys = KeyCache(KeyStore(rig.engine))
        rig.client.keys_listeners.append(keys.forget)
        ledger = Ledger(keys, rig.client, FixedClock(NOW))  # a worker's Ledger
        receipt = await ledger.submit(rig.policy(1).envelope)
        _check_in_log(rig.engine, receipt)
        forged = rig.policy(2).envelope
        forged = dataclasses.replace(forged, payload=forged.payload + b" ")
        before = rig.entries()
        with pytest.raises(LedgerError) as raised:  # refused by the worker: nothing handed off
            await ledger.submit(forged)
        assert raised.value.reason == "SIGNATURE_INVALID"
        assert rig.entries() == before and rig.client.queue_depth == 0

    _run(engine, log_signer, operator_signer, tmp_path, scenario)


def test_a_refusal_is_the_same_error_with_the_same_details_as_from_the_sequencer_directly(
    engine: Engine, log_signer: Ed25519Signer, operator_signer: Ed25519Signer, tmp_path: Path
) -> None:
    async def scenario(rig: Rig) -> None:
        await rig.client.submit(rig.policy(1, event_id="reused"))
        before = rig.entries()
        # The same event id with other content: ALREADY_EXISTS naming the differing field.
        conflicting = rig.policy(2, event_id="reused")
        through_client = await rig.client.enqueue(conflicting)
        direct = await rig.sequencer.enqueue(conflicting)
        _same_refusal(through_client, direct)
        assert isinstance(through_client, LedgerError)
        assert through_client.reason == "EVENT_ID_REUSED"
        assert through_client.details.field_violations  # the details crossed too
        # A rule refusal: cancelling a policy that does not exist.
        unknown_policy = cancelled(
            GULF, "NO-SUCH-POLICY", dt.date(2026, 5, 1), R.CANCELLATION_REASON_FINAL_EXIT
        )
        cancel = pending(rig.insurer, unknown_policy)
        _same_refusal(await rig.client.enqueue(cancel), await rig.sequencer.enqueue(cancel))
        assert rig.entries() == before  # nothing was written

    _run(engine, log_signer, operator_signer, tmp_path, scenario)


def test_the_caller_key_reaches_the_sequencers_fair_queue_and_arrival_order_is_kept(
    engine: Engine, log_signer: Ed25519Signer, operator_signer: Ed25519Signer, tmp_path: Path
) -> None:
    async def scenario(rig: Rig) -> list[Receipt]:
        rig.sequencer.hold()
        futures = []
        # Caller "busy" hands off 3 entries, then caller "quiet" one: fairness takes "quiet"'s
        # second, after busy's first, and busy's own keep their order.
        for number, caller in [(1, "busy"), (2, "busy"), (3, "busy"), (4, "quiet")]:
            token = caller_key.set(caller)
            try:
                futures.append(rig.client.enqueue(rig.policy(number)))
            finally:
                caller_key.reset(token)
        await rig.sequencer.wait_waiting(4)
        queue = rig.sequencer._queue
        assert (queue.count("busy"), queue.count("quiet")) == (3, 1)
        rig.sequencer.release()
        outcomes = await asyncio.gather(*futures)
        assert all(isinstance(outcome, Receipt) for outcome in outcomes)
        return [outcome for outcome in outcomes if isinstance(outcome, Receipt)]

    busy1, busy2, busy3, quiet = _run(engine, log_signer, operator_signer, tmp_path, scenario)
    assert busy1.leaf_index < quiet.leaf_index < busy2.leaf_index < busy3.leaf_index


def test_commits_reach_the_commit_listeners_with_the_tree_size(
    engine: Engine, log_signer: Ed25519Signer, operator_signer: Ed25519Signer, tmp_path: Path
) -> None:
    async def scenario(rig: Rig) -> None:
        assert rig.client.tree_size == rig.entries()  # the greeting says where the log is
        heard: list[int] = []
        committed = asyncio.Event()

        def listener() -> None:
            heard.append(rig.client.tree_size)
            committed.set()

        rig.client.commit_listeners.append(listener)
        receipt = await rig.client.submit(rig.policy(1))
        # The Committed frame precedes the batch's outcomes on the connection.
        assert heard == [receipt.tree_size] and rig.client.tree_size == receipt.tree_size
        assert rig.server.connections == 1 and rig.client.queue_depth == 0

    _run(engine, log_signer, operator_signer, tmp_path, scenario)


def test_a_key_event_committing_tells_the_workers_to_drop_cached_keys(
    engine: Engine, log_signer: Ed25519Signer, operator_signer: Ed25519Signer, tmp_path: Path
) -> None:
    async def scenario(rig: Rig) -> list[str]:
        heard: list[str] = []
        rig.client.keys_listeners.append(lambda: heard.append("keys"))
        rig.client.commit_listeners.append(lambda: heard.append("commit"))
        await rig.client.submit(rig.policy(1))
        assert heard == ["commit"]  # an ordinary batch leaves the cache alone
        other = Ed25519Signer.generate("najm-care")
        registered = key_event("najm-care", other, SignerRole.INSURER)
        await rig.client.submit(pending(operator_signer, registered))
        return heard

    assert _run(engine, log_signer, operator_signer, tmp_path, scenario) == [
        "commit",
        "keys",
        "commit",
    ]


def test_queue_bounds_answer_as_outcomes_and_the_clients_own_bound_at_once(
    engine: Engine, log_signer: Ed25519Signer, operator_signer: Ed25519Signer, tmp_path: Path
) -> None:
    async def scenario(rig: Rig) -> None:
        rig.sequencer.hold()
        first = rig.client.enqueue(rig.policy(1))
        second = rig.client.enqueue(rig.policy(2))
        with pytest.raises(Unavailable) as raised:
            rig.client.enqueue(rig.policy(3))
        assert raised.value.reason == "OVERLOADED" and rig.client.queue_depth == 2
        await rig.sequencer.wait_waiting(2)
        rig.sequencer.release()
        assert isinstance(await first, Receipt) and isinstance(await second, Receipt)

    _run(engine, log_signer, operator_signer, tmp_path, scenario, in_flight_max=2)


def test_the_sequencers_own_refusal_at_enqueue_comes_back_as_the_outcome(
    engine: Engine, log_signer: Ed25519Signer, operator_signer: Ed25519Signer, tmp_path: Path
) -> None:
    async def scenario(rig: Rig) -> None:
        rig.sequencer._options = SequencerOptions(caller_queue_entries_max=1)
        rig.sequencer.hold()
        first = rig.client.enqueue(rig.policy(1))
        second = rig.client.enqueue(rig.policy(2))
        outcome = await second
        assert isinstance(outcome, LedgerError) and outcome.reason == "CALLER_QUEUE_FULL"
        assert getattr(outcome, "retry_delay_ms", 0) > 0
        rig.sequencer.release()
        assert isinstance(await first, Receipt)

    _run(engine, log_signer, operator_signer, tmp_path, scenario)


def test_losing_the_sequencer_fails_what_waits_as_outcome_unknown_and_the_client_reconnects(
    engine: Engine, log_signer: Ed25519Signer, operator_signer: Ed25519Signer, tmp_path: Path
) -> None:
    async def scenario(rig: Rig) -> None:
        changes: asyncio.Queue[bool] = asyncio.Queue()
        rig.client.connection_listeners.append(changes.put_nowait)
        rig.sequencer.hold()
        waiting = [rig.client.enqueue(rig.policy(n)) for n in range(3)]
        await rig.sequencer.wait_waiting(3)
        rig.server.abort()  # the sequencer's end vanishes mid-flight
        assert await changes.get() is False
        for future in waiting:
            outcome = await future
            assert isinstance(outcome, Unavailable) and outcome.reason == "COMMIT_OUTCOME_UNKNOWN"
            assert "may or may not" in outcome.message and "safe" in outcome.message
        with pytest.raises(Unavailable) as raised:
            rig.client.enqueue(rig.policy(9))
        assert raised.value.reason == "SEQUENCER_UNAVAILABLE"
        # The entries it held still commit; their outcomes, for a gone connection, are dropped.
        rig.sequencer.release()
        # A new server on the same path: the client comes back by itself.
        rig.server = HandoffServer(rig.sequencer, rig.socket_path)
        await rig.server.start()
        assert await changes.get() is True
        assert rig.client.connected
        # Resubmitting the same events is safe: the first receipts.
        receipts = [await rig.client.submit(rig.policy(n)) for n in range(3)]
        assert all(receipt.duplicate for receipt in receipts)
        for receipt in receipts:
            _check_in_log(rig.engine, receipt)

    _run(engine, log_signer, operator_signer, tmp_path, scenario)


def test_stopping_either_end_answers_what_was_handed_off_first(
    engine: Engine, log_signer: Ed25519Signer, operator_signer: Ed25519Signer, tmp_path: Path
) -> None:
    async def scenario(rig: Rig) -> None:
        rig.sequencer.hold()
        first = rig.client.enqueue(rig.policy(1))
        await rig.sequencer.wait_waiting(1)
        client_stopping = asyncio.ensure_future(rig.client.stop())
        await asyncio.sleep(0)  # one turn of the loop: stop() runs up to its wait, refusing more
        with pytest.raises(Unavailable) as raised:
            rig.client.enqueue(rig.policy(2))
        assert raised.value.reason == "SHUTTING_DOWN"
        rig.sequencer.release()
        await client_stopping  # returned once the outcome came
        assert isinstance(first.result(), Receipt)
        # The server's end: a new worker hands off, the server stops, the entry is answered.
        client = SequencerClient(rig.socket_path)
        await client.start()
        rig.sequencer.hold()
        second = client.enqueue(rig.policy(3))
        await rig.sequencer.wait_waiting(1)
        server_stopping = asyncio.ensure_future(rig.server.stop())
        rig.sequencer.release()
        await server_stopping
        outcome = await second
        assert isinstance(outcome, Receipt), outcome
        _check_in_log(rig.engine, outcome)
        await client.stop()

    _run(engine, log_signer, operator_signer, tmp_path, scenario)


def test_a_garbage_frame_closes_only_that_connection(
    engine: Engine, log_signer: Ed25519Signer, operator_signer: Ed25519Signer, tmp_path: Path
) -> None:
    async def scenario(rig: Rig) -> None:
        for garbage in [
            (2**31).to_bytes(4, "big"),  # a length over the limit
            (5).to_bytes(4, "big") + b"\xff\xff\xff\xff\xff",  # not a Frame
        ]:
            reader, writer = await asyncio.open_unix_connection(str(rig.socket_path))
            assert await reader.readexactly(4)  # the greeting (a Committed frame) came
            writer.write(garbage)
            await writer.drain()
            await reader.read()  # the server closes it: read returns at end of stream
            writer.close()
        # A second server on the same path is refused while this one listens.
        with pytest.raises(FileExistsError, match="another sequencer"):
            await HandoffServer(rig.sequencer, rig.socket_path).start()
        # The worker's connection and the sequencer go on.
        assert rig.client.connected
        receipt = await rig.client.submit(rig.policy(1))
        _check_in_log(rig.engine, receipt)

    _run(engine, log_signer, operator_signer, tmp_path, scenario)


def test_an_on_append_that_is_not_a_named_hook_is_refused_before_anything_is_sent(
    engine: Engine, log_signer: Ed25519Signer, operator_signer: Ed25519Signer, tmp_path: Path
) -> None:
    async def scenario(rig: Rig) -> None:
        item = dataclasses.replace(rig.policy(1), on_append=lambda connection, leaf: None)
        with pytest.raises(LedgerError) as raised:
            rig.client.enqueue(item)
        assert raised.value.code == "INTERNAL" and raised.value.reason == "APPEND_HOOK_NOT_NAMED"
        assert rig.client.queue_depth == 0

    _run(engine, log_signer, operator_signer, tmp_path, scenario)


_HOOK_CALLS: list[tuple[int, str]] = []


def _test_hook(connection: Any, leaf_index: int, argument: str) -> None:
    if argument == "refuse":
        raise FailedPrecondition("the test hook refuses", reason="TEST_HOOK_REFUSED")
    _HOOK_CALLS.append((leaf_index, argument))


register_append_hook("tests.handoff", _test_hook)


def test_a_named_hook_runs_in_the_batch_transaction_and_its_refusal_comes_back(
    engine: Engine, log_signer: Ed25519Signer, operator_signer: Ed25519Signer, tmp_path: Path
) -> None:
    async def scenario(rig: Rig) -> None:
        _HOOK_CALLS.clear()
        receipt = await rig.client.submit(
            dataclasses.replace(rig.policy(1), on_append=AppendHook("tests.handoff", "hello"))
        )
        assert [(receipt.leaf_index, "hello")] == _HOOK_CALLS
        before = rig.entries()
        refused = await rig.client.enqueue(
            dataclasses.replace(rig.policy(2), on_append=AppendHook("tests.handoff", "refuse"))
        )
        assert isinstance(refused, LedgerError) and refused.reason == "TEST_HOOK_REFUSED"
        unknown = await rig.client.enqueue(
            dataclasses.replace(rig.policy(3), on_append=AppendHook("no.such.hook", "x"))
        )
        assert isinstance(unknown, LedgerError) and unknown.reason == "APPEND_HOOK_UNKNOWN"
        assert unknown.code == "INTERNAL"
        assert rig.entries() == before

    _run(engine, log_signer, operator_signer, tmp_path, scenario)


def test_the_payments_hook_marks_the_payment_recorded_in_the_entrys_batch_through_the_handoff(
    tmp_path: Path,
) -> None:
    stack = Stack(tmp_path)
    quote = stack.renewals.quote(family_request(1, 2))
    stack.recorder.next = "late"  # the FeeCollected entry is held back: the payment stays
    with pytest.raises(Unavailable) as raised:  # "recording" until it is appended
        stack.renewals.start_payment(quote.quote_id, "key-handoff-1", "simulated")
    payment_id = raised.value.details.metadata["payment_id"]
    [(event, on_append)] = stack.recorder.queued
    assert on_append == AppendHook(MARK_RECORDED, payment_id)  # named: it can cross
    item = dataclasses.replace(pending(stack.authority, event), on_append=on_append)
    other = event.__deepcopy__()
    other.event_id = "fee-other"  # another entry naming the same payment's hook

    async def main() -> tuple[Receipt, Outcome, Receipt]:
        sequencer = Sequencer(stack.appender, stack.clock, SequencerOptions())
        await sequencer.start()
        server = HandoffServer(sequencer, tmp_path / "sequencer.sock")
        await server.start()
        client = SequencerClient(tmp_path / "sequencer.sock")
        await client.start()
        try:
            receipt = await client.submit(item)
            # The payment is recorded now: another entry with its hook is refused, unwritten.
            refused = await client.enqueue(
                dataclasses.replace(pending(stack.authority, other), on_append=on_append)
            )
            again = await client.submit(item)  # a duplicate: the first receipt, hook not rerun
        finally:
            await client.stop()
            await server.stop()
            await sequencer.stop()
        return receipt, refused, again

    receipt, refused, again = asyncio.run(main())
    payment = stack.renewals.get_payment(payment_id)
    assert payment.state == "recorded" and payment.leaf_index == receipt.leaf_index
    assert isinstance(refused, LedgerError) and refused.reason == "PAYMENT_NOT_RECORDING"
    assert again.duplicate and again.leaf_index == receipt.leaf_index
    _check_in_log(stack.engine, receipt)
    with stack.engine.connect() as connection:
        assert (
            connection.execute(
                select(func.count())
                .select_from(log_entries)
                .where(log_entries.c.event_id == "fee-other")
            ).scalar_one()
            == 0
        )


def test_the_refund_hook_records_the_refund_in_the_entrys_batch_through_the_handoff(
    tmp_path: Path,
) -> None:
    stack = Stack(tmp_path)
    quote = stack.renewals.quote(family_request(2, 2))
    payment = stack.renewals.start_payment(quote.quote_id, "key-handoff-2", "simulated")
    assert payment.state == "recorded" and payment.refunded_minor == 0
    stack.recorder.next = "late"  # the FeeRefunded entry is held back
    with pytest.raises(Unavailable):
        stack.renewals.refund(payment.payment_id, 100, "refund-key-1", "test")
    [(event, on_append)] = stack.recorder.queued
    assert isinstance(on_append, AppendHook) and on_append.name == MARK_REFUND_RECORDED
    item = dataclasses.replace(pending(stack.authority, event), on_append=on_append)

    async def main() -> Outcome:
        sequencer = Sequencer(stack.appender, stack.clock, SequencerOptions())
        await sequencer.start()
        server = HandoffServer(sequencer, tmp_path / "sequencer.sock")
        await server.start()
        client = SequencerClient(tmp_path / "sequencer.sock")
        await client.start()
        try:
            return await client.enqueue(item)
        finally:
            await client.stop()
            await server.stop()
            await sequencer.stop()

    receipt = asyncio.run(main())
    assert isinstance(receipt, Receipt), receipt
    assert stack.renewals.get_payment(payment.payment_id).refunded_minor == 100
    with stack.engine.connect() as connection:
        state, leaf_index = connection.execute(
            select(refunds.c.state, refunds.c.leaf_index).where(
                refunds.c.payment_id == payment.payment_id
            )
        ).one()
    assert (state, leaf_index) == ("recorded", receipt.leaf_index)
