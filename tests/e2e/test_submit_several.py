"""SubmitEvents with several envelopes per request message (``envelopes``): answered in one
response, in order, each envelope on its own; over the limit or malformed, the stream ends with
INVALID_ARGUMENT once the requests before it are answered, and nothing of it is written."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy import func, select

from clients.errors import ClientError, from_rpc_error, from_status
from clients.insurer import InsurerClient
from clients.samples import policy_issued
from clients.verify import TrustedLog, VerifiedReceipt, verify_receipt
from ledger import limits
from ledger.signing import Ed25519Signer
from ledger.storage.db import create_ledger_engine
from ledger.storage.tables import checkpoints, log_entries
from ledger.v1 import ledger_service_pb2 as pb
from ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from ledger.v1 import types_pb2
from tests import clock as test_clock
from tests.builders import tokens
from tests.conftest import ServerHandle, onboard

INSURER = "gulf-health"
NOW = test_clock.now()


@pytest.fixture
def client(
    server: ServerHandle, operator_signer: Ed25519Signer, insurer_signer: Ed25519Signer
) -> Iterator[InsurerClient]:
    onboard(server, operator_signer, INSURER, insurer_signer)
    trusted = TrustedLog.from_verifier_key(server.log_verifier_key)
    with server.channel("insurer", INSURER) as channel:
        yield InsurerClient(channel, signer=insurer_signer, log=trusted)


def _written(database_url: str) -> tuple[int, int]:
    """(entries, checkpoints) in the database."""
    engine = create_ledger_engine(database_url)
    try:
        with engine.connect() as connection:
            entries = connection.execute(select(func.count()).select_from(log_entries)).scalar_one()
            signed = connection.execute(select(func.count()).select_from(checkpoints)).scalar_one()
    finally:
        engine.dispose()
    return int(entries), int(signed)


def _envelopes(client: InsurerClient, first: int, count: int) -> list[types_pb2.Envelope]:
    return [
        client.sign(policy_issued(first + n, INSURER, NOW, tokens=tokens)) for n in range(count)
    ]


def _bad_signature(envelope: types_pb2.Envelope) -> types_pb2.Envelope:
    spoiled = types_pb2.Envelope()
    spoiled.CopyFrom(envelope)
    signature = bytearray(spoiled.signatures[0].sig)
    signature[5] ^= 0x01
    spoiled.signatures[0].sig = bytes(signature)
    return spoiled


def _stream(server: ServerHandle, requests: list[pb.SubmitEventsRequest]) -> Iterator[object]:
    """The responses of one raw SubmitEvents stream, then the RpcError that ended it, if any."""
    with server.channel("insurer", INSURER) as channel:
        try:
            yield from pb_grpc.LedgerServiceStub(channel).SubmitEvents(iter(requests), timeout=60)
        except grpc.RpcError as error:
            yield error


def test_several_envelopes_are_answered_in_order_each_on_its_own(
    server: ServerHandle, client: InsurerClient, database_url: str
) -> None:
    before = _written(database_url)
    first = _envelopes(client, 0, 3)
    first[1] = _bad_signature(first[1])
    single = _envelopes(client, 3, 1)[0]
    last = _envelopes(client, 4, 2)
    requests = [
        pb.SubmitEventsRequest(envelopes=first),
        pb.SubmitEventsRequest(envelope=single),
        pb.SubmitEventsRequest(envelopes=last),
    ]
    responses = list(_stream(server, requests))
    assert [type(r) for r in responses] == [pb.SubmitEventsResponse] * 3
    a, b, c = responses
    assert isinstance(a, pb.SubmitEventsResponse) and isinstance(b, pb.SubmitEventsResponse)
    assert isinstance(c, pb.SubmitEventsResponse)
    # Envelopes are numbered across the stream; a single one is answered the original way.
    assert (a.sequence, b.sequence, c.sequence) == (0, 3, 4)
    assert len(a.results) == 3 and not b.results and len(c.results) == 2
    assert a.WhichOneof("result") is None and b.WhichOneof("result") == "receipt"
    assert [r.WhichOneof("result") for r in a.results] == ["receipt", "error", "receipt"]
    refused = from_status(a.results[1].error)
    assert refused.code == grpc.StatusCode.UNAUTHENTICATED
    assert refused.reason == "SIGNATURE_INVALID"
    trusted = TrustedLog.from_verifier_key(server.log_verifier_key)
    pairs = [
        (a.results[0].receipt, first[0]),
        (a.results[2].receipt, first[2]),
        (b.receipt, single),
        (c.results[0].receipt, last[0]),
        (c.results[1].receipt, last[1]),
    ]
    receipts = [verify_receipt(receipt, trusted, env.payload) for receipt, env in pairs]
    # The log keeps the stream's order; the refused envelope took no leaf.
    indexes = [receipt.leaf_index for receipt in receipts]
    assert indexes == list(range(before[0], before[0] + 5))
    assert _written(database_url)[0] == before[0] + 5


def test_a_request_over_the_limit_ends_the_stream_and_writes_nothing_of_it(
    server: ServerHandle, client: InsurerClient, database_url: str
) -> None:
    accepted = _envelopes(client, 0, 2)
    too_many = _envelopes(client, 2, limits.submit_message_envelopes_max + 1)
    before = _written(database_url)
    requests = [
        pb.SubmitEventsRequest(envelopes=accepted),
        pb.SubmitEventsRequest(envelopes=too_many),
    ]
    answered, ended = list(_stream(server, requests))
    assert isinstance(answered, pb.SubmitEventsResponse)
    assert [r.WhichOneof("result") for r in answered.results] == ["receipt", "receipt"]
    assert isinstance(ended, grpc.RpcError)
    error = from_rpc_error(ended)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error.field_violations] == ["envelopes"]
    entries, signed = _written(database_url)
    assert entries == before[0] + 2  # the first request's two; none of the 65
    assert signed - before[1] in {1, 2}  # one checkpoint per batch of the first request


def test_a_request_with_both_forms_is_refused_after_the_earlier_ones_are_answered(
    server: ServerHandle, client: InsurerClient, database_url: str
) -> None:
    envelopes = _envelopes(client, 0, 4)
    before = _written(database_url)
    requests = [
        pb.SubmitEventsRequest(envelope=envelopes[0]),
        pb.SubmitEventsRequest(envelope=envelopes[1], envelopes=envelopes[2:]),
    ]
    answered, ended = list(_stream(server, requests))
    assert isinstance(answered, pb.SubmitEventsResponse)
    assert answered.WhichOneof("result") == "receipt"
    assert isinstance(ended, grpc.RpcError)
    error = from_rpc_error(ended)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "ENVELOPE_AND_ENVELOPES"
    assert _written(database_url)[0] == before[0] + 1


def test_the_insurer_client_sends_several_per_message_and_gets_each_result_in_order(
    client: InsurerClient, database_url: str
) -> None:
    count = 2 * limits.submit_message_envelopes_max + 5
    events = [policy_issued(number, INSURER, NOW, tokens=tokens) for number in range(count)]
    before = _written(database_url)[0]
    results = list(client.submit_stream(events))
    assert all(isinstance(result, VerifiedReceipt) for result in results)
    assert [r.event_id for r in results] == [e.event_id for e in events]  # type: ignore[union-attr]
    assert [r.leaf_index for r in results] == list(range(before, before + count))  # type: ignore[union-attr]
    # Again, one per message: the same events are duplicates, each answered with its receipt.
    again = list(client.submit_stream(events[:3], per_message=1))
    assert [r.duplicate for r in again] == [True] * 3  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="per_message"):
        list(client.submit_stream(events, per_message=limits.submit_message_envelopes_max + 1))
    assert not any(isinstance(result, ClientError) for result in results)
