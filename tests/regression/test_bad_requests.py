"""Regression tests of issue 15's bad-input findings: each was answered UNKNOWN or INTERNAL.

Every one is now refused by the one decode-and-validation layer (``ledger.rpc.request_layer``)
with INVALID_ARGUMENT (or RESOURCE_EXHAUSTED for sizes) and a BadRequest field violation naming
the field, and writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest
from google.protobuf.message import Message

from clients.errors import from_rpc_error
from ledger.signing import Ed25519Signer
from ledger.v1 import admin_service_pb2 as admin
from ledger.v1 import coverage_service_pb2 as coverage
from ledger.v1 import ledger_service_pb2 as ledger
from ledger.v1 import types_pb2
from payments.v1 import renewal_service_pb2 as renewal
from tests.builders import person
from tests.conftest import ServerHandle
from tests.stack import (
    Method,
    RowCounter,
    call_raw,
    every_method,
    metadata_for,
    start_full_server,
)

TIMEOUT_SECONDS = 30
UNDECODABLE = b"\xff\xff\xff\xff"
"""A field tag with no end: no message parses from these bytes."""


@pytest.fixture(scope="module")
def database_url(module_database_url: str) -> str:
    """One database per engine for the whole module: every test here is refused, checks that
    nothing was written, and so leaves it as it found it."""
    return module_database_url


@pytest.fixture(scope="module")
def full_server(
    database_url: str,
    log_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerHandle]:
    """One full server per engine for the module (not one per case: ~120 server starts)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        tmp_path = tmp_path_factory.mktemp("full-server")
        server = start_full_server(database_url, log_signer, operator_signer, tmp_path, monkeypatch)
        yield server
        server.stop()


@pytest.fixture(scope="module")
def row_counts(
    full_server: ServerHandle, database_url: str
) -> Iterator[Callable[[], dict[str, int]]]:
    """Rows of every table of the module's database (its tables reflected once, after the
    server migrated it): what every refused request here must leave unchanged."""
    counter = RowCounter(database_url)
    yield counter.counts
    counter.close()


def _method(full_name: str) -> Method:
    [found] = [m for m in every_method() if m.descriptor.full_name == full_name]
    return found


@pytest.mark.parametrize("method", every_method(), ids=lambda m: m.descriptor.full_name)
def test_a_body_that_does_not_parse_is_invalid_argument_on_every_method(
    method: Method, full_server: ServerHandle, row_counts: Callable[[], dict[str, int]]
) -> None:
    before = row_counts()
    with full_server.channel(*method.caller) as channel:
        code = call_raw(
            channel, method, [UNDECODABLE], metadata_for(full_server, method), TIMEOUT_SECONDS
        )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert row_counts() == before


def _person_99() -> types_pb2.PersonId:
    bad = person(1)
    bad.type = 99  # type: ignore[assignment]
    return bad


def _find_entries_person_99() -> Message:
    return coverage.FindEntriesRequest(person=_person_99())


def _check_household_sponsor_99() -> Message:
    return coverage.CheckHouseholdRequest(
        sponsor=_person_99(), through_date=types_pb2.CivilDate(year=2027, month=1, day=1)
    )


def _quote(**member: int) -> Callable[[], Message]:
    def build() -> Message:
        request = renewal.QuoteRenewalRequest(jurisdiction="KW", sponsor=person(1))
        request.members.add(person=person(1), **member)  # type: ignore[arg-type]
        return request

    return build


BEYOND_INT64 = 2**63
YEAR_10000 = 253_402_300_800
CASES: dict[str, tuple[str, Callable[[], Message], str, str]] = {
    "FindEntries person.type 99": (
        "ledger.v1.CoverageService.FindEntries",
        _find_entries_person_99,
        "INVALID_ARGUMENT",
        "person.type",
    ),
    "CheckHousehold sponsor.type 99": (
        "ledger.v1.CoverageService.CheckHousehold",
        _check_household_sponsor_99,
        "INVALID_ARGUMENT",
        "sponsor.type",
    ),
    "QuoteRenewal unknown relationship": (
        "payments.v1.RenewalService.QuoteRenewal",
        _quote(relationship=77),
        "INVALID_ARGUMENT",
        "members[0].relationship",
    ),
    "QuoteRenewal unknown residence_category": (
        "payments.v1.RenewalService.QuoteRenewal",
        _quote(residence_category=77),
        "INVALID_ARGUMENT",
        "members[0].residence_category",
    ),
    "FindEntries after_leaf_index 2^63": (
        "ledger.v1.CoverageService.FindEntries",
        lambda: coverage.FindEntriesRequest(policy_id="P-1", after_leaf_index=BEYOND_INT64),
        "INVALID_ARGUMENT",
        "after_leaf_index",
    ),
    "ListPolicyHistory after_leaf_index 2^63": (
        "ledger.v1.CoverageService.ListPolicyHistory",
        lambda: coverage.ListPolicyHistoryRequest(
            insurer_id="gulf-health", policy_id="P-1", after_leaf_index=BEYOND_INT64
        ),
        "INVALID_ARGUMENT",
        "after_leaf_index",
    ),
    "GetCheckpoint tree_size 2^63": (
        "ledger.v1.LedgerService.GetCheckpoint",
        lambda: ledger.GetCheckpointRequest(tree_size=BEYOND_INT64),
        "INVALID_ARGUMENT",
        "tree_size",
    ),
    "GetInclusionProof leaf_index 2^64-1": (
        "ledger.v1.LedgerService.GetInclusionProof",
        lambda: ledger.GetInclusionProofRequest(leaf_index=2**64 - 1),
        "INVALID_ARGUMENT",
        "leaf_index",
    ),
    # RegisterInsurerKey / RevokeInsurerKey (bad timestamps: INTERNAL before) are gone: keys are
    # KeyRegistered / KeyRevoked events now, and their timestamps are checked by the same layer
    # inside any message (tests/unit/test_request_validation.py).
    "ListInsurerKeys over-long insurer_id": (
        "ledger.v1.AdminService.ListInsurerKeys",
        lambda: admin.ListInsurerKeysRequest(insurer_id="x" * 65),
        "INVALID_ARGUMENT",
        "insurer_id",
    ),
    "ListInsurerKeys insurer_id with NUL (INTERNAL on PostgreSQL, found by the fuzz suite)": (
        "ledger.v1.AdminService.ListInsurerKeys",
        lambda: admin.ListInsurerKeysRequest(insurer_id="\x00"),
        "INVALID_ARGUMENT",
        "insurer_id",
    ),
    "CheckHousehold 65 members": (
        "ledger.v1.CoverageService.CheckHousehold",
        lambda: coverage.CheckHouseholdRequest(
            sponsor=person(1),
            members=[coverage.HouseholdMember(person=person(n)) for n in range(65)],
        ),
        "INVALID_ARGUMENT",
        "members",
    ),
    "SubmitEvent payload over 64 KiB": (
        "ledger.v1.LedgerService.SubmitEvent",
        lambda: ledger.SubmitEventRequest(
            envelope=types_pb2.Envelope(
                payload=b"\x00" * (64 * 1024 + 1),
                payload_type="application/vnd.policy-ledger.event+protobuf",
                signatures=[types_pb2.Signature(sig=b"s" * 64, keyid="k")],
            )
        ),
        "RESOURCE_EXHAUSTED",
        "envelope.payload",
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_bad_field_is_refused_naming_it_and_nothing_is_written(
    case: str, full_server: ServerHandle, row_counts: Callable[[], dict[str, int]]
) -> None:
    method_name, build, code, field = CASES[case]
    method = _method(method_name)
    before = row_counts()
    body = build().SerializeToString()
    with full_server.channel(*method.caller) as channel:
        call = channel.unary_unary(method.path)
        with pytest.raises(grpc.RpcError) as raised:
            call(body, timeout=TIMEOUT_SECONDS, metadata=metadata_for(full_server, method))
    error = from_rpc_error(raised.value)
    assert error.code.name == code, str(error)
    assert field in [violation.field for violation in error.field_violations], str(error)
    assert row_counts() == before


def test_an_undecodable_message_in_a_stream_ends_it_invalid_argument_after_the_good_ones(
    full_server: ServerHandle, row_counts: Callable[[], dict[str, int]]
) -> None:
    method = _method("ledger.v1.LedgerService.SubmitEvents")
    before = row_counts()
    empty = ledger.SubmitEventsRequest().SerializeToString()
    with full_server.channel(*method.caller) as channel:
        call = channel.stream_stream(method.path)
        responses = call(iter([empty, UNDECODABLE]), timeout=TIMEOUT_SECONDS)
        with pytest.raises(grpc.RpcError) as raised:
            for _ in responses:
                pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert row_counts() == before
