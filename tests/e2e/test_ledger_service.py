"""The ledger end to end: a real server on 127.0.0.1:0 (SQLite and PostgreSQL), driven by the
Python clients in clients/; everything the server says is verified with the log's public key."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from clients.auditor import AuditorClient
from clients.errors import ClientError, from_rpc_error
from clients.insurer import InsurerClient
from clients.operator import OperatorClient
from clients.samples import policy_issued, sample_events
from clients.verify import TrustedLog, VerifiedReceipt
from ledger.errors import VerificationError
from ledger.keys import insurer_key_id
from ledger.merkle import leaf_hash
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer, format_verifier_key
from ledger.v1 import admin_service_pb2, admin_service_pb2_grpc, events_pb2
from ledger.v1 import ledger_service_pb2 as pb
from ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from tests import clock as test_clock
from tests.builders import tokens
from tests.conftest import ServerHandle, onboard

INSURER = "gulf-health"
NOW = test_clock.now()
ONBOARDED = 3
"""Entries before the insurer's first: leaf 0 the genesis entry (the operator's key), leaf 1 the
insurer's KeyRegistered, leaf 2 its InsurerLicensed (the insurer fixture)."""


@pytest.fixture
def channel(server: ServerHandle) -> Iterator[grpc.Channel]:
    with server.channel("insurer", INSURER) as channel:
        yield channel


@pytest.fixture
def auditor_channel(server: ServerHandle) -> Iterator[grpc.Channel]:
    with server.channel("auditor", "auditor") as channel:
        yield channel


@pytest.fixture
def trusted(server: ServerHandle) -> TrustedLog:
    return TrustedLog.from_verifier_key(server.log_verifier_key)


@pytest.fixture
def insurer(
    server: ServerHandle,
    channel: grpc.Channel,
    insurer_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
    trusted: TrustedLog,
) -> InsurerClient:
    onboard(server, operator_signer, INSURER, insurer_signer)
    return InsurerClient(channel, signer=insurer_signer, log=trusted)


def _submit_many(
    insurer: InsurerClient, count: int, first_number: int = 0
) -> list[VerifiedReceipt]:
    results = list(
        insurer.submit_stream(
            sample_events(count, INSURER, NOW, first_number=first_number, tokens=tokens)
        )
    )
    assert all(isinstance(result, VerifiedReceipt) for result in results), results[:3]
    return results  # type: ignore[return-value]


def test_health_and_reflection_are_served(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "ledger.v1.LedgerService", "ledger.v1.AdminService"):
        response = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {
        service.name
        for response in responses
        for service in response.list_services_response.service
    }
    assert {"ledger.v1.LedgerService", "ledger.v1.AdminService", "grpc.health.v1.Health"} <= names


def test_unary_and_streamed_submissions_get_verified_receipts(insurer: InsurerClient) -> None:
    single = insurer.submit(next(sample_events(1, INSURER, NOW, first_number=900, tokens=tokens)))
    assert single.leaf_index == ONBOARDED and single.checkpoint.size == ONBOARDED + 1
    streamed = _submit_many(insurer, 120)
    expected = list(range(ONBOARDED + 1, ONBOARDED + 121))
    assert [receipt.leaf_index for receipt in streamed] == expected
    assert streamed[-1].checkpoint.size == ONBOARDED + 121


def test_concurrent_submissions_share_batches(server: ServerHandle, insurer: InsurerClient) -> None:
    # Independent policies: the callers race, so no event may depend on another's order.
    events = [policy_issued(number, INSURER, NOW, tokens=tokens) for number in range(200)]

    def submit_all() -> list[VerifiedReceipt]:
        with ThreadPoolExecutor(max_workers=16) as pool:
            return list(pool.map(insurer.submit, events))

    # The first 16 callers are held in the queue until all of them wait: they share one batch
    # whatever the machine's load; the rest batch as they come.
    receipts = server.in_one_batch(16, submit_all)
    expected = list(range(ONBOARDED, ONBOARDED + 200))
    assert sorted(receipt.leaf_index for receipt in receipts) == expected
    # Group commit: fewer checkpoints (one per batch) than entries.
    assert server.running.sequencer.batches_committed <= 2 + 200 - 15
    # One checkpoint per batch (the insurer fixture's two batches included; the genesis entry
    # is written at start, not by the sequencer).
    assert (
        len({receipt.checkpoint.size for receipt in receipts}) + 2
        == server.running.sequencer.batches_committed
    )


def test_auditor_verifies_checkpoints_entries_and_proofs(
    auditor_channel: grpc.Channel,
    insurer: InsurerClient,
    insurer_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
    log_signer: Ed25519Signer,
    trusted: TrustedLog,
) -> None:
    early = _submit_many(insurer, 30)[-1].checkpoint
    _submit_many(insurer, 1234, first_number=100)
    auditor = AuditorClient(auditor_channel, log=trusted)
    latest = auditor.checkpoint()
    assert latest.size == ONBOARDED + 1264
    auditor.verify_consistency(early, latest)
    for index in (0, 29, 30, 777, 1264):
        auditor.verify_inclusion(index, latest)
    keys = {
        insurer_key_id(signer.public_key): signer.public_key
        for signer in (insurer_signer, operator_signer, log_signer)  # the log key: leaf 0
    }
    report = auditor.audit(keys, checkpoint=latest)
    assert report.entries_checked == report.signatures_checked == ONBOARDED + 1264
    assert report.root_hash == latest.root_hash
    assert auditor.checkpoint(early.size).root_hash == early.root_hash


def test_inclusion_proof_by_leaf_hash(
    auditor_channel: grpc.Channel, insurer: InsurerClient
) -> None:
    receipts = _submit_many(insurer, 10)
    stub = pb_grpc.LedgerServiceStub(auditor_channel)
    response = stub.GetInclusionProof(
        pb.GetInclusionProofRequest(leaf_hash=receipts[4].leaf_hash, tree_size=ONBOARDED + 6)
    )
    assert (response.leaf_index, response.tree_size) == (ONBOARDED + 4, ONBOARDED + 6)
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetInclusionProof(pb.GetInclusionProofRequest(leaf_hash=leaf_hash(b"nope")))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_entries_are_paged_and_verbatim(
    auditor_channel: grpc.Channel, insurer: InsurerClient
) -> None:
    receipts = _submit_many(insurer, 25)
    stub = pb_grpc.LedgerServiceStub(auditor_channel)
    start = ONBOARDED + 2
    chunks = list(stub.GetEntries(pb.GetEntriesRequest(start_index=start, end_index=10_000)))
    entries = [data for chunk in chunks for data in chunk.entries]
    assert chunks[0].start_index == start and len(entries) == ONBOARDED + 25 - start
    assert [leaf_hash(data) for data in entries] == [r.leaf_hash for r in receipts[2:]]


@pytest.mark.parametrize(
    ("request_message", "method", "code"),
    [
        (pb.GetEntriesRequest(start_index=7, end_index=7), "GetEntries", "OUT_OF_RANGE"),
        (pb.GetEntriesRequest(start_index=2, end_index=1), "GetEntries", "INVALID_ARGUMENT"),
        (pb.GetInclusionProofRequest(tree_size=1), "GetInclusionProof", "INVALID_ARGUMENT"),
        (
            pb.GetInclusionProofRequest(leaf_index=3, tree_size=3),
            "GetInclusionProof",
            "OUT_OF_RANGE",
        ),
        (
            pb.GetInclusionProofRequest(leaf_index=0, tree_size=99),
            "GetInclusionProof",
            "OUT_OF_RANGE",
        ),
        (
            pb.GetConsistencyProofRequest(from_tree_size=0, to_tree_size=3),
            "GetConsistencyProof",
            "OUT_OF_RANGE",
        ),
        (
            pb.GetConsistencyProofRequest(from_tree_size=4, to_tree_size=3),
            "GetConsistencyProof",
            "OUT_OF_RANGE",
        ),
        (
            pb.GetConsistencyProofRequest(from_tree_size=1, to_tree_size=9),
            "GetConsistencyProof",
            "OUT_OF_RANGE",
        ),
        (pb.GetCheckpointRequest(tree_size=5), "GetCheckpoint", "NOT_FOUND"),
    ],
)
def test_bad_read_requests_get_clear_statuses(
    server: ServerHandle,
    auditor_channel: grpc.Channel,
    insurer: InsurerClient,
    request_message: object,
    method: str,
    code: str,
) -> None:
    insurer.submit(next(sample_events(1, INSURER, NOW, tokens=tokens)))
    # Genesis, key, licence, then one event, then two held into one batch: sizes 0-4 and 6 have
    # checkpoints and size 5 has none, whatever the machine's load.
    server.in_one_batch(2, lambda: _submit_many(insurer, 2, first_number=10))
    assert server.running.sequencer.batches_committed == 4
    stub = pb_grpc.LedgerServiceStub(auditor_channel)
    with pytest.raises(grpc.RpcError) as raised:
        result = getattr(stub, method)(request_message)
        list(result) if method == "GetEntries" else None
    error = from_rpc_error(raised.value)
    assert error.code.name == code, str(error)


def test_admin_calls_need_the_operator_role(server: ServerHandle) -> None:
    request = admin_service_pb2.ListInsurerKeysRequest()
    for role, name in (("insurer", INSURER), ("auditor", "auditor"), ("portal", "SA")):
        with server.channel(role, name) as channel:
            admin = admin_service_pb2_grpc.AdminServiceStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                admin.ListInsurerKeys(request)
            error = from_rpc_error(raised.value)
            assert error.code == grpc.StatusCode.PERMISSION_DENIED
            assert error.reason == "ROLE_NOT_ALLOWED"


def test_bad_key_events_are_refused_and_the_registry_lists_good_ones(
    server: ServerHandle,
    insurer_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
    trusted: TrustedLog,
) -> None:
    operator_channel = server.channel("operator", "operator")
    operator = OperatorClient(operator_channel, signer=operator_signer, log=trusted)
    auditor = AuditorClient(operator_channel, log=trusted)
    bad = [
        (INSURER, b"short", SignerRole.INSURER, "INVALID_ARGUMENT"),
        ("", insurer_signer.public_key, SignerRole.INSURER, "INVALID_ARGUMENT"),
        ("bad id!", insurer_signer.public_key, SignerRole.INSURER, "INVALID_ARGUMENT"),
        ("operator", insurer_signer.public_key, SignerRole.INSURER, "INVALID_ARGUMENT"),
        (INSURER, insurer_signer.public_key, SignerRole.OPERATOR, "INVALID_ARGUMENT"),
        (INSURER, operator_signer.public_key, SignerRole.INSURER, "ALREADY_EXISTS"),
    ]
    for principal, public_key, role, code in bad:
        with pytest.raises(ClientError) as raised:
            operator.register_key(principal, public_key, role=role)
        assert raised.value.code.name == code, (principal, role, raised.value)
        assert auditor.checkpoint().size == 1, "a refused key event wrote something"
    listing = admin_service_pb2.ListInsurerKeysRequest()
    admin = admin_service_pb2_grpc.AdminServiceStub(operator_channel)
    [genesis] = admin.ListInsurerKeys(listing).keys
    assert (genesis.insurer_id, genesis.registered_leaf_index) == ("operator", 0)
    assert genesis.key_id == insurer_key_id(operator_signer.public_key)
    receipt = operator.register_key(INSURER, insurer_signer.public_key)
    with pytest.raises(ClientError) as raised:  # one principal, one role
        operator.register_key(
            INSURER, Ed25519Signer.generate("x").public_key, role=SignerRole.AUTHORITY
        )
    assert raised.value.reason == "PRINCIPAL_ROLE_CONFLICT"
    listed = admin.ListInsurerKeys(
        admin_service_pb2.ListInsurerKeysRequest(insurer_id=INSURER)
    ).keys
    assert [(key.key_id, key.registered_leaf_index) for key in listed] == [
        (insurer_key_id(insurer_signer.public_key), receipt.leaf_index)
    ]
    assert listed[0].role == events_pb2.SIGNER_ROLE_INSURER
    operator_channel.close()


def test_a_receipt_from_another_log_is_rejected(
    insurer: InsurerClient, channel: grpc.Channel, insurer_signer: Ed25519Signer
) -> None:
    # Same log name, another key: the checkpoint's signature is not one the client trusts.
    impostor = TrustedLog.from_verifier_key(
        format_verifier_key(Ed25519Signer.generate("test.policy-ledger/log"))
    )
    client = InsurerClient(channel, signer=insurer_signer, log=impostor)
    with pytest.raises(VerificationError):
        client.submit(next(sample_events(1, INSURER, NOW, tokens=tokens)))


def test_client_errors_are_typed(insurer: InsurerClient) -> None:
    event = next(sample_events(1, INSURER, NOW, tokens=tokens))
    event.policy_issued.plan = ""
    with pytest.raises(ClientError) as raised:
        insurer.submit(event)
    assert type(raised.value).__name__ == "InvalidArgumentError"
    assert raised.value.field_violations[0].field == "event.policy_issued.plan"
