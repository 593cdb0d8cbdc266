"""Refusals cross the hand-off exactly: every LedgerError subclass comes back as an equal error
(class, message, reason, metadata, field violations, retry hint), so a worker's caller gets the
gRPC status and details the single-process server gives."""

from __future__ import annotations

import importlib

import pytest

from ledger.errors import (
    FieldViolation,
    InvalidArgument,
    LedgerError,
    ResourceExhausted,
    Unavailable,
)
from ledger.fair import Overloaded
from ledger.handoff.wire import ERROR_TYPES, error_of, refusal_of
from ledger.internal.v1 import handoff_pb2
from tests.statuses import unpacked_status

# Every module that defines a LedgerError subclass (so __subclasses__ sees them all).
for _module in (
    "ledger.merkle.verify",
    "ledger.signing",
    "ledger.checkpoint",
    "ledger.note",
    "payments.fees",
):
    importlib.import_module(_module)


def _all_subclasses(cls: type[LedgerError]) -> list[type[LedgerError]]:
    found: list[type[LedgerError]] = [cls]
    for subclass in cls.__subclasses__():
        found.extend(_all_subclasses(subclass))
    return found


SUBCLASSES = sorted(set(_all_subclasses(LedgerError)), key=lambda cls: cls.__qualname__)


def _crossed(error: LedgerError) -> LedgerError:
    """``error`` after a trip over the wire (serialized and parsed, as a frame carries it)."""
    wire = handoff_pb2.Refusal.FromString(refusal_of(error).SerializeToString())
    return error_of(wire)


def _full(cls: type[LedgerError]) -> LedgerError:
    """An instance of ``cls`` carrying every detail (whatever its constructor accepts)."""
    error = cls.__new__(cls)
    LedgerError.__init__(
        error,
        f"a {cls.__name__} for the test",
        reason="TEST_REASON",
        field_violations=[FieldViolation("a.b", "bad"), FieldViolation("c[0]", "worse")],
        metadata={"key_id": "k1", "event_id": "e1"},
    )
    if issubclass(cls, Unavailable | Overloaded):
        error.retry_delay_ms = 1234  # type: ignore[attr-defined]
    return error


def test_the_table_covers_every_class_of_ledger_errors() -> None:
    # A class the table lacks still crosses (as its nearest base), but the ones defined in
    # ledger.errors and ledger.fair must cross as themselves.
    for cls in SUBCLASSES:
        if cls.__module__ in ("ledger.errors", "ledger.fair"):
            assert ERROR_TYPES[cls.__name__] is cls


@pytest.mark.parametrize("cls", SUBCLASSES, ids=lambda cls: cls.__qualname__)
def test_every_ledger_error_crosses_with_everything_it_carries(cls: type[LedgerError]) -> None:
    error = _full(cls)
    crossed = _crossed(error)
    expected = next(base for base in cls.__mro__ if base in ERROR_TYPES.values())
    assert type(crossed) is expected
    assert isinstance(crossed, LedgerError) and crossed.code == error.code
    assert crossed.message == error.message
    assert crossed.details == error.details
    assert getattr(crossed, "retry_delay_ms", None) == getattr(error, "retry_delay_ms", None)
    assert unpacked_status(crossed) == unpacked_status(error)


@pytest.mark.parametrize(
    "error",
    [
        Unavailable("full", reason="OVERLOADED"),
        Unavailable("slow", reason="X", metadata={"a": "b"}, retry_delay_ms=0),
        Overloaded("busy", reason="CALLER_QUEUE_FULL", retry_delay_ms=50),
        ResourceExhausted("big", reason="PAYLOAD_TOO_LARGE"),
        InvalidArgument("bad", field_violations=[FieldViolation("f", "d")]),
        LedgerError("plain"),
    ],
    ids=repr,
)
def test_errors_made_by_their_own_constructors_cross_equal(error: LedgerError) -> None:
    crossed = _crossed(error)
    assert type(crossed) is type(error)
    assert (crossed.message, crossed.details) == (error.message, error.details)
    assert getattr(crossed, "retry_delay_ms", None) == getattr(error, "retry_delay_ms", None)
    assert unpacked_status(crossed) == unpacked_status(error)


def test_a_refusal_naming_a_class_the_receiver_lacks_is_rebuilt_from_its_code() -> None:
    refusal = refusal_of(Overloaded("busy", reason="R", retry_delay_ms=9))
    refusal.error_type = "SomethingNewer"
    crossed = error_of(refusal)
    assert type(crossed) is ResourceExhausted and crossed.code == "RESOURCE_EXHAUSTED"
    assert crossed.message == "busy" and crossed.reason == "R"
    refusal.code = "NOT_A_CODE"
    assert type(error_of(refusal)) is LedgerError
