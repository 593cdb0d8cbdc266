"""Ledger entries: the bytes behind each Merkle leaf, encoded once and stored verbatim.

An entry is a ``ledger.v1.LedgerEntry`` (leaf index, integration time, the envelope as received).
:func:`encode_entry` is the only place that produces leaf bytes; :func:`decode_entry` is what an
auditor uses to get the envelope back. The leaf hash is ``SHA-256(0x00 || entry bytes)``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from ledger.dsse import Envelope, EnvelopeSignature
from ledger.errors import InvalidArgument
from ledger.v1 import entry_pb2, types_pb2

__all__ = [
    "DecodedEntry",
    "decode_entry",
    "encode_entry",
    "envelope_from_proto",
    "envelope_to_proto",
]


@dataclass(frozen=True)
class DecodedEntry:
    """A ledger entry read back from its leaf bytes."""

    leaf_index: int
    integrated_time: dt.datetime
    envelope: Envelope


def envelope_to_proto(envelope: Envelope) -> types_pb2.Envelope:
    """The wire form of a DSSE envelope."""
    return types_pb2.Envelope(
        payload=envelope.payload,
        payload_type=envelope.payload_type,
        signatures=[
            types_pb2.Signature(sig=signature.sig, keyid=signature.keyid)
            for signature in envelope.signatures
        ],
    )


def envelope_from_proto(message: types_pb2.Envelope) -> Envelope:
    """The domain form of a wire DSSE envelope; payload bytes are kept as they are."""
    return Envelope(
        payload_type=message.payload_type,
        payload=message.payload,
        signatures=tuple(
            EnvelopeSignature(keyid=signature.keyid, sig=signature.sig)
            for signature in message.signatures
        ),
    )


def encode_entry(leaf_index: int, integrated_time: dt.datetime, envelope: Envelope) -> bytes:
    """Encode the leaf bytes of the entry at ``leaf_index``. Called once per entry, ever."""
    message = entry_pb2.LedgerEntry(leaf_index=leaf_index, envelope=envelope_to_proto(envelope))
    message.integrated_time.FromDatetime(integrated_time)
    return message.SerializeToString(deterministic=True)


def decode_entry(data: bytes) -> DecodedEntry:
    """Decode leaf bytes; raises InvalidArgument when they are not a LedgerEntry."""
    message = entry_pb2.LedgerEntry()
    try:
        message.ParseFromString(data)
    except DecodeError as error:
        raise InvalidArgument(f"entry bytes are not a ledger.v1.LedgerEntry: {error}") from error
    return DecodedEntry(
        leaf_index=message.leaf_index,
        integrated_time=message.integrated_time.ToDatetime(tzinfo=dt.UTC),
        envelope=envelope_from_proto(message.envelope),
    )
