"""The caller is the one spiffe:// URI SAN of the client certificate, parsed strictly."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509

from ledger.errors import InvalidArgument, Unauthenticated
from ledger.pki import CertificateAuthority, spiffe_id
from ledger.rpc.identity import Caller, caller_from_certificate, caller_from_spiffe_id
from tests import clock as test_clock

DOMAIN = "policy-ledger.local"
URI = x509.UniformResourceIdentifier
NOW = test_clock.now()


@pytest.fixture(scope="module")
def authority() -> CertificateAuthority:
    return CertificateAuthority.create("unit test CA", NOW)


def _certificate(authority: CertificateAuthority, names: list[x509.GeneralName]) -> bytes:
    day = dt.timedelta(days=1)
    issued = authority.issue("x", names, server=False, not_before=NOW - day, not_after=NOW + day)
    return issued.certificate_pem


def test_a_client_certificate_names_its_caller(authority: CertificateAuthority) -> None:
    issued = authority.issue_client(DOMAIN, "portal", "KW", NOW)
    assert caller_from_certificate(issued.certificate_pem, DOMAIN) == Caller(
        "portal", "KW", f"spiffe://{DOMAIN}/portal/KW"
    )


@pytest.mark.parametrize(
    ("names", "reason"),
    [
        ([], "SPIFFE_ID_COUNT"),
        ([x509.DNSName("operator.example")], "SPIFFE_ID_COUNT"),  # only the URI SAN grants
        (
            [
                x509.UniformResourceIdentifier(f"spiffe://{DOMAIN}/operator/a"),
                x509.UniformResourceIdentifier(f"spiffe://{DOMAIN}/auditor/b"),
            ],
            "SPIFFE_ID_COUNT",
        ),
        (
            [x509.UniformResourceIdentifier("spiffe://other.example/operator/a")],
            "TRUST_DOMAIN_FOREIGN",
        ),
        ([x509.UniformResourceIdentifier(f"spiffe://{DOMAIN}/root/a")], "ROLE_UNKNOWN"),
        ([x509.UniformResourceIdentifier(f"spiffe://{DOMAIN}/operator")], "SPIFFE_ID_INVALID"),
        ([x509.UniformResourceIdentifier(f"spiffe://{DOMAIN}/operator/a/b")], "SPIFFE_ID_INVALID"),
        (
            [x509.UniformResourceIdentifier(f"spiffe://{DOMAIN}/operator/a?x=1")],
            "SPIFFE_ID_INVALID",
        ),
        ([x509.UniformResourceIdentifier(f"spiffe://{DOMAIN}/operator/..")], "NAME_INVALID"),
    ],
)
def test_certificates_that_name_no_caller_are_unauthenticated(
    authority: CertificateAuthority, names: list[x509.GeneralName], reason: str
) -> None:
    with pytest.raises(Unauthenticated) as raised:
        caller_from_certificate(_certificate(authority, names), DOMAIN)
    assert raised.value.reason == reason


def test_no_certificate_is_unauthenticated() -> None:
    with pytest.raises(Unauthenticated) as raised:
        caller_from_certificate(None, DOMAIN)
    assert raised.value.reason == "CLIENT_CERTIFICATE_MISSING"


def test_a_subject_common_name_grants_nothing(authority: CertificateAuthority) -> None:
    # The CN says operator/operator; without a SPIFFE SAN the certificate names no caller.
    issued = authority.issue(
        "operator/operator",
        [],
        server=False,
        not_before=NOW - dt.timedelta(days=1),
        not_after=NOW + dt.timedelta(days=1),
    )
    with pytest.raises(Unauthenticated):
        caller_from_certificate(issued.certificate_pem, DOMAIN)


def test_issuing_checks_role_and_name() -> None:
    assert spiffe_id(DOMAIN, "insurer", "acme-health") == f"spiffe://{DOMAIN}/insurer/acme-health"
    for role, name in (("root", "a"), ("insurer", "a/b"), ("insurer", ""), ("insurer", "..")):
        with pytest.raises(InvalidArgument):
            spiffe_id(DOMAIN, role, name)
    assert caller_from_spiffe_id(f"spiffe://{DOMAIN}/auditor/x", DOMAIN).role == "auditor"
