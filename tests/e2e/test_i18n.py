"""Human texts in the language the caller asks for (``accept-language`` metadata), over gRPC:
household verdicts and certificates in French and Arabic, Hijri dates on request, English with
ISO dates by default, and a bad value refused before anything is read or recorded."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from clients.certificate import CertificateClient
from clients.errors import InvalidArgumentError
from clients.insurer import InsurerClient
from clients.portal import PortalClient
from clients.samples import iqama, policy_issued
from clients.verify import TrustedLog
from ledger.i18n import format_day, presentation_from_accept_language
from ledger.signing import Ed25519Signer
from ledger.storage.access_log import AccessLog
from ledger.storage.db import create_ledger_engine
from ledger.v1 import coverage_service_pb2 as cpb
from ledger.v1 import coverage_service_pb2_grpc as cpb_grpc
from ledger.v1 import events_pb2, types_pb2
from tests import clock as test_clock
from tests.builders import tokens
from tests.conftest import ServerHandle, onboard

INSURER = "gulf-health"


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


def _access_records(database_url: str) -> int:
    engine = create_ledger_engine(database_url)
    try:
        return len(list(AccessLog(engine).list()))
    finally:
        engine.dispose()


def _household(server: ServerHandle, today: dt.date, accept_language: str) -> list[str]:
    log = TrustedLog.from_verifier_key(server.log_verifier_key)
    sponsor, stranger = iqama(16), iqama(40)
    with server.channel("portal", "SA") as channel:
        answer = PortalClient(channel, log=log).check_household(
            sponsor,
            [(sponsor, events_pb2.RELATIONSHIP_SELF), (stranger, events_pb2.RELATIONSHIP_CHILD)],
            through=today + dt.timedelta(days=30),
            jurisdiction="SA",
            accept_language=accept_language,
        )
    return [member.detail for member in answer.response.members]


def test_household_details_in_english_french_and_arabic_with_hijri_dates(
    server: ServerHandle, issued: dt.date
) -> None:
    through = issued + dt.timedelta(days=364)
    covered, uncovered = _household(server, issued, "")
    assert (covered, uncovered) == (f"covered through {through}", f"no policy covers {issued}")
    french = presentation_from_accept_language("fr-MA, ar;q=0.5")
    covered, uncovered = _household(server, issued, "fr-MA, ar;q=0.5")
    assert covered == f"couvert jusqu'au {format_day(through, french)}"
    assert uncovered == f"aucune police ne couvre le {format_day(issued, french)}"
    hijri = presentation_from_accept_language("ar-SA-u-ca-islamic-umalqura")
    covered, _ = _household(server, issued, "ar-SA-u-ca-islamic-umalqura")
    assert covered == f"مشمول بالتغطية حتى {format_day(through, hijri)}"
    assert covered.endswith("هـ")


def test_the_answer_says_its_language(server: ServerHandle, issued: dt.date) -> None:
    request = cpb.GetCoverageCertificateRequest(
        person=iqama(16),
        date=types_pb2.CivilDate(year=issued.year, month=issued.month, day=issued.day),
        purpose=types_pb2.ACCESS_PURPOSE_BENEFICIARY_SELF,
    )
    with server.channel("operator", "operator") as channel:
        stub = cpb_grpc.CoverageServiceStub(channel)
        _, call = stub.GetCoverageCertificate.with_call(
            request, metadata=(("accept-language", "ar-u-ca-islamic"),), timeout=30
        )
        metadata = dict(call.initial_metadata())
        assert metadata["content-language"] == "ar-u-ca-islamic-umalqura"
        _, call = stub.GetCoverageCertificate.with_call(request, timeout=30)
        assert dict(call.initial_metadata())["content-language"] == "en"


def test_certificate_human_text_in_each_language(server: ServerHandle, issued: dt.date) -> None:
    with server.channel("operator", "operator") as channel:
        client = CertificateClient(channel, log_key=server.log_verifier_key)
        [english] = client.get(iqama(16), issued)
        [french] = client.get(iqama(16), issued, accept_language="fr")
        [arabic] = client.get(iqama(16), issued, accept_language="ar-SA-u-ca-islamic-umalqura")
    end = english.coverage.end_date
    assert english.human_text.startswith(f"SA:RESIDENCE_ID:{iqama(16).value} is covered on")
    assert f"from {issued.isoformat()} to {end.year:04d}-{end.month:02d}-{end.day:02d}." in (
        english.human_text
    )
    assert "check its current status online" in english.human_text
    assert "est couvert le" in french.human_text and "vérifiez son statut" in french.human_text
    assert "مشمول بالتغطية" in arabic.human_text and "هـ" in arabic.human_text
    # The signed statement does not change with the language.
    assert english.statement == french.statement == arabic.statement


@pytest.mark.parametrize(
    "value",
    ["x" * 300, ",".join(["fr"] * 17), "fr;q=2", "fr;level=1", "fr_FR"],
    ids=["too-long", "too-many-ranges", "bad-weight", "bad-parameter", "underscore"],
)
def test_a_bad_accept_language_is_refused_and_nothing_is_recorded(
    server: ServerHandle, issued: dt.date, database_url: str, value: str
) -> None:
    before = _access_records(database_url)
    with (
        server.channel("operator", "operator") as channel,
        pytest.raises(InvalidArgumentError) as raised,
    ):
        CertificateClient(channel).get(iqama(16), issued, accept_language=value)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in raised.value.field_violations] == ["accept-language"]
    with pytest.raises(InvalidArgumentError):
        _household(server, issued, value)
    assert _access_records(database_url) == before
