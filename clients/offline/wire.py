"""The LedgerEntry bytes, decoded without the server's code (a minimal protobuf wire reader).

``ledger.v1.LedgerEntry`` (protos/ledger/v1/entry.proto): 1 ``leaf_index`` (varint),
2 ``integrated_time`` (google.protobuf.Timestamp: 1 seconds, 2 nanos), 3 ``envelope``
(ledger.v1.Envelope: 1 payload bytes, 2 payload_type string, 3 repeated Signature: 1 sig bytes,
2 keyid string). Unknown fields are refused: an auditor attests only to what it understood.
"""

from __future__ import annotations

from dataclasses import dataclass

from clients.offline.merkle import VerificationFailure

__all__ = [
    "Entry",
    "KeyEvent",
    "Signature",
    "decode_entry",
    "decode_key_event",
    "fields",
]


@dataclass(frozen=True)
class Signature:
    """One DSSE signature."""

    sig: bytes
    keyid: str


@dataclass(frozen=True)
class Entry:
    """A decoded ledger entry."""

    leaf_index: int
    integrated_seconds: int
    integrated_nanos: int
    payload: bytes
    payload_type: str
    signatures: tuple[Signature, ...]


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise VerificationFailure("truncated or oversized varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


def fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs: varints as int, length-delimited as bytes."""
    fields: list[tuple[int, int | bytes]] = []
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = _varint(data, position)
            fields.append((number, value))
        elif wire_type == 2:
            length, position = _varint(data, position)
            if position + length > len(data):
                raise VerificationFailure("truncated length-delimited field")
            fields.append((number, data[position : position + length]))
            position += length
        else:
            raise VerificationFailure(f"unexpected wire type {wire_type} (field {number})")
    return fields


def _expect(value: int | bytes, kind: type, where: str) -> None:
    if not isinstance(value, kind):
        raise VerificationFailure(f"{where} has the wrong wire type")


def _decode_time(data: bytes) -> tuple[int, int]:
    seconds = nanos = 0
    for number, value in fields(data):
        _expect(value, int, "integrated_time field")
        if number == 1:
            seconds = int(value)
        elif number == 2:
            nanos = int(value)
        else:
            raise VerificationFailure(f"unknown integrated_time field {number}")
    return seconds, nanos


def _decode_signature(data: bytes) -> Signature:
    sig, keyid = b"", ""
    for number, value in fields(data):
        _expect(value, bytes, "signature field")
        if number == 1:
            sig = bytes(value)
        elif number == 2:
            keyid = bytes(value).decode("utf-8")
        else:
            raise VerificationFailure(f"unknown signature field {number}")
    return Signature(sig, keyid)


def _decode_envelope(data: bytes) -> tuple[bytes, str, tuple[Signature, ...]]:
    payload, payload_type = b"", ""
    signatures: list[Signature] = []
    for number, value in fields(data):
        _expect(value, bytes, "envelope field")
        raw = bytes(value)
        if number == 1:
            payload = raw
        elif number == 2:
            payload_type = raw.decode("utf-8")
        elif number == 3:
            signatures.append(_decode_signature(raw))
        else:
            raise VerificationFailure(f"unknown envelope field {number}")
    return payload, payload_type, tuple(signatures)


def decode_entry(data: bytes) -> Entry:
    """Decode LedgerEntry bytes strictly."""
    leaf_index, seconds, nanos = 0, 0, 0
    payload, payload_type = b"", ""
    signatures: tuple[Signature, ...] = ()
    for number, value in fields(data):
        if number == 1:
            _expect(value, int, "leaf_index")
            leaf_index = int(value)
        elif number == 2:
            _expect(value, bytes, "integrated_time")
            seconds, nanos = _decode_time(bytes(value))
        elif number == 3:
            _expect(value, bytes, "envelope")
            payload, payload_type, signatures = _decode_envelope(bytes(value))
        else:
            raise VerificationFailure(f"unknown entry field {number}")
    return Entry(leaf_index, seconds, nanos, payload, payload_type, signatures)


# ledger.v1.Event (protos/ledger/v1/events.proto), as far as the key history needs it: 2
# ``insurer_id`` (the signer), 22 ``key_registered``, 23 ``key_revoked``. Other bodies are the
# policy domain's, not the auditor's: they are skipped, not read.
_EVENT_SIGNER = 2
_KEY_REGISTERED = 22
_KEY_REVOKED = 23
_SIGNER_ROLES = {
    1: "operator",
    2: "insurer",
    3: "authority",
    4: "regulator",
    5: "funder",
    6: "beneficiary",
}
"""ledger.v1.SignerRole values."""


@dataclass(frozen=True)
class KeyEvent:
    """A KeyRegistered (``public_key`` set) or KeyRevoked (``key_id`` set) event of the log."""

    signer: str
    principal: str = ""
    role: str = ""
    public_key: bytes = b""
    valid_from: tuple[int, int] | None = None
    valid_until: tuple[int, int] | None = None
    key_id: str = ""
    revoked_from: tuple[int, int] | None = None


def _text(value: int | bytes, where: str) -> str:
    _expect(value, bytes, where)
    return bytes(value).decode("utf-8")


def _timestamp(value: int | bytes, where: str) -> tuple[int, int]:
    _expect(value, bytes, where)
    seconds = nanos = 0
    for number, part in fields(bytes(value)):
        _expect(part, int, f"{where} field")
        if number == 1:
            seconds = int(part)
        elif number == 2:
            nanos = int(part)
        else:
            raise VerificationFailure(f"unknown {where} field {number}")
    return seconds, nanos


def _decode_key_registered(signer: str, data: bytes) -> KeyEvent:
    values: dict[str, object] = {}
    for number, value in fields(data):
        if number == 1:
            values["principal"] = _text(value, "KeyRegistered.principal_id")
        elif number == 2:
            _expect(value, int, "KeyRegistered.role")
            if int(value) not in _SIGNER_ROLES:
                raise VerificationFailure(f"unknown KeyRegistered.role {value!r}")
            values["role"] = _SIGNER_ROLES[int(value)]
        elif number == 3:
            _expect(value, bytes, "KeyRegistered.public_key")
            values["public_key"] = bytes(value)
        elif number == 4:
            values["valid_from"] = _timestamp(value, "KeyRegistered.valid_from")
        elif number == 5:
            values["valid_until"] = _timestamp(value, "KeyRegistered.valid_until")
        elif number == 6:
            _text(value, "KeyRegistered.jurisdiction")
        else:
            raise VerificationFailure(f"unknown KeyRegistered field {number}")
    if len(values.get("public_key", b"")) != 32 or "valid_from" not in values:  # type: ignore[arg-type]
        raise VerificationFailure("KeyRegistered without a 32-byte public key and valid_from")
    return KeyEvent(signer=signer, **values)  # type: ignore[arg-type]


def _decode_key_revoked(signer: str, data: bytes) -> KeyEvent:
    key_id = ""
    revoked_from: tuple[int, int] | None = None
    for number, value in fields(data):
        if number == 1:
            key_id = _text(value, "KeyRevoked.key_id")
        elif number == 2:
            revoked_from = _timestamp(value, "KeyRevoked.revoked_from")
        elif number == 3:
            _text(value, "KeyRevoked.reason")
        else:
            raise VerificationFailure(f"unknown KeyRevoked field {number}")
    if not key_id:
        raise VerificationFailure("KeyRevoked without a key_id")
    return KeyEvent(signer=signer, key_id=key_id, revoked_from=revoked_from)


def decode_key_event(payload: bytes) -> KeyEvent | None:
    """The key event a signed ledger.v1.Event payload carries, or None for any other event."""
    signer = ""
    body: tuple[int, bytes] | None = None
    for number, value in fields(payload):
        if number == _EVENT_SIGNER:
            signer = _text(value, "Event.insurer_id")
        elif number in (_KEY_REGISTERED, _KEY_REVOKED):
            _expect(value, bytes, "Event key body")
            body = (number, bytes(value))
    if body is None:
        return None
    if body[0] == _KEY_REGISTERED:
        return _decode_key_registered(signer, body[1])
    return _decode_key_revoked(signer, body[1])
