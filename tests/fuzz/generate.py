"""Request generation for the fuzz suite: hypothesis strategies built from a message's descriptor,
and seeded byte-level mutation of valid messages.

The strategies know nothing of our services: they read field types from the descriptor, so a new
field or method is fuzzed without a change here. Values favour the edges that found bugs before
(2^63 in a uint64, unknown enum numbers, negative nanos, very long strings and lists).
"""

from __future__ import annotations

import random
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

__all__ = ["message_strategy", "mutated"]

DEPTH_MAX = 4
"""How deep nested messages are generated (our requests nest about three levels)."""
LONG_TEXT_CHARS = 2_000
LONG_LIST_ITEMS = 70
"""Just above the largest per-field list bound (64 household members)."""
TIMESTAMP = "google.protobuf.Timestamp"

_WORDS = ("gulf-health", "kw-gov-health", "SA", "KW", "P-1", "2000000008", "simulated", "")


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    candidates = [low, high, 0, 1, -1, 2**31 - 1, 2**31, 2**32 - 1, 2**63 - 1, 2**63]
    inside = [value for value in candidates if low <= value <= high]
    return st.sampled_from(inside) | st.integers(low, high)


_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type in _RANGES:
        return _integers(*_RANGES[field.type])
    if field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        return st.sampled_from(list(field.enum_type.values_by_number)) | st.integers(-3, 200)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32 if field.type == FieldDescriptor.TYPE_FLOAT else 64)
    if field.type == FieldDescriptor.TYPE_STRING:
        return st.sampled_from(_WORDS) | st.text(max_size=40) | st.just("x" * LONG_TEXT_CHARS)
    return st.binary(max_size=80) | st.just(b"\x00" * (64 * 1024 + 1))


def _timestamp() -> st.SearchStrategy[dict[str, int]]:
    seconds = _integers(-(2**63), 2**63 - 1) | st.integers(0, 4_102_444_800)
    nanos = _integers(-(2**31), 2**31 - 1)
    return st.fixed_dictionaries({"seconds": seconds, "nanos": nanos})


@st.composite
def _message(draw: st.DrawFn, descriptor: Descriptor, depth: int) -> Message:
    message: Message = GetMessageClass(descriptor)()
    if descriptor.full_name == TIMESTAMP:
        for name, value in draw(_timestamp()).items():
            setattr(message, name, value)
        return message
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        is_message = field.type == FieldDescriptor.TYPE_MESSAGE
        if is_message and depth >= DEPTH_MAX:
            continue
        if is_message and field.message_type is not None:
            item: st.SearchStrategy[Any] = _message(field.message_type, depth + 1)
        else:
            item = _scalar(field)
        if field.is_repeated:
            count = draw(st.integers(0, 3) | st.just(LONG_LIST_ITEMS))
            values = [draw(item) for _ in range(count)] if count <= 3 else [draw(item)] * count
            target = getattr(message, field.name)
            for value in values:
                target.add().CopyFrom(value) if is_message else target.append(value)
        elif is_message:
            getattr(message, field.name).CopyFrom(draw(item))
        else:
            setattr(message, field.name, draw(item))
    return message


def message_strategy(descriptor: Descriptor) -> st.SearchStrategy[Message]:
    """Messages of ``descriptor``'s type with any subset of fields set, edges favoured."""
    return _message(descriptor, 0)


def mutated(data: bytes, chance: random.Random) -> bytes:
    """``data`` with one to three byte-level mutations (flip, cut, insert, repeat, new tag)."""
    body = bytearray(data)
    for _ in range(chance.randint(1, 3)):
        operation = chance.randrange(6)
        position = chance.randint(0, len(body))
        if operation == 0 and body:
            body[min(position, len(body) - 1)] ^= 1 << chance.randrange(8)
        elif operation == 1:
            del body[position:]
        elif operation == 2:
            body[position:position] = chance.randbytes(chance.randint(1, 8))
        elif operation == 3:
            body[position:position] = body[chance.randint(0, len(body)) :][:16]
        elif operation == 4:
            # A field tag of any number and wire type, then a varint: unknown or clashing fields.
            body += bytes([chance.randrange(256), chance.randrange(256)])
        else:
            body[position:position] = b"\xff" * chance.randint(1, 10)
    return bytes(body)
