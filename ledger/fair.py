"""Fair sharing between callers: queues served round-robin across callers, and a read pool.

One caller's backlog must not sit in front of another caller's single request. Both the
sequencer (writes) and :class:`ReadPool` (servicer reads) keep one FIFO per caller and take from
the callers in turn, so a caller with one request waits behind at most one request of each other
caller, however many the others have queued.

The caller of the call under way is :data:`caller_key` (a context variable the RPC layer sets:
the caller's SPIFFE ID, or the peer address of an unauthenticated call); work outside a call
shares the key ``""``.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from typing import Generic, TypeVar

from ledger import limits
from ledger.errors import ResourceExhausted

__all__ = ["CallerSlots", "FairQueue", "Overloaded", "ReadPool", "caller_key"]

_T = TypeVar("_T")

caller_key: contextvars.ContextVar[str] = contextvars.ContextVar(
    "policy_ledger_caller_key", default=""
)
"""Who the work under way is for (set per call by ``ledger.rpc.fairness``)."""


class Overloaded(ResourceExhausted):
    """A caller is over its share (or the server over its bound): retry after the delay."""

    def __init__(
        self, message: str, *, reason: str, retry_delay_ms: int = limits.retry_after_ms
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_delay_ms = retry_delay_ms


class FairQueue(Generic[_T]):
    """Items queued per key (FIFO within a key), taken round-robin across keys."""

    def __init__(self) -> None:
        self._queues: OrderedDict[str, deque[_T]] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def count(self, key: str) -> int:
        """Items queued under ``key``."""
        queue = self._queues.get(key)
        return 0 if queue is None else len(queue)

    def put(self, key: str, item: _T) -> None:
        """Queue ``item`` behind ``key``'s others."""
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append(item)
        self._size += 1

    def take(self) -> _T:
        """The oldest item of the key whose turn it is (IndexError when empty)."""
        if not self._queues:
            raise IndexError("take from an empty FairQueue")
        key, queue = next(iter(self._queues.items()))
        item = queue.popleft()
        self._size -= 1
        if queue:
            self._queues.move_to_end(key)  # the key's next item waits for the others' turns
        else:
            del self._queues[key]
        return item


_Job = tuple[Callable[[], object], "asyncio.Future[object]", contextvars.Context]
"""A waiting read: its function, its answer's future, and its own call's context."""


class ReadPool:
    """Runs blocking reads on threads of their own, taking waiting reads round-robin by caller.

    Separate from the sequencer's writer thread and from the loop's default executor, so reads
    can neither starve the writer nor the small lookups of submissions. Beyond ``queue_max``
    waiting reads (or ``caller_queue_max`` of one caller's) a read is refused
    :class:`Overloaded` (RESOURCE_EXHAUSTED with a retry hint) before any work is done.
    """

    def __init__(
        self,
        threads: int = limits.read_threads_max,
        queue_max: int = limits.read_queue_max,
        caller_queue_max: int = limits.caller_read_queue_max,
    ) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="read")
        self._threads = threads
        self._queue_max = queue_max
        self._caller_queue_max = caller_queue_max
        self._running = 0
        self._waiting: FairQueue[_Job] = FairQueue()

    async def run(self, function: Callable[[], _T]) -> _T:
        """``function()`` on a read thread, when the caller's turn comes."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        key = caller_key.get()
        # The read runs in a copy of its own call's context (caller, trace), taken now: a read
        # that waits is started later from another call's completion.
        context = contextvars.copy_context()
        if self._running < self._threads and not len(self._waiting):
            self._start(function, future, context)
        else:
            if len(self._waiting) >= self._queue_max:
                raise Overloaded(
                    f"{self._queue_max} reads are waiting; retry after the delay in RetryInfo",
                    reason="READS_QUEUED_MAX",
                )
            if self._waiting.count(key) >= self._caller_queue_max:
                raise Overloaded(
                    f"{self._caller_queue_max} reads of this caller are waiting; retry after "
                    "the delay in RetryInfo",
                    reason="CALLER_READS_QUEUED_MAX",
                )
            self._waiting.put(key, (function, future, context))
        return await future  # type: ignore[return-value]

    def _start(
        self,
        function: Callable[[], object],
        future: asyncio.Future[object],
        context: contextvars.Context,
    ) -> None:
        self._running += 1
        loop = asyncio.get_running_loop()

        def work() -> None:
            # The answer goes back to the loop in one callback (no asyncio wrapper of the
            # executor's future, whose chaining costs the loop two more callbacks a read).
            try:
                result = context.run(function)
            except BaseException as error:  # handed to the caller, as the executor would
                answer: tuple[object, BaseException | None] = (None, error)
            else:
                answer = (result, None)
            with suppress(RuntimeError):  # the loop closed while the read ran: no one waits
                loop.call_soon_threadsafe(self._finished, future, *answer)

        self._executor.submit(work)

    def _finished(
        self, future: asyncio.Future[object], result: object, error: BaseException | None
    ) -> None:
        self._running -= 1
        if not future.done():
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
        while self._running < self._threads and len(self._waiting):
            function, waiting, context = self._waiting.take()
            if not waiting.done():  # a caller that left while waiting gives its turn up
                self._start(function, waiting, context)

    def shutdown(self) -> None:
        """Stop the threads (reads under way finish)."""
        self._executor.shutdown(wait=False)


class CallerSlots:
    """At most ``per_caller`` pieces of one caller's work under way at once; the rest wait.

    Admitting an event (verifying its signature, parsing, validating) runs on the server's one
    event loop: a caller with thousands of events under way would otherwise have thousands of
    steps ready in front of another caller's one. Waiting here is back-pressure (a stream stops
    being read), not a refusal.
    """

    def __init__(self, per_caller: int = limits.caller_admissions_max) -> None:
        self._per_caller = per_caller
        self._slots: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the current caller's slots (:data:`caller_key`) for the block."""
        key = caller_key.get()
        entry = self._slots.get(key)
        if entry is None:
            entry = self._slots[key] = (asyncio.Semaphore(self._per_caller), [0])
        semaphore, users = entry
        users[0] += 1
        try:
            async with semaphore:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._slots[key]  # no state is kept for a caller with nothing under way
