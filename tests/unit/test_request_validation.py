"""The generic request validator (ledger.rpc.validation), without a server."""

from __future__ import annotations

import pytest

from ledger import limits
from ledger.errors import InvalidArgument, ResourceExhausted
from ledger.rpc.validation import check_request
from ledger.v1 import (
    coverage_service_pb2,
    events_pb2,
    ledger_service_pb2,
    types_pb2,
)


def test_a_valid_request_passes() -> None:
    request = coverage_service_pb2.FindEntriesRequest(policy_id="P-1", after_leaf_index=2**63 - 1)
    check_request(request)


def test_every_bad_field_is_named_by_its_path() -> None:
    request = coverage_service_pb2.CheckHouseholdRequest()
    request.sponsor.type = 7  # type: ignore[assignment]
    request.members.add().person.value = "x" * (limits.person_id_value_chars_max + 1)
    with pytest.raises(InvalidArgument) as raised:
        check_request(request)
    fields = [violation.field for violation in raised.value.details.field_violations]
    assert fields == ["sponsor.type", "members[0].person.value"]


def test_timestamp_bounds_are_checked_inside_any_message() -> None:
    request = events_pb2.Event(event_id="k")
    request.key_revoked.revoked_from.seconds = 253_402_300_800  # 10000-01-01
    request.key_revoked.revoked_from.nanos = -1
    with pytest.raises(InvalidArgument) as raised:
        check_request(request)
    fields = [violation.field for violation in raised.value.details.field_violations]
    assert fields == ["key_revoked.revoked_from.seconds", "key_revoked.revoked_from.nanos"]


def test_oversize_bytes_alone_are_resource_exhausted_with_anything_else_invalid() -> None:
    envelope = types_pb2.Envelope(payload=b"\x00" * (limits.envelope_payload_bytes_max + 1))
    with pytest.raises(ResourceExhausted):
        check_request(ledger_service_pb2.SubmitEventRequest(envelope=envelope))
    envelope.payload_type = "\x00"
    with pytest.raises(InvalidArgument):
        check_request(ledger_service_pb2.SubmitEventRequest(envelope=envelope))


def test_the_violations_listed_are_bounded() -> None:
    request = coverage_service_pb2.CheckHouseholdRequest()
    for _ in range(limits.household_members_max):
        request.members.add().person.type = 99  # type: ignore[assignment]
    with pytest.raises(InvalidArgument) as raised:
        check_request(request)
    assert len(raised.value.details.field_violations) == limits.request_violations_max
