"""A whole server for the hardening tests: every service (the payments extension included), its
methods found in the descriptors, the caller role of each, and a count of every row it wrote."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message_factory import GetMessageClass
from sqlalchemy import MetaData, func, select

from ledger.rpc.server import SERVICE_NAMES
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer, format_signer_key
from ledger.storage.db import create_ledger_engine
from payments.contribution_service import SERVICE_NAME as CONTRIBUTION_SERVICE_NAME
from payments.service import SERVICE_NAME as RENEWAL_SERVICE_NAME
from payments.v1 import renewal_service_pb2
from tests.conftest import ServerHandle, onboard, start_server_thread

AUTHORITY = "kw-gov-health"
SERVICES = (*SERVICE_NAMES, RENEWAL_SERVICE_NAME, CONTRIBUTION_SERVICE_NAME)
"""The services the server registers (health and reflection are the standard packages')."""

CALLER_OF_SERVICE = {
    "ledger.v1.LedgerService": ("auditor", "auditor"),
    "ledger.v1.CoverageService": ("operator", "operator"),
    "ledger.v1.AdminService": ("operator", "operator"),
    "ledger.v1.IdentityService": ("insurer", "gulf-health"),
    "payments.v1.RenewalService": ("portal", "KW"),
    "ledger.v1.ComplianceService": ("operator", "operator"),  # Task A (issue 10)
    "ledger.v1.FundService": ("auditor", "auditor"),
    "ledger.v1.BeneficiaryService": ("operator", "operator"),
    "payments.v1.ContributionService": ("operator", "operator"),
    "grpc.health.v1.Health": ("auditor", "auditor"),
    "grpc.reflection.v1alpha.ServerReflection": ("auditor", "auditor"),
}
CALLER_OF_METHOD = {
    "ledger.v1.LedgerService.SubmitEvent": ("insurer", "gulf-health"),
    "ledger.v1.LedgerService.SubmitEvents": ("insurer", "gulf-health"),
    "ledger.v1.IdentityService.LookUpPersonToken": ("operator", "operator"),
    "payments.v1.RenewalService.CompletePayment": ("authority", "kw"),
    "payments.v1.RenewalService.GetRenewal": ("operator", "operator"),
    "payments.v1.RenewalService.RefundPayment": ("authority", "kw"),
    "ledger.v1.BeneficiaryService.IssueEnrolmentCode": ("insurer", "gulf-health"),
}
"""Who calls each method (``role``, ``name``), as the authorization table
(ledger/rpc/authorization.py, payments/authorization.py) allows: a method's own entry, else its
service's. The requests then reach the validation layer and the servicers, not a refusal."""


ENDLESS_STREAMS = frozenset({"/ledger.v1.CoverageService/WatchCoverage"})
"""Response streams that run until the client leaves (task C's change feed): a raw call reads
their first message, which a watch sends once caught up, and leaves."""


@dataclass(frozen=True)
class Method:
    """One RPC of the server, with what a client needs to call it with raw bytes."""

    descriptor: MethodDescriptor

    @property
    def path(self) -> str:
        """The HTTP/2 path, ``/package.Service/Method``."""
        return f"/{self.descriptor.containing_service.full_name}/{self.descriptor.name}"

    @property
    def caller(self) -> tuple[str, str]:
        """The caller (role, name) the tests call this method as."""
        return CALLER_OF_METHOD.get(
            self.descriptor.full_name,
            CALLER_OF_SERVICE[self.descriptor.containing_service.full_name],
        )

    @property
    def request_class(self) -> type:
        """The request message class."""
        return GetMessageClass(self.descriptor.input_type)

    @property
    def streams_requests(self) -> bool:
        """Whether the client streams requests."""
        return bool(self.descriptor.client_streaming)

    @property
    def streams_responses(self) -> bool:
        """Whether the server streams responses."""
        return bool(self.descriptor.server_streaming)


def every_method() -> list[Method]:
    """Every RPC of every service the server registers, from the descriptor pool."""
    assert renewal_service_pb2.DESCRIPTOR  # the payments descriptors are in the pool
    pool = descriptor_pool.Default()
    return [
        Method(method) for service in SERVICES for method in pool.FindServiceByName(service).methods
    ]


def start_full_server(
    database_url: str,
    log_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    config_changes: dict[str, object] | None = None,
    **options: float,
) -> ServerHandle:
    """A server with the payments extension installed and its authority onboarded
    (``config_changes`` replace fields of its ServerConfig)."""
    authority = Ed25519Signer.generate(AUTHORITY)
    key_file = tmp_path / "authority.key"
    key_file.write_text(format_signer_key(authority) + "\n", encoding="utf-8")
    monkeypatch.setenv("POLICY_LEDGER_PAYMENTS_AUTHORITY_KEY", str(key_file))
    monkeypatch.setenv("POLICY_LEDGER_PAYMENTS_AUTHORITY_ID", AUTHORITY)
    server = start_server_thread(
        database_url, log_signer, tmp_path, config_changes=config_changes, **options
    )
    onboard(server, operator_signer, AUTHORITY, authority, role=SignerRole.AUTHORITY)
    return server


def metadata_for(server: ServerHandle, method: Method) -> tuple[tuple[str, str], ...]:
    """Extra metadata the caller of ``method`` sends: none (it proves who it is with its
    client certificate)."""
    return ()


class RowCounter:
    """Counts the rows of every table of a database (reflected once; close it after use)."""

    def __init__(self, database_url: str) -> None:
        self._engine = create_ledger_engine(database_url)
        metadata = MetaData()
        metadata.reflect(self._engine)
        self._tables = dict(metadata.tables)

    def counts(self) -> dict[str, int]:
        """Rows per table: what a refused request must leave unchanged."""
        # One statement of scalar subqueries: one round trip however many tables there are.
        names = sorted(self._tables)
        query = select(
            *(
                select(func.count()).select_from(self._tables[name]).scalar_subquery()
                for name in names
            )
        )
        with self._engine.connect() as connection:
            row = connection.execute(query).one()
        return {name: int(count) for name, count in zip(names, row, strict=True)}

    def close(self) -> None:
        """Release the engine's connections."""
        self._engine.dispose()


def row_counts(database_url: str) -> dict[str, int]:
    """Rows of every table of the database: what a refused request must leave unchanged."""
    counter = RowCounter(database_url)
    try:
        return counter.counts()
    finally:
        counter.close()


def call_raw(
    channel: grpc.Channel,
    method: Method,
    bodies: list[bytes],
    metadata: tuple[tuple[str, str], ...],
    timeout: float,
) -> grpc.StatusCode:
    """Send ``bodies`` as the request (one message, or a stream of them); the status code."""
    identity = None  # raw bytes out, raw bytes in
    try:
        if method.streams_requests:
            call = channel.stream_stream(method.path, identity, identity)
            for _ in call(iter(bodies), timeout=timeout, metadata=metadata):
                pass
        elif method.streams_responses:
            responses = channel.unary_stream(method.path, identity, identity)(
                bodies[0], timeout=timeout, metadata=metadata
            )
            for _ in responses:
                if method.path in ENDLESS_STREAMS:
                    responses.cancel()  # the watch answered (caught up): leave it
                    break
        else:
            channel.unary_unary(method.path, identity, identity)(
                bodies[0], timeout=timeout, metadata=metadata
            )
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK
