"""IdentityService.GetPersonTokens: who may ask, what a token looks like, and refusals that
issue nothing (issue 14 item 1), on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
import pytest

from clients.errors import ClientError
from clients.person_tokens import PersonTokens
from ledger import limits
from ledger.identifiers import example_iqama
from ledger.identity.tokens import PERSON_TOKEN_CHARS, is_person_token
from ledger.v1 import identity_service_pb2 as pb
from ledger.v1 import identity_service_pb2_grpc as pb_grpc
from ledger.v1 import types_pb2
from tests.builders import person
from tests.conftest import ServerHandle
from tests.stack import row_counts


def _tokens(
    server: ServerHandle, people: list[types_pb2.PersonId], role: str = "insurer"
) -> list[str]:
    with server.channel(role, "gulf-health" if role == "insurer" else role) as channel:
        return PersonTokens(channel).tokens(people)


def test_the_same_person_gets_the_same_token_and_others_other_ones(
    server: ServerHandle,
) -> None:
    first = _tokens(server, [person(1), person(2)])
    again = _tokens(server, [person(2), person(3), person(1)], role="authority")
    operator = _tokens(server, [person(1)], role="operator")
    assert all(is_person_token(token) and len(token) == PERSON_TOKEN_CHARS for token in again)
    assert again[0] == first[1] and again[2] == first[0] and operator == [first[0]]
    assert len({*first, *again}) == 3
    assert all(example_iqama(serial) not in "".join(again) for serial in (1, 2, 3))


def test_the_client_asks_once_per_person_and_in_batches_of_the_limit(
    server: ServerHandle, database_url: str
) -> None:
    people = [person(serial) for serial in range(1, limits.person_tokens_per_call_max + 3)]
    with server.channel("insurer", "gulf-health") as channel:
        client = PersonTokens(channel)
        tokens = client.tokens(people)
        before = row_counts(database_url)
        assert client.tokens(list(reversed(people))) == list(reversed(tokens))
    assert len(set(tokens)) == len(people)
    assert row_counts(database_url) == before


def _refused(
    server: ServerHandle, database_url: str, request: pb.GetPersonTokensRequest, role: str
) -> grpc.RpcError:
    before = row_counts(database_url)
    with server.channel(role, role) as channel, pytest.raises(grpc.RpcError) as caught:
        pb_grpc.IdentityServiceStub(channel).GetPersonTokens(request, timeout=30)
    assert row_counts(database_url) == before, "a refused call issued a token"
    return caught.value


@pytest.mark.parametrize("role", ["portal", "auditor"])
def test_a_role_that_writes_no_events_about_people_may_not_ask(
    server: ServerHandle, database_url: str, role: str
) -> None:
    error = _refused(server, database_url, pb.GetPersonTokensRequest(people=[person(5)]), role)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def test_an_invalid_identifier_refuses_the_whole_batch(
    server: ServerHandle, database_url: str
) -> None:
    bad = types_pb2.PersonId(
        type=types_pb2.PERSON_ID_TYPE_RESIDENCE_ID, value="2000000000", country_code="SA"
    )
    error = _refused(
        server, database_url, pb.GetPersonTokensRequest(people=[person(6), bad]), "operator"
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "people[1]" in (error.details() or "")


def test_a_duplicate_or_an_empty_or_an_oversized_batch_is_refused(
    server: ServerHandle, database_url: str
) -> None:
    twice = pb.GetPersonTokensRequest(people=[person(7), person(8), person(7)])
    assert (
        _refused(server, database_url, twice, "operator").code() == grpc.StatusCode.INVALID_ARGUMENT
    )
    empty = pb.GetPersonTokensRequest()
    assert (
        _refused(server, database_url, empty, "operator").code() == grpc.StatusCode.INVALID_ARGUMENT
    )
    too_many = pb.GetPersonTokensRequest(
        people=[person(serial) for serial in range(1, limits.person_tokens_per_call_max + 2)]
    )
    assert (
        _refused(server, database_url, too_many, "operator").code()
        == grpc.StatusCode.INVALID_ARGUMENT
    )


def test_the_client_reports_a_refusal(server: ServerHandle) -> None:
    with server.channel("portal", "KW") as channel, pytest.raises(ClientError) as caught:
        PersonTokens(channel).token(person(9))
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
