"""The hand-off's framing and entry conversions, without sockets: frames round-trip, broken
frames raise FrameError (never anything else), an entry crosses with its envelope bytes
verbatim and its hook by name, and named append hooks behave."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from ledger import limits
from ledger.dsse import Envelope, EnvelopeSignature
from ledger.errors import InvalidArgument, InvariantViolation, LedgerError, ResourceExhausted
from ledger.handoff.server import KEY_EVENT_KINDS
from ledger.handoff.wire import (
    FrameError,
    FrameReader,
    admitted_of,
    encode_frame,
    outcome_frame,
    outcome_of,
    pending_entry_of,
    read_frame,
)
from ledger.internal.v1 import handoff_pb2
from ledger.storage.append import PendingEntry, Receipt
from ledger.storage.append_hooks import (
    AppendHook,
    batch_now,
    batch_time,
    register_append_hook,
)
from ledger.v1 import events_pb2, types_pb2

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def _event_payload() -> bytes:
    event = events_pb2.Event(event_id="e1", insurer_id="gulf-health")
    event.occurred_at.FromDatetime(NOW)
    event.policy_cancelled.policy_id = "P1"
    return event.SerializeToString(deterministic=True)


def _item(**changes: object) -> PendingEntry:
    envelope = Envelope(
        "application/vnd.policy-ledger.event+protobuf",
        _event_payload(),
        (EnvelopeSignature("k1", b"s" * 64), EnvelopeSignature("k2", b"t" * 64)),
    )
    item = PendingEntry(envelope, "gulf-health", "e1", "k1", trace_context="00-abc-def-01")
    for name, value in changes.items():
        object.__setattr__(item, name, value)
    return item


def _read(data: bytes) -> handoff_pb2.Frame | None:
    async def read() -> handoff_pb2.Frame | None:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_frame(reader)

    return asyncio.run(read())


def test_an_entry_crosses_with_its_envelope_verbatim_its_caller_and_its_hook() -> None:
    item = _item(on_append=AppendHook("tests.wire", "pay-1"))
    register_append_hook("tests.wire", _nothing)
    frame = handoff_pb2.Frame(admitted=admitted_of(item, 7, "spiffe://x/insurer/gulf"))
    crossed = _read(encode_frame(frame))
    assert crossed is not None and crossed.admitted.caller == "spiffe://x/insurer/gulf"
    assert crossed.admitted.id == 7
    entry = pending_entry_of(crossed.admitted)
    assert entry.envelope == item.envelope  # payload bytes, type and signatures, exactly
    assert entry.payload_sha256 == item.payload_sha256
    assert (entry.insurer_id, entry.event_id, entry.key_id) == ("gulf-health", "e1", "k1")
    assert entry.trace_context == "00-abc-def-01"
    assert entry.on_append == AppendHook("tests.wire", "pay-1")
    assert entry.event is not None and entry.event.policy_cancelled.policy_id == "P1"


def test_an_entry_without_a_hook_crosses_without_one() -> None:
    entry = pending_entry_of(admitted_of(_item(), 1, ""))
    assert entry.on_append is None and entry.event_id == "e1"


def test_an_on_append_closure_cannot_be_handed_off() -> None:
    with pytest.raises(InvariantViolation) as raised:
        admitted_of(_item(on_append=lambda connection, leaf: None), 1, "")
    assert raised.value.reason == "APPEND_HOOK_NOT_NAMED" and raised.value.code == "INTERNAL"


@pytest.mark.parametrize(
    ("envelope", "payload", "reason"),
    [
        (b"\xff\xff", None, "ENVELOPE_UNPARSABLE"),
        (None, b"\xff\xff\xff", "PAYLOAD_UNPARSABLE"),
    ],
)
def test_an_unparsable_handed_off_entry_is_refused(
    envelope: bytes | None, payload: bytes | None, reason: str
) -> None:
    admitted = admitted_of(_item(), 1, "")
    if envelope is not None:
        admitted.envelope = envelope
    if payload is not None:
        wire = types_pb2.Envelope.FromString(admitted.envelope)
        wire.payload = payload
        admitted.envelope = wire.SerializeToString()
    with pytest.raises(InvalidArgument) as raised:
        pending_entry_of(admitted)
    assert raised.value.reason == reason


def test_an_unknown_hook_is_refused_by_the_receiving_side() -> None:
    admitted = admitted_of(_item(), 1, "")
    admitted.hook.name = "no.such.hook"
    with pytest.raises(InvariantViolation) as raised:
        pending_entry_of(admitted)
    assert raised.value.reason == "APPEND_HOOK_UNKNOWN"


def test_outcomes_round_trip() -> None:
    receipt = Receipt("e1", 5, b"h" * 32, b"entry", b"note", 9, (b"a" * 32, b"b" * 32), True)
    frame = _read(encode_frame(outcome_frame(3, receipt)))
    assert frame is not None and frame.outcome.id == 3
    assert outcome_of(frame.outcome) == receipt
    refused = _read(encode_frame(outcome_frame(4, ResourceExhausted("big", reason="R"))))
    assert refused is not None
    error = outcome_of(refused.outcome)
    assert isinstance(error, ResourceExhausted) and error.reason == "R"


@pytest.mark.parametrize(
    "data",
    [
        (limits.handoff_frame_bytes_max + 1).to_bytes(4, "big"),  # over the limit
        (4).to_bytes(4, "big") + b"\xff\xff\xff\xff",  # not a Frame
        (0).to_bytes(4, "big"),  # a Frame that carries nothing
        (10).to_bytes(4, "big") + b"short",  # the stream ends inside the frame
        b"\x00\x00",  # the stream ends inside the header
    ],
    ids=["oversized", "unparsable", "empty", "truncated", "truncated-header"],
)
def test_a_broken_frame_raises_frame_error(data: bytes) -> None:
    with pytest.raises(FrameError):
        _read(data)
    with pytest.raises(FrameError):
        _read_all(data, chunk_bytes=3)


def _read_all(data: bytes, chunk_bytes: int) -> list[list[handoff_pb2.Frame]]:
    """What a FrameReader returns, call after call, until the clean end of ``data``."""

    async def read() -> list[list[handoff_pb2.Frame]]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        frames, batches = FrameReader(reader, chunk_bytes=chunk_bytes), []
        while batch := await frames.frames():
            batches.append(batch)
        return batches

    return asyncio.run(read())


def _committed(tree_size: int) -> handoff_pb2.Frame:
    return handoff_pb2.Frame(committed=handoff_pb2.Committed(tree_size=tree_size))


@pytest.mark.parametrize("chunk_bytes", [1, 7, 1 << 20])
def test_a_frame_reader_returns_every_frame_once_in_order(chunk_bytes: int) -> None:
    frames = [_committed(size) for size in range(1, 40)]
    data = b"".join(encode_frame(frame) for frame in frames)
    batches = _read_all(data, chunk_bytes)
    assert [frame for batch in batches for frame in batch] == frames
    if chunk_bytes > len(data):  # everything arrived at once: one call returns it all
        assert len(batches) == 1


def test_a_frame_reader_returns_the_good_frames_before_a_broken_one() -> None:
    good = [_committed(1), _committed(2)]
    broken = (4).to_bytes(4, "big") + b"\xff\xff\xff\xff"

    async def read() -> tuple[list[handoff_pb2.Frame], FrameError]:
        reader = asyncio.StreamReader()
        reader.feed_data(b"".join(encode_frame(frame) for frame in good) + broken)
        reader.feed_eof()
        frames = FrameReader(reader)
        first = await frames.frames()
        with pytest.raises(FrameError) as raised:
            await frames.frames()
        return first, raised.value

    first, error = asyncio.run(read())
    assert first == good
    assert "not a Frame" in str(error)


def test_a_clean_end_of_stream_is_no_frame() -> None:
    assert _read(b"") is None


def test_a_frame_over_the_limit_is_not_sent() -> None:
    frame = handoff_pb2.Frame(
        admitted=handoff_pb2.Admitted(envelope=b"x" * (limits.handoff_frame_bytes_max + 1))
    )
    with pytest.raises(ResourceExhausted) as raised:
        encode_frame(frame)
    assert raised.value.reason == "HANDOFF_FRAME_TOO_LARGE"


_SEEN: list[tuple[int, str, dt.datetime]] = []


def _nothing(connection: object, leaf_index: int, argument: str) -> None:
    pass


def _seeing(connection: object, leaf_index: int, argument: str) -> None:
    _SEEN.append((leaf_index, argument, batch_now()))


def test_a_name_is_registered_to_one_function_and_hooks_see_the_batch_time() -> None:
    _SEEN.clear()
    first = _seeing
    register_append_hook("tests.wire.time", first)  # type: ignore[arg-type]
    register_append_hook("tests.wire.time", first)  # type: ignore[arg-type] # again: harmless
    with pytest.raises(ValueError, match="already registered"):
        register_append_hook("tests.wire.time", lambda connection, leaf, argument: None)
    with batch_time(NOW):
        AppendHook("tests.wire.time", "p")(None, 4)  # type: ignore[arg-type]
    assert _SEEN == [(4, "p", NOW)]
    with pytest.raises(LedgerError) as raised:  # outside a batch there is no "now"
        AppendHook("tests.wire.time", "p")(None, 4)  # type: ignore[arg-type]
    assert raised.value.reason == "APPEND_HOOK_OUTSIDE_BATCH"
    with pytest.raises(InvariantViolation) as unknown:
        AppendHook("tests.wire.nothing", "p")(None, 4)  # type: ignore[arg-type]
    assert unknown.value.reason == "APPEND_HOOK_UNKNOWN"


def test_the_key_event_kinds_are_bodies_of_the_event() -> None:
    bodies = {field.name for field in events_pb2.Event.DESCRIPTOR.oneofs_by_name["body"].fields}
    assert bodies >= KEY_EVENT_KINDS
