"""The trust boundary as a matrix: every RPC by every caller, over real mTLS, on one server.

Every method is read from the server's reflection (so an RPC added later without a row in the
authorization table fails here). Callers: one right certificate per role, the same roles with
another name, and every kind of bad certificate. Expected: 0 unauthorised successes; every
refusal by the interceptor is UNAUTHENTICATED or PERMISSION_DENIED with ErrorInfo naming the
method; certificates that fail the chain or validity checks never finish the TLS handshake
(UNAVAILABLE: no RPC exists, no servicer runs); and nothing is written by any refused call.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import inspect, text

from clients.errors import from_rpc_error
from clients.insurer import sign_event
from clients.renewal import RenewalClient
from clients.samples import policy_issued
from clients.verify import TrustedLog
from ledger.pki import DEFAULT_TRUST_DOMAIN, CertificateAuthority, IssuedCertificate
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer, format_signer_key
from ledger.storage.db import create_ledger_engine, sqlite_url
from payments.v1 import renewal_service_pb2 as renewal_pb
from tests import clock as test_clock
from tests.builders import tokens
from tests.conftest import ServerHandle, SessionPki, onboard, start_server_thread
from tests.payments.support import civil_id

INSURER = "gulf-health"
AUTHORITY = "kw-gov-health"
OPEN_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")
INTERCEPTOR_REASONS = {
    "CLIENT_CERTIFICATE_MISSING",
    "SPIFFE_ID_COUNT",
    "SPIFFE_ID_INVALID",
    "TRUST_DOMAIN_FOREIGN",
    "ROLE_UNKNOWN",
    "NAME_INVALID",
    "METHOD_NOT_IN_TABLE",
    "ROLE_NOT_ALLOWED",
    "JURISDICTION_NOT_CALLER",
}
RIGHT_CALLERS = {
    "insurer": INSURER,
    "portal": "KW",
    "authority": AUTHORITY,
    "auditor": "auditor",
    "operator": "operator",
}
OTHER_NAMES = {"insurer": "najm-care", "portal": "SA", "authority": "sa-gov-health"}


@dataclass
class World:
    server: ServerHandle
    database_url: str
    quote_id: str
    payment_id: str
    envelope: object


@pytest.fixture
def world(
    tmp_path: Path,
    log_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[World]:
    """One server (payments installed), with an insurer onboarded and one fee paid."""
    authority = Ed25519Signer.generate(AUTHORITY)
    key_file = tmp_path / "authority.key"
    key_file.write_text(format_signer_key(authority) + "\n", encoding="utf-8")
    monkeypatch.setenv("POLICY_LEDGER_PAYMENTS_AUTHORITY_KEY", str(key_file))
    monkeypatch.setenv("POLICY_LEDGER_PAYMENTS_AUTHORITY_ID", AUTHORITY)
    database_url = sqlite_url(tmp_path / "ledger.db")
    server = start_server_thread(database_url, log_signer, tmp_path)
    try:
        onboard(server, operator_signer, AUTHORITY, authority, role=SignerRole.AUTHORITY)
        onboard(server, operator_signer, INSURER, insurer_signer)
        with server.channel("portal", "KW") as channel:
            renewals = RenewalClient(
                channel, log=TrustedLog.from_verifier_key(server.log_verifier_key)
            )
            quote = renewals.quote(_kuwait_household()).quote
            payment = renewals.start_payment(quote.quote_id, "matrix-key-0001", gateway="simulated")
        event = policy_issued(1, INSURER, test_clock.now(), tokens=tokens)
        yield World(
            server,
            database_url,
            quote.quote_id,
            payment.payment_id,
            sign_event(event, insurer_signer),
        )
    finally:
        server.stop()


def _kuwait_household() -> renewal_pb.QuoteRenewalRequest:
    request = renewal_pb.QuoteRenewalRequest(jurisdiction="KW", sponsor=civil_id(77, 0))
    request.period_start.year, request.period_start.month, request.period_start.day = 2027, 1, 1
    request.period_end.year, request.period_end.month, request.period_end.day = 2027, 12, 31
    request.members.add(
        person=civil_id(77, 0),
        relationship=1,  # SELF
        residence_category=renewal_pb.RESIDENCE_CATEGORY_PRIVATE_SECTOR_WORKER,
    )
    request.members[0].birth_date.year = 1990
    request.members[0].birth_date.month = 1
    request.members[0].birth_date.day = 1
    return request


def _served_methods(server: ServerHandle) -> list[str]:
    """Every method of every service the server lists through reflection."""
    with server.channel("auditor", "auditor") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        [response] = list(stub.ServerReflectionInfo(iter([request])))
    methods = []
    for service in response.list_services_response.service:
        if service.name in OPEN_SERVICES:
            continue
        descriptor = descriptor_pool.Default().FindServiceByName(service.name)
        methods.extend(f"/{service.name}/{method.name}" for method in descriptor.methods)
    return methods


def test_every_served_method_has_a_row_in_the_table(world: World) -> None:
    methods = _served_methods(world.server)
    services = {method.split("/")[1] for method in methods}
    assert {
        "ledger.v1.LedgerService",
        "ledger.v1.CoverageService",
        "ledger.v1.AdminService",
        "payments.v1.RenewalService",
    } <= services
    table = world.server.running.authorization
    assert [method for method in methods if table.rule(method) is None] == []


def _bad_certificate(
    pki: SessionPki, kind: str, now: dt.datetime
) -> tuple[bytes | None, IssuedCertificate | None]:
    """(CA the client trusts, certificate it presents) for one kind of bad certificate."""
    authority = pki.authority
    spiffe = f"spiffe://{DEFAULT_TRUST_DOMAIN}/operator/operator"
    day = dt.timedelta(days=1)

    def issue(
        names: list[str], not_before: dt.datetime, not_after: dt.datetime
    ) -> IssuedCertificate:
        uris: list[x509.GeneralName] = [x509.UniformResourceIdentifier(name) for name in names]
        return authority.issue(
            "bad", uris, server=False, not_before=not_before, not_after=not_after
        )

    if kind == "no certificate":
        return authority.certificate_pem, None
    if kind == "wrong CA":
        other = CertificateAuthority.create("another CA", now)
        return authority.certificate_pem, other.issue_client(
            DEFAULT_TRUST_DOMAIN, "operator", "operator", now
        )
    if kind == "expired":
        return authority.certificate_pem, issue([spiffe], now - 10 * day, now - day)
    if kind == "not yet valid":
        return authority.certificate_pem, issue([spiffe], now + day, now + 10 * day)
    if kind == "wrong trust domain":
        return authority.certificate_pem, issue(
            ["spiffe://other.example/operator/operator"], now - day, now + day
        )
    if kind == "two SANs":
        return authority.certificate_pem, issue(
            [spiffe, f"spiffe://{DEFAULT_TRUST_DOMAIN}/auditor/auditor"], now - day, now + day
        )
    if kind == "no SAN":
        return authority.certificate_pem, issue([], now - day, now + day)
    if kind == "unknown role":
        return authority.certificate_pem, issue(
            [f"spiffe://{DEFAULT_TRUST_DOMAIN}/root/operator"], now - day, now + day
        )
    raise AssertionError(kind)


HANDSHAKE_REFUSED = ("no certificate", "wrong CA", "expired", "not yet valid")
IDENTITY_REFUSED = ("wrong trust domain", "two SANs", "no SAN", "unknown role")


def _bad_channel(world: World, kind: str) -> grpc.Channel:
    root, issued = _bad_certificate(world.server.pki, kind, test_clock.now())
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root,
        private_key=issued.key_pem if issued else None,
        certificate_chain=issued.certificate_pem if issued else None,
    )
    return grpc.secure_channel(world.server.address, credentials)


def _request(world: World, method: str) -> object:
    """A request for ``method`` that names the world's KW quote, payment and event."""
    service, name = method.split("/")[1:]
    descriptor = descriptor_pool.Default().FindServiceByName(service).methods_by_name[name]
    request = message_factory.GetMessageClass(descriptor.input_type)()
    values = {
        "jurisdiction": "KW",
        "quote_id": world.quote_id,
        "payment_id": world.payment_id,
        "idempotency_key": "matrix-key-0002",
        "gateway": "simulated",
        "amount_minor": 1,
    }
    for field, value in values.items():
        if field in request.DESCRIPTOR.fields_by_name:
            setattr(request, field, value)
    if "envelope" in request.DESCRIPTOR.fields_by_name:
        request.envelope.CopyFrom(world.envelope)
    return request


def _call(channel: grpc.Channel, world: World, method: str) -> grpc.RpcError | None:
    """Call ``method``; the error it ended with, or None when it answered (a refusal inside a
    streamed answer, as SubmitEvents gives per event, counts as that refusal)."""
    service, name = method.split("/")[1:]
    descriptor = descriptor_pool.Default().FindServiceByName(service).methods_by_name[name]
    request = _request(world, method)
    response_class = message_factory.GetMessageClass(descriptor.output_type)
    serialize, parse = (lambda m: m.SerializeToString()), response_class.FromString
    try:
        if descriptor.client_streaming and descriptor.server_streaming:
            answers = list(
                channel.stream_stream(method, serialize, parse)(iter([request]), timeout=30)
            )
            return _streamed_refusal(answers)
        if descriptor.server_streaming:
            list(channel.unary_stream(method, serialize, parse)(request, timeout=30))
            return None
        channel.unary_unary(method, serialize, parse)(request, timeout=30)
    except grpc.RpcError as error:
        return error
    return None


class _StreamedRefusal(grpc.RpcError):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self._code = next(status for status in grpc.StatusCode if status.value[0] == code)

    def code(self) -> grpc.StatusCode:
        return self._code


def _streamed_refusal(answers: list[object]) -> grpc.RpcError | None:
    for answer in answers:
        if answer.HasField("error"):  # type: ignore[attr-defined]
            error = answer.error  # type: ignore[attr-defined]
            return _StreamedRefusal(error.code, error.message)
    return None


def _written(database_url: str) -> dict[str, int]:
    """Rows per table: the whole database, so any write shows."""
    engine = create_ledger_engine(database_url)
    try:
        with engine.connect() as connection:
            return {
                table: int(connection.execute(text(f'SELECT count(*) FROM "{table}"')).scalar())
                for table in inspect(connection).get_table_names()
            }
    finally:
        engine.dispose()


def _allowed(world: World, method: str, role: str) -> bool:
    rule = world.server.running.authorization.rule(method)
    assert rule is not None, method
    return rule.any_authenticated or any(grant.role == role for grant in rule.grants)


def test_no_unauthorised_caller_gets_through_and_refusals_write_nothing(world: World) -> None:
    methods = _served_methods(world.server)
    before = _written(world.database_url)
    unauthorised_successes: list[str] = []
    wrong_refusals: list[str] = []
    refused = 0
    # (1) Certificates refused in the TLS handshake: no RPC exists, nothing runs.
    for kind in HANDSHAKE_REFUSED:
        with _bad_channel(world, kind) as channel:
            for method in methods:
                error = _call(channel, world, method)
                if error is None:
                    unauthorised_successes.append(f"{kind}: {method}")
                elif error.code() != grpc.StatusCode.UNAVAILABLE:
                    wrong_refusals.append(f"{kind}: {method}: {error.code()}")
                refused += 1
    # (2) Chain-valid certificates whose SAN names no caller: UNAUTHENTICATED with a reason.
    for kind in IDENTITY_REFUSED:
        with _bad_channel(world, kind) as channel:
            for method in methods:
                problem = _check_refusal(_call(channel, world, method), method, {"UNAUTHENTICATED"})
                if problem:
                    (unauthorised_successes if "succeeded" in problem else wrong_refusals).append(
                        f"{kind}: {problem}"
                    )
                refused += 1
    # (3) Right certificates on methods their role may not call, and right roles with another
    #     name on methods limited by name.
    callers = [*RIGHT_CALLERS.items(), *OTHER_NAMES.items()]
    for role, name in callers:
        with world.server.channel(role, name) as channel:
            for method in methods:
                if _allowed(world, method, role) and (
                    RIGHT_CALLERS.get(role) == name or not _name_limited(world, method, role)
                ):
                    continue  # allowed: the right name, or a call the name does not limit
                error = _call(channel, world, method)
                problem = _check_refusal(error, method, {"PERMISSION_DENIED"})
                if problem:
                    (unauthorised_successes if "succeeded" in problem else wrong_refusals).append(
                        f"{role}/{name}: {problem}"
                    )
                refused += 1
    assert unauthorised_successes == []
    assert wrong_refusals == []
    assert refused > 8 * len(methods)
    assert _written(world.database_url) == before


def _name_limited(world: World, method: str, role: str) -> bool:
    rule = world.server.running.authorization.rule(method)
    assert rule is not None
    return any(grant.role == role and grant.limit.name != "ANY" for grant in rule.grants)


def _check_refusal(error: grpc.RpcError | None, method: str, codes: set[str]) -> str:
    """Why ``error`` is not a proper refusal of ``method`` ('' when it is)."""
    if error is None:
        return f"{method} succeeded"
    if isinstance(error, _StreamedRefusal):
        return "" if error.code().name in codes else f"{method}: {error.code()}"
    refusal = from_rpc_error(error)
    if refusal.code.name not in codes:
        return f"{method}: {refusal}"
    if refusal.code.name == "PERMISSION_DENIED" and refusal.reason == "SIGNER_NOT_CALLER":
        return ""  # refused by the table's signer check, after admission verified it
    if refusal.reason not in INTERCEPTOR_REASONS or refusal.metadata.get("method") != method:
        return f"{method}: not the interceptor's refusal: {refusal} {refusal.metadata}"
    return ""


def test_right_callers_are_let_through(world: World) -> None:
    """The table is not stricter than it says: each allowed caller reaches the servicer."""
    for role, name in RIGHT_CALLERS.items():
        with world.server.channel(role, name) as channel:
            for method in _served_methods(world.server):
                if not _allowed(world, method, role):
                    continue
                error = _call(channel, world, method)
                if error is None:
                    continue
                code = error.code().name
                reason = "" if isinstance(error, _StreamedRefusal) else from_rpc_error(error).reason
                assert code != "UNAUTHENTICATED", (role, method, reason)
                assert reason not in INTERCEPTOR_REASONS, (role, method, reason)


def test_a_plaintext_server_warns_and_answers_only_health_and_reflection(
    tmp_path: Path, log_signer: Ed25519Signer, caplog: pytest.LogCaptureFixture
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    database_url = sqlite_url(tmp_path / "plain.db")
    with caplog.at_level("WARNING"):
        server = start_server_thread(database_url, log_signer, tmp_path, insecure_plaintext=True)
    try:
        assert any("INSECURE" in record.getMessage() for record in caplog.records)
        event = policy_issued(1, INSURER, test_clock.now(), tokens=tokens)
        before = _written(database_url)  # the tokens above are issued: the calls write nothing
        world = World(
            server, database_url, "q", "p", sign_event(event, Ed25519Signer.generate(INSURER))
        )
        with grpc.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            methods = [rule.method for rule in server.running.authorization]
            for method in methods:
                problem = _check_refusal(_call(channel, world, method), method, {"UNAUTHENTICATED"})
                assert problem == "", problem
        assert _written(database_url) == before
    finally:
        server.stop()


def test_a_default_client_negotiates_tls_1_3_with_its_certificate(server: ServerHandle) -> None:
    import socket
    import ssl

    pki = server.pki
    pki.client("auditor", "auditor")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(pki.ca_path)
    context.load_cert_chain(
        pki.directory / "auditor-auditor.pem", pki.directory / "auditor-auditor.key"
    )
    context.set_alpn_protocols(["h2"])
    host, port = server.address.rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as connection,
    ):
        assert connection.version() == "TLSv1.3"
