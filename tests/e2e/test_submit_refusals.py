"""Every refused submission, over a real gRPC connection: a precise status with google.rpc details,
and nothing written (no entry, no new checkpoint). Each case has an accepted twin: the valid
submission the case mutates is accepted by ``test_the_unmutated_submission_is_accepted``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest
from sqlalchemy import func, select

from clients.errors import ClientError, from_rpc_error
from clients.insurer import InsurerClient, sign_event
from clients.operator import OperatorClient, insurer_licensed
from clients.samples import policy_issued
from clients.verify import TrustedLog
from ledger.dsse import pae
from ledger.keys import insurer_key_id
from ledger.signing import Ed25519Signer
from ledger.storage.db import create_ledger_engine
from ledger.storage.tables import checkpoints, log_entries
from ledger.v1 import events_pb2, types_pb2
from ledger.v1 import ledger_service_pb2 as pb
from ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from tests import clock as test_clock
from tests.builders import fee_collected, tokens, use_vault
from tests.conftest import ServerHandle, onboard, start_server_thread

INSURER = "gulf-health"
OTHER_INSURER = "desert-care"
NOW = test_clock.now()
ONBOARDED = (7, 8)
"""(entries, checkpoints) once the keys fixture ran: leaf 0 the genesis entry, 1 and 2 the good
key and the licence, 3-5 three more keys, 6 a revocation (the empty tree's checkpoint, then
one per submission)."""


@dataclass
class Keys:
    """The signers the cases use, registered with different windows."""

    good: Ed25519Signer
    expired: Ed25519Signer
    revoked: Ed25519Signer
    future: Ed25519Signer
    unregistered: Ed25519Signer


def _register_keys(server: ServerHandle, operator_signer: Ed25519Signer) -> Keys:
    """Onboard the insurer with the good key, then register the others with their windows."""
    keys = Keys(
        *(Ed25519Signer.generate(name) for name in ("good", "expired", "revoked", "future", "none"))
    )
    onboard(server, operator_signer, INSURER, keys.good)
    with server.channel("operator", "operator") as channel:
        operator = OperatorClient(
            channel,
            signer=operator_signer,
            log=TrustedLog.from_verifier_key(server.log_verifier_key),
        )
        operator.register_key(
            INSURER,
            keys.expired.public_key,
            valid_from=NOW - dt.timedelta(days=30),
            valid_until=NOW - dt.timedelta(days=1),
        )
        operator.register_key(INSURER, keys.revoked.public_key, valid_from=NOW)
        operator.register_key(
            INSURER, keys.future.public_key, valid_from=NOW + dt.timedelta(days=30)
        )
        operator.revoke_key(insurer_key_id(keys.revoked.public_key), reason="compromised")
    return keys


@pytest.fixture
def keys(server: ServerHandle, operator_signer: Ed25519Signer) -> Keys:
    return _register_keys(server, operator_signer)


@pytest.fixture(scope="module")
def refusal_server(
    module_database_url: str, log_signer: Ed25519Signer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerHandle]:
    """One server per engine for the refusal matrix (not one per case): every case is refused
    and checks that the log still holds exactly the onboarding entries, so none can hide a
    write behind another's."""
    handle = start_server_thread(
        module_database_url, log_signer, tmp_path_factory.mktemp("refusals")
    )
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def refusal_keys(refusal_server: ServerHandle, operator_signer: Ed25519Signer) -> Keys:
    return _register_keys(refusal_server, operator_signer)


@pytest.fixture(autouse=True)
def _tokens_of_the_shared_server(
    request: pytest.FixtureRequest, _token_source_per_test: None
) -> None:
    """A case on the shared server names people by that server's tokens (the conftest resets
    the builders' token source before every test)."""
    if "refusal_server" in request.fixturenames:
        use_vault(request.getfixturevalue("refusal_server").running.engine)


@pytest.fixture
def stub(server: ServerHandle) -> Iterator[pb_grpc.LedgerServiceStub]:
    with server.channel("insurer", INSURER) as channel:
        yield pb_grpc.LedgerServiceStub(channel)


def _event() -> events_pb2.Event:
    return policy_issued(7, INSURER, NOW, tokens=tokens)


def _resign(envelope: types_pb2.Envelope, signer: Ed25519Signer) -> None:
    envelope.signatures[0].sig = signer.sign(pae(envelope.payload_type, envelope.payload))


def _licence_by(signer_id: str) -> events_pb2.Event:
    event = insurer_licensed(
        "self-licensed",
        name="self",
        licence_number="X",
        effective=NOW.date(),
        occurred_at=NOW,
    )
    event.insurer_id = signer_id
    return event


def _with_payload(payload: bytes) -> Callable[[types_pb2.Envelope, Keys], None]:
    def mutate(envelope: types_pb2.Envelope, keys: Keys) -> None:
        envelope.payload = payload
        _resign(envelope, keys.good)

    return mutate


def _with_event(
    change: Callable[[events_pb2.Event], None],
) -> Callable[[types_pb2.Envelope, Keys], None]:
    def mutate(envelope: types_pb2.Envelope, keys: Keys) -> None:
        event = _event()
        change(event)
        envelope.CopyFrom(sign_event(event, keys.good))

    return mutate


def _signed_by(pick: Callable[[Keys], Ed25519Signer]) -> Callable[[types_pb2.Envelope, Keys], None]:
    def mutate(envelope: types_pb2.Envelope, keys: Keys) -> None:
        envelope.CopyFrom(sign_event(_event(), pick(keys)))

    return mutate


def _flip_signature_bit(envelope: types_pb2.Envelope, keys: Keys) -> None:
    signature = bytearray(envelope.signatures[0].sig)
    signature[5] ^= 0x01
    envelope.signatures[0].sig = bytes(signature)


def _set(**fields: object) -> Callable[[types_pb2.Envelope, Keys], None]:
    def mutate(envelope: types_pb2.Envelope, keys: Keys) -> None:
        for name, value in fields.items():
            setattr(envelope, name, value)

    return mutate


def _no_signatures(envelope: types_pb2.Envelope, keys: Keys) -> None:
    del envelope.signatures[:]


def _too_many_signatures(envelope: types_pb2.Envelope, keys: Keys) -> None:
    for _ in range(5):
        envelope.signatures.add().CopyFrom(envelope.signatures[0])


def _short_signature(envelope: types_pb2.Envelope, keys: Keys) -> None:
    envelope.signatures[0].sig = envelope.signatures[0].sig[:63]


def _unknown_field_payload() -> bytes:
    # Field 99 (varint 1) appended to a valid event: the validator never saw it, so it is refused.
    return _event().SerializeToString() + b"\x98\x06\x01"


def _in_future(event: events_pb2.Event) -> None:
    event.occurred_at.FromDatetime(NOW + dt.timedelta(days=3))


def _negative_premium(event: events_pb2.Event) -> None:
    event.policy_issued.annual_premium.amount_minor = -5


def _other_insurer(event: events_pb2.Event) -> None:
    event.insurer_id = OTHER_INSURER


CASES = {
    "payload type": (
        _set(payload_type="application/json"),
        "INVALID_ARGUMENT",
        "PAYLOAD_TYPE_UNSUPPORTED",
    ),
    "payload too large": (_with_payload(b"\x00" * (64 * 1024 + 1)), "RESOURCE_EXHAUSTED", None),
    "no signature": (_no_signatures, "INVALID_ARGUMENT", None),
    "too many signatures": (_too_many_signatures, "RESOURCE_EXHAUSTED", None),
    "short signature": (_short_signature, "INVALID_ARGUMENT", None),
    "unknown key": (_signed_by(lambda k: k.unregistered), "UNAUTHENTICATED", "KEY_UNKNOWN"),
    "bad signature": (_flip_signature_bit, "UNAUTHENTICATED", "SIGNATURE_INVALID"),
    "payload unparsable": (
        _with_payload(b"\xff\xff\xff"),
        "INVALID_ARGUMENT",
        "PAYLOAD_UNPARSABLE",
    ),
    "unknown field": (
        _with_payload(_unknown_field_payload()),
        "INVALID_ARGUMENT",
        "PAYLOAD_UNKNOWN_FIELDS",
    ),
    "invalid field": (_with_event(_negative_premium), "INVALID_ARGUMENT", "EVENT_INVALID"),
    "dated in the future": (_with_event(_in_future), "INVALID_ARGUMENT", "EVENT_INVALID"),
    "another insurer's event": (
        _with_event(_other_insurer),
        "PERMISSION_DENIED",
        "KEY_WRONG_INSURER",
    ),
    "expired key": (_signed_by(lambda k: k.expired), "PERMISSION_DENIED", "KEY_EXPIRED"),
    "revoked key": (_signed_by(lambda k: k.revoked), "PERMISSION_DENIED", "KEY_REVOKED"),
    # An insurer may not sign what only a renewal authority may: a fee with no payment behind
    # it would otherwise create government coverage.
    "fee signed by an insurer": (
        _with_payload(fee_collected(INSURER, "R-forged").SerializeToString()),
        "PERMISSION_DENIED",
        "SIGNER_ROLE_NOT_ALLOWED",
    ),
    "licence signed by an insurer": (
        _with_payload(_licence_by(INSURER).SerializeToString()),
        "PERMISSION_DENIED",
        "SIGNER_ROLE_NOT_ALLOWED",
    ),
    "key not yet valid": (_signed_by(lambda k: k.future), "PERMISSION_DENIED", "KEY_NOT_YET_VALID"),
}


def _written(database_url: str) -> tuple[int, int]:
    engine = create_ledger_engine(database_url)
    try:
        with engine.connect() as connection:
            entries = connection.execute(select(func.count()).select_from(log_entries)).scalar_one()
            signed = connection.execute(select(func.count()).select_from(checkpoints)).scalar_one()
    finally:
        engine.dispose()
    return int(entries), int(signed)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_refused_with_a_precise_status_and_nothing_written(
    case: str, refusal_server: ServerHandle, refusal_keys: Keys, module_database_url: str
) -> None:
    mutate, code, reason = CASES[case]
    keys, database_url = refusal_keys, module_database_url
    envelope = sign_event(_event(), keys.good)
    mutate(envelope, keys)
    with (
        refusal_server.channel("insurer", INSURER) as channel,
        pytest.raises(grpc.RpcError) as raised,
    ):
        pb_grpc.LedgerServiceStub(channel).SubmitEvent(
            pb.SubmitEventRequest(envelope=envelope), timeout=30
        )
    error = from_rpc_error(raised.value)
    assert error.code.name == code, str(error)
    if reason is not None:
        assert error.reason == reason, str(error)
    assert error.message
    assert _written(database_url) == ONBOARDED


def test_the_unmutated_submission_is_accepted(
    server: ServerHandle, keys: Keys, stub: pb_grpc.LedgerServiceStub, database_url: str
) -> None:
    response = stub.SubmitEvent(pb.SubmitEventRequest(envelope=sign_event(_event(), keys.good)))
    assert response.receipt.leaf_index == ONBOARDED[0]
    assert _written(database_url) == (ONBOARDED[0] + 1, ONBOARDED[1] + 1)


def test_an_invalid_field_is_named_in_bad_request_details(
    server: ServerHandle, keys: Keys, stub: pb_grpc.LedgerServiceStub
) -> None:
    envelope = sign_event(_event(), keys.good)
    _with_event(_negative_premium)(envelope, keys)
    with pytest.raises(grpc.RpcError) as raised:
        stub.SubmitEvent(pb.SubmitEventRequest(envelope=envelope))
    fields = [violation.field for violation in from_rpc_error(raised.value).field_violations]
    assert fields == ["event.policy_issued.annual_premium.amount_minor"]


def test_a_missing_envelope_is_refused(
    server: ServerHandle, stub: pb_grpc.LedgerServiceStub, database_url: str
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.SubmitEvent(pb.SubmitEventRequest())
    assert from_rpc_error(raised.value).reason == "ENVELOPE_MISSING"
    assert _written(database_url) == (
        1,
        2,
    )  # the genesis entry, and the checkpoints of size 0 and 1


def test_a_refused_event_in_a_stream_gets_its_own_status_and_the_stream_goes_on(
    server: ServerHandle, keys: Keys, database_url: str
) -> None:
    trusted = TrustedLog.from_verifier_key(server.log_verifier_key)
    with server.channel("insurer", INSURER) as channel:
        client = InsurerClient(channel, signer=keys.good, log=trusted)
        envelopes = [
            client.sign(policy_issued(number, INSURER, NOW, tokens=tokens)) for number in range(5)
        ]
        _flip_signature_bit(envelopes[2], keys)
        results = list(client.submit_envelopes(envelopes))
    assert [isinstance(result, ClientError) for result in results] == [
        False,
        False,
        True,
        False,
        False,
    ]
    refused = results[2]
    assert isinstance(refused, ClientError) and refused.reason == "SIGNATURE_INVALID"
    assert _written(database_url)[0] == ONBOARDED[0] + 4


def test_an_event_id_reused_with_other_content_is_already_exists(
    server: ServerHandle, keys: Keys, database_url: str
) -> None:
    trusted = TrustedLog.from_verifier_key(server.log_verifier_key)
    with server.channel("insurer", INSURER) as channel:
        client = InsurerClient(channel, signer=keys.good, log=trusted)
        first = client.submit(_event())
        assert client.submit(_event()).leaf_index == first.leaf_index
        changed = _event()
        changed.policy_issued.plan = "VIP"
        with pytest.raises(ClientError) as raised:
            client.submit(changed)
    assert raised.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert [v.field for v in raised.value.field_violations] == ["event.policy_issued.plan"]
    assert _written(database_url) == (ONBOARDED[0] + 1, ONBOARDED[1] + 1)
