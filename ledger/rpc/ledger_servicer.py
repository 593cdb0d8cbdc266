"""ledger.v1.LedgerService: parse the request, delegate to the domain, convert the answer."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc

from ledger import limits
from ledger.entry import envelope_from_proto
from ledger.errors import FieldViolation, InvalidArgument, LedgerError, NotFound
from ledger.fair import ReadPool
from ledger.rpc.reads import min_tree_size_of
from ledger.rpc.status import abort, status_of
from ledger.sequencer import receipt_of
from ledger.service import Ledger
from ledger.storage.append import Outcome, PendingEntry, Receipt
from ledger.storage.log_store import LogStore
from ledger.storage.read_routing import ReadRouter
from ledger.v1 import ledger_service_pb2 as pb
from ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from ledger.v1 import types_pb2

__all__ = ["LedgerServicer", "receipt_to_proto"]

_T = TypeVar("_T")
_Context = grpc.aio.ServicerContext[object, object]

_ENTRIES_CHUNK_BYTES_MAX = 1024 * 1024
"""Entries are streamed in messages of about this size, well under the gRPC message limit."""


def receipt_to_proto(receipt: Receipt) -> pb.Receipt:
    """The wire form of a receipt."""
    return pb.Receipt(
        event_id=receipt.event_id,
        leaf_index=receipt.leaf_index,
        leaf_hash=receipt.leaf_hash,
        entry=receipt.entry,
        checkpoint=receipt.checkpoint,
        inclusion_proof=list(receipt.inclusion_proof),
        duplicate=receipt.duplicate,
    )


def _required_envelope(has_envelope: bool, envelope: types_pb2.Envelope) -> types_pb2.Envelope:
    if not has_envelope:
        raise InvalidArgument(
            "envelope is required",
            reason="ENVELOPE_MISSING",
            field_violations=[FieldViolation("envelope", "required")],
        )
    return envelope


@dataclass(frozen=True)
class _InFlight:
    """A request of the stream being answered, and how many envelopes it carries."""

    task: asyncio.Task[pb.SubmitEventsResponse]
    envelopes: int


def _envelopes_of(request: pb.SubmitEventsRequest) -> Sequence[types_pb2.Envelope]:
    """The request's envelopes when it uses ``envelopes``; refuses one that sets both forms."""
    if request.envelopes and request.HasField("envelope"):
        raise InvalidArgument(
            "a SubmitEvents request carries `envelope` or `envelopes`, not both",
            reason="ENVELOPE_AND_ENVELOPES",
            field_violations=[FieldViolation("envelope", "set with envelopes")],
        )
    return request.envelopes


async def _result_of(outcome: asyncio.Future[Outcome] | BaseException) -> pb.SubmitEventsResult:
    """One envelope's answer: its receipt once durable, or why it was refused."""
    try:
        if isinstance(outcome, BaseException):
            raise outcome
        receipt = await receipt_of(outcome)
    except Exception as error:  # one refused event does not refuse the others
        return pb.SubmitEventsResult(error=status_of(error))
    return pb.SubmitEventsResult(receipt=receipt_to_proto(receipt))


class LedgerServicer(pb_grpc.LedgerServiceServicer):
    """Submission and read calls of the log."""

    def __init__(
        self,
        ledger: Ledger,
        log_store: LogStore,
        reads: ReadPool | None = None,
        *,
        standby_log: LogStore | None = None,
        router: ReadRouter | None = None,
    ) -> None:
        """``standby_log`` reads the read standby, which ``router`` chooses per read
        (``serve --read-database``); without them every read is the primary's."""
        self._ledger = ledger
        self._log = log_store
        self._reads = reads or ReadPool()
        self._standby_log = standby_log or log_store
        self._router = router or ReadRouter(None)

    async def _call(self, context: _Context, work: Awaitable[_T]) -> _T:
        try:
            return await work
        except Exception as error:  # every failure becomes a status; bugs are logged there
            await abort(context, error)

    async def _read(self, context: _Context, function: Callable[..., _T], *args: object) -> _T:
        return await self._call(context, self._reads.run(functools.partial(function, *args)))

    async def _routed(
        self,
        context: _Context,
        work: Callable[[LogStore], _T],
        needed_size: int,
        size_of: Callable[[_T], int],
    ) -> _T:
        """``work`` on the standby or the primary (:class:`ReadRouter`), never answered at a
        tree smaller than ``needed_size`` or the caller's ``x-min-tree-size``."""

        def run() -> _T:
            needed = max(needed_size, min_tree_size_of(context))
            return self._router.read(
                lambda on_standby: work(self._standby_log if on_standby else self._log),
                needed,
                size_of,
            )

        return await self._read(context, run)

    async def SubmitEvent(
        self, request: pb.SubmitEventRequest, context: _Context
    ) -> pb.SubmitEventResponse:
        """Admit and sequence one envelope; answer once durable."""

        async def work() -> pb.SubmitEventResponse:
            envelope = _required_envelope(request.HasField("envelope"), request.envelope)
            receipt = await self._ledger.submit(envelope_from_proto(envelope))
            return pb.SubmitEventResponse(receipt=receipt_to_proto(receipt))

        return await self._call(context, work())

    async def SubmitEvents(
        self, request_iterator: AsyncIterator[pb.SubmitEventsRequest], context: _Context
    ) -> AsyncIterator[pb.SubmitEventsResponse]:
        """Pipeline a stream: requests are admitted concurrently, answered in request order.

        A request carries one envelope (answered with ``receipt`` or ``error``) or several
        (answered with ``results`` in order). At most ``limits.submit_stream_in_flight_max``
        envelopes await their receipt at once; beyond that the stream stops reading (flow
        control pushes back on the client). A malformed request (both ``envelope`` and
        ``envelopes``) ends the stream with INVALID_ARGUMENT once the requests before it are
        answered; nothing of it is written.
        """
        in_flight: asyncio.Queue[_InFlight | None] = asyncio.Queue()
        budget = asyncio.Semaphore(limits.submit_stream_in_flight_max)
        reader = asyncio.create_task(self._read_stream(request_iterator, in_flight, budget))
        try:
            while (waiting := await in_flight.get()) is not None:
                response = await waiting.task
                yield response
                for _ in range(waiting.envelopes):
                    budget.release()
            try:
                await reader
            except LedgerError as error:
                await abort(context, error)
        finally:
            reader.cancel()
            while not in_flight.empty():
                leftover = in_flight.get_nowait()
                if leftover is not None:
                    leftover.task.cancel()

    async def _read_stream(
        self,
        request_iterator: AsyncIterator[pb.SubmitEventsRequest],
        in_flight: asyncio.Queue[_InFlight | None],
        budget: asyncio.Semaphore,
    ) -> None:
        sequence = 0
        previous = asyncio.Event()
        previous.set()
        try:
            async for request in request_iterator:
                envelopes = _envelopes_of(request)
                count = max(1, len(envelopes))
                for _ in range(count):
                    await budget.acquire()
                queued = asyncio.Event()
                if request.envelopes:
                    work = self._submit_several(sequence, envelopes, previous, queued)
                else:
                    work = self._submit_one(sequence, request, previous, queued)
                await in_flight.put(_InFlight(asyncio.create_task(work), count))
                sequence, previous = sequence + count, queued
        finally:
            # Wake the writer even when reading failed; it then re-raises the reader's error.
            await in_flight.put(None)

    async def _submit_one(
        self,
        sequence: int,
        request: pb.SubmitEventsRequest,
        previous: asyncio.Event,
        queued: asyncio.Event,
    ) -> pb.SubmitEventsResponse:
        """Admit concurrently, but queue after the previous request: the log keeps stream order."""
        try:
            try:
                envelope = _required_envelope(request.HasField("envelope"), request.envelope)
                item = await self._ledger.admit(envelope_from_proto(envelope))
                await previous.wait()
                future = self._ledger.enqueue(item)
            finally:
                await previous.wait()
                queued.set()
            receipt = await receipt_of(future)
        except Exception as error:  # one refused event does not end the stream
            return pb.SubmitEventsResponse(sequence=sequence, error=status_of(error))
        return pb.SubmitEventsResponse(sequence=sequence, receipt=receipt_to_proto(receipt))

    async def _submit_several(
        self,
        sequence: int,
        envelopes: Sequence[types_pb2.Envelope],
        previous: asyncio.Event,
        queued: asyncio.Event,
    ) -> pb.SubmitEventsResponse:
        """As :meth:`_submit_one` for each envelope of one request: admitted concurrently,
        queued together in order after the previous request, answered in one response."""
        outcomes: list[asyncio.Future[Outcome] | BaseException] = []
        try:
            # One after the other in this task: admission is CPU work on the loop, so tasks
            # of their own would only interleave it with other requests' and delay the queueing
            # of this one's.
            admitted: list[PendingEntry | BaseException] = []
            for envelope in envelopes:
                try:
                    admitted.append(await self._admit(envelope))
                except Exception as error:  # one refused envelope does not refuse the others
                    admitted.append(error)
            await previous.wait()
            for item in admitted:
                outcomes.append(item if isinstance(item, BaseException) else self._enqueue(item))
        finally:
            await previous.wait()
            queued.set()
        results = [await _result_of(outcome) for outcome in outcomes]
        return pb.SubmitEventsResponse(sequence=sequence, results=results)

    async def _admit(self, envelope: types_pb2.Envelope) -> PendingEntry:
        return await self._ledger.admit(envelope_from_proto(envelope))

    def _enqueue(self, item: PendingEntry) -> asyncio.Future[Outcome] | BaseException:
        try:
            return self._ledger.enqueue(item)
        except LedgerError as error:  # the queue is full, or the server is stopping
            return error

    async def GetCheckpoint(
        self, request: pb.GetCheckpointRequest, context: _Context
    ) -> pb.GetCheckpointResponse:
        """The latest checkpoint, or the one of exactly ``tree_size``."""

        def work(log: LogStore) -> pb.GetCheckpointResponse:
            if request.tree_size == 0:
                found = log.latest_checkpoint()
            else:
                at_size = log.checkpoint_at(request.tree_size)
                if at_size is None:
                    raise NotFound(
                        f"no checkpoint was made at tree size {request.tree_size}",
                        reason="CHECKPOINT_UNKNOWN",
                        field_violations=[FieldViolation("tree_size", "no checkpoint")],
                    )
                found = at_size
            return pb.GetCheckpointResponse(
                checkpoint=log.served_note(found),
                tree_size=found.tree_size,
                root_hash=found.root_hash,
            )

        return await self._routed(context, work, request.tree_size, _checkpoint_size)

    async def GetEntries(
        self, request: pb.GetEntriesRequest, context: _Context
    ) -> AsyncIterator[pb.GetEntriesResponse]:
        """Entry bytes of a range (clipped to the page limit), in chunks of about 1 MiB."""
        start, entries, size = await self._routed(
            context,
            lambda log: log.entries_at_size(request.start_index, request.end_index),
            request.start_index + 1,  # a standby must hold the first entry asked for
            lambda answer: answer[2],
        )
        chunk: list[bytes] = []
        chunk_start, chunk_bytes = start, 0
        for offset, data in enumerate(entries):
            if chunk and chunk_bytes + len(data) > _ENTRIES_CHUNK_BYTES_MAX:
                yield pb.GetEntriesResponse(start_index=chunk_start, entries=chunk, tree_size=size)
                chunk, chunk_start, chunk_bytes = [], start + offset, 0
            chunk.append(data)
            chunk_bytes += len(data)
        if chunk:
            yield pb.GetEntriesResponse(start_index=chunk_start, entries=chunk, tree_size=size)

    async def GetInclusionProof(
        self, request: pb.GetInclusionProofRequest, context: _Context
    ) -> pb.GetInclusionProofResponse:
        """Inclusion proof by leaf index or leaf hash, at a tree size (0: latest)."""

        def work(log: LogStore) -> pb.GetInclusionProofResponse:
            which = request.WhichOneof("leaf")
            if which == "leaf_hash":
                leaf_index = log.leaf_index_of(request.leaf_hash)
            elif which == "leaf_index":
                leaf_index = request.leaf_index
            else:
                raise InvalidArgument(
                    "leaf_index or leaf_hash is required",
                    reason="LEAF_MISSING",
                    field_violations=[FieldViolation("leaf", "required")],
                )
            tree_size, proof = log.inclusion_proof(leaf_index, request.tree_size)
            at_size = log.checkpoint_at(tree_size)
            return pb.GetInclusionProofResponse(
                leaf_index=leaf_index,
                tree_size=tree_size,
                hashes=proof,
                checkpoint=b"" if at_size is None else log.served_note(at_size),
            )

        by_index = request.leaf_index + 1 if request.WhichOneof("leaf") == "leaf_index" else 0
        return await self._routed(context, work, max(request.tree_size, by_index), _inclusion_size)

    async def GetConsistencyProof(
        self, request: pb.GetConsistencyProofRequest, context: _Context
    ) -> pb.GetConsistencyProofResponse:
        """Consistency proof between two tree sizes (to 0: latest)."""

        def work(log: LogStore) -> pb.GetConsistencyProofResponse:
            to_size, proof = log.consistency_proof(request.from_tree_size, request.to_tree_size)
            return pb.GetConsistencyProofResponse(
                from_tree_size=request.from_tree_size, to_tree_size=to_size, hashes=proof
            )

        needed = max(request.from_tree_size, request.to_tree_size)
        return await self._routed(context, work, needed, _consistency_size)


def _checkpoint_size(response: pb.GetCheckpointResponse) -> int:
    return response.tree_size


def _inclusion_size(response: pb.GetInclusionProofResponse) -> int:
    return response.tree_size


def _consistency_size(response: pb.GetConsistencyProofResponse) -> int:
    return response.to_tree_size
