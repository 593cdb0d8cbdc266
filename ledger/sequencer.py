"""The sequencer: groups concurrent submissions into batches, one transaction each.

Submissions wait in a bounded queue, one FIFO per caller (:class:`ledger.fair.FairQueue`). A batch
starts with the first waiting submission and takes every other one waiting (those that arrived
while the previous batch committed) or arriving until its oldest submission has waited
``batch_age_ms_max``, up to ``batch_entries_max`` (a batch of submissions that waited that long
already starts at once: under load the next batch begins as soon as the previous commit ends),
taking the callers' submissions round-robin: one caller's backlog never sits in front of another
caller's single event (each caller's own submissions keep their order). The batch is appended by
:class:`ledger.storage.append.Appender` in one transaction on a single dedicated thread: one commit
(one fsync) and one signed checkpoint per batch. A submission's future resolves only after that
commit, so nothing is acknowledged before it is durable. A failed batch fails all its submissions
with UNAVAILABLE, saying whether nothing was written or the commit's outcome is unknown
(:mod:`ledger.storage.faults`); either way a retry is safe because event ids are idempotent."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from ledger import limits, tracing
from ledger.clock import Clock
from ledger.errors import LedgerError, Unavailable
from ledger.fair import FairQueue, Overloaded, caller_key
from ledger.storage.append import Appender, Outcome, PendingEntry, Receipt

__all__ = [
    "BatchReport",
    "Sequencer",
    "SequencerOptions",
    "SequencerPort",
    "Sequencing",
    "receipt_of",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SequencerOptions:
    """How batches are formed."""

    batch_entries_max: int = 512
    """Entries one batch holds at most (one transaction, one checkpoint)."""
    batch_age_ms_max: float = 2.0
    """How long a batch's oldest submission may wait for others to join it (counted from when it
    was queued: one that waited that long behind the previous batch waits no more)."""
    queue_entries_max: int = limits.sequencer_queue_entries_max
    """Submissions that may wait; beyond this the sequencer answers UNAVAILABLE."""
    caller_queue_entries_max: int = limits.caller_queue_entries_max
    """Submissions of one caller that may wait; beyond, RESOURCE_EXHAUSTED with a retry hint."""

    def __post_init__(self) -> None:
        if not 1 <= self.batch_entries_max <= limits.sequencer_batch_entries_max:
            raise ValueError(
                f"batch_entries_max must be in 1..{limits.sequencer_batch_entries_max}"
            )
        if not 0 <= self.batch_age_ms_max <= 1000:
            raise ValueError("batch_age_ms_max must be in 0..1000")
        if self.queue_entries_max < 1 or self.caller_queue_entries_max < 1:
            raise ValueError("queue_entries_max and caller_queue_entries_max must be at least 1")


@dataclass(frozen=True)
class BatchReport:
    """What one batch did, for the batch listeners (the metrics)."""

    entries: int
    """Submissions in the batch (new entries, duplicates and refused ones)."""
    appended: int
    """New entries it added to the log."""
    seconds: float
    """How long its transaction took (from the write thread taking it to the outcome)."""
    committed: bool
    """False when the whole batch failed (every submission answered UNAVAILABLE)."""


_Waiting = tuple[PendingEntry, "asyncio.Future[Outcome]", float]
"""A queued submission, its outcome's future, and when it was queued (the loop's clock)."""


class Sequencing(Protocol):
    """What admission needs of a sequencer: :class:`Sequencer` in the process that writes,
    ``ledger.handoff.client.SequencerClient`` in a worker process (``serve --workers N``)."""

    def enqueue(self, item: PendingEntry) -> asyncio.Future[Outcome]:
        """Queue ``item`` now; the future resolves to its receipt or the error refusing it."""
        ...

    async def submit(self, item: PendingEntry) -> Receipt:
        """Sequence ``item``; return its receipt once durable, or raise why it was refused."""
        ...


async def receipt_of(future: asyncio.Future[Outcome]) -> Receipt:
    """The receipt an enqueued submission resolves to, or raise why it was refused."""
    outcome = await future
    if isinstance(outcome, LedgerError):
        raise outcome
    return outcome


class SequencerPort(Sequencing, Protocol):
    """What admission, reads and watches need of the sequencer: :class:`Sequencer` itself in the
    single process, or a worker's ``ledger.handoff.client.SequencerClient`` (``serve --workers
    N``), which hands entries to the sequencer process and gets the same outcomes back."""

    @property
    def tree_size(self) -> int:
        """The log's size after the last commit this side heard of."""
        ...

    @property
    def queue_depth(self) -> int:
        """Submissions queued (or handed off) and not yet answered."""
        ...

    @property
    def commit_listeners(self) -> list[Callable[[], None]]:
        """Called on the loop after each committed batch."""
        ...

    async def stop(self) -> None:
        """Stop taking submissions (the sequencer commits what it holds)."""
        ...


class Sequencer:
    """Single writer of the log. Start it, submit to it, stop it."""

    def __init__(
        self,
        appender: Appender,
        clock: Clock,
        options: SequencerOptions,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``monotonic``: the seconds clock submissions' ages are counted on (a test's own)."""
        self._appender = appender
        self._clock = clock
        self._options = options
        self._monotonic = monotonic
        self._queue: FairQueue[_Waiting] = FairQueue()
        self._arrived = asyncio.Event()
        self._stopping = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sequencer")
        self._task: asyncio.Task[None] | None = None
        self._accepting = False
        # Tests drive batch boundaries with hold()/release() and wait_waiting(): the runner forms
        # no batch while held, so everything queued meanwhile lands in one batch on release.
        self._open = asyncio.Event()
        self._open.set()
        self._waiting_count = 0
        self._waiting_changed = asyncio.Event()
        self.batches_committed = 0
        self.entries_committed = 0
        self.tree_size = 0
        """The log's size after this sequencer's last commit (read at start)."""
        # Called on the loop after each batch, committed or failed (the metrics).
        self.batch_listeners: list[Callable[[BatchReport], None]] = []
        # Called on the loop after each committed batch (the witness submitter): never awaited,
        # so nothing a listener does can delay the next batch.
        self.commit_listeners: list[Callable[[], None]] = []

    async def start(self) -> None:
        """Initialize the log if needed and start forming batches."""
        loop = asyncio.get_running_loop()
        head = await loop.run_in_executor(
            self._executor, self._appender.initialize, self._clock.now()
        )
        self.tree_size = head.tree_size
        self._accepting = True
        self._task = asyncio.create_task(self._run(), name="sequencer")

    async def submit(self, item: PendingEntry) -> Receipt:
        """Sequence ``item``; return its receipt once durable, or raise why it was refused."""
        return await receipt_of(self.enqueue(item))

    def enqueue(self, item: PendingEntry) -> asyncio.Future[Outcome]:
        """Queue ``item`` now, as the caller's (:data:`ledger.fair.caller_key`) next submission.

        One caller's items are sequenced in the order they are queued; batches take the
        callers' items in turns. Returns the future of its outcome; raises UNAVAILABLE when
        shutting down or full, RESOURCE_EXHAUSTED when this caller has its share queued.
        """
        if not self._accepting:
            raise Unavailable("the sequencer is not accepting submissions", reason="SHUTTING_DOWN")
        if len(self._queue) >= self._options.queue_entries_max:
            raise Unavailable(
                f"the sequencer queue is full ({self._options.queue_entries_max}); retry later",
                reason="OVERLOADED",
            )
        key = caller_key.get()
        if self._queue.count(key) >= self._options.caller_queue_entries_max:
            raise Overloaded(
                f"{self._options.caller_queue_entries_max} submissions of this caller are "
                "waiting to be sequenced; retry after the delay in RetryInfo",
                reason="CALLER_QUEUE_FULL",
            )
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.put(key, (item, future, self._monotonic()))
        self._arrived.set()
        self._waiting_count += 1
        self._waiting_changed.set()
        return future

    @property
    def queue_depth(self) -> int:
        """Submissions queued and not yet in a committing batch (read from any thread)."""
        return self._waiting_count

    def hold(self) -> None:
        """Form no new batch until :meth:`release` (a batch in flight still commits).

        With :meth:`wait_waiting`, this lets a caller decide exactly which submissions share a
        batch, instead of hoping they arrive within ``batch_age_ms_max`` of each other.
        """
        self._open.clear()

    def release(self) -> None:
        """Form batches again: everything queued while held goes into the next batch(es)."""
        self._open.set()

    async def wait_waiting(self, count: int) -> None:
        """Return once at least ``count`` submissions are queued and not yet in a batch."""
        while self._waiting_count < count:
            self._waiting_changed.clear()
            await self._waiting_changed.wait()

    async def stop(self) -> None:
        """Stop accepting, commit what is queued, and stop."""
        self._accepting = False
        self.release()
        if self._task is not None:
            # The runner commits every queued submission (including a batch in flight, which
            # must not be cancelled), then ends.
            self._stopping = True
            self._arrived.set()
            await self._task
            self._task = None
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = await self._next_batch()
            if batch:
                await self._commit(batch)

    async def _next_batch(self) -> tuple[list[_Waiting], bool]:
        """The next batch, and whether the sequencer is stopping with nothing left behind it."""
        while not self._queue:
            if self._stopping:
                return [], True
            self._arrived.clear()
            await self._arrived.wait()
        await self._open.wait()
        batch = [self._queue.take()]
        age = self._options.batch_age_ms_max / 1000
        deadline = batch[0][2] + age
        while len(batch) < self._options.batch_entries_max:
            if self._queue:
                batch.append(self._queue.take())
                # Round-robin may take an older submission (another caller's) after the first.
                deadline = min(deadline, batch[-1][2] + age)
                continue
            remaining = deadline - self._monotonic()
            if self._stopping or remaining <= 0 or not await self._await_arrival(remaining):
                break
        return batch, self._stopping and not self._queue

    async def _await_arrival(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a submission; whether one arrived."""
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _commit(self, batch: list[_Waiting]) -> None:
        self._waiting_count -= len(batch)
        items = [item for item, _, _ in batch]
        # One span per batch, in a trace of its own, linked to each submission's wait
        # (ledger.tracing): spans end before any submission is answered.
        links = tracing.links_from(item.trace_context for item in items)
        with tracing.span("sequencer.commit", {"entries": len(items)}, links) as span:
            outcomes, appended = await self._append(items)
            if span is not None:
                span.set_attribute("appended", appended)
                span.set_attribute("tree_size", self.tree_size)
        for (_, future, _), outcome in zip(batch, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)

    async def _append(self, items: list[PendingEntry]) -> tuple[list[Outcome], int]:
        """Append one batch; its outcomes and how many entries it added to the log."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        committed, appended = False, 0
        try:
            outcomes = await loop.run_in_executor(
                self._executor, self._appender.append_batch, items, self._clock.now()
            )
        except LedgerError as error:
            log.error("batch of %d refused: %s (%s)", len(items), error, error.__cause__)
            outcomes = [error] * len(items)
        except Exception:
            # The appender turns storage faults into answers that say whether anything was
            # written; anything else is a bug, and from here we cannot tell whether it came
            # before or after COMMIT: the honest answer is "unknown", never "not committed".
            log.exception("batch of %d failed; nothing of it was acknowledged", len(items))
            failure = Unavailable(
                "the batch failed: its events may or may not be in the log; "
                "resubmitting the same events is safe (event ids are idempotent)",
                reason="COMMIT_OUTCOME_UNKNOWN",
            )
            outcomes = [failure] * len(items)
        else:
            committed = True
            self.batches_committed += 1
            new = [o for o in outcomes if isinstance(o, Receipt) and not o.duplicate]
            appended = len(new)
            self.entries_committed += appended
            if new:
                self.tree_size = max(self.tree_size, new[-1].tree_size)
            for listener in self.commit_listeners:
                listener()
        report = BatchReport(len(items), appended, time.perf_counter() - started, committed)
        for batch_listener in self.batch_listeners:
            batch_listener(report)
        return outcomes, appended
