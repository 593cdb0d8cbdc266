"""Fair sharing between callers (ledger.fair): round-robin queues, the sequencer's batches and
the read pool take callers in turns; each caller's share is bounded with a retry hint."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

import pytest

from ledger.clock import FixedClock
from ledger.fair import FairQueue, Overloaded, ReadPool, caller_key
from ledger.rpc.status import status_of
from ledger.sequencer import Sequencer, SequencerOptions
from ledger.service import KeyCache
from tests.unit.test_sequencer import RecordingAppender, _item

NOW = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)


def test_a_fair_queue_takes_keys_in_turns_and_keeps_each_keys_order() -> None:
    queue: FairQueue[str] = FairQueue()
    for number in range(4):
        queue.put("busy", f"busy-{number}")
    queue.put("calm", "calm-0")
    queue.put("other", "other-0")
    queue.put("other", "other-1")
    assert len(queue) == 7 and queue.count("busy") == 4 and queue.count("none") == 0
    taken = [queue.take() for _ in range(7)]
    assert taken == ["busy-0", "calm-0", "other-0", "busy-1", "other-1", "busy-2", "busy-3"]
    with pytest.raises(IndexError):
        queue.take()


async def _submit_as(sequencer: Sequencer, caller: str, number: int) -> object:
    caller_key.set(caller)  # a task of its own: its own context, as a call has
    return await sequencer.submit(_item(number))


def test_one_callers_backlog_does_not_sit_in_front_of_another_callers_event() -> None:
    """A caller with 40 submissions waiting and another with one: the other's is in the first
    batch of 8, not behind the backlog's five batches."""

    async def scenario() -> tuple[list[int], int]:
        appender = RecordingAppender()
        options = SequencerOptions(batch_entries_max=8, batch_age_ms_max=0)
        sequencer = Sequencer(appender, FixedClock(NOW), options)  # type: ignore[arg-type]
        await sequencer.start()
        sequencer.hold()
        backlog = [asyncio.create_task(_submit_as(sequencer, "busy", n)) for n in range(40)]
        await sequencer.wait_waiting(40)
        single = asyncio.create_task(_submit_as(sequencer, "calm", 1000))
        await sequencer.wait_waiting(41)
        sequencer.release()
        receipts = await asyncio.gather(*backlog)
        calm = await single
        await sequencer.stop()
        return [r.leaf_index for r in receipts], calm.leaf_index  # type: ignore[attr-defined]

    busy, calm = asyncio.run(scenario())
    assert calm < 8  # in the first batch
    assert busy == sorted(busy)  # the busy caller's own events keep their order


def test_a_caller_over_its_queue_share_is_refused_with_a_retry_hint_others_are_not() -> None:
    async def scenario() -> tuple[list[object], object, RecordingAppender]:
        appender = RecordingAppender()
        options = SequencerOptions(caller_queue_entries_max=3)
        sequencer = Sequencer(appender, FixedClock(NOW), options)  # type: ignore[arg-type]
        await sequencer.start()
        sequencer.hold()
        busy = [asyncio.create_task(_submit_as(sequencer, "busy", n)) for n in range(5)]
        calm = asyncio.create_task(_submit_as(sequencer, "calm", 100))
        await sequencer.wait_waiting(4)
        sequencer.release()
        results = list(await asyncio.gather(*busy, return_exceptions=True))
        calm_result = await calm
        await sequencer.stop()
        return results, calm_result, appender

    results, calm, appender = asyncio.run(scenario())
    refused = [r for r in results if isinstance(r, Overloaded)]
    assert len(refused) == 2 and all(r.reason == "CALLER_QUEUE_FULL" for r in refused)
    assert sum(appender.batches) == 4  # three of the busy caller's and the calm one: no more
    assert not isinstance(calm, BaseException)
    status = status_of(refused[0])
    assert status.code == 8  # RESOURCE_EXHAUSTED
    assert any("RetryInfo" in detail.type_url for detail in status.details)


def test_the_read_pool_takes_callers_in_turns_and_bounds_each_callers_queue() -> None:
    async def scenario() -> tuple[list[str], list[object]]:
        pool = ReadPool(threads=1, queue_max=100, caller_queue_max=4)
        gate, running = threading.Event(), threading.Event()
        order: list[str] = []

        def blocked() -> str:
            running.set()
            gate.wait(timeout=60)
            return "first"

        async def read(caller: str, label: str) -> str:
            caller_key.set(caller)

            def work() -> str:
                order.append(label)
                return label

            return await pool.run(work)

        caller_key.set("busy")
        first = asyncio.create_task(pool.run(blocked))
        await asyncio.to_thread(running.wait, 60)  # it holds the one read thread
        busy = [asyncio.create_task(read("busy", f"busy-{n}")) for n in range(6)]
        calm = asyncio.create_task(read("calm", "calm"))
        results = await asyncio.gather(*busy[4:], return_exceptions=True)  # refused at once
        gate.set()
        await asyncio.gather(first, *busy[:4], calm)
        pool.shutdown()
        return order, list(results)

    order, refused = asyncio.run(scenario())
    assert all(isinstance(r, Overloaded) for r in refused)
    assert [r.reason for r in refused] == ["CALLER_READS_QUEUED_MAX"] * 2  # type: ignore[attr-defined]
    assert order == ["busy-0", "calm", "busy-1", "busy-2", "busy-3"]


def test_a_read_that_fails_or_whose_caller_left_answers_and_frees_its_thread() -> None:
    """A read's exception reaches its caller as raised; a caller that left while its read ran
    gets nothing, and in both cases the one read thread is free for the reads waiting."""

    class Refused(ValueError):
        pass

    async def scenario() -> tuple[BaseException | None, list[str], str, str]:
        pool = ReadPool(threads=1, queue_max=10, caller_queue_max=10)
        gate, running = threading.Event(), threading.Event()
        ran: list[str] = []

        def fails() -> str:
            raise Refused("no such household")

        def blocked() -> str:
            running.set()
            gate.wait(timeout=60)
            ran.append("blocked")
            return "blocked"

        def after(label: str) -> str:
            ran.append(label)
            return label

        failed: BaseException | None = None
        try:
            await pool.run(fails)
        except Refused as error:
            failed = error
        leaving = asyncio.create_task(pool.run(blocked))
        await asyncio.to_thread(running.wait, 60)  # it holds the one read thread
        waiting = asyncio.create_task(pool.run(lambda: after("waited")))
        await asyncio.sleep(0)
        leaving.cancel()  # its caller leaves while the read runs
        gate.set()
        waited = await waiting
        last = await pool.run(lambda: after("last"))
        pool.shutdown()
        return failed, ran, waited, last

    failed, ran, waited, last = asyncio.run(scenario())
    assert isinstance(failed, Refused) and str(failed) == "no such household"
    assert ran == ["blocked", "waited", "last"]
    assert (waited, last) == ("waited", "last")


def test_a_read_that_waited_runs_in_its_own_calls_context() -> None:
    """A waiting read is started from another read's completion; it must still see its own
    call's context variables (caller, trace), not those of the call that freed the thread."""

    async def scenario() -> list[tuple[str, str]]:
        pool = ReadPool(threads=1, queue_max=100, caller_queue_max=100)
        gate, running = threading.Event(), threading.Event()
        seen: list[tuple[str, str]] = []

        def blocked() -> str:
            running.set()
            gate.wait(timeout=60)
            seen.append(("first", caller_key.get()))
            return "first"

        async def read(caller: str) -> str:
            caller_key.set(caller)

            def work() -> str:
                seen.append((caller, caller_key.get()))
                return caller

            return await pool.run(work)

        async def first_read() -> str:
            caller_key.set("first")
            return await pool.run(blocked)

        first = asyncio.create_task(first_read())
        await asyncio.to_thread(running.wait, 60)  # it holds the one read thread
        waiting = [asyncio.create_task(read(name)) for name in ("second", "third")]
        while len(pool._waiting) < 2:  # both queued behind the first
            await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, *waiting)
        pool.shutdown()
        return seen

    assert asyncio.run(scenario()) == [
        ("first", "first"),
        ("second", "second"),
        ("third", "third"),
    ]


class _CountingStore:
    """Stands in for the key registry: counts lookups, answers once released."""

    def __init__(self) -> None:
        self.lookups = 0
        self.release = threading.Event()

    def get(self, key_id: str) -> object:
        self.lookups += 1
        self.release.wait(timeout=60)
        return None if key_id == "unknown" else ("key", key_id)


def test_concurrent_misses_of_one_key_share_one_registry_lookup() -> None:
    """A busy caller's thousand submissions, when its key leaves the cache, queue one lookup
    in the shared executor, not a thousand in front of everyone else's."""

    async def scenario() -> tuple[list[object], int, int]:
        store = _CountingStore()
        cache = KeyCache(store)  # type: ignore[arg-type]
        waiting = [asyncio.create_task(cache.get("k1")) for _ in range(100)]
        unknown = [asyncio.create_task(cache.get("unknown")) for _ in range(10)]
        await asyncio.to_thread(lambda: None)  # every task has asked (they ran before this)
        store.release.set()
        keys = await asyncio.gather(*waiting)
        assert await asyncio.gather(*unknown) == [None] * 10
        lookups = store.lookups
        assert await cache.get("k1") == ("key", "k1")  # cached now: no new lookup
        return list(keys), lookups, store.lookups

    keys, lookups, after = asyncio.run(scenario())
    assert keys == [("key", "k1")] * 100
    assert lookups == 2 and after == 2  # one per key id, however many asked
