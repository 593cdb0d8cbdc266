"""The sequencer's batching and failure semantics, with a recording appender (no database)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Sequence

import pytest

from ledger.clock import FixedClock
from ledger.dsse import Envelope
from ledger.errors import LedgerError, Unavailable
from ledger.sequencer import BatchReport, Sequencer, SequencerOptions
from ledger.storage.append import PendingEntry, Receipt
from ledger.storage.log_store import StoredCheckpoint

NOW = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)


class RecordingAppender:
    """Stands in for the storage appender: records batches, can fail."""

    def __init__(self, *, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.fail = fail
        self.size = 0
        self.lock = threading.Lock()

    def initialize(self, now: dt.datetime) -> StoredCheckpoint:
        return StoredCheckpoint(self.size, b"", b"")

    def append_batch(
        self, items: Sequence[PendingEntry], now: dt.datetime
    ) -> list[Receipt | LedgerError]:
        if self.fail:
            raise OSError("disk full")
        with self.lock:
            self.batches.append(len(items))
            first = self.size
            self.size += len(items)
        return [
            Receipt(item.event_id, first + offset, b"", b"", b"", self.size, (), False)
            for offset, item in enumerate(items)
        ]


def _item(number: int) -> PendingEntry:
    return PendingEntry(Envelope("t", b"p", ()), "ins", f"e{number}", "k")


async def _run(appender: RecordingAppender, options: SequencerOptions, count: int) -> list[object]:
    sequencer = Sequencer(appender, FixedClock(NOW), options)  # type: ignore[arg-type]
    await sequencer.start()
    results = await asyncio.gather(
        *(sequencer.submit(_item(n)) for n in range(count)), return_exceptions=True
    )
    await sequencer.stop()
    return list(results)


async def _run_held(
    appender: RecordingAppender, options: SequencerOptions, count: int, waiting: int = 0
) -> list[object]:
    """Submit ``count`` at once while the sequencer is held (``waiting`` of them are queued,
    all by default), then release it."""
    sequencer = Sequencer(appender, FixedClock(NOW), options)  # type: ignore[arg-type]
    await sequencer.start()
    sequencer.hold()
    submissions = asyncio.gather(
        *(sequencer.submit(_item(n)) for n in range(count)), return_exceptions=True
    )
    await sequencer.wait_waiting(waiting or count)
    assert appender.batches == []  # held: nothing was committed
    sequencer.release()
    results = await submissions
    await sequencer.stop()
    return list(results)


def test_concurrent_submissions_are_grouped_and_capped() -> None:
    appender = RecordingAppender()
    results = asyncio.run(
        _run_held(appender, SequencerOptions(batch_entries_max=16, batch_age_ms_max=0), 100)
    )
    assert sorted(r.leaf_index for r in results) == list(range(100))  # type: ignore[union-attr]
    # Everything was queued before the release: full batches of 16, then the remainder.
    assert appender.batches == [16] * 6 + [4]


def test_a_held_sequencer_still_stops_and_commits_what_waits() -> None:
    async def scenario() -> list[object]:
        appender = RecordingAppender()
        sequencer = Sequencer(appender, FixedClock(NOW), SequencerOptions())  # type: ignore[arg-type]
        await sequencer.start()
        sequencer.hold()
        pending = asyncio.gather(*(sequencer.submit(_item(n)) for n in range(3)))
        await sequencer.wait_waiting(3)
        await sequencer.stop()  # releases the hold: what waits is committed, in one batch
        assert appender.batches == [3]
        return list(await pending)

    assert [r.leaf_index for r in asyncio.run(scenario())] == [0, 1, 2]  # type: ignore[attr-defined]


def test_batch_listeners_see_each_batch_and_the_tree_size_and_queue_depth_follow() -> None:
    async def scenario() -> tuple[list[BatchReport], list[int], int]:
        appender = RecordingAppender()
        appender.size = 7  # the log already holds 7 entries
        sequencer = Sequencer(appender, FixedClock(NOW), SequencerOptions(batch_entries_max=4))  # type: ignore[arg-type]
        reports: list[BatchReport] = []
        sequencer.batch_listeners.append(reports.append)
        await sequencer.start()
        assert sequencer.tree_size == 7 and sequencer.queue_depth == 0
        sequencer.hold()
        pending = asyncio.gather(*(sequencer.submit(_item(n)) for n in range(6)))
        await sequencer.wait_waiting(6)
        depth_held = sequencer.queue_depth
        sequencer.release()
        await pending
        after = (sequencer.tree_size, sequencer.queue_depth)
        await sequencer.stop()
        return reports, [depth_held, *after], sequencer.entries_committed

    reports, (held, size, depth), committed = asyncio.run(scenario())
    assert held == 6 and size == 13 and depth == 0 and committed == 6
    assert [(r.entries, r.appended, r.committed) for r in reports] == [(4, 4, True), (2, 2, True)]
    assert all(r.seconds >= 0 for r in reports)


def test_a_failed_batch_is_reported_failed_with_nothing_appended() -> None:
    async def scenario() -> list[BatchReport]:
        sequencer = Sequencer(RecordingAppender(fail=True), FixedClock(NOW), SequencerOptions())  # type: ignore[arg-type]
        reports: list[BatchReport] = []
        sequencer.batch_listeners.append(reports.append)
        await sequencer.start()
        with pytest.raises(Unavailable):
            await sequencer.submit(_item(0))
        await sequencer.stop()
        return reports

    reports = asyncio.run(scenario())
    assert [(r.entries, r.appended, r.committed) for r in reports] == [(1, 0, False)]


def test_a_failed_batch_acknowledges_nothing_and_says_its_outcome_is_unknown() -> None:
    # An unexpected failure may have come before or after COMMIT: never claim "not committed".
    results = asyncio.run(_run(RecordingAppender(fail=True), SequencerOptions(), 10))
    assert all(
        isinstance(result, Unavailable) and result.reason == "COMMIT_OUTCOME_UNKNOWN"
        for result in results
    )


def test_a_full_queue_answers_unavailable() -> None:
    # Held, the sequencer takes nothing from its queue: exactly two submissions fit.
    appender = RecordingAppender()
    options = SequencerOptions(batch_entries_max=1, batch_age_ms_max=0, queue_entries_max=2)
    results = asyncio.run(_run_held(appender, options, 10, waiting=2))
    overloaded = [r for r in results if isinstance(r, Unavailable) and r.reason == "OVERLOADED"]
    assert len(overloaded) == 8 and appender.batches == [1, 1]


def test_stop_commits_what_is_queued_then_refuses() -> None:
    async def scenario() -> tuple[list[object], object]:
        appender = RecordingAppender()
        sequencer = Sequencer(appender, FixedClock(NOW), SequencerOptions(batch_entries_max=2))  # type: ignore[arg-type]
        await sequencer.start()
        sequencer.hold()
        pending = [asyncio.create_task(sequencer.submit(_item(n))) for n in range(6)]
        await sequencer.wait_waiting(6)  # all six are queued (the event, not a guess of time)
        await sequencer.stop()
        late = await asyncio.gather(sequencer.submit(_item(99)), return_exceptions=True)
        return list(await asyncio.gather(*pending)), late[0]

    done, late = asyncio.run(scenario())
    assert len(done) == 6
    assert isinstance(late, Unavailable) and late.reason == "SHUTTING_DOWN"


@pytest.mark.parametrize(
    "options",
    [
        {"batch_entries_max": 0},
        {"batch_entries_max": 10**6},
        {"batch_age_ms_max": -1},
        {"queue_entries_max": 0},
    ],
)
def test_options_are_bounded(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        SequencerOptions(**options)  # type: ignore[arg-type]


class _Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _held_batch_after(waited: float) -> tuple[list[int], list[float]]:
    """Queue 3 submissions on a held sequencer (batch age 1 s), let ``waited`` seconds pass on
    its clock, release it; the batches formed and every wait for more submissions (recorded
    instead of waited: nothing here depends on time)."""
    appender, ticks, waits = RecordingAppender(), _Ticks(), []
    sequencer = Sequencer(
        appender,  # type: ignore[arg-type]
        FixedClock(NOW),
        SequencerOptions(batch_age_ms_max=1000),
        monotonic=ticks,
    )

    async def record(timeout: float) -> bool:
        waits.append(timeout)
        return False  # nothing arrived

    sequencer._await_arrival = record  # type: ignore[method-assign]
    await sequencer.start()
    sequencer.hold()
    pending = asyncio.gather(*(sequencer.submit(_item(n)) for n in range(3)))
    await sequencer.wait_waiting(3)
    ticks.now += waited
    sequencer.release()
    await pending
    await sequencer.stop()
    return appender.batches, waits


def test_a_batch_whose_submissions_waited_the_batch_age_starts_at_once() -> None:
    """Submissions that waited behind the previous batch (here: a hold) for the batch age are
    committed without waiting for more: under load a batch starts when the last one ends."""
    assert asyncio.run(_held_batch_after(waited=5.0)) == ([3], [])


def test_a_batch_waits_only_what_is_left_of_its_oldest_submissions_age() -> None:
    batches, waits = asyncio.run(_held_batch_after(waited=0.25))
    assert batches == [3]
    assert waits == [pytest.approx(0.75)]
