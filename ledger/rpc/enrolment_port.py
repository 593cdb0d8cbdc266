"""The enrolment port: a second ``grpc.aio.server`` that serves EnrolmentService and health.

It checks the server certificate only (``require_client_auth=False``): a party that enrols
has no client certificate yet, and its one-time code is the credential. Keeping it on its own
server means the main port keeps requiring a client certificate for everything, so no row of
the main table can open a method to anonymous callers. Opened only when ``serve`` is given
``--enrol-listen`` (with ``--client-ca-key`` to sign certificates and ``--operator-key-file``
to sign the KeyRegistered events); docs/security.md, "Enrolment".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ledger import limits
from ledger.clock import Clock
from ledger.config import ServerConfig, TlsFiles
from ledger.errors import InvalidArgument
from ledger.pki import CertificateAuthority
from ledger.rpc.authorization import AuthorizationTable, enrolment_rules
from ledger.rpc.enrolment_servicer import Enroller, EnrolmentServicer
from ledger.rpc.interceptor import AuthorizationInterceptor
from ledger.service import Ledger
from ledger.signing import Signer, parse_signer_key
from ledger.storage.enrolment_store import EnrolmentStore
from ledger.v1 import enrolment_service_pb2, enrolment_service_pb2_grpc

__all__ = [
    "EnrolmentMaterial",
    "EnrolmentPort",
    "load_enrolment_material",
    "start_enrolment_port",
]

log = logging.getLogger(__name__)

SERVICE_NAME = enrolment_service_pb2.DESCRIPTOR.services_by_name["EnrolmentService"].full_name


@dataclass
class EnrolmentPort:
    """The started enrolment server and its port."""

    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer

    async def stop(self, grace_seconds: float) -> None:
        """Report NOT_SERVING and stop, letting calls under way finish."""
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace_seconds)


def _read_material(
    config: ServerConfig, tls: TlsFiles | None
) -> tuple[TlsFiles, CertificateAuthority, Signer]:
    """The server's TLS files, the client CA that signs enrolled certificates (the first
    certificate of ``--client-ca`` with ``--client-ca-key``, refused unless they belong
    together) and the operator's signer; refused unless all are given."""
    if tls is None or config.client_ca_key_path is None or config.operator_key_path is None:
        raise InvalidArgument(
            "--enrol-listen needs TLS (the server certificate is what an enrolling party checks), "
            "--client-ca-key FILE to sign its certificate and --operator-key-file FILE to sign "
            "its key registration",
            reason="ENROLMENT_SETTINGS_MISSING",
        )
    try:
        certificate = x509.load_pem_x509_certificate(tls.client_ca)
        key = serialization.load_pem_private_key(config.client_ca_key_path.read_bytes(), None)
        operator_text = config.operator_key_path.read_text(encoding="utf-8").strip()
    except (ValueError, TypeError, OSError) as error:
        raise InvalidArgument(
            f"cannot read the client CA, its key or the operator key: {error}",
            reason="ENROLMENT_FILE_INVALID",
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != (
        certificate.public_key()
    ):
        raise InvalidArgument(
            "--client-ca-key is not the ECDSA key of the first certificate in --client-ca",
            reason="CLIENT_CA_KEY_MISMATCH",
        )
    return tls, CertificateAuthority(certificate, key), parse_signer_key(operator_text)


@dataclass(frozen=True)
class EnrolmentMaterial:
    """What the enrolment port signs with, loaded and checked before anything starts."""

    tls: TlsFiles
    authority: CertificateAuthority
    operator_signer: Signer


def load_enrolment_material(config: ServerConfig, tls: TlsFiles | None) -> EnrolmentMaterial | None:
    """The enrolment port's material if ``config.enrol_listen`` asks for a port (None if not);
    refused (InvalidArgument) unless TLS, ``--client-ca-key`` and ``--operator-key-file`` are
    given and the CA key is the key of the first ``--client-ca`` certificate."""
    if not config.enrol_listen:
        return None
    tls, authority, operator_signer = _read_material(config, tls)
    return EnrolmentMaterial(tls, authority, operator_signer)


async def start_enrolment_port(
    config: ServerConfig,
    material: EnrolmentMaterial | None,
    ledger: Ledger,
    store: EnrolmentStore,
    clock: Clock,
    *,
    observing: Sequence[Any] = (),
) -> EnrolmentPort | None:
    """Start the enrolment server on ``config.enrol_listen`` (None: no material, no port);
    ``observing``: the service port's call-observing interceptors (metrics, call log, tracing),
    so enrolment calls are counted, logged and traced as every other call."""
    if material is None:
        return None
    enroller = Enroller(
        store,
        authority=material.authority,
        operator_signer=material.operator_signer,
        ledger=ledger,
        clock=clock,
        trust_domain=config.trust_domain,
    )
    server = grpc.aio.server(
        interceptors=[
            *observing,
            AuthorizationInterceptor(AuthorizationTable(enrolment_rules()), config.trust_domain),
        ],
        options=[
            ("grpc.max_receive_message_length", limits.enrolment_csr_bytes_max * 2),
            ("grpc.so_reuseport", 0),
        ],
    )
    enrolment_service_pb2_grpc.add_EnrolmentServiceServicer_to_server(
        EnrolmentServicer(enroller), server
    )
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for name in ("", SERVICE_NAME):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    credentials = grpc.ssl_server_credentials(
        [(material.tls.private_key, material.tls.certificate_chain)], require_client_auth=False
    )
    port = server.add_secure_port(config.enrol_listen, credentials)
    await server.start()
    log.info("enrolment port %d: EnrolmentService, no client certificate required", port)
    return EnrolmentPort(server, port, health)
