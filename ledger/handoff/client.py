"""The worker's end of the hand-off: a drop-in for the Sequencer in a worker process.

:class:`SequencerClient` has the Sequencer's ``enqueue(item) -> Future[Outcome]`` (and
``submit``), so :class:`ledger.service.Ledger`, the servicers and the payments extension do not
change when the sequencer runs in another process (docs/design.md, "Several processes"). Each
entry goes to the sequencer as an ``Admitted`` frame naming the caller it is for
(``ledger.fair.caller_key``); its future resolves when the sequencer's ``Outcome`` comes back.

Losing the connection fails every outstanding future with UNAVAILABLE ``COMMIT_OUTCOME_UNKNOWN``
(a batch may have committed them; resubmitting the same events is safe, event ids are
idempotent), and the client reconnects in the background, waiting 10 ms, then twice as long each
time up to ``limits.handoff_reconnect_delay_ms_max``, until :meth:`SequencerClient.stop`. While
not connected, ``enqueue`` answers UNAVAILABLE ``SEQUENCER_UNAVAILABLE`` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from pathlib import Path

from ledger import limits
from ledger.errors import Unavailable
from ledger.fair import caller_key
from ledger.handoff.wire import (
    FrameError,
    FrameReader,
    FrameSender,
    admitted_of,
    encode_frame,
    outcome_of,
)
from ledger.internal.v1 import handoff_pb2
from ledger.sequencer import receipt_of
from ledger.storage.append import Outcome, PendingEntry, Receipt

__all__ = ["SequencerClient"]

log = logging.getLogger(__name__)

_RECONNECT_DELAY_SECONDS_MIN = 0.01


def _outcome_unknown() -> Unavailable:
    return Unavailable(
        "the connection to the sequencer was lost: the event may or may not be in the log; "
        "resubmitting the same event is safe (it answers the first receipt if it was committed)",
        reason="COMMIT_OUTCOME_UNKNOWN",
    )


class SequencerClient:
    """Drop-in for Sequencer on the worker side (what Ledger and the servicers use)."""

    def __init__(
        self, socket_path: Path, *, in_flight_max: int = limits.handoff_in_flight_max
    ) -> None:
        self._socket_path = socket_path
        self._in_flight_max = in_flight_max
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Outcome]] = {}
        self._sender: FrameSender | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._connected = False
        self._connected_once = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.tree_size = 0
        """The log's size after the last commit this worker heard of."""
        self.commit_listeners: list[Callable[[], None]] = []
        """Called on the loop after each commit the sequencer announces (and once on connecting,
        with the tree size then): wake watches, route reads."""
        self.keys_listeners: list[Callable[[], None]] = []
        """Called on the loop, before the commit listeners, when a commit may have changed the
        key registry (and on each connection, since changes may have been missed): the worker's
        ``KeyCache.forget``."""
        self.connection_listeners: list[Callable[[bool], None]] = []
        """Called on the loop with the new value of :attr:`connected` when it changes."""

    @property
    def connected(self) -> bool:
        """Whether hand-offs can be sent now."""
        return self._connected

    @property
    def queue_depth(self) -> int:
        """Hand-offs awaiting an outcome."""
        return len(self._waiting)

    async def start(self, timeout: float = 30.0) -> None:
        """Connect to the sequencer, retrying until ``timeout`` seconds have passed (then
        UNAVAILABLE ``SEQUENCER_UNAVAILABLE``); after that, reconnect whenever it is lost."""
        self._task = asyncio.create_task(self._run(), name="sequencer-client")
        try:
            async with asyncio.timeout(timeout):
                await self._connected_once.wait()
        except TimeoutError:
            await self.stop()
            raise Unavailable(
                f"no sequencer accepted a connection on {self._socket_path} within {timeout} s",
                reason="SEQUENCER_UNAVAILABLE",
            ) from None

    async def submit(self, item: PendingEntry) -> Receipt:
        """Sequence ``item``; return its receipt once durable, or raise why it was refused."""
        return await receipt_of(self.enqueue(item))

    def enqueue(self, item: PendingEntry) -> asyncio.Future[Outcome]:
        """Hand ``item`` to the sequencer now, as the caller's (``ledger.fair.caller_key``).

        Returns the future of its outcome. Raises UNAVAILABLE ``SHUTTING_DOWN`` once stopping,
        ``SEQUENCER_UNAVAILABLE`` when not connected, ``OVERLOADED`` when ``in_flight_max``
        hand-offs await outcomes, and INTERNAL when ``item.on_append`` is not a named
        AppendHook (a closure cannot cross processes).
        """
        if self._stopping:
            raise Unavailable("this worker is shutting down", reason="SHUTTING_DOWN")
        if not self._connected or self._sender is None:
            raise Unavailable(
                "the sequencer is not reachable from this worker; retry later",
                reason="SEQUENCER_UNAVAILABLE",
            )
        if len(self._waiting) >= self._in_flight_max:
            raise Unavailable(
                f"{self._in_flight_max} submissions of this worker are waiting for the "
                "sequencer; retry later",
                reason="OVERLOADED",
            )
        handoff_id = next(self._ids)
        data = encode_frame(
            handoff_pb2.Frame(admitted=admitted_of(item, handoff_id, caller_key.get()))
        )
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting[handoff_id] = future
        self._sender.send(data)
        return future

    async def stop(self) -> None:
        """Send nothing more; wait for the outcomes under way (they come, or the connection
        is lost and they fail), then close."""
        self._stopping = True
        if self._waiting:
            await asyncio.wait(list(self._waiting.values()))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = _RECONNECT_DELAY_SECONDS_MIN
        delay_max = limits.handoff_reconnect_delay_ms_max / 1000
        while not self._stopping:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self._socket_path))
            except OSError as error:
                log.debug("sequencer not reachable on %s: %s", self._socket_path, error)
                await asyncio.sleep(delay)
                delay = min(2 * delay, delay_max)
                continue
            delay = _RECONNECT_DELAY_SECONDS_MIN
            try:
                await self._read(reader, writer)
            finally:
                self._lost(writer)

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            frames = FrameReader(reader)
            while batch := await frames.frames():
                for frame in batch:
                    kind = frame.WhichOneof("body")
                    if kind == "outcome":
                        future = self._waiting.pop(frame.outcome.id, None)
                        if future is not None and not future.done():  # the caller may have left
                            future.set_result(outcome_of(frame.outcome))
                    elif kind == "committed":
                        self._committed(frame.committed, writer)
                    else:
                        raise FrameError(f"the sequencer sent a {kind} frame")
        except FrameError as error:
            log.error("hand-off connection to the sequencer closed: %s", error)
        except ConnectionError as error:
            log.warning("hand-off connection to the sequencer lost: %s", error)
        else:
            if not self._stopping:
                log.warning("the sequencer closed the hand-off connection")

    def _committed(self, committed: handoff_pb2.Committed, writer: asyncio.StreamWriter) -> None:
        self.tree_size = max(self.tree_size, committed.tree_size)
        if committed.keys_changed:
            for keys_listener in self.keys_listeners:
                keys_listener()
        if not self._connected:  # the greeting: the connection is usable from now on
            self._writer = writer
            self._sender = FrameSender(writer)
            self._set_connected(True)
            self._connected_once.set()
        for listener in self.commit_listeners:
            listener()

    def _lost(self, writer: asyncio.StreamWriter) -> None:
        if self._sender is not None:
            self._sender.close()
        else:
            writer.close()
        self._sender = None
        self._writer = None
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_result(_outcome_unknown())
        if self._connected:
            self._set_connected(False)

    def _set_connected(self, connected: bool) -> None:
        self._connected = connected
        for listener in self.connection_listeners:
            listener(connected)
