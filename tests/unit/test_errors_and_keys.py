"""The error root, the status table, key validity windows, clock and node keys."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2

from ledger.clock import from_micros, to_micros
from ledger.errors import (
    FieldViolation,
    InvalidArgument,
    InvariantViolation,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    check,
)
from ledger.keys import InsurerKey, check_key_usable, insurer_key_id
from ledger.merkle import NodeID
from ledger.rpc.status import ERROR_DOMAIN, status_of
from ledger.storage.nodes import node_id, node_key

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_status_carries_code_reason_and_field_violations() -> None:
    error = InvalidArgument(
        "bad",
        reason="EVENT_INVALID",
        field_violations=[FieldViolation("a.b", "required")],
        metadata={"k": "v"},
    )
    status = status_of(error)
    assert status.code == code_pb2.INVALID_ARGUMENT == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    info, request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(request)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "EVENT_INVALID",
        ERROR_DOMAIN,
        {"k": "v"},
    )
    assert [(v.field, v.description) for v in request.field_violations] == [("a.b", "required")]
    assert status_of(NotFound("x")).code == code_pb2.NOT_FOUND


def test_unexpected_errors_become_internal_without_leaking_text() -> None:
    status = status_of(RuntimeError("secret path /etc/x"))
    assert status.code == code_pb2.INTERNAL and "secret" not in status.message


def test_check_survives_optimisation_and_raises_invariant_violation() -> None:
    check(True, "fine")
    with pytest.raises(InvariantViolation, match="broken"):
        check(False, "broken")


def _key(**changes: object) -> InsurerKey:
    values: dict[str, object] = {
        "key_id": "k",
        "insurer_id": "ins",
        "public_key": b"\x01" * 32,
        "valid_from": T0,
        "valid_until": T0 + dt.timedelta(days=10),
        "revoked_at": None,
        "registered_at": T0,
    }
    values.update(changes)
    return InsurerKey(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "insurer", "at", "error", "reason"),
    [
        (None, "ins", T0, Unauthenticated, "KEY_UNKNOWN"),
        (_key(), "other", T0, PermissionDenied, "KEY_WRONG_INSURER"),
        (_key(), "ins", T0 - dt.timedelta(seconds=1), PermissionDenied, "KEY_NOT_YET_VALID"),
        (_key(), "ins", T0 + dt.timedelta(days=10), PermissionDenied, "KEY_EXPIRED"),
        (
            _key(revoked_at=T0 + dt.timedelta(days=1)),
            "ins",
            T0 + dt.timedelta(days=1),
            PermissionDenied,
            "KEY_REVOKED",
        ),
    ],
)
def test_key_window_refusals(
    key: InsurerKey | None, insurer: str, at: dt.datetime, error: type[Exception], reason: str
) -> None:
    with pytest.raises(error) as raised:
        check_key_usable(key, "k", insurer, at)
    assert raised.value.reason == reason  # type: ignore[attr-defined]


def test_key_usable_inside_its_window() -> None:
    key = _key(revoked_at=T0 + dt.timedelta(days=1))
    assert check_key_usable(key, "k", "ins", T0) is key
    assert check_key_usable(key, "k", "ins", T0 + dt.timedelta(hours=23)) is key


def test_key_id_is_derived_from_the_public_key() -> None:
    # printf '\x01%.0s' {1..32} | sha256sum -> first 8 bytes
    assert insurer_key_id(b"\x01" * 32) == "ed25519:72cd6e8422c407fb"


def test_clock_round_trip_and_naive_refused() -> None:
    instant = dt.datetime(2026, 11, 22, 1, 2, 3, 456789, tzinfo=dt.UTC)
    assert from_micros(to_micros(instant)) == instant
    with pytest.raises(ValueError, match="naive"):
        to_micros(dt.datetime(2026, 1, 1))


@pytest.mark.parametrize("node", [NodeID(0, 0), NodeID(3, 5), NodeID(56, 0), NodeID(0, 2**56 - 1)])
def test_node_key_round_trip(node: NodeID) -> None:
    assert node_id(node_key(node)) == node
    assert 0 <= node_key(node) < 2**63


def test_node_key_bounds() -> None:
    with pytest.raises(InvariantViolation):
        node_key(NodeID(57, 0))
    with pytest.raises(InvariantViolation):
        node_key(NodeID(0, 2**56))
