"""A person (role beneficiary) obtains tokens only with each person's birth date and for a
bounded number of people (docs/privacy.md, "Who obtains tokens"), on SQLite and PostgreSQL:
refusals write nothing (no vault row, no count); other roles are unaffected."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import select

from clients.person_tokens import PersonTokens
from ledger import limits
from ledger.storage.vault_store import beneficiary_resolutions, person_identities
from ledger.v1 import identity_service_pb2 as pb
from ledger.v1 import identity_service_pb2_grpc as pb_grpc
from ledger.v1 import types_pb2
from tests.builders import person
from tests.conftest import ServerHandle
from tests.stack import row_counts

BORN = dt.date(1980, 1, 1)
"""Every test person's birth date, as the insurer gave it (the vault holds it)."""
SELF = 1
"""The serial of the person who calls as a beneficiary."""


def _date(day: dt.date) -> types_pb2.CivilDate:
    return types_pb2.CivilDate(year=day.year, month=day.month, day=day.day)


def _known(server: ServerHandle, serials: Sequence[int]) -> list[str]:
    """The insurer tokenizes these people with their birth date (the vault then holds it)."""
    with server.channel("insurer", "gulf-health") as channel:
        return PersonTokens(channel).tokens([person(s) for s in serials], [BORN] * len(serials))


def _ask(
    server: ServerHandle, caller: str, serials: Sequence[int], births: Sequence[dt.date | None]
) -> list[str]:
    """GetPersonTokens as ``beneficiary/<caller>`` (None: an all-zero date, unknown)."""
    request = pb.GetPersonTokensRequest(
        people=[person(s) for s in serials],
        birth_dates=[types_pb2.CivilDate() if b is None else _date(b) for b in births],
    )
    with server.channel("beneficiary", caller) as channel:
        answer = pb_grpc.IdentityServiceStub(channel).GetPersonTokens(request, timeout=30)
    return list(answer.person_tokens)


def _refused(
    server: ServerHandle,
    database_url: str,
    caller: str,
    serials: Sequence[int],
    births: Sequence[dt.date | None],
) -> grpc.RpcError:
    before = row_counts(database_url)
    with pytest.raises(grpc.RpcError) as caught:
        _ask(server, caller, serials, births)
    assert row_counts(database_url) == before, "a refused call wrote something"
    return caught.value


def _details(error: grpc.RpcError) -> tuple[str, dict[str, str], list[str]]:
    """The reason, the metadata and the violated fields of a refusal."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    reason, metadata, fields = "", {}, []
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            fields = [violation.field for violation in bad.field_violations]
    return reason, metadata, fields


def _resolved(server: ServerHandle, caller: str) -> set[str]:
    with server.running.engine.connect() as connection:
        return set(
            connection.execute(
                select(beneficiary_resolutions.c.person_token).where(
                    beneficiary_resolutions.c.beneficiary_token == caller
                )
            ).scalars()
        )


def _vault_birth_dates(server: ServerHandle) -> dict[str, dt.date | None]:
    with server.running.engine.connect() as connection:
        rows = connection.execute(select(person_identities.c.token, person_identities.c.birth_date))
        return {row.token: row.birth_date for row in rows}


def test_a_beneficiary_must_give_every_birth_date(server: ServerHandle, database_url: str) -> None:
    [me, other] = _known(server, [SELF, 2])
    for births, missing in (
        ([], ["birth_dates[0]", "birth_dates[1]", "birth_dates[2]"]),
        ([BORN, None, BORN], ["birth_dates[1]"]),
    ):
        request = pb.GetPersonTokensRequest(
            people=[person(2), person(3), person(SELF)],
            birth_dates=[types_pb2.CivilDate() if b is None else _date(b) for b in births],
        )
        before = row_counts(database_url)
        with server.channel("beneficiary", me) as channel, pytest.raises(grpc.RpcError) as caught:
            pb_grpc.IdentityServiceStub(channel).GetPersonTokens(request, timeout=30)
        assert row_counts(database_url) == before, "a refused call wrote something"
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        reason, _, fields = _details(caught.value)
        assert (reason, fields) == ("BIRTH_DATE_REQUIRED", missing)
    # The same people with their birth dates: answered (person 3 is new: a token is issued).
    tokens = _ask(server, me, [2, 3, SELF], [BORN, BORN, BORN])
    assert tokens[0] == other and tokens[2] == me
    assert _resolved(server, me) == {other, tokens[1]}


def test_a_birth_date_other_than_the_vaults_is_refused_and_none_is_stored(
    server: ServerHandle, database_url: str
) -> None:
    [me, other] = _known(server, [SELF, 2])
    wrong = BORN + dt.timedelta(days=1)
    error = _refused(server, database_url, me, [4, 2], [BORN, wrong])
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    reason, _, fields = _details(error)
    assert (reason, fields) == ("BIRTH_DATE_CONFLICT", ["birth_dates[1]"])
    assert _resolved(server, me) == set()
    # A beneficiary's dates are checked, never written: not on a new person (4), not filled in
    # for a known person the vault holds none for (5, tokenized by an insurer without one).
    with server.channel("insurer", "gulf-health") as channel:
        [undated] = PersonTokens(channel).tokens([person(5)])
    [_, new, again] = _ask(server, me, [2, 4, 5], [BORN, dt.date(1999, 9, 9), dt.date(1970, 7, 7)])
    assert again == undated
    dates = _vault_birth_dates(server)
    assert (dates[other], dates[new], dates[undated]) == (BORN, None, None)


def test_the_bound_counts_distinct_people_and_refuses_past_it_writing_nothing(
    server: ServerHandle, database_url: str
) -> None:
    limit = limits.beneficiary_people_resolved_max
    [me] = _known(server, [SELF])
    known = _known(server, range(100, 110))
    # Under the bound: the known ones and new ones (tokens issued), one call or several.
    first = _ask(server, me, range(100, 110), [BORN] * 10)
    assert first == known
    rest = list(range(200, 200 + limit - 11))
    _ask(server, me, rest, [BORN] * len(rest))
    assert len(_resolved(server, me)) == limit - 1
    # Asked again (with themselves), the people already resolved do not count again.
    again = _ask(server, me, [SELF, *range(100, 110), *rest], [BORN] * (len(rest) + 11))
    assert again[0] == me and again[1:11] == known
    assert len(_resolved(server, me)) == limit - 1
    # One more person reaches the bound; two more would pass it: refused, nothing written.
    error = _refused(server, database_url, me, [300, 301], [BORN, BORN])
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    reason, metadata, _ = _details(error)
    assert reason == "BENEFICIARY_PEOPLE_LIMIT"
    assert metadata == {"limit": str(limit), "resolved": str(limit - 1), "requested_new": "2"}
    # Known people count as much as new ones: an insurer's person is refused the same way.
    [stranger, stranger2] = _known(server, [400, 401])
    _refused(server, database_url, me, [400, 401], [BORN, BORN])
    assert len(_resolved(server, me)) == limit - 1
    [last] = _ask(server, me, [400], [BORN])
    assert last == stranger and len(_resolved(server, me)) == limit
    error = _refused(server, database_url, me, [401], [BORN])
    assert _details(error)[1]["resolved"] == str(limit)
    # At the bound, the people already resolved and themselves are still answered.
    assert _ask(server, me, [SELF, 100, 400], [BORN] * 3) == [me, known[0], stranger]
    # Another person has a bound of their own.
    [neighbour] = _known(server, [2])
    assert _ask(server, neighbour, [401], [BORN]) == [stranger2]
    assert _resolved(server, neighbour) == {stranger2}


@pytest.mark.parametrize("role", ["insurer", "authority", "operator", "regulator", "funder"])
def test_other_roles_are_not_bounded_and_need_no_birth_date(
    server: ServerHandle, database_url: str, role: str
) -> None:
    people = [person(s) for s in range(500, 500 + limits.beneficiary_people_resolved_max + 5)]
    with server.channel(role, role) as channel:
        tokens = PersonTokens(channel).tokens(people)
    assert len(set(tokens)) == len(people)
    assert row_counts(database_url)["beneficiary_resolutions"] == 0
