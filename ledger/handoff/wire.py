"""The hand-off's wire form: frames, and the conversions of entries, receipts and refusals.

A frame is a 4-byte big-endian length and one serialized ``ledger.internal.v1.Frame``
(protos/ledger/internal/v1/handoff.proto); a length over ``limits.handoff_frame_bytes_max``, or
bytes that are not a Frame, mean the peer is broken: :func:`read_frame` raises
:class:`FrameError` and the reader closes that connection.

Refusals round-trip exactly (:func:`refusal_of` / :func:`error_of`): the same LedgerError class,
message, reason, metadata, field violations and retry hint, so a caller of a worker gets the same
gRPC status and details as from the single-process server. A class outside the table (a
subclass defined elsewhere, e.g. ``payments.fees.FeeError``) travels as its nearest base in the
table: same code, same details.
"""

from __future__ import annotations

import asyncio
import logging

from google.protobuf.message import DecodeError

from ledger import limits
from ledger.dsse import Envelope
from ledger.entry import envelope_from_proto, envelope_to_proto
from ledger.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    InvariantViolation,
    LedgerError,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    VerificationError,
)
from ledger.events import decode_event
from ledger.fair import Overloaded
from ledger.internal.v1 import handoff_pb2
from ledger.storage.append import Outcome, PendingEntry, Receipt
from ledger.storage.append_hooks import AppendHook, append_hook_registered
from ledger.v1 import types_pb2

__all__ = [
    "ERROR_TYPES",
    "FrameError",
    "FrameReader",
    "FrameSender",
    "admitted_of",
    "encode_frame",
    "error_of",
    "outcome_frame",
    "outcome_of",
    "pending_entry_of",
    "read_frame",
    "receipt_of_proto",
    "receipt_to_proto",
    "refusal_of",
]

log = logging.getLogger(__name__)

_HEADER_BYTES = 4

ERROR_TYPES: dict[str, type[LedgerError]] = {
    cls.__name__: cls
    for cls in (
        LedgerError,
        InvalidArgument,
        ResourceExhausted,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        OutOfRange,
        PermissionDenied,
        Unauthenticated,
        Unavailable,
        VerificationError,
        InvariantViolation,
        Overloaded,
    )
}
"""The LedgerError classes a refusal names; any other travels as its nearest base here."""

_CODE_TYPES: dict[str, type[LedgerError]] = {
    cls.code: cls for cls in reversed(ERROR_TYPES.values())
}
"""A class per gRPC code (the most general), for a refusal whose error_type the receiver does
not know."""


class FrameError(Exception):
    """The peer sent something that is not a frame: the connection is closed."""


def encode_frame(frame: handoff_pb2.Frame) -> bytes:
    """The frame's bytes on the wire (length prefix included)."""
    data = frame.SerializeToString()
    if len(data) > limits.handoff_frame_bytes_max:
        raise ResourceExhausted(
            f"a hand-off frame of {len(data)} bytes is over the limit of "
            f"{limits.handoff_frame_bytes_max}",
            reason="HANDOFF_FRAME_TOO_LARGE",
        )
    return len(data).to_bytes(_HEADER_BYTES, "big") + data


async def read_frame(reader: asyncio.StreamReader) -> handoff_pb2.Frame | None:
    """The next frame, or None at a clean end of stream; FrameError when the peer is broken."""
    try:
        header = await reader.readexactly(_HEADER_BYTES)
    except asyncio.IncompleteReadError as error:
        if error.partial:
            raise FrameError("the stream ended inside a frame header") from None
        return None
    length = int.from_bytes(header, "big")
    if length > limits.handoff_frame_bytes_max:
        raise FrameError(
            f"a frame of {length} bytes is over the limit of {limits.handoff_frame_bytes_max}"
        )
    try:
        data = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise FrameError(f"the stream ended inside a frame of {length} bytes") from None
    return _parsed(data)


class FrameReader:
    """Reads the frames of one stream, every complete frame that has arrived at once: one read
    and one wake-up of the reading task for many frames when the peer is busy (the peer's
    :class:`FrameSender` writes a loop turn's frames in one write), where :func:`read_frame`
    waits twice per frame. The same checks and the same FrameError as :func:`read_frame`."""

    def __init__(self, reader: asyncio.StreamReader, chunk_bytes: int = 256 * 1024) -> None:
        self._reader = reader
        self._chunk_bytes = chunk_bytes
        self._buffer = bytearray()
        self._broken: FrameError | None = None

    async def frames(self) -> list[handoff_pb2.Frame]:
        """The frames complete in what has arrived (at least one, in order), or ``[]`` at a
        clean end of stream; FrameError when the peer is broken (after the good frames that
        came before the broken one)."""
        while True:
            if self._broken is not None:
                raise self._broken
            frames = self._complete()
            if frames:
                return frames
            data = await self._reader.read(self._chunk_bytes)
            if not data:
                if len(self._buffer) >= _HEADER_BYTES:
                    length = int.from_bytes(self._buffer[:_HEADER_BYTES], "big")
                    raise FrameError(f"the stream ended inside a frame of {length} bytes")
                if self._buffer:
                    raise FrameError("the stream ended inside a frame header")
                return []
            self._buffer += data

    def _complete(self) -> list[handoff_pb2.Frame]:
        buffer, start, frames = self._buffer, 0, []
        try:
            while len(buffer) - start >= _HEADER_BYTES:
                length = int.from_bytes(buffer[start : start + _HEADER_BYTES], "big")
                if length > limits.handoff_frame_bytes_max:
                    raise FrameError(
                        f"a frame of {length} bytes is over the limit of "
                        f"{limits.handoff_frame_bytes_max}"
                    )
                end = start + _HEADER_BYTES + length
                if end > len(buffer):
                    break
                frames.append(_parsed(bytes(buffer[start + _HEADER_BYTES : end])))
                start = end
        except FrameError as error:
            if not frames:
                raise
            self._broken = error  # the good frames first; the error on the next call
        if start:
            del buffer[:start]
        return frames


def _parsed(data: bytes) -> handoff_pb2.Frame:
    try:
        frame = handoff_pb2.Frame.FromString(data)
    except DecodeError as error:
        raise FrameError(f"a frame of {len(data)} bytes is not a Frame: {error}") from None
    if frame.WhichOneof("body") is None:
        raise FrameError(f"a frame of {len(data)} bytes carries nothing")
    return frame


class FrameSender:
    """Writes frames to one transport, everything ready in one write: frames sent during one
    turn of the event loop are joined and written once, after it (no drain per frame)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._ready: list[bytes] = []

    def send(self, data: bytes) -> None:
        """Queue ``data`` (an encoded frame) for the next write."""
        if not self._ready:
            asyncio.get_running_loop().call_soon(self._flush)
        self._ready.append(data)

    def _flush(self) -> None:
        ready, self._ready = self._ready, []
        if not self._writer.is_closing():
            self._writer.write(b"".join(ready))

    def close(self) -> None:
        """Write what is queued, then close the transport."""
        if self._ready:
            self._flush()
        self._writer.close()


# Entries.


def admitted_of(item: PendingEntry, handoff_id: int, caller: str) -> handoff_pb2.Admitted:
    """The Admitted message of ``item``; an ``on_append`` that is not a named
    :class:`AppendHook` cannot cross processes (a programming error: INTERNAL)."""
    hook = item.on_append
    if hook is not None and not isinstance(hook, AppendHook):
        raise InvariantViolation(
            f"event {item.event_id!r} has an on_append that is not an AppendHook ({hook!r}): "
            "only a named hook (ledger.storage.append_hooks) can run in the sequencer process",
            reason="APPEND_HOOK_NOT_NAMED",
        )
    message = handoff_pb2.Admitted(
        id=handoff_id,
        envelope=envelope_to_proto(item.envelope).SerializeToString(),
        insurer_id=item.insurer_id,
        event_id=item.event_id,
        key_id=item.key_id,
        caller=caller,
        trace_context=item.trace_context,
    )
    if hook is not None:
        message.hook.name = hook.name
        message.hook.argument = hook.argument
    return message


def pending_entry_of(admitted: handoff_pb2.Admitted) -> PendingEntry:
    """The PendingEntry a worker handed off: its envelope re-parsed (the payload decoded as
    admission decodes it; the signature was checked by the worker, the key is re-checked at
    commit). Raises the LedgerError that refuses it."""
    try:
        wire = types_pb2.Envelope.FromString(admitted.envelope)
    except DecodeError as error:
        raise InvalidArgument(
            f"the handed-off envelope is not a ledger.v1.Envelope: {error}",
            reason="ENVELOPE_UNPARSABLE",
        ) from None
    envelope: Envelope = envelope_from_proto(wire)
    event = decode_event(envelope.payload)
    hook: AppendHook | None = None
    if admitted.HasField("hook") and admitted.hook.name:
        if not append_hook_registered(admitted.hook.name):
            raise InvariantViolation(
                f"append hook {admitted.hook.name!r} is not registered in the sequencer process",
                reason="APPEND_HOOK_UNKNOWN",
                metadata={"hook": admitted.hook.name},
            )
        hook = AppendHook(admitted.hook.name, admitted.hook.argument)
    return PendingEntry(
        envelope=envelope,
        insurer_id=admitted.insurer_id,
        event_id=admitted.event_id,
        key_id=admitted.key_id,
        event=event,
        on_append=hook,
        trace_context=admitted.trace_context,
    )


# Outcomes.


def receipt_to_proto(receipt: Receipt) -> handoff_pb2.Receipt:
    """The wire form of a receipt."""
    return handoff_pb2.Receipt(
        event_id=receipt.event_id,
        leaf_index=receipt.leaf_index,
        leaf_hash=receipt.leaf_hash,
        entry=receipt.entry,
        checkpoint=receipt.checkpoint,
        tree_size=receipt.tree_size,
        inclusion_proof=list(receipt.inclusion_proof),
        duplicate=receipt.duplicate,
    )


def receipt_of_proto(message: handoff_pb2.Receipt) -> Receipt:
    """The receipt a wire receipt carries."""
    return Receipt(
        event_id=message.event_id,
        leaf_index=message.leaf_index,
        leaf_hash=message.leaf_hash,
        entry=message.entry,
        checkpoint=message.checkpoint,
        tree_size=message.tree_size,
        inclusion_proof=tuple(message.inclusion_proof),
        duplicate=message.duplicate,
    )


def refusal_of(error: LedgerError) -> handoff_pb2.Refusal:
    """Everything ``error`` carries, on the wire."""
    known = next(cls for cls in type(error).__mro__ if cls in ERROR_TYPES.values())
    refusal = handoff_pb2.Refusal(
        error_type=known.__name__,
        code=error.code,
        message=error.message,
        reason=error.details.reason,
        metadata=error.details.metadata,
        field_violations=[
            handoff_pb2.FieldViolation(field=violation.field, description=violation.description)
            for violation in error.details.field_violations
        ],
    )
    retry_delay_ms = getattr(error, "retry_delay_ms", None)
    if isinstance(retry_delay_ms, int):
        refusal.retry_delay_ms = retry_delay_ms
    return refusal


def error_of(refusal: handoff_pb2.Refusal) -> LedgerError:
    """The LedgerError a refusal describes (equal in class, message and details)."""
    cls = ERROR_TYPES.get(refusal.error_type) or _CODE_TYPES.get(refusal.code, LedgerError)
    # The subclasses' constructors take different subsets of the details (Unavailable has no
    # field violations, Overloaded no metadata): build the instance, then set what it carries.
    error = cls.__new__(cls)
    LedgerError.__init__(
        error,
        refusal.message,
        reason=refusal.reason,
        field_violations=[
            FieldViolation(violation.field, violation.description)
            for violation in refusal.field_violations
        ],
        metadata=dict(refusal.metadata),
    )
    if refusal.HasField("retry_delay_ms"):
        error.retry_delay_ms = refusal.retry_delay_ms  # type: ignore[attr-defined]
    return error


def outcome_frame(handoff_id: int, outcome: Outcome) -> handoff_pb2.Frame:
    """The Outcome frame answering hand-off ``handoff_id``."""
    if isinstance(outcome, Receipt):
        message = handoff_pb2.Outcome(id=handoff_id, receipt=receipt_to_proto(outcome))
    else:
        message = handoff_pb2.Outcome(id=handoff_id, refusal=refusal_of(outcome))
    return handoff_pb2.Frame(outcome=message)


def outcome_of(message: handoff_pb2.Outcome) -> Outcome:
    """The receipt or error an Outcome carries."""
    if message.HasField("receipt"):
        return receipt_of_proto(message.receipt)
    return error_of(message.refusal)
