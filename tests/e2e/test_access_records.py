"""Who looked at whom: every answer carrying a person's data leaves an access record."""

from __future__ import annotations

import contextlib
import datetime as dt
import io

import grpc
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from clients.errors import ClientError
from clients.insurer import InsurerClient
from clients.portal import PortalClient
from clients.samples import iqama, policy_issued
from clients.verify import TrustedLog
from ledger.signing import Ed25519Signer
from ledger.storage.access_log import AccessLog, AccessRecord
from ledger.storage.db import create_ledger_engine
from ledger.storage.vault_store import VaultStore
from ledger.v1 import coverage_service_pb2 as cpb
from ledger.v1 import coverage_service_pb2_grpc as cpb_grpc
from ledger.v1 import events_pb2, types_pb2
from policy_ledger.cli import main
from tests import clock as test_clock
from tests.builders import token, tokens
from tests.conftest import ServerHandle, onboard
from tests.e2e.test_authorization_matrix import _written

INSURER = "gulf-health"


def _records(database_url: str, **where: str) -> list[AccessRecord]:
    engine = create_ledger_engine(database_url)
    try:
        return list(AccessLog(engine).list(**where))
    finally:
        engine.dispose()


def _key(person: types_pb2.PersonId) -> str:
    """Access records name people by token (the server's vault), never by identifier."""
    return token(person)


@pytest.fixture
def issued(
    server: ServerHandle, operator_signer: Ed25519Signer, insurer_signer: Ed25519Signer
) -> dt.date:
    onboard(server, operator_signer, INSURER, insurer_signer)
    now = test_clock.now()
    with server.channel("insurer", INSURER) as channel:
        log = TrustedLog.from_verifier_key(server.log_verifier_key)
        InsurerClient(channel, signer=insurer_signer, log=log).submit(
            policy_issued(1, INSURER, now, tokens=tokens)
        )
    return now.date()


def test_each_answer_is_recorded_with_caller_purpose_people_and_tree_size(
    server: ServerHandle, issued: dt.date, database_url: str
) -> None:
    log = TrustedLog.from_verifier_key(server.log_verifier_key)
    sponsor, spouse = iqama(16), iqama(17)
    with server.channel("portal", "SA") as channel:
        answer = PortalClient(channel, log=log).check_household(
            sponsor,
            [(sponsor, events_pb2.RELATIONSHIP_SELF), (spouse, events_pb2.RELATIONSHIP_SPOUSE)],
            through=issued + dt.timedelta(days=30),
            jurisdiction="SA",
        )
    with server.channel("operator", "desk-1") as channel:
        coverage = PortalClient(
            channel, log=log, purpose=types_pb2.ACCESS_PURPOSE_BENEFICIARY_SELF
        ).get_coverage(spouse, issued)
    household, single = _records(database_url, person_key=_key(spouse))[::-1]
    assert household.caller == "spiffe://policy-ledger.local/portal/SA"
    assert household.method == "/ledger.v1.CoverageService/CheckHousehold"
    assert household.purpose == "RESIDENCE_RENEWAL"
    assert household.person_keys == tuple(sorted((_key(sponsor), _key(spouse))))
    assert household.tree_size == answer.checkpoint.size
    assert single.caller == "spiffe://policy-ledger.local/operator/desk-1"
    assert (single.method, single.purpose) == (
        "/ledger.v1.CoverageService/GetCoverage",
        "BENEFICIARY_SELF",
    )
    assert single.tree_size == coverage.checkpoint.size
    assert _records(database_url, person_key=_key(sponsor)) == [household]
    assert _records(database_url, caller=single.caller) == [single]


def test_no_purpose_or_no_permission_answers_nothing_and_records_nothing(
    server: ServerHandle, issued: dt.date, database_url: str
) -> None:
    request = cpb.GetCoverageRequest(person=iqama(16))
    request.date.year, request.date.month, request.date.day = issued.year, issued.month, 1
    before = _written(database_url)
    with server.channel("auditor", "auditor") as channel, pytest.raises(grpc.RpcError) as raised:
        cpb_grpc.CoverageServiceStub(channel).GetCoverage(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "purpose" in (raised.value.details() or "")
    log = TrustedLog.from_verifier_key(server.log_verifier_key)
    with server.channel("portal", "KW") as channel, pytest.raises(ClientError) as refused:
        PortalClient(channel, log=log).check_household(
            iqama(16), [], through=issued, jurisdiction="SA"
        )
    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert _records(database_url, caller="spiffe://policy-ledger.local/auditor/auditor") == []
    assert _records(database_url, person_key=_key(iqama(16))) == []
    assert _written(database_url) == before  # nothing at all was written


def test_access_records_are_append_only(engine: Engine) -> None:
    AccessLog(engine).append(
        AccessRecord(
            recorded_at=test_clock.now(),
            caller="spiffe://policy-ledger.local/auditor/a",
            method="/ledger.v1.CoverageService/GetCoverage",
            purpose="AUDIT",
            person_keys=("pt_" + "a" * 26,),
            subject="",
            tree_size=1,
        )
    )
    for statement in (
        "UPDATE access_records SET purpose = 'NONE'",
        "DELETE FROM access_records",
        "UPDATE access_record_people SET person_key = 'x'",
        "DELETE FROM access_record_people",
    ):
        with pytest.raises(DBAPIError), engine.begin() as connection:
            connection.execute(text(statement))
    assert len(AccessLog(engine).list(caller="spiffe://policy-ledger.local/auditor/a")) == 1


def test_the_operator_lists_access_records_per_person(
    server: ServerHandle, issued: dt.date, database_url: str
) -> None:
    log = TrustedLog.from_verifier_key(server.log_verifier_key)
    with server.channel("portal", "SA") as channel:
        PortalClient(channel, log=log).check_household(
            iqama(16), [], through=issued, jurisdiction="SA"
        )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            ["access", "list", "--person", f"SA:RESIDENCE_ID:{iqama(16).value}",
             "--database", database_url]
        )  # fmt: skip
    assert code == 0
    assert "spiffe://policy-ledger.local/portal/SA" in out.getvalue()
    assert "CheckHousehold\tRESIDENCE_RENEWAL" in out.getvalue()


def test_a_household_record_names_the_people_the_check_found_without_asking_the_vault_again(
    server: ServerHandle, issued: dt.date, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[object] = []
    real = VaultStore.tokens_of

    def counted(self: VaultStore, people: object) -> object:
        asked.append(people)
        return real(self, people)  # type: ignore[arg-type]

    monkeypatch.setattr(VaultStore, "tokens_of", counted)
    log = TrustedLog.from_verifier_key(server.log_verifier_key)
    sponsor, spouse, stranger = iqama(16), iqama(17), iqama(9_999)  # no record of the stranger
    with server.channel("portal", "SA") as channel:
        answer = PortalClient(channel, log=log).check_household(
            sponsor,
            [(spouse, events_pb2.RELATIONSHIP_SPOUSE), (stranger, events_pb2.RELATIONSHIP_CHILD)],
            through=issued + dt.timedelta(days=30),
            jurisdiction="SA",
        )
    assert not answer.response.renewable  # the stranger is not covered
    [record] = _records(database_url, person_key=_key(spouse))
    assert record.method == "/ledger.v1.CoverageService/CheckHousehold"
    assert record.person_keys == tuple(sorted((_key(sponsor), _key(spouse))))  # stranger: no one
    assert record.subject == f"household of {_key(sponsor)}"
    assert record.tree_size == answer.checkpoint.size
    assert asked == []  # the check's own tokens, from the answer's snapshot
    with server.channel("operator", "desk-1") as channel:  # a method handing none over
        PortalClient(
            channel, log=log, purpose=types_pb2.ACCESS_PURPOSE_BENEFICIARY_SELF
        ).get_coverage(spouse, issued)
    assert len(asked) == 1
    assert [r.method for r in _records(database_url, person_key=_key(spouse))] == [
        "/ledger.v1.CoverageService/GetCoverage",
        "/ledger.v1.CoverageService/CheckHousehold",
    ]
