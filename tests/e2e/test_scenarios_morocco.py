"""The Moroccan scenario (issue 11, items 4-5), end to end on a real server with the payments
extension and the CMI sandbox: the fund covers an insured person; the person trades a one-time
code for a client certificate and a registered Ed25519 key; declares a spouse and a child; the
fund accepts; both are covered; the person reads their contribution status (owed), settles it
through CMI, and reads it again (paid through the year, nothing owed). The settled contribution
is one FeeCollected entry, recorded once."""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func, select

from clients.beneficiary import (
    BeneficiaryClient,
    Declared,
    declaration_decided,
    issue_enrolment_code,
)
from clients.channel import ClientCredentials
from clients.enrolment import enrol
from clients.errors import ClientError
from clients.insurer import InsurerClient
from clients.renewal import RenewalClient
from clients.verify import TrustedLog
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer, format_signer_key
from ledger.storage.tables import log_entries
from ledger.v1 import beneficiary_service_pb2 as bpb
from ledger.v1 import events_pb2, types_pb2
from payments.sandbox.cmi import CmiSandbox
from payments.v1 import renewal_service_pb2 as rpb
from payments.v1.contribution_service_pb2 import GetContributionStatusRequest
from payments.v1.contribution_service_pb2_grpc import ContributionServiceStub
from tests import clock
from tests.builders import issued, tokens
from tests.conftest import OPERATOR_SIGNER, ServerHandle, onboard, session_pki, start_server_thread
from tests.stack import RowCounter

R = events_pb2
FUND, AUTHORITY = "cnops", "ma-gov-contributions"
JAN1, DEC31, JUL1 = dt.date(2026, 1, 1), dt.date(2026, 12, 31), dt.date(2026, 7, 1)
AS_OF = dt.date(2026, 6, 15)


def cin(value: str) -> types_pb2.PersonId:
    """A Moroccan CIN."""
    return types_pb2.PersonId(
        type=types_pb2.PERSON_ID_TYPE_NATIONAL_ID, value=value, country_code="MA"
    )


@pytest.fixture
def moroccan_server(
    database_url: str,
    log_signer: Ed25519Signer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[ServerHandle, CmiSandbox]]:
    """A server with an enrolment port and the payments extension, CMI pointing at a sandbox."""
    pki = session_pki()
    ca_key = tmp_path / "ca.key"
    ca_key.write_bytes(
        pki.authority.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    operator_key = tmp_path / "operator.key"
    operator_key.write_text(format_signer_key(OPERATOR_SIGNER) + "\n", encoding="utf-8")
    authority = Ed25519Signer.generate(AUTHORITY)
    authority_key = tmp_path / "authority.key"
    authority_key.write_text(format_signer_key(authority) + "\n", encoding="utf-8")
    with CmiSandbox() as sandbox:
        gateways = tmp_path / "gateways.json"
        settings = sandbox.settings(return_url="https://portal.example/receipt")
        gateways.write_text(json.dumps({"cmi": settings}), encoding="utf-8")
        monkeypatch.setenv("POLICY_LEDGER_PAYMENTS_AUTHORITY_KEY", str(authority_key))
        monkeypatch.setenv("POLICY_LEDGER_PAYMENTS_AUTHORITY_ID", AUTHORITY)
        monkeypatch.setenv("POLICY_LEDGER_PAYMENTS_GATEWAYS", str(gateways))
        monkeypatch.setenv("POLICY_LEDGER_PAYMENTS_NOTIFY_LISTEN", "127.0.0.1:0")
        server = start_server_thread(
            database_url,
            log_signer,
            tmp_path,
            config_changes={
                "enrol_listen": "127.0.0.1:0",
                "client_ca_key_path": ca_key,
                "operator_key_path": operator_key,
            },
        )
        try:
            onboard(server, OPERATOR_SIGNER, AUTHORITY, authority, SignerRole.AUTHORITY)
            yield server, sandbox
        finally:
            server.stop()


def _entries(server: ServerHandle) -> int:
    with server.running.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(log_entries)).scalar_one())


def test_an_insured_enrols_declares_is_accepted_and_settles_through_cmi(
    moroccan_server: tuple[ServerHandle, CmiSandbox],
) -> None:
    server, sandbox = moroccan_server
    log = TrustedLog.from_verifier_key(server.log_verifier_key)
    fund = Ed25519Signer.generate(FUND)
    onboard(server, OPERATOR_SIGNER, FUND, fund)
    insured, spouse, child, stranger = tokens(
        [cin("BE123456"), cin("BK765432"), cin("BJ234567"), cin("BH345678")]
    )
    policy = issued(FUND, "CNOPS-0001", insured, [(insured, R.RELATIONSHIP_SELF)], JAN1, DEC31)
    policy.policy_issued.annual_premium.CopyFrom(
        types_pb2.Money(currency_code="MAD", amount_minor=84_000)
    )
    with server.channel("insurer", FUND) as channel:
        InsurerClient(channel, signer=fund, log=log).submit(policy)

    # (1) A temporary code, delivered out of band, for the person's token...
    # (issued by the fund, for a person it insures; the operator could too: `enrol issue`)
    with server.channel("insurer", FUND) as channel:
        code = issue_enrolment_code(channel, insured, "1h").code
    # (2) ...traded for a permanent credential: a client certificate and a registered key.
    signer = Ed25519Signer.generate(insured)
    with server.enrolment_channel() as channel:
        enrolled = enrol(channel, code=code, role="beneficiary", name=insured, signing_key=signer)
    assert enrolled.key_registered_receipt is not None
    with server.enrolment_channel() as channel, pytest.raises(ClientError):  # used once
        enrol(channel, code=code, role="beneficiary", name=insured, signing_key=signer)
    credentials = ClientCredentials(
        server.pki.authority.certificate_pem, enrolled.certificate_pem, enrolled.key_pem
    )
    with grpc.secure_channel(server.address, credentials.channel_credentials()) as channel:
        person = BeneficiaryClient(channel, person_token=insured, signer=signer, log=log)
        # (3) The person declares a spouse and a child, with document references.
        person.declare(
            "CNOPS-DECL-0001",
            (FUND, "CNOPS-0001"),
            [
                Declared(
                    spouse,
                    R.RELATIONSHIP_SPOUSE,
                    ((R.DOCUMENT_KIND_MARRIAGE_CERTIFICATE, "CNOPS-DOC-0001"),),
                ),
                Declared(
                    child,
                    R.RELATIONSHIP_CHILD,
                    ((R.DOCUMENT_KIND_BIRTH_CERTIFICATE, "CNOPS-DOC-0002"),),
                ),
            ],
            effective=JUL1,
            occurred_at=clock.now(),  # the key enrolled just now is valid from the server's now
        )
        # (4) The fund accepts; (5) both are members of the insured's policy from 1 July.
        with server.channel("insurer", FUND) as fund_channel:
            InsurerClient(fund_channel, signer=fund, log=log).submit(
                declaration_decided(
                    FUND,
                    insured,
                    "CNOPS-DECL-0001",
                    accepted=True,
                    occurred_at=clock.now(),
                )
            )
        [declaration] = person.record().declarations
        assert declaration.status == bpb.DECLARATION_STATUS_ACCEPTED
        for member, relationship in (
            (spouse, R.RELATIONSHIP_SPOUSE),
            (child, R.RELATIONSHIP_CHILD),
        ):
            [coverage] = person.record(member).coverages
            assert (coverage.policy_id, coverage.relationship) == ("CNOPS-0001", relationship)
            assert (coverage.start_date.month, coverage.end_date.month) == (7, 12)
        # (6) Contribution status: six months owed at the MAD 70.00 monthly floor.
        owed = person.contribution_status("MA", AS_OF)
        assert not owed.HasField("paid_through")
        assert (owed.owed.currency_code, owed.owed.amount_minor) == ("MAD", 42_000)
        assert owed.schedule_version == "ma-2005-08-18"
        with pytest.raises(ClientError) as raised:  # not a stranger's status
            BeneficiaryClient(
                channel, person_token=stranger, signer=signer, log=log
            ).contribution_status("MA")
        assert raised.value.code == grpc.StatusCode.PERMISSION_DENIED

    # (7) Settled for the year through the CMI hosted page (the portal), recorded once.
    with server.channel("portal", "MA") as channel:
        portal = RenewalClient(channel, log=log)
        request = rpb.QuoteRenewalRequest(
            jurisdiction="MA",
            sponsor=cin("BE123456"),
            members=[rpb.RenewalMember(person=cin("BE123456"), relationship=R.RELATIONSHIP_SELF)],
            period_start=types_pb2.CivilDate(year=2026, month=1, day=1),
            period_end=types_pb2.CivilDate(year=2026, month=12, day=31),
        )
        quote = portal.quote(request).quote
        assert (quote.total.currency_code, quote.total.amount_minor) == ("MAD", 84_000)
        started = portal.start_payment(quote.quote_id, "ma-contribution-2026", gateway="cmi")
        assert "/fim/est3Dgate" in started.redirect_url
        with urllib.request.urlopen(started.redirect_url, timeout=30) as page:  # the customer
            assert page.status == 200
        before = _entries(server)
        sandbox.pay(started.payment_id)
        paid = portal.complete_payment(started.payment_id)
        assert paid.state == rpb.PAYMENT_STATE_RECORDED and paid.captured_minor == 84_000
        again = portal.complete_payment(started.payment_id)
        assert again.receipt.leaf_index == paid.receipt.leaf_index
        assert _entries(server) == before + 1  # one FeeCollected, whatever the retries
    with grpc.secure_channel(server.address, credentials.channel_credentials()) as channel:
        person = BeneficiaryClient(channel, person_token=insured, signer=signer, log=log)
        settled = person.contribution_status("MA", AS_OF)
    assert (settled.paid_through.year, settled.paid_through.month, settled.paid_through.day) == (
        2026,
        12,
        31,
    )
    assert settled.owed.amount_minor == 0


def test_contribution_status_refusals_write_nothing(
    moroccan_server: tuple[ServerHandle, CmiSandbox], database_url: str
) -> None:
    server, _ = moroccan_server
    [nobody] = tokens([cin("BH345678")])
    counter = RowCounter(database_url)
    try:
        before = counter.counts()
        with server.channel("operator", "operator") as channel:
            stub = ContributionServiceStub(channel)
            for request, code in (
                (GetContributionStatusRequest(person_token=nobody, jurisdiction="SD"),
                 grpc.StatusCode.INVALID_ARGUMENT),
                (GetContributionStatusRequest(person_token="not-a-token", jurisdiction="MA"),
                 grpc.StatusCode.INVALID_ARGUMENT),
                (GetContributionStatusRequest(person_token=nobody, jurisdiction="MA"),
                 grpc.StatusCode.NOT_FOUND),
            ):  # fmt: skip
                with pytest.raises(grpc.RpcError) as raised:
                    stub.GetContributionStatus(request, timeout=30)
                assert raised.value.code() == code, request
        assert counter.counts() == before
    finally:
        counter.close()
