"""The sequencer process's end of the hand-off: workers' admitted entries into the Sequencer.

Each worker keeps one connection on a Unix socket (docs/design.md, "Several processes"). Its
``Admitted`` frames are re-parsed and queued on the :class:`ledger.sequencer.Sequencer` in the
order they arrive, as the caller the frame names (``ledger.fair.caller_key``), so the sequencer's
per-caller fairness sees the callers of every worker. Each entry's outcome goes back on the
connection it came from; what ``Sequencer.enqueue`` refuses at once (queue full, caller's share
queued, shutting down) goes back the same way. After each committed batch every connection gets
``Committed{tree_size, keys_changed}``, before that batch's outcomes; a new connection gets one
at once (so a worker knows the tree size, and drops cached keys it may have missed).

A worker that vanishes mid-write is that connection's end: outcomes for it are dropped (its
callers see UNAVAILABLE from the worker and retry; event ids are idempotent). A frame over the
size limit or unparsable closes that connection, logged; the others and the sequencer go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from pathlib import Path

from ledger.errors import LedgerError, Unavailable
from ledger.fair import caller_key
from ledger.handoff.wire import (
    FrameError,
    FrameReader,
    FrameSender,
    encode_frame,
    outcome_frame,
    pending_entry_of,
)
from ledger.internal.v1 import handoff_pb2
from ledger.sequencer import Sequencer
from ledger.storage.append import Outcome
from ledger.storage.append_hooks import load_append_hooks

__all__ = ["KEY_EVENT_KINDS", "HandoffServer"]

log = logging.getLogger(__name__)

KEY_EVENT_KINDS = frozenset({"key_registered", "key_revoked"})
"""Event bodies that change the key registry (workers' KeyCache must not serve the old one)."""


class _Connection:
    """One worker's connection: its writer and the hand-offs it awaits."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.sender = FrameSender(writer)
        self.writer = writer
        self.waiting: set[asyncio.Future[Outcome]] = set()
        self.open = True
        self.reading = asyncio.current_task()

    def send(self, frame: handoff_pb2.Frame) -> None:
        if self.open:
            self.sender.send(encode_frame(frame))

    def close(self) -> None:
        if self.open:
            self.open = False
            self.sender.close()


class HandoffServer:
    """Listens on ``socket_path`` and feeds the workers' entries to ``sequencer``."""

    def __init__(self, sequencer: Sequencer, socket_path: Path) -> None:
        self._sequencer = sequencer
        self._socket_path = socket_path
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._stopping = False
        # Key events queued and not yet answered. A commit listener cannot see which entries its
        # batch held, but the batch's own entries are still unanswered when it runs (outcomes
        # are set after the listeners): so "any key event unanswered" is true for the batch that
        # commits one, and at worst also for the batch before it (a harmless extra invalidation).
        self._key_events_waiting = 0

    @property
    def connections(self) -> int:
        """Workers connected now (for the metrics)."""
        return len(self._connections)

    async def start(self) -> None:
        """Listen on the socket (replacing the socket file a dead sequencer left behind)."""
        load_append_hooks()
        path = self._socket_path
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise FileExistsError(f"{path} exists and is not a socket: refusing to replace it")
            if await _answers(path):
                raise FileExistsError(f"another sequencer is listening on {path}")
            path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(path))
        os.chmod(path, 0o600)  # the directory is private too; the socket alone says so as well
        self._sequencer.commit_listeners.append(self._committed)

    async def stop(self) -> None:
        """Stop accepting connections and frames; answer every entry already handed off (the
        sequencer must still be running), then close the connections."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            if connection.reading is not None:
                connection.reading.cancel()
        waiting = [future for c in self._connections for future in c.waiting]
        if waiting:
            # Their done callbacks (which send the outcomes) run before this wakes up.
            await asyncio.wait(waiting)
        self._close_all()  # writes what is queued, then closes

    def abort(self) -> None:
        """Close every connection now, answering nothing (what a crashed sequencer does to its
        workers; the tests use it). Entries already queued are still committed."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        self._close_all()

    def _close_all(self) -> None:
        for connection in list(self._connections):
            connection.close()
            if connection.reading is not None:
                connection.reading.cancel()
        self._connections.clear()
        if self._committed in self._sequencer.commit_listeners:
            self._sequencer.commit_listeners.remove(self._committed)
        with contextlib.suppress(FileNotFoundError):
            self._socket_path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._stopping:
            writer.close()
            return
        connection = _Connection(writer)
        self._connections.add(connection)
        # The greeting: the tree size now, and "drop cached keys" (changes may have committed
        # while this worker was not connected).
        connection.send(self._committed_frame(keys_changed=True))
        try:
            frames = FrameReader(reader)
            while batch := await frames.frames():
                for frame in batch:
                    if frame.WhichOneof("body") != "admitted":
                        raise FrameError(f"a worker sent a {frame.WhichOneof('body')} frame")
                    self._admit(connection, frame.admitted)
        except FrameError as error:
            log.error("hand-off connection closed: %s", error)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the worker went away, or we are stopping: stop() answers what waits
        finally:
            if not self._stopping:
                self._connections.discard(connection)
                connection.close()

    def _admit(self, connection: _Connection, admitted: handoff_pb2.Admitted) -> None:
        handoff_id = admitted.id
        try:
            item = pending_entry_of(admitted)
            token = caller_key.set(admitted.caller)
            try:
                future = self._sequencer.enqueue(item)
            finally:
                caller_key.reset(token)
        except LedgerError as error:
            connection.send(outcome_frame(handoff_id, error))
            return
        is_key_event = item.decoded().WhichOneof("body") in KEY_EVENT_KINDS
        if is_key_event:
            self._key_events_waiting += 1
        connection.waiting.add(future)
        future.add_done_callback(
            lambda done: self._answer(connection, handoff_id, done, is_key_event=is_key_event)
        )

    def _answer(
        self,
        connection: _Connection,
        handoff_id: int,
        future: asyncio.Future[Outcome],
        *,
        is_key_event: bool,
    ) -> None:
        if is_key_event:
            self._key_events_waiting -= 1
        connection.waiting.discard(future)
        if future.cancelled():
            outcome: Outcome = Unavailable(
                "the submission was cancelled in the sequencer: it may or may not be in the "
                "log; resubmitting the same event is safe (event ids are idempotent)",
                reason="COMMIT_OUTCOME_UNKNOWN",
            )
        else:
            outcome = future.result()
        connection.send(outcome_frame(handoff_id, outcome))  # dropped if the worker is gone

    def _committed(self) -> None:
        # Sent on the next turn of the loop, after the sequencer has set the batch's outcomes
        # (their done callbacks, which send them, are queued behind this): the Committed frame
        # and the outcomes then leave in one write, one wake-up of each worker per batch.
        # Still ahead of the outcomes, and keys_changed is decided now, while they are unsent.
        frame = self._committed_frame(keys_changed=self._key_events_waiting > 0)
        asyncio.get_running_loop().call_soon(self._send_to_all, frame)

    def _send_to_all(self, frame: handoff_pb2.Frame) -> None:
        for connection in self._connections:
            connection.send(frame)

    def _committed_frame(self, *, keys_changed: bool) -> handoff_pb2.Frame:
        return handoff_pb2.Frame(
            committed=handoff_pb2.Committed(
                tree_size=self._sequencer.tree_size, keys_changed=keys_changed
            )
        )


async def _answers(path: Path) -> bool:
    """Whether something accepts connections on the socket ``path`` (a live sequencer)."""
    try:
        _, writer = await asyncio.open_unix_connection(str(path))
    except OSError:
        return False  # a socket file a dead process left behind
    writer.close()
    return True
