"""IdentityService.GetPersonTokens: who may ask, what a token looks like, and refusals that
issue nothing (issue 14 item 1), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from sqlalchemy import select

from clients.errors import ClientError
from clients.person_tokens import PersonTokens
from ledger import limits
from ledger.identifiers import example_iqama
from ledger.identity.tokens import PERSON_TOKEN_CHARS, is_person_token
from ledger.storage.vault_store import person_identities
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


def _birth_dates(server: ServerHandle) -> dict[str, object]:
    """The vault's birth dates by token."""
    with server.running.engine.connect() as connection:
        rows = connection.execute(
            select(person_identities.c.token, person_identities.c.birth_date)
        ).all()
    return {row.token: row.birth_date for row in rows}


def test_the_vault_keeps_a_birth_date_with_the_token(server: ServerHandle) -> None:
    """Given with GetPersonTokens, a birth date is an attribute of the token in the vault (not
    of any event); given later for a known person it is filled in; the same date again is
    fine."""
    born = dt.date(2020, 2, 29)
    with server.channel("insurer", "gulf-health") as channel:
        client = PersonTokens(channel)
        [baby, other] = client.tokens([person(40), person(41)], [born, None])
        assert client.tokens([person(40)], [born]) == [baby]
        [known] = PersonTokens(channel).tokens([person(41)], [dt.date(1990, 1, 2)])
    assert known == other
    dates = _birth_dates(server)
    assert (dates[baby], dates[other]) == (born, dt.date(1990, 1, 2))


def test_a_birth_date_other_than_the_vaults_is_refused_writing_nothing(
    server: ServerHandle, database_url: str
) -> None:
    with server.channel("insurer", "gulf-health") as channel:
        [token] = PersonTokens(channel).tokens([person(42)], [dt.date(2001, 3, 4)])
    request = pb.GetPersonTokensRequest(
        people=[person(43), person(42)],
        birth_dates=[
            types_pb2.CivilDate(year=2002, month=1, day=1),
            types_pb2.CivilDate(year=2001, month=3, day=5),
        ],
    )
    error = _refused(server, database_url, request, "operator")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "BIRTH_DATE_CONFLICT" in str(error.trailing_metadata())
    assert "birth_dates[1]" in str(error.trailing_metadata())
    assert _birth_dates(server)[token] == dt.date(2001, 3, 4)


@pytest.mark.parametrize(
    ("birth_dates", "field"),
    [
        ([types_pb2.CivilDate(year=2001, month=2, day=30)], "birth_dates[0]"),
        ([types_pb2.CivilDate(year=9999, month=1, day=1)], "birth_dates[0]"),
        ([types_pb2.CivilDate(year=2001, month=1, day=1)] * 2, "birth_dates"),
    ],
    ids=["not a date", "in the future", "not one per identifier"],
)
def test_a_bad_birth_date_refuses_the_batch(
    server: ServerHandle,
    database_url: str,
    birth_dates: list[types_pb2.CivilDate],
    field: str,
) -> None:
    request = pb.GetPersonTokensRequest(people=[person(44)], birth_dates=birth_dates)
    error = _refused(server, database_url, request, "insurer")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in str(error.trailing_metadata())
