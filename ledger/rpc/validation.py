"""The one generic request validator: a walk over a message's descriptor and the named limits.

Every request of every service passes here before a servicer sees it (the interceptor in
``ledger.rpc.request_layer`` calls :func:`check_request`). It checks what the wire format lets
through but the service cannot take, for every field of every message, with no per-service code:

- an enum value the schema does not define (proto3 keeps unknown numbers as plain integers);
- an unsigned 64-bit integer above ``limits.request_integer_max`` (storage keeps int64);
- a ``google.protobuf.Timestamp`` outside 0001-01-01..9999-12-31 or with nanos outside 0..10^9-1;
- a string holding the NUL character (PostgreSQL refuses it in text);
- a string, bytes or repeated field over its bound (``limits.request_field_max``, else the
  ``request_*_max`` defaults).

Each problem is one field violation naming the field's path (``members[3].person.type``).
Over-size bytes alone answer RESOURCE_EXHAUSTED (as ``ledger.dsse`` does for an envelope's
payload); every other violation, over-long strings and lists included, INVALID_ARGUMENT.
Whether a field is *required* or well-formed for its meaning (a check digit, a date order)
stays with the servicers.

protovalidate (buf's rules in the protos) was considered: it needs the buf.validate protos as a
dependency of ours and an annotation on each field to do what this walk does for every field of
every message, including the payments extension's, from the descriptors alone.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import cast

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from ledger import limits
from ledger.errors import FieldViolation, InvalidArgument, ResourceExhausted

__all__ = ["check_request"]

_TIMESTAMP = "google.protobuf.Timestamp"
_TIMESTAMP_SECONDS_MIN = -62_135_596_800
"""0001-01-01T00:00:00Z, the earliest instant a Timestamp may hold."""
_TIMESTAMP_SECONDS_MAX = 253_402_300_799
"""9999-12-31T23:59:59Z, the latest."""
_NANOS_MAX = 999_999_999
_UNSIGNED_64 = (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64)


@dataclass(frozen=True)
class _Violation:
    field: str
    description: str
    size_only: bool
    """An over-size bytes field: RESOURCE_EXHAUSTED when nothing else is wrong."""


def _path(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _bound(field: FieldDescriptor, default: int) -> int:
    return limits.request_field_max.get(field.full_name, default)


_OTHER, _ENUM, _UNSIGNED, _STRING, _BYTES, _MESSAGE = range(6)


@functools.cache
def _kind(field: FieldDescriptor) -> int:
    """What the walk checks of a field's values (looked up once per field of the schema)."""
    if field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        return _MESSAGE
    if field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        return _ENUM
    if field.type in _UNSIGNED_64:
        return _UNSIGNED
    if field.type == FieldDescriptor.TYPE_STRING:
        return _STRING
    if field.type == FieldDescriptor.TYPE_BYTES:
        return _BYTES
    return _OTHER


def _scalar_violation(field: FieldDescriptor, kind: int, value: object) -> tuple[str, bool] | None:
    """(description, size only) of a scalar value's problem, if any."""
    enum = field.enum_type
    if kind == _ENUM and enum is not None:
        if value not in enum.values_by_number:
            return f"unknown {enum.name} value {value}", False
    elif kind == _UNSIGNED:
        if cast(int, value) > limits.request_integer_max:
            return f"at most {limits.request_integer_max}", False
    elif kind == _STRING:
        text = cast(str, value)
        bound = _bound(field, limits.request_string_chars_max)
        if len(text) > bound:
            return f"{len(text)} characters, at most {bound}", False
        if "\x00" in text:
            # No identifier or name holds one, and PostgreSQL cannot even compare text with it.
            return "contains the NUL character", False
    elif kind == _BYTES:
        data = cast(bytes, value)
        bound = _bound(field, limits.request_bytes_max)
        if len(data) > bound:
            return f"{len(data)} bytes, at most {bound}", True
    return None


def _timestamp_violations(message: Message, path: str) -> list[_Violation]:
    seconds = getattr(message, "seconds", 0)
    nanos = getattr(message, "nanos", 0)
    found = []
    if not _TIMESTAMP_SECONDS_MIN <= seconds <= _TIMESTAMP_SECONDS_MAX:
        found.append(_Violation(_path(path, "seconds"), "outside 0001-01-01..9999-12-31", False))
    if not 0 <= nanos <= _NANOS_MAX:
        found.append(_Violation(_path(path, "nanos"), f"outside 0..{_NANOS_MAX}", False))
    return found


def _walk(message: Message, path: str, found: list[_Violation]) -> None:
    if message.DESCRIPTOR.full_name == _TIMESTAMP:
        found.extend(_timestamp_violations(message, path))
        return
    for field, value in message.ListFields():
        if len(found) > limits.request_violations_max:
            return
        kind = _kind(field)
        if field.is_repeated:
            bound = _bound(field, limits.request_repeated_max)
            if len(value) > bound:
                found.append(
                    _Violation(
                        _path(path, field.name), f"{len(value)} items, at most {bound}", False
                    )
                )
                continue
            if kind == _OTHER:
                continue
            for position, item in enumerate(value):
                _check_value(field, kind, item, path, position=position, found=found)
        elif kind != _OTHER:
            _check_value(field, kind, value, path, position=None, found=found)


def _check_value(
    field: FieldDescriptor,
    kind: int,
    value: object,
    path: str,
    *,
    position: int | None,
    found: list[_Violation],
) -> None:
    """Check one value of ``field`` (item ``position`` of a repeated one); its path is only
    spelled out for a message's walk or a violation."""
    if kind == _MESSAGE:
        _walk(cast(Message, value), _item_path(path, field.name, position), found)
        return
    violation = _scalar_violation(field, kind, value)
    if violation is not None:
        description, size_only = violation
        found.append(_Violation(_item_path(path, field.name, position), description, size_only))


def _item_path(path: str, name: str, position: int | None) -> str:
    field_path = _path(path, name)
    return field_path if position is None else f"{field_path}[{position}]"


def check_request(request: Message) -> None:
    """Raise INVALID_ARGUMENT (or RESOURCE_EXHAUSTED for sizes only) naming each bad field."""
    found: list[_Violation] = []
    _walk(request, "", found)
    if not found:
        return
    listed = found[: limits.request_violations_max]
    violations = [FieldViolation(v.field, v.description) for v in listed]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    message = f"invalid request: {listed[0].field}: {listed[0].description}{more}"
    if all(v.size_only for v in found):
        raise ResourceExhausted(message, reason="REQUEST_TOO_LARGE", field_violations=violations)
    raise InvalidArgument(message, reason="REQUEST_INVALID", field_violations=violations)
