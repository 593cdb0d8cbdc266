"""Enrolment end to end: a one-time code for a client certificate and a registered signing key,
on the enrolment port (server certificate only); every refusal issues and registers nothing."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.channel import ClientCredentials
from clients.enrolment import Enrolled, certificate_request, enrol
from clients.errors import ClientError
from clients.insurer import InsurerClient
from clients.operator import OperatorClient
from clients.samples import policy_issued
from clients.verify import TrustedLog
from ledger import limits
from ledger.config import ServerConfig
from ledger.enrolment import new_code
from ledger.errors import InvalidArgument
from ledger.pki import CertificateAuthority
from ledger.rpc.authorization import AuthorizationTable, enrolment_rules
from ledger.rpc.server import start_server
from ledger.signing import Ed25519Signer, format_signer_key
from ledger.storage.enrolment_store import EnrolmentStore
from ledger.storage.log_store import entry_count
from ledger.v1 import (
    enrolment_service_pb2,
    enrolment_service_pb2_grpc,
    ledger_service_pb2,
    ledger_service_pb2_grpc,
)
from policy_ledger.cli import main
from tests import clock as test_clock
from tests.builders import tokens
from tests.conftest import OPERATOR_SIGNER, ServerHandle, start_server_thread

INSURER = "acme-health"
BROKEN_CSR = b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
SPIFFE = f"spiffe://policy-ledger.local/insurer/{INSURER}"


def start_enrolling_server(
    database_url: str, log_signer: Ed25519Signer, tmp_path: Path
) -> ServerHandle:
    """A server with an enrolment port, signing with the session CA and the operator key."""
    from tests.conftest import session_pki

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
    return start_server_thread(
        database_url,
        log_signer,
        tmp_path,
        config_changes={
            "enrol_listen": "127.0.0.1:0",
            "client_ca_key_path": ca_key,
            "operator_key_path": operator_key,
        },  # type: ignore[dict-item]
    )


@pytest.fixture
def enrolling_server(
    database_url: str, log_signer: Ed25519Signer, tmp_path: Path
) -> Iterator[ServerHandle]:
    handle = start_enrolling_server(database_url, log_signer, tmp_path)
    yield handle
    handle.stop()


def _issue(
    server: ServerHandle, *, role: str = "insurer", name: str = INSURER, **when: object
) -> tuple[str, str]:
    code = new_code()
    now = when.get("now", test_clock.now())
    ttl = when.get("ttl", dt.timedelta(hours=1))
    code_id = EnrolmentStore(server.running.engine).issue(role, name, code, now, ttl)  # type: ignore[arg-type]
    return code, code_id


def _entries(server: ServerHandle) -> int:
    with server.running.engine.connect() as connection:
        return entry_count(connection)


def _enrol(
    server: ServerHandle, code: str, signer: Ed25519Signer | None, **fields: str
) -> Enrolled:
    with server.enrolment_channel() as channel:
        return enrol(
            channel,
            code=code,
            role=fields.get("role", "insurer"),
            name=fields.get("name", INSURER),
            signing_key=signer,
        )


def test_an_insurer_enrols_is_licensed_and_submits_with_its_new_certificate(
    enrolling_server: ServerHandle,
) -> None:
    server = enrolling_server
    code, code_id = _issue(server)
    signer = Ed25519Signer.generate(INSURER)
    enrolled = _enrol(server, code, signer)
    certificate = x509.load_pem_x509_certificate(enrolled.certificate_pem)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert [str(name.value) for name in san.value] == [SPIFFE]
    certificate.verify_directly_issued_by(server.pki.authority.certificate)
    assert enrolled.ca_certificate_pem == server.pki.authority.certificate_pem
    assert enrolled.key_registered_receipt is not None
    assert EnrolmentStore(server.running.engine).is_redeemed(code_id)
    log = TrustedLog.from_verifier_key(server.log_verifier_key)
    with server.channel("operator", "operator") as channel:
        operator = OperatorClient(channel, signer=OPERATOR_SIGNER, log=log)
        keys = operator.list_keys(INSURER)
        assert [key.public_key for key in keys] == [signer.public_key]
        operator.license_insurer(
            INSURER, name="Acme Health", licence_number="ACME-1", effective=dt.date(2020, 1, 1)
        )
    credentials = ClientCredentials(
        server.pki.authority.certificate_pem, enrolled.certificate_pem, enrolled.key_pem
    )
    with grpc.secure_channel(server.address, credentials.channel_credentials()) as channel:
        receipt = InsurerClient(channel, signer=signer, log=log).submit(
            policy_issued(1, INSURER, test_clock.now(), tokens=tokens)
        )
    assert receipt.leaf_index == _entries(server) - 1


def _refused(
    server: ServerHandle, code: str, signer: Ed25519Signer | None, **fields: str
) -> ClientError:
    before = _entries(server)
    with pytest.raises(ClientError) as refused:
        _enrol(server, code, signer, **fields)
    assert _entries(server) == before  # no key event
    return refused.value


def test_a_wrong_code_is_refused_counted_and_issues_nothing(enrolling_server: ServerHandle) -> None:
    _, code_id = _issue(enrolling_server)
    error = _refused(enrolling_server, new_code(), Ed25519Signer.generate(INSURER))
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "CODE_WRONG")
    store = EnrolmentStore(enrolling_server.running.engine)
    assert store.wrong_tries(code_id) == 1
    assert not store.is_redeemed(code_id)


def test_a_used_code_is_refused_the_second_time(enrolling_server: ServerHandle) -> None:
    code, _ = _issue(enrolling_server)
    signer = Ed25519Signer.generate(INSURER)
    _enrol(enrolling_server, code, signer)
    error = _refused(enrolling_server, code, signer)
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "CODE_USED")


def test_an_expired_code_is_refused_and_stays_unused(enrolling_server: ServerHandle) -> None:
    code, code_id = _issue(
        enrolling_server,
        now=test_clock.now() - dt.timedelta(hours=2),
        ttl=dt.timedelta(hours=1),
    )
    error = _refused(enrolling_server, code, Ed25519Signer.generate(INSURER))
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "CODE_EXPIRED")
    assert not EnrolmentStore(enrolling_server.running.engine).is_redeemed(code_id)


def test_five_wrong_codes_lock_the_party_out(enrolling_server: ServerHandle) -> None:
    code, code_id = _issue(enrolling_server)
    signer = Ed25519Signer.generate(INSURER)
    for _ in range(limits.enrolment_wrong_codes_max):
        _refused(enrolling_server, new_code(), signer)
    error = _refused(enrolling_server, code, signer)
    assert (error.code, error.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "ENROLMENT_TRIES_EXHAUSTED",
    )
    assert not EnrolmentStore(enrolling_server.running.engine).is_redeemed(code_id)


def _raw_enrol(server: ServerHandle, request: enrolment_service_pb2.EnrolRequest) -> grpc.RpcError:
    before = _entries(server)
    with server.enrolment_channel() as channel, pytest.raises(grpc.RpcError) as refused:
        enrolment_service_pb2_grpc.EnrolmentServiceStub(channel).Enrol(request)
    assert _entries(server) == before
    return refused.value


@pytest.mark.parametrize(
    ("identity", "code_expected"),
    [
        ("spiffe://policy-ledger.local/insurer/najm-care", grpc.StatusCode.PERMISSION_DENIED),
        ("spiffe://policy-ledger.local/operator/acme-health", grpc.StatusCode.PERMISSION_DENIED),
        ("spiffe://other.example/insurer/acme-health", grpc.StatusCode.PERMISSION_DENIED),
    ],
)
def test_a_csr_for_another_identity_is_refused_and_the_code_stays_unused(
    enrolling_server: ServerHandle, identity: str, code_expected: grpc.StatusCode
) -> None:
    code, code_id = _issue(enrolling_server)
    trust_domain, role, name = identity.removeprefix("spiffe://").split("/")
    _, csr_pem = certificate_request(trust_domain, role, name)
    error = _raw_enrol(
        enrolling_server,
        enrolment_service_pb2.EnrolRequest(
            code=code,
            role="insurer",
            name=INSURER,
            csr_pem=csr_pem,
            signing_public_key=Ed25519Signer.generate(INSURER).public_key,
        ),
    )
    assert error.code() == code_expected
    store = EnrolmentStore(enrolling_server.running.engine)
    assert not store.is_redeemed(code_id)
    assert store.wrong_tries(code_id) == 0


@pytest.mark.parametrize(
    "change",
    [
        {"csr_pem": BROKEN_CSR},
        {"csr_pem": b""},
        {"csr_pem": b"x" * (limits.enrolment_csr_bytes_max + 1)},
        {"signing_public_key": b"short"},
        {"role": "operator"},
        {"name": "../etc"},
        {"code": ""},
    ],
)
def test_a_malformed_request_is_invalid_and_the_code_stays_unused(
    enrolling_server: ServerHandle, change: dict[str, object]
) -> None:
    code, code_id = _issue(enrolling_server)
    _, csr_pem = certificate_request("policy-ledger.local", "insurer", INSURER)
    fields: dict[str, object] = {
        "code": code,
        "role": "insurer",
        "name": INSURER,
        "csr_pem": csr_pem,
        "signing_public_key": Ed25519Signer.generate(INSURER).public_key,
    }
    fields.update(change)
    error = _raw_enrol(enrolling_server, enrolment_service_pb2.EnrolRequest(**fields))  # type: ignore[arg-type]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    store = EnrolmentStore(enrolling_server.running.engine)
    assert not store.is_redeemed(code_id)
    assert store.wrong_tries(code_id) == 0


def test_each_port_serves_only_its_own_services(enrolling_server: ServerHandle) -> None:
    server = enrolling_server
    with server.enrolment_channel() as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as refused:
            ledger_service_pb2_grpc.LedgerServiceStub(channel).GetCheckpoint(
                ledger_service_pb2.GetCheckpointRequest()
            )
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with server.channel("operator", "operator") as channel, pytest.raises(grpc.RpcError) as refused:
        enrolment_service_pb2_grpc.EnrolmentServiceStub(channel).Enrol(
            enrolment_service_pb2.EnrolRequest(code="x")
        )
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_without_enrol_listen_no_enrolment_port_is_opened(server: ServerHandle) -> None:
    assert server.running.enrolment is None


def test_only_the_enrolment_table_has_a_row_without_a_certificate(
    enrolling_server: ServerHandle,
) -> None:
    # The main port's table: every row needs a client certificate (TLS requires one anyway).
    assert [
        rule.method for rule in enrolling_server.running.authorization if rule.without_certificate
    ] == []
    assert [rule.method for rule in AuthorizationTable(enrolment_rules())] == [
        "/ledger.v1.EnrolmentService/Enrol"
    ]


def test_a_portal_enrols_without_a_signing_key_and_registers_nothing(
    enrolling_server: ServerHandle,
) -> None:
    code, code_id = _issue(enrolling_server, role="portal", name="KW")
    before = _entries(enrolling_server)
    enrolled = _enrol(enrolling_server, code, None, role="portal", name="KW")
    assert enrolled.key_registered_receipt is None
    assert _entries(enrolling_server) == before
    assert EnrolmentStore(enrolling_server.running.engine).is_redeemed(code_id)
    certificate = x509.load_pem_x509_certificate(enrolled.certificate_pem)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert [str(name.value) for name in san.value] == ["spiffe://policy-ledger.local/portal/KW"]


def _run(arguments: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(arguments)
    return code, out.getvalue(), err.getvalue()


def test_the_command_line_enrols_an_insurer_whose_credentials_then_submit(
    enrolling_server: ServerHandle, database_url: str, tmp_path: Path
) -> None:
    server = enrolling_server
    assert server.running.enrolment is not None
    exit_code, out, _ = _run(
        ["enrol", "issue", "--role", "insurer", "--name", INSURER, "--ttl", "1h",
         "--database", database_url]
    )  # fmt: skip
    assert exit_code == 0
    code = out.strip()
    credentials, signing_key = tmp_path / "acme", tmp_path / "acme.key"
    exit_code, out, err = _run(
        ["enrol", "--server", f"127.0.0.1:{server.running.enrolment.port}",
         "--ca", str(server.pki.ca_path), "--code", code, "--role", "insurer", "--name", INSURER,
         "--signing-key", str(signing_key), "--out", str(credentials)]
    )  # fmt: skip
    assert exit_code == 0, err
    assert (credentials / f"insurer-{INSURER}.pem").exists()
    assert (credentials / f"insurer-{INSURER}.key").stat().st_mode & 0o777 == 0o600
    assert (credentials / "ca.pem").read_bytes() == server.pki.ca_path.read_bytes()
    assert "signing key registered at leaf" in err
    log = TrustedLog.from_verifier_key(server.log_verifier_key)
    with server.channel("operator", "operator") as channel:
        OperatorClient(channel, signer=OPERATOR_SIGNER, log=log).license_insurer(
            INSURER, name="Acme Health", licence_number="ACME-1", effective=dt.date(2020, 1, 1)
        )
    events = tmp_path / "events.json"
    events.write_text(
        json_format.MessageToJson(policy_issued(2, INSURER, test_clock.now(), tokens=tokens)),
        encoding="utf-8",
    )
    before = _entries(server)
    exit_code, _, err = _run(
        ["insurer", "submit", "--server", server.address, "--credentials", str(credentials),
         "--as", f"insurer-{INSURER}", "--log-verifier", server.log_verifier_key,
         "--key", str(signing_key), str(events)]
    )  # fmt: skip
    assert exit_code == 0, err
    assert _entries(server) == before + 1


def test_the_command_line_refuses_a_wrong_code_and_writes_no_credentials(
    enrolling_server: ServerHandle, tmp_path: Path
) -> None:
    server = enrolling_server
    assert server.running.enrolment is not None
    _issue(server)
    before = _entries(server)
    exit_code, _, err = _run(
        ["enrol", "--server", f"127.0.0.1:{server.running.enrolment.port}",
         "--ca", str(server.pki.ca_path), "--code", new_code(), "--role", "insurer",
         "--name", INSURER, "--signing-key", str(tmp_path / "acme.key"),
         "--out", str(tmp_path / "acme")]
    )  # fmt: skip
    assert exit_code == 3
    assert "CODE_WRONG" in err or "wrong enrolment code" in err
    assert not (tmp_path / "acme").exists()
    assert _entries(server) == before


def _start_refused(tmp_path: Path, **changes: object) -> InvalidArgument:
    from tests.conftest import session_pki

    pki = session_pki()
    config = dataclasses.replace(
        ServerConfig(),
        database_url=f"sqlite+pysqlite:///{tmp_path / 'never.db'}",
        listen="127.0.0.1:0",
        tls_cert_path=pki.directory / "server.pem",
        tls_key_path=pki.directory / "server.key",
        client_ca_path=pki.ca_path,
        enrol_listen="127.0.0.1:0",
        **changes,  # type: ignore[arg-type]
    )
    with pytest.raises(InvalidArgument) as refused:
        asyncio.run(start_server(config))
    assert not (tmp_path / "never.db").exists()  # refused before opening anything
    return refused.value


def test_an_enrolment_port_without_its_keys_refuses_to_start(tmp_path: Path) -> None:
    operator_key = tmp_path / "operator.key"
    operator_key.write_text(format_signer_key(OPERATOR_SIGNER) + "\n", encoding="utf-8")
    assert _start_refused(tmp_path, operator_key_path=operator_key).reason == (
        "ENROLMENT_SETTINGS_MISSING"
    )
    other_ca = tmp_path / "other-ca.key"
    other_ca.write_bytes(
        CertificateAuthority.create("another CA", test_clock.now()).key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    refused = _start_refused(tmp_path, operator_key_path=operator_key, client_ca_key_path=other_ca)
    assert refused.reason == "CLIENT_CA_KEY_MISMATCH"
