"""The four loads of issue 15 and a probe client: does one caller's load hurt another caller?

Loads (each bounded: a count of calls, or until told to stop):

1. ``streams``: many concurrent SubmitEvents streams on one connection, one event each;
2. ``silent writers``: streams that write events and never read their receipts;
3. ``readers``: callers, each on its own connection, looping GetEntries(0..1000);
4. ``silent connections``: raw TCP connections that never speak.

The probe, another caller (its own client certificate, its own insurer) on a connection of its own
and a thread of its own, submits events one at a time and reads the checkpoint after each; every
call must succeed. Used by ``make bench`` (figures) and by
``tests/e2e/test_fairness.py`` (scaled down: only that the probe never fails).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Protocol

import grpc

from clients.insurer import sign_event
from clients.person_tokens import PersonTokens
from clients.samples import TokenSource, household, policy_issued
from ledger import limits
from ledger.signing import Signer, parse_signer_key
from ledger.v1 import ledger_service_pb2 as pb
from ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from ledger.v1 import types_pb2

__all__ = ["LoadSizes", "Probe", "run_load", "signed_events"]

OCCURRED = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
CALL_DEADLINE_SECONDS = 120.0
AioChannels = Callable[[], grpc.aio.Channel]


class EventLike(Protocol):
    """A threading or multiprocessing event."""

    def set(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass(frozen=True)
class LoadSizes:
    """How big each load is (the issue's figures by default)."""

    streams: int = 2000
    silent_writers: int = 8
    silent_writer_events: int = 2000
    readers: int = 32
    silent_connections: int = 1000


def signed_events(
    signer: Signer,
    insurer_id: str,
    first: int,
    count: int,
    occurred: dt.datetime = OCCURRED,
    *,
    tokens: TokenSource,
) -> Iterator[bytes]:
    """``count`` distinct signed policy events, each a serialized DSSE ``Envelope``. Their
    people's tokens are asked ``limits.person_tokens_per_call_max`` households at a time, ahead
    of the events, so that a caller timing submissions does not time the token calls."""
    chunk = limits.person_tokens_per_call_max
    for start in range(first, first + count, chunk):
        numbers = range(start, min(start + chunk, first + count))
        sponsors = tokens([household(number, 1)[0] for number in numbers])
        for number, sponsor in zip(numbers, sponsors, strict=True):
            event = policy_issued(number, insurer_id, occurred, members=1, tokens=_known(sponsor))
            yield sign_event(event, signer).SerializeToString()


def _known(token: str) -> TokenSource:
    """A token source answering ``token``, asked ahead for the event's one member."""

    def tokens(_people: Sequence[types_pb2.PersonId]) -> list[str]:
        return [token]

    return tokens


def _envelope(data: bytes) -> pb.SubmitEventsRequest:
    request = pb.SubmitEventsRequest()
    request.envelope.ParseFromString(data)
    return request


async def _one_stream(stub: pb_grpc.LedgerServiceAsyncStub, envelope: bytes) -> str:
    try:
        # No request iterator: the requests are written on the call (write, done_writing).
        call = stub.SubmitEvents(None, timeout=CALL_DEADLINE_SECONDS)
        await call.write(_envelope(envelope))
        await call.done_writing()
        async for response in call:
            return "OK" if response.HasField("receipt") else f"refused {response.error.code}"
        return "no answer"
    except grpc.aio.AioRpcError as error:
        return str(error.code().name)


async def streams_load(channels: AioChannels, envelopes: list[bytes]) -> collections.Counter[str]:
    """Load 1: one stream per envelope, all at once, on one connection; outcome counts."""
    async with channels() as channel:
        stub = pb_grpc.LedgerServiceStub(channel)
        outcomes = await asyncio.gather(*(_one_stream(stub, e) for e in envelopes))
    return collections.Counter(outcomes)


async def _silent_writer(channel: grpc.aio.Channel, envelopes: list[bytes]) -> None:
    call = pb_grpc.LedgerServiceStub(channel).SubmitEvents(None, timeout=CALL_DEADLINE_SECONDS)
    try:
        for envelope in envelopes:  # flow control stops these writes when the server stops reading
            await call.write(_envelope(envelope))
    except (grpc.aio.AioRpcError, asyncio.CancelledError):
        pass
    finally:
        call.cancel()


async def silent_writers_load(
    channels: AioChannels, batches: list[list[bytes]], stop: asyncio.Event
) -> None:
    """Load 2: streams that write and never read, until ``stop``."""
    async with channels() as channel:
        writers = [asyncio.create_task(_silent_writer(channel, batch)) for batch in batches]
        await stop.wait()
        for writer in writers:
            writer.cancel()
        await asyncio.gather(*writers, return_exceptions=True)


async def _reader(channels: AioChannels, stop: asyncio.Event) -> collections.Counter[str]:
    outcomes: collections.Counter[str] = collections.Counter()
    async with channels() as channel:
        stub = pb_grpc.LedgerServiceStub(channel)
        while not stop.is_set():
            try:
                request = pb.GetEntriesRequest(start_index=0, end_index=1000)
                async for _ in stub.GetEntries(request, timeout=CALL_DEADLINE_SECONDS):
                    pass
                outcomes["OK"] += 1
            except grpc.aio.AioRpcError as error:
                outcomes[str(error.code().name)] += 1
    return outcomes


async def readers_load(
    channels: AioChannels, count: int, stop: asyncio.Event
) -> collections.Counter[str]:
    """Load 3: ``count`` callers looping GetEntries(0..1000), until ``stop``."""
    results = await asyncio.gather(*(_reader(channels, stop) for _ in range(count)))
    return sum(results, collections.Counter())


def silent_connections(address: str, count: int) -> ExitStack:
    """Load 4: ``count`` TCP connections that never speak (close the stack to end them)."""
    host, _, port = address.rpartition(":")
    stack = ExitStack()
    for _ in range(count):
        stack.enter_context(socket.create_connection((host, int(port))))
    return stack


class Probe:
    """Another caller: submits events one at a time on its own connection and thread."""

    def __init__(self, channel: grpc.Channel, envelopes: Iterator[bytes]) -> None:
        self._stub = pb_grpc.LedgerServiceStub(channel)
        self._envelopes = envelopes
        self.latencies_seconds: list[float] = []
        self.failures: list[str] = []

    def run(self, count: int) -> None:
        """Submit ``count`` events and read the checkpoint after each; record what fails."""
        for _ in range(count):
            request = pb.SubmitEventRequest()
            request.envelope.ParseFromString(next(self._envelopes))
            started = time.perf_counter()
            try:
                self._stub.SubmitEvent(request, timeout=CALL_DEADLINE_SECONDS)
                self.latencies_seconds.append(time.perf_counter() - started)
                self._stub.GetCheckpoint(pb.GetCheckpointRequest(), timeout=CALL_DEADLINE_SECONDS)
            except grpc.RpcError as error:
                self.failures.append(f"{error.code().name}: {error.details()}")

    def in_thread(self, count: int) -> threading.Thread:
        """:meth:`run` in a thread of its own (started)."""
        thread = threading.Thread(target=self.run, args=(count,), name="probe", daemon=True)
        thread.start()
        return thread


def run_load(
    name: str,
    sizes: LoadSizes,
    channels: AioChannels,
    address: str,
    probe: Probe,
    probe_calls: int,
    envelopes: Iterator[bytes],
) -> collections.Counter[str]:
    """Run load ``name`` while the probe makes ``probe_calls``; the load's outcome counts."""

    async def under_load() -> collections.Counter[str]:
        stop = asyncio.Event()
        probing = probe.in_thread(probe_calls)
        outcomes: collections.Counter[str] = collections.Counter()
        if name == "streams":
            batch = [next(envelopes) for _ in range(sizes.streams)]
            outcomes = await streams_load(channels, batch)
        elif name == "silent writers":
            batches = [
                [next(envelopes) for _ in range(sizes.silent_writer_events)]
                for _ in range(sizes.silent_writers)
            ]
            writing = asyncio.create_task(silent_writers_load(channels, batches, stop))
            await asyncio.to_thread(probing.join)
            stop.set()
            await writing
        elif name == "readers":
            reading = asyncio.create_task(readers_load(channels, sizes.readers, stop))
            await asyncio.to_thread(probing.join)
            stop.set()
            outcomes = await reading
        else:
            with silent_connections(address, sizes.silent_connections):
                await asyncio.to_thread(probing.join)
        await asyncio.to_thread(probing.join)
        return outcomes

    return asyncio.run(under_load())


LOADS = ("streams", "silent writers", "readers", "silent connections")


def load_in_process(
    name: str,
    sizes: LoadSizes,
    address: str,
    credentials: tuple[bytes, bytes, bytes],
    signer_key: str,
    insurer_id: str,
    started: EventLike,
    stop: EventLike,
) -> None:
    """Run load ``name`` until ``stop`` is set (a child process's entry point: the load's client
    work then does not share the probe's interpreter lock, so the probe measures the server).
    ``credentials`` are the load's caller's (CA, certificate chain, private key), PEM."""
    signer = parse_signer_key(signer_key)
    now = dt.datetime.now(dt.UTC)
    root, chain, key = credentials
    token_channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root, key, chain))
    envelopes = signed_events(
        signer, insurer_id, 0, 10**7, now, tokens=PersonTokens(token_channel).tokens
    )

    async def load() -> None:
        root, chain, key = credentials
        tls = grpc.ssl_channel_credentials(root, key, chain)
        channels: AioChannels = lambda: grpc.aio.secure_channel(address, tls)  # noqa: E731
        stopped = asyncio.Event()
        waiting = asyncio.create_task(asyncio.to_thread(stop.wait))
        waiting.add_done_callback(lambda _: stopped.set())
        if name == "streams":
            batch = [next(envelopes) for _ in range(sizes.streams)]
            started.set()
            await streams_load(channels, batch)
        elif name == "silent writers":
            batches = [
                [next(envelopes) for _ in range(sizes.silent_writer_events)]
                for _ in range(sizes.silent_writers)
            ]
            started.set()
            await silent_writers_load(channels, batches, stopped)
        elif name == "readers":
            started.set()
            await readers_load(channels, sizes.readers, stopped)
        else:
            with silent_connections(address, sizes.silent_connections):
                started.set()
                await stopped.wait()
        await waiting

    asyncio.run(load())
